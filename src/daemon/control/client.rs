//! The control socket's client: how `keyflip rotate now`, `rotate resume`, `status`
//! and `history` reach a running daemon, so that one process owns the journal.
//!
//! [`connect`] answers `None` when no daemon listens (no socket file, or nobody
//! accepting on it), and the command then runs standalone. [`call`] sends one
//! [`Request`] and hands every progress event to the caller as it arrives, then
//! returns the daemon's typed answer or error; printing is the caller's (the command's
//! one renderer). A daemon that refuses the caller is an error, not a reason to go
//! standalone: two processes would then fight over the journal.

use std::path::Path;

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;

use super::protocol::{self, CommandError, Done, Envelope, Request, ServerLine, VersionOnly};
use crate::exit::Exit;
use crate::rotation::ProgressEvent;

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
    #[error("{}", protocol::version_mismatch(*.daemon, protocol::VERSION))]
    Version { daemon: u32 },
    /// The daemon could not do it; printed like the same error standalone.
    #[error("{0}")]
    Daemon(CommandError),
}

impl ClientError {
    pub fn exit(&self) -> Exit {
        match self {
            ClientError::Daemon(e) => e.exit,
            ClientError::Version { .. } => Exit::Usage,
            _ => Exit::Failure,
        }
    }
}

impl From<ClientError> for CommandError {
    fn from(e: ClientError) -> CommandError {
        match e {
            ClientError::Daemon(e) => e,
            ClientError::Version { .. } => CommandError::new(
                protocol::ErrorCode::UnsupportedVersion,
                e.to_string(),
                Exit::Usage,
            ),
            other => CommandError::failed(other),
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

/// Sends `request` on `stream` and reads the answer; `on_progress` sees each progress
/// event in order.
pub async fn call(
    stream: UnixStream,
    path: &Path,
    request: &Request,
    on_progress: &mut (dyn FnMut(ProgressEvent) + Send),
) -> Result<Done, ClientError> {
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
        let version = serde_json::from_str::<VersionOnly>(&line)
            .map_err(|e| broken(format!("the answer is not protocol JSON: {e}")))?
            .v;
        match version {
            Some(protocol::VERSION) => {}
            Some(daemon) => return Err(ClientError::Version { daemon }),
            None => return Err(broken("an answer line without a protocol version".into())),
        }
        let parsed: ServerLine = serde_json::from_str(&line)
            .map_err(|e| broken(format!("the answer is not protocol JSON: {e}")))?;
        match (parsed.progress, parsed.ok, parsed.error) {
            (_, _, Some(error)) => return Err(ClientError::Daemon(error)),
            (_, Some(done), None) => return Ok(done),
            (Some(event), None, None) => on_progress(event),
            (None, None, None) => return Err(broken("an empty answer line".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt as _;
    use tokio::net::UnixListener;

    use super::*;

    /// A daemon that answers every request with `lines`, then hangs up.
    async fn daemon_saying(lines: &'static str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyflip.sock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 512];
            let _ = stream.read(&mut buf).await;
            let _ = stream.write_all(lines.as_bytes()).await;
        });
        (dir, path)
    }

    #[tokio::test]
    async fn a_daemon_of_another_version_is_named_with_both_versions() {
        let (_dir, path) = daemon_saying(
            "{\"v\":1,\"error\":{\"code\":\"unsupported_version\",\"message\":\"this daemon speaks protocol version 1\",\"exit\":2}}\n",
        )
        .await;
        let stream = connect(&path).await.unwrap().expect("listening");
        let err = call(stream, &path, &Request::Status { plan: None }, &mut |_| {})
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Version { daemon: 1 }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("version 1") && text.contains("version 7"),
            "{text}"
        );
        assert_eq!(CommandError::from(err).exit, Exit::Usage);
    }

    #[tokio::test]
    async fn progress_reaches_the_caller_in_order_before_the_answer() {
        let (_dir, path) = daemon_saying(concat!(
            "{\"v\":7,\"progress\":{\"event\":\"resuming\",\"rotation_id\":\"r1\",\"plan\":\"demo\",\"in_doubt\":1}}\n",
            "{\"v\":7,\"progress\":{\"event\":\"waiting\",\"rotation_id\":\"r1\",\"until\":\"2026-03-01T00:00:00Z\",\"why\":\"grace\"}}\n",
            "{\"v\":7,\"error\":{\"code\":\"busy\",\"message\":\"plan `demo` is busy\",\"exit\":6}}\n",
        ))
        .await;
        let stream = connect(&path).await.unwrap().expect("listening");
        let mut seen = Vec::new();
        let err = call(
            stream,
            &path,
            &Request::Resume {
                plan: None,
                grace: None,
                by: Default::default(),
                force_retire: false,
            },
            &mut |e| {
                seen.push(e.rotation_id().to_owned());
            },
        )
        .await
        .unwrap_err();
        assert_eq!(seen, ["r1", "r1"]);
        let error = CommandError::from(err);
        assert_eq!(
            (error.exit, error.message.as_str()),
            (Exit::Busy, "plan `demo` is busy")
        );
    }
}
