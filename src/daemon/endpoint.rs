//! The metrics HTTP endpoint: `/metrics` (Prometheus text), `/healthz` (the
//! scheduler runs) and `/readyz` (the journal is recovered and the daemon is not
//! stopping). Plain HTTP on the configured address, loopback by default: it serves
//! nothing secret, and nothing that changes anything.
//!
//! Anyone who can reach the port can connect, so connections are a bounded pool: at
//! most [`MAX_CONNECTIONS`] at once (further ones wait in the kernel's listen queue,
//! holding none of the daemon's file descriptors), each closed after
//! [`CONNECTION_LIFETIME`] whatever it does. Idle connections therefore cannot drain
//! the descriptors rotations need.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::metrics::Metrics;
use super::snapshot::SnapshotWatch;
use crate::azure::budget::Budgets;
use crate::clock::Clock;

/// What the endpoint reads on each request.
#[derive(Clone)]
pub struct Endpoint {
    pub metrics: Arc<Metrics>,
    pub snapshot: SnapshotWatch,
    pub budgets: Option<Arc<Budgets>>,
    pub clock: Arc<dyn Clock>,
    /// With `[coordination]`: the replica's leases and their counters.
    pub coordination: Option<Arc<crate::coordination::Coordinator>>,
}

/// Metrics connections served at once. A scrape takes one; 64 leaves room for many
/// scrapers and probes while the descriptors it can cost stay small.
pub const MAX_CONNECTIONS: usize = 64;

/// How long one metrics connection may stay open, busy or idle. A scrape takes
/// milliseconds; Prometheus reconnects when its keep-alive connection is closed.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(10);

/// The metrics listener: accepts only while a slot is free.
struct Capped {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    lifetime: Duration,
}

impl axum::serve::Listener for Capped {
    type Io = Bounded;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Bounded, SocketAddr) {
        loop {
            // The semaphore is never closed; a slot frees when a connection ends.
            let Ok(slot) = self.slots.clone().acquire_owned().await else {
                std::future::pending::<()>().await;
                continue;
            };
            match self.listener.accept().await {
                Ok((stream, addr)) => {
                    let deadline = Box::pin(tokio::time::sleep(self.lifetime));
                    return (
                        Bounded {
                            stream,
                            deadline,
                            _slot: slot,
                        },
                        addr,
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics endpoint: accept failed");
                    // Out of descriptors and the like: do not spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// A metrics connection: holds its slot, and fails every read and write once its
/// lifetime is over (so the server closes it, idle or not).
struct Bounded {
    stream: TcpStream,
    deadline: Pin<Box<tokio::time::Sleep>>,
    _slot: OwnedSemaphorePermit,
}

impl Bounded {
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

fn over() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "the metrics connection's lifetime is over",
    )
}

impl AsyncRead for Bounded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.expired(cx) {
            return Poll::Ready(Err(over()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Bounded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.expired(cx) {
            return Poll::Ready(Err(over()));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, endpoint: Endpoint, shutdown: CancellationToken) {
    serve_capped(
        listener,
        endpoint,
        shutdown,
        MAX_CONNECTIONS,
        CONNECTION_LIFETIME,
    )
    .await;
}

async fn serve_capped(
    listener: TcpListener,
    endpoint: Endpoint,
    shutdown: CancellationToken,
    max_connections: usize,
    lifetime: Duration,
) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(endpoint);
    let listener = Capped {
        listener,
        slots: Arc::new(Semaphore::new(max_connections)),
        lifetime,
    };
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "the metrics endpoint stopped");
    }
}

/// Binds the metrics address (port 0 picks a free one).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, std::io::Error> {
    TcpListener::bind(addr).await
}

async fn metrics(State(e): State<Endpoint>) -> impl IntoResponse {
    let snapshot = e.snapshot.peek().await;
    let mut text = e
        .metrics
        .render(&snapshot, e.budgets.as_deref(), e.clock.now());
    if let Some(coordinator) = &e.coordination {
        super::metrics::coordination(&mut text, coordinator);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

/// Alive as long as the scheduler runs (it owns the snapshot's sender).
async fn healthz(State(e): State<Endpoint>) -> impl IntoResponse {
    if e.snapshot.alive() {
        (StatusCode::OK, "ok\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the scheduler has stopped\n",
        )
    }
}

async fn readyz(State(e): State<Endpoint>) -> impl IntoResponse {
    match e.snapshot.readiness() {
        (true, false) => (StatusCode::OK, "ready\n"),
        (_, true) => (StatusCode::SERVICE_UNAVAILABLE, "stopping\n"),
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "recovering the journal\n"),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    async fn get(addr: SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out).await;
        out
    }

    /// Idle connections hold at most the cap, and only for their lifetime: a scrape
    /// behind them is served once one expires, and the daemon never accepted more.
    #[tokio::test]
    async fn idle_connections_are_capped_and_expire() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        // The scheduler's side of the snapshot, kept alive so /healthz answers ok.
        let (_header_tx, header) =
            tokio::sync::watch::channel(super::super::snapshot::Header::default());
        let (scheduler_tx, _scheduler_rx) = tokio::sync::mpsc::unbounded_channel();
        let snapshot = SnapshotWatch::new(header, scheduler_tx);
        let endpoint = Endpoint {
            metrics: Arc::new(Metrics::default()),
            snapshot,
            budgets: None,
            clock: Arc::new(crate::clock::SystemClock),
            coordination: None,
        };
        let shutdown = CancellationToken::new();
        let lifetime = Duration::from_millis(500);
        tokio::spawn(serve_capped(
            listener,
            endpoint,
            shutdown.clone(),
            2,
            lifetime,
        ));
        let mut idle = Vec::new();
        for _ in 0..5 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        let started = std::time::Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(5), get(addr))
            .await
            .expect("served once idle connections expire");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // It waited for a slot: two idle connections held both until they expired.
        assert!(started.elapsed() >= lifetime / 2, "{:?}", started.elapsed());
        // The idle ones were closed by the server.
        let mut buf = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(5), idle[0].read(&mut buf))
            .await
            .expect("closed within its lifetime");
        assert!(matches!(closed, Ok(0) | Err(_)));
        shutdown.cancel();
    }
}
