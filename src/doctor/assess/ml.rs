//! Azure ML rows: a resynced workspace (its own storage account, its cached key) and
//! the workspace's key-based datastores on the plan's account, with whether the plan
//! covers each.

use super::verdict::{Verdict, not_done};
use super::{Ctx, DatastoreSeen};
use crate::doctor::collect::{Got, WorkspaceSeen};
use crate::doctor::report::{Check, DatastoreFacts, Facts, Holding, Holds, Selection, Status};
use crate::plan::{ConsumerId, Datastores};

impl Ctx<'_> {
    /// A resynced workspace: its own storage account must be this plan's, and its
    /// cached key is a consumer.
    pub(super) fn workspace(&self, ws: &WorkspaceSeen, holdings: &mut Vec<Holding>) -> Check {
        let id = &ws.plan.workspace;
        let holds = match &ws.cached_key {
            Got::Done(fp) => self.holds(*fp),
            _ => Holds::Unknown,
        };
        holdings.push(Holding {
            consumer: ConsumerId::workspace(id).to_string(),
            holds,
        });
        let own = ws.workspace.done().and_then(|w| w.storage_account.as_ref());
        let mut verdict = match (not_done(&ws.workspace, &self.missing), own) {
            (Some(v), _) => v,
            (None, Some(own))
                if !own
                    .as_str()
                    .eq_ignore_ascii_case(self.plan.storage_account.as_str()) =>
            {
                Verdict::problem(
                    Status::Error,
                    format!(
                        "resync = true, but the workspace's own storage account is {}: resyncKeys re-reads that account's key, not {}'s",
                        own.name(),
                        self.plan.storage_account.name()
                    ),
                    Some(format!(
                        "set resync = false for {} in {}.",
                        id.name(),
                        self.file()
                    )),
                )
            }
            (None, Some(_)) => Verdict::ok("its own storage account"),
            (None, None) => Verdict::ok("its storage account is not reported"),
        };
        match (&ws.cached_key, holds) {
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
                if let Some(v) = not_done(other, &self.missing) {
                    verdict.add(v.status, v.finding.join("; "), v.fix.into_iter().next());
                }
            }
        }
        let fingerprint = match &ws.cached_key {
            Got::Done(fp) => *fp,
            _ => None,
        };
        verdict.check(
            format!("ML workspace {} (resync)", id.name()),
            Facts::Workspace {
                id: id.to_string(),
                storage_account: own.map(ToString::to_string),
                holds: Some(holds),
                fingerprint,
            },
        )
    }

    /// The workspace's key-based datastores on this account, and whether the plan
    /// covers each.
    pub(super) fn datastores(&self, ws: &WorkspaceSeen, holdings: &mut Vec<Holding>) -> Check {
        let id = &ws.plan.workspace;
        let account = self.plan.storage_account.name();
        let (selection, named) = match &ws.plan.datastores {
            Datastores::Named(names) => (Selection::Named, Some(names)),
            Datastores::Discover => (Selection::Discover, None),
        };
        let subject = format!("datastores of {}", id.name());
        let mut all: Vec<&DatastoreSeen> = match &ws.datastores {
            Got::Done(all) => all.iter().collect(),
            other => {
                let verdict =
                    not_done(other, &self.missing).unwrap_or_else(|| Verdict::ok("listed"));
                return verdict.check(
                    subject,
                    Facts::Datastores {
                        workspace: id.to_string(),
                        selection,
                        datastores: Vec::new(),
                        missed: Vec::new(),
                    },
                );
            }
        };
        // Azure lists datastores in no documented order; the report sorts them.
        all.sort_by(|a, b| a.name.cmp(&b.name));
        let is_named =
            |name: &str| named.is_some_and(|n| n.iter().any(|x| x.eq_ignore_ascii_case(name)));
        let mut facts = Vec::new();
        let mut missed = Vec::new();
        let mut unusable = Vec::new();
        let mut neither = Vec::new();
        let mut skipped: Option<Verdict> = None;
        for &d in &all {
            let reason = if !is_named(&d.name) || d.on_account {
                None
            } else if !d.uses_account_key {
                Some(format!(
                    "it uses {} credentials, not an account key",
                    d.credentials_type
                ))
            } else {
                Some(format!(
                    "it reads account {}, not {account}",
                    d.account_name.as_deref().unwrap_or("(none)")
                ))
            };
            if !d.on_account && reason.is_none() {
                continue;
            }
            let covered = d.on_account && (named.is_none() || is_named(&d.name));
            if d.on_account && !covered {
                missed.push(d.name.clone());
            }
            let fingerprint = d.key.done().copied();
            let holds = self.holds(fingerprint);
            if covered {
                holdings.push(Holding {
                    consumer: ConsumerId::datastore(id, &d.name).to_string(),
                    holds,
                });
                if holds == Holds::Neither {
                    neither.push(d.name.clone());
                }
                if let Some(v) = not_done(&d.key, &self.missing)
                    && skipped.as_ref().is_none_or(|s| v.status > s.status)
                {
                    skipped = Some(v);
                }
            }
            if let Some(r) = &reason {
                unusable.push(format!("{} ({r})", d.name));
            }
            facts.push(DatastoreFacts {
                name: d.name.clone(),
                datastore_type: Some(d.datastore_type.clone()),
                credentials_type: Some(d.credentials_type.clone()),
                account: d.account_name.clone(),
                covered,
                unusable: reason,
                holds,
                fingerprint,
            });
        }
        for name in named.into_iter().flatten() {
            if !all.iter().any(|d| d.name.eq_ignore_ascii_case(name)) {
                unusable.push(format!("{name} (no such datastore in the workspace)"));
                facts.push(DatastoreFacts {
                    name: name.clone(),
                    datastore_type: None,
                    credentials_type: None,
                    account: None,
                    covered: false,
                    unusable: Some("no such datastore in the workspace".into()),
                    holds: Holds::Unknown,
                    fingerprint: None,
                });
            }
        }
        let keyed = facts.iter().filter(|f| f.unusable.is_none()).count();
        let how = match selection {
            Selection::Discover => "discovered",
            Selection::Named => "named in the plan",
        };
        let mut verdict = match (keyed, missed.is_empty()) {
            (0, _) => Verdict::described(format!("no key-based datastore on {account}")),
            (n, true) => Verdict::described(format!(
                "{n} key-based datastore{} on {account}, all {how}",
                if n == 1 { "" } else { "s" }
            )),
            (n, false) => Verdict::described(format!(
                "{n} key-based datastore{} on {account}",
                if n == 1 { "" } else { "s" }
            )),
        };
        if !missed.is_empty() {
            verdict.add(
                Status::Error,
                format!(
                    "{} use{} {account}'s key but the plan does not name {}: retiring the old key would break {}",
                    missed.join(", "),
                    if missed.len() == 1 { "s" } else { "" },
                    if missed.len() == 1 { "it" } else { "them" },
                    if missed.len() == 1 { "it" } else { "them" },
                ),
                Some(format!(
                    "add {} to datastores for {} in {}, or set discover = true.",
                    missed.join(", "),
                    id.name(),
                    self.file()
                )),
            );
        }
        if !unusable.is_empty() {
            verdict.add(
                Status::Error,
                format!(
                    "the plan names datastores a rotation cannot update: {}",
                    unusable.join(", ")
                ),
                Some(format!(
                    "fix the datastores list for {} in {}.",
                    id.name(),
                    self.file()
                )),
            );
        }
        if !neither.is_empty() {
            verdict.add(
                Status::Error,
                format!("{} hold{} neither of {account}'s keys", neither.join(", "), if neither.len() == 1 { "s" } else { "" }),
                Some("update them to the key the other consumers use (az ml datastore update), then run keyflip doctor again.".into()),
            );
        }
        if let Some(v) = skipped {
            verdict.add(v.status, v.finding.join("; "), v.fix.into_iter().next());
        }
        verdict.check(
            subject,
            Facts::Datastores {
                workspace: id.to_string(),
                selection,
                datastores: facts,
                missed,
            },
        )
    }
}
