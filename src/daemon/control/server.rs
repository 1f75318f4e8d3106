//! The control socket's server: a Unix socket, mode 0600, one request per connection.
//!
//! Promises:
//! - The peer's uid (`SO_PEERCRED`) is checked before a single byte is read: root,
//!   the daemon's own uid (the socket file's owner) and `allowed_uids` pass; anyone
//!   else gets a `permission_denied` line and the connection is closed unread.
//! - Only one daemon serves a socket path: binding refuses a path where another
//!   daemon answers, and replaces a stale socket file nobody answers on. Nothing but
//!   a socket is ever removed: a path that holds a file, a directory or a link is
//!   refused with what it is (a mistyped path must not cost the journal).
//! - A client that goes away does not stop what it asked for: a rotation belongs to
//!   the daemon once started, and finishes (or is interrupted by shutdown) either way.
//! - The socket file is removed when the server is dropped, if it is still the one
//!   this server created (same device and inode).
//! - What one client can hold is bounded: at most [`MAX_CONNECTIONS`] connections at
//!   once (more wait in the kernel's listen queue, holding no descriptor of the
//!   daemon's), a request line of at most `MAX_REQUEST_BYTES` read within
//!   `REQUEST_TIMEOUT`, and every line written within [`WRITE_TIMEOUT`] (a client
//!   that stops reading is treated as gone; its rotation runs on). So a connection
//!   costs at most one descriptor and about 80 KiB, and abuse cannot grow the daemon.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::protocol::{
    self, Answer, CommandError, DaemonInfo, Done, Envelope, ErrorCode, ServerLine,
};
use crate::exit::Exit;
use crate::rotation::ProgressEvent;

/// How long a connected client has to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Control connections served at once.
pub const MAX_CONNECTIONS: usize = 32;

/// How long one line to a client may take to write.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes `text`; false when the client did not take it within [`WRITE_TIMEOUT`].
async fn send(write: &mut tokio::net::unix::OwnedWriteHalf, text: &str) -> bool {
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, write.write_all(text.as_bytes())).await,
        Ok(Ok(()))
    )
}

/// What the server hands each request to: the daemon. Progress events of a running
/// rotation go to `progress` while the returned future runs.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        request: protocol::Request,
        progress: mpsc::UnboundedSender<ProgressEvent>,
    ) -> Pin<Box<dyn Future<Output = Result<Answer, CommandError>> + Send + 'static>>;

    /// Who is answering, sent with every answer (not with errors: a refused peer
    /// learns nothing about the daemon).
    fn info(&self) -> DaemonInfo;
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "another keyflip daemon is already listening on {path}; stop it first (systemctl stop keyflip), or set [daemon] socket to another path"
    )]
    AlreadyRunning { path: String },
    #[error(
        "the control socket path {path} is a {kind}, not a socket; keyflip removes only a stale socket there, never anything else: set [daemon] socket to another path"
    )]
    NotASocket { path: String, kind: &'static str },
    #[error("cannot create the control socket {path}: {source}")]
    Bind {
        path: String,
        source: std::io::Error,
    },
}

/// Who may use the socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allowed {
    /// The daemon's own uid: the owner of the socket file it created.
    pub owner: u32,
    pub extra: Vec<u32>,
}

impl Allowed {
    pub fn permits(&self, uid: u32) -> bool {
        uid == 0 || uid == self.owner || self.extra.contains(&uid)
    }
}

/// A bound control socket.
pub struct Server {
    listener: UnixListener,
    path: PathBuf,
    /// Device and inode of the socket file this server created.
    inode: (u64, u64),
    allowed: Allowed,
}

impl Server {
    /// Binds `path` (creating its directory, mode 0700, if missing) with mode 0600.
    pub fn bind(path: &Path, extra_uids: &[u32]) -> Result<Server, ControlError> {
        use std::os::unix::fs::{
            DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, PermissionsExt as _,
        };
        let shown = path.display().to_string();
        let io = |source| ControlError::Bind {
            path: shown.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io)?;
        }
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    return Err(ControlError::AlreadyRunning { path: shown });
                }
                // Left behind by a daemon that died without cleaning up.
                std::fs::remove_file(path).map_err(io)?;
            }
            Ok(meta) => {
                let t = meta.file_type();
                return Err(ControlError::NotASocket {
                    path: shown,
                    kind: if t.is_dir() {
                        "directory"
                    } else if t.is_symlink() {
                        "symbolic link"
                    } else if t.is_file() {
                        "regular file"
                    } else {
                        "special file"
                    },
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let listener = UnixListener::bind(path).map_err(io)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        let meta = std::fs::symlink_metadata(path).map_err(io)?;
        let owner = meta.uid();
        Ok(Server {
            listener,
            inode: (meta.dev(), meta.ino()),
            path: path.to_path_buf(),
            allowed: Allowed {
                owner,
                extra: extra_uids.to_vec(),
            },
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves until `shutdown`; each connection is a task on `tracker`.
    pub async fn serve(
        self,
        handler: Arc<dyn Handler>,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) {
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        loop {
            // A slot first: while every slot is taken, nothing more is accepted.
            let slot = tokio::select! {
                _ = shutdown.cancelled() => break,
                slot = slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break,
                },
            };
            let stream = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "control socket: accept failed");
                        // Out of file descriptors and the like: do not spin.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let handler = handler.clone();
            let allowed = self.allowed.clone();
            tracker.spawn(async move {
                connection(stream, allowed, handler).await;
                drop(slot);
            });
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
        // Only our own socket: another daemon may have replaced it meanwhile.
        if let Ok(meta) = std::fs::symlink_metadata(&self.path)
            && meta.file_type().is_socket()
            && (meta.dev(), meta.ino()) == self.inode
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

async fn connection(stream: UnixStream, allowed: Allowed, handler: Arc<dyn Handler>) {
    // The check comes first: a refused peer never gets a byte read.
    let uid = match stream.peer_cred() {
        Ok(cred) => cred.uid(),
        Err(e) => {
            tracing::warn!(error = %e, "control socket: cannot read the peer's credentials; closing");
            return;
        }
    };
    let (read, mut write) = stream.into_split();
    if !allowed.permits(uid) {
        tracing::warn!(
            uid,
            "control socket: refused a connection from a uid that may not use it"
        );
        let error = CommandError::new(
            ErrorCode::PermissionDenied,
            format!(
                "uid {uid} may not use keyflip's control socket; run as root or as keyflip's user, or add the uid to [daemon] allowed_uids"
            ),
            Exit::Failure,
        );
        send(&mut write, &ServerLine::error(error).text()).await;
        let _ = write.shutdown().await;
        return;
    }
    let mut reader = BufReader::new(read.take(protocol::MAX_REQUEST_BYTES as u64 + 1));
    let mut text = String::new();
    let bad = |message: String| CommandError::new(ErrorCode::BadRequest, message, Exit::Usage);
    let request = match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut text)).await {
        Err(_) => Err(bad("no request line within 10 s".to_owned())),
        Ok(Err(e)) => Err(bad(format!("cannot read the request: {e}"))),
        Ok(Ok(_)) if text.len() > protocol::MAX_REQUEST_BYTES => Err(bad(format!(
            "the request is longer than {} bytes",
            protocol::MAX_REQUEST_BYTES
        ))),
        Ok(Ok(_)) => parse_request(&text),
    };
    let mut request = match request {
        Ok(request) => request,
        Err(error) => {
            send(&mut write, &ServerLine::error(error).text()).await;
            return;
        }
    };
    // Who asks is the peer the kernel vouches for, whatever the client wrote.
    request.stamp(uid);
    // Reads (status, history, dry runs) are routine; what changes keys is worth info.
    if request.changes_keys() {
        tracing::info!(uid, request = request.name(), "control request");
    } else {
        tracing::debug!(uid, request = request.name(), "control request");
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let answer = handler.handle(request, tx);
    tokio::pin!(answer);
    let mut client_gone = false;
    let result = loop {
        tokio::select! {
            Some(event) = rx.recv() => {
                if !client_gone {
                    client_gone = !send(&mut write, &ServerLine::progress(event).text()).await;
                }
            }
            result = &mut answer => break result,
        }
    };
    while let Ok(event) = rx.try_recv() {
        if !client_gone {
            client_gone = !send(&mut write, &ServerLine::progress(event).text()).await;
        }
    }
    let last = match result {
        Ok(answer) => ServerLine::ok(Done {
            daemon: handler.info(),
            answer,
        }),
        Err(error) => ServerLine::error(error),
    }
    .text();
    if !client_gone && !send(&mut write, &last).await {
        client_gone = true;
    }
    if client_gone {
        tracing::debug!(
            uid,
            "control client left before the answer; the daemon finished the request anyway"
        );
    }
}

/// A request line as the daemon reads it (after its version), or the error sent back.
pub fn parse_request(text: &str) -> Result<protocol::Request, CommandError> {
    let bad = |message: String| CommandError::new(ErrorCode::BadRequest, message, Exit::Usage);
    let version = serde_json::from_str::<protocol::VersionOnly>(text)
        .map_err(|e| bad(format!("the request is not a JSON object: {e}")))?
        .v;
    match version {
        Some(protocol::VERSION) => {}
        Some(v) => {
            return Err(CommandError::new(
                ErrorCode::UnsupportedVersion,
                protocol::version_mismatch(protocol::VERSION, v),
                Exit::Usage,
            ));
        }
        None => return Err(bad("the request has no protocol version (\"v\")".into())),
    }
    serde_json::from_str::<Envelope>(text)
        .map(|e| e.request)
        .map_err(|e| bad(format!("not a request this daemon knows: {e}")))
}
