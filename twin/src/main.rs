//! The `keyflip-twin` binary: `keyflip-twin serve --world FILE|demo --state-dir DIR
//! [--listen 127.0.0.1:0]` starts a twin, writes its state directory, logs the base
//! URL and serves until SIGTERM or SIGINT. Exit codes: 0 after a clean stop, 1 when
//! the twin cannot start, 2 for bad usage.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use keyflip_twin::{Twin, TwinOptions, World};

#[derive(Parser)]
#[command(
    name = "keyflip-twin",
    version,
    about = "A local Azure-compatible HTTPS service for testing keyflip"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a world over HTTPS until SIGTERM/SIGINT.
    Serve {
        /// A world file, or `demo` for the built-in demo world.
        #[arg(long)]
        world: String,
        /// Where to write ca.pem, endpoints.json and principals/<name>.secret.
        #[arg(long)]
        state_dir: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let Command::Serve {
        world,
        state_dir,
        listen,
    } = cli.command;
    let world = if world == "demo" {
        World::demo()
    } else {
        match World::from_toml_file(std::path::Path::new(&world)) {
            Ok(w) => w,
            Err(e) => {
                eprintln!("keyflip-twin: {e}");
                return ExitCode::from(1);
            }
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keyflip-twin: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        let opts = TwinOptions {
            listen,
            state_dir: Some(state_dir.clone()),
        };
        let twin = match Twin::start(world, opts).await {
            Ok(t) => t,
            Err(e) => {
                eprintln!("keyflip-twin: {e}");
                return ExitCode::from(1);
            }
        };
        tracing::info!(
            base_url = %twin.endpoints().base_url,
            state_dir = %state_dir.display(),
            "keyflip-twin serving"
        );
        if let Err(e) = stop_signal().await {
            eprintln!("keyflip-twin: cannot wait for signals: {e}");
            twin.shutdown().await;
            return ExitCode::from(1);
        }
        tracing::info!("keyflip-twin stopping");
        twin.shutdown().await;
        ExitCode::SUCCESS
    })
}

async fn stop_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    Ok(())
}
