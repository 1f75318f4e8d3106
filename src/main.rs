//! The `keyflip` binary: parses the command line and hands off to the library.
//! Errors are printed with their full cause chain and mapped to documented exit codes
//! (`keyflip::exit::Exit`). Before anything else it hardens the process
//! (`keyflip::process::harden`).

use std::process::ExitCode;

use keyflip::cli::{Command, CoordinationCommand, PlanCommand};
use keyflip::commands;
use keyflip::exit::Exit;

fn main() -> ExitCode {
    // First, while there is one thread and before any secret is read: no core dumps,
    // no same-uid /proc/PID/mem, descriptors for rotations, trust from keyflip.toml.
    let hardening = keyflip::process::harden();
    keyflip::install_crypto_provider();
    let cli = keyflip::manual::parse();
    // Interactive commands show their own progress; their logs start at warnings.
    let quiet = !matches!(cli.command, Command::Daemon);
    keyflip::logging::init(cli.log_format, cli.verbose, quiet);
    keyflip::process::log_panics();
    hardening.log();
    let config = cli.config.as_deref();
    let exit = match &cli.command {
        #[cfg(feature = "demo")]
        Command::Demo(args) => commands::demo::run(args),
        // Each becomes one typed request, performed by a running daemon (it owns the
        // journal) or else standalone, and printed the same either way.
        Command::Rotate(_) | Command::Status(_) | Command::History(_) => {
            commands::run(config, &cli.command)
        }
        Command::Plan(PlanCommand::Check(args)) => plan_check(config, args),
        Command::Plan(PlanCommand::Discover(args)) => commands::discover::run(
            config,
            args,
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        ),
        Command::Doctor(args) => keyflip::doctor::run(
            config,
            args,
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        ),
        Command::Daemon => daemon(config),
        Command::Coordination(CoordinationCommand::ImportJournal(args)) => {
            commands::coordination::import_journal(config, args)
        }
        Command::Version(args) => commands::version::run(args),
        Command::Completions(args) => commands::completions::completions(args),
        Command::Manpages(args) => commands::completions::manpages(args),
    };
    exit.into()
}

/// `keyflip plan check`: no network, journal or socket; the configuration only for
/// its plans directory (the one every command uses), the clock only to show the next
/// due times.
fn plan_check(config: Option<&std::path::Path>, args: &keyflip::cli::PlanCheckArgs) -> Exit {
    let output = args.output.output;
    let config = match keyflip::config::Config::load(config) {
        Ok(config) => config,
        Err(e) => {
            return commands::fail(output, &commands::CommandError::usage(e));
        }
    };
    let show = keyflip::plan::check::Show {
        output,
        term: commands::term::Term::stdout(),
    };
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    keyflip::plan::check::run(
        &args.paths,
        &config.plans_dir,
        chrono::Utc::now(),
        show,
        &mut out,
        &mut err,
    )
    .unwrap_or_else(|e| {
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
