//! `keyflip rotate now` and `keyflip rotate resume`.
//!
//! `rotate now` resumes first: a plan with an unfinished rotation gets that rotation
//! finished (and says so) instead of a second one. Without `--yes` it shows the
//! decision and asks on a terminal, and refuses with a usage error anywhere else.
//! `--dry-run` lists every call and changes nothing. Ctrl-C or SIGTERM stop it between
//! journaled steps; the rotation then resumes later.

use std::io::{BufRead as _, Write as _};
use std::path::Path;

use tokio_util::sync::CancellationToken;

use super::progress::Display;
use super::{engine_error, fail, find_plan, interactive, open, render, runtime, worst};
use crate::cli::{Leaked, Output, ResumeArgs, RotateNowArgs};
use crate::exit::Exit;
use crate::plan::Plan;
use crate::rotation::machine::Mode;
use crate::rotation::{Engine, RotateRequest, RotationReport, Trigger};

/// The request `rotate now`'s flags ask for.
pub fn request(args: &RotateNowArgs) -> Result<RotateRequest, String> {
    let grace = match &args.grace {
        Some(text) => {
            Some(crate::plan::duration::parse(text).map_err(|e| format!("--grace {text}: {e}"))?)
        }
        None => None,
    };
    let mode = match args.leaked {
        None => Mode::Scheduled,
        Some(Leaked::Key1) => Mode::Leaked {
            key: crate::key::KeyName::Key1,
            revoke_first: args.revoke_first,
        },
        Some(Leaked::Key2) => Mode::Leaked {
            key: crate::key::KeyName::Key2,
            revoke_first: args.revoke_first,
        },
        Some(Leaked::Both | Leaked::Unknown) if args.revoke_first => {
            return Err(
                "--revoke-first applies to --leaked key1 or key2; with both keys leaked keyflip swaps standby first and retires the other at once".into(),
            );
        }
        Some(Leaked::Both | Leaked::Unknown) => Mode::LeakedBoth,
    };
    Ok(RotateRequest {
        mode,
        grace,
        trigger: if args.leaked.is_some() {
            Trigger::Incident
        } else {
            Trigger::Manual
        },
    })
}

fn progress_for(output: Output) -> Display {
    match output {
        Output::Json => Display::Silent,
        Output::Human => Display::human(),
    }
}

fn print_reports(output: Output, reports: &[RotationReport], single: bool) {
    match output {
        Output::Json => {
            let doc = if single && reports.len() == 1 {
                serde_json::to_string_pretty(&reports[0])
            } else {
                serde_json::to_string_pretty(reports)
            };
            match doc {
                Ok(text) => println!("{text}"),
                Err(e) => eprintln!("keyflip: cannot encode the report: {e}"),
            }
        }
        Output::Human => {
            for r in reports {
                print!("{}", render::rotation(r));
            }
        }
    }
}

/// Asks on the terminal; `true` for yes.
fn confirm(question: &str) -> bool {
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    if std::io::stdin().lock().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// Runs `work` until it ends or a signal cancels it (between journaled steps).
async fn with_signals<T>(
    cancel: CancellationToken,
    work: impl std::future::Future<Output = T>,
) -> T {
    let watcher = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            super::shutdown_signal().await;
            eprintln!("keyflip: stopping after the steps in flight (press Ctrl-C again to abort)");
            cancel.cancel();
            super::shutdown_signal().await;
            std::process::exit(Exit::Interrupted as i32);
        })
    };
    let out = work.await;
    watcher.abort();
    out
}

pub fn now(config_flag: Option<&Path>, args: &RotateNowArgs) -> Exit {
    let output = args.output.output;
    let request = match request(args) {
        Ok(r) => r,
        Err(e) => return fail(output, &e, Exit::Usage),
    };
    if !args.dry_run && !args.yes && !interactive() {
        return fail(
            output,
            &"`rotate now` changes storage keys and asks for confirmation, but this is not a terminal; pass --yes to rotate without asking (or --dry-run to see what it would do)",
            Exit::Usage,
        );
    }
    let (config, engine) = match open(config_flag, output) {
        Ok(v) => v,
        Err(exit) => return exit,
    };
    let plan = match find_plan(&config, &args.plan, output) {
        Ok(p) => p,
        Err(exit) => return exit,
    };
    let runtime = match runtime() {
        Ok(r) => r,
        Err(e) => return fail(output, &e, Exit::Failure),
    };
    runtime.block_on(now_async(&engine, &plan, request, args, output))
}

async fn now_async(
    engine: &Engine,
    plan: &Plan,
    request: RotateRequest,
    args: &RotateNowArgs,
    output: Output,
) -> Exit {
    if args.dry_run {
        return match engine.dry_run(plan, request).await {
            Ok(d) => {
                match output {
                    Output::Json => match serde_json::to_string_pretty(&d) {
                        Ok(t) => println!("{t}"),
                        Err(e) => return fail(output, &e, Exit::Failure),
                    },
                    Output::Human => print!("{}", render::dry_run(&d)),
                }
                d.exit()
            }
            Err(e) => engine_error(output, &e),
        };
    }
    let unfinished = match engine.unfinished() {
        Ok(u) => u,
        Err(e) => return engine_error(output, &e),
    };
    let cancel = CancellationToken::new();
    if let Some((id, _)) = unfinished.iter().find(|(_, p)| *p == plan.name) {
        if output == Output::Human {
            println!(
                "Plan {} has an unfinished rotation {id}; resuming it instead of starting another.",
                plan.name
            );
        }
        let display = progress_for(output);
        let result = with_signals(
            cancel.clone(),
            engine.resume(std::slice::from_ref(plan), &display, cancel.clone()),
        )
        .await;
        display.done();
        return match result {
            Ok(reports) => {
                print_reports(output, &reports, true);
                worst(reports.iter().map(RotationReport::exit))
            }
            Err(e) => engine_error(output, &e),
        };
    }
    if !args.yes {
        let preview = match engine.dry_run(plan, request.clone()).await {
            Ok(d) => d,
            Err(e) => return engine_error(output, &e),
        };
        eprint!("{}", render::dry_run(&preview));
        if preview.refused.is_some() {
            return Exit::Refused;
        }
        if !confirm(&format!(
            "Rotate the key of {} now?",
            plan.storage_account.name()
        )) {
            eprintln!("keyflip: nothing was changed");
            return Exit::Ok;
        }
    }
    let display = progress_for(output);
    let result = with_signals(
        cancel.clone(),
        engine.rotate(plan, request, &display, cancel.clone()),
    )
    .await;
    display.done();
    match result {
        Ok(report) => {
            print_reports(output, std::slice::from_ref(&report), true);
            report.exit()
        }
        Err(e) => engine_error(output, &e),
    }
}

pub fn resume(config_flag: Option<&Path>, args: &ResumeArgs) -> Exit {
    let output = args.output.output;
    let (config, engine) = match open(config_flag, output) {
        Ok(v) => v,
        Err(exit) => return exit,
    };
    let plans = match &args.plan {
        Some(name) => match find_plan(&config, name, output) {
            Ok(p) => vec![p],
            Err(exit) => return exit,
        },
        None => super::all_plans(&config),
    };
    let runtime = match runtime() {
        Ok(r) => r,
        Err(e) => return fail(output, &e, Exit::Failure),
    };
    runtime.block_on(async {
        let cancel = CancellationToken::new();
        let display = progress_for(output);
        let result = with_signals(
            cancel.clone(),
            engine.resume(&plans, &display, cancel.clone()),
        )
        .await;
        display.done();
        match result {
            Ok(reports) => {
                if reports.is_empty() && output == Output::Human {
                    println!("Nothing to resume: no unfinished rotation.");
                }
                print_reports(output, &reports, false);
                worst(reports.iter().map(RotationReport::exit))
            }
            Err(e) => engine_error(output, &e),
        }
    })
}
