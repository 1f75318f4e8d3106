//! Talking to systemd (`Type=notify`): `READY=1` once the journal is recovered,
//! `STATUS=` with a one-line summary whenever it changes, `STOPPING=1` on shutdown,
//! and `WATCHDOG=1` pings while the scheduler answers (when `WatchdogSec=` is set).
//!
//! The notification socket is read from `NOTIFY_SOCKET` once, at start, and then
//! passed around explicitly, so tests bind their own datagram socket and hand its
//! path in. Messages are formatted by `sd_notify`'s [`NotifyState`]; a path starting
//! with `@` is an abstract socket, as systemd documents. Failures to notify are
//! logged, never fatal: keyflip also runs outside systemd.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::scheduler::Msg;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SystemdNotifier {
    socket: Option<PathBuf>,
}

impl SystemdNotifier {
    /// From `NOTIFY_SOCKET`; a no-op notifier when it is unset.
    pub fn from_env() -> SystemdNotifier {
        SystemdNotifier {
            socket: std::env::var_os("NOTIFY_SOCKET")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
        }
    }

    pub fn to_socket(path: PathBuf) -> SystemdNotifier {
        SystemdNotifier { socket: Some(path) }
    }

    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    pub fn stopping(&self, status: &str) {
        self.send(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }

    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        let Some(socket) = &self.socket else { return };
        let mut message = String::new();
        for state in states {
            // STATUS= is one line; a newline would start another assignment.
            let line = state.to_string().replace('\n', " ");
            message.push_str(&line);
            message.push('\n');
        }
        if let Err(e) = send_datagram(socket, message.as_bytes()) {
            tracing::warn!(socket = %socket.display(), error = %e, "cannot notify systemd");
        }
    }
}

fn send_datagram(socket: &std::path::Path, message: &[u8]) -> std::io::Result<usize> {
    use std::os::unix::ffi::OsStrExt as _;
    let sock = UnixDatagram::unbound()?;
    let bytes = socket.as_os_str().as_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt as _;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(message, &addr)
    } else {
        sock.send_to(message, socket)
    }
}

/// Sends `WATCHDOG=1` every half period while the scheduler answers a ping within the
/// other half: a wedged scheduler lets systemd's watchdog fire.
pub(super) async fn watchdog_pings(
    period: Duration,
    tx: mpsc::UnboundedSender<Msg>,
    systemd: SystemdNotifier,
    shutdown: CancellationToken,
) {
    let half = (period / 2).max(Duration::from_millis(10));
    let mut interval = tokio::time::interval(half);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let (ping, pong) = oneshot::channel();
        if tx.send(Msg::Ping(ping)).is_err() {
            return;
        }
        match tokio::time::timeout(half, pong).await {
            Ok(Ok(())) => systemd.watchdog(),
            _ => tracing::warn!("the scheduler did not answer the watchdog ping in time"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_a_datagram_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let n = SystemdNotifier::to_socket(path);
        n.ready("2 plans\nsecond line");
        n.watchdog();
        let mut buf = [0u8; 256];
        let len = receiver.recv(&mut buf).unwrap();
        assert_eq!(
            std::str::from_utf8(&buf[..len]).unwrap(),
            "READY=1\nSTATUS=2 plans second line\n"
        );
        let len = receiver.recv(&mut buf).unwrap();
        assert_eq!(std::str::from_utf8(&buf[..len]).unwrap(), "WATCHDOG=1\n");
        // No socket: nothing happens, nothing fails.
        SystemdNotifier::default().ready("x");
    }
}
