//! The scheduled safe swap on the demo world, its dry run, and what stops it before
//! anything changes: split consumers, a principal that may only read, a second run.

use keyflip::key::KeyName;
use keyflip::rotation::machine::{Holding, Outcome, RefusalReason};
use keyflip::rotation::{EngineError, NoProgress, RotateRequest};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::support::engine::{
    Harness, assert_consumers_valid, consumer_keys, keys_of, regenerations, writes,
};
use crate::support::twin::{ACCOUNT, FUNCTION_APP, LINKED_SERVICE, READER, VAULT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_swap_moves_every_consumer_and_retires_the_old_key() {
    let h = Harness::start().await;
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
    assert!(
        matches!(
            &report.outcome,
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
    assert_ne!(key2, before.1, "the standby was staged");
    assert_ne!(key1, before.0, "the old key was retired");
    for (consumer, held) in consumer_keys(&state) {
        assert_eq!(held, key2, "{consumer} is on the new key");
    }
    let latest = state["key_vaults"][VAULT]["secrets"]["stdatasci001-key"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(latest["tags"]["keyflip-key"], "key2");
    assert_eq!(latest["tags"]["CredentialId"], "key2");
    assert_eq!(
        latest["tags"]["keyflip-rotation"],
        report.rotation_id.as_str()
    );
    assert_eq!(latest["contentType"], "text/plain");
    let cs = state["key_vaults"][VAULT]["secrets"]["stdatasci001-connection-string"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        cs.contains("AccountName=stdatasci001;"),
        "connection string shape"
    );
    assert!(
        cs.contains(";BlobEndpoint=https://127.0.0.1:"),
        "a twin endpoint is not standard"
    );
    assert_eq!(regenerations(&h.twin).await, 2);
    assert_eq!(report.consumers.len(), 10, "{:#?}", report.consumers);
    // The Function app restarted once, for its one setting keyflip wrote; the rest
    // of its settings (its Key Vault reference too) are as they were.
    let app = &state["web_apps"][FUNCTION_APP];
    assert_eq!(app["restarts"], 1, "{app:#}");
    assert!(
        app["appSettings"]["DATASCI_STORAGE_CONNECTION"]
            .as_str()
            .unwrap()
            .starts_with("@Microsoft.KeyVault(")
    );
    assert_eq!(
        app["appSettings"]["FUNCTIONS_WORKER_RUNTIME"],
        "dotnet-isolated"
    );
    assert_eq!(
        app["slots"]["staging"]["restarts"], 0,
        "the staging slot is not in the plan"
    );
    // Data Factory: what keyflip wrote is known from the etag it journaled.
    let inventory = h.engine().observe(&h.plan).await.unwrap();
    let ls = inventory
        .consumers
        .iter()
        .find(|c| c.consumer.id.to_string().ends_with(LINKED_SERVICE))
        .expect("the linked service");
    assert_eq!(ls.holding, Holding::Key(KeyName::Key2), "{ls:?}");

    // A second rotation goes back to key1, now knowing what Databricks holds.
    h.sync_twin_clock().await;
    let again = h
        .engine()
        .rotate(
            &h.plan,
            RotateRequest::manual(),
            &NoProgress,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert!(
        matches!(
            &again.outcome,
            Some(Outcome::Completed {
                active: KeyName::Key1,
                ..
            })
        ),
        "{:#?}",
        again.outcome
    );
    assert!(again.warnings.is_empty(), "{:?}", again.warnings);
    let history = h.engine().history(Some("demo"), 10).unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].rotation_id, again.rotation_id, "newest first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_lists_every_call_and_changes_nothing() {
    let h = Harness::start().await;
    let before = h.twin.state().await;
    let dry = h
        .engine()
        .dry_run(&h.plan, RotateRequest::manual())
        .await
        .unwrap();
    assert_eq!(h.twin.state().await, before, "nothing changed in Azure");
    assert!(writes(&h.twin).await.is_empty(), "only reads were sent");
    assert!(
        h.engine().history(None, 10).unwrap().is_empty(),
        "nothing journaled"
    );
    let decision = dry.decision.expect("a decision");
    assert_eq!(
        (decision.active, decision.standby),
        (KeyName::Key1, KeyName::Key2)
    );
    let steps: Vec<&str> = dry.steps.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(steps[1], "regenerate key2 (stage)");
    assert_eq!(steps.iter().filter(|s| s.starts_with("bind ")).count(), 10);
    assert!(steps.contains(&"regenerate key1 (retire)"), "{steps:#?}");
    let calls: Vec<String> = dry
        .steps
        .iter()
        .flat_map(|s| &s.calls)
        .map(ToString::to_string)
        .collect();
    assert!(
        calls
            .iter()
            .any(|c| c.contains("/regenerateKey ({\"keyName\":\"key2\"})"))
    );
    // The summary's count: what the subscription's ARM write budget spends.
    let arm_writes = dry
        .steps
        .iter()
        .flat_map(|s| &s.calls)
        .filter(|c| c.is_arm_write())
        .count();
    assert!(arm_writes > 10, "{calls:#?}");
    assert_eq!(dry.grace_ms, 30_000, "the plan's grace");
    assert!(calls.iter().any(|c| c.contains("/resyncKeys")));
    assert!(calls.iter().any(|c| c.contains("/api/2.0/secrets/put")));
    // The restart a settings write causes is said in the summary, once per site with
    // its number of writes, and where the write is listed.
    assert_eq!(dry.effects.len(), 1, "{:#?}", dry.effects);
    assert!(
        dry.effects[0]
            .effect
            .starts_with("restarts func-datasci-ingest ("),
        "{:?}",
        dry.effects
    );
    assert_eq!(dry.effects[0].writes, 1);
    assert!(
        calls.iter().any(|c| c.starts_with("PUT ")
            && c.contains("/sites/func-datasci-ingest/config/appsettings")
            && c.contains("RESTARTS func-datasci-ingest")),
        "{calls:#?}"
    );
    assert!(
        calls
            .iter()
            .any(|c| c.contains("/linkedservices/ls_stdatasci001_blob") && c.contains("If-Match")),
        "{calls:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_vault_throttling_is_waited_out() {
    let h = Harness::start().await;
    h.twin
        .fault(json!({"operation": "keyvault.set", "count": 2,
            "action": {"kind": "status", "status": 429, "retry_after": 1}}))
        .await;
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
    assert!(
        matches!(report.outcome, Some(Outcome::Completed { .. })),
        "{:#?}",
        report.outcome
    );
    let sets = h.twin.requests_for("keyvault.set").await;
    assert_eq!(sets.iter().filter(|e| e["status"] == 429).count(), 2);
    assert_eq!(sets.iter().filter(|e| e["status"] == 200).count(), 2);
    let state = h.twin.state().await;
    let (_, key2) = keys_of(&state);
    for (consumer, held) in consumer_keys(&state) {
        assert_eq!(held, key2, "{consumer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_consumers_are_refused_with_nothing_changed() {
    let h = Harness::start().await;
    // Move one datastore to key2 behind keyflip's back.
    let azure = h.twin.azure(crate::support::twin::OPERATOR);
    let (_, key2) = h.twin.keys(ACCOUNT).await;
    azure
        .set_ml_datastore_key(
            &h.twin.workspace_id(crate::support::twin::WORKSPACE),
            "training_data",
            &keyflip::secret::StorageKey::new(key2),
        )
        .await
        .unwrap();
    let before = h.twin.state().await;
    let writes_before = writes(&h.twin).await.len();
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
    let Some(Outcome::Refused { reasons }) = &report.outcome else {
        panic!("{:#?}", report.outcome)
    };
    assert!(
        reasons.iter().any(
            |r| matches!(r, RefusalReason::ConsumersSplit { on_key2, .. } if on_key2.len() == 1)
        ),
        "{reasons:#?}"
    );
    assert_eq!(h.twin.state().await, before);
    assert_eq!(writes(&h.twin).await.len(), writes_before);
    assert_eq!(report.exit(), keyflip::exit::Exit::Refused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_is_refused_before_any_change_with_the_roles_to_grant() {
    let h = Harness::start().await;
    let before = h.twin.state().await;
    let report = h
        .engine_as(READER)
        .rotate(
            &h.plan,
            RotateRequest::manual(),
            &NoProgress,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    let Some(Outcome::Refused { reasons }) = &report.outcome else {
        panic!("{:#?}", report.outcome)
    };
    let text = report.outcome.as_ref().unwrap().to_string();
    assert!(text.contains("regeneratekey/action"), "{text}");
    assert!(
        text.contains("Storage Account Key Operator Service Role"),
        "{text}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| matches!(r, RefusalReason::MissingPermissions { .. })),
    );
    assert!(writes(&h.twin).await.is_empty(), "no write was sent");
    assert_eq!(h.twin.state().await, before);
    assert_consumers_valid(&before, "after the refusal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rotations_of_one_account_at_once_one_is_busy() {
    let h = Harness::start().await;
    // Hold the first run inside its stage step long enough for the second to start.
    h.twin
        .fault(json!({"operation": "storage.regenerateKey", "count": 1,
            "action": {"kind": "latency", "ms": 1500}}))
        .await;
    let (a, b) = (h.engine(), h.engine());
    let (ra, rb) = tokio::join!(
        a.rotate(
            &h.plan,
            RotateRequest::manual(),
            &NoProgress,
            CancellationToken::new()
        ),
        b.rotate(
            &h.plan,
            RotateRequest::manual(),
            &NoProgress,
            CancellationToken::new()
        ),
    );
    let (done, busy) = match (ra, rb) {
        (Ok(done), Err(busy)) | (Err(busy), Ok(done)) => (done, busy),
        (ra, rb) => panic!("expected one run and one Busy: {ra:?} / {rb:?}"),
    };
    assert!(matches!(done.outcome, Some(Outcome::Completed { .. })));
    let EngineError::Busy { holder, .. } = &busy else {
        panic!("{busy}")
    };
    assert!(
        holder.contains(&format!("pid {}", std::process::id())),
        "{holder}"
    );
    assert_eq!(busy.exit(), keyflip::exit::Exit::Busy);
    assert_eq!(regenerations(&h.twin).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_seen_by_observe_and_repaired_as_a_journaled_step() {
    let h = Harness::start().await;
    let engine = h.engine();
    let inventory = engine.observe(&h.plan).await.unwrap();
    assert_eq!(inventory.active, Some(KeyName::Key1));
    assert!(inventory.drift.is_empty(), "{:#?}", inventory.drift);
    assert_eq!(inventory.consumers.len(), 10);

    // Someone points a datastore at key2 by hand.
    let workspace = h.twin.workspace_id(crate::support::twin::WORKSPACE);
    let (key1, key2) = h.twin.keys(ACCOUNT).await;
    h.twin
        .azure(crate::support::twin::OPERATOR)
        .set_ml_datastore_key(
            &workspace,
            "feature_snapshots",
            &keyflip::secret::StorageKey::new(key2),
        )
        .await
        .unwrap();
    let inventory = engine.observe(&h.plan).await.unwrap();
    assert_eq!(inventory.active, None, "split");
    let id = keyflip::consumer::ConsumerId::datastore(&workspace, "feature_snapshots");
    assert!(inventory.drift.iter().any(|c| c.consumer.id == id));

    // The repair is one `--adopt` rotation: every consumer is bound to key1 (a no-op
    // for those holding it) and verified; nothing is regenerated.
    let adopt = keyflip::rotation::RotateRequest {
        mode: keyflip::rotation::machine::Mode::Adopt {
            key: Some(KeyName::Key1),
        },
        grace: None,
        trigger: keyflip::rotation::Trigger::Repair,
        by: None,
    };
    let report = engine
        .rotate(&h.plan, adopt, &NoProgress, CancellationToken::new())
        .await
        .unwrap();
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
    assert!(report.steps.iter().all(|s| s.kind != "regenerate"));
    assert_eq!(regenerations(&h.twin).await, 0);
    assert_eq!(report.trigger, Some(keyflip::rotation::Trigger::Repair));
    assert!(report.consumers.iter().all(|c| matches!(
        c.status,
        keyflip::rotation::machine::ConsumerStatus::Verified { key: KeyName::Key1 }
    )));
    let state = h.twin.state().await;
    assert_eq!(
        state["ml_workspaces"][crate::support::twin::WORKSPACE]["datastores"]["feature_snapshots"]
            ["key"],
        key1.as_str()
    );
    let inventory = engine.observe(&h.plan).await.unwrap();
    assert_eq!(inventory.active, Some(KeyName::Key1));
    assert!(inventory.drift.is_empty());
    assert!(engine.unfinished().unwrap().is_empty());
    assert_eq!(engine.history(Some("demo"), 5).unwrap().len(), 1);
}
