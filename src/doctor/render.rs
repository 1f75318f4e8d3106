//! The human form of a [`Report`]: who doctor ran as, then per plan one row per check
//! with a status column (`✓` ok, `!` warning, `✗` blocks a rotation, `-` not checked;
//! `ok`, `!`, `x`, `-` without a UTF-8 locale), the details that matter under it
//! (missing actions and the role that grants each, datastores, secret versions,
//! consumers) and, for every problem, a "what to do" line; missing permissions also
//! get ready-to-paste `az` commands and, where the narrowest built-in role is too
//! broad, a custom role's JSON. Rendered from the same value as the JSON, so the two
//! never disagree; fitted to the terminal's width (commands are broken with `\`).
//! Shows fingerprints, never values.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::remedy::custom_role_file;
use super::report::{Check, Facts, FingerprintSource, PlanReport, Report, Status};
use crate::commands::term::{Mark, Term};
use crate::secret::Fingerprint;

const KIND_WIDTH: usize = 13;
const MAX_SUBJECT_WIDTH: usize = 44;

/// A status's mark on this terminal.
fn symbol(status: Status, term: &Term) -> String {
    let mark = match status {
        Status::Ok => Mark::Ok,
        Status::Warning => Mark::Warn,
        Status::Skipped => Mark::Skip,
        Status::Error => Mark::Fail,
    };
    let width = if term.unicode { 1 } else { 2 };
    let shown = term.status(mark);
    let pad = width - term.mark(mark).chars().count().min(width);
    format!("{shown}{}", " ".repeat(pad))
}

/// The whole report as text.
pub fn human(report: &Report, term: &Term) -> String {
    let mut out = String::new();
    let plans = report.plans.len();
    out.push_str(&term.wrap(
        "",
        "  ",
        &format!(
            "keyflip doctor: {plans} plan{}; {}",
            if plans == 1 { "" } else { "s" },
            match (&report.fingerprints.source, &report.fingerprints.path) {
                (FingerprintSource::Installation, Some(path)) =>
                    format!("fingerprints under {path}"),
                _ => "fingerprints under a key made for this run (they match nothing outside this report)".to_owned(),
            }
        ),
    ));
    out.push_str(&term.wrap(
        "",
        "  ",
        &match &report.identity {
            Some(id) => format!("ran as: {}", id.describe()),
            None => "ran as: unknown (no token could be had; see the token rows)".to_owned(),
        },
    ));
    out.push_str(&term.wrap(
        "",
        "        ",
        &format!(
            "legend: {} ok   {} worth knowing   {} blocks a rotation   {} not checked",
            term.mark(Mark::Ok),
            term.mark(Mark::Warn),
            term.mark(Mark::Fail),
            term.mark(Mark::Skip)
        ),
    ));
    for plan in &report.plans {
        out.push('\n');
        render_plan(&mut out, plan, term);
    }
    for invalid in &report.invalid_plans {
        let _ = writeln!(
            out,
            "\n{}  {} is not a valid plan:\n{}\n   what to do: fix it (keyflip plan check {} shows every error).",
            symbol(Status::Error, term),
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

fn render_plan(out: &mut String, plan: &PlanReport, term: &Term) {
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
        render_check(out, check, width, term);
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

fn render_check(out: &mut String, check: &Check, width: usize, term: &Term) {
    let mark = symbol(check.status, term);
    let head = format!(
        "  {mark}  {:<KIND_WIDTH$}{:<width$}  ",
        kind_label(&check.facts),
        check.subject,
    );
    let head_cells = crate::commands::term::cells(&head);
    let pad = " ".repeat(head_cells.min(5 + KIND_WIDTH + 2));
    // The finding beside its subject while a useful part of it fits there, else under.
    if head_cells + 20 <= term.width {
        out.push_str(&term.wrap(&head, &" ".repeat(head_cells), &check.finding));
    } else {
        let _ = writeln!(out, "{}", head.trim_end());
        out.push_str(&term.wrap(&pad, &pad, &check.finding));
    }
    let pad = " ".repeat(5 + KIND_WIDTH + 2);
    let hang = format!("{pad}  ");
    for line in details(&check.facts) {
        out.push_str(&term.wrap(&pad, &hang, &line));
    }
    if let Some(fix) = &check.fix {
        out.push_str(&term.wrap(
            &format!("{pad}{} what to do: ", term.mark(Mark::Arrow)),
            &hang,
            fix,
        ));
    }
    if let Facts::Permissions {
        commands,
        custom_role,
        resource,
        missing,
        scope,
        ..
    } = &check.facts
    {
        let mut broad: Vec<&str> = missing
            .iter()
            .flatten()
            .filter_map(|m| m.role_id.as_deref())
            .filter_map(|id| {
                crate::azure::roles::BUILTIN_ROLES
                    .iter()
                    .find(|r| r.id == id)
            })
            .filter(|r| super::remedy::is_broad(r, scope))
            .map(|r| r.name)
            .collect();
        broad.dedup();
        let why = format!(
            "'{}' can delete the {}; instead, a custom role with exactly the actions only it grants (save as {}):",
            broad.join("' and '"),
            resource.label,
            custom_role_file(*resource)
        );
        paste_block(out, commands, custom_role.as_ref(), &why, &pad, term);
    }
}

/// Ready-to-paste commands, and the custom role's JSON, under a permissions row.
fn paste_block(
    out: &mut String,
    commands: &[String],
    custom_role: Option<&serde_json::Value>,
    why: &str,
    pad: &str,
    term: &Term,
) {
    if commands.is_empty() {
        return;
    }
    // Copied, not read in the table: close to the margin, so lines fit.
    let inner = "    ";
    if let Some(role) = custom_role {
        out.push_str(&term.wrap(pad, &format!("{pad}  "), why));
        let json = serde_json::to_string_pretty(role).unwrap_or_default();
        for line in json.lines() {
            let _ = writeln!(out, "{inner}{line}");
        }
    }
    let _ = writeln!(out, "{pad}ready to paste:");
    for command in commands {
        out.push_str(&paste(command, inner, term.width));
    }
}

/// A shell command broken before its options with ` \` where it would pass the
/// width, each continuation indented two more.
pub fn paste(command: &str, indent: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = indent.to_owned();
    let cont = format!("{indent}    ");
    let mut first = true;
    for (i, part) in command.split(" --").enumerate() {
        let piece = if i == 0 {
            part.to_owned()
        } else {
            format!("--{part}")
        };
        let extra = if first { 0 } else { 1 };
        if !first && line.chars().count() + extra + piece.chars().count() + 2 > width {
            out.push_str(&line);
            out.push_str(" \\\n");
            line = format!("{cont}{piece}");
        } else {
            if !first {
                line.push(' ');
            }
            line.push_str(&piece);
        }
        first = false;
    }
    out.push_str(&line);
    out.push('\n');
    out
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
            .map(|h| {
                format!(
                    "{:<7}  {}",
                    h.holds.as_str(),
                    crate::rotation::describe::consumer_id(&h.consumer)
                )
            })
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
                    crate::rotation::describe::consumer_id(&u.consumer),
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
