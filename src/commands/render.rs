//! Human-readable text for reports: a rotation's summary, a dry run, `status` and
//! `history`. Fingerprints in short form, times in UTC, no key anywhere (reports
//! hold none).

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::key::KeyName;
use crate::rotation::machine::{ConsumerStatus, Holding, KeyState, Outcome, RefusalReason};
use crate::rotation::{DryRun, PlanStatus, RotationReport, describe};

pub fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// `3d 4h`, `12m 5s`, `40s`.
pub fn age(d: chrono::TimeDelta) -> String {
    let s = d.num_seconds().max(0);
    let (days, hours, mins, secs) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    match (days, hours, mins) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, _) => format!("{mins}m {secs}s"),
        (0, _, _) => format!("{hours}h {mins}m"),
        _ => format!("{days}d {hours}h"),
    }
}

fn key_line(name: KeyName, before: &KeyState, after: &KeyState) -> String {
    if before.fingerprint == after.fingerprint {
        format!("{name}: {} (unchanged)", before.fingerprint)
    } else {
        format!("{name}: {} -> {}", before.fingerprint, after.fingerprint)
    }
}

pub fn refusal(out: &mut String, reasons: &[RefusalReason]) {
    let _ = writeln!(out, "refused, nothing was changed:");
    for r in reasons {
        let _ = writeln!(out, "  - {r}");
    }
}

/// The summary printed after `rotate now`, `rotate resume` and the demo.
pub fn rotation(report: &RotationReport) -> String {
    let mut out = String::new();
    let outcome = report.outcome.as_ref().map_or("unfinished", |o| match o {
        Outcome::Completed { .. } => "completed",
        Outcome::RolledBack { .. } => "rolled back",
        Outcome::Refused { .. } => "refused",
        Outcome::NeedsAttention { .. } => "NEEDS ATTENTION",
    });
    let _ = writeln!(
        out,
        "\nRotation {} of plan {}: {outcome}{}",
        report.rotation_id,
        report.plan,
        if report.resumed { " (resumed)" } else { "" }
    );
    match &report.outcome {
        Some(Outcome::Refused { reasons }) => {
            refusal(&mut out, reasons);
            return out;
        }
        Some(other @ (Outcome::RolledBack { .. } | Outcome::NeedsAttention { .. })) => {
            let _ = writeln!(out, "  {other}");
        }
        _ => {}
    }
    if let Some(d) = &report.decision {
        let _ = writeln!(
            out,
            "  decision:  consumers were on {}; {} was the standby",
            d.active, d.standby
        );
    }
    if let (Some(before), Some(after)) = (&report.keys_before, &report.keys_after) {
        let _ = writeln!(
            out,
            "  keys:      {}",
            key_line(KeyName::Key1, &before.key1, &after.key1)
        );
        let _ = writeln!(
            out,
            "             {}",
            key_line(KeyName::Key2, &before.key2, &after.key2)
        );
    }
    for r in &report.regenerated {
        let _ = writeln!(
            out,
            "  {} regenerated ({}) at {}",
            r.key,
            r.purpose,
            time(r.at)
        );
    }
    let moved: Vec<_> = report
        .consumers
        .iter()
        .filter_map(|c| match &c.status {
            ConsumerStatus::Verified { key } => Some((c, *key)),
            _ => None,
        })
        .collect();
    let _ = writeln!(out, "  consumers: {} verified on their key", moved.len());
    for (c, key) in &moved {
        let _ = writeln!(out, "    {key}  {}", describe::consumer(&c.consumer));
    }
    for c in &report.consumers {
        match &c.status {
            ConsumerStatus::Verified { .. } => {}
            ConsumerStatus::Untouched => {
                let _ = writeln!(
                    out,
                    "    --    {} (not touched)",
                    describe::consumer(&c.consumer)
                );
            }
            other => {
                let _ = writeln!(
                    out,
                    "    !!    {}: {other:?}",
                    describe::consumer(&c.consumer)
                );
            }
        }
        if !c.disabled_versions.is_empty() {
            let _ = writeln!(
                out,
                "          disabled versions: {}",
                c.disabled_versions.join(", ")
            );
        }
    }
    if let Some(finished) = report.finished_at {
        let took = finished - report.started_at;
        let _ = writeln!(
            out,
            "  timing:    started {}, took {} ({} steps)",
            time(report.started_at),
            age(took),
            report.steps.len()
        );
    }
    for w in &report.warnings {
        let _ = writeln!(out, "  warning:   {w}");
    }
    if let Some(paths) = &report.incident_report {
        let _ = writeln!(out, "  incident report: {}", paths.markdown.display());
        let _ = writeln!(out, "                   {}", paths.json.display());
    }
    out
}

pub fn dry_run(d: &DryRun) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Dry run of plan {} ({}); nothing will be changed.",
        d.plan, d.account
    );
    let _ = writeln!(out, "\nConsumers:");
    for c in &d.consumers {
        let holds = match &c.holding {
            Holding::Key(k) => k.to_string(),
            Holding::Neither => "neither key".to_owned(),
            Holding::Unknown { why } => format!("unknown ({why})"),
            Holding::Unusable { fix } => format!("cannot be rotated ({fix})"),
        };
        let _ = writeln!(out, "  {}: {holds}", describe::consumer(&c.consumer));
    }
    if let Some(reasons) = &d.refused {
        out.push('\n');
        refusal(&mut out, reasons);
        return out;
    }
    if let Some(dec) = &d.decision {
        let _ = writeln!(
            out,
            "\nDecision: consumers hold {}; {} is the standby.",
            dec.active, dec.standby
        );
    }
    for w in &d.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    let _ = writeln!(out, "\nSteps and calls, in order, if every step succeeds:");
    for s in &d.steps {
        let _ = writeln!(out, "{:>3}. {}", s.seq, s.step);
        for c in &s.calls {
            let _ = writeln!(out, "       {c}");
        }
    }
    out
}

pub fn status(plans: &[PlanStatus], now: DateTime<Utc>) -> String {
    let mut out = String::new();
    if plans.is_empty() {
        let _ = writeln!(out, "No plans.");
    }
    for p in plans {
        let account = p.account.rsplit('/').next().unwrap_or(&p.account);
        let _ = writeln!(out, "{} ({account})", p.plan);
        if let Some(e) = &p.error {
            let _ = writeln!(out, "  error:         {e}");
        }
        let _ = writeln!(
            out,
            "  active key:    {}",
            p.active
                .map_or_else(|| "unknown".to_owned(), |k| k.to_string())
        );
        let ages: Vec<String> = [
            (KeyName::Key1, p.key1_created),
            (KeyName::Key2, p.key2_created),
        ]
        .iter()
        .map(|(k, c)| match c {
            Some(c) => format!("{k} {}", age(now - *c)),
            None => format!("{k} unknown"),
        })
        .collect();
        let _ = writeln!(out, "  key ages:      {}", ages.join(", "));
        match &p.last_rotation {
            Some(r) => {
                let _ = writeln!(
                    out,
                    "  last rotation: {} {} ({})",
                    r.outcome.replace('_', " "),
                    time(r.finished_at.unwrap_or(r.started_at)),
                    r.rotation_id
                );
            }
            None => {
                let _ = writeln!(out, "  last rotation: never");
            }
        }
        if let Some(id) = &p.unfinished {
            let _ = writeln!(
                out,
                "  unfinished:    {id} (`keyflip rotate resume` finishes it)"
            );
        }
        let _ = writeln!(
            out,
            "  next due:      {}",
            match p.next_due {
                Some(at) if at <= now => format!("now ({})", p.due_reason),
                Some(at) => format!("{} ({})", time(at), p.due_reason),
                None => p.due_reason.clone(),
            }
        );
        if p.drift.is_empty() {
            let _ = writeln!(out, "  drift:         none");
        } else {
            for c in &p.drift {
                let _ = writeln!(
                    out,
                    "  drift:         {} holds {:?}",
                    describe::consumer(&c.consumer),
                    c.holding
                );
            }
        }
    }
    out
}

pub fn history(reports: &[RotationReport]) -> String {
    let mut out = String::new();
    if reports.is_empty() {
        let _ = writeln!(out, "No rotations recorded.");
    }
    for r in reports {
        let outcome = r
            .outcome
            .as_ref()
            .map_or_else(|| "unfinished".to_owned(), ToString::to_string);
        let _ = writeln!(
            out,
            "{}  plan {}  started {}{}",
            r.rotation_id,
            r.plan,
            time(r.started_at),
            r.finished_at
                .map(|f| format!(", took {}", age(f - r.started_at)))
                .unwrap_or_default()
        );
        let _ = writeln!(out, "  {outcome}");
        for s in &r.steps {
            let status = match s.ok {
                Some(true) => "ok  ",
                Some(false) => "FAIL",
                None => "??  ",
            };
            let took = s.duration_ms.map_or_else(
                || "in doubt".to_owned(),
                |ms| format!("{:.1}s", ms as f64 / 1000.0),
            );
            let _ = writeln!(
                out,
                "  {status} {:>3} {} ({took})",
                s.seq,
                describe::step(&s.command)
            );
        }
        out.push('\n');
    }
    out
}
