//! The one renderer of what commands show: an [`Answer`] as human text or as the JSON
//! document of `--output json`, a progress event as a line, a [`CommandError`] as an
//! error. The standalone runner and the daemon client both print through here, so a
//! command shows the same whichever process did the work.
//!
//! Promises: times to the second in UTC, fingerprints in short form, no key anywhere
//! (answers hold none), and no Rust `Debug` text or raw serde in human output: every
//! value a person reads is worded here or by a `Display` impl.

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::answer::{Answer, CommandError};
use crate::cli::Output;
use crate::daemon::control::protocol::DaemonInfo;
use crate::key::KeyName;
use crate::rotation::machine::{
    ConsumerStatus, Holding, KeyState, Mode, Outcome, RefusalReason, Route,
};
use crate::rotation::{DryRun, PlanStatus, ProgressEvent, RotationReport, describe};

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

/// What `--output` prints on stdout for an answer, newline included.
pub fn answer(answer: &Answer, output: Output) -> String {
    match output {
        Output::Human => human(answer),
        Output::Json => json(answer),
    }
}

/// An answer as the JSON document of `--output json`: the report itself (a rotation,
/// a dry run), or a list (reports of a resume, plan statuses, history).
pub fn json(answer: &Answer) -> String {
    let doc = match answer {
        Answer::Rotation { report } => serde_json::to_string_pretty(report),
        Answer::DryRun { dry_run } => serde_json::to_string_pretty(dry_run),
        Answer::Resumed { reports } => serde_json::to_string_pretty(reports),
        Answer::Status { plans, .. } => serde_json::to_string_pretty(plans),
        Answer::History { rotations } => serde_json::to_string_pretty(rotations),
    };
    match doc {
        Ok(mut text) => {
            text.push('\n');
            text
        }
        // These types serialize infallibly (string keys, no fallible custom impls).
        Err(e) => format!(
            "{}\n",
            serde_json::json!({"error": format!("cannot encode the report: {e}"), "exit": 1})
        ),
    }
}

/// An answer as text for people.
pub fn human(answer: &Answer) -> String {
    match answer {
        Answer::Rotation { report } => {
            let mut out = String::new();
            if report.resumed {
                let _ = writeln!(
                    out,
                    "\nPlan {} had an unfinished rotation {}: it was resumed instead of starting another.",
                    report.plan, report.rotation_id
                );
            }
            out.push_str(&rotation(report));
            out
        }
        Answer::DryRun { dry_run: d } => dry_run(d),
        Answer::Resumed { reports } if reports.is_empty() => {
            "Nothing to resume: no unfinished rotation.\n".to_owned()
        }
        Answer::Resumed { reports } => reports.iter().map(rotation).collect(),
        Answer::Status { at, plans } => status(plans, *at),
        Answer::History { rotations } => history(rotations),
    }
}

/// The line saying a running daemon did the work (on stderr, so stdout is the same
/// whichever process answered). `status` adds the daemon's one-line summary; after a
/// rotation it would still say "rotating", as the daemon answers before it notes the
/// end.
pub fn through_daemon(info: &DaemonInfo, with_summary: bool) -> String {
    let mut line = format!(
        "keyflip: answered by the running keyflip daemon (pid {}, version {})",
        info.pid, info.version
    );
    if with_summary {
        let _ = write!(line, ": {}", info.summary);
    }
    line
}

/// An error: the line for stderr, and for `--output json` the document for stdout.
pub fn error(error: &CommandError, output: Output) -> (String, Option<String>) {
    let line = format!("keyflip: {}", error.message);
    let doc = (output == Output::Json).then(|| {
        format!(
            "{}\n",
            serde_json::json!({"error": error.message, "exit": error.exit as u8})
        )
    });
    (line, doc)
}

fn mode_text(mode: Mode) -> String {
    match mode {
        Mode::Scheduled => "safe swap".to_owned(),
        Mode::Leaked { key, revoke_first } => format!(
            "incident: {key} leaked{}",
            if revoke_first { ", revoke first" } else { "" }
        ),
        Mode::LeakedBoth => "incident: both keys leaked".to_owned(),
        Mode::Retire { key, force, .. } => format!(
            "retire {key} after a swap held at the usage gate{}",
            if force { ", forced" } else { "" }
        ),
    }
}

/// Whole milliseconds (what the control socket carries) in seconds, one decimal.
fn seconds(d: Duration) -> String {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    format!("{:.1}s", ms as f64 / 1000.0)
}

/// One progress event as a line of text; `None` for events only a spinner shows.
pub fn progress(event: &ProgressEvent) -> Option<String> {
    Some(match event {
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
        ProgressEvent::StepStarted { .. } => return None,
        ProgressEvent::StepFinished {
            seq,
            step,
            ok,
            detail,
            duration,
            request_id,
            ..
        } => {
            let mut text = format!(
                "  {} {seq:>2} {step} ({})",
                if *ok { "ok  " } else { "FAIL" },
                seconds(*duration)
            );
            if let Some(d) = detail {
                let _ = write!(text, ": {d}");
            }
            if let Some(id) = request_id {
                let _ = write!(text, " [request id {id}]");
            }
            text
        }
        ProgressEvent::Waiting { until, why, .. } => {
            format!("  wait until {} ({why})", time(*until))
        }
        ProgressEvent::Finished { outcome, .. } => format!("finished: {outcome}"),
    })
}

fn key_line(name: KeyName, before: &KeyState, after: &KeyState) -> String {
    if before.fingerprint == after.fingerprint {
        format!("{name}: {} (unchanged)", before.fingerprint)
    } else {
        format!("{name}: {} -> {}", before.fingerprint, after.fingerprint)
    }
}

fn refusal(out: &mut String, reasons: &[RefusalReason]) {
    let _ = writeln!(out, "refused, nothing was changed:");
    for r in reasons {
        let _ = writeln!(out, "  - {r}");
    }
}

/// What a consumer holds, in words.
fn holding(h: &Holding) -> String {
    match h {
        Holding::Key(k) => k.to_string(),
        Holding::Neither => "neither key".to_owned(),
        Holding::Unknown { why } => format!("unknown ({why})"),
        Holding::Unusable { fix } => format!("cannot be rotated ({fix})"),
    }
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
    let retire = report.decision.is_some_and(|d| d.route == Route::Retire);
    if let Some(d) = &report.decision {
        let _ = if retire {
            writeln!(
                out,
                "  decision:  consumers were on {} (moved by the parked swap); {} was retired",
                d.standby, d.active
            )
        } else {
            writeln!(
                out,
                "  decision:  consumers were on {}; {} was the standby",
                d.active, d.standby
            )
        };
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
        .filter_map(|c| match (&c.status, &c.initially) {
            (ConsumerStatus::Verified { key }, _) => Some((c, *key)),
            // A retire moves nobody: consumers were observed where the swap left them.
            (ConsumerStatus::Untouched, Holding::Key(key)) if retire => Some((c, *key)),
            _ => None,
        })
        .collect();
    if retire {
        let _ = writeln!(out, "  consumers: {} observed on their key", moved.len());
    } else {
        let _ = writeln!(out, "  consumers: {} verified on their key", moved.len());
    }
    for (c, key) in &moved {
        let _ = writeln!(out, "    {key}  {}", describe::consumer(&c.consumer));
    }
    for c in &report.consumers {
        match &c.status {
            ConsumerStatus::Verified { .. } => {}
            ConsumerStatus::Untouched if retire => {}
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
                    "    !!    {}: {}",
                    describe::consumer(&c.consumer),
                    consumer_status(other)
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
    if let Some(id) = &d.unfinished {
        let _ = writeln!(
            out,
            "\nThe plan has an unfinished rotation {id}: `keyflip rotate now {}` finishes it instead of starting the rotation below.",
            d.plan
        );
    }
    let _ = writeln!(out, "\nConsumers:");
    for c in &d.consumers {
        let _ = writeln!(
            out,
            "  {}: {}",
            describe::consumer(&c.consumer),
            holding(&c.holding)
        );
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
        let schedule = &p.schedule;
        if let Some(job) = &schedule.running {
            let _ = writeln!(
                out,
                "  running:       {}{} since {}",
                job.kind,
                job.rotation_id
                    .as_ref()
                    .map(|id| format!(" {id}"))
                    .unwrap_or_default(),
                time(job.since)
            );
        }
        if let Some(parked) = &schedule.parked {
            let _ = writeln!(
                out,
                "  NEEDS ATTENTION since {}: {} (no automatic rotations until `keyflip rotate now` or `keyflip rotate resume` succeeds)",
                time(parked.at),
                parked.reason
            );
        } else if schedule.failures > 0 {
            let _ = writeln!(
                out,
                "  failures:      {} failed cycle(s) in a row{}",
                schedule.failures,
                schedule
                    .retry_at
                    .map(|at| format!("; next retry {}", time(at)))
                    .unwrap_or_default()
            );
        }
        if p.drift.is_empty() && schedule.findings.is_empty() {
            let _ = writeln!(out, "  drift:         none");
        }
        for c in &p.drift {
            let _ = writeln!(
                out,
                "  drift:         {} holds {}",
                describe::consumer(&c.consumer),
                holding(&c.holding)
            );
        }
        for finding in &schedule.findings {
            let _ = writeln!(out, "  drift:         {finding}");
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

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;
    use crate::rotation::machine::{ConsumerId, ConsumerRef, ObservedConsumer};
    use crate::rotation::{ParkedStatus, RunningJob, ScheduleStatus};

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, h, m, s).unwrap()
    }

    fn plan_status() -> PlanStatus {
        let mut p = PlanStatus::unreadable(
            "demo",
            "/subscriptions/s/storageAccounts/st1",
            String::new(),
        );
        p.error = None;
        p.active = Some(KeyName::Key1);
        p.key1_created = Some(at(0, 0, 0) - chrono::TimeDelta::days(3));
        p.next_due = Some(at(3, 0, 0));
        p.due_reason = "not-yet".into();
        p
    }

    #[test]
    fn status_shows_key_ages_the_schedule_and_drift_in_words() {
        let mut p = plan_status();
        p.key2_created = Some(at(0, 59, 0) + chrono::TimeDelta::nanoseconds(123_456_789));
        p.drift = vec![ObservedConsumer {
            consumer: ConsumerRef::new(ConsumerId::key_vault("https://kv.example", "s1")),
            holding: Holding::Neither,
        }];
        p.schedule = ScheduleStatus {
            running: Some(RunningJob {
                kind: "rotation".into(),
                rotation_id: Some("r-1".into()),
                since: at(0, 59, 30) + chrono::TimeDelta::nanoseconds(5),
            }),
            failures: 0,
            retry_at: None,
            parked: Some(ParkedStatus {
                at: at(0, 30, 0),
                reason: "3 failed cycles".into(),
            }),
            findings: vec!["key2 was regenerated outside keyflip".into()],
        };
        let text = status(&[p], at(1, 0, 0));
        for want in [
            "demo (st1)\n",
            "  active key:    key1\n",
            "  key ages:      key1 3d 1h, key2 59s\n",
            "  next due:      2026-03-01 03:00:00 UTC (not-yet)\n",
            "  running:       rotation r-1 since 2026-03-01 00:59:30 UTC\n",
            "  NEEDS ATTENTION since 2026-03-01 00:30:00 UTC: 3 failed cycles",
            "  drift:         Key Vault secret kv.example/s1 holds neither key\n",
            "  drift:         key2 was regenerated outside keyflip\n",
        ] {
            assert!(text.contains(want), "{want:?} in:\n{text}");
        }
        assert!(
            !text.contains("Neither") && !text.contains(".123"),
            "{text}"
        );
    }

    #[test]
    fn failures_show_the_retry_time_to_the_second() {
        let mut p = plan_status();
        p.schedule.failures = 2;
        p.schedule.retry_at = Some(at(1, 5, 0) + chrono::TimeDelta::nanoseconds(999));
        let text = status(&[p], at(1, 0, 0));
        assert!(
            text.contains(
                "  failures:      2 failed cycle(s) in a row; next retry 2026-03-01 01:05:00 UTC\n"
            ),
            "{text}"
        );
        assert!(text.contains("  drift:         none\n"), "{text}");
    }

    #[test]
    fn consumer_states_are_worded_not_debug_printed() {
        let text = consumer_status(&ConsumerStatus::Mismatch {
            key: KeyName::Key2,
            reason: crate::rotation::machine::Failure::new(
                crate::rotation::machine::FailureKind::WrongValue,
                "holds key1",
            ),
        });
        assert_eq!(text, "does not hold key2: holds key1");
        assert!(!text.contains('{'));
    }

    #[test]
    fn progress_durations_come_from_whole_milliseconds() {
        let event = |duration| ProgressEvent::StepFinished {
            rotation_id: "r".into(),
            seq: 4,
            kind: "bind".into(),
            step: "bind x".into(),
            ok: false,
            detail: Some("403".into()),
            duration,
            request_id: Some("req-1".into()),
        };
        let exact = progress(&event(Duration::from_nanos(149_999_999)));
        let wire = progress(&event(Duration::from_millis(149)));
        assert_eq!(exact, wire);
        assert_eq!(
            exact.as_deref(),
            Some("  FAIL  4 bind x (0.1s): 403 [request id req-1]")
        );
    }
}
