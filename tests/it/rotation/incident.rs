//! Incident rotations (`--leaked`): each mode kills what leaked, disables Key Vault
//! versions that hold a leaked value, and writes an incident report.

use keyflip::key::KeyName;
use keyflip::rotation::machine::{Mode, Outcome};
use keyflip::rotation::{NoProgress, RotateRequest, RotationReport, Trigger};
use tokio_util::sync::CancellationToken;

use crate::support::engine::{
    Harness, assert_consumers_valid, consumer_keys, demo_plan_text, keys_of, plan_from,
    regenerations, versions,
};
use crate::support::twin::TestTwin;

fn leaked(mode: Mode) -> RotateRequest {
    RotateRequest {
        mode,
        grace: None,
        trigger: Trigger::Incident,
    }
}

async fn run(h: &Harness, mode: Mode) -> RotationReport {
    h.engine()
        .rotate(&h.plan, leaked(mode), &NoProgress, CancellationToken::new())
        .await
        .unwrap()
}

/// The demo world with key2 regenerated after key1, as after any earlier rotation that
/// retired it: a workspace resync, which takes the newest key, then moves to key2.
fn standby_newer() -> TestTwin {
    let text = TestTwin::demo_world_text().replacen(
        "name = \"stdatasci001\"\n",
        "name = \"stdatasci001\"\nkey1_created = \"2026-01-01T00:00:00Z\"\nkey2_created = \"2026-06-01T00:00:00Z\"\n",
        1,
    );
    TestTwin::start_from(&text)
}

fn assert_report(report: &RotationReport) -> String {
    let paths = report.incident_report.as_ref().expect("an incident report");
    let md = std::fs::read_to_string(&paths.markdown).unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&paths.json).unwrap()).unwrap();
    assert!(
        md.contains("stopped working when that key was regenerated"),
        "{md}"
    );
    assert!(md.contains("allowSharedKeyAccess=false"), "{md}");
    assert_eq!(json["rotation_id"], report.rotation_id.as_str());
    assert!(json["sas_warning"].as_str().unwrap().contains("SAS"));
    assert!(!json["timeline"].as_array().unwrap().is_empty());
    md
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaked_standby_is_regenerated_and_no_consumer_is_touched() {
    let h = Harness::start().await;
    let before = h.twin.state().await;
    let report = run(
        &h,
        Mode::Leaked {
            key: KeyName::Key2,
            revoke_first: false,
        },
    )
    .await;
    assert!(
        matches!(
            report.outcome,
            Some(Outcome::Completed {
                active: KeyName::Key1,
                ..
            })
        ),
        "{:#?}",
        report.outcome
    );
    let state = h.twin.state().await;
    let (k1, k2) = (keys_of(&before), keys_of(&state));
    assert_eq!(k2.0, k1.0, "key1 untouched");
    assert_ne!(k2.1, k1.1, "the leaked key2 is dead");
    assert_eq!(state["ml_workspaces"], before["ml_workspaces"]);
    assert_eq!(
        state["databricks_workspaces"],
        before["databricks_workspaces"]
    );
    assert_eq!(
        versions(&state, "stdatasci001-key").len(),
        1,
        "no new version"
    );
    assert_eq!(regenerations(&h.twin).await, 1);
    let md = assert_report(&report);
    assert!(md.contains("key2 (revoke)"), "{md}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaked_active_key_is_swapped_away_from_and_retired_at_once() {
    let h = Harness::with_twin(standby_newer()).await;
    let before = keys_of(&h.twin.state().await);
    let report = run(
        &h,
        Mode::Leaked {
            key: KeyName::Key1,
            revoke_first: false,
        },
    )
    .await;
    assert!(
        matches!(
            report.outcome,
            Some(Outcome::Completed {
                active: KeyName::Key2,
                ..
            })
        ),
        "{:#?}",
        report.outcome
    );
    let state = h.twin.state().await;
    let (key1, key2) = keys_of(&state);
    assert_eq!(
        key2, before.1,
        "the existing standby was used, not regenerated"
    );
    assert_ne!(key1, before.0, "the leaked key is dead");
    for (consumer, held) in assert_consumers_valid(&state, "after") {
        assert_eq!(held, key2, "{consumer}");
    }
    for secret in ["stdatasci001-key", "stdatasci001-connection-string"] {
        for (version, value, enabled) in versions(&state, secret) {
            assert_eq!(enabled, value != before.0, "{secret}/{version}");
        }
    }
    assert_eq!(regenerations(&h.twin).await, 1);
    assert!(
        report.steps.iter().all(|s| s.kind != "wait_until"),
        "no grace"
    );
    assert_report(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_first_kills_the_leaked_key_before_any_consumer_moves() {
    let mut h = Harness::with_twin(standby_newer()).await;
    // Revoking key1 first makes it the newest key, and the workspace's resync takes the
    // newest: it could never be moved to key2 this way (keyflip would park after its
    // retries, see the machine's T22). Datastores take the key keyflip gives them.
    h.plan = plan_from(&demo_plan_text(&h.twin).replace("resync = true", "resync = false"));
    let before = keys_of(&h.twin.state().await);
    let report = run(
        &h,
        Mode::Leaked {
            key: KeyName::Key1,
            revoke_first: true,
        },
    )
    .await;
    assert!(
        matches!(
            report.outcome,
            Some(Outcome::Completed {
                active: KeyName::Key2,
                ..
            })
        ),
        "{:#?}",
        report.outcome
    );
    let log = h.twin.requests().await;
    let at = |op: &str| log.iter().position(|e| e["operation"] == op).unwrap();
    assert!(at("storage.regenerateKey") < at("keyvault.set"));
    assert!(at("storage.regenerateKey") < at("ml.datastore.put"));
    let state = h.twin.state().await;
    let (key1, key2) = keys_of(&state);
    assert_ne!(key1, before.0);
    assert_eq!(key2, before.1);
    for (consumer, held) in consumer_keys(&state) {
        if consumer != "workspace" {
            assert_eq!(held, key2, "{consumer}");
        }
    }
    assert_report(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_keys_leaked_ends_with_two_new_keys_and_no_leaked_version_enabled() {
    let h = Harness::start().await;
    let before = keys_of(&h.twin.state().await);
    let report = run(&h, Mode::LeakedBoth).await;
    assert!(
        matches!(
            report.outcome,
            Some(Outcome::Completed {
                active: KeyName::Key2,
                ..
            })
        ),
        "{:#?}",
        report.outcome
    );
    let state = h.twin.state().await;
    let (key1, key2) = keys_of(&state);
    assert_ne!(key1, before.0);
    assert_ne!(key2, before.1);
    for (consumer, held) in assert_consumers_valid(&state, "after") {
        assert_eq!(held, key2, "{consumer}");
    }
    for secret in ["stdatasci001-key", "stdatasci001-connection-string"] {
        for (version, value, enabled) in versions(&state, secret) {
            if value == before.0 || value == before.1 {
                assert!(!enabled, "{secret}/{version} holds a leaked value");
            } else {
                assert!(enabled, "{secret}/{version}");
            }
        }
    }
    assert_eq!(regenerations(&h.twin).await, 2);
    let md = assert_report(&report);
    assert!(md.contains("Key Vault versions disabled"), "{md}");
    assert!(md.contains("kv-datasci/secrets/stdatasci001-key"), "{md}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_that_takes_the_leaked_key_again_is_caught_and_the_rotation_parks() {
    // Both keys as old as each other: the twin's workspace resync takes key1 on a tie,
    // which is the leaked key. Verification notices, everything goes back, and the
    // rotation parks saying the leaked key is still in use.
    let h = Harness::start().await;
    let report = run(
        &h,
        Mode::Leaked {
            key: KeyName::Key1,
            revoke_first: false,
        },
    )
    .await;
    let Some(Outcome::NeedsAttention { reason, .. }) = &report.outcome else {
        panic!("{:#?}", report.outcome)
    };
    let text = reason.to_string();
    assert!(text.contains("leaked key1 is still in use"), "{text}");
    assert!(
        text.contains("ML workspace") || text.contains("workspace:"),
        "{text}"
    );
    let state = h.twin.state().await;
    assert_consumers_valid(&state, "after the parked incident rotation");
    assert_eq!(report.exit(), keyflip::exit::Exit::NeedsAttention);
}
