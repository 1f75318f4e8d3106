//! Crash at every durable step: count the journal writes of a full run, then for each
//! one start afresh, crash right after that write (the engine stops dead, dropping
//! everything in flight), check the twin's state at the crash, resume with a fresh
//! engine on the same state directory, and check the end state.
//!
//! Invariants checked from the twin's admin state, at the crash and at the end: Key
//! Vault's latest versions are enabled and every consumer holds one of the account's
//! current keys (so nothing is down); `regenerateKey` succeeded exactly as often as
//! the rotation means to (twice), and the keys that changed are the ones it means to
//! change, so no key was regenerated twice; the rotation completes or rolls back.
//! Every consumer kind is in the demo plan, so each is crashed around: a rollback
//! early in the binds (a datastore refuses its key) and one late, among the binds that
//! go last (a second site refuses its settings write after the Function app's setting
//! was written, so that is written back too).

use futures::StreamExt as _;
use keyflip::failpoint::CrashAt;
use keyflip::rotation::machine::Outcome;
use keyflip::rotation::{EngineError, NoProgress, RotateRequest};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::support::engine::{
    Harness, assert_consumers_valid, demo_plan_text, keys_of, plan_from, regenerations,
};
use crate::support::twin::{FUNCTION_APP, TestTwin};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// A full swap: both keys new, consumers on the staged key2.
    Completed,
    /// A rollback: key1 kept, key2 staged and discarded, consumers on key1.
    RolledBack,
    /// The same, from a failure among the binds that go last (another site's settings
    /// write), after the Function app's setting was moved: it is moved back, a second
    /// restart.
    RolledBackLate,
}

/// A second site whose storage setting the late rollback case fails to write.
const REPORT_APP: &str = "app-datasci-report";

async fn setup(expect: Expect) -> Harness {
    let h = match expect {
        Expect::RolledBackLate => {
            let site = format!(
                "/subscriptions/3c9e5b1d-2a4f-4e6b-9c8d-0f1e2d3c4b5a/resourceGroups/rg-datascience/providers/Microsoft.Web/sites/{REPORT_APP}"
            );
            let twin = TestTwin::start_with(&format!(
                "[[web_app]]\nname = \"{REPORT_APP}\"\nresource_group = \"rg-datascience\"\n\n[[web_app.app_setting]]\nname = \"STORAGE_KEY\"\nvalue_from = {{ account = \"stdatasci001\", key = \"key1\", format = \"raw-key\" }}\n\n[[role_assignment]]\nprincipal = \"keyflip-operator\"\nrole = \"Website Contributor\"\nscope = \"{site}\"\n"
            ));
            let mut h = Harness::with_twin(twin).await;
            h.plan = plan_from(&format!(
                "{}\n[[app_service]]\nsite = \"{site}\"\napp_settings = [\"STORAGE_KEY\"]\n",
                demo_plan_text(&h.twin)
            ));
            h
        }
        _ => Harness::start().await,
    };
    match expect {
        Expect::Completed => {}
        Expect::RolledBack => {
            h.twin
                .fault(
                    json!({"operation": "ml.datastore.put", "target": "training_data", "count": 0,
                    "action": {"kind": "status", "status": 400, "code": "UserError"}}),
                )
                .await;
        }
        Expect::RolledBackLate => {
            h.twin
                .fault(json!({"operation": "web.appSettings.put", "target": format!("/sites/{REPORT_APP}/"),
                    "count": 0, "action": {"kind": "status", "status": 409, "code": "Conflict"}}))
                .await;
        }
    }
    h
}

async fn check_end(
    h: &Harness,
    before: &(String, String),
    outcome: &Outcome,
    expect: Expect,
    case: &str,
) {
    let state = h.twin.state().await;
    let held = assert_consumers_valid(&state, &format!("{case}, at the end"));
    let (key1, key2) = keys_of(&state);
    assert_eq!(
        regenerations(&h.twin).await,
        2,
        "{case}: regenerateKey succeeded twice"
    );
    match expect {
        Expect::Completed => {
            assert!(
                matches!(outcome, Outcome::Completed { .. }),
                "{case}: {outcome}"
            );
            assert_ne!(key1, before.0, "{case}: key1 retired");
            assert_ne!(key2, before.1, "{case}: key2 staged");
            for (consumer, k) in held {
                assert_eq!(k, key2, "{case}: {consumer} on the new key");
            }
        }
        Expect::RolledBack | Expect::RolledBackLate => {
            assert!(
                matches!(outcome, Outcome::RolledBack { .. }),
                "{case}: {outcome}"
            );
            assert_eq!(key1, before.0, "{case}: key1 kept");
            assert_ne!(key2, before.1, "{case}: key2 discarded");
            for (consumer, k) in held {
                assert_eq!(k, key1, "{case}: {consumer} back on the old key");
            }
        }
    }
}

/// Crashes after durable write `k` and resumes.
async fn crash_and_resume(k: usize, expect: Expect) -> String {
    let h = setup(expect).await;
    let before = keys_of(&h.twin.state().await);
    let engine = h.engine();
    engine.crash_at(CrashAt::Write(k));
    let err = engine
        .rotate(
            &h.plan,
            RotateRequest::manual(),
            &NoProgress,
            CancellationToken::new(),
        )
        .await
        .expect_err("the run crashes");
    let EngineError::Crashed { at } = err else {
        panic!("write {k}: expected a crash, got {err}")
    };
    drop(engine);
    let case = format!("{expect:?} crash after write {k} ({at})");
    assert_consumers_valid(&h.twin.state().await, &format!("{case}, at the crash"));

    let reports = h
        .engine()
        .resume(
            std::slice::from_ref(&h.plan),
            &NoProgress,
            CancellationToken::new(),
        )
        .await
        .unwrap_or_else(|e| panic!("{case}: resume failed: {e}"));
    let outcome = match reports.as_slice() {
        [report] => report.outcome.clone().expect("finished"),
        // Crashed after the last write: nothing left to resume.
        [] => h.engine().history(None, 1).unwrap()[0]
            .outcome
            .clone()
            .unwrap_or_else(|| panic!("{case}: unfinished and not resumed")),
        more => panic!("{case}: {} reports", more.len()),
    };
    check_end(&h, &before, &outcome, expect, &case).await;
    assert!(h.engine().unfinished().unwrap().is_empty(), "{case}");
    at
}

async fn every_durable_step(expect: Expect) {
    let h = setup(expect).await;
    let engine = h.engine();
    let before = keys_of(&h.twin.state().await);
    let report = engine
        .rotate(
            &h.plan,
            RotateRequest::manual(),
            &NoProgress,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    check_end(
        &h,
        &before,
        report.outcome.as_ref().unwrap(),
        expect,
        "uninterrupted",
    )
    .await;
    if expect == Expect::RolledBackLate {
        let app = &h.twin.state().await["web_apps"][FUNCTION_APP];
        assert_eq!(app["restarts"], 2, "written forward and back: {app:#}");
    }
    let writes = engine.durable_writes();
    assert!(writes.len() > 20, "{writes:?}");
    assert_eq!(writes.first().map(String::as_str), Some("begin"));
    assert_eq!(writes.last().map(String::as_str), Some("finish"));
    drop((engine, h));

    let crashed: Vec<String> = futures::stream::iter(1..=writes.len())
        .map(|k| crash_and_resume(k, expect))
        .buffer_unordered(6)
        .collect()
        .await;
    // Every kind of write was crashed at, intents and results alike.
    for kind in [
        "begin",
        "intent:regenerate",
        "result:regenerated",
        "intent:bind",
        "result:bound",
        "intent:wait_until",
        "finish",
    ] {
        if expect != Expect::Completed && kind == "intent:wait_until" {
            continue;
        }
        assert!(
            crashed.iter().any(|w| w.starts_with(kind)),
            "{kind} not covered: {crashed:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_survives_a_crash_at_every_durable_step() {
    every_durable_step(Expect::Completed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_survives_a_crash_at_every_durable_step() {
    every_durable_step(Expect::RolledBack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_rollback_survives_a_crash_at_every_durable_step() {
    every_durable_step(Expect::RolledBackLate).await;
}
