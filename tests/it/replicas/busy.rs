//! A daemon whose due plan's account is leased by another replica: that is not a
//! failure of the plan, so it is never parked for it (even with
//! `park_after_failures = 1`) and it rotates once the lease is free.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keyflip::coordination::{Conditions, LeaseDuration, LeaseId, blob_name};

use super::Shared;
use crate::support::engine::{plan_from, regenerations};

/// `keyflip status --output json` through the daemon's socket.
fn status(config: &std::path::Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_keyflip"))
        .arg("--config")
        .arg(config)
        .args(["status", "--output", "json"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_whose_account_another_replica_holds_is_retried_not_parked() {
    let shared = Shared::start().await;
    // Due every minute, so it is due within a minute of the daemon's start.
    let text = super::state::every_minute(&shared);
    let plan = plan_from(&text);
    // "Another replica" holds the account's lease, for as long as it likes.
    let blob = shared.operator_blob();
    blob.ensure_container().await.unwrap();
    let name = blob_name(&plan.storage_account);
    blob.put(
        &name,
        b"",
        &Conditions {
            if_none: true,
            ..Conditions::default()
        },
    )
    .await
    .unwrap();
    let other = LeaseId(uuid::Uuid::new_v4().to_string());
    blob.acquire(&name, LeaseDuration::Infinite, &other)
        .await
        .unwrap();

    let mut daemon = super::state::Daemon::start(&shared, "r");
    let path = daemon.config.clone();
    let log_path = daemon.log.clone();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // Refused as busy a few times (the first at the next minute, then every 10 s).
    let deadline = Instant::now() + Duration::from_secs(100);
    while log()
        .matches("another replica is rotating the plan's account")
        .count()
        < 2
    {
        assert!(
            daemon.child.try_wait().unwrap().is_none(),
            "the daemon exited:\n{}",
            log()
        );
        assert!(
            Instant::now() < deadline,
            "never refused as busy:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let s = tokio::task::spawn_blocking({
        let path = path.clone();
        move || status(&path)
    })
    .await
    .unwrap();
    let p = &s["plans"][0];
    assert!(p["schedule"]["parked"].is_null(), "not parked: {s}");
    assert_eq!(p["lease"]["held"], true, "{s}");
    assert_eq!(
        regenerations(&shared.twin).await,
        0,
        "nothing rotated meanwhile"
    );

    // The other replica is done: this one rotates, once.
    blob.release(&name, &other).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while regenerations(&shared.twin).await < 2 {
        assert!(Instant::now() < deadline, "never rotated:\n{}", log());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let s = loop {
        let s = tokio::task::spawn_blocking({
            let path = path.clone();
            move || status(&path)
        })
        .await
        .unwrap();
        if s["plans"][0]["last_rotation"]["outcome"] == "completed" {
            break s;
        }
        assert!(Instant::now() < deadline, "no completed rotation: {s}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let p = &s["plans"][0];
    assert!(p["schedule"]["parked"].is_null(), "{s}");
    assert_eq!(p["schedule"]["failures"], 0, "{s}");
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.child.id().to_string()])
        .status();
    let _ = daemon.child.wait();
    assert!(!log().contains("plan parked"), "{}", log());
}
