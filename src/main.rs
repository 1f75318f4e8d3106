//! The `keyflip` binary: parses the command line and hands off to the library.
//! Errors are printed with their full cause chain and mapped to documented exit codes
//! (`keyflip::exit::Exit`).

use std::process::ExitCode;

use clap::Parser as _;
use keyflip::cli::{Cli, Command, PlanCommand, RotateCommand};
use keyflip::commands;
use keyflip::exit::Exit;

fn main() -> ExitCode {
    keyflip::install_crypto_provider();
    let cli = Cli::parse();
    // Interactive commands show their own progress; their logs start at warnings.
    let quiet = !matches!(cli.command, Command::Daemon);
    keyflip::logging::init(cli.log_format, cli.verbose, quiet);
    let config = cli.config.as_deref();
    let exit = match &cli.command {
        Command::Demo(args) => commands::demo::run(args),
        Command::Rotate(RotateCommand::Now(args)) => commands::rotate::now(config, args),
        Command::Rotate(RotateCommand::Resume(args)) => commands::rotate::resume(config, args),
        Command::Status(args) => commands::status::run(config, args),
        Command::History(args) => commands::history::run(config, args),
        Command::Plan(PlanCommand::Check(args)) => plan_check(&args.paths),
        Command::Doctor(args) => keyflip::doctor::run(
            config,
            args,
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        ),
        Command::Daemon => not_yet("daemon"),
    };
    exit.into()
}

/// `keyflip plan check`: no network, journal or socket; the clock only to show the
/// next due times.
fn plan_check(paths: &[std::path::PathBuf]) -> Exit {
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    keyflip::plan::check::run(paths, chrono::Utc::now(), &mut out, &mut err).unwrap_or_else(|e| {
        eprintln!("keyflip: cannot write the report: {e}");
        Exit::Failure
    })
}

fn not_yet(command: &str) -> Exit {
    eprintln!("keyflip: `{command}` is not built yet");
    Exit::Failure
}
