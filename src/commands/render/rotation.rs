//! A rotation as people read it: progress lines while it runs ([`progress`]) and the
//! report after it ([`rotation`]), for `rotate now`, `rotate resume` and the demo.
//!
//! The report's counts agree with what it says below them: a consumer is counted as
//! verified only when it was read back on its key; one whose value cannot be read
//! back (a secret scope's secret, a SecureString) is counted as written and
//! confirmed the way its kind says (its timestamp, its etag). Each
//! warning that names a consumer, and each Key Vault version disabled, is shown under
//! that consumer. An incident's next steps (SAS tokens, shared keys) are printed here
//! as well as in the incident report.

use std::fmt::Write as _;

use super::{Term, age, mode_text, names, seconds, shorten, time};
use crate::commands::term::{Color, Mark};
use crate::key::KeyName;
use crate::rotation::machine::{
    ConsumerRef, ConsumerStatus, ConsumerView, Holding, KeyState, Mode, Outcome, Purpose, Route,
};
use crate::rotation::{ProgressEvent, RotationReport, describe};

/// One progress event as text (possibly several lines); `None` for events only a
/// spinner shows. Step lines are `  ✓  4 bind … (0.1s)`.
pub fn progress(event: &ProgressEvent, term: &Term) -> Option<String> {
    let text = match event {
        ProgressEvent::Started {
            rotation_id,
            plan,
            mode,
        } => format!(
            "rotation {rotation_id} of plan {plan} started ({})",
            mode_text(*mode)
        ),
        ProgressEvent::Resuming {
            rotation_id,
            plan,
            in_doubt,
            ..
        } => format!(
            "resuming rotation {rotation_id} of plan {plan} ({in_doubt} step(s) in doubt, reconciled with Azure first)"
        ),
        ProgressEvent::Decided {
            route: Route::Retire,
            active,
            standby,
            ..
        } => format!(
            "decided: consumers hold {standby}, where the parked swap moved them; {active} is retired"
        ),
        ProgressEvent::Decided {
            active, standby, ..
        } => format!("decided: consumers hold {active}; {standby} is the standby"),
        ProgressEvent::StepStarted { .. } | ProgressEvent::Issued { .. } => return None,
        ProgressEvent::StepFinished {
            seq,
            step,
            ok,
            detail,
            duration,
            request_id,
            ..
        } => {
            let mut text = format!("{step} ({})", seconds(*duration));
            if let Some(d) = detail {
                let _ = write!(text, ": {d}");
            }
            if let Some(id) = request_id {
                let _ = write!(text, " [request id {id}]");
            }
            return Some(step_line(
                term,
                if *ok { Mark::Ok } else { Mark::Fail },
                Some(*seq),
                &text,
            ));
        }
        ProgressEvent::Waiting { until, why, .. } => {
            return Some(waiting_line(term, None, *until, why));
        }
        ProgressEvent::Finished { outcome, .. } => format!("finished: {outcome}"),
    };
    Some(term.wrap("", "  ", &text))
}

/// The last progress line, `finished: OUTCOME`, in the words of the rotation's mode
/// and naming its plan in the commands it advises (see [`describe::outcome`]).
pub(crate) fn finished_line(outcome: &Outcome, mode: Mode, plan: &str, term: &Term) -> String {
    term.wrap(
        "",
        "  ",
        &format!("finished: {}", describe::outcome(outcome, mode, plan)),
    )
}

/// A wait, shown once when it starts: `  …  21 wait until … (grace period …)`.
pub(crate) fn waiting_line(
    term: &Term,
    seq: Option<u32>,
    until: chrono::DateTime<chrono::Utc>,
    why: &str,
) -> String {
    step_line(
        term,
        Mark::Skip,
        seq,
        &format!("wait until {} ({why})", time(until)),
    )
}

/// The width of the status column of step lines: every mark padded to it.
fn mark_width(term: &Term) -> usize {
    if term.unicode { 1 } else { 4 }
}

/// `  ✓  4 text`, wrapped under the text.
pub(crate) fn step_line(term: &Term, mark: Mark, seq: Option<u32>, text: &str) -> String {
    let w = mark_width(term);
    let shown = match (mark, term.unicode) {
        (Mark::Fail, false) => "FAIL",
        (Mark::InDoubt, false) => "??",
        (Mark::Skip, true) => "…",
        (Mark::Skip, false) => "...",
        _ => term.mark(mark),
    };
    let color = match mark {
        Mark::Ok => Color::Green,
        Mark::Fail => Color::Red,
        Mark::InDoubt | Mark::Warn => Color::Yellow,
        _ => Color::Dim,
    };
    let padded = format!("{shown:<w$}");
    let head = format!(
        "  {} {} ",
        term.paint(&padded, color),
        seq.map_or_else(|| "  ".to_owned(), |s| format!("{s:>2}"))
    );
    let hang = " ".repeat(2 + w + 1 + 2 + 1);
    term.wrap(&head, &hang, text)
}

fn key_line(name: KeyName, before: &KeyState, after: &KeyState, what: Option<String>) -> String {
    if before.fingerprint == after.fingerprint {
        format!("{name} {} (unchanged)", before.fingerprint)
    } else {
        format!(
            "{name} {} -> {}{}",
            before.fingerprint,
            after.fingerprint,
            what.map(|w| format!(", {w}")).unwrap_or_default()
        )
    }
}

/// What a regeneration did, in the words of the rotation's mode.
pub(crate) fn regeneration_word(mode: Mode, key: KeyName, purpose: Purpose) -> &'static str {
    crate::rotation::describe::regeneration(mode, key, purpose)
}

/// Where a consumer stands, in words (for the ones not verified on their key).
fn consumer_status(s: &ConsumerStatus) -> String {
    match s {
        ConsumerStatus::Untouched => "not touched".to_owned(),
        ConsumerStatus::Binding { key } => format!("bind to {key} in flight"),
        ConsumerStatus::Bound { key } => format!("bound to {key}, not verified"),
        ConsumerStatus::Verifying { key } => format!("check that it holds {key} in flight"),
        ConsumerStatus::Verified { key } => format!("verified on {key}"),
        ConsumerStatus::BindFailed { key, reason } => format!("bind to {key} failed: {reason}"),
        ConsumerStatus::Mismatch { key, reason } => format!("does not hold {key}: {reason}"),
    }
}

/// The outcome's first word for the heading.
fn outcome_word(report: &RotationReport) -> &'static str {
    report.outcome.as_ref().map_or("unfinished", |o| match o {
        Outcome::Completed { .. } => "completed",
        Outcome::RolledBack { .. } => "rolled back",
        Outcome::Refused { .. } => "refused",
        Outcome::NeedsAttention { .. } => "NEEDS ATTENTION",
    })
}

/// Why a rotation ran, who asked, what it took over or followed, and each grace
/// period a person shortened: one field each.
pub(crate) fn origin_lines(out: &mut String, report: &RotationReport, term: &Term) {
    let field = |out: &mut String, name: &str, text: &str| {
        out.push_str(&term.wrap(&format!("  {name:<11}"), &" ".repeat(13), text));
    };
    let by = |b: &Option<crate::rotation::Requester>| {
        b.as_ref()
            .map(|b| format!(", asked by {b}"))
            .unwrap_or_default()
    };
    if let Some(trigger) = &report.trigger {
        field(
            out,
            "trigger:",
            &format!("{trigger}{}", by(&report.requested_by)),
        );
    }
    if let Some(id) = &report.follows {
        field(
            out,
            "follows:",
            &format!("rotation {id}, which this command finished first"),
        );
    }
    for g in &report.grace_shortened {
        field(
            out,
            "grace:",
            &format!(
                "grace period shortened to {}s at {}{}",
                g.grace_ms / 1000,
                time(g.at),
                by(&g.by)
            ),
        );
    }
    if let Some(e) = &report.escalation {
        field(
            out,
            "taken over:",
            &format!(
                "taken over at {} by an incident ({}){}: {}",
                time(e.at),
                e.mode,
                by(&e.by),
                if e.handled_here {
                    "this rotation handled it, with no grace period"
                } else {
                    "this rotation wound down and a follow-up rotation handled it"
                }
            ),
        );
    }
}

/// The summary printed after `rotate now`, `rotate resume` and the demo.
pub fn rotation(report: &RotationReport, term: &Term) -> String {
    let mut out = String::new();
    let refs: Vec<&ConsumerRef> = report.consumers.iter().map(|c| &c.consumer).collect();
    let short = |text: &str| shorten(text, &refs);
    if report.resumed {
        out.push('\n');
        out.push_str(&term.wrap(
            "",
            "",
            &format!(
                "Plan {} had an unfinished rotation {}: it was resumed instead of starting another.",
                report.plan, report.rotation_id
            ),
        ));
    }
    let word = outcome_word(report);
    let word = match report.outcome {
        Some(Outcome::Completed { .. }) => term.paint(word, Color::Green),
        Some(_) => term.paint(word, Color::Red),
        None => term.paint(word, Color::Yellow),
    };
    let _ = writeln!(
        out,
        "\nRotation {} of plan {}: {word}{}",
        report.rotation_id,
        report.plan,
        if report.resumed { " (resumed)" } else { "" }
    );
    let field = |out: &mut String, name: &str, text: &str| {
        out.push_str(&term.wrap(&format!("  {name:<11}"), &" ".repeat(13), text));
    };
    if report.mode.is_incident() {
        field(&mut out, "mode:", &mode_text(report.mode));
    }
    origin_lines(&mut out, report, term);
    match &report.outcome {
        Some(Outcome::Refused { reasons }) => {
            super::refusal(&mut out, reasons, &refs, &report.plan, term);
            return out;
        }
        Some(other @ (Outcome::RolledBack { .. } | Outcome::NeedsAttention { .. })) => {
            field(
                &mut out,
                "why:",
                &short(&describe::for_plan(&other.to_string(), &report.plan)),
            );
        }
        _ => {}
    }
    if let Some(d) = &report.decision {
        let text = if retires_parked_swap(report) {
            format!(
                "consumers were on {} (moved by the parked swap); {} was retired",
                d.standby, d.active
            )
        } else if d.route == crate::rotation::machine::Route::Adopt {
            format!("every consumer moves to {}, which works now", d.standby)
        } else {
            format!(
                "consumers were on {}; {} was the standby",
                d.active, d.standby
            )
        };
        field(&mut out, "decision:", &text);
    }
    if let (Some(before), Some(after)) = (&report.keys_before, &report.keys_after) {
        for (i, key) in KeyName::BOTH.into_iter().enumerate() {
            let what = report
                .regenerated
                .iter()
                .filter(|r| r.key == key)
                .map(|r| {
                    let at = if r.at.date_naive() == report.started_at.date_naive() {
                        r.at.format("at %H:%M:%S").to_string()
                    } else {
                        time(r.at)
                    };
                    format!("{} {at}", regeneration_word(report.mode, key, r.purpose))
                })
                .collect::<Vec<_>>();
            let what = (!what.is_empty()).then(|| what.join(", "));
            let (b, a) = match key {
                KeyName::Key1 => (&before.key1, &after.key1),
                KeyName::Key2 => (&before.key2, &after.key2),
            };
            field(
                &mut out,
                if i == 0 { "keys:" } else { "" },
                &key_line(key, b, a, what),
            );
        }
    }
    consumers(&mut out, report, term, &short);
    if let Some(finished) = report.finished_at {
        field(
            &mut out,
            "timing:",
            &format!(
                "started {}, took {} ({} steps)",
                time(report.started_at),
                age(finished - report.started_at),
                report.steps.len()
            ),
        );
    }
    for w in &report.warnings {
        let text = w.to_string();
        if !report.consumers.iter().any(|c| names(&text, &c.consumer)) {
            field(&mut out, "warning:", &short(&text));
        }
    }
    if report.mode.is_incident() && report.outcome.is_some() {
        let _ = writeln!(out, "  next steps:");
        let arrow = term.mark(Mark::Arrow);
        for step in [
            crate::rotation::SAS_WARNING,
            crate::rotation::SHARED_KEY_ADVICE,
        ] {
            out.push_str(&term.wrap(&format!("    {arrow} "), "      ", step));
        }
    }
    if let Some(paths) = &report.incident_report {
        let _ = writeln!(out, "  incident report: {}", paths.markdown.display());
        let _ = writeln!(out, "                   {}", paths.json.display());
    }
    out
}

/// A rotation that only retires the old key of a swap the usage gate parked: it
/// moves nobody, so consumers count where they were observed.
fn retires_parked_swap(report: &RotationReport) -> bool {
    report.decision.is_some_and(|d| d.route == Route::Retire)
}

/// Where a consumer ended on a key: verified there, or (a retire) observed there.
fn on_key(report: &RotationReport, c: &ConsumerView) -> Option<KeyName> {
    match (&c.status, &c.initially) {
        (ConsumerStatus::Verified { key }, _) => Some(*key),
        (ConsumerStatus::Untouched, Holding::Key(key)) if retires_parked_swap(report) => Some(*key),
        _ => None,
    }
}

/// The consumers: a count that agrees with the lines under it, then one line each
/// with its warnings and disabled versions under it.
fn consumers(
    out: &mut String,
    report: &RotationReport,
    term: &Term,
    short: &dyn Fn(&str) -> String,
) {
    if report.consumers.is_empty() {
        return;
    }
    // Consumers on a key by how: read back (`None`), or each way a write is confirmed.
    let mut verified: Vec<(Option<&str>, usize)> = Vec::new();
    for c in &report.consumers {
        if on_key(report, c).is_none() {
            continue;
        }
        let how = c.consumer.kind().confirmed_by();
        match verified.iter_mut().find(|(h, _)| *h == how) {
            Some((_, n)) => *n += 1,
            None => verified.push((how, 1)),
        }
    }
    verified.sort_by_key(|(how, _)| how.is_some());
    let on_a_key = verified.iter().map(|(_, n)| n).sum::<usize>();
    let other = report.consumers.len() - on_a_key;
    let keys: Vec<KeyName> = {
        let mut keys: Vec<KeyName> = report
            .consumers
            .iter()
            .filter_map(|c| on_key(report, c))
            .collect();
        keys.sort();
        keys.dedup();
        keys
    };
    let mut counts = Vec::new();
    if retires_parked_swap(report) {
        // The swap verified them; this run only observed them still there.
        if on_a_key > 0 {
            counts.push(format!("{on_a_key} observed where the swap left them"));
        }
    } else {
        for (how, n) in verified {
            counts.push(match how {
                None => format!("{n} verified by reading them back"),
                Some(how) => format!("{n} written and confirmed {how}"),
            });
        }
    }
    if other > 0 {
        counts.push(format!("{other} not on the new key (below)"));
    }
    let on = match keys.as_slice() {
        [key] => format!(" on {key}"),
        _ => String::new(),
    };
    out.push_str(&term.wrap(
        "  consumers: ",
        &" ".repeat(13),
        &format!("{}{on}: {}", report.consumers.len(), counts.join(", ")),
    ));
    for c in &report.consumers {
        let label = describe::consumer(&c.consumer);
        let (mark, text) = match (&c.status, on_key(report, c)) {
            (_, Some(key)) => (Mark::Ok, format!("{key}  {label}")),
            (status, None) => match status {
                ConsumerStatus::Verified { key } => (Mark::Ok, format!("{key}  {label}")),
                ConsumerStatus::Untouched => (Mark::Skip, format!("{label} (not touched)")),
                other => (
                    Mark::Fail,
                    format!("{label}: {}", short(&consumer_status(other))),
                ),
            },
        };
        let head = format!("    {} ", term.status(mark));
        let hang = " ".repeat(4 + term.mark(mark).chars().count() + 1);
        out.push_str(&term.wrap(&head, &hang, &text));
        let under = " ".repeat(hang.len() + 2);
        for w in &report.warnings {
            let text = w.to_string();
            if names(&text, &c.consumer) {
                // The precheck's word on a consumer it could not read: about the
                // state before the rotation, not after it.
                let when = if text.contains(" was not checked ") {
                    "before the rotation: "
                } else {
                    ""
                };
                out.push_str(&term.wrap(
                    &format!("{hang}{} ", term.mark(Mark::Warn)),
                    &under,
                    &format!("{when}{}", short(&text)),
                ));
            }
        }
        if !c.disabled_versions.is_empty() {
            out.push_str(&term.wrap(
                &format!("{hang}  "),
                &under,
                &format!(
                    "disabled Key Vault version(s) holding a leaked value: {}",
                    c.disabled_versions.join(", ")
                ),
            ));
        }
    }
}
