//! Single rotations of the demo world's account (every consumer kind: two Key Vault
//! secrets, an ML workspace with its account-key datastores, a Databricks secret),
//! each run by the `keyflip` binary standalone, as an operator at 3 a.m. would:
//!
//! - `--leaked <active key>`: time from the command's start to the leaked key's
//!   regeneration, against the critical path (the round trips that must happen one
//!   after another, plus the workspace resync's wait);
//! - `--leaked <active key> --revoke-first`: sequential round trips up to and
//!   including the revoke;
//! - a plain rotation with no grace: wall time, calls and ARM writes;
//! - the same rotation scripted the way Microsoft's documentation describes, with
//!   Microsoft's Python SDKs, one call after another, on the same twin.
//!
//! Sequential round trips are counted from the twin's request log: answers that
//! arrive within half the injected latency of each other belong to one wave of
//! concurrent calls.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use chrono::{DateTime, Utc};

use crate::Options;
use crate::keyflip::Workdir;
use crate::table::{Row, Target, Unit, median};
use crate::twin::{BenchTwin, Logged, OPERATOR};

/// Sequential round trips the leaked-active route needs (docs/performance.md lists
/// them): token; the observation wave; what each consumer holds; stage the standby;
/// verify it; bind every consumer; verify every consumer; retire the leaked key. The
/// workspace resync's wait comes on top.
const LEAKED_ACTIVE_CRITICAL: f64 = 8.0;

/// The same for the demo plan as it now is (ten consumers, docs/performance.md lists
/// the waves), keeping every ordering keyflip's safety rules impose: what a
/// discovered datastore holds after the list that found it; the App Service setting
/// written after every other bind answered (an app restart), right after the second
/// listing of its lost-update guard (the first goes beside the other binds, the
/// listing after the PUT is the verification's); the workspace resync only after
/// every other consumer is verified, and its own verification before the retire.
const LEAKED_ACTIVE_SAFE_CRITICAL: f64 = 12.0;

/// With `KEYFLIP_BENCH_TRACE` set, prints each call of `calls` with its wave number to
/// stderr: the request log is what a critical path is read from.
fn trace(label: &str, calls: &[&Logged], gap: chrono::TimeDelta) {
    if std::env::var_os("KEYFLIP_BENCH_TRACE").is_none() {
        return;
    }
    eprintln!("-- {label}");
    let mut n = 0;
    let mut last: Option<DateTime<Utc>> = None;
    let first = calls.first().map(|c| c.at);
    for c in calls {
        if last.is_none_or(|l| c.at - l > gap) {
            n += 1;
        }
        last = Some(c.at);
        let ms = first.map_or(0, |f| (c.at - f).num_milliseconds());
        eprintln!(
            "  wave {n:>2} +{ms:>5} ms {} {} {}",
            c.operation,
            c.method,
            c.status.unwrap_or_default()
        );
    }
}

/// Waves of answers in `calls` (sorted by time): a gap of more than `gap` starts one.
fn waves(calls: &[&Logged], gap: chrono::TimeDelta) -> usize {
    let mut n = 0;
    let mut last: Option<DateTime<Utc>> = None;
    for c in calls {
        if last.is_none_or(|l| c.at - l > gap) {
            n += 1;
        }
        last = Some(c.at);
    }
    n
}

/// The median round trip of one ARM read with the injected latency, measured with
/// an HTTPS client of the bench's own (token first, then timed GETs of the account).
pub async fn round_trip(twin: &BenchTwin) -> anyhow::Result<f64> {
    let e = &twin.endpoints;
    let ca = std::fs::read(twin.dir.join("ca.pem"))?;
    let client = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&ca)?)
        .build()?;
    let principal = &e.principals[OPERATOR];
    let token: serde_json::Value = client
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            e.authority_host, e.tenant_id
        ))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("grant_type", "client_credentials"),
            ("client_id", principal.client_id.as_str()),
            ("client_secret", principal.client_secret.as_str()),
            ("scope", "https://management.azure.com/.default"),
        ]))
        .send()
        .await?
        .json()
        .await?;
    let token = token["access_token"]
        .as_str()
        .ok_or_else(|| anyhow!("no token: {token}"))?
        .to_owned();
    let url = format!(
        "{}{}?api-version=2024-01-01",
        e.arm_url.trim_end_matches('/'),
        e.storage_accounts["stdatasci001"].id
    );
    let mut times = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        let r = client.get(&url).bearer_auth(&token).send().await?;
        if !r.status().is_success() {
            bail!("GET the demo account: {}", r.status());
        }
        let _ = r.bytes().await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    median(&times).ok_or_else(|| anyhow!("no samples"))
}

/// `application/x-www-form-urlencoded` text.
fn form(pairs: &[(&str, &str)]) -> String {
    let encode = |v: &str| {
        v.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

struct Run {
    took: Duration,
    started_twin: DateTime<Utc>,
    calls: Vec<Logged>,
    code: i32,
}

async fn run_keyflip(twin: &BenchTwin, work: &Workdir, args: &[&str]) -> anyhow::Result<Run> {
    let seq = twin.last_seq().await?;
    let offset = twin.clock_offset().await?;
    let started_twin = Utc::now() + offset;
    let (took, code, out, err) = work.run(args).await?;
    if code != 0 {
        // A refusal or a park is in the JSON report on stdout, not on stderr.
        let outcome = serde_json::from_str::<serde_json::Value>(&out)
            .ok()
            .map(|report| report["outcome"].to_string())
            .unwrap_or_default();
        eprintln!(
            "keyflip {} exited {code}: {} {outcome}",
            args.join(" "),
            err.lines().last().unwrap_or_default()
        );
    }
    let calls = twin.requests_since(seq).await?;
    Ok(Run {
        took,
        started_twin,
        calls,
        code,
    })
}

fn arm_writes(calls: &[Logged]) -> u64 {
    calls.iter().filter(|c| c.is_arm_write()).count() as u64
}

fn demo_regens(calls: &[Logged]) -> Vec<&Logged> {
    calls
        .iter()
        .filter(|c| {
            c.operation == "storage.regenerateKey"
                && c.ok()
                && c.storage_account().as_deref() == Some("stdatasci001")
        })
        .collect()
}

pub async fn rotations(twin: &BenchTwin, o: &Options) -> anyhow::Result<Vec<Row>> {
    let work = Workdir::new(twin, &o.keyflip, &o.daemon_lines)?;
    work.write_demo_plan(twin)?;
    let rtt = round_trip(twin).await?;
    let settings = twin.settings().await?;
    let resync = settings["resync_duration_secs"].as_f64().unwrap_or(1.0) * 1000.0;
    let critical = LEAKED_ACTIVE_CRITICAL * rtt + resync;
    let safe_critical = LEAKED_ACTIVE_SAFE_CRITICAL * rtt + resync;
    let mut safe_ratio = Vec::new();
    let gap = chrono::TimeDelta::milliseconds((o.latency_ms / 2).max(5) as i64);

    // Leaked active key.
    let mut to_regen = Vec::new();
    let mut ratio = Vec::new();
    let mut leaked_waves = Vec::new();
    let mut leaked_calls = (0, 0);
    for _ in 0..o.runs {
        let active = twin.demo_active_key().await?;
        let run = run_keyflip(
            twin,
            &work,
            &[
                "rotate", "now", "demo", "--leaked", active, "--yes", "--output", "json",
            ],
        )
        .await?;
        let regens = demo_regens(&run.calls);
        let Some(last) = regens.last() else {
            bail!("--leaked {active} regenerated nothing (exit {})", run.code);
        };
        let ms = (last.at - run.started_twin).num_milliseconds() as f64;
        to_regen.push(ms);
        ratio.push(ms / critical);
        safe_ratio.push(ms / safe_critical);
        let before: Vec<&Logged> = run.calls.iter().filter(|c| c.at <= last.at).collect();
        trace(
            "--leaked, up to the leaked key's regeneration",
            &before,
            gap,
        );
        leaked_waves.push(waves(&before, gap) as f64);
        leaked_calls = (run.calls.len() as u64, arm_writes(&run.calls));
    }

    // Revoke first.
    let mut revoke_waves = Vec::new();
    let mut revoke_ms = Vec::new();
    let mut revoke_calls = (0, 0);
    for _ in 0..o.runs {
        let active = twin.demo_active_key().await?;
        let run = run_keyflip(
            twin,
            &work,
            &[
                "rotate",
                "now",
                "demo",
                "--leaked",
                active,
                "--revoke-first",
                "--yes",
                "--output",
                "json",
            ],
        )
        .await?;
        let regens = demo_regens(&run.calls);
        let Some(revoke) = regens.first() else {
            bail!("--revoke-first regenerated nothing (exit {})", run.code);
        };
        let before: Vec<&Logged> = run.calls.iter().filter(|c| c.at <= revoke.at).collect();
        trace("--revoke-first, up to the revoke", &before, gap);
        revoke_waves.push(waves(&before, gap) as f64);
        revoke_ms.push((revoke.at - run.started_twin).num_milliseconds() as f64);
        revoke_calls = (before.len() as u64, arm_writes(&run.calls));
    }

    // A plain rotation, no grace (and no usage gate: see `write_demo_plan_ungated`).
    work.write_demo_plan_ungated(twin)?;
    let mut plain = Vec::new();
    let mut plain_writes = Vec::new();
    let mut plain_calls = 0;
    for _ in 0..o.runs {
        let run = run_keyflip(
            twin,
            &work,
            &[
                "rotate", "now", "demo", "--yes", "--grace", "0s", "--output", "json",
            ],
        )
        .await?;
        if run.code != 0 {
            bail!("the demo rotation failed (exit {})", run.code);
        }
        let all: Vec<&Logged> = run.calls.iter().collect();
        trace("demo rotation, every call", &all, gap);
        plain.push(run.took.as_secs_f64());
        plain_writes.push(arm_writes(&run.calls) as f64);
        plain_calls = run.calls.len() as u64;
    }

    // Microsoft's runbook, sequential, same twin.
    let (ms_times, ms_writes, ms_calls) = msdocs(twin, o).await?;

    let med = |v: &[f64]| median(v).unwrap_or(f64::NAN);
    Ok(vec![
        Row::new(
            "--leaked active key: time to its regeneration",
            Target::None,
            Unit::Millis,
        )
        .samples(to_regen)
        .calls(leaked_calls.0, leaked_calls.1)
        .note(format!(
            "{:.0} sequential round trips (median); critical path {critical:.0} ms = {LEAKED_ACTIVE_CRITICAL} × {rtt:.0} ms + resync {resync:.0} ms",
            med(&leaked_waves)
        )),
        Row::new(
            "--leaked active key: time to regeneration ÷ critical path",
            Target::AtMost(1.25),
            Unit::Ratio,
        )
        .samples(ratio),
        Row::new(
            "--leaked active key: time to regeneration ÷ the demo plan's safe critical path",
            Target::None,
            Unit::Ratio,
        )
        .samples(safe_ratio)
        .note(format!(
            "{safe_critical:.0} ms = {LEAKED_ACTIVE_SAFE_CRITICAL} × {rtt:.0} ms + resync {resync:.0} ms"
        )),
        Row::new(
            "--revoke-first: sequential round trips up to the revoke",
            Target::AtMost(3.0),
            Unit::Count,
        )
        .samples(revoke_waves)
        .calls(revoke_calls.0, revoke_calls.1)
        .note(format!("revoke after {:.0} ms (median)", med(&revoke_ms))),
        Row::new("--revoke-first: time to the revoke", Target::None, Unit::Millis)
            .samples(revoke_ms.iter().copied())
            .note(format!("{rtt:.0} ms per round trip")),
        Row::new("demo rotation (no grace): ARM writes", Target::None, Unit::Count)
            .samples(plain_writes.iter().copied())
            .note(format!("Microsoft's runbook: {:.0}", med(&ms_writes))),
        Row::new("demo rotation (no grace): wall time", Target::None, Unit::Seconds)
            .samples(plain.iter().copied())
            .calls(plain_calls, med(&plain_writes) as u64)
            .note("every consumer verified on the new key"),
        Row::new(
            "same rotation, Microsoft's documented runbook (Python SDKs, sequential)",
            Target::None,
            Unit::Seconds,
        )
        .samples(ms_times.iter().copied())
        .calls(ms_calls, med(&ms_writes) as u64)
        .note("no verification; timed from its first call, interpreter start excluded"),
        Row::new(
            "keyflip ÷ runbook: wall time",
            Target::AtMost(1.0),
            Unit::Ratio,
        )
        .sample(med(&plain) / med(&ms_times)),
        Row::new(
            "keyflip ÷ runbook: ARM writes",
            Target::AtMost(1.0),
            Unit::Ratio,
        )
        .sample(med(&plain_writes) / med(&ms_writes)),
    ])
}

/// Runs `bench/msdocs_rotation.py` `o.runs` times: (seconds, ARM writes, calls).
async fn msdocs(twin: &BenchTwin, o: &Options) -> anyhow::Result<(Vec<f64>, Vec<f64>, u64)> {
    let python = o.root.join(".tools/venv/bin/python");
    if !python.is_file() {
        bail!(
            "{} is missing: run .ci/setup (it installs Microsoft's Python SDKs)",
            python.display()
        );
    }
    let script = o.root.join("bench/msdocs_rotation.py");
    let offline = o.root.join("twin/conformance/offline");
    let log = tempfile::NamedTempFile::new()?;
    let mut times = Vec::new();
    let mut writes = Vec::new();
    let mut calls = 0;
    for _ in 0..o.runs {
        let seq = twin.last_seq().await?;
        let out = tokio::process::Command::new(&python)
            .arg(&script)
            .arg(twin.dir.join("endpoints.json"))
            .env("REQUESTS_CA_BUNDLE", twin.dir.join("ca.pem"))
            .env("PYTHONPATH", &offline)
            .env("KEYFLIP_OFFLINE_LOG", log.path())
            .output()
            .await
            .with_context(|| format!("running {}", script.display()))?;
        if !out.status.success() {
            bail!(
                "the runbook failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "the runbook's report: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })?;
        times.push(report["seconds"].as_f64().unwrap_or(f64::NAN));
        let c = twin.requests_since(seq).await?;
        writes.push(arm_writes(&c) as f64);
        calls = c.len() as u64;
    }
    let refused = std::fs::read_to_string(log.path()).unwrap_or_default();
    if !refused.trim().is_empty() {
        bail!("the runbook tried to leave the machine: {refused}");
    }
    Ok((times, writes, calls))
}

/// Where the workspace root is, from this crate's manifest directory.
pub fn workspace_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}
