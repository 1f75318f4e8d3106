//! Azure ML workspaces and datastores through ARM against keyflip-twin.

use std::time::Duration;

use keyflip::azure::Error;
use keyflip::azure::datastore::DatastoreSecret;
use keyflip::secret::StorageKey;
use serde_json::json;

use crate::support::twin::{ACCOUNT, OPERATOR, READER, TestTwin, WORKSPACE};

#[tokio::test]
async fn reads_the_workspace_and_its_cached_key() {
    let twin = TestTwin::start();
    let azure = twin.azure(OPERATOR);
    let id = twin.workspace_id(WORKSPACE);
    let workspace = azure.ml_workspace(&id).await.unwrap();
    assert_eq!(
        workspace.storage_account.as_ref(),
        Some(&twin.account_id(ACCOUNT))
    );
    let keys = azure.ml_workspace_keys(&id).await.unwrap();
    assert_eq!(
        keys.user_storage_resource_id.as_ref(),
        Some(&twin.account_id(ACCOUNT))
    );
    let (key1, _) = twin.keys(ACCOUNT).await;
    assert_eq!(keys.user_storage_key.unwrap().expose(), key1);
}

#[tokio::test]
async fn workspace_keys_need_a_role_the_reader_lacks() {
    let twin = TestTwin::start();
    let err = twin
        .azure(READER)
        .ml_workspace_keys(&twin.workspace_id(WORKSPACE))
        .await
        .unwrap_err();
    let denial = err
        .denial()
        .unwrap_or_else(|| panic!("expected a 403, got {err}"));
    assert_eq!(
        denial
            .action
            .as_ref()
            .map(|a| a.name().to_ascii_lowercase()),
        Some("microsoft.machinelearningservices/workspaces/listkeys/action".to_owned())
    );
    // AzureML Data Scientist excludes workspace listKeys; Contributor is the narrowest
    // built-in role that grants it.
    assert_eq!(denial.role.map(|r| r.name), Some("Contributor"));
}

#[tokio::test]
async fn resync_keys_waits_for_the_long_running_operation() {
    let twin = TestTwin::start();
    let id = twin.workspace_id(WORKSPACE);
    twin.azure(OPERATOR)
        .resync_ml_workspace_keys(&id, Duration::from_secs(30))
        .await
        .unwrap();
    let polls = twin.requests_for("ml.operation.poll").await;
    assert!(!polls.is_empty(), "the operation was polled");
    assert_eq!(polls.last().unwrap()["status"], 200);
}

#[tokio::test]
async fn a_failed_long_running_operation_is_an_error() {
    let twin = TestTwin::start();
    twin.fault(json!({"operation": "ml.workspace.resyncKeys", "action": {"kind": "lro_fail", "code": "KeyVaultUnreachable"}}))
        .await;
    let err = twin
        .azure(OPERATOR)
        .resync_ml_workspace_keys(&twin.workspace_id(WORKSPACE), Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::OperationFailed { .. }), "{err}");
    assert!(err.to_string().contains("KeyVaultUnreachable"), "{err}");
}

#[tokio::test]
async fn a_long_running_operation_past_its_deadline_is_transient() {
    let twin = TestTwin::start();
    let err = twin
        .azure(OPERATOR)
        .resync_ml_workspace_keys(&twin.workspace_id(WORKSPACE), Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Deadline { .. }), "{err}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn finds_the_datastores_that_use_an_accounts_key() {
    let twin = TestTwin::start();
    let azure = twin.azure(OPERATOR);
    let ws = twin.workspace_id(WORKSPACE);
    let mut all: Vec<String> = azure
        .ml_datastores(&ws)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    all.sort();
    assert_eq!(
        all,
        [
            "external_reference",
            "feature_snapshots",
            "public_samples",
            "training_data",
            "workspaceblobstore",
            "workspaceworkingdirectory"
        ]
    );
    let mut keyed: Vec<String> = azure
        .ml_account_key_datastores(&ws, &twin.account_id(ACCOUNT))
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    keyed.sort();
    assert_eq!(
        keyed,
        [
            "feature_snapshots",
            "training_data",
            "workspaceblobstore",
            "workspaceworkingdirectory"
        ]
    );
}

#[tokio::test]
async fn updates_a_datastore_key_in_place() {
    let twin = TestTwin::start();
    let azure = twin.azure(OPERATOR);
    let ws = twin.workspace_id(WORKSPACE);
    let before = azure.ml_datastore(&ws, "training_data").await.unwrap();
    let (key1, key2) = twin.keys(ACCOUNT).await;
    assert_eq!(
        azure
            .ml_datastore_secret(&ws, "training_data")
            .await
            .unwrap(),
        DatastoreSecret::AccountKey(StorageKey::new(key1))
    );

    let after = azure
        .set_ml_datastore_key(&ws, "training_data", &StorageKey::new(key2.clone()))
        .await
        .unwrap();
    assert_eq!(
        azure
            .ml_datastore_secret(&ws, "training_data")
            .await
            .unwrap(),
        DatastoreSecret::AccountKey(StorageKey::new(key2.clone()))
    );
    let state = twin.state().await;
    assert_eq!(
        state["ml_workspaces"][WORKSPACE]["datastores"]["training_data"]["key"],
        key2.as_str()
    );
    // Everything keyflip does not model came back unchanged.
    for field in [
        "containerName",
        "endpoint",
        "protocol",
        "description",
        "tags",
        "datastoreType",
        "accountName",
    ] {
        assert_eq!(
            after.resource()["properties"][field],
            before.resource()["properties"][field],
            "properties.{field}"
        );
    }
    let puts = twin.requests_for("ml.datastore.put").await;
    assert_eq!(puts.len(), 1);
    assert!(
        puts[0]["path"]
            .as_str()
            .unwrap()
            .ends_with("/datastores/training_data")
    );
}

#[tokio::test]
async fn sas_datastores_are_not_rewritten() {
    let twin = TestTwin::start();
    let azure = twin.azure(OPERATOR);
    let ws = twin.workspace_id(WORKSPACE);
    assert!(matches!(
        azure
            .ml_datastore_secret(&ws, "public_samples")
            .await
            .unwrap(),
        DatastoreSecret::Sas(_)
    ));
    let err = azure
        .set_ml_datastore_key(&ws, "public_samples", &StorageKey::new("a2V5".into()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Sas credentials"), "{err}");
    assert!(twin.requests_for("ml.datastore.put").await.is_empty());
}

#[tokio::test]
async fn a_missing_datastore_is_a_404() {
    let twin = TestTwin::start();
    let err = twin
        .azure(OPERATOR)
        .ml_datastore(&twin.workspace_id(WORKSPACE), "nope")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("datastores/nope"), "{err}");
}
