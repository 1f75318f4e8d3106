//! One truth across replicas: `keyflip history` and `keyflip status` read the shared
//! journal in coordination storage, so the replica that drove a rotation, another
//! replica and a CLI on a machine with an empty state directory print the same
//! rotations and the same lease holder; and the replica's lease metrics pass
//! `promtool check metrics`.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyflip::clock::SystemClock;
use keyflip::journal::Journal;
use keyflip::rotation::{Engine, NoProgress, RotateRequest};
use keyflip::secret::Fingerprinter;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::processes::keyflip;
use crate::support::engine::{engine_options, plan_from};
use crate::support::fast_options;

pub(super) fn engine(shared: &Shared, replica: &str) -> Engine {
    let config = shared.config(replica, 15);
    let fingerprinter =
        Arc::new(Fingerprinter::load_or_create(&config.state_dir.join("fingerprint.key")).unwrap());
    let azure = keyflip::azure::Azure::with_options(
        &config,
        fingerprinter.clone(),
        fast_options(),
        &|_: &str| None,
    )
    .unwrap();
    let journal = Journal::open(&config.state_dir.join("journal.db"), &fingerprinter).unwrap();
    Engine::with_options(
        &config,
        azure,
        journal,
        fingerprinter,
        Arc::new(SystemClock),
        engine_options(),
    )
}

/// `keyflip <args> --output json` as `replica`, parsed; its exit code must be 0.
pub(super) async fn json(shared: &Shared, replica: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    let mut cmd = keyflip(shared, replica, &all);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "keyflip {args:?} as {replica}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The parts of a plan's status that come from the journal and the lease.
fn journal_part(status: &Value) -> Value {
    let plan = &status["plans"][0];
    serde_json::json!({
        "last_rotation": plan["last_rotation"],
        "unfinished": plan["unfinished"],
        "lease": plan["lease"],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_status_are_the_same_on_every_replica_and_a_fresh_cli() {
    let shared = Shared::start().await;
    let plan = plan_from(&crate::support::engine::demo_plan_text(&shared.twin));
    let a = engine(&shared, "a");
    // Replica A drives a rotation; while it waits out its grace it holds the lease.
    let (engine_a, plan_a) = (a.clone(), plan.clone());
    let task = tokio::spawn(async move {
        engine_a
            .rotate(
                &plan_a,
                RotateRequest {
                    grace: Some(Duration::from_secs(6)),
                    ..RotateRequest::manual()
                },
                &NoProgress,
                CancellationToken::new(),
            )
            .await
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let during = loop {
        // "fresh" never ran anything: no journal in its state directory.
        let status = json(&shared, "fresh", &["status"]).await;
        if status["plans"][0]["unfinished"].is_string() {
            break status;
        }
        assert!(Instant::now() < deadline, "A's rotation never showed up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let lease = &during["plans"][0]["lease"];
    assert_eq!(lease["held"], true, "{during}");
    assert_eq!(lease["replica"], "a", "{during}");
    assert!(lease["since"].is_string(), "{during}");
    let running = json(&shared, "b", &["status"]).await;
    assert_eq!(journal_part(&running), journal_part(&during));
    let text = {
        let mut cmd = keyflip(&shared, "fresh", &["status", "--plan", "demo"]);
        let out = cmd.output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(text.contains("held by a since"), "{text}");

    let report = task.await.unwrap().unwrap();
    // After: the same history and the same status on A (its own journal has the
    // rotation), B and the fresh CLI (theirs do not).
    let history_a = json(&shared, "a", &["history"]).await;
    let history_b = json(&shared, "b", &["history"]).await;
    let history_fresh = json(&shared, "fresh", &["history", "demo"]).await;
    assert_eq!(history_a, history_b);
    assert_eq!(history_a, history_fresh);
    let rotations = history_a["rotations"].as_array().unwrap();
    assert_eq!(rotations.len(), 1, "{history_a}");
    assert_eq!(rotations[0]["rotation_id"], report.rotation_id.as_str());
    assert!(
        rotations[0]["steps"]
            .as_array()
            .is_some_and(|s| !s.is_empty()),
        "every step is in the shared journal: {history_a}"
    );
    let status_a = json(&shared, "a", &["status"]).await;
    let status_fresh = json(&shared, "fresh", &["status"]).await;
    assert_eq!(journal_part(&status_a), journal_part(&status_fresh));
    let plan_status = &status_fresh["plans"][0];
    assert_eq!(
        plan_status["last_rotation"]["rotation_id"],
        report.rotation_id.as_str()
    );
    assert_eq!(plan_status["last_rotation"]["outcome"], "completed");
    assert!(plan_status["unfinished"].is_null());
    assert_eq!(plan_status["lease"]["held"], false, "released at the end");
    assert_eq!(plan_status["lease"]["replica"], "a");
    assert!(
        !shared.state_dir("fresh").join("journal.db").exists(),
        "reads create no journal"
    );

    // The lease counters of the replica that drove it, as /metrics exports them.
    let coordinator = a.coordination().unwrap();
    let mut text = String::new();
    keyflip::daemon::metrics::coordination(&mut text, coordinator);
    let sample = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name}:\n{text}"))
    };
    assert_eq!(sample("keyflip_coordination_leases_held"), 0.0);
    assert_eq!(sample("keyflip_coordination_lease_acquisitions_total"), 1.0);
    assert_eq!(sample("keyflip_coordination_lease_losses_total"), 0.0);
    assert!(sample("keyflip_coordination_journal_writes_total") > 5.0);
    assert!(
        sample("keyflip_coordination_lease_renewal_seconds_count") >= 1.0,
        "a 6 s grace under a 15 s lease renews at least once:\n{text}"
    );
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool (Debian's prometheus package) is not installed ({e}); run .ci/run")
        });
    use std::io::Write as _;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
