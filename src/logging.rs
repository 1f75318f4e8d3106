//! Log set-up for the binary: human-readable lines on a terminal, one JSON object per
//! line with `--log-format json` (for journald and log shippers). `RUST_LOG` overrides
//! the level chosen with `-v`. Logs go to stderr so command output on stdout stays
//! parseable. No event anywhere in keyflip carries a key, token or connection string;
//! `tests/it` captures every log line to prove it.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Installs the global subscriber. Call once, early in `main`. `quiet` (interactive
/// commands, which print their own progress) starts at warnings instead of info.
pub fn init(format: LogFormat, verbose: u8, quiet: bool) {
    let default = match verbose {
        0 if quiet => "warn",
        0 => "keyflip=info,warn",
        1 => "keyflip=debug,info",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Human => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .try_init(),
    };
    // A second init (tests calling `main`'s set-up twice) keeps the first subscriber.
    let _ = result;
}
