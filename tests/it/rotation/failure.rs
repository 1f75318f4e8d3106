//! Failures before commit roll back: every consumer ends on the old key, which still
//! works, and the staged key is regenerated once more so a value that may have leaked
//! in the failure dies.

use std::sync::atomic::{AtomicBool, Ordering};

use keyflip::key::KeyName;
use keyflip::rotation::machine::{Cause, FailureKind, Outcome};
use keyflip::rotation::{NoProgress, Progress, ProgressEvent, RotateRequest};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::support::engine::{Harness, assert_consumers_valid, keys_of, regenerations, versions};
use crate::support::twin::TestTwin;

/// Adds a fault rule to the twin the moment the first step of `kind` whose words
/// contain `step` starts, so the fault meets that step and none before it.
struct FaultWhenStarted<'t> {
    twin: &'t TestTwin,
    kind: &'static str,
    step: &'static str,
    rule: Value,
    armed: AtomicBool,
}

impl Progress for FaultWhenStarted<'_> {
    fn event(&self, event: &ProgressEvent) {
        if let ProgressEvent::StepStarted { kind, step, .. } = event
            && *kind == self.kind
            && step.contains(self.step)
            && !self.armed.swap(true, Ordering::SeqCst)
        {
            // Progress is called synchronously before the step is sent.
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(self.twin.fault(self.rule.clone()));
            });
        }
    }
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datastore_failing_verification_rolls_back_before_the_workspace_resyncs() {
    let h = Harness::start().await;
    // Reading the datastore back fails once, when its verification on the new key
    // starts: every bind has happened by then, the workspace's resync excepted.
    let progress = FaultWhenStarted {
        twin: &h.twin,
        kind: "verify_consumer",
        step: "training_data",
        rule: json!({"operation": "ml.datastore.listSecrets", "target": "training_data",
            "count": 1, "action": {"kind": "status", "status": 400, "code": "UserError"}}),
        armed: AtomicBool::new(false),
    };
    let before = keys_of(&h.twin.state().await);
    let report = h
        .engine()
        .rotate(
            &h.plan,
            RotateRequest::manual(),
            &progress,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert!(progress.armed.load(Ordering::SeqCst), "the fault was added");
    let Some(Outcome::RolledBack {
        discarded, cause, ..
    }) = &report.outcome
    else {
        panic!("{:#?}", report.outcome)
    };
    assert!(
        matches!(cause, Cause::Failed { action, .. } if action.name() == "verify_consumer"),
        "{cause:?}"
    );
    assert!(cause.to_string().contains("training_data"), "{cause}");
    assert_eq!(*discarded, Some(KeyName::Key2));
    let state = h.twin.state().await;
    let (key1, key2) = keys_of(&state);
    assert_eq!(key1, before.0, "the old key was kept");
    assert_ne!(key2, before.1, "the staged key was discarded");
    for (consumer, held) in assert_consumers_valid(&state, "after the rollback") {
        assert_eq!(held, key1, "{consumer} is on the old key");
    }
    let log = h.twin.requests().await;
    let datastore_writes = log
        .iter()
        .filter(|e| e["operation"] == "ml.datastore.put")
        .count();
    assert!(
        datastore_writes >= 2,
        "datastores moved and came back: {datastore_writes}"
    );
    assert!(
        !log.iter()
            .any(|e| e["operation"] == "ml.workspace.resyncKeys"),
        "the workspace was never resynced, so it never left the old key"
    );
    assert_eq!(report.exit(), keyflip::exit::Exit::RolledBack);
}
