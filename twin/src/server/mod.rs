//! Starting and stopping a twin: bind the listener, generate TLS material and keys,
//! build the state, write the state directory, serve HTTPS until shut down.
//!
//! Promise: when [`Twin::start`] returns, the listener is bound and served, and (with
//! a state directory) `ca.pem`, `principals/*.secret` and then `endpoints.json` are on
//! disk — `endpoints.json` last and atomically, so its presence means "ready".

pub(crate) mod dispatch;
mod statedir;

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::Request;
use hyper::body::Incoming;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::endpoints::{self, Endpoints};
use crate::faults::Faults;
use crate::rbac::Rbac;
use crate::requestlog::RequestLog;
use crate::state::{self, Core, Directory, Topology};
use crate::token::{Signer, TokenCache};
use crate::wire::Resp;
use crate::world::World;
use crate::{entropy, tls};

/// Everything the request handlers share.
pub(crate) struct Shared {
    pub base_url: String,
    pub topology: Topology,
    pub directory: Directory,
    pub rbac: Rbac,
    core: Mutex<Core>,
    pub clock: Clock,
    pub signer: Signer,
    pub tokens: TokenCache,
    pub faults: Faults,
    pub log: RequestLog,
    pub admin_token: String,
    pub identity_header: String,
    pub msi_default: Option<String>,
    pub shutdown: watch::Receiver<bool>,
    /// When the next simulated client request is due (`monitor::clients`).
    pub clients_due: crate::monitor::Due,
}

impl Shared {
    /// The mutable state. A panic while holding the lock cannot leave it half
    /// updated in a way later requests care about, so a poisoned lock is reused.
    pub fn core(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How to start a twin.
#[derive(Debug, Clone)]
pub struct TwinOptions {
    /// Where to listen; default `127.0.0.1:0` (a free port).
    pub listen: SocketAddr,
    /// Where to write `ca.pem`, `endpoints.json` and `principals/<name>.secret`.
    pub state_dir: Option<PathBuf>,
}

impl Default for TwinOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            state_dir: None,
        }
    }
}

/// Why a twin could not start.
#[derive(Debug, thiserror::Error)]
pub enum TwinError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up the twin: {0}")]
    Setup(String),
}

/// Starts twins.
pub struct Twin;

/// A running twin. Dropping it stops the server at once; [`TwinHandle::shutdown`]
/// stops it gracefully.
pub struct TwinHandle {
    endpoints: Endpoints,
    ca_pem: String,
    server: axum_server::Handle<SocketAddr>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    stop: watch::Sender<bool>,
}

impl Twin {
    /// Starts a twin serving `world`. Must be called inside a tokio runtime.
    pub async fn start(world: World, opts: TwinOptions) -> Result<TwinHandle, TwinError> {
        let listener =
            std::net::TcpListener::bind(opts.listen).map_err(|source| TwinError::Listen {
                addr: opts.listen,
                source,
            })?;
        let listen_err = |source| TwinError::Listen {
            addr: opts.listen,
            source,
        };
        listener.set_nonblocking(true).map_err(listen_err)?;
        let local = listener.local_addr().map_err(listen_err)?;
        let ip = if local.ip().is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            local.ip()
        };
        let base_url = format!("https://{}", SocketAddr::new(ip, local.port()));

        let tls = tls::generate().map_err(TwinError::Setup)?;
        let signer = Signer::generate().map_err(TwinError::Setup)?;
        let clock = Clock::default();
        let built = state::build(&world, &base_url, clock.now()).map_err(TwinError::Setup)?;
        let admin_token = entropy::token();

        let ca_pem_path = match &opts.state_dir {
            Some(dir) => Some(statedir::write_ca(dir, &tls.ca_pem)?),
            None => None,
        };
        let endpoints = endpoints::build(endpoints::Inputs {
            base_url: &base_url,
            ca_pem_path,
            topology: &built.topology,
            directory: &built.directory,
            core: &built.core,
            identity_header: &built.identity_header,
            admin_token: &admin_token,
        });
        if let Some(dir) = &opts.state_dir {
            statedir::write_principals(dir, &built.directory)?;
        }

        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(Shared {
            base_url,
            topology: built.topology,
            directory: built.directory,
            rbac: built.rbac,
            core: Mutex::new(built.core),
            clock,
            signer,
            tokens: TokenCache::default(),
            faults: Faults::default(),
            log: RequestLog::default(),
            admin_token,
            identity_header: built.identity_header,
            msi_default: built.msi_default,
            shutdown: stopped,
            clients_due: crate::monitor::Due::default(),
        });

        let server = axum_server::Handle::new();
        let config = axum_server::tls_rustls::RustlsConfig::from_config(tls.config);
        // TCP_NODELAY: without it, the second small write of a burst of answers on
        // one connection waits for the client's delayed ACK (~40 ms on Linux), which
        // penalises the concurrent calls keyflip makes (`benches/nodelay.rs`).
        let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(config)
            .acceptor(axum_server::accept::NoDelayAcceptor::new());
        let serving = axum_server::from_tcp(listener)
            .map_err(listen_err)?
            .acceptor(acceptor)
            .handle(server.clone());
        let task = tokio::spawn(serving.serve(MakeTwin(shared)));
        if server.listening().await.is_none() {
            return Err(TwinError::Setup(
                "the HTTPS server stopped before it was ready".into(),
            ));
        }
        if let Some(dir) = &opts.state_dir {
            statedir::write_endpoints(dir, &endpoints)?;
        }
        Ok(TwinHandle {
            endpoints,
            ca_pem: tls.ca_pem,
            server,
            task: Some(task),
            stop,
        })
    }
}

impl TwinHandle {
    /// Where everything is (the same content as `endpoints.json`).
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// The CA certificate clients must trust, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Stops accepting connections, lets requests in flight finish (up to 2 s; hung
    /// requests are dropped at once) and waits for the server to stop.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        self.server.graceful_shutdown(Some(Duration::from_secs(2)));
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TwinHandle {
    fn drop(&mut self) {
        if self.task.take().is_some() {
            let _ = self.stop.send(true);
            self.server.shutdown();
        }
    }
}

/// The error a request future returns to make hyper drop the connection (HTTP/1)
/// or reset the stream (HTTP/2) without an answer.
#[derive(Debug)]
pub(crate) struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for Dropped {}

#[derive(Clone)]
struct TwinService(Arc<Shared>, SocketAddr);

impl tower::Service<Request<Incoming>> for TwinService {
    type Response = Resp;
    type Error = Dropped;
    type Future = Pin<Box<dyn Future<Output = Result<Resp, Dropped>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Dropped>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Incoming>) -> Self::Future {
        req.extensions_mut().insert(crate::wire::Peer(self.1));
        Box::pin(dispatch::serve(self.0.clone(), req))
    }
}

#[derive(Clone)]
struct MakeTwin(Arc<Shared>);

impl tower::Service<SocketAddr> for MakeTwin {
    type Response = TwinService;
    type Error = Infallible;
    type Future = std::future::Ready<Result<TwinService, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, peer: SocketAddr) -> Self::Future {
        std::future::ready(Ok(TwinService(self.0.clone(), peer)))
    }
}
