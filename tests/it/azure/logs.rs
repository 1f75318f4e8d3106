//! Security: a run of every Azure operation, logged at TRACE for every target
//! (keyflip, the Azure SDK, reqwest, hyper, h2, rustls), never shows a key, a SAS
//! token, a connection string, an access token or a client secret.

use std::collections::BTreeMap;
use std::time::Duration;

use keyflip::azure::keyvault::NewSecretVersion;
use keyflip::azure::storage::{KeyBefore, RegenerateOutcome};
use keyflip::key::KeyName;
use keyflip::secret::StorageKey;
use serde_json::{Value, json};

use crate::support::logs;
use crate::support::twin::{ACCOUNT, DATABRICKS, OPERATOR, READER, TestTwin, VAULT, WORKSPACE};

/// Every string in the twin's state that is a secret: keys, secret values, datastore
/// keys and SAS tokens, cached workspace keys, Databricks values.
fn secrets_in(state: &Value, out: &mut Vec<String>) {
    fn walk(v: &Value, secret: bool, out: &mut Vec<String>) {
        match v {
            Value::String(s) if secret && s.len() >= 8 => out.push(s.clone()),
            Value::Object(map) => {
                for (k, v) in map {
                    let secret = matches!(
                        k.as_str(),
                        "key1"
                            | "key2"
                            | "value"
                            | "key"
                            | "sasToken"
                            | "userStorageKey"
                            | "string_value"
                            | "bytes_value"
                    );
                    walk(v, secret, out);
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, secret, out)),
            _ => {}
        }
    }
    walk(state, false, out);
}

async fn every_operation(twin: &TestTwin, seen: &mut Vec<String>) {
    let azure = twin.azure(OPERATOR);
    let account_id = twin.account_id(ACCOUNT);
    let ws = twin.workspace_id(WORKSPACE);
    let vault = twin.vault_url(VAULT);
    let dbw = twin.databricks_url(DATABRICKS);
    let mut note = |k: &StorageKey| seen.push(k.expose().to_owned());

    for audience in [
        twin.endpoints.arm_audience.as_str(),
        keyflip::azure::DATABRICKS_AUDIENCE,
    ] {
        azure.check_token(audience).await.unwrap();
    }
    let account = azure.storage_account(&account_id).await.unwrap();
    let keys = azure.storage_keys(&account_id).await.unwrap();
    KeyName::BOTH.iter().for_each(|k| note(keys.value(*k)));
    for key in KeyName::BOTH {
        azure
            .probe_account_key(&account, keys.value(key))
            .await
            .unwrap();
    }
    let before = KeyBefore {
        fingerprint: azure.fingerprint(keys.value(KeyName::Key2)),
        created: account.key2_created,
    };
    let outcome = azure
        .regenerate_storage_key(&account_id, KeyName::Key2, before)
        .await;
    tracing::info!(?outcome, "regenerated");
    let RegenerateOutcome::Happened(keys) = outcome else {
        panic!("{outcome:?}")
    };
    note(keys.value(KeyName::Key2));
    twin.fault(
        json!({"operation": "storage.regenerateKey", "action": {"kind": "after", "status": 500}}),
    )
    .await;
    let before = KeyBefore {
        fingerprint: azure.fingerprint(keys.value(KeyName::Key2)),
        created: None,
    };
    let outcome = azure
        .regenerate_storage_key(&account_id, KeyName::Key2, before)
        .await;
    tracing::info!(?outcome, "regenerated after an ambiguous failure");
    azure
        .missing_permissions(
            account_id.as_str(),
            &[keyflip::azure::roles::actions::STORAGE_WRITE],
        )
        .await
        .unwrap();

    azure.ml_workspace(&ws).await.unwrap();
    if let Some(k) = azure.ml_workspace_keys(&ws).await.unwrap().user_storage_key {
        note(&k);
    }
    azure
        .resync_ml_workspace_keys(&ws, Duration::from_secs(30))
        .await
        .unwrap();
    for ds in azure.ml_datastores(&ws).await.unwrap() {
        let secret = azure.ml_datastore_secret(&ws, &ds.name).await.unwrap();
        tracing::info!(?ds, ?secret, "datastore");
    }
    let fresh = azure.storage_keys(&account_id).await.unwrap();
    azure
        .set_ml_datastore_key(&ws, "training_data", fresh.value(KeyName::Key2))
        .await
        .unwrap();

    let written = azure
        .set_secret(
            &vault,
            "stdatasci001-key",
            NewSecretVersion {
                value: fresh.value(KeyName::Key2),
                content_type: Some("text/plain".into()),
                tags: BTreeMap::from([("CredentialId".into(), "key2".into())]),
                expires: None,
            },
        )
        .await
        .unwrap();
    let read = azure
        .get_secret(&vault, "stdatasci001-connection-string", None)
        .await
        .unwrap();
    note(&read.value);
    tracing::info!(?read, "secret read");
    azure
        .secret_version_fingerprints(&vault, "stdatasci001-key")
        .await
        .unwrap();
    azure
        .disable_secret_version(&vault, "stdatasci001-key", &written.version)
        .await
        .unwrap();

    azure.databricks_scopes(&dbw).await.unwrap();
    azure
        .databricks_put_secret(
            &dbw,
            "datasci",
            "stdatasci001-key",
            fresh.value(KeyName::Key2),
        )
        .await
        .unwrap();
    azure.databricks_secrets(&dbw, "datasci").await.unwrap();

    // Failures are logged and displayed too.
    twin.fault(json!({"operation": "storage.listKeys", "action": {"kind": "malformed"}}))
        .await;
    let err = azure.storage_keys(&account_id).await.unwrap_err();
    tracing::error!(%err, ?err, "listKeys failed");
    let err = twin
        .azure(READER)
        .storage_keys(&account_id)
        .await
        .unwrap_err();
    tracing::error!(%err, ?err, "listKeys refused");
}

#[test]
fn no_secret_reaches_the_logs_at_trace_level() {
    let twin = TestTwin::start();
    let _ = tracing_log::LogTracer::init();
    let (captured, guard) = logs::capture();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut secrets = Vec::new();
    runtime.block_on(async {
        secrets_in(&twin.state().await, &mut secrets);
        every_operation(&twin, &mut secrets).await;
        secrets_in(&twin.state().await, &mut secrets);
    });
    drop(guard);
    for p in twin.endpoints.principals.values() {
        secrets.push(p.client_secret.clone());
    }
    secrets.push(twin.endpoints.admin.token.clone());
    let text = captured.text();
    assert!(
        text.len() > 10_000,
        "the capture caught the run ({} bytes)",
        text.len()
    );
    for needle in [
        "storage.regenerateKey",
        "keyvault.setSecret",
        "databricks.secrets.put",
        "request_id",
    ] {
        assert!(text.contains(needle), "the logs mention {needle}");
    }
    secrets.sort();
    secrets.dedup();
    assert!(secrets.len() >= 10, "{} secrets collected", secrets.len());
    for secret in &secrets {
        assert!(
            !text.contains(secret.as_str()),
            "a secret ({}…) appears in the logs",
            &secret[..4]
        );
    }
    // Access tokens are JWTs; their base64url header starts with `eyJ`.
    assert!(!text.contains("eyJ"), "a JWT appears in the logs");
    assert!(
        !text.contains("SharedKey kfprobe") && !text.contains("SharedKey stdatasci001:"),
        "a signature appears in the logs"
    );
}
