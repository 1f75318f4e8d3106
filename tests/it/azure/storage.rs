//! Storage accounts through ARM against keyflip-twin: reads, keys, regeneration with
//! its three outcomes, patches, and the errors Azure answers with.

use keyflip::azure::Error;
use keyflip::azure::probe::ProbeOutcome;
use keyflip::azure::storage::{KeyBefore, RegenerateOutcome, StorageAccountPatch};
use keyflip::key::KeyName;
use serde_json::json;

use crate::support::twin::{ACCOUNT, OPERATOR, TestTwin};

#[tokio::test]
async fn reads_the_account_and_its_keys() {
    let twin = TestTwin::start();
    let azure = twin.azure(OPERATOR);
    let id = twin.account_id(ACCOUNT);
    let account = azure.storage_account(&id).await.unwrap();
    assert_eq!(account.name(), ACCOUNT);
    assert_eq!(
        account.blob_endpoint.as_ref().map(|u| u.as_str()),
        Some(
            twin.endpoints.storage_accounts[ACCOUNT]
                .blob_endpoint
                .as_str()
        )
    );
    assert!(account.shared_key_allowed());
    let keys = azure.storage_keys(&id).await.unwrap();
    let (key1, key2) = twin.keys(ACCOUNT).await;
    assert_eq!(keys.value(KeyName::Key1).expose(), key1);
    assert_eq!(keys.value(KeyName::Key2).expose(), key2);
}

fn millis(entry: &serde_json::Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(entry["at"].as_str().expect("a timestamp"))
        .expect("an RFC 3339 timestamp")
        .timestamp_millis()
}

#[tokio::test]
async fn regenerates_a_key_once_and_returns_the_new_keys() {
    let twin = TestTwin::start();
    let azure = twin.azure(OPERATOR);
    let id = twin.account_id(ACCOUNT);
    let before_keys = azure.storage_keys(&id).await.unwrap();
    let before_account = azure.storage_account(&id).await.unwrap();
    let before = KeyBefore {
        fingerprint: azure.fingerprint(before_keys.value(KeyName::Key2)),
        created: before_account.key_created(KeyName::Key2),
    };
    let outcome = azure
        .regenerate_storage_key(&id, KeyName::Key2, before)
        .await;
    let RegenerateOutcome::Happened(keys) = outcome else {
        panic!("expected Happened, got {outcome:?}");
    };
    let (key1, key2) = twin.keys(ACCOUNT).await;
    assert_eq!(keys.value(KeyName::Key2).expose(), key2);
    assert_ne!(key2, before_keys.value(KeyName::Key2).expose());
    assert_eq!(
        key1,
        before_keys.value(KeyName::Key1).expose(),
        "key1 untouched"
    );
    let after = azure.storage_account(&id).await.unwrap();
    assert_ne!(after.key_created(KeyName::Key2), before.created);
    assert_eq!(twin.requests_for("storage.regenerateKey").await.len(), 1);
}

/// What keyflip observed of key1 before regenerating it.
async fn before_key1(twin: &TestTwin) -> KeyBefore {
    let azure = twin.azure(OPERATOR);
    let id = twin.account_id(ACCOUNT);
    let keys = azure.storage_keys(&id).await.unwrap();
    KeyBefore {
        fingerprint: azure.fingerprint(keys.value(KeyName::Key1)),
        created: azure
            .storage_account(&id)
            .await
            .unwrap()
            .key_created(KeyName::Key1),
    }
}

#[tokio::test]
async fn a_500_after_the_regeneration_is_reconciled_as_happened() {
    let twin = TestTwin::start();
    let before = before_key1(&twin).await;
    twin.fault(
        json!({"operation": "storage.regenerateKey", "action": {"kind": "after", "status": 500}}),
    )
    .await;
    let azure = twin.azure(OPERATOR);
    let outcome = azure
        .regenerate_storage_key(&twin.account_id(ACCOUNT), KeyName::Key1, before)
        .await;
    let RegenerateOutcome::Happened(keys) = outcome else {
        panic!("expected Happened, got {outcome:?}");
    };
    assert_eq!(
        keys.value(KeyName::Key1).expose(),
        twin.keys(ACCOUNT).await.0
    );
    let regenerates = twin.requests_for("storage.regenerateKey").await;
    assert_eq!(regenerates.len(), 1, "sent exactly once: {regenerates:?}");
    assert_eq!(regenerates[0]["status"], 500);
}

#[tokio::test]
async fn a_plain_500_is_reconciled_as_not_happened() {
    let twin = TestTwin::start();
    let before = before_key1(&twin).await;
    let (key1_before, _) = twin.keys(ACCOUNT).await;
    twin.fault(
        json!({"operation": "storage.regenerateKey", "action": {"kind": "status", "status": 500}}),
    )
    .await;
    let azure = twin.azure(OPERATOR);
    let outcome = azure
        .regenerate_storage_key(&twin.account_id(ACCOUNT), KeyName::Key1, before)
        .await;
    match outcome {
        RegenerateOutcome::DidNotHappen(cause) => {
            assert!(
                matches!(cause, Error::Server { status: 500, .. }),
                "{cause}"
            );
            assert!(cause.is_transient());
        }
        other => panic!("expected DidNotHappen, got {other:?}"),
    }
    assert_eq!(twin.keys(ACCOUNT).await.0, key1_before);
    assert_eq!(twin.requests_for("storage.regenerateKey").await.len(), 1);
    // Reconciliation read the keys and the account after the failure.
    let ops: Vec<_> = twin
        .requests()
        .await
        .into_iter()
        .map(|e| e["operation"].clone())
        .collect();
    let at = ops
        .iter()
        .position(|o| o == "storage.regenerateKey")
        .unwrap();
    assert!(ops[at..].contains(&json!("storage.listKeys")), "{ops:?}");
}

#[tokio::test]
async fn a_dropped_connection_is_reconciled_too() {
    let twin = TestTwin::start();
    let before = before_key1(&twin).await;
    twin.fault(json!({"operation": "storage.regenerateKey", "action": {"kind": "reset"}}))
        .await;
    let outcome = twin
        .azure(OPERATOR)
        .regenerate_storage_key(&twin.account_id(ACCOUNT), KeyName::Key1, before)
        .await;
    assert!(
        matches!(
            &outcome,
            RegenerateOutcome::DidNotHappen(Error::Network { sent: true, .. })
        ),
        "{outcome:?}"
    );
    assert_eq!(twin.requests_for("storage.regenerateKey").await.len(), 1);
}

#[tokio::test]
async fn idempotent_calls_retry_5xx_and_honour_retry_after() {
    let twin = TestTwin::start();
    let azure = twin.azure(OPERATOR);
    let id = twin.account_id(ACCOUNT);
    twin.fault(json!({"operation": "storage.listKeys", "count": 2, "action": {"kind": "status", "status": 503}}))
        .await;
    azure.storage_keys(&id).await.unwrap();
    let statuses: Vec<_> = twin
        .requests_for("storage.listKeys")
        .await
        .iter()
        .map(|e| e["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, vec![503, 503, 200]);

    twin.fault(json!({"operation": "storage.get", "action": {"kind": "status", "status": 429, "retry_after": 2}}))
        .await;
    azure.storage_account(&id).await.unwrap();
    let gets = twin.requests_for("storage.get").await;
    let (throttled, served) = (&gets[gets.len() - 2], &gets[gets.len() - 1]);
    assert_eq!(
        (throttled["status"].as_u64(), served["status"].as_u64()),
        (Some(429), Some(200))
    );
    let waited = millis(served) - millis(throttled);
    assert!(
        waited >= 2000,
        "the retry came {waited} ms after the 429 that asked for 2 s"
    );
}

#[tokio::test]
async fn throttling_that_outlasts_the_retries_is_an_error_with_the_wait() {
    let twin = TestTwin::start();
    twin.fault(json!({"operation": "storage.get", "count": 0, "action": {"kind": "status", "status": 429, "retry_after": 0}}))
        .await;
    let err = twin
        .azure(OPERATOR)
        .storage_account(&twin.account_id(ACCOUNT))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Throttled { attempts: 4, .. }), "{err}");
    assert!(err.is_transient());
    assert_eq!(err.retry_after(), Some(std::time::Duration::ZERO));
    assert_eq!(twin.requests_for("storage.get").await.len(), 4);
}

#[tokio::test]
async fn patching_needs_storage_account_contributor() {
    let twin = TestTwin::start();
    // The least-privilege operator of the demo world cannot write the account.
    let patch = StorageAccountPatch {
        allow_shared_key_access: Some(false),
        key_expiration_days: None,
    };
    let err = twin
        .azure(OPERATOR)
        .patch_storage_account(&twin.account_id(ACCOUNT), &patch)
        .await
        .unwrap_err();
    let denial = err.denial().expect("a 403");
    assert_eq!(
        denial
            .action
            .as_ref()
            .map(|a| a.name().to_ascii_lowercase()),
        Some("microsoft.storage/storageaccounts/write".to_owned())
    );
    assert_eq!(
        denial.scope.as_deref(),
        Some(twin.account_id(ACCOUNT).as_str())
    );
    assert_eq!(
        denial.role.map(|r| r.name),
        Some("Storage Account Contributor")
    );
    assert!(
        err.to_string().contains("Storage Account Contributor"),
        "{err}"
    );
    assert!(!err.is_transient());
}

#[tokio::test]
async fn patches_shared_key_access_and_key_policy() {
    let twin = TestTwin::start_with(&format!(
        "[[role_assignment]]\nprincipal = \"{OPERATOR}\"\nrole = \"Storage Account Contributor\"\nscope = \"{}\"\n",
        TestTwin::demo_account_id(ACCOUNT)
    ));
    let azure = twin.azure(OPERATOR);
    let id = twin.account_id(ACCOUNT);
    let patched = azure
        .patch_storage_account(
            &id,
            &StorageAccountPatch {
                allow_shared_key_access: Some(false),
                key_expiration_days: Some(90),
            },
        )
        .await
        .unwrap();
    assert!(!patched.shared_key_allowed());
    assert_eq!(patched.key_expiration_days, Some(90));
    let state = twin.state().await;
    assert_eq!(
        state["storage_accounts"][ACCOUNT]["allowSharedKeyAccess"],
        false
    );
    assert_eq!(
        state["storage_accounts"][ACCOUNT]["keyPolicy"]["keyExpirationPeriodInDays"],
        90
    );

    // With shared keys off, the data plane refuses even the right key.
    let keys = azure.storage_keys(&id).await.unwrap();
    let probe = azure
        .probe_account_key(&patched, keys.value(KeyName::Key1))
        .await
        .unwrap();
    assert_eq!(probe.outcome, ProbeOutcome::SharedKeysDisabled, "{probe:?}");

    let restored = azure
        .patch_storage_account(
            &id,
            &StorageAccountPatch {
                allow_shared_key_access: Some(true),
                key_expiration_days: None,
            },
        )
        .await
        .unwrap();
    assert!(restored.shared_key_allowed());
    assert_eq!(
        restored.key_expiration_days,
        Some(90),
        "a patch leaves other settings alone"
    );
}

#[tokio::test]
async fn a_missing_account_is_a_404_naming_it() {
    let twin = TestTwin::start();
    let id = twin
        .account_id(ACCOUNT)
        .as_str()
        .replace(ACCOUNT, "stdoesnotexist")
        .parse()
        .unwrap();
    let err = twin.azure(OPERATOR).storage_account(&id).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("stdoesnotexist"), "{err}");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn malformed_json_is_an_error_that_names_the_call() {
    let twin = TestTwin::start();
    twin.fault(json!({"operation": "storage.listKeys", "action": {"kind": "malformed"}}))
        .await;
    let err = twin
        .azure(OPERATOR)
        .storage_keys(&twin.account_id(ACCOUNT))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::BadResponse { status: 200, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("storage.listKeys"), "{err}");
    let (key1, key2) = twin.keys(ACCOUNT).await;
    assert!(!err.to_string().contains(&key1) && !err.to_string().contains(&key2));
}
