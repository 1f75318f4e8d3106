//! Where each consumer of a plan lives: from the machine's opaque [`ConsumerRef`] back
//! to the plan entry that says how to reach it. Datastores found by discovery are not
//! in the plan file; their ids (`datastore:{workspace}/datastores/{name}`) carry the
//! workspace and the name, so a resumed rotation reaches them without discovering
//! again.

use url::Url;

use super::engine::EngineError;
use crate::plan::{self, DatabricksSecret, KeyVaultSecret, Plan};
use crate::resource_id::ResourceId;
use crate::rotation::machine::{ConsumerId, ConsumerKind, ConsumerRef};

/// One consumer, resolved against its plan.
#[derive(Clone, Debug)]
pub(super) enum Target<'p> {
    KeyVault {
        secret: &'p KeyVaultSecret,
        vault: Url,
    },
    Datastore {
        workspace: &'p ResourceId,
        name: String,
    },
    Workspace {
        workspace: &'p ResourceId,
    },
    Databricks {
        secret: &'p DatabricksSecret,
        workspace: Url,
    },
}

pub(super) fn consumer_ref(id: &plan::ConsumerId, kind: ConsumerKind) -> ConsumerRef {
    ConsumerRef {
        id: ConsumerId(id.as_str().to_owned()),
        kind,
    }
}

fn url(plan: &Plan, text: &str) -> Result<Url, EngineError> {
    Url::parse(text).map_err(|e| EngineError::Plan {
        plan: plan.name.clone(),
        detail: format!("'{text}' is not a URL: {e}"),
    })
}

/// The plan entry behind `consumer`.
pub(super) fn resolve<'p>(
    plan: &'p Plan,
    consumer: &ConsumerRef,
) -> Result<Target<'p>, EngineError> {
    let id = consumer.id.0.as_str();
    let found = match consumer.kind {
        ConsumerKind::KeyVaultSecret => plan
            .key_vault
            .iter()
            .find(|kv| kv.id().as_str() == id)
            .map(|secret| url(plan, &secret.vault).map(|vault| Target::KeyVault { secret, vault })),
        ConsumerKind::Workspace => plan
            .ml_workspaces
            .iter()
            .find(|ws| plan::ConsumerId::workspace(&ws.workspace).as_str() == id)
            .map(|ws| {
                Ok(Target::Workspace {
                    workspace: &ws.workspace,
                })
            }),
        ConsumerKind::Datastore => plan.ml_workspaces.iter().find_map(|ws| {
            let prefix = plan::ConsumerId::datastore(&ws.workspace, "");
            id.strip_prefix(prefix.as_str())
                .filter(|name| !name.is_empty())
                .map(|name| {
                    Ok(Target::Datastore {
                        workspace: &ws.workspace,
                        name: name.to_owned(),
                    })
                })
        }),
        ConsumerKind::Databricks => {
            plan.databricks
                .iter()
                .find(|d| d.id().as_str() == id)
                .map(|secret| {
                    url(plan, &secret.workspace_url)
                        .map(|workspace| Target::Databricks { secret, workspace })
                })
        }
    };
    found.unwrap_or_else(|| {
        Err(EngineError::Plan {
            plan: plan.name.clone(),
            detail: format!(
                "{consumer} is in the journal but no longer in the plan ({}); put it back until the rotation has finished",
                plan.origin()
            ),
        })
    })
}
