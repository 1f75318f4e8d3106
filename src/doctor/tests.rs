//! `doctor`'s judgement on hand-made observations: what blocks, what only warns, what
//! is skipped because another row already reports it, and that the table and the
//! JSON carry the same rows. (The reads themselves are tested against keyflip-twin in
//! `tests/it/doctor.rs`.)

mod access;
mod consumers;
mod output;

use chrono::{DateTime, Utc};

use super::assess::assess;
use super::collect::*;
use super::render;
use super::report::*;
use crate::azure::databricks::{DatabricksSecret as DbxSecret, ScopeBackend, SecretScope};
use crate::azure::keyvault::SecretVersion;
use crate::azure::ml::Workspace;
use crate::azure::probe::{Probe, ProbeOutcome};
use crate::azure::roles::{actions, role_granting};
use crate::azure::storage::StorageAccount;
use crate::azure::{Call, Denial, Error};
use crate::consumer::databricks::DatabricksSeen;
use crate::consumer::datastore::{DatastoreSeen, Datastores};
use crate::consumer::key_vault::SecretSeen;
use crate::consumer::workspace::{MlWorkspace, WorkspaceSeen};
use crate::consumer::{Entry, Seen};
use crate::exit::Exit;
use crate::key::KeyName;
use crate::plan::Plan;
use crate::secret::{Fingerprint, Fingerprinter, StorageKey};

pub(super) const ACCOUNT: &str =
    "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/stacct01";
pub(super) const WORKSPACE: &str = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/mlw";
pub(super) const VAULT_ID: &str =
    "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv";

pub(super) fn plan(datastores: &str) -> Plan {
    let text = format!(
        r#"storage_account = "{ACCOUNT}"
[[key_vault]]
vault = "https://kv.vault.azure.net"
secret = "stacct01-key"
format = "raw-key"
vault_id = "{VAULT_ID}"
[[ml_workspace]]
workspace = "{WORKSPACE}"
resync = true
{datastores}
[[databricks]]
workspace_url = "https://adb-1.2.azuredatabricks.net"
scope = "datasci"
key = "stacct01-key"
format = "raw-key"
"#
    );
    crate::plan::parse(&text, "plans/t.toml").unwrap_or_else(|e| panic!("{e}"))
}

/// The plan's `[[ml_workspace]]` table.
pub(super) fn workspace_table(plan: &Plan) -> &MlWorkspace {
    plan.consumers
        .iter()
        .find_map(|e| match e {
            Entry::MlWorkspace(ws) => Some(ws),
            _ => None,
        })
        .expect("the test plan has a workspace")
}

/// What was read about the Key Vault secret.
pub(super) fn secret_seen(seen: &mut Observed) -> &mut SecretSeen {
    seen.consumers
        .iter_mut()
        .find_map(|s| match s {
            Seen::KeyVault(s) => Some(s),
            _ => None,
        })
        .expect("the test plan has a Key Vault secret")
}

/// What was read about the Databricks secret.
pub(super) fn databricks_seen(seen: &mut Observed) -> &mut DatabricksSeen {
    seen.consumers
        .iter_mut()
        .find_map(|s| match s {
            Seen::Databricks(s) => Some(s),
            _ => None,
        })
        .expect("the test plan has a Databricks secret")
}

pub(super) fn fp(value: &str) -> Fingerprint {
    Fingerprinter::from_bytes(b"doctor tests").fingerprint(&StorageKey::new(value.into()))
}

pub(super) fn at(secs: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(1_700_000_000 + secs, 0)
}

pub(super) fn works() -> Got<Probe> {
    Got::Done(Probe {
        outcome: ProbeOutcome::Works,
        status: Some(200),
        code: None,
        request_id: None,
        detail: String::new(),
    })
}

pub(super) fn datastore(name: &str, on_account: bool, key: Got<Fingerprint>) -> DatastoreSeen {
    DatastoreSeen {
        name: name.into(),
        datastore_type: "AzureBlob".into(),
        credentials_type: if on_account { "AccountKey" } else { "Sas" }.into(),
        account_name: Some("stacct01".into()),
        uses_account_key: on_account,
        on_account,
        key,
    }
}

pub(super) fn version(id: &str, enabled: bool, created: i64) -> SecretVersion {
    SecretVersion {
        name: "stacct01-key".into(),
        version: id.into(),
        enabled,
        created: at(created),
        updated: None,
        expires: None,
        content_type: None,
        tags: Default::default(),
    }
}

pub(super) fn forbidden(action: crate::azure::roles::Action) -> Error {
    Error::Forbidden {
        call: Box::new(Call {
            operation: "storage.listKeys",
            target: ACCOUNT.into(),
            request_id: None,
        }),
        denial: Box::new(Denial {
            role: role_granting(&action),
            action: Some(action),
            scope: None,
            code: Some("AuthorizationFailed".into()),
            message: None,
            advice: None,
        }),
    }
}

/// Everything as the demo world starts: every consumer on key1, both keys working.
pub(super) fn healthy(plan: &Plan) -> Observed {
    let account: crate::resource_id::ResourceId = ACCOUNT.parse().unwrap();
    Observed {
        tokens: [
            Service::ARM,
            crate::consumer::key_vault::SERVICE,
            crate::consumer::databricks::SERVICE,
        ]
        .into_iter()
        .map(|service| TokenSeen {
            service,
            audience: Some(format!("{service:?}")),
            result: Got::Done(()),
            credential: "client secret of app test".into(),
        })
        .collect(),
        permissions: required_permissions(plan)
            .into_iter()
            .map(|(scope, resource, required)| PermissionsSeen {
                scope,
                resource,
                required,
                missing: Got::Done(Vec::new()),
            })
            .collect(),
        account: Got::Done(StorageAccount {
            id: account.clone(),
            blob_endpoint: url::Url::parse("https://stacct01.blob.core.windows.net/").ok(),
            key1_created: at(0),
            key2_created: at(0),
            allow_shared_key_access: Some(true),
            key_expiration_days: None,
            provisioning_state: None,
        }),
        keys: Got::Done(vec![
            KeySeen {
                name: KeyName::Key1,
                fingerprint: fp("k1"),
                created: at(0),
                probe: works(),
            },
            KeySeen {
                name: KeyName::Key2,
                fingerprint: fp("k2"),
                created: at(0),
                probe: works(),
            },
        ]),
        // In report order: workspaces first.
        consumers: vec![
            Seen::MlWorkspace(Box::new(WorkspaceSeen {
                plan: workspace_table(plan).clone(),
                workspace: Got::Done(Workspace {
                    id: WORKSPACE.parse().unwrap(),
                    storage_account: Some(account),
                    key_vault: None,
                }),
                cached_key: Got::Done(Some(fp("k1"))),
                datastores: Got::Done(vec![
                    datastore("workspaceblobstore", true, Got::Done(fp("k1"))),
                    datastore("training_data", true, Got::Done(fp("k1"))),
                    datastore("public_samples", false, Got::NotTried("sas".into())),
                ]),
            })),
            Seen::KeyVault(SecretSeen {
                plan: table(plan, |e| match e {
                    Entry::KeyVault(kv) => Some(kv.clone()),
                    _ => None,
                }),
                versions: Got::Done(vec![(version("v1", true, 0), Got::Done(Some(fp("k1"))))]),
            }),
            Seen::Databricks(DatabricksSeen {
                plan: table(plan, |e| match e {
                    Entry::Databricks(d) => Some(d.clone()),
                    _ => None,
                }),
                scope: Got::Done(Some(SecretScope {
                    name: "datasci".into(),
                    backend: ScopeBackend::Databricks,
                })),
                secrets: Got::Done(vec![DbxSecret {
                    key: "stacct01-key".into(),
                    last_updated: at(0),
                }]),
            }),
        ],
        discovered: None,
        gate: None,
    }
}

/// The plan's first consumer table that `pick` takes.
fn table<T>(plan: &Plan, pick: impl Fn(&Entry) -> Option<T>) -> T {
    plan.consumers
        .iter()
        .find_map(pick)
        .expect("the test plan has the table")
}

pub(super) fn report(plan: &Plan, seen: &Observed) -> PlanReport {
    PlanReport::new(
        plan.name.clone(),
        plan.origin().into(),
        plan.storage_account.to_string(),
        assess(plan, seen),
    )
}

pub(super) fn rows<'a>(r: &'a PlanReport, kind: &str) -> Vec<&'a Check> {
    r.checks.iter().filter(|c| c.kind() == kind).collect()
}

pub(super) fn row<'a>(r: &'a PlanReport, kind: &str) -> &'a Check {
    let found = rows(r, kind);
    assert_eq!(found.len(), 1, "one {kind} row in {:#?}", r.checks);
    found[0]
}

pub(super) fn statuses(r: &PlanReport) -> Vec<(&'static str, Status)> {
    r.checks.iter().map(|c| (c.kind(), c.status)).collect()
}
