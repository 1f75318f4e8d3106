//! `keyflip plan check [PATH…]`: validate plan files, print a summary line per valid
//! plan and every error, touching no network, journal or socket.
//!
//! With no paths it checks the plans directory ([`super::default_dir`]); a directory
//! argument checks every `*.toml` in it. All plans checked in one run are also checked
//! against each other (two plans of one account, one consumer in two plans). Exit
//! status: 0 when every plan is valid, 2 when any is not.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;

use chrono::{DateTime, Utc};

use super::{Plan, PlanErrors, default_dir, load, plan_files, without_conflicts};
use crate::exit::Exit;
use crate::schedule::{self, fmt_delta};

/// How many upcoming rotations each summary line shows.
const NEXT: usize = 3;

/// Runs the check. `now` is where the upcoming rotation times start.
pub fn run(
    paths: &[PathBuf],
    now: DateTime<Utc>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<Exit> {
    let targets = if paths.is_empty() {
        vec![default_dir()]
    } else {
        paths.to_vec()
    };
    let mut seen = HashSet::new();
    let mut plans = Vec::new();
    let mut errors = Vec::new();
    for target in &targets {
        if paths.is_empty() && !target.is_dir() {
            errors.push(PlanErrors::Unreadable {
                path: target.display().to_string(),
                reason: "the plans directory does not exist; set KEYFLIP_PLANS_DIR, or pass plan files or directories".into(),
            });
            continue;
        }
        let files = if target.is_dir() {
            match plan_files(target) {
                Ok(files) if files.is_empty() => {
                    errors.push(PlanErrors::Unreadable {
                        path: target.display().to_string(),
                        reason: "the directory has no *.toml plans".into(),
                    });
                    continue;
                }
                Ok(files) => files,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            }
        } else {
            vec![target.clone()]
        };
        for file in files {
            // The same file named twice (a directory and a path in it) is checked once.
            let key = std::fs::canonicalize(&file).unwrap_or_else(|_| file.clone());
            if !seen.insert(key) {
                continue;
            }
            match load(&file) {
                Ok(plan) => plans.push(plan),
                Err(e) => errors.push(e),
            }
        }
    }
    let (plans, conflicts) = without_conflicts(plans);
    errors.extend(conflicts);

    for plan in &plans {
        writeln!(out, "{}", summary(plan, now))?;
    }
    for e in &errors {
        writeln!(err, "{e}\n")?;
    }
    if errors.is_empty() {
        let s = if plans.len() == 1 { "" } else { "s" };
        writeln!(out, "{} plan{s} checked, all valid", plans.len())?;
        Ok(Exit::Ok)
    } else {
        writeln!(
            err,
            "{} valid, {} invalid{}",
            plans.len(),
            errors.len(),
            where_from(paths)
        )?;
        Ok(Exit::Usage)
    }
}

fn where_from(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        format!(" (plans directory {})", default_dir().display())
    } else {
        String::new()
    }
}

/// One line: `ok  demo  account stdatasci001  6 consumers  cron "*/10 * * * *" UTC, grace 30s  next …`.
pub fn summary(plan: &Plan, now: DateTime<Utc>) -> String {
    let count = plan.consumer_ids().len();
    let mut consumers = format!("{count} consumer{}", if count == 1 { "" } else { "s" });
    if let Some(what) = crate::consumer::discovers(plan) {
        consumers.push_str(&format!(" + discovered {what}"));
    }
    let grace = super::duration::format(plan.rotation.grace);
    let (schedule, next) = match &plan.schedule {
        None => ("on demand only".to_owned(), "next: when asked".to_owned()),
        Some(s) => {
            let times = schedule::next_due_times(&plan.name, s, now, NEXT);
            let next = if times.is_empty() {
                match s.max_key_age() {
                    Some(age) => format!("next: when the active key is {} old", fmt_delta(age)),
                    None => "next: never".to_owned(),
                }
            } else {
                let tz = s.timezone();
                let shown: Vec<String> = times
                    .iter()
                    .map(|t| t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string())
                    .collect();
                let age = s
                    .max_key_age()
                    .map(|a| format!(" (or at key age {})", fmt_delta(a)))
                    .unwrap_or_default();
                format!("next: {}{age}", shown.join(", "))
            };
            (s.to_string(), next)
        }
    };
    format!(
        "ok  {}  account {}  {consumers}  {schedule}, grace {grace}  {next}",
        plan.name,
        plan.storage_account.name()
    )
}
