//! keyflip-bench: every row of issue 9's table, measured against keyflip-twin with
//! injected latency, printed as one table (target, median, min–max, count, calls and
//! ARM writes). `docs/performance.md` explains each row and publishes a run.
//!
//! ```sh
//! cargo run --release -p keyflip-bench                 # everything (about 25 minutes)
//! cargo run --release -p keyflip-bench -- --quick      # fewer runs, fleets of 10 and 100
//! cargo run --release -p keyflip-bench -- --rows daemon,plan-check,fleet,rotation
//! ```
//!
//! The twin runs in-process (its library API, then only HTTPS); keyflip runs as the
//! `keyflip` binary built next to this one (`--keyflip PATH` measures another build).
//! Performance targets are checked here, never in timed tests.

mod daemon_rows;
mod fleet_rows;
mod keyflip;
mod rotation_rows;
mod table;
mod twin;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, bail};

use table::Row;

/// What the bench runs with.
pub struct Options {
    pub keyflip: PathBuf,
    pub root: PathBuf,
    pub runs: usize,
    pub latency_ms: u64,
    pub idle_secs: u64,
    pub fleets: Vec<usize>,
    pub fleet_timeout_secs: u64,
    pub daemon_plans: Vec<usize>,
    /// Lines under `[daemon]` in every keyflip.toml the bench writes.
    pub daemon_lines: String,
    pub rows: Vec<String>,
}

/// The twin models no hourly quota and no per-provider read limit, only Azure's ARM
/// subscription buckets (writes: 200, refilled at 10/s; reads: 250 at 25/s), so
/// keyflip is told the same limits: a custom cloud may declare its own (see
/// docs/configuration.md). Against Azure the defaults (the Storage resource
/// provider's published limits) apply.
const TWIN_LIMITS: &str = "[daemon.budget]\narm_writes_per_second = 10\narm_writes_per_hour = 36000\narm_reads_per_5min = 7500\n";

const USAGE: &str = "usage: keyflip-bench [--quick] [--runs N] [--latency-ms MS] [--idle-secs S] [--fleets 10,100,1000] [--fleet-timeout-secs S] [--daemon-plans 100,10000] [--rows daemon,plan-check,fleet,rotation] [--keyflip PATH] [--daemon-lines TOML]";

fn parse_args() -> anyhow::Result<Options> {
    let root = rotation_rows::workspace_root()
        .canonicalize()
        .context("the workspace root")?;
    let mut o = Options {
        keyflip: PathBuf::new(),
        root,
        runs: 5,
        latency_ms: 50,
        idle_secs: 60,
        fleets: vec![10, 100, 1000],
        fleet_timeout_secs: 1800,
        daemon_plans: vec![100, 10_000],
        daemon_lines: TWIN_LIMITS.to_owned(),
        rows: vec![
            "daemon".into(),
            "plan-check".into(),
            "fleet".into(),
            "rotation".into(),
        ],
    };
    let mut keyflip = None;
    let mut args = std::env::args().skip(1);
    let list = |v: Option<String>| -> anyhow::Result<Vec<usize>> {
        v.context(USAGE)?
            .split(',')
            .map(|n| n.trim().parse::<usize>().context(USAGE))
            .collect()
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => {
                o.runs = 3;
                o.fleets = vec![10, 100];
            }
            "--runs" => o.runs = args.next().context(USAGE)?.parse()?,
            "--latency-ms" => o.latency_ms = args.next().context(USAGE)?.parse()?,
            "--idle-secs" => o.idle_secs = args.next().context(USAGE)?.parse()?,
            "--fleets" => o.fleets = list(args.next())?,
            "--daemon-plans" => o.daemon_plans = list(args.next())?,
            "--fleet-timeout-secs" => o.fleet_timeout_secs = args.next().context(USAGE)?.parse()?,
            "--keyflip" => keyflip = Some(PathBuf::from(args.next().context(USAGE)?)),
            "--daemon-lines" => o.daemon_lines = args.next().context(USAGE)?.replace("\\n", "\n"),
            "--rows" => {
                o.rows = args
                    .next()
                    .context(USAGE)?
                    .split(',')
                    .map(|s| s.trim().to_owned())
                    .collect()
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    o.keyflip = match keyflip {
        Some(path) => path,
        None => build_keyflip(&o.root)?,
    };
    Ok(o)
}

/// Builds the release `keyflip` binary and returns its path (next to this binary).
fn build_keyflip(root: &std::path::Path) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("building keyflip (release) ...");
    let status = std::process::Command::new(cargo)
        .current_dir(root)
        .args(["build", "--release", "-p", "keyflip", "--bin", "keyflip"])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release -p keyflip failed");
    }
    let exe = std::env::current_exe()?;
    let path = exe
        .parent()
        .map(|d| d.join("keyflip"))
        .context("the bench binary has no directory")?;
    if !path.is_file() {
        bail!("{} was not built", path.display());
    }
    Ok(path)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or_else(String::new, |kb| {
            format!(", {:.0} GiB", kb as f64 / 1_048_576.0)
        });
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default();
    format!("{cpu}, {cores} cores{mem}; load average {load} at start")
}

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let o = parse_args()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(bench(o))
}

async fn bench(o: Options) -> anyhow::Result<()> {
    let started = Instant::now();
    let version = std::process::Command::new(&o.keyflip)
        .arg("--version")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_default();
    eprintln!("keyflip-bench: {} ({version})", o.keyflip.display());
    eprintln!("machine: {}", machine());
    let fleet_needed = o
        .fleets
        .iter()
        .scan(0usize, |acc, n| {
            *acc += n;
            Some(*acc)
        })
        .last()
        .unwrap_or(0);
    let accounts = o
        .daemon_plans
        .iter()
        .copied()
        .max()
        .unwrap_or(0)
        .max(fleet_needed);
    let twin_dir = tempfile::Builder::new()
        .prefix("keyflip-bench-twin-")
        .tempdir()?;
    let t = Instant::now();
    let twin = twin::BenchTwin::start(accounts, twin_dir.path())?;
    eprintln!(
        "twin: {} with {accounts} fleet accounts (started in {:.1} s); {} ms injected on every call",
        twin.endpoints.base_url,
        t.elapsed().as_secs_f64(),
        o.latency_ms
    );
    twin.inject_latency(o.latency_ms).await?;

    let mut rows: Vec<Row> = Vec::new();
    let want = |r: &str| o.rows.iter().any(|x| x == r);
    let report = |rows: &[Row]| {
        eprintln!("\n{}", table::render(rows));
    };
    if want("daemon") || want("plan-check") {
        for &n in &o.daemon_plans {
            eprintln!("daemon with {n} plans ...");
            let (mut daemon_rows, work) = match daemon_rows::daemon(&twin, &o, n).await {
                Ok(r) => r,
                Err(e) => {
                    rows.push(
                        table::Row::new(
                            format!("daemon, {n} plans"),
                            table::Target::None,
                            table::Unit::Millis,
                        )
                        .note(format!("FAILED: {e}")),
                    );
                    continue;
                }
            };
            if want("daemon") {
                rows.append(&mut daemon_rows);
            }
            if want("plan-check") && n == *o.daemon_plans.iter().max().unwrap_or(&n) {
                eprintln!("plan check of {n} files ...");
                rows.push(daemon_rows::plan_check(&work, &o, n).await?);
            }
            report(&rows);
        }
    }
    if want("fleet") {
        let mut first = 0;
        for &n in &o.fleets {
            eprintln!("fleet of {n} ...");
            match fleet_rows::fleet(&twin, &o, first, n).await {
                Ok(mut r) => rows.append(&mut r),
                Err(e) => rows.push(
                    table::Row::new(
                        format!("fleet of {n} accounts"),
                        table::Target::None,
                        table::Unit::Seconds,
                    )
                    .note(format!("FAILED: {e}")),
                ),
            }
            first += n;
            report(&rows);
        }
    }
    if want("rotation") {
        eprintln!("rotations of the demo account ...");
        match rotation_rows::rotations(&twin, &o).await {
            Ok(mut r) => rows.append(&mut r),
            Err(e) => rows.push(
                table::Row::new(
                    "rotations of the demo account",
                    table::Target::None,
                    table::Unit::Seconds,
                )
                .note(format!("FAILED: {e}")),
            ),
        }
    }
    println!("keyflip-bench: {version}; {}", machine());
    println!(
        "{} ms injected on every twin call; medians of {} runs unless n says otherwise; {:.0} s in all\n",
        o.latency_ms,
        o.runs,
        started.elapsed().as_secs_f64()
    );
    println!("{}", table::render(&rows));
    Ok(())
}
