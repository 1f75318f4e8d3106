//! The `keyflip` binary: parses the command line and hands off to the library.
//! Errors are printed with their full cause chain and mapped to documented exit codes
//! (`keyflip::exit::Exit`).

use std::process::ExitCode;

use keyflip::cli::{Command, PlanCommand, RotateCommand};
use keyflip::commands;
use keyflip::exit::Exit;

fn main() -> ExitCode {
    keyflip::install_crypto_provider();
    let cli = keyflip::manual::parse();
    // Interactive commands show their own progress; their logs start at warnings.
    let quiet = !matches!(cli.command, Command::Daemon);
    keyflip::logging::init(cli.log_format, cli.verbose, quiet);
    let config = cli.config.as_deref();
    let exit = match &cli.command {
        #[cfg(feature = "demo")]
        Command::Demo(args) => commands::demo::run(args),
        // Each of the next four tries the daemon first (it owns the journal when it
        // runs) and runs standalone when no daemon answers.
        Command::Rotate(RotateCommand::Now(args)) => through_daemon::rotate_now(config, args)
            .unwrap_or_else(|| commands::rotate::now(config, args)),
        Command::Rotate(RotateCommand::Resume(args)) => through_daemon::resume(config, args)
            .unwrap_or_else(|| commands::rotate::resume(config, args)),
        Command::Status(args) => through_daemon::status(config, args)
            .unwrap_or_else(|| commands::status::run(config, args)),
        Command::History(args) => through_daemon::history(config, args)
            .unwrap_or_else(|| commands::history::run(config, args)),
        Command::Plan(PlanCommand::Check(args)) => plan_check(&args.paths),
        Command::Doctor(args) => keyflip::doctor::run(
            config,
            args,
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        ),
        Command::Daemon => daemon(config),
        Command::Version(args) => commands::version::run(args),
        Command::Completions(args) => commands::completions::completions(args),
        Command::Manpages(args) => commands::completions::manpages(args),
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

/// `keyflip daemon`: loads configuration and plans (every error printed, exit 2),
/// then runs until SIGTERM/SIGINT.
fn daemon(config: Option<&std::path::Path>) -> Exit {
    use std::sync::Arc;
    let env: keyflip::daemon::EnvFn = Arc::new(keyflip::config::process_env);
    let path = keyflip::config::ConfigPath::resolve(config, &keyflip::config::process_env);
    let loader = keyflip::daemon::file_loader(path, env.clone());
    let (config, plans) = match loader() {
        Ok(loaded) => loaded,
        Err(errors) => {
            for error in errors {
                eprintln!("{error}");
            }
            eprintln!(
                "keyflip: the daemon did not start; fix the errors above (`keyflip plan check` shows plan errors)"
            );
            return Exit::Usage;
        }
    };
    if plans.is_empty() {
        tracing::warn!(plans_dir = %config.plans_dir.display(), "no plans: the daemon only serves status until plans are added and it is reloaded (SIGHUP)");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("keyflip: cannot start the async runtime: {e}");
            return Exit::Failure;
        }
    };
    let options = keyflip::daemon::DaemonOptions {
        config,
        plans,
        loader,
        clock: Arc::new(keyflip::clock::SystemClock),
        env,
        systemd: keyflip::daemon::systemd::SystemdNotifier::from_env(),
        watchdog: sd_notify::watchdog_enabled(),
        azure: Default::default(),
        engine: Default::default(),
        delivery: Default::default(),
    };
    runtime.block_on(keyflip::daemon::run(options))
}

/// The "try the daemon first" calls of `rotate now`, `rotate resume`, `status` and
/// `history`: `None` when no daemon runs, and the command then runs standalone.
mod through_daemon {
    use std::path::Path;

    use keyflip::cli::{HistoryArgs, Leaked, OutputArgs, ResumeArgs, RotateNowArgs};
    use keyflip::daemon::control::client::{try_daemon, try_daemon_confirmed};
    use keyflip::daemon::control::protocol::Request;
    use keyflip::exit::Exit;
    use keyflip::key::KeyName;
    use keyflip::rotation::machine::Mode;

    pub fn rotate_now(config: Option<&Path>, args: &RotateNowArgs) -> Option<Exit> {
        use std::io::IsTerminal as _;
        let ask_first = !args.dry_run && !args.yes;
        if ask_first && !std::io::stdin().is_terminal() {
            // The standalone path refuses this with its usage message, touching nothing.
            return None;
        }
        let grace_secs = match args.grace.as_deref().map(keyflip::plan::duration::parse) {
            None => None,
            Some(Ok(d)) => Some(d.as_secs()),
            // The standalone path reports a bad --grace with its usage error.
            Some(Err(_)) => return None,
        };
        let mode = match args.leaked {
            None => Mode::Scheduled,
            Some(Leaked::Key1) => Mode::Leaked {
                key: KeyName::Key1,
                revoke_first: args.revoke_first,
            },
            Some(Leaked::Key2) => Mode::Leaked {
                key: KeyName::Key2,
                revoke_first: args.revoke_first,
            },
            Some(Leaked::Both | Leaked::Unknown) => Mode::LeakedBoth,
        };
        let request = Request::RotateNow {
            plan: args.plan.clone(),
            mode,
            grace_secs,
            dry_run: args.dry_run,
        };
        try_daemon_confirmed(config, request, args.output.output, ask_first)
    }

    pub fn resume(config: Option<&Path>, args: &ResumeArgs) -> Option<Exit> {
        try_daemon(
            config,
            Request::Resume {
                plan: args.plan.clone(),
            },
            args.output.output,
        )
    }

    pub fn status(config: Option<&Path>, args: &OutputArgs) -> Option<Exit> {
        try_daemon(config, Request::Status { plan: None }, args.output)
    }

    pub fn history(config: Option<&Path>, args: &HistoryArgs) -> Option<Exit> {
        let request = Request::History {
            plan: args.plan.clone(),
            limit: 50,
        };
        try_daemon(config, request, args.output.output)
    }
}
