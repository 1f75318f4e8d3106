//! A signal ends every wait, token requests included: a CLI rotation and a daemon
//! stop at once when Entra ID never answers, with nothing changed and nothing left
//! unexplained, instead of waiting out timeouts and retries.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::service::Service;

/// Waits until the twin has seen a token request (so keyflip is inside it).
async fn wait_for_token_request(service: &Service) {
    let started = Instant::now();
    while service.twin.requests_for("entra.token").await.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "keyflip never asked for a token"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Inside the hanging request now.
    tokio::time::sleep(Duration::from_millis(300)).await;
}

fn sigterm(pid: u32) {
    // SAFETY: kill with a pid this test spawned and a valid signal.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
}

/// Waits up to `within` for the child; kills it and returns `None` if it is still
/// running.
fn wait(child: &mut std::process::Child, within: Duration) -> Option<std::process::ExitStatus> {
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if started.elapsed() > within {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn hang_token_requests(service: &Service) {
    service
        .twin
        .fault(json!({"operation": "entra.token", "count": 0, "action": {"kind": "hang"}}))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_cli_rotation_waiting_for_a_token() {
    let service = Service::install("");
    hang_token_requests(&service).await;
    let mut child = service
        .command(&["rotate", "now", "demo", "--yes"], false)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_token_request(&service).await;
    let signalled = Instant::now();
    sigterm(child.id());
    let status = wait(&mut child, Duration::from_secs(15));
    let took = signalled.elapsed();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read as _;
        let _ = e.read_to_string(&mut stderr);
    }
    let status = status.unwrap_or_else(|| panic!("still waiting 15 s after SIGTERM:\n{stderr}"));
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    // Nothing reached ARM: the token never came.
    assert!(
        service
            .twin
            .requests_for("storage.regenerateKey")
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_daemon_whose_rotation_waits_for_a_token() {
    let service = Service::install("shutdown_timeout = \"30s\"");
    let daemon = service.daemon();
    hang_token_requests(&service).await;
    // A rotation through the daemon: it belongs to the daemon, which is now stuck in
    // its first token request.
    let mut client = service
        .command(&["rotate", "now", "demo", "--yes"], false)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_token_request(&service).await;
    let started = Instant::now();
    let code = daemon.terminate(Duration::from_secs(40));
    let took = started.elapsed();
    let _ = wait(&mut client, Duration::from_secs(5));
    assert_eq!(code, Some(0), "the daemon's exit");
    assert!(
        took < Duration::from_secs(10),
        "the daemon took {took:?} to stop (shutdown_timeout is 30 s)"
    );
}

/// A client secret mistyped into keyflip.toml (`client_secret = "..."` instead of
/// `client_secret_file`) and picked up by SIGHUP: the daemon logs the rejected reload
/// at ERROR naming the line, never the value, and keeps running.
#[test]
fn a_rejected_reload_logs_the_mistake_with_its_value_hidden() {
    let service = Service::install("");
    let daemon = service.daemon();
    let value = "Zq8~mistyped-client-secret-value";
    let config = std::fs::read_to_string(service.config()).unwrap();
    let broken = config.replace(
        "client_secret_file = \"operator.secret\"",
        &format!("client_secret_file = \"operator.secret\"\nclient_secret = \"{value}\""),
    );
    assert_ne!(broken, config);
    std::fs::write(service.config(), broken).unwrap();
    // SAFETY: kill with the pid of the daemon this test spawned and a valid signal.
    unsafe { libc::kill(daemon.pid() as i32, libc::SIGHUP) };
    let started = Instant::now();
    while !daemon.log().contains("reload rejected") {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no rejected reload logged:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = daemon.log();
    assert!(
        log.contains("client_secret") && log.contains("<value hidden>"),
        "{log}"
    );
    assert!(!log.contains(value), "the value reached the log:\n{log}");
    assert!(
        !log.contains("Zq8~"),
        "part of the value reached the log:\n{log}"
    );
    assert_eq!(daemon.terminate(Duration::from_secs(20)), Some(0));
}
