//! Latency of concurrent answers sharing one connection (issue 9: `TCP_NODELAY`).
//!
//! keyflip sends the independent calls of a step together over one HTTP/2
//! connection. Without `TCP_NODELAY` on the twin's side, the second small write of a
//! burst waits in the kernel until the client acknowledges the first, and Linux
//! delays that acknowledgement by up to 40 ms, so a burst of answers costs ~40 ms
//! more than one answer. This bench measures exactly that: `BURST` concurrent
//! `GET /metadata/endpoints` (no token, so nothing but the wire is measured) on one
//! HTTP/2 connection, `ROUNDS` times, and prints the median and spread of a burst's
//! wall time next to a single request's. It also runs the same burst over HTTP/1.1
//! keep-alive connections, where each answer has its own connection.
//!
//! Run: `cargo bench -p keyflip-twin --bench nodelay` (env `ROUNDS`, `BURST`).
//! Exits 1 if any request failed.

// A benchmark that cannot set up or measure has nothing to report: it stops with
// a message (the workspace denies unwrap, expect and panic in production code).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use keyflip_twin::{Twin, TwinOptions, World};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let rounds = env_or("ROUNDS", 60).max(1);
    let burst = env_or("BURST", 8).max(1);
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
    let ok = rt.block_on(run(rounds, burst));
    std::process::exit(i32::from(!ok));
}

fn client(ca: &str, http2: bool) -> reqwest::Client {
    let cert = reqwest::Certificate::from_pem(ca.as_bytes()).expect("CA");
    let b = reqwest::Client::builder()
        .tls_certs_only([cert])
        .timeout(Duration::from_secs(10));
    let b = if http2 { b } else { b.http1_only() };
    b.build().expect("client")
}

/// Median, minimum and maximum in milliseconds.
fn stats(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(v[v.len() / 2]), ms(v[0]), ms(v[v.len() - 1]))
}

async fn run(rounds: usize, burst: usize) -> bool {
    let twin = Twin::start(World::demo(), TwinOptions::default())
        .await
        .expect("twin starts");
    let url = format!(
        "{}/metadata/endpoints?api-version=2022-09-01",
        twin.endpoints().base_url
    );
    let mut ok = true;
    println!("keyflip-twin: {rounds} rounds, bursts of {burst} concurrent GET /metadata/endpoints");
    println!(
        "{:<34} {:>10} {:>10} {:>10}",
        "case", "median ms", "min ms", "max ms"
    );
    for (name, http2, n) in [
        ("one request, HTTP/2", true, 1),
        ("burst on one HTTP/2 connection", true, burst),
        ("burst on HTTP/1.1 keep-alive", false, burst),
    ] {
        let http = client(twin.ca_pem(), http2);
        // Warm the connection(s) first: TLS handshakes are not what is measured.
        for _ in 0..2 {
            let warm: Vec<_> = (0..n).map(|_| http.get(&url).send()).collect();
            for r in futures::future::join_all(warm).await {
                ok &= r.is_ok_and(|r| r.status() == 200);
            }
        }
        let mut times = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let start = Instant::now();
            let calls: Vec<_> = (0..n)
                .map(|_| {
                    let http = http.clone();
                    let url = url.clone();
                    async move {
                        let r = http.get(&url).send().await?;
                        let status = r.status();
                        r.bytes().await.map(|_| status)
                    }
                })
                .collect();
            for r in futures::future::join_all(calls).await {
                ok &= r.is_ok_and(|s| s == 200);
            }
            times.push(start.elapsed());
        }
        let (median, min, max) = stats(times);
        println!("{name:<34} {median:>10.2} {min:>10.2} {max:>10.2}");
    }
    twin.shutdown().await;
    if !ok {
        eprintln!("some requests failed");
    }
    ok
}
