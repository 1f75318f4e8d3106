//! The command path of `keyflip rotate now`, `rotate resume`, `status` and `history`,
//! one for whichever process does the work, and `demo`.
//!
//! 1. [`request`]: the command line becomes a typed [`Request`] in one place, checked
//!    there.
//! 2. [`run`] finds who performs it: a running daemon (its control socket answers;
//!    it owns the journal) or this process ([`perform::Standalone`]).
//! 3. Both come back with an [`Answer`] (or a [`CommandError`]) holding the engine's
//!    typed reports, and progress events while a rotation runs.
//! 4. [`render`] prints them: human text or one JSON document on stdout, progress as
//!    a spinner on a terminal or plain lines otherwise, errors on stderr (and as
//!    `{"error", "exit"}` on stdout for JSON). When a daemon answered, one more line
//!    on stderr says so; stdout is the same either way.
//!
//! `rotate now` without `--yes` shows the dry run's summary first and asks on a
//! terminal (answering no exits 2, nothing changed), and refuses with a usage error
//! anywhere else. Ctrl-C or SIGTERM stop a standalone
//! rotation between journaled steps (it resumes later); a rotation a daemon runs
//! belongs to the daemon and runs on when the client goes.

pub mod answer;
pub mod completions;
pub mod coordination;
#[cfg(feature = "demo")]
pub mod demo;
pub mod discover;
pub mod perform;
pub mod progress;
pub(crate) mod render;
pub mod request;
pub mod term;
pub mod version;

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

pub use answer::{Answer, CommandError, ErrorCode};
pub use request::{InvalidArgs, Invocation, Request};

use crate::cli::{Command, Output};
use crate::config::Config;
use crate::daemon::control::client;
use crate::daemon::control::protocol::DaemonInfo;
use crate::exit::Exit;
use crate::rotation::Progress;
use perform::Standalone;
use progress::Display;
use render::Shape;
use term::Term;

/// A runtime for one command.
pub fn runtime() -> Result<tokio::runtime::Runtime, std::io::Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// Prints `error` the way `output` wants, and returns its exit code.
pub fn fail(output: Output, error: &CommandError) -> Exit {
    let (line, doc) = render::error(error, output);
    eprintln!("{}", error_text(&line, error_term()));
    if let Some(doc) = doc {
        print!("{doc}");
    }
    error.exit
}

/// The terminal an error is wrapped for: stderr's when its width is known (stderr is
/// a terminal, or `COLUMNS` is set). On a pipe or in a log without `COLUMNS` an error
/// stays one line, whole for grep and journald.
fn error_term() -> Option<Term> {
    (std::io::stderr().is_terminal() || crate::config::process_env("COLUMNS").is_some())
        .then(Term::stderr)
}

/// `keyflip: MESSAGE`, wrapped to `term`'s width under its first line.
fn error_text(line: &str, term: Option<Term>) -> String {
    match term {
        Some(term) => term.wrap("", "  ", line).trim_end().to_owned(),
        None => line.to_owned(),
    }
}

/// Whether a person is at the keyboard (stdin and stdout are terminals).
pub(crate) fn interactive() -> bool {
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
pub(crate) async fn shutdown_signal() {
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

/// Runs `rotate now`, `rotate resume`, `status` or `history` from the command line to
/// its exit code: the whole command path, standalone or through a daemon.
pub fn run(config_flag: Option<&Path>, command: &Command) -> Exit {
    let Invocation {
        mut request,
        output,
        yes,
        shape,
    } = match Invocation::from_cli(command) {
        Some(Ok(invocation)) => invocation,
        Some(Err(e)) => return fail(e.output, &CommandError::usage(e.message)),
        None => {
            return fail(
                Output::Human,
                &CommandError::usage("this command is not performed through the command path"),
            );
        }
    };
    // Who asks, as this process: a daemon replaces it with its peer's credentials.
    if let Some(uid) = crate::rotation::Requester::this_process().uid {
        request.stamp(uid);
    }
    let ask_first = matches!(request, Request::RotateNow { dry_run: false, .. }) && !yes;
    if ask_first && !interactive() {
        return fail(
            output,
            &CommandError::usage(
                "`rotate now` changes storage keys and asks for confirmation, but this is not a terminal; pass --yes to rotate without asking (or --dry-run to see what it would do)",
            ),
        );
    }
    let runtime = match runtime() {
        Ok(r) => r,
        Err(e) => {
            return fail(
                output,
                &CommandError::failed(format!("cannot start the async runtime: {e}")),
            );
        }
    };
    runtime.block_on(async {
        // Reads create nothing: not the journal, not the fingerprint key.
        let reads_only = matches!(
            request,
            Request::Status { .. }
                | Request::History { .. }
                | Request::RotateNow { dry_run: true, .. }
        );
        let runner = match Runner::find(config_flag, reads_only).await {
            Ok(runner) => runner,
            Err(e) => return fail(output, &e),
        };
        let exit = run_with(&runner, &request, output, shape, ask_first).await;
        if let Runner::Daemon(daemon) = &runner {
            eprintln!(
                "{}",
                daemon.which(matches!(request, Request::Status { .. }))
            );
        }
        exit
    })
}

async fn run_with(
    runner: &Runner,
    request: &Request,
    output: Output,
    shape: Shape,
    ask_first: bool,
) -> Exit {
    let term = Term::stdout();
    if ask_first {
        match runner
            .perform(&request.as_dry_run(), &Display::Silent)
            .await
        {
            // `rotate now` finishes the unfinished rotation: nothing new to confirm.
            Ok(Answer::DryRun { dry_run }) if dry_run.unfinished.is_some() => {}
            Ok(Answer::DryRun { dry_run }) => {
                // The summary, not the step-by-step detail: what a person decides on.
                eprint!(
                    "{}",
                    render::dry_run::render(
                        &dry_run,
                        &Term::stderr(),
                        render::dry_run::Detail::Summary
                    )
                );
                if dry_run.refused.is_some() {
                    return Exit::Refused;
                }
                let account = dry_run
                    .account
                    .rsplit('/')
                    .next()
                    .unwrap_or(&dry_run.account);
                if !confirm(&format!(
                    "\n{} the keys of {account} now?",
                    if dry_run.mode.is_incident() {
                        "Run this incident rotation on"
                    } else {
                        "Rotate"
                    }
                )) {
                    eprintln!(
                        "keyflip: not confirmed; nothing was changed (`--dry-run --show-calls` shows every call, `--yes` skips this question)"
                    );
                    return Exit::Usage;
                }
            }
            Ok(other) => {
                return fail(
                    output,
                    &CommandError::failed(format!(
                        "asked for a dry run, got a {} answer; nothing was changed",
                        other.kind()
                    )),
                );
            }
            Err(e) => return fail(output, &e),
        }
    }
    let display = Display::for_output(output, term);
    let result = runner.perform(request, &display).await;
    display.done();
    match result {
        Ok(answer) => {
            print!("{}", render::answer(&answer, output, &term, shape));
            answer.exit()
        }
        Err(e) => fail(output, &e),
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

/// Who performs a command's requests.
enum Runner {
    /// A daemon answers on the control socket.
    Daemon(DaemonRunner),
    /// No daemon: this process, on the journal directly.
    Standalone(Box<Standalone>),
}

impl Runner {
    /// The daemon when one answers on the configured socket, else this process.
    async fn find(config_flag: Option<&Path>, reads_only: bool) -> Result<Runner, CommandError> {
        let config = Config::load(config_flag).map_err(CommandError::usage)?;
        let socket = config.daemon.socket.clone();
        if socket.exists() {
            match client::connect(&socket).await {
                Ok(Some(stream)) => {
                    return Ok(Runner::Daemon(DaemonRunner {
                        socket,
                        first: Mutex::new(Some(stream)),
                        info: Mutex::new(None),
                    }));
                }
                Ok(None) => {}
                // Not standalone: two processes would fight over the journal.
                Err(e) => return Err(e.into()),
            }
        }
        let standalone = if reads_only {
            Standalone::open_to_read(config)?
        } else {
            Standalone::open(config)?
        };
        Ok(Runner::Standalone(Box::new(standalone)))
    }

    async fn perform(
        &self,
        request: &Request,
        progress: &dyn Progress,
    ) -> Result<Answer, CommandError> {
        match self {
            Runner::Daemon(daemon) => daemon.perform(request, progress).await,
            Runner::Standalone(standalone) => {
                let cancel = CancellationToken::new();
                let work = standalone.perform(request, progress, cancel.clone());
                match request {
                    Request::RotateNow { dry_run: false, .. } | Request::Resume { .. } => {
                        with_signals(&[cancel, standalone.interrupt()], work).await
                    }
                    _ => work.await,
                }
            }
        }
    }
}

/// A running daemon as the runner: one connection per request (the first one opened
/// when it was found).
struct DaemonRunner {
    socket: PathBuf,
    first: Mutex<Option<UnixStream>>,
    info: Mutex<Option<DaemonInfo>>,
}

impl DaemonRunner {
    async fn perform(
        &self,
        request: &Request,
        progress: &dyn Progress,
    ) -> Result<Answer, CommandError> {
        let first = self.first.lock().unwrap_or_else(|e| e.into_inner()).take();
        let stream = match first {
            Some(stream) => stream,
            None => client::connect(&self.socket).await?.ok_or_else(|| {
                CommandError::failed(format!(
                    "the daemon on {} stopped answering; nothing was changed",
                    self.socket.display()
                ))
            })?,
        };
        // The display draws the daemon's events as it draws a standalone run's.
        let done = client::call(stream, &self.socket, request, &mut |event| {
            progress.event(&event);
        })
        .await?;
        *self.info.lock().unwrap_or_else(|e| e.into_inner()) = Some(done.daemon);
        Ok(done.answer)
    }

    /// The line saying a daemon did the work.
    fn which(&self, with_summary: bool) -> String {
        match &*self.info.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(info) => render::through_daemon(info, with_summary),
            None => format!(
                "keyflip: answered by the running keyflip daemon on {}",
                self.socket.display()
            ),
        }
    }
}

/// Runs `work` until it ends or a signal cancels it: the rotation stops between
/// journaled steps, and every wait in the Azure calls in flight ends (`cancel` holds
/// both tokens).
async fn with_signals<T>(
    cancel: &[CancellationToken],
    work: impl std::future::Future<Output = T>,
) -> T {
    let watcher = {
        let cancel = cancel.to_vec();
        tokio::spawn(async move {
            shutdown_signal().await;
            eprintln!("keyflip: stopping after the steps in flight (press Ctrl-C again to abort)");
            for token in &cancel {
                token.cancel();
            }
            shutdown_signal().await;
            std::process::exit(Exit::Interrupted as i32);
        })
    };
    let out = work.await;
    watcher.abort();
    out
}
