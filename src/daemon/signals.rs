//! Signals for `keyflip daemon`: SIGTERM and SIGINT begin a graceful shutdown (steps
//! in flight finish and are journaled), SIGHUP asks for a reload. The handlers are
//! installed before the daemon starts, so a signal that arrives while the journal is
//! being opened is not lost.

use super::scheduler::Msg;
use super::{DaemonError, DaemonOptions, start};
use crate::exit::Exit;

/// `keyflip daemon`: starts, maps SIGTERM/SIGINT to shutdown and SIGHUP to reload,
/// and returns the exit code.
pub async fn run(options: DaemonOptions) -> Exit {
    use tokio::signal::unix::{SignalKind, signal};
    let signals = (|| -> Result<_, std::io::Error> {
        Ok((
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
            signal(SignalKind::hangup())?,
        ))
    })();
    let (mut term, mut int, mut hup) = match signals {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{}", DaemonError::Signals(e));
            return Exit::Failure;
        }
    };
    let handle = match start(options).await {
        Ok(handle) => handle,
        Err(e) => {
            tracing::error!(error = %e, "keyflip daemon cannot start");
            return e.exit();
        }
    };
    let shutdown = handle.shutdown_token();
    let tx = handle.sender();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); shutdown.cancel(); }
                _ = int.recv() => { tracing::info!("SIGINT: shutting down"); shutdown.cancel(); }
                _ = hup.recv() => { tracing::info!("SIGHUP: reloading configuration and plans"); let _ = tx.send(Msg::Reload(None)); }
            }
        }
    });
    handle.wait().await
}
