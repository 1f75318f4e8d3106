//! A row under construction ([`Verdict`]) and how failed reads become rows: a read
//! refused for an action the permissions check already reports missing is "skipped"
//! (one missing role, one error); any other failure is an error with advice.

use std::collections::HashSet;

use super::super::collect::Got;
use super::super::report::{Check, Facts, Status};
use crate::azure::Error;

/// A row's outcome while it is being built: the worst status wins; findings and
/// fixes accumulate.
pub(crate) struct Verdict {
    pub(crate) status: Status,
    pub(crate) finding: Vec<String>,
    pub(crate) fix: Vec<String>,
    /// The first finding describes rather than reassures, so it stays when a problem
    /// is added.
    keep_summary: bool,
}

impl Verdict {
    /// An "all is well" summary, replaced by the first problem added.
    pub(crate) fn ok(finding: impl Into<String>) -> Verdict {
        Verdict {
            status: Status::Ok,
            finding: vec![finding.into()],
            fix: Vec::new(),
            keep_summary: false,
        }
    }
    /// A description that problems are appended to.
    pub(crate) fn described(finding: impl Into<String>) -> Verdict {
        Verdict {
            keep_summary: true,
            ..Verdict::ok(finding)
        }
    }
    pub(crate) fn problem(
        status: Status,
        finding: impl Into<String>,
        fix: Option<String>,
    ) -> Verdict {
        Verdict {
            status,
            finding: vec![finding.into()],
            fix: fix.into_iter().collect(),
            keep_summary: false,
        }
    }
    pub(crate) fn add(&mut self, status: Status, finding: impl Into<String>, fix: Option<String>) {
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
    pub(crate) fn check(self, subject: impl Into<String>, facts: impl Into<Facts>) -> Check {
        Check {
            subject: subject.into(),
            status: self.status,
            finding: self.finding.join("; "),
            fix: (!self.fix.is_empty()).then(|| self.fix.join(" ")),
            facts: facts.into(),
        }
    }
}

/// A failed or skipped read, as a verdict.
pub(crate) fn not_done<T>(got: &Got<T>, missing: &HashSet<String>) -> Option<Verdict> {
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

pub(crate) fn failure(e: &Error, missing: &HashSet<String>) -> Verdict {
    // Azure treats action names case-insensitively, and its refusals spell them in
    // the operation's own casing (`listKeys`), not the role definitions' (`listkeys`);
    // the report names the action as keyflip's own list spells it.
    if let Some(action) = e.denial().and_then(|d| d.action.as_ref())
        && let Some(name) = missing
            .iter()
            .find(|m| m.eq_ignore_ascii_case(action.name()))
    {
        return Verdict::problem(
            Status::Skipped,
            format!("not checked: keyflip lacks {name} (see permissions)"),
            None,
        );
    }
    Verdict::problem(Status::Error, e.to_string(), Some(fix_for(e)))
}

/// One line of advice for an Azure error.
pub(crate) fn fix_for(e: &Error) -> String {
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
