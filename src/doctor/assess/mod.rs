//! The judging half of `doctor`: turns what [`super::collect`] read about a plan into
//! report rows, each with a status and, for every problem, what to do. Pure: no IO,
//! no clock.
//!
//! What blocks (an error): a token or permission keyflip needs; an account that
//! cannot be read or disallows shared keys; a key that does not work on the data
//! plane, or two identical keys; a consumer a rotation cannot update or that holds
//! neither key, or one on the account that the plan leaves out (retiring the old key
//! would break it), as each kind's rows say (`crate::consumer`); consumers split
//! across both keys. A read refused for lack of a permission that the
//! permissions check already reports is "skipped", so one missing role is one error.

mod discovered;
mod verdict;

use std::collections::HashSet;

use super::collect::{Got, KeySeen, Observed, PermissionsSeen, TokenSeen};
use super::report::{
    Check, Facts, Holding, Holds, MissingAction, ProbeFacts, Resource, Service, Status,
};
use crate::azure::probe::ProbeOutcome;
use crate::key::KeyName;
use crate::plan::Plan;
use crate::secret::Fingerprint;
use verdict::fix_for;
pub(crate) use verdict::{Verdict, not_done};

/// Every row for `plan`, in report order.
pub fn assess(plan: &Plan, seen: &Observed) -> Vec<Check> {
    let ctx = Ctx::new(plan, seen);
    let mut checks: Vec<Check> = seen.tokens.iter().map(token).collect();
    checks.extend(seen.permissions.iter().map(permissions));
    checks.push(ctx.account());
    checks.extend(ctx.keys());
    let mut holdings = Vec::new();
    for consumer in &seen.consumers {
        checks.extend(consumer.checks(&ctx, &mut holdings));
    }
    checks.push(ctx.consumers(holdings));
    checks.extend(discovered::unlisted_row(plan, seen));
    checks.extend(discovered::gate_rows(plan, seen));
    checks
}

/// What every row needs: the plan, the keys' fingerprints, the missing actions.
pub(crate) struct Ctx<'a> {
    pub(crate) plan: &'a Plan,
    seen: &'a Observed,
    /// Both keys, when they could be read.
    pub(crate) keys: Option<&'a [KeySeen]>,
    /// The actions the permissions check found missing.
    pub(crate) missing: HashSet<String>,
}

fn token(t: &TokenSeen) -> Check {
    let facts = Facts::Token {
        service: t.service,
        audience: t.audience.clone(),
        credential: t.credential.clone(),
    };
    let verdict = match (&t.result, &t.audience) {
        // The credential is named once, on the ARM row every plan has.
        (Got::Done(()), Some(audience)) if t.service == Service::ARM => Verdict::ok(format!(
            "token acquired for {audience} with {}",
            t.credential
        )),
        (Got::Done(()), Some(audience)) => Verdict::ok(format!("token acquired for {audience}")),
        (Got::Done(()), None) => Verdict::ok("token acquired"),
        (Got::Failed(e), _) => Verdict::problem(Status::Error, e.to_string(), Some(fix_for(e))),
        (Got::NotTried(why), _) => Verdict::problem(
            Status::Warning,
            format!("not checked: {why}"),
            Some(format!(
                "the {} rows below still show whether keyflip can reach the service.",
                t.service.label()
            )),
        ),
    };
    verdict.check(t.service.label(), facts)
}

fn resource_label(resource: Resource, scope: &str) -> String {
    let name = scope.rsplit('/').next().unwrap_or(scope);
    format!("{} {name}", resource.label)
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
            commands: Vec::new(),
            custom_role: None,
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
    pub(crate) fn holds(&self, fingerprint: Option<Fingerprint>) -> Holds {
        match (fingerprint, self.keys) {
            (Some(fp), Some(keys)) => keys
                .iter()
                .find(|k| k.fingerprint == fp)
                .map_or(Holds::Neither, |k| k.name.into()),
            _ => Holds::Unknown,
        }
    }

    /// The plan file, for advice that says where to change it.
    pub(crate) fn file(&self) -> &str {
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
