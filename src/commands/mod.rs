//! The commands behind `keyflip rotate`, `status`, `history` and `demo`: load the
//! configuration and plans, call the [`Engine`](crate::rotation::Engine), and show the
//! result. Human output goes to stdout (progress as a spinner on a terminal, plain
//! lines otherwise); `--output json` prints one JSON document on stdout and nothing
//! else; errors go to stderr with what to do next. Each command returns the process's
//! [`Exit`] code.

pub mod completions;
#[cfg(feature = "demo")]
pub mod demo;
pub mod history;
pub mod progress;
pub mod render;
pub mod rotate;
pub mod status;
pub mod version;

use std::io::IsTerminal as _;
use std::path::Path;
use std::sync::Arc;

use crate::cli::Output;
use crate::clock::SystemClock;
use crate::config::Config;
use crate::exit::Exit;
use crate::plan::{self, Plan};
use crate::rotation::{Engine, EngineError};

/// A runtime for one command.
pub fn runtime() -> Result<tokio::runtime::Runtime, std::io::Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// Prints `error` the way each output mode wants, and returns its exit code.
pub fn fail(output: Output, error: &dyn std::fmt::Display, exit: Exit) -> Exit {
    eprintln!("keyflip: {error}");
    if output == Output::Json {
        let doc = serde_json::json!({"error": error.to_string(), "exit": exit as u8});
        println!("{doc}");
    }
    exit
}

pub fn engine_error(output: Output, error: &EngineError) -> Exit {
    fail(output, error, error.exit())
}

/// The configuration and an engine on its state directory, with the wall clock.
pub fn open(config_flag: Option<&Path>, output: Output) -> Result<(Config, Engine), Exit> {
    let config = Config::load(config_flag).map_err(|e| fail(output, &e, Exit::Usage))?;
    let engine =
        Engine::open(&config, Arc::new(SystemClock)).map_err(|e| engine_error(output, &e))?;
    Ok((config, engine))
}

/// One plan by name or path.
pub fn find_plan(config: &Config, name: &str, output: Output) -> Result<Plan, Exit> {
    plan::find(&config.plans_dir, name).map_err(|e| fail(output, &e, Exit::Usage))
}

/// Every valid plan in the plans directory; invalid ones are reported on stderr.
pub fn all_plans(config: &Config) -> Vec<Plan> {
    let (plans, errors) = plan::load_dir(&config.plans_dir);
    for e in errors {
        eprintln!("keyflip: skipping an invalid plan:\n{e}");
    }
    plans
}

/// Whether a person is at the keyboard (stdin and stdout are terminals).
pub fn interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stdout().is_terminal()
}

/// The worst of several exit codes (any failure beats success).
pub fn worst(exits: impl IntoIterator<Item = Exit>) -> Exit {
    exits
        .into_iter()
        .max_by_key(|e| match e {
            Exit::Ok => 0,
            Exit::Refused => 1,
            Exit::RolledBack => 2,
            Exit::NeedsAttention => 4,
            Exit::Busy => 3,
            Exit::Usage => 3,
            Exit::Failure => 5,
            Exit::Interrupted => 6,
        })
        .unwrap_or(Exit::Ok)
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
