//! The human form of a [`Report`]: per plan, one row per check with a status column
//! (`✓` ok, `!` warning, `✗` blocks a rotation, `-` not checked), the details that
//! matter under it (missing actions and the role that grants each, datastores, secret
//! versions, consumers) and, for every problem, a "what to do" line. Rendered from the
//! same value as the JSON, so the two never disagree. Shows fingerprints, never values.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::report::{Check, Facts, FingerprintSource, PlanReport, Report, Status};
use crate::consumer::ConsumerId;
use crate::secret::Fingerprint;

const KIND_WIDTH: usize = 13;
const MAX_SUBJECT_WIDTH: usize = 44;

/// The whole report as text.
pub fn human(report: &Report) -> String {
    let mut out = String::new();
    let plans = report.plans.len();
    let _ = writeln!(
        out,
        "keyflip doctor: {plans} plan{}; {}",
        if plans == 1 { "" } else { "s" },
        match (&report.fingerprints.source, &report.fingerprints.path) {
            (FingerprintSource::Installation, Some(path)) =>
                format!("fingerprints under {path}"),
            _ => "fingerprints under a key made for this run (they match nothing outside this report)".to_owned(),
        }
    );
    let _ = writeln!(
        out,
        "legend: ✓ ok   ! worth knowing, does not block   ✗ blocks a rotation   - not checked"
    );
    for plan in &report.plans {
        out.push('\n');
        render_plan(&mut out, plan);
    }
    for invalid in &report.invalid_plans {
        let _ = writeln!(
            out,
            "\n✗  {} is not a valid plan:\n{}\n   what to do: fix it (keyflip plan check {} shows every error).",
            invalid.file,
            indent(&invalid.message, "   "),
            invalid.file
        );
    }
    out.push('\n');
    let blocked: Vec<&str> = report
        .plans
        .iter()
        .filter(|p| p.blocking)
        .map(|p| p.plan.as_str())
        .collect();
    let _ = match (blocked.is_empty(), report.invalid_plans.is_empty()) {
        (true, true) => writeln!(out, "nothing blocks a rotation"),
        (false, _) => writeln!(out, "a rotation would be blocked: {}", blocked.join(", ")),
        (true, false) => writeln!(out, "some plan files are not valid plans"),
    };
    out
}

fn render_plan(out: &mut String, plan: &PlanReport) {
    let _ = writeln!(out, "plan {}  ({})", plan.plan, plan.file);
    let _ = writeln!(out, "storage account {}", plan.storage_account);
    let width = plan
        .checks
        .iter()
        .map(|c| c.subject.chars().count())
        .max()
        .unwrap_or(0)
        .min(MAX_SUBJECT_WIDTH);
    for check in &plan.checks {
        render_check(out, check, width);
    }
    let count = |s: Status| plan.checks.iter().filter(|c| c.status == s).count();
    let (errors, warnings) = (count(Status::Error), count(Status::Warning));
    let _ = writeln!(
        out,
        "{}: {}, {warnings} warning{}",
        plan.plan,
        match errors {
            0 => "nothing blocks a rotation".to_owned(),
            1 => "1 problem blocks a rotation".to_owned(),
            n => format!("{n} problems block a rotation"),
        },
        if warnings == 1 { "" } else { "s" }
    );
}

fn render_check(out: &mut String, check: &Check, width: usize) {
    let _ = writeln!(
        out,
        "  {}  {:<KIND_WIDTH$}{:<width$}  {}",
        check.status.symbol(),
        kind_label(&check.facts),
        check.subject,
        check.finding,
    );
    let pad = " ".repeat(5 + KIND_WIDTH + 2);
    for line in details(&check.facts) {
        let _ = writeln!(out, "{pad}{line}");
    }
    if let Some(fix) = &check.fix {
        let _ = writeln!(out, "{pad}→ what to do: {fix}");
    }
}

fn kind_label(facts: &Facts) -> &'static str {
    match facts {
        Facts::Token { .. } => "token",
        Facts::Permissions { .. } => "permissions",
        Facts::StorageAccount { .. } => "account",
        Facts::Key { .. } => "key",
        Facts::Consumers { .. } => "consumers",
        Facts::Unlisted { .. } => "unlisted",
        Facts::UsageGateLogs { .. } => "gate logs",
        Facts::UsageGateQuery { .. } => "gate query",
        Facts::Consumer(f) => f.label(),
    }
}

/// The lines under a row: what a person needs to act on it.
fn details(facts: &Facts) -> Vec<String> {
    match facts {
        Facts::Permissions {
            missing: Some(missing),
            ..
        } => missing
            .iter()
            .map(|m| {
                let kind = if m.data_action { " (data action)" } else { "" };
                match (&m.role, &m.role_id) {
                    (Some(role), Some(id)) => {
                        format!("missing {}{kind}: granted by '{role}' ({id})", m.action)
                    }
                    _ => format!(
                        "missing {}{kind}: no built-in role keyflip knows grants it",
                        m.action
                    ),
                }
            })
            .collect(),
        Facts::Key {
            fingerprint: Some(fp),
            created,
            ..
        } => vec![format!("{fp}  created {}", time(*created))],
        Facts::Consumers { holdings, .. } => holdings
            .iter()
            .map(|h| format!("{:<7}  {}", h.holds.as_str(), consumer_label(&h.consumer)))
            .collect(),
        Facts::Consumer(f) => f.details(),
        Facts::Unlisted {
            consumers,
            not_rotatable,
            ..
        } => consumers
            .iter()
            .map(|u| {
                format!(
                    "{:<7}  {}: {}{}",
                    u.holds,
                    consumer_label(&u.consumer),
                    u.how,
                    if u.probable { " (probable)" } else { "" },
                )
            })
            .chain(
                not_rotatable
                    .iter()
                    .map(|n| format!("-        {}: {}", n.subject, n.why)),
            )
            .collect(),
        Facts::UsageGateLogs { services, .. } => services
            .iter()
            .map(|s| match (&s.setting, s.read) {
                (Some(name), _) => format!("{:<6} sent by diagnostic setting {name}", s.service),
                (None, true) => format!(
                    "{:<6} no diagnostic setting sends its requests there",
                    s.service
                ),
                (None, false) => {
                    format!("{:<6} the diagnostic settings could not be read", s.service)
                }
            })
            .collect(),
        Facts::UsageGateQuery {
            missing: Some(missing),
            ..
        } => missing
            .iter()
            .map(|m| match &m.role {
                Some(role) => format!("missing {}: granted by '{role}'", m.action),
                None => format!("missing {}", m.action),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// A consumer id made short enough to read in a table: `keyvault:https://host/secrets/x`
/// becomes `key vault host/x`, ARM ids keep only their names. JSON keeps the full id.
fn consumer_label(id: &str) -> String {
    match id.parse::<ConsumerId>() {
        Ok(c) => format!("{} {}", c.kind().word(), c.short()),
        Err(_) => id.to_owned(),
    }
}

pub(crate) fn fp(fingerprint: Option<&Fingerprint>) -> String {
    fingerprint.map_or_else(|| "-".to_owned(), Fingerprint::short)
}

pub(crate) fn time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "at an unknown time".to_owned(),
        |t| t.format("%Y-%m-%d %H:%M UTC").to_string(),
    )
}

fn indent(text: &str, by: &str) -> String {
    text.lines()
        .map(|l| format!("{by}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
