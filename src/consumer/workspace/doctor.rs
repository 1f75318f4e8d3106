//! What `doctor` reads about an `[[ml_workspace]]` table (the workspace and its cached
//! key when resynced, and its datastores) and the rows it makes of it: a resynced
//! workspace must use the plan's account as its own, and its cached key is a
//! consumer; the datastores' row is [`super::datastore`]'s.

use serde::Serialize;

use super::MlWorkspace;
use super::datastore::{self, DatastoreSeen};
use crate::azure::Azure;
use crate::azure::ml::Workspace;
use crate::consumer::Facts;
use crate::doctor::assess::{Ctx, Verdict, not_done};
use crate::doctor::collect::Got;
use crate::doctor::report::{Check, Holding, Holds, Status};
use crate::plan::Plan;
use crate::secret::Fingerprint;

/// What `doctor` read about one workspace.
#[derive(Debug)]
pub struct WorkspaceSeen {
    pub plan: MlWorkspace,
    /// Read only when the plan resyncs the workspace.
    pub workspace: Got<Workspace>,
    /// The fingerprint of the workspace's cached storage key (`None`: it has none).
    pub(crate) cached_key: Got<Option<Fingerprint>>,
    pub datastores: Got<Vec<DatastoreSeen>>,
}

/// The workspace row's facts.
#[derive(Clone, Debug, Serialize)]
pub struct WorkspaceFacts {
    pub id: String,
    pub storage_account: Option<String>,
    pub holds: Option<Holds>,
    pub fingerprint: Option<Fingerprint>,
}

pub(super) async fn read(
    azure: &Azure,
    plan: &Plan,
    ws: &MlWorkspace,
    arm: Result<(), String>,
) -> WorkspaceSeen {
    if let Err(why) = arm {
        return WorkspaceSeen {
            plan: ws.clone(),
            workspace: Got::NotTried(why.clone()),
            cached_key: Got::NotTried(why.clone()),
            datastores: Got::NotTried(why),
        };
    }
    let id = &ws.workspace;
    let (workspace, cached_key) = if ws.resync {
        let (w, k) = futures::join!(azure.ml_workspace(id), azure.ml_workspace_keys(id));
        let k = k.map(|k| k.user_storage_key.as_ref().map(|v| azure.fingerprint(v)));
        (Got::from(w), Got::from(k))
    } else {
        let why = "resync = false";
        (Got::NotTried(why.into()), Got::NotTried(why.into()))
    };
    WorkspaceSeen {
        plan: ws.clone(),
        workspace,
        cached_key,
        datastores: datastore::doctor_read(azure, plan, ws).await,
    }
}

impl WorkspaceSeen {
    /// The workspace's row (when resynced), then its datastores' row.
    pub(crate) fn checks(&self, ctx: &Ctx<'_>, holdings: &mut Vec<Holding>) -> Vec<Check> {
        let mut checks = Vec::new();
        if self.plan.resync {
            checks.push(self.workspace_check(ctx, holdings));
        }
        checks.push(datastore::doctor_check(ctx, self, holdings));
        checks
    }

    /// A resynced workspace: its own storage account must be this plan's, and its
    /// cached key is a consumer.
    fn workspace_check(&self, ctx: &Ctx<'_>, holdings: &mut Vec<Holding>) -> Check {
        let id = &self.plan.workspace;
        let holds = match &self.cached_key {
            Got::Done(fp) => ctx.holds(*fp),
            _ => Holds::Unknown,
        };
        holdings.push(Holding {
            consumer: crate::consumer::ConsumerId::workspace(id).to_string(),
            holds,
        });
        let own = self
            .workspace
            .done()
            .and_then(|w| w.storage_account.as_ref());
        let mut verdict = match (not_done(&self.workspace, &ctx.missing), own) {
            (Some(v), _) => v,
            (None, Some(own))
                if !own
                    .as_str()
                    .eq_ignore_ascii_case(ctx.plan.storage_account.as_str()) =>
            {
                Verdict::problem(
                    Status::Error,
                    format!(
                        "resync = true, but the workspace's own storage account is {}: resyncKeys re-reads that account's key, not {}'s",
                        own.name(),
                        ctx.plan.storage_account.name()
                    ),
                    Some(format!(
                        "set resync = false for {} in {}.",
                        id.name(),
                        ctx.file()
                    )),
                )
            }
            (None, Some(_)) => Verdict::ok("its own storage account"),
            (None, None) => Verdict::ok("its storage account is not reported"),
        };
        match (&self.cached_key, holds) {
            (Got::Done(None), _) => verdict.add(
                Status::Warning,
                "the workspace has no cached storage key",
                Some("a rotation's resyncKeys gives it one; nothing to do.".into()),
            ),
            (Got::Done(Some(_)), Holds::Neither) => verdict.add(
                Status::Error,
                "its cached key is neither of the account's keys",
                Some(format!(
                    "resync it now (az ml workspace sync-keys -n {}) and run keyflip doctor again.",
                    id.name()
                )),
            ),
            (Got::Done(Some(_)), Holds::Key1 | Holds::Key2) => verdict.add(
                Status::Ok,
                format!("cached key is {}", holds.as_str()),
                None,
            ),
            (other, _) => {
                if let Some(v) = not_done(other, &ctx.missing) {
                    verdict.add(v.status, v.finding.join("; "), v.fix.into_iter().next());
                }
            }
        }
        let fingerprint = match &self.cached_key {
            Got::Done(fp) => *fp,
            _ => None,
        };
        verdict.check(
            format!("ML workspace {} (resync)", id.name()),
            Facts::Workspace(WorkspaceFacts {
                id: id.to_string(),
                storage_account: own.map(ToString::to_string),
                holds: Some(holds),
                fingerprint,
            }),
        )
    }
}

impl WorkspaceFacts {
    /// Its cached key.
    pub(crate) fn details(&self) -> Vec<String> {
        match &self.fingerprint {
            Some(fp) => vec![format!(
                "cached key {fp} ({})",
                self.holds.map_or("unknown", Holds::as_str)
            )],
            None => Vec::new(),
        }
    }
}
