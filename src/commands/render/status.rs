//! `keyflip status` for people: one table row per plan (plan, account, active key,
//! key ages, last rotation, next due time, state), made to read 40 plans on one screen
//! and fitted to the terminal's width, with a line under it for each plan that needs
//! someone; `status --plan NAME` shows one plan in detail. Schedule codes are worded
//! (`not-yet` is "by schedule"), times are to the second in UTC.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::{Term, age, holding, time};
use crate::commands::term::{Color, Column, Mark, table};
use crate::key::KeyName;
use crate::rotation::machine::ConsumerRef;
use crate::rotation::{LeaseStatus, PlanStatus, describe};

/// The schedule's reason code in words.
pub fn due_words(code: &str) -> &str {
    match code {
        "not-yet" => "by schedule",
        "cron" => "cron",
        "key-age" => "key age",
        "key-age-unknown" => "key age unknown",
        "jitter" => "schedule, with jitter",
        "window" => "next rotation window",
        "manual" => "on demand only",
        "parked" => "parked",
        "retry" => "retry",
        "running" => "running",
        "never" => "never",
        "waiting-for-observation" => "after the first key check",
        "due" => "due",
        other => other,
    }
}

/// `3d`, `7h`, `12m`, `40s`: one unit, for table cells.
fn short_age(d: chrono::TimeDelta) -> String {
    let s = d.num_seconds().max(0);
    match s {
        s if s >= 86_400 => format!("{}d", s / 86_400),
        s if s >= 3600 => format!("{}h", s / 3600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn table_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn compact_time(at: DateTime<Utc>) -> String {
    at.format("%m-%d %H:%M:%S").to_string()
}

/// The plan's state in a few words: what someone should know first.
fn state(p: &PlanStatus) -> Vec<String> {
    let mut words = Vec::new();
    if p.error.is_some() {
        words.push("UNREADABLE".to_owned());
    }
    if p.schedule.parked.is_some() {
        words.push("NEEDS ATTENTION".to_owned());
    }
    if p.schedule.running.is_some() {
        words.push("rotating".to_owned());
    } else if p.unfinished.is_some() {
        words.push("unfinished".to_owned());
    }
    if p.schedule.parked.is_none() && p.schedule.failures > 0 {
        words.push(format!("{} failed", p.schedule.failures));
    }
    if let Some(lease) = p.lease.as_ref().filter(|l| l.held) {
        words.push(format!(
            "leased by {}",
            lease.replica.as_deref().unwrap_or("a replica")
        ));
    }
    let drift = p.drift.len() + p.schedule.findings.len();
    if drift > 0 {
        words.push(format!("drift {drift}"));
    }
    if let Some(last) = &p.last_rotation
        && last.outcome != "completed"
    {
        words.push(format!("last {}", last.outcome.replace('_', " ")));
    }
    if words.is_empty() {
        words.push("ok".to_owned());
    }
    words
}

fn next_due(p: &PlanStatus, now: DateTime<Utc>, fmt: fn(DateTime<Utc>) -> String) -> String {
    match p.next_due {
        Some(at) if at <= now => "now".to_owned(),
        Some(at) => fmt(at),
        None => due_words(&p.due_reason).to_owned(),
    }
}

/// The account's lease (replicas) in words.
fn lease_words(lease: &LeaseStatus) -> String {
    let who = lease.replica.as_deref().unwrap_or("a replica");
    let since = lease
        .since
        .map(|at| format!(" since {}", time(at)))
        .unwrap_or_default();
    match (lease.held, &lease.replica) {
        (true, _) => format!("held by {who}{since}"),
        (false, Some(_)) => format!("free (last held by {who}{since})"),
        (false, None) => "free (never held)".to_owned(),
    }
}

/// `status`: the table, or with `detail` each plan in full.
pub fn status(plans: &[PlanStatus], now: DateTime<Utc>, detail: bool, term: &Term) -> String {
    if plans.is_empty() {
        return "No plans.\n".to_owned();
    }
    if detail {
        return plans.iter().map(|p| one(p, now, term)).collect();
    }
    let ages = |p: &PlanStatus| {
        let a = |c: Option<DateTime<Utc>>| c.map_or_else(|| "?".to_owned(), |c| short_age(now - c));
        format!("{}/{}", a(p.key1_created), a(p.key2_created))
    };
    let last = |p: &PlanStatus, fmt: fn(DateTime<Utc>) -> String| {
        p.last_rotation.as_ref().map_or_else(
            || "never".to_owned(),
            |r| fmt(r.finished_at.unwrap_or(r.started_at)),
        )
    };
    let columns = vec![
        Column {
            min: Some(8),
            ..Column::new("PLAN", plans.iter().map(|p| p.plan.clone()).collect())
        },
        Column {
            min: Some(10),
            drop_rank: Some(1),
            ..Column::new(
                "ACCOUNT",
                plans
                    .iter()
                    .map(|p| {
                        p.account
                            .rsplit('/')
                            .next()
                            .unwrap_or(&p.account)
                            .to_owned()
                    })
                    .collect(),
            )
        },
        Column::new(
            "KEY",
            plans
                .iter()
                .map(|p| p.active.map_or_else(|| "?".to_owned(), |k| k.to_string()))
                .collect(),
        ),
        Column {
            drop_rank: Some(2),
            ..Column::new("AGE 1/2", plans.iter().map(ages).collect())
        },
        Column {
            compact: Some(plans.iter().map(|p| last(p, compact_time)).collect()),
            drop_rank: Some(3),
            ..Column::new(
                "LAST ROTATION",
                plans.iter().map(|p| last(p, table_time)).collect(),
            )
        },
        Column {
            compact: Some(
                plans
                    .iter()
                    .map(|p| next_due(p, now, compact_time))
                    .collect(),
            ),
            ..Column::new(
                "NEXT DUE",
                plans.iter().map(|p| next_due(p, now, table_time)).collect(),
            )
        },
        Column::new("STATE", plans.iter().map(|p| state(p).join(", ")).collect()),
    ];
    let mut out = table(columns, term.width, term.unicode);
    out.push_str(&term.wrap(
        "",
        "",
        &format!(
            "{} plan{}. Times in UTC; AGE 1/2: age of key1/key2; details: keyflip status --plan NAME",
            plans.len(),
            if plans.len() == 1 { "" } else { "s" }
        ),
    ));
    let mut notes = String::new();
    for p in plans {
        let arrow = term.mark(Mark::Arrow);
        if let Some(e) = &p.error {
            notes.push_str(&term.wrap(
                &format!("{} {}: ", term.status(Mark::Fail), p.plan),
                "    ",
                &format!("cannot read its live state: {e}"),
            ));
        }
        if let Some(parked) = &p.schedule.parked {
            notes.push_str(&term.wrap(
                &format!("{} {}: ", term.status(Mark::Fail), p.plan),
                "    ",
                &format!(
                    "{} since {}: {}",
                    term.paint("NEEDS ATTENTION", Color::Red),
                    time(parked.at),
                    describe::for_plan(&parked.reason, &p.plan)
                ),
            ));
            // A park of the rotation itself names its own way out; the daemon's parks
            // (failed cycles) are ended by a rotation that succeeds.
            if !parked.reason.contains("`keyflip ") {
                notes.push_str(&term.wrap(
                    &format!("    {arrow} "),
                    "      ",
                    &format!(
                        "fix the cause, then `keyflip rotate now {0}` (or `keyflip rotate resume {0}` for an unfinished rotation); no automatic rotations until one succeeds",
                        p.plan
                    ),
                ));
            }
        }
        if let Some(id) = &p.unfinished
            && p.schedule.running.is_none()
        {
            notes.push_str(&term.wrap(
                &format!("{} {}: ", term.status(Mark::Warn), p.plan),
                "    ",
                &format!(
                    "unfinished rotation {id}; `keyflip rotate resume {}` finishes it",
                    p.plan
                ),
            ));
        }
    }
    if !notes.is_empty() {
        out.push('\n');
        out.push_str(&notes);
    }
    out
}

/// One plan in detail (`status --plan NAME`).
fn one(p: &PlanStatus, now: DateTime<Utc>, term: &Term) -> String {
    let mut out = String::new();
    let account = p.account.rsplit('/').next().unwrap_or(&p.account);
    let _ = writeln!(out, "{} ({account})", p.plan);
    let field = |out: &mut String, name: &str, text: &str| {
        out.push_str(&term.wrap(&format!("  {name:<15}"), &" ".repeat(17), text));
    };
    if let Some(description) = &p.description {
        field(&mut out, "description:", description);
    }
    if let Some(e) = &p.error {
        field(&mut out, "error:", e);
    }
    field(&mut out, "account:", &p.account);
    field(
        &mut out,
        "active key:",
        &p.active
            .map_or_else(|| "unknown".to_owned(), |k| k.to_string()),
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
    field(&mut out, "key ages:", &ages.join(", "));
    match &p.last_rotation {
        Some(r) => field(
            &mut out,
            "last rotation:",
            &format!(
                "{} {} ({})",
                r.outcome.replace('_', " "),
                time(r.finished_at.unwrap_or(r.started_at)),
                r.rotation_id
            ),
        ),
        None => field(&mut out, "last rotation:", "never"),
    }
    if let Some(id) = &p.unfinished {
        field(
            &mut out,
            "unfinished:",
            &format!("{id} (`keyflip rotate resume {}` finishes it)", p.plan),
        );
    }
    if let Some(lease) = &p.lease {
        field(&mut out, "lease:", &lease_words(lease));
    }
    let next = match p.next_due {
        Some(at) if at <= now => format!("now ({})", due_words(&p.due_reason)),
        Some(at) => format!("{} ({})", time(at), due_words(&p.due_reason)),
        None => due_words(&p.due_reason).to_owned(),
    };
    field(&mut out, "next due:", &next);
    let schedule = &p.schedule;
    if let Some(job) = &schedule.running {
        field(
            &mut out,
            "running:",
            &format!(
                "{}{} since {}",
                job.kind,
                job.rotation_id
                    .as_ref()
                    .map(|id| format!(" {id}"))
                    .unwrap_or_default(),
                time(job.since)
            ),
        );
    }
    if let Some(parked) = &schedule.parked {
        out.push_str(&term.wrap(
            "  ",
            "    ",
            &format!(
                "NEEDS ATTENTION since {}: {} (no automatic rotations until `keyflip rotate now` or `keyflip rotate resume` succeeds)",
                time(parked.at),
                describe::for_plan(&parked.reason, &p.plan)
            ),
        ));
    } else if schedule.failures > 0 {
        field(
            &mut out,
            "failures:",
            &format!(
                "{} failed cycle(s) in a row{}",
                schedule.failures,
                schedule
                    .retry_at
                    .map(|at| format!("; next retry {}", time(at)))
                    .unwrap_or_default()
            ),
        );
    }
    if p.drift.is_empty() && schedule.findings.is_empty() {
        field(&mut out, "drift:", "none");
    }
    let refs: Vec<&ConsumerRef> = p.drift.iter().map(|c| &c.consumer).collect();
    for c in &p.drift {
        field(
            &mut out,
            "drift:",
            &format!(
                "{} holds {}",
                describe::consumer(&c.consumer),
                holding(&c.holding)
            ),
        );
    }
    for finding in &schedule.findings {
        field(&mut out, "drift:", &super::shorten(finding, &refs));
    }
    out
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;
    use crate::rotation::machine::{ConsumerId, Holding, ObservedConsumer};
    use crate::rotation::{LastRotation, ParkedStatus, RunningJob, ScheduleStatus};

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, h, m, s).unwrap()
    }

    fn plan_status(name: &str) -> PlanStatus {
        let mut p = PlanStatus::unreadable(
            name,
            &format!("/subscriptions/s/storageAccounts/st{name}"),
            String::new(),
        );
        p.error = None;
        p.active = Some(KeyName::Key1);
        p.key1_created = Some(at(0, 0, 0) - chrono::TimeDelta::days(3));
        p.key2_created = Some(at(0, 59, 0) + chrono::TimeDelta::nanoseconds(123_456_789));
        p.next_due = Some(at(3, 0, 0));
        p.due_reason = "not-yet".into();
        p.last_rotation = Some(LastRotation {
            rotation_id: "r-0".into(),
            started_at: at(0, 58, 0),
            finished_at: Some(at(0, 59, 1)),
            outcome: "completed".into(),
            summary: "completed".into(),
        });
        p
    }

    #[test]
    fn the_table_has_one_row_per_plan_in_words_and_fits_the_width() {
        let mut parked = plan_status("lakehouse-prod");
        parked.schedule.parked = Some(ParkedStatus {
            at: at(0, 30, 0),
            reason: "3 failed cycles".into(),
        });
        parked.next_due = None;
        parked.due_reason = "parked".into();
        let plans = vec![plan_status("demo"), parked];
        for width in [80, 60] {
            let text = status(&plans, at(1, 0, 0), false, &Term::PLAIN.with_width(width));
            let table: Vec<&str> = text.lines().take(3).collect();
            assert!(table[0].starts_with("PLAN"), "{text}");
            assert!(
                table[1].starts_with("demo ") && table[1].ends_with("ok"),
                "{text}"
            );
            assert!(
                table[2].contains("parked") && table[2].ends_with("NEEDS ATTENTION"),
                "{text}"
            );
            for line in &table {
                assert!(line.chars().count() <= width, "{width}: {line:?}\n{text}");
            }
            assert!(
                !text.contains("not-yet") && !text.contains(".123"),
                "{text}"
            );
            assert!(
                text.contains("lakehouse-prod: NEEDS ATTENTION since 2026-03-01 00:30:00")
                    && text.contains("3 failed cycles"),
                "{text}"
            );
        }
        let wide = status(&plans, at(1, 0, 0), false, &Term::PLAIN.with_width(120));
        assert!(
            wide.contains("3d/59s") && wide.contains("2026-03-01 03:00:00"),
            "{wide}"
        );
    }

    #[test]
    fn the_detail_shows_key_ages_the_schedule_and_drift_in_words() {
        let mut p = plan_status("demo");
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
        let text = status(&[p], at(1, 0, 0), true, &Term::PLAIN);
        for want in [
            "demo (stdemo)\n",
            "  active key:    key1\n",
            "  key ages:      key1 3d 1h, key2 59s\n",
            "  next due:      2026-03-01 03:00:00 UTC (by schedule)\n",
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
        let mut p = plan_status("demo");
        p.schedule.failures = 2;
        p.schedule.retry_at = Some(at(1, 5, 0) + chrono::TimeDelta::nanoseconds(999));
        let text = status(&[p.clone()], at(1, 0, 0), true, &Term::PLAIN);
        assert!(
            text.contains(
                "  failures:      2 failed cycle(s) in a row; next retry 2026-03-01 01:05:00 UTC\n"
            ),
            "{text}"
        );
        assert!(text.contains("  drift:         none\n"), "{text}");
        let table = status(&[p], at(1, 0, 0), false, &Term::PLAIN);
        assert!(
            table.lines().nth(1).unwrap().ends_with("2 failed"),
            "{table}"
        );
    }
}
