//! Failures before commit roll back: every consumer ends on the old key, which still
//! works, and the staged key is regenerated once more so a value that may have leaked
//! in the failure dies.

use keyflip::key::KeyName;
use keyflip::rotation::machine::{Cause, FailureKind, Outcome};
use keyflip::rotation::{NoProgress, RotateRequest};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::support::engine::{Harness, assert_consumers_valid, keys_of, regenerations, versions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_never_verifies_rolls_back_and_is_discarded() {
    let h = Harness::start().await;
    // The new key is refused on the data plane for an hour: past the 30 s budget.
    h.twin
        .settings(json!({"propagation_delay_secs": 3600.0}))
        .await;
    let before = keys_of(&h.twin.state().await);
    let report = h
        .engine()
        .rotate(
            &h.plan,
            RotateRequest::manual(),
            &NoProgress,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    let Some(Outcome::RolledBack {
        discarded, cause, ..
    }) = &report.outcome
    else {
        panic!("{:#?}", report.outcome)
    };
    assert_eq!(*discarded, Some(KeyName::Key2));
    assert!(cause.to_string().contains("verification budget"), "{cause}");
    assert!(
        matches!(cause, Cause::Failed { reason, .. } if reason.kind == FailureKind::KeyNotAccepted),
        "{cause:?}"
    );
    let state = h.twin.state().await;
    let (key1, key2) = keys_of(&state);
    assert_eq!(key1, before.0, "the old key was kept");
    assert_ne!(key2, before.1, "the staged key was discarded");
    for (consumer, held) in assert_consumers_valid(&state, "after the rollback") {
        assert_eq!(held, key1, "{consumer} is on the old key");
    }
    assert_eq!(
        regenerations(&h.twin).await,
        2,
        "stage and discard, both of key2"
    );
    assert_eq!(report.exit(), keyflip::exit::Exit::RolledBack);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_datastore_failing_to_update_rolls_every_consumer_back() {
    let h = Harness::start().await;
    h.twin
        .fault(
            json!({"operation": "ml.datastore.put", "target": "training_data", "count": 0,
            "action": {"kind": "status", "status": 400, "code": "UserError"}}),
        )
        .await;
    let before = keys_of(&h.twin.state().await);
    let report = h
        .engine()
        .rotate(
            &h.plan,
            RotateRequest::manual(),
            &NoProgress,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    let Some(Outcome::RolledBack {
        discarded, cause, ..
    }) = &report.outcome
    else {
        panic!("{:#?}", report.outcome)
    };
    assert!(cause.to_string().contains("training_data"), "{cause}");
    // A 400 from Azure: the request as made is refused, retrying will not help.
    assert!(
        matches!(cause, Cause::Failed { reason, .. } if reason.kind == FailureKind::Rejected),
        "{cause:?}"
    );
    assert_eq!(*discarded, Some(KeyName::Key2));
    let state = h.twin.state().await;
    let (key1, key2) = keys_of(&state);
    assert_eq!(key1, before.0);
    assert_ne!(key2, before.1);
    for (consumer, held) in assert_consumers_valid(&state, "after the rollback") {
        assert_eq!(held, key1, "{consumer} is back on the old key");
    }
    // Key Vault got a version with the old value; the one with the staged value is off.
    let raw = versions(&state, "stdatasci001-key");
    assert_eq!(raw.len(), 3, "{raw:?}");
    assert!(!raw[1].2, "the version holding the staged key is disabled");
    assert!(raw[2].2 && raw[2].1 == key1);
    assert!(
        h.twin
            .requests_for("ml.workspace.resyncKeys")
            .await
            .is_empty(),
        "the workspace never left the old key"
    );
    assert_eq!(regenerations(&h.twin).await, 2);
}
