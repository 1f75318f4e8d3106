//! Replicas as real `keyflip` processes sharing one twin world and one Azurite
//! container, each with its own state directory (its own machine): one is killed
//! (SIGKILL) or paused (SIGSTOP) mid-rotation, the other takes over from the shared
//! journal once the lease runs out.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keyflip::coordination::document::AccountDoc;
use keyflip::coordination::{BlobClient, blob_name};
use keyflip::rotation::machine::Action;

use super::Shared;
use crate::support::engine::{assert_consumers_valid, keys_of, regenerations, writes};

const LEASE: u32 = 15;

pub(super) fn keyflip(shared: &Shared, replica: &str, args: &[&str]) -> Command {
    let config = shared.write_config(replica, LEASE);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyflip"));
    cmd.arg("--config").arg(config).args(args);
    cmd.env_remove("KEYFLIP_FAILPOINT")
        .env_remove("RUST_LOG")
        .env_remove("KEYFLIP_PLANS_DIR")
        // Alone on its machine: no daemon socket to find.
        .env("RUNTIME_DIRECTORY", shared.dir.path())
        .stdin(Stdio::null());
    cmd
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name}");
}

/// The shared journal's document of the plan's account, read as an operator would.
async fn document(shared: &Shared, blob: &BlobClient) -> AccountDoc {
    let plan =
        crate::support::engine::plan_from(&crate::support::engine::demo_plan_text(&shared.twin));
    match blob.get(&blob_name(&plan.storage_account)).await.unwrap() {
        Some((bytes, _)) => AccountDoc::parse(&bytes).unwrap(),
        None => AccountDoc::empty(),
    }
}

/// Waits until the replica's rotation has recorded the intent of its grace wait
/// (committed: every consumer on the new key, the old key still valid).
async fn wait_for_grace(shared: &Shared, blob: &BlobClient, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let doc = document(shared, blob).await;
        if doc.unfinished().is_some_and(|r| {
            r.steps
                .iter()
                .any(|s| matches!(s.command.action, Action::WaitUntil { .. }))
        }) {
            return;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the first replica ended early"
        );
        assert!(
            Instant::now() < deadline,
            "the first replica never reached its grace period"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `rotate now` on `replica` until it is not refused as busy; returns its output
/// and when it started.
async fn rotate_until_not_busy(shared: &Shared, replica: &str) -> (std::process::Output, Instant) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let started = Instant::now();
        let mut cmd = keyflip(
            shared,
            replica,
            &["rotate", "now", "demo", "--yes", "--grace", "1s"],
        );
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .unwrap()
            .unwrap();
        if out.status.code() != Some(6) {
            return (out, started);
        }
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("lease"),
            "busy should name the lease: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(Instant::now() < deadline, "the lease never came free");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_lease_holder_is_taken_over_within_the_lease_plus_a_step() {
    let shared = Shared::start().await;
    let blob = shared.operator_blob();
    let before = keys_of(&shared.twin.state().await);
    let mut a = keyflip(
        &shared,
        "a",
        &["rotate", "now", "demo", "--yes", "--grace", "3s"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    wait_for_grace(&shared, &blob, &mut a).await;
    assert_eq!(regenerations(&shared.twin).await, 1, "staged, not retired");
    signal(&a, "KILL");
    let killed = Instant::now();
    a.wait().unwrap();

    let (out, _) = rotate_until_not_busy(&shared, "b").await;
    let failover = killed.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The lease length plus one step (and the test's own polling).
    assert!(
        failover < Duration::from_secs(u64::from(LEASE) + 10),
        "failover took {failover:?}"
    );
    println!(
        "failover after SIGKILL: {} ms (lease {LEASE} s)",
        failover.as_millis()
    );
    assert_eq!(
        regenerations(&shared.twin).await,
        2,
        "one stage, one retire"
    );
    let after = keys_of(&shared.twin.state().await);
    assert!(after.0 != before.0 && after.1 != before.1);
    assert_consumers_valid(&shared.twin.state().await, "after the takeover");
    let doc = document(&shared, &blob).await;
    assert_eq!(doc.rotations.len(), 1, "one rotation, finished by B");
    assert!(doc.unfinished().is_none());
    assert_eq!(doc.holder.unwrap().replica, "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_replica_sends_nothing_after_waking_past_its_lease() {
    let shared = Shared::start().await;
    let blob = shared.operator_blob();
    let mut a = keyflip(
        &shared,
        "a",
        &["rotate", "now", "demo", "--yes", "--grace", "20s"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    wait_for_grace(&shared, &blob, &mut a).await;
    signal(&a, "STOP");

    let (out, _) = rotate_until_not_busy(&shared, "b").await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(regenerations(&shared.twin).await, 2);
    let writes_before = writes(&shared.twin).await.len();

    signal(&a, "CONT");
    let out = tokio::task::spawn_blocking(move || a.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("lost the lease"), "{stderr}");
    assert_eq!(
        writes(&shared.twin).await.len(),
        writes_before,
        "the paused replica sent no Azure write after waking"
    );
    assert_eq!(regenerations(&shared.twin).await, 2);
    assert_consumers_valid(&shared.twin.state().await, "after the paused replica woke");
    let doc = document(&shared, &blob).await;
    assert_eq!(doc.rotations.len(), 1);
    assert!(doc.unfinished().is_none());
}
