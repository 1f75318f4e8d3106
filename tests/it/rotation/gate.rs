//! The usage gate end to end: the demo world's forgotten client
//! (`legacy-nightly-export`, in no plan, signing with key1 every 30 s of twin time)
//! holds the retire until the rotation parks naming it; without it the retire comes
//! after the quiet period; `rotate resume` (and `--force-retire`) finish a parked
//! swap; an incident reports who breaks; the key's SHA-256 never leaves the query.
//! keyflip's clock and the twin's move together ([`TwinClock`]), so the twin's logs
//! hold what the skipped time would have put there.

use std::sync::Arc;

use base64::Engine as _;
use keyflip::rotation::machine::{Attention, GatePurpose, Mode, Outcome, WarningKind};
use keyflip::rotation::{NoProgress, RotateRequest, Trigger};
use tokio_util::sync::CancellationToken;

use crate::support::engine::{
    Harness, TwinClock, assert_consumers_valid, gated_demo_plan_text, keys_of, plan_from,
};

const FORGOTTEN: &str = "legacy-nightly-export";

/// The gate tests run one at a time: the log-capturing test below missed the query's
/// log lines when the module's other tests ran beside it (it passes alone and with
/// `--test-threads=1`); the module takes about 4 s serially.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn gated() -> (Harness, Arc<TwinClock>) {
    let mut h = Harness::start().await;
    h.plan = plan_from(&gated_demo_plan_text(&h.twin));
    let clock = Arc::new(TwinClock::new(&h.twin));
    (h, clock)
}

fn request(mode: Mode) -> RotateRequest {
    RotateRequest {
        mode,
        grace: Some(std::time::Duration::from_secs(5)),
        trigger: Trigger::Manual,
        by: None,
    }
}

fn check_usages(report: &keyflip::rotation::RotationReport, purpose: GatePurpose) -> usize {
    report
        .steps
        .iter()
        .filter(|s| {
            matches!(&s.command, keyflip::rotation::machine::Action::CheckUsage { purpose: p, .. } if *p == purpose)
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_key_traffic_holds_the_retire_and_the_report_names_the_caller() {
    let _serial = SERIAL.lock().await;
    let (h, clock) = gated().await;
    let engine = h.engine_on(clock.clone());
    let before = keys_of(&h.twin.state().await);
    let report = engine
        .rotate(
            &h.plan,
            request(Mode::Scheduled),
            &NoProgress,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    let Some(Outcome::NeedsAttention {
        reason: reason @ Attention::UsageGateHeld { callers, .. },
        ..
    }) = &report.outcome
    else {
        panic!("not held: {:?}", report.outcome);
    };
    assert_eq!(callers.len(), 1, "{callers:?}");
    assert_eq!(callers[0].ip, "10.42.7.19", "the port is dropped");
    assert!(callers[0].user_agent.contains("nightly-export/2.3"));
    assert_eq!(callers[0].operation, "ListContainers");
    assert!(reason.to_string().contains("10.42.7.19"));
    assert!(
        check_usages(&report, GatePurpose::Retire) >= 2,
        "it held and checked again"
    );
    assert_eq!(report.exit(), keyflip::exit::Exit::NeedsAttention);
    // Held: key1 (the old key) still works and still is what it was; every consumer
    // is on the new key2.
    let state = h.twin.state().await;
    let (key1, key2) = keys_of(&state);
    assert_eq!(key1, before.0, "the old key was not retired");
    assert_ne!(key2, before.1);
    for (name, held) in assert_consumers_valid(&state, "held") {
        assert_eq!(held, key2, "{name}");
    }
    // `status` names the callers too.
    let status = engine.status(std::slice::from_ref(&h.plan)).await.unwrap();
    let last = serde_json::to_string(&status[0]).unwrap();
    assert!(last.contains("10.42.7.19"), "{last}");

    // The owner moves the client off the old key; `rotate resume` checks again and,
    // once the quiet period has passed, retires key1.
    h.twin.set_client(FORGOTTEN, false).await;
    let retire = engine
        .held_at_gate(&h.plan, false)
        .unwrap()
        .expect("the parked swap owes a retire");
    assert!(matches!(retire.mode, Mode::Retire { force: false, .. }));
    let report = engine
        .rotate(&h.plan, retire, &NoProgress, CancellationToken::new())
        .await
        .unwrap();
    assert!(
        matches!(report.outcome, Some(Outcome::Completed { .. })),
        "{:?}",
        report.outcome
    );
    let (key1_after, key2_after) = keys_of(&h.twin.state().await);
    assert_ne!(key1_after, key1, "key1 retired");
    assert_eq!(key2_after, key2, "consumers' key untouched");
    assert!(engine.held_at_gate(&h.plan, false).unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_old_key_traffic_the_retire_comes_after_the_quiet_period() {
    let _serial = SERIAL.lock().await;
    let (h, clock) = gated().await;
    h.twin.set_client(FORGOTTEN, false).await;
    let engine = h.engine_on(clock.clone());
    let report = engine
        .rotate(
            &h.plan,
            request(Mode::Scheduled),
            &NoProgress,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert!(
        matches!(report.outcome, Some(Outcome::Completed { .. })),
        "{:?}",
        report.outcome
    );
    assert_eq!(check_usages(&report, GatePurpose::Stage), 1);
    assert_eq!(check_usages(&report, GatePurpose::Retire), 1);
    let commit = report
        .steps
        .iter()
        .find(|s| s.kind == "commit")
        .and_then(|s| s.result_at)
        .unwrap();
    let retired = report
        .regenerated
        .iter()
        .find(|r| r.purpose.to_string() == "retire")
        .unwrap();
    let gate = h.plan.usage_gate.as_ref().unwrap();
    let first = chrono::TimeDelta::from_std(gate.ingestion_latency + gate.quiet_period).unwrap();
    assert!(
        retired.at >= commit + first,
        "retired at {} before commit {commit} + latency + quiet",
        retired.at
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_retire_retires_a_parked_swap_without_asking_the_logs() {
    let _serial = SERIAL.lock().await;
    let (h, clock) = gated().await;
    let engine = h.engine_on(clock.clone());
    let report = engine
        .rotate(
            &h.plan,
            request(Mode::Scheduled),
            &NoProgress,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert!(matches!(
        report.outcome,
        Some(Outcome::NeedsAttention {
            reason: Attention::UsageGateHeld { .. },
            ..
        })
    ));
    let queries = h.twin.requests_for("loganalytics.query").await.len();
    let retire = engine.held_at_gate(&h.plan, true).unwrap().unwrap();
    let report = engine
        .rotate(&h.plan, retire, &NoProgress, CancellationToken::new())
        .await
        .unwrap();
    assert!(matches!(report.outcome, Some(Outcome::Completed { .. })));
    assert_eq!(check_usages(&report, GatePurpose::Retire), 0);
    assert_eq!(
        h.twin.requests_for("loganalytics.query").await.len(),
        queries
    );
    // The forgotten client now fails: its key died.
    let state = h.twin.state().await;
    let _ = assert_consumers_valid(&state, "after force");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_rotation_refuses_to_stage_a_standby_someone_still_signs_with() {
    let _serial = SERIAL.lock().await;
    let (h, clock) = gated().await;
    let engine = h.engine_on(clock.clone());
    let _ = engine
        .rotate(
            &h.plan,
            request(Mode::Scheduled),
            &NoProgress,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    // key1, which the forgotten client uses, is now the standby: staging would kill it.
    let before = keys_of(&h.twin.state().await);
    let report = engine
        .rotate(
            &h.plan,
            request(Mode::Scheduled),
            &NoProgress,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    match &report.outcome {
        Some(Outcome::Refused { reasons }) => {
            let text = reasons[0].to_string();
            assert!(
                text.contains("10.42.7.19") && text.contains("key1"),
                "{text}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(keys_of(&h.twin.state().await), before, "nothing changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_does_not_wait_but_names_the_callers_that_break() {
    let _serial = SERIAL.lock().await;
    let (h, clock) = gated().await;
    let engine = h.engine_on(clock.clone());
    // A minute of the forgotten client's traffic, old enough to be in the logs.
    keyflip::clock::Clock::sleep_until(&*clock, clock_now(&clock) + chrono::TimeDelta::minutes(1))
        .await;
    let started = clock_now(&clock);
    let report = engine
        .rotate(
            &h.plan,
            RotateRequest {
                mode: Mode::Leaked {
                    key: keyflip::key::KeyName::Key1,
                    revoke_first: false,
                },
                grace: None,
                trigger: Trigger::Incident,
                by: None,
            },
            &NoProgress,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert!(
        matches!(report.outcome, Some(Outcome::Completed { .. })),
        "{:?}",
        report.outcome
    );
    let warning = report
        .warnings
        .iter()
        .find(|w| w.kind == WarningKind::CallersWillBreak)
        .expect("the callers are named");
    assert!(
        warning.message.contains("10.42.7.19"),
        "{}",
        warning.message
    );
    assert!(
        clock_now(&clock) - started < chrono::TimeDelta::minutes(1),
        "an incident never waits for the gate"
    );
}

fn clock_now(clock: &TwinClock) -> chrono::DateTime<chrono::Utc> {
    keyflip::clock::Clock::now(clock)
}

/// `hex(SHA-256(base64-decoded key))`, both cases.
fn hashes(key: &str) -> [String; 2] {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(key)
        .unwrap();
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
    let upper: String = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    [upper.clone(), upper.to_ascii_lowercase()]
}

#[test]
fn the_keys_sha256_never_reaches_logs_the_journal_or_reports() {
    let _serial = SERIAL.blocking_lock();
    // The twin runs on its own threads; everything keyflip logs, at TRACE and from
    // every crate, is captured on this one.
    let (logs, _guard) = crate::support::logs::capture();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (h, before, reports) = runtime.block_on(async {
        let (h, clock) = gated().await;
        let before = keys_of(&h.twin.state().await);
        let engine = h.engine_on(clock.clone());
        let held = engine
            .rotate(
                &h.plan,
                request(Mode::Scheduled),
                &NoProgress,
                CancellationToken::new(),
            )
            .await
            .unwrap();
        h.twin.set_client(FORGOTTEN, false).await;
        let retire = engine.held_at_gate(&h.plan, false).unwrap().unwrap();
        let done = engine
            .rotate(&h.plan, retire, &NoProgress, CancellationToken::new())
            .await
            .unwrap();
        let history = engine.history(None, 10).unwrap();
        (
            h,
            before,
            vec![
                serde_json::to_string(&held).unwrap(),
                serde_json::to_string(&done).unwrap(),
                serde_json::to_string(&history).unwrap(),
            ],
        )
    });
    // The query did carry the hash to Log Analytics: the test is not vacuous.
    let queries = runtime.block_on(h.twin.requests_for("loganalytics.query"));
    assert!(queries.len() >= 3, "{queries:?}");
    let logs = logs.text();
    assert!(
        logs.contains("loganalytics.query"),
        "the query is logged by name: {}",
        &logs[logs.len().saturating_sub(3000)..]
    );
    let mut places: Vec<(String, String)> = vec![("logs".into(), logs)];
    for (i, r) in reports.into_iter().enumerate() {
        places.push((format!("report {i}"), r));
    }
    for entry in std::fs::read_dir(h.state_dir()).unwrap().flatten() {
        if entry.path().is_file() {
            places.push((
                entry.path().display().to_string(),
                String::from_utf8_lossy(&std::fs::read(entry.path()).unwrap()).into_owned(),
            ));
        }
    }
    for key in [&before.0, &before.1] {
        for hash in hashes(key) {
            for (place, text) in &places {
                assert!(!text.contains(&hash), "the SHA-256 of a key is in {place}");
            }
        }
    }
}
