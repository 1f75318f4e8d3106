//! The control socket's client: how `keyflip rotate now`, `status`, `history` and
//! `rotate resume` reach a running daemon, so that one process owns the journal.
//!
//! [`try_daemon`] is the one call the CLI arms make first: it answers `None` when no
//! daemon listens (no socket file, or nobody accepting on it), and the command then
//! runs standalone; otherwise it sends the request, shows progress on stderr, prints
//! the answer on stdout (human or JSON) and returns the exit code. A daemon that
//! refuses the caller is an error, not a reason to go standalone: two processes would
//! then fight over the journal.

use std::path::Path;

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;

use super::protocol::{self, ClientLine, Envelope, ErrorReply, Reply, Request};
use super::render;
use crate::cli::Output;
use crate::exit::Exit;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "the daemon's control socket {path} exists but cannot be opened ({source}); run as root or as keyflip's user"
    )]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("talking to the daemon on {path} failed: {detail}")]
    Conversation { path: String, detail: String },
    #[error("the daemon answered: {}", .0.message)]
    Daemon(ErrorReply),
}

impl ClientError {
    pub fn exit(&self) -> Exit {
        match self {
            ClientError::Daemon(e) => exit_from(e.exit),
            _ => Exit::Failure,
        }
    }
}

/// Connects to the daemon on `path`; `Ok(None)` when no daemon is there.
pub async fn connect(path: &Path) -> Result<Option<UnixStream>, ClientError> {
    match UnixStream::connect(path).await {
        Ok(stream) => Ok(Some(stream)),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            Ok(None)
        }
        Err(source) => Err(ClientError::Open {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Sends `request` and reads the answer; `on_progress` sees each progress event.
pub async fn call(
    stream: UnixStream,
    path: &Path,
    request: &Request,
    on_progress: &mut (dyn FnMut(&serde_json::Value) + Send),
) -> Result<Reply, ClientError> {
    let broken = |detail: String| ClientError::Conversation {
        path: path.display().to_string(),
        detail,
    };
    let (read, mut write) = stream.into_split();
    let mut text = serde_json::to_string(&Envelope {
        v: protocol::VERSION,
        request: request.clone(),
    })
    .map_err(|e| broken(format!("cannot encode the request: {e}")))?;
    text.push('\n');
    // A refused client may find the socket closed already; the refusal is still there
    // to read, so a failed write is not the end.
    let _ = write.write_all(text.as_bytes()).await;
    let mut lines = BufReader::new(read).lines();
    loop {
        let line = lines
            .next_line()
            .await
            .map_err(|e| broken(format!("cannot read the answer: {e}")))?
            .ok_or_else(|| broken("the daemon closed the connection without an answer".into()))?;
        let parsed: ClientLine = serde_json::from_str(&line)
            .map_err(|e| broken(format!("the answer is not protocol JSON: {e}")))?;
        if parsed.v != protocol::VERSION {
            return Err(broken(format!(
                "the daemon speaks protocol version {}, this keyflip {}",
                parsed.v,
                protocol::VERSION
            )));
        }
        match (parsed.progress, parsed.ok, parsed.error) {
            (_, _, Some(error)) => return Err(ClientError::Daemon(error)),
            (_, Some(reply), None) => return Ok(reply),
            (Some(event), None, None) => on_progress(&event),
            (None, None, None) => return Err(broken("an empty answer line".into())),
        }
    }
}

/// The CLI's "try the daemon first": `None` when no daemon runs (run standalone),
/// else the exit code after the daemon answered and the answer was printed.
pub fn try_daemon(config: Option<&Path>, request: Request, output: Output) -> Option<Exit> {
    try_daemon_confirmed(config, request, output, false)
}

/// [`try_daemon`] for `rotate now` without `--yes` on a terminal: the daemon's dry run
/// is shown first and the rotation is asked for only after the user says yes, as the
/// standalone command does.
pub fn try_daemon_confirmed(
    config: Option<&Path>,
    request: Request,
    output: Output,
    ask_first: bool,
) -> Option<Exit> {
    // Without a readable configuration there is no socket path; the standalone path
    // reports the configuration error properly.
    let socket = crate::config::Config::load(config).ok()?.daemon.socket;
    if !socket.exists() {
        return None;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("keyflip: cannot start the async runtime: {e}");
            return Some(Exit::Failure);
        }
    };
    runtime.block_on(async {
        let mut stream = match connect(&socket).await {
            Ok(Some(stream)) => stream,
            Ok(None) => return None,
            Err(e) => {
                eprintln!("keyflip: {e}");
                return Some(e.exit());
            }
        };
        if ask_first
            && let Request::RotateNow {
                plan,
                mode,
                grace_secs,
                ..
            } = &request
        {
            let preview = Request::RotateNow {
                plan: plan.clone(),
                mode: *mode,
                grace_secs: *grace_secs,
                dry_run: true,
            };
            match call(stream, &socket, &preview, &mut |_| {}).await {
                Ok(reply) => {
                    eprint!("{}", render::human(&reply));
                    if exit_from(reply.exit()) == Exit::Refused {
                        return Some(Exit::Refused);
                    }
                }
                Err(e) => {
                    eprintln!("keyflip: {e}");
                    return Some(e.exit());
                }
            }
            if !confirm(&format!("Rotate the key of plan {plan} now?")) {
                eprintln!("keyflip: nothing was changed");
                return Some(Exit::Ok);
            }
            stream = match connect(&socket).await {
                Ok(Some(stream)) => stream,
                Ok(None) => {
                    eprintln!("keyflip: the daemon stopped; nothing was changed");
                    return Some(Exit::Failure);
                }
                Err(e) => {
                    eprintln!("keyflip: {e}");
                    return Some(e.exit());
                }
            };
        }
        let mut show = |event: &serde_json::Value| {
            if output == Output::Human
                && let Some(line) = render::progress(event)
            {
                eprintln!("{line}");
            }
        };
        let exit = match call(stream, &socket, &request, &mut show).await {
            Ok(reply) => {
                let text = match output {
                    Output::Json => render::json(&reply),
                    Output::Human => render::human(&reply),
                };
                print!("{text}");
                exit_from(reply.exit())
            }
            Err(e) => {
                eprintln!("keyflip: {e}");
                e.exit()
            }
        };
        Some(exit)
    })
}

/// Asks on the terminal; `true` for yes.
fn confirm(question: &str) -> bool {
    use std::io::{BufRead as _, Write as _};
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    if std::io::stdin().lock().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// The documented exit code for a number the daemon sent.
pub fn exit_from(code: u8) -> Exit {
    match code {
        0 => Exit::Ok,
        2 => Exit::Usage,
        3 => Exit::Refused,
        4 => Exit::RolledBack,
        5 => Exit::NeedsAttention,
        6 => Exit::Busy,
        130 => Exit::Interrupted,
        _ => Exit::Failure,
    }
}
