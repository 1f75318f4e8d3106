//! `rotate now --dry-run` for people: a short summary first (the route, which key is
//! regenerated when and why, the grace period, the consumers by kind, what it costs
//! in Azure calls), then the steps in order, and with `--show-calls` every Azure call
//! of every step, ARM ids written once in a legend and abbreviated below it.
//!
//! The summary is also what `rotate now` shows before asking for confirmation.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::rotation::regeneration_word;
use super::{Term, holding, shorten};
use crate::key::KeyName;
use crate::rotation::machine::{ConsumerKind, ConsumerRef, Mode, Purpose, Route};
use crate::rotation::{CallService, DryRun, PlannedStep, describe};

/// How much of a dry run to show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Detail {
    /// The summary only (before the confirmation prompt).
    Summary,
    /// The summary and the steps.
    Steps,
    /// The summary, the steps and every call (`--show-calls`).
    Calls,
}

/// What the summary counts, also in the JSON document.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Summary {
    /// Every regeneration, in order.
    pub regenerations: Vec<PlannedRegeneration>,
    /// Consumers that move, by kind (`key_vault_secret`, ...).
    pub consumers_moved: BTreeMap<String, usize>,
    /// ARM calls other than GET: what the subscription's write budget counts.
    pub arm_writes: usize,
    /// Calls to each of [`CallService::CONSUMER_SERVICES`], as `{service}_calls`.
    #[serde(flatten)]
    pub(crate) service_calls: BTreeMap<String, usize>,
    pub steps: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct PlannedRegeneration {
    pub seq: u32,
    pub key: KeyName,
    pub purpose: Purpose,
    /// `staged`, `retired`, `revoked`, ... in the words of the rotation's mode.
    pub action: String,
    /// Before any consumer is bound.
    pub(crate) before_consumers_move: bool,
}

/// The kind's journaled snake_case name (`key_vault_secret`), so a new kind needs
/// no line here.
fn kind_key(kind: ConsumerKind) -> String {
    match serde_json::to_value(kind) {
        Ok(serde_json::Value::String(name)) => name,
        _ => kind.word().replace(' ', "_"),
    }
}

fn plural(kind: ConsumerKind, n: usize) -> String {
    let one = kind.to_string();
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

/// Counts what a dry run would do.
pub fn summary(d: &DryRun) -> Summary {
    let first_bind = d
        .steps
        .iter()
        .find(|s| s.kind == "bind")
        .map_or(u32::MAX, |s| s.seq);
    let regenerations = d
        .steps
        .iter()
        .filter_map(|s| match (s.kind.as_str(), s.key, s.purpose) {
            ("regenerate", Some(key), Some(purpose)) => Some(PlannedRegeneration {
                seq: s.seq,
                key,
                purpose,
                action: regeneration_word(d.mode, key, purpose).to_owned(),
                before_consumers_move: s.seq < first_bind,
            }),
            _ => None,
        })
        .collect();
    let mut consumers_moved = BTreeMap::new();
    for s in d.steps.iter().filter(|s| s.kind == "bind") {
        if let Some(c) = &s.consumer {
            *consumers_moved.entry(kind_key(c.kind())).or_default() += 1;
        }
    }
    let calls = || d.steps.iter().flat_map(|s| s.calls.iter());
    Summary {
        regenerations,
        consumers_moved,
        arm_writes: calls().filter(|c| c.is_arm_write()).count(),
        service_calls: CallService::CONSUMER_SERVICES
            .iter()
            .map(|&s| {
                let n = calls().filter(|c| c.service == s).count();
                (format!("{}_calls", s.key()), n)
            })
            .collect(),
        steps: d.steps.len(),
    }
}

fn route_text(d: &DryRun) -> String {
    let Some(dec) = &d.decision else {
        return "not decided".to_owned();
    };
    let (active, standby) = (dec.active, dec.standby);
    match dec.route {
        Route::Scheduled => format!(
            "safe swap: consumers hold {active}; they move to {standby} (the standby), then {active} is retired"
        ),
        Route::LeakedStandby => format!(
            "incident: the leaked {standby} is the standby, no consumer uses it; it is revoked at once and nothing else changes"
        ),
        Route::LeakedActive {
            revoke_first: true, ..
        } => format!(
            "incident, revoke first: {active} (leaked, in use) is revoked right after the keys are read, before any consumer is read, so consumers are down until re-bound to its new value"
        ),
        Route::LeakedActive { .. } => format!(
            "incident: consumers move off the leaked {active} to {standby}, then {active} is revoked at once"
        ),
        Route::LeakedBoth => format!(
            "incident, both keys leaked: consumers move to a fresh {standby}, then {active} is revoked at once; both keys end up new"
        ),
        Route::Retire => format!(
            "retire after a swap held at the usage gate: consumers already hold {standby}; {active} is retired once the logs show nobody signing with it"
        ),
        Route::Adopt => format!(
            "adopt: every consumer moves to {standby}, which works now; nothing is regenerated"
        ),
    }
}

fn consumers_text(d: &DryRun) -> String {
    let mut by_kind: Vec<(ConsumerKind, usize)> = Vec::new();
    let mut key = None;
    for s in d.steps.iter().filter(|s| s.kind == "bind") {
        if let Some(c) = &s.consumer {
            key = key.or(s.key);
            match by_kind.iter_mut().find(|(k, _)| *k == c.kind()) {
                Some((_, n)) => *n += 1,
                None => by_kind.push((c.kind(), 1)),
            }
        }
    }
    if by_kind.is_empty() {
        return "none moves".to_owned();
    }
    let total: usize = by_kind.iter().map(|(_, n)| n).sum();
    let kinds: Vec<String> = by_kind.iter().map(|(k, n)| plural(*k, *n)).collect();
    format!(
        "{total} move{}{}: {}",
        if total == 1 { "s" } else { "" },
        key.map(|k| format!(" to {k}")).unwrap_or_default(),
        kinds.join(", ")
    )
}

fn grace_text(d: &DryRun) -> String {
    if d.mode.is_incident() {
        return "none (incident: the leaked key is revoked as soon as consumers are safe)"
            .to_owned();
    }
    let grace = crate::plan::duration::format(std::time::Duration::from_millis(d.grace_ms));
    format!("{grace} between the verified swap and retiring the old key")
}

/// The dry run as text.
pub fn dry_run(d: &DryRun, term: &Term, detail: bool) -> String {
    render(d, term, if detail { Detail::Calls } else { Detail::Steps })
}

/// The dry run as text, as much of it as `detail` asks for.
pub(crate) fn render(d: &DryRun, term: &Term, detail: Detail) -> String {
    let mut out = String::new();
    let account = d.account.rsplit('/').next().unwrap_or(&d.account);
    let incident = if d.mode.is_incident() {
        "Incident dry run"
    } else {
        "Dry run"
    };
    out.push_str(&term.wrap(
        "",
        "",
        &format!(
            "{incident} of plan {} (storage account {account}): nothing is changed.",
            d.plan
        ),
    ));
    if let Some(id) = &d.unfinished {
        out.push('\n');
        out.push_str(&term.wrap(
            "",
            "",
            &format!(
                "The plan has an unfinished rotation {id}: `keyflip rotate now {}` finishes it instead of starting the rotation below.",
                d.plan
            ),
        ));
    }
    let refs: Vec<&ConsumerRef> = d.consumers.iter().map(|c| &c.consumer).collect();
    let field = |out: &mut String, name: &str, text: &str| {
        out.push_str(&term.wrap(&format!("  {name:<13}"), &" ".repeat(15), text));
    };
    if let Some(reasons) = &d.refused {
        let _ = writeln!(out, "\n  consumers, as found:");
        for c in &d.consumers {
            out.push_str(&term.wrap(
                "    - ",
                "      ",
                &format!(
                    "{}: {}",
                    describe::consumer(&c.consumer),
                    holding(&c.holding)
                ),
            ));
        }
        out.push('\n');
        super::refusal(&mut out, reasons, &refs, &d.plan, term);
        return out;
    }
    out.push('\n');
    let s = summary(d);
    field(&mut out, "route:", &route_text(d));
    for (i, r) in s.regenerations.iter().enumerate() {
        let when = if r.before_consumers_move {
            "before consumers move"
        } else if d.mode.is_incident() {
            "after consumers are verified, at once"
        } else {
            "after the grace period"
        };
        field(
            &mut out,
            if i == 0 { "regenerates:" } else { "" },
            &format!("{} {}, {when} (step {})", r.key, r.action, r.seq),
        );
    }
    field(&mut out, "consumers:", &consumers_text(d));
    if d.mode == Mode::Scheduled
        || d.decision
            .is_some_and(|dec| dec.route != Route::LeakedStandby)
    {
        field(&mut out, "grace:", &grace_text(d));
    }
    field(
        &mut out,
        "Azure calls:",
        &format!(
            "at most {} ARM writes (the subscription's write budget), {}; {} steps",
            s.arm_writes,
            CallService::CONSUMER_SERVICES
                .iter()
                .map(|&service| {
                    let n = s.service_calls.get(&format!("{}_calls", service.key()));
                    format!("{} {}", n.copied().unwrap_or(0), service.label())
                })
                .collect::<Vec<_>>()
                .join(", "),
            s.steps
        ),
    );
    for (i, e) in d.effects.iter().enumerate() {
        let times = match e.writes {
            1 => String::new(),
            n => format!("; {n} binds each do this, one after the other"),
        };
        field(
            &mut out,
            if i == 0 { "also:" } else { "" },
            &format!("{}{times}", e.effect),
        );
    }
    for w in &d.warnings {
        field(&mut out, "warning:", &shorten(w, &refs));
    }
    if detail == Detail::Summary {
        return out;
    }
    out.push('\n');
    out.push_str(&term.wrap(
        "",
        "",
        if detail == Detail::Calls {
            "Steps and their Azure calls, in order, if every step succeeds:"
        } else {
            "Steps, in order, if every step succeeds (--show-calls lists every Azure call):"
        },
    ));
    let legend = if detail == Detail::Calls {
        legend(d)
    } else {
        Vec::new()
    };
    if !legend.is_empty() {
        for (short, full) in &legend {
            let _ = writeln!(out, "  {short} = {full}");
        }
    }
    for s in &d.steps {
        step(&mut out, s, d.mode, term, detail, &legend);
    }
    out
}

/// A step in the words of the rotation's mode: in an incident a leaked key's
/// regeneration is a revoke, and the last step is the report.
fn step_words(s: &PlannedStep, mode: Mode) -> String {
    match (s.kind.as_str(), s.key, s.purpose) {
        ("regenerate", Some(key), Some(purpose)) => describe::regenerate(mode, key, purpose),
        ("finish", ..) if mode.is_incident() => {
            "finish: write the rotation and incident reports".to_owned()
        }
        ("finish", ..) => "finish: write the rotation report".to_owned(),
        _ => s.step.clone(),
    }
}

fn step(
    out: &mut String,
    s: &PlannedStep,
    mode: Mode,
    term: &Term,
    detail: Detail,
    legend: &[(String, String)],
) {
    out.push_str(&term.wrap(
        &format!("  {:>3}  ", s.seq),
        "       ",
        &step_words(s, mode),
    ));
    if detail != Detail::Calls {
        return;
    }
    for c in &s.calls {
        let mut text = c.to_string();
        for (short, full) in legend {
            text = text.replace(full.as_str(), short);
        }
        out.push_str(&term.wrap("         ", "             ", &text));
    }
}

/// The ARM ids the calls repeat (the account, each workspace), each with a short
/// name: written once above the steps instead of in every call.
fn legend(d: &DryRun) -> Vec<(String, String)> {
    let mut out = vec![("<account>".to_owned(), d.account.clone())];
    let marker = "/providers/Microsoft.MachineLearningServices/workspaces/";
    for c in d.steps.iter().flat_map(|s| s.calls.iter()) {
        let Some(at) = c.target.find(marker) else {
            continue;
        };
        let rest = &c.target[at + marker.len()..];
        let name = rest.split('/').next().unwrap_or(rest);
        let full = format!("{}{marker}{name}", &c.target[..at]);
        if !out.iter().any(|(_, f)| *f == full) {
            out.push((format!("<{name}>"), full));
        }
    }
    out
}
