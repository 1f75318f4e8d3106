//! The judging half of `doctor`: turns what [`super::collect`] read about a plan into
//! report rows, each with a status and, for every problem, what to do. Pure: no IO,
//! no clock.
//!
//! What blocks (an error): a token or permission keyflip needs; an account that
//! cannot be read or disallows shared keys; a key that does not work on the data
//! plane, or two identical keys; a named datastore a rotation cannot update, or a
//! key-based datastore on the account that a named list leaves out (retiring the old
//! key would break it); a Key Vault secret whose current version is unreadable or
//! holds neither key; a Databricks scope that is missing or Key Vault-backed;
//! consumers split across both keys. A read refused for lack of a permission that the
//! permissions check already reports is "skipped", so one missing role is one error.

use std::collections::HashSet;

use super::collect::{
    DatabricksSeen, DatastoreSeen, Got, KeySeen, Observed, PermissionsSeen, SecretSeen, TokenSeen,
    WorkspaceSeen,
};
use super::report::{
    Check, DatastoreFacts, Facts, Holding, Holds, MissingAction, ProbeFacts, Resource, Selection,
    Status, VersionFacts,
};
use crate::azure::Error;
use crate::azure::databricks::ScopeBackend;
use crate::azure::probe::ProbeOutcome;
use crate::key::KeyName;
use crate::plan::{ConsumerId, Datastores, Plan};
use crate::secret::Fingerprint;

/// Every row for `plan`, in report order.
pub fn assess(plan: &Plan, seen: &Observed) -> Vec<Check> {
    let ctx = Ctx::new(plan, seen);
    let mut checks: Vec<Check> = seen.tokens.iter().map(token).collect();
    checks.extend(seen.permissions.iter().map(permissions));
    checks.push(ctx.account());
    checks.extend(ctx.keys());
    let mut holdings = Vec::new();
    for ws in &seen.workspaces {
        if ws.plan.resync {
            checks.push(ctx.workspace(ws, &mut holdings));
        }
        checks.push(ctx.datastores(ws, &mut holdings));
    }
    for secret in &seen.secrets {
        checks.push(ctx.secret(secret, &mut holdings));
    }
    for d in &seen.databricks {
        checks.push(ctx.databricks(d, &mut holdings));
    }
    checks.push(ctx.consumers(holdings));
    checks
}

/// What every row needs: the plan, the keys' fingerprints, the missing actions.
struct Ctx<'a> {
    plan: &'a Plan,
    seen: &'a Observed,
    keys: Option<&'a [KeySeen]>,
    missing: HashSet<String>,
}

/// A row's outcome while it is being built: the worst status wins; findings and
/// fixes accumulate.
struct Verdict {
    status: Status,
    finding: Vec<String>,
    fix: Vec<String>,
    /// The first finding describes rather than reassures, so it stays when a problem
    /// is added.
    keep_summary: bool,
}

impl Verdict {
    /// An "all is well" summary, replaced by the first problem added.
    fn ok(finding: impl Into<String>) -> Verdict {
        Verdict {
            status: Status::Ok,
            finding: vec![finding.into()],
            fix: Vec::new(),
            keep_summary: false,
        }
    }
    /// A description that problems are appended to.
    fn described(finding: impl Into<String>) -> Verdict {
        Verdict {
            keep_summary: true,
            ..Verdict::ok(finding)
        }
    }
    fn problem(status: Status, finding: impl Into<String>, fix: Option<String>) -> Verdict {
        Verdict {
            status,
            finding: vec![finding.into()],
            fix: fix.into_iter().collect(),
            keep_summary: false,
        }
    }
    fn add(&mut self, status: Status, finding: impl Into<String>, fix: Option<String>) {
        if status > Status::Ok {
            if self.status == Status::Ok && !self.keep_summary {
                self.finding.clear();
            }
            self.status = self.status.max(status);
            self.finding.push(finding.into());
        } else if self.status == Status::Ok {
            self.finding.push(finding.into());
        }
        self.fix.extend(fix);
    }
    fn check(self, subject: impl Into<String>, facts: Facts) -> Check {
        Check {
            subject: subject.into(),
            status: self.status,
            finding: self.finding.join("; "),
            fix: (!self.fix.is_empty()).then(|| self.fix.join(" ")),
            facts,
        }
    }
}

/// A failed or skipped read, as a verdict.
fn not_done<T>(got: &Got<T>, missing: &HashSet<String>) -> Option<Verdict> {
    match got {
        Got::Done(_) => None,
        Got::NotTried(why) => Some(Verdict::problem(
            Status::Skipped,
            format!("not checked: {why}"),
            None,
        )),
        Got::Failed(e) => Some(failure(e, missing)),
    }
}

fn failure(e: &Error, missing: &HashSet<String>) -> Verdict {
    if let Some(action) = e.denial().and_then(|d| d.action.as_ref())
        && missing.contains(action.name())
    {
        return Verdict::problem(
            Status::Skipped,
            format!(
                "not checked: keyflip lacks {} (see permissions)",
                action.name()
            ),
            None,
        );
    }
    Verdict::problem(Status::Error, e.to_string(), Some(fix_for(e)))
}

/// One line of advice for an Azure error.
fn fix_for(e: &Error) -> String {
    match e {
        Error::Forbidden { call, denial } => match (denial.role, &denial.advice) {
            (Some(role), _) => format!(
                "assign {role} to keyflip's identity at {}.",
                denial.scope.as_deref().unwrap_or(&call.target)
            ),
            (None, Some(advice)) => format!("{advice}."),
            (None, None) => "grant keyflip's identity the permission Azure names above.".into(),
        },
        Error::Credential { .. } => "check [credential] in keyflip.toml and that the identity exists in the tenant and may get this token.".into(),
        Error::Unauthorized { .. } => "check that [cloud] names the right cloud and the credential's tenant owns the resource.".into(),
        Error::NotFound { .. } => "check the id or URL in the plan: the resource does not exist, or keyflip's identity cannot see it.".into(),
        e if e.is_transient() => "Azure or the network failed; run keyflip doctor again (a rotation now would fail the same way).".into(),
        _ => "a rotation would fail at this step; fix what the message says and run keyflip doctor again.".into(),
    }
}

fn token(t: &TokenSeen) -> Check {
    let facts = Facts::Token {
        service: t.service,
        audience: t.audience.clone(),
    };
    let verdict = match (&t.result, &t.audience) {
        (Got::Done(()), Some(audience)) => Verdict::ok(format!("token acquired for {audience}")),
        (Got::Done(()), None) => Verdict::ok("token acquired"),
        (Got::Failed(e), _) => Verdict::problem(Status::Error, e.to_string(), Some(fix_for(e))),
        (Got::NotTried(why), _) => Verdict::problem(
            Status::Warning,
            format!("not checked: {why}"),
            Some("the Key Vault checks below still show whether keyflip can reach the vault; set key_vault_suffix to check the token itself.".into()),
        ),
    };
    verdict.check(t.service.label(), facts)
}

fn resource_label(resource: Resource, scope: &str) -> String {
    let name = scope.rsplit('/').next().unwrap_or(scope);
    match resource {
        Resource::StorageAccount => format!("storage account {name}"),
        Resource::MlWorkspace => format!("ML workspace {name}"),
        Resource::KeyVault => format!("key vault {name}"),
    }
}

fn permissions(p: &PermissionsSeen) -> Check {
    let required: Vec<String> = p.required.iter().map(|a| a.name().to_owned()).collect();
    let missing: Option<Vec<MissingAction>> = p.missing.done().map(|missing| {
        missing
            .iter()
            .map(|m| MissingAction {
                action: m.action.name().to_owned(),
                data_action: m.action.is_data(),
                role: m.role.map(|r| r.name.to_owned()),
                role_id: m.role.map(|r| r.id.to_owned()),
            })
            .collect()
    });
    let verdict = match (&p.missing, &missing) {
        (Got::Done(_), Some(m)) if m.is_empty() => {
            Verdict::ok(format!("all {} required actions granted", required.len()))
        }
        (Got::Done(_), Some(m)) => Verdict::problem(
            Status::Error,
            format!("missing {} of {} required actions", m.len(), required.len()),
            Some(grant_advice(m, &p.scope)),
        ),
        (other, _) => {
            not_done(other, &HashSet::new()).unwrap_or_else(|| Verdict::ok("permissions read"))
        }
    };
    verdict.check(
        resource_label(p.resource, &p.scope),
        Facts::Permissions {
            scope: p.scope.clone(),
            resource: p.resource,
            required,
            missing,
        },
    )
}

/// "assign 'A' and 'B' to keyflip's identity at SCOPE", plus actions no built-in role
/// keyflip knows grants.
fn grant_advice(missing: &[MissingAction], scope: &str) -> String {
    let mut roles: Vec<&str> = Vec::new();
    for m in missing {
        if let Some(r) = m.role.as_deref()
            && !roles.contains(&r)
        {
            roles.push(r);
        }
    }
    let unknown: Vec<&str> = missing
        .iter()
        .filter(|m| m.role.is_none())
        .map(|m| m.action.as_str())
        .collect();
    let quoted: Vec<String> = roles.iter().map(|r| format!("'{r}'")).collect();
    let mut advice = String::new();
    if !quoted.is_empty() {
        advice = format!(
            "assign {} to keyflip's identity at {scope} (or a custom role with exactly the missing actions).",
            quoted.join(" and ")
        );
    }
    if !unknown.is_empty() {
        if !advice.is_empty() {
            advice.push(' ');
        }
        advice.push_str(&format!(
            "grant {} at {scope} through a custom role.",
            unknown.join(", ")
        ));
    }
    advice
}

impl<'a> Ctx<'a> {
    fn new(plan: &'a Plan, seen: &'a Observed) -> Ctx<'a> {
        let missing = seen
            .permissions
            .iter()
            .filter_map(|p| p.missing.done())
            .flatten()
            .map(|m| m.action.name().to_owned())
            .collect();
        Ctx {
            plan,
            seen,
            keys: seen.keys.done().map(Vec::as_slice),
            missing,
        }
    }

    /// Which of the account's keys `fingerprint` is (`Unknown` when either is unknown).
    fn holds(&self, fingerprint: Option<Fingerprint>) -> Holds {
        match (fingerprint, self.keys) {
            (Some(fp), Some(keys)) => keys
                .iter()
                .find(|k| k.fingerprint == fp)
                .map_or(Holds::Neither, |k| k.name.into()),
            _ => Holds::Unknown,
        }
    }

    fn file(&self) -> &str {
        self.plan.origin()
    }

    fn account(&self) -> Check {
        let name = self.plan.storage_account.name();
        let seen = &self.seen.account;
        let verdict = match seen {
            Got::Done(a) if a.shared_key_allowed() => Verdict::ok("shared keys allowed"),
            Got::Done(_) => Verdict::problem(
                Status::Error,
                "allowSharedKeyAccess is false: no account key works on the data plane, so keyflip cannot verify a new key",
                Some(format!(
                    "allow shared keys (az storage account update -n {name} --allow-shared-key-access true); if every consumer uses Entra ID now, remove the plan instead of rotating keys nobody can use."
                )),
            ),
            other => not_done(other, &self.missing).unwrap_or_else(|| Verdict::ok("read")),
        };
        let account = seen.done();
        verdict.check(
            format!("storage account {name}"),
            Facts::StorageAccount {
                id: self.plan.storage_account.to_string(),
                blob_endpoint: account
                    .and_then(|a| a.blob_endpoint.as_ref())
                    .map(ToString::to_string),
                shared_key_access: account.map(|a| a.shared_key_allowed()),
            },
        )
    }

    /// One row per key: its fingerprint, age and data-plane probe.
    fn keys(&self) -> Vec<Check> {
        let keys = match &self.seen.keys {
            Got::Done(keys) => keys,
            other => {
                return KeyName::BOTH
                    .iter()
                    .map(|&key| {
                        let verdict =
                            not_done(other, &self.missing).unwrap_or_else(|| Verdict::ok("read"));
                        verdict.check(
                            key.as_str(),
                            Facts::Key {
                                key,
                                fingerprint: None,
                                created: None,
                                probe: None,
                            },
                        )
                    })
                    .collect();
            }
        };
        let identical = keys.len() == 2 && keys[0].fingerprint == keys[1].fingerprint;
        keys.iter()
            .map(|k| {
                let mut verdict = match &k.probe {
                    Got::Done(p) => probe_verdict(p.outcome, &p.detail, p.status, p.code.as_deref()),
                    other => not_done(other, &self.missing).unwrap_or_else(|| Verdict::ok("probed")),
                };
                if identical && k.name == KeyName::Key2 {
                    verdict.add(
                        Status::Error,
                        "has the same value as key1, so consumers' keys cannot be told apart",
                        Some(format!(
                            "regenerate one of the keys (az storage account keys renew -n {} --key key2) while no consumer uses it.",
                            self.plan.storage_account.name()
                        )),
                    );
                }
                let probe = k.probe.done().map(|p| ProbeFacts {
                    outcome: match p.outcome {
                        ProbeOutcome::Works => "works",
                        ProbeOutcome::Rejected => "rejected",
                        ProbeOutcome::SharedKeysDisabled => "shared_keys_disabled",
                        ProbeOutcome::Refused => "refused",
                        ProbeOutcome::Other => "other",
                    },
                    status: p.status,
                    code: p.code.clone(),
                    request_id: p.request_id.clone(),
                });
                verdict.check(
                    k.name.as_str(),
                    Facts::Key {
                        key: k.name,
                        fingerprint: Some(k.fingerprint),
                        created: k.created,
                        probe,
                    },
                )
            })
            .collect()
    }

    /// A resynced workspace: its own storage account must be this plan's, and its
    /// cached key is a consumer.
    fn workspace(&self, ws: &WorkspaceSeen, holdings: &mut Vec<Holding>) -> Check {
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
            (None, _) => Verdict::ok("its own storage account"),
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
    fn datastores(&self, ws: &WorkspaceSeen, holdings: &mut Vec<Holding>) -> Check {
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
        for &ds in &all {
            let d = ds;
            let reason = if !is_named(&ds.name) || d.on_account {
                None
            } else if !ds.uses_account_key {
                Some(format!(
                    "it uses {} credentials, not an account key",
                    ds.credentials_type
                ))
            } else {
                Some(format!(
                    "it reads account {}, not {account}",
                    ds.account_name.as_deref().unwrap_or("(none)")
                ))
            };
            if !d.on_account && reason.is_none() {
                continue;
            }
            let covered = d.on_account && (named.is_none() || is_named(&ds.name));
            if d.on_account && !covered {
                missed.push(ds.name.clone());
            }
            let fingerprint = d.key.done().copied();
            let holds = self.holds(fingerprint);
            if covered {
                holdings.push(Holding {
                    consumer: ConsumerId::datastore(id, &ds.name).to_string(),
                    holds,
                });
                if holds == Holds::Neither {
                    neither.push(ds.name.clone());
                }
                if let Some(v) = not_done(&d.key, &self.missing)
                    && skipped.as_ref().is_none_or(|s| v.status > s.status)
                {
                    skipped = Some(v);
                }
            }
            if let Some(r) = &reason {
                unusable.push(format!("{} ({r})", ds.name));
            }
            facts.push(DatastoreFacts {
                name: ds.name.clone(),
                datastore_type: Some(ds.datastore_type.clone()),
                credentials_type: Some(ds.credentials_type.clone()),
                account: ds.account_name.clone(),
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

    /// A Key Vault secret: which key each version holds, newest first.
    fn secret(&self, s: &SecretSeen, holdings: &mut Vec<Holding>) -> Check {
        let kv = &s.plan;
        let vault = kv
            .vault_id
            .as_ref()
            .map(|id| id.name().to_owned())
            .unwrap_or_else(|| url_name(&kv.vault));
        let subject = format!("{vault}/{}", kv.secret);
        let versions: Vec<VersionFacts> = match &s.versions {
            Got::Done(v) => v
                .iter()
                .map(|(version, key)| {
                    let fingerprint = key.done().copied().flatten();
                    let holds = match key {
                        Got::Done(None) => Holds::Neither,
                        _ => self.holds(fingerprint),
                    };
                    VersionFacts {
                        version: version.version.clone(),
                        enabled: version.enabled,
                        created: version.created,
                        holds,
                        fingerprint,
                    }
                })
                .collect(),
            _ => Vec::new(),
        };
        let current = versions.first();
        holdings.push(Holding {
            consumer: kv.id().to_string(),
            holds: current.map_or(Holds::Unknown, |v| v.holds),
        });
        let facts = Facts::KeyVaultSecret {
            vault: kv.vault.clone(),
            secret: kv.secret.clone(),
            format: kv.format.as_str(),
            versions: versions.clone(),
        };
        if let Some(v) = not_done(&s.versions, &self.missing) {
            return v.check(subject, facts);
        }
        let Some(current) = current else {
            return Verdict::problem(
                Status::Warning,
                "the secret has no versions",
                Some(format!("the first rotation writes one; if consumers read it already, check the name in {}.", self.file())),
            )
            .check(subject, facts);
        };
        let count = versions.len();
        if self.keys.is_none() {
            return Verdict::problem(
                Status::Skipped,
                format!(
                    "{count} version{} read; which key each holds is not known: the account's keys could not be read",
                    if count == 1 { "" } else { "s" }
                ),
                None,
            )
            .check(subject, facts);
        }
        let mut verdict = Verdict::described(format!(
            "current version holds {} ({count} version{})",
            current.holds.as_str(),
            if count == 1 { "" } else { "s" }
        ));
        let current_read = match &s.versions {
            Got::Done(v) => v.first().map(|(_, key)| key),
            _ => None,
        };
        match (current.enabled, current.holds, current_read) {
            (false, _, _) => verdict.add(
                Status::Error,
                "the current version is disabled, so everyone reading the secret gets an error",
                Some(format!("write a version holding the key consumers use (az keyvault secret set --name {}).", kv.secret)),
            ),
            (true, Holds::Neither, _) => verdict.add(
                Status::Error,
                "the current version holds neither of the account's keys",
                Some(format!("write a version holding the key the other consumers use (az keyvault secret set --name {}).", kv.secret)),
            ),
            (true, Holds::Unknown, Some(read)) => {
                if let Some(v) = not_done(read, &self.missing) {
                    verdict.add(v.status, v.finding.join("; "), v.fix.into_iter().next());
                }
            }
            _ => {}
        }
        // Older versions that still hold a working key other than the current one:
        // anything that reads them by version id keeps access, and breaks when that key
        // is regenerated.
        let stale: Vec<&VersionFacts> = versions[1..]
            .iter()
            .filter(|v| v.enabled && v.holds.key().is_some() && v.holds != current.holds)
            .collect();
        if !stale.is_empty() {
            let keys: Vec<&str> = {
                let mut k: Vec<&str> = stale.iter().map(|v| v.holds.as_str()).collect();
                k.dedup();
                k
            };
            verdict.add(
                Status::Warning,
                format!(
                    "{} older enabled version{} still hold{} {}, which works today",
                    stale.len(),
                    if stale.len() == 1 { "" } else { "s" },
                    if stale.len() == 1 { "s" } else { "" },
                    keys.join(" and ")
                ),
                Some("anything reading them by version id breaks when that key is regenerated; disable them if nothing needs them (az keyvault secret set-attributes --enabled false --version <id>).".into()),
            );
        }
        verdict.check(subject, facts)
    }

    /// A Databricks secret: its scope must exist and be Databricks-backed.
    fn databricks(&self, d: &DatabricksSeen, holdings: &mut Vec<Holding>) -> Check {
        let p = &d.plan;
        holdings.push(Holding {
            consumer: p.id().to_string(),
            holds: Holds::Unknown,
        });
        let workspace = p
            .workspace_id
            .as_ref()
            .map(|id| id.name().to_owned())
            .unwrap_or_else(|| url_name(&p.workspace_url));
        let subject = format!("scope {} in {workspace}", p.scope);
        let scope = d.scope.done().and_then(Option::as_ref);
        let secret = d
            .secrets
            .done()
            .and_then(|list| list.iter().find(|s| s.key == p.key));
        let facts = Facts::Databricks {
            workspace_url: p.workspace_url.clone(),
            scope: p.scope.clone(),
            key: p.key.clone(),
            backend: scope.map(|s| match &s.backend {
                ScopeBackend::Databricks => "databricks".to_owned(),
                ScopeBackend::AzureKeyVault { .. } => "azure_keyvault".to_owned(),
                ScopeBackend::Other(other) => other.to_ascii_lowercase(),
            }),
            secret_exists: d.secrets.done().map(|_| secret.is_some()),
            last_updated: secret.and_then(|s| s.last_updated),
        };
        if let Some(v) = not_done(&d.scope, &self.missing) {
            return v.check(subject, facts);
        }
        let verdict = match scope.map(|s| &s.backend) {
            None => Verdict::problem(
                Status::Error,
                format!("the workspace has no secret scope {}", p.scope),
                Some(format!(
                    "create it as a Databricks-backed scope (databricks secrets create-scope {}) and give keyflip's service principal WRITE on it.",
                    p.scope
                )),
            ),
            Some(ScopeBackend::AzureKeyVault { dns_name, .. }) => Verdict::problem(
                Status::Error,
                format!(
                    "the scope is Key Vault-backed ({}): Databricks reads that vault directly and refuses writes",
                    dns_name.as_deref().unwrap_or("vault unknown")
                ),
                Some(format!(
                    "remove this [[databricks]] entry from {} and list the vault's secret under [[key_vault]] instead.",
                    self.file()
                )),
            ),
            Some(ScopeBackend::Other(backend)) => Verdict::problem(
                Status::Error,
                format!(
                    "the scope's backend is {backend}; keyflip writes only Databricks-backed scopes"
                ),
                Some(format!(
                    "remove this [[databricks]] entry from {}.",
                    self.file()
                )),
            ),
            Some(ScopeBackend::Databricks) => match (&d.secrets, secret) {
                (Got::Done(_), Some(s)) => Verdict::ok(format!(
                    "Databricks-backed; secret {} last updated {}; its value cannot be read back, so its key is unknown",
                    p.key,
                    s.last_updated.map_or("at an unknown time".to_owned(), |t| t
                        .format("%Y-%m-%d %H:%M UTC")
                        .to_string())
                )),
                (Got::Done(_), None) => Verdict::problem(
                    Status::Warning,
                    format!("Databricks-backed, but it has no secret {} yet", p.key),
                    Some(format!(
                        "the first rotation writes it; if something reads it already, check the key name in {}.",
                        self.file()
                    )),
                ),
                (other, _) => {
                    not_done(other, &self.missing).unwrap_or_else(|| Verdict::ok("listed"))
                }
            },
        };
        verdict.check(subject, facts)
    }

    /// Every consumer's key together: one active key, or a split that no rotation can
    /// start from.
    fn consumers(&self, holdings: Vec<Holding>) -> Check {
        let count = |h: Holds| holdings.iter().filter(|x| x.holds == h).count();
        let (on1, on2, neither, unknown) = (
            count(Holds::Key1),
            count(Holds::Key2),
            count(Holds::Neither),
            count(Holds::Unknown),
        );
        let subject = format!(
            "{} consumer{}",
            holdings.len(),
            if holdings.len() == 1 { "" } else { "s" }
        );
        let active = match (on1, on2) {
            (0, 0) => None,
            (_, 0) => Some(KeyName::Key1),
            (0, _) => Some(KeyName::Key2),
            _ => None,
        };
        let mut verdict = if self.keys.is_none() {
            Verdict::problem(
                Status::Skipped,
                "not checked: the account's keys could not be read",
                None,
            )
        } else if on1 > 0 && on2 > 0 {
            Verdict::problem(
                Status::Error,
                format!("split: {on1} on key1, {on2} on key2; no rotation is safe until they agree"),
                Some("move every consumer to the key most of them use, then run keyflip doctor again.".into()),
            )
        } else if let Some(active) = active {
            Verdict::ok(format!(
                "{} on {active}: {active} is active, {} the standby a rotation regenerates first",
                on1 + on2,
                active.other()
            ))
        } else {
            Verdict::problem(
                Status::Warning,
                "no consumer's key could be read, so the active key is not known here",
                Some("a rotation decides from what its journal recorded for each consumer and refuses when it has nothing; see the rows above.".into()),
            )
        };
        if self.keys.is_some() {
            if neither > 0 {
                verdict
                    .finding
                    .push(format!("{neither} on neither key (see above)"));
            }
            if unknown > 0 {
                verdict.finding.push(format!("{unknown} unknown"));
            }
        }
        verdict.check(subject, Facts::Consumers { active, holdings })
    }
}

/// A short name for a vault or workspace URL: the last path segment of a path-style
/// URL (`https://host/keyvault/kv-datasci`), else the host's first label
/// (`https://kv-datasci.vault.azure.net` → `kv-datasci`).
fn url_name(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => match u
            .path_segments()
            .and_then(|mut s| s.rfind(|p| !p.is_empty()))
        {
            Some(last) => last.to_owned(),
            None => u
                .host_str()
                .and_then(|h| h.split('.').next())
                .unwrap_or(url)
                .to_owned(),
        },
        Err(_) => url.to_owned(),
    }
}

/// A probe outcome as a verdict with advice.
fn probe_verdict(
    outcome: ProbeOutcome,
    detail: &str,
    status: Option<u16>,
    code: Option<&str>,
) -> Verdict {
    let answer = match (status, code) {
        (Some(s), Some(c)) => format!(" (HTTP {s} {c})"),
        (Some(s), None) => format!(" (HTTP {s})"),
        _ => String::new(),
    };
    match outcome {
        ProbeOutcome::Works => Verdict::ok("works on the data plane"),
        ProbeOutcome::SharedKeysDisabled => Verdict::problem(
            Status::Error,
            format!("refused: shared keys are disabled on the account{answer}"),
            Some("allow shared keys on the account (see the storage account row).".into()),
        ),
        ProbeOutcome::Rejected => Verdict::problem(
            Status::Error,
            format!("rejected by the blob service{answer}"),
            Some("if the key was just regenerated, wait a minute and run keyflip doctor again; otherwise check this machine's clock (SharedKey requests carry the time).".into()),
        ),
        ProbeOutcome::Refused => Verdict::problem(
            Status::Error,
            format!("refused by the network or the account's firewall{answer}: {detail}"),
            Some("let this host reach the account's blob endpoint (its firewall and private endpoints); keyflip verifies every new key there.".into()),
        ),
        ProbeOutcome::Other => Verdict::problem(
            Status::Error,
            format!("unexpected answer{answer}: {detail}"),
            Some("keyflip verifies every new key with this request; fix what the answer says and run keyflip doctor again.".into()),
        ),
    }
}
