//! Throughput of authorized `listKeys` over HTTPS keep-alive.
//!
//! Starts the demo twin in-process, lifts its ARM write throttle (the default budget
//! of 10 writes/s would otherwise be what is measured), takes one operator token and
//! drives `POST .../storageAccounts/stdatasci001/listKeys` from `CONCURRENCY` tasks
//! sharing one HTTP/1.1 keep-alive client. Every request is fully authenticated
//! (JWT), authorized (RBAC), logged and answered with both keys. Client and server
//! share the machine, as they do in keyflip's own benchmarks.
//!
//! Run: `cargo bench -p keyflip-twin --bench listkeys` (env `ROUNDS`, `ROUND_SECS`,
//! `CONCURRENCY` override the defaults). Prints requests per second for each round
//! and the median; exits 1 if any request failed.

// A benchmark that cannot set up or measure has nothing to report: it stops with
// a message (the workspace denies unwrap, expect and panic in production code).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use keyflip_twin::{Twin, TwinOptions, World};

const TARGET: f64 = 5_000.0;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let rounds = env_or("ROUNDS", 5);
    let round_secs = env_or("ROUND_SECS", 3);
    let concurrency = env_or("CONCURRENCY", 32);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start tokio: {e}");
            std::process::exit(1);
        }
    };
    let failed = rt.block_on(run(rounds, round_secs, concurrency));
    std::process::exit(i32::from(failed));
}

async fn run(rounds: u64, round_secs: u64, concurrency: u64) -> bool {
    let twin = Twin::start(World::demo(), TwinOptions::default())
        .await
        .expect("twin starts");
    let ep = twin.endpoints().clone();
    let cert = reqwest::Certificate::from_pem(twin.ca_pem().as_bytes()).expect("CA");
    let http = reqwest::Client::builder()
        .tls_certs_only([cert])
        .http1_only()
        .pool_max_idle_per_host(concurrency as usize)
        .build()
        .expect("client");

    let settings =
        serde_json::json!({"arm_write_burst": 1_000_000_000u64, "arm_write_refill_per_sec": 1.0e9});
    let r = http
        .patch(format!("{}/settings", ep.admin.url))
        .bearer_auth(&ep.admin.token)
        .json(&settings)
        .send()
        .await
        .expect("admin");
    assert_eq!(r.status(), 200, "lifting the throttle");
    let p = &ep.principals["keyflip-operator"];
    let form = format!(
        "client_id={}&client_secret={}&grant_type=client_credentials&scope=https%3A%2F%2Fmanagement.azure.com%2F.default",
        p.client_id, p.client_secret
    );
    let token: serde_json::Value = http
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            ep.base_url, ep.tenant_id
        ))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("token json");
    let token = Arc::new(
        token["access_token"]
            .as_str()
            .expect("access_token")
            .to_string(),
    );
    let url = Arc::new(format!(
        "{}{}/listKeys?api-version=2024-01-01",
        ep.base_url, ep.storage_accounts["stdatasci001"].id
    ));

    let ok = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (http, url, token, ok, bad, stop) = (
            http.clone(),
            url.clone(),
            token.clone(),
            ok.clone(),
            bad.clone(),
            stop.clone(),
        );
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match http
                    .post(url.as_str())
                    .bearer_auth(token.as_str())
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => match r.bytes().await {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(_) => bad.fetch_add(1, Ordering::Relaxed),
                    },
                    _ => bad.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }

    println!(
        "keyflip-twin listKeys benchmark: HTTPS (TLS 1.3, HTTP/1.1 keep-alive), {concurrency} concurrent connections, {rounds} rounds of {round_secs} s, client and twin in one process on {} CPUs",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    tokio::time::sleep(Duration::from_secs(1)).await; // warm-up: connections, caches
    let mut rates = Vec::new();
    for round in 1..=rounds {
        let (start_ok, start) = (ok.load(Ordering::Relaxed), Instant::now());
        tokio::time::sleep(Duration::from_secs(round_secs)).await;
        let done = ok.load(Ordering::Relaxed) - start_ok;
        let rate = done as f64 / start.elapsed().as_secs_f64();
        println!("  round {round}: {done} requests, {rate:.0} req/s");
        rates.push(rate);
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    rates.sort_by(f64::total_cmp);
    let median = rates.get(rates.len() / 2).copied().unwrap_or(0.0);
    let failures = bad.load(Ordering::Relaxed);
    println!(
        "median: {median:.0} authorized listKeys/s (target >= {TARGET:.0}); failed requests: {failures}"
    );
    println!(
        "{}",
        if median >= TARGET {
            "PASS: the twin is not the bottleneck"
        } else {
            "BELOW TARGET"
        }
    );
    twin.shutdown().await;
    failures > 0
}
