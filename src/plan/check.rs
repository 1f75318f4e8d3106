//! `keyflip plan check [PATH…] [--output json]`: validate plan files, print a summary
//! line per valid plan and every error, touching no network, journal or socket.
//!
//! With no paths it checks the plans directory every command uses (the
//! configuration's `plans_dir`, see [`crate::config`]); a directory argument checks
//! every `*.toml` in it. All plans checked in one run are also checked against each
//! other (two plans of one account, one consumer in two plans). Exit status: 0 when
//! every plan is valid, 2 when any is not. With `--output json` stdout holds one
//! document, `{version, valid, plans, errors}`, and stderr nothing.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Plan, PlanErrors, load, plan_files, without_conflicts};
use crate::cli::Output;
use crate::commands::term::{Mark, Term};
use crate::exit::Exit;
use crate::schedule::{self, fmt_delta};

/// One valid plan in the JSON document.
#[derive(Serialize)]
struct PlanDoc {
    plan: String,
    file: String,
    account: String,
    consumers: usize,
    /// What observing the plan discovers besides its listed consumers
    /// (`datastores`), if anything.
    discovers: Option<&'static str>,
    /// The schedule in words; `null` for a plan rotated on demand only.
    schedule: Option<String>,
    grace_ms: u64,
    /// The next rotations by schedule (RFC 3339, UTC).
    next: Vec<DateTime<Utc>>,
}

/// One error in the JSON document: located when it is in a file.
#[derive(Serialize)]
struct ErrorDoc {
    file: String,
    line: Option<usize>,
    column: Option<usize>,
    message: String,
    hint: Option<String>,
}

#[derive(Serialize)]
struct CheckDoc {
    valid: bool,
    plans: Vec<PlanDoc>,
    errors: Vec<ErrorDoc>,
}

fn error_docs(e: &PlanErrors) -> Vec<ErrorDoc> {
    match e {
        PlanErrors::Unreadable { path, reason } => vec![ErrorDoc {
            file: path.clone(),
            line: None,
            column: None,
            message: reason.clone(),
            hint: None,
        }],
        PlanErrors::Invalid { errors, .. } => errors
            .iter()
            .map(|e| ErrorDoc {
                file: e.file.clone(),
                line: Some(e.line),
                column: Some(e.column),
                message: e.message.clone(),
                hint: e.hint.clone(),
            })
            .collect(),
    }
}

/// How many upcoming rotations each summary line shows.
const NEXT: usize = 3;

/// How `plan check` prints.
#[derive(Clone, Copy, Debug)]
pub struct Show {
    pub output: Output,
    pub term: Term,
}

/// Runs the check of `paths`, or of `plans_dir` when none is given. `now` is where
/// the upcoming rotation times start.
pub fn run(
    paths: &[PathBuf],
    plans_dir: &Path,
    now: DateTime<Utc>,
    show: Show,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<Exit> {
    let targets = if paths.is_empty() {
        vec![plans_dir.to_path_buf()]
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
                reason: "the plans directory does not exist; set plans_dir in keyflip.toml (or KEYFLIP_PLANS_DIR), or pass plan files or directories".into(),
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

    let exit = if errors.is_empty() {
        Exit::Ok
    } else {
        Exit::Usage
    };
    if show.output == Output::Json {
        let doc = CheckDoc {
            valid: errors.is_empty(),
            plans: plans.iter().map(|p| plan_doc(p, now)).collect(),
            errors: errors.iter().flat_map(error_docs).collect(),
        };
        out.write_all(crate::commands::render::json::document(doc).as_bytes())?;
        return Ok(exit);
    }
    let term = show.term;
    for plan in &plans {
        let mut lines = summary(plan, now).into_iter();
        let first = lines.next().unwrap_or_default();
        write!(
            out,
            "{}",
            term.wrap(&format!("{}  ", term.status(Mark::Ok)), "      ", &first)
        )?;
        for line in lines {
            write!(out, "{}", term.wrap("      ", "        ", &line))?;
        }
    }
    for e in &errors {
        writeln!(err, "{e}\n")?;
    }
    if errors.is_empty() {
        let s = if plans.len() == 1 { "" } else { "s" };
        writeln!(out, "{} plan{s} checked, all valid", plans.len())?;
    } else {
        writeln!(
            err,
            "{} valid, {} invalid{}",
            plans.len(),
            errors.len(),
            if paths.is_empty() {
                format!(" (plans directory {})", plans_dir.display())
            } else {
                String::new()
            }
        )?;
    }
    Ok(exit)
}

fn plan_doc(plan: &Plan, now: DateTime<Utc>) -> PlanDoc {
    PlanDoc {
        plan: plan.name.clone(),
        file: plan.origin().to_owned(),
        account: plan.storage_account.to_string(),
        consumers: plan.consumer_ids().len(),
        discovers: crate::consumer::discovers(plan),
        schedule: plan.schedule.as_ref().map(ToString::to_string),
        grace_ms: u64::try_from(plan.rotation.grace.as_millis()).unwrap_or(u64::MAX),
        next: plan
            .schedule
            .as_ref()
            .map(|s| schedule::next_due_times(&plan.name, s, now, NEXT))
            .unwrap_or_default(),
    }
}

/// A plan in a few lines: `demo (rotation-plans/demo.toml)`, `account stdatasci001,
/// 6 consumers`, `cron "*/10 * * * *" UTC, grace 30s`, `next: …`.
pub fn summary(plan: &Plan, now: DateTime<Utc>) -> Vec<String> {
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
    vec![
        format!("{}  ({})", plan.name, plan.origin()),
        format!("account {}, {consumers}", plan.storage_account.name()),
        format!("{schedule}, grace {grace}"),
        next,
    ]
}
