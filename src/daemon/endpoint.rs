//! The metrics HTTP endpoint: `/metrics` (Prometheus text), `/healthz` (the
//! scheduler runs) and `/readyz` (the journal is recovered and the daemon is not
//! stopping). Plain HTTP on the configured address, loopback by default: it serves
//! nothing secret, and nothing that changes anything.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
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
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    endpoint: Endpoint,
    shutdown: CancellationToken,
) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(endpoint);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "the metrics endpoint stopped");
    }
}

/// Binds the metrics address (port 0 picks a free one).
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, std::io::Error> {
    tokio::net::TcpListener::bind(addr).await
}

async fn metrics(State(e): State<Endpoint>) -> impl IntoResponse {
    let snapshot = e.snapshot.peek().await;
    let text = e
        .metrics
        .render(&snapshot, e.budgets.as_deref(), e.clock.now());
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
