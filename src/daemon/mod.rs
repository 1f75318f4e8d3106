//! `keyflip daemon`: rotates plans on schedule, resumes what a crash or signal
//! interrupted, watches for drift, notifies, and serves a control socket and metrics.
//!
//! [`start`] opens everything (state directory, journal, Azure facades with the shared
//! call budgets, control socket, metrics listener), spawns the scheduler and returns
//! a [`DaemonHandle`]: `shutdown` (SIGTERM/SIGINT), `reload` (SIGHUP), the published
//! [`Snapshot`], and `wait` for the exit code. [`run`] is what `main` calls: it wires
//! the signals to the handle. Tests drive the handle directly with a manual clock.
//!
//! Lifecycle promises: `READY=1` only after the journal is open and every unfinished
//! rotation has been handed to resume; SIGTERM stops new work, lets each step in
//! flight finish and be journaled (bounded by `shutdown_timeout`) and exits 0; SIGHUP
//! applies a valid new configuration and plan set or, if any of it is invalid, logs
//! every error and keeps the old one.

mod conclude;
pub mod control;
pub mod drift;
mod endpoint;
mod jobs;
mod kept;
mod lifecycle;
pub mod metrics;
pub mod notify;
mod observe;
mod plan_text;
mod progress;
mod requests;
mod scheduler;
mod signals;
pub mod snapshot;
pub mod systemd;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::azure::budget::Budgets;
use crate::azure::{Azure, AzureOptions};
use crate::clock::Clock;
use crate::config::{Config, ConfigPath};
use crate::exit::Exit;
use crate::journal::{Journal, JournalError};
use crate::rotation::{Engine, EngineOptions};
use crate::secret::{FingerprintKeyError, Fingerprinter};

pub use kept::LoadedPlan;
pub use signals::run;
pub use snapshot::{PlanSnapshot, Snapshot, SnapshotWatch};

use scheduler::{Context, Msg, Scheduler};

/// Reads the configuration and every plan, or says everything that is wrong.
pub(crate) type Loader =
    Arc<dyn Fn() -> Result<(Config, Vec<LoadedPlan>), Vec<String>> + Send + Sync>;

/// An environment for building credentials (the process's, or a test's).
pub type EnvFn = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// A loader that reads the configuration file at `path` and the plans directory it
/// names, with `env` for the `AZURE_*`/systemd variables.
pub fn file_loader(path: ConfigPath, env: EnvFn) -> Loader {
    one_heap();
    Arc::new(move || {
        let config = Config::load_from(&path, &*env).map_err(|e| vec![e.to_string()])?;
        let (plans, errors) = kept::load_plans(&config.plans_dir);
        if !errors.is_empty() {
            return Err(errors.iter().map(ToString::to_string).collect());
        }
        Ok((config, plans))
    })
}

/// Everything the daemon needs besides what the configuration says.
pub struct DaemonOptions {
    pub config: Config,
    pub plans: Vec<LoadedPlan>,
    /// Re-reads configuration and plans on reload.
    pub loader: Loader,
    pub clock: Arc<dyn Clock>,
    pub env: EnvFn,
    pub systemd: systemd::SystemdNotifier,
    /// `WatchdogSec=` as systemd passes it (`sd_notify::watchdog_enabled`).
    pub watchdog: Option<Duration>,
    pub azure: AzureOptions,
    pub engine: EngineOptions,
    pub delivery: notify::DeliveryOptions,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot prepare the state directory {path}: {source}")]
    StateDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    FingerprintKey(#[from] FingerprintKeyError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Azure(#[from] crate::azure::Error),
    #[error(transparent)]
    Control(#[from] control::server::ControlError),
    #[error(
        "cannot listen for metrics on {addr}: {source}; choose another [daemon] metrics_listen, or \"off\""
    )]
    Metrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Notify(String),
    #[error("cannot install the signal handlers: {0}")]
    Signals(std::io::Error),
}

impl DaemonError {
    pub fn exit(&self) -> Exit {
        Exit::Failure
    }
}

/// A running daemon.
pub struct DaemonHandle {
    shutdown: CancellationToken,
    tx: mpsc::UnboundedSender<Msg>,
    snapshot: SnapshotWatch,
    done: tokio::task::JoinHandle<Exit>,
    metrics_addr: Option<SocketAddr>,
    budgets: Arc<Budgets>,
}

impl DaemonHandle {
    /// Begins a graceful shutdown (what SIGTERM and SIGINT do).
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    fn sender(&self) -> mpsc::UnboundedSender<Msg> {
        self.tx.clone()
    }

    /// Reloads configuration and plans (what SIGHUP does): the number of plans now
    /// loaded, or every error when the new set was rejected.
    pub async fn reload(&self) -> Result<usize, Vec<String>> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Reload(Some(tx))).is_err() {
            return Err(vec!["the daemon has stopped".into()]);
        }
        rx.await
            .unwrap_or_else(|_| Err(vec!["the daemon has stopped".into()]))
    }

    /// Returns once the scheduler has handled a message; its next evaluation then
    /// reads the clock afresh (tests use it to make the daemon look at "now").
    pub async fn ping(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Ping(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    pub fn snapshot(&self) -> SnapshotWatch {
        self.snapshot.clone()
    }

    /// Where `/metrics` is served, when it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    pub fn budgets(&self) -> &Arc<Budgets> {
        &self.budgets
    }

    /// Waits for the daemon to stop; its exit code.
    pub async fn wait(self) -> Exit {
        self.done.await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "the scheduler task failed");
            Exit::Failure
        })
    }
}

/// Opens everything and starts the daemon. Touches no network before the scheduler
/// runs.
pub async fn start(options: DaemonOptions) -> Result<DaemonHandle, DaemonError> {
    let DaemonOptions {
        config,
        plans,
        loader,
        clock,
        env,
        systemd,
        watchdog,
        azure: azure_options,
        engine: engine_options,
        delivery,
    } = options;
    let dir = &config.state_dir;
    {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| DaemonError::StateDir {
                path: dir.display().to_string(),
                source,
            })?;
    }
    // The socket first: a second daemon stops here, before touching the journal.
    let server = control::server::Server::bind(&config.daemon.socket, &config.daemon.allowed_uids)?;
    let socket = server.path().to_path_buf();
    let fingerprinter = Arc::new(Fingerprinter::load_or_create(&dir.join("fingerprint.key"))?);
    let budgets = Arc::new(Budgets::new(config.daemon.budget, clock.clone()));
    let azure = Azure::with_options(&config, fingerprinter.clone(), azure_options.clone(), &*env)?
        .with_budgets(budgets.clone());
    let interrupt = azure.interrupt();
    // Which identity the daemon uses (for the start-up line); the default chain also
    // logs the link it picks at the first token request (the first drift check).
    let chain = azure.credential_chain();
    let credential = if chain.is_empty() {
        azure.credential_in_use().to_string()
    } else {
        format!(
            "default chain ({}); the first link that gives a token is logged when chosen",
            chain.join("; ")
        )
    };
    let engine = Engine::with_options(
        &config,
        azure,
        Journal::open(&dir.join("journal.db"), &fingerprinter)?,
        fingerprinter.clone(),
        clock.clone(),
        // The daemon's own rotations never wait for discovery's reads (see
        // `EngineOptions::defer_unlisted_check`).
        EngineOptions {
            defer_unlisted_check: true,
            ..engine_options
        },
    );
    let coordination = engine.coordination().cloned();

    let listener = match config.daemon.metrics_listen {
        Some(addr) => Some(
            endpoint::bind(addr)
                .await
                .map_err(|source| DaemonError::Metrics { addr, source })?,
        ),
        None => None,
    };
    let metrics_addr = listener.as_ref().and_then(|l| l.local_addr().ok());
    // The one start-up line: where everything is, so an operator reading the journal
    // knows which configuration runs without asking.
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %config.source.as_ref().map_or_else(|| "built-in defaults".to_owned(), |p| p.display().to_string()),
        plans_dir = %config.plans_dir.display(),
        plans = plans.len(),
        state_dir = %dir.display(),
        socket = %socket.display(),
        metrics = %metrics_addr.map_or_else(|| "off".to_owned(), |a| format!("http://{a}/metrics")),
        credential = %credential,
        "keyflip daemon started"
    );

    let shutdown = CancellationToken::new();
    // A shutdown ends every wait of the Azure calls in flight too (token requests,
    // backoffs, budgets, polls); requests already sent still get their answers.
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            interrupt.cancel();
        }
    });
    let tracker = TaskTracker::new();
    let metrics = Arc::new(metrics::Metrics::default());
    metrics.started(clock.now());
    let notifier = notify::Notifier::new(
        config.cloud.ca_bundle.as_deref(),
        delivery,
        metrics.clone(),
        tracker.clone(),
    )
    .map_err(DaemonError::Notify)?;
    let (tx, rx) = mpsc::unbounded_channel();
    let (header, header_rx) = watch::channel(snapshot::Header::default());
    let snapshot_rx = SnapshotWatch::new(header_rx, tx.clone());
    let ctx = Context {
        engine,
        clock: clock.clone(),
        metrics: metrics.clone(),
        notifier,
        tracker,
        shutdown: shutdown.clone(),
        tx: tx.clone(),
    };
    let mut scheduler = Scheduler {
        ctx,
        config,
        plans: BTreeMap::new(),
        rx,
        header,
        counts: snapshot::Counts::default(),
        evaluated_at: None,
        systemd: systemd.clone(),
        loader,
        ready: false,
        stopping: false,
        last_summary: String::new(),
        timers: BTreeSet::new(),
        due: BTreeSet::new(),
        checks_due: BTreeSet::new(),
        jobs: 0,
        busy: 0,
        checks: 0,
        dirty: BTreeSet::new(),
    };
    let now = clock.now();
    for entry in scheduler.entries_for(plans, now) {
        scheduler.insert(entry, now);
    }
    scheduler.publish(now);
    scheduler.ctx.engine.journal().shrink_memory();
    release_heap();

    // The socket and the metrics endpoint stop with the daemon, not before: a client
    // waiting for a rotation still gets its answer during the drain.
    let serving = CancellationToken::new();
    let connections = TaskTracker::new();
    let handler: Arc<dyn control::server::Handler> = Arc::new(Requests {
        tx: tx.clone(),
        snapshot: snapshot_rx.clone(),
    });
    let server_task = tokio::spawn(server.serve(handler, serving.clone(), connections.clone()));
    let mut metrics_task = None;
    if let Some(listener) = listener {
        let endpoint = endpoint::Endpoint {
            metrics,
            snapshot: snapshot_rx.clone(),
            budgets: Some(budgets.clone()),
            clock: clock.clone(),
            coordination,
        };
        metrics_task = Some(tokio::spawn(endpoint::serve(
            listener,
            endpoint,
            serving.clone(),
        )));
    }
    if let Some(period) = watchdog {
        tokio::spawn(systemd::watchdog_pings(
            period,
            tx.clone(),
            systemd,
            shutdown.clone(),
        ));
    }
    let done = tokio::spawn(async move {
        let exit = scheduler.run().await;
        serving.cancel();
        // The server removes the socket file when it stops.
        let _ = server_task.await;
        connections.close();
        // Clients get their last lines; a hung client does not hold the exit.
        let _ = tokio::time::timeout(Duration::from_secs(2), connections.wait()).await;
        if let Some(task) = metrics_task {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
        exit
    });
    Ok(DaemonHandle {
        shutdown,
        tx,
        snapshot: snapshot_rx,
        done,
        metrics_addr,
        budgets,
    })
}

/// One malloc arena for the whole process. glibc gives threads arenas of their own
/// (up to eight per core), each keeping freed memory for reuse; the daemon is mostly
/// idle and allocates little once started, so one arena costs nothing measurable and
/// saves megabytes of resident memory at fleet scale (docs/performance.md). Called
/// when the daemon's loader is made, before the process starts any other thread.
fn one_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator tuning parameter.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Hands memory freed after parsing every plan back to the kernel. The parsed plans
/// are dropped once the scheduler has kept what it needs, but glibc's allocator keeps
/// freed heap for reuse, so without this the start-up peak would stay resident.
pub(crate) fn release_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the kernel; no pointer is involved.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The control socket's handler: requests go to the scheduler.
struct Requests {
    tx: mpsc::UnboundedSender<Msg>,
    snapshot: SnapshotWatch,
}

impl control::server::Handler for Requests {
    fn handle(
        &self,
        request: control::protocol::Request,
        progress: mpsc::UnboundedSender<crate::rotation::ProgressEvent>,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = Result<control::protocol::Answer, control::protocol::CommandError>,
                > + Send
                + 'static,
        >,
    > {
        let tx = self.tx.clone();
        Box::pin(async move {
            let gone = || {
                control::protocol::CommandError::new(
                    control::protocol::ErrorCode::ShuttingDown,
                    "the daemon is shutting down",
                    Exit::Failure,
                )
            };
            let (reply, answer) = oneshot::channel();
            tx.send(Msg::Request {
                request,
                progress,
                reply,
            })
            .map_err(|_| gone())?;
            answer.await.unwrap_or_else(|_| Err(gone()))
        })
    }

    fn info(&self) -> control::protocol::DaemonInfo {
        control::protocol::DaemonInfo {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            summary: self.snapshot.summary(),
        }
    }
}
