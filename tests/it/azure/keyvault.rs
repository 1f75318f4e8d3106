//! Key Vault secrets through the Azure SDK's `SecretClient` against keyflip-twin, whose
//! vaults live under a path prefix (`https://127.0.0.1:PORT/keyvault/{vault}`).

use std::collections::BTreeMap;

use chrono::{Duration, Utc};
use keyflip::azure::Error;
use keyflip::azure::keyvault::NewSecretVersion;
use keyflip::azure::roles::actions;
use keyflip::secret::StorageKey;
use serde_json::json;

use crate::support::twin::{ACCOUNT, OPERATOR, READER, TestTwin, VAULT};

const SECRET: &str = "stdatasci001-key";

#[tokio::test]
async fn writes_reads_lists_fingerprints_and_disables_versions() {
    let twin = TestTwin::start();
    let azure = twin.azure(OPERATOR);
    let vault = twin.vault_url(VAULT);
    let (key1, key2) = twin.keys(ACCOUNT).await;
    let (key1, key2) = (StorageKey::new(key1), StorageKey::new(key2));

    let expires = Utc::now() + Duration::days(90);
    let tags = BTreeMap::from([("CredentialId".to_owned(), "key2".to_owned())]);
    let written = azure
        .set_secret(
            &vault,
            SECRET,
            NewSecretVersion {
                value: &key2,
                content_type: Some("text/plain".into()),
                tags: tags.clone(),
                expires: Some(expires),
            },
        )
        .await
        .unwrap();
    assert_eq!(written.name, SECRET);
    assert!(written.enabled);

    let latest = azure.get_secret(&vault, SECRET, None).await.unwrap();
    assert_eq!(latest.value, key2);
    assert_eq!(latest.version.version, written.version);
    assert_eq!(latest.version.tags, tags);
    assert_eq!(latest.version.content_type.as_deref(), Some("text/plain"));
    assert_eq!(
        latest.version.expires.map(|t| t.timestamp()),
        Some(expires.timestamp())
    );

    let versions = azure.secret_versions(&vault, SECRET).await.unwrap();
    assert_eq!(versions.len(), 2, "{versions:?}");
    assert!(versions.iter().any(|v| v.version == written.version));
    let original = versions
        .iter()
        .find(|v| v.version != written.version)
        .unwrap()
        .version
        .clone();
    assert_eq!(
        azure
            .get_secret(&vault, SECRET, Some(&original))
            .await
            .unwrap()
            .value,
        key1
    );

    let prints = azure
        .secret_version_fingerprints(&vault, SECRET)
        .await
        .unwrap();
    let by_version: BTreeMap<_, _> = prints
        .iter()
        .map(|p| (p.version.version.clone(), p.fingerprint))
        .collect();
    assert_eq!(by_version[&original], Some(azure.fingerprint(&key1)));
    assert_eq!(by_version[&written.version], Some(azure.fingerprint(&key2)));

    let disabled = azure
        .disable_secret_version(&vault, SECRET, &original)
        .await
        .unwrap();
    assert!(!disabled.enabled);
    let state = twin.state().await;
    let stored = state["key_vaults"][VAULT]["secrets"][SECRET]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        stored
            .iter()
            .any(|v| v["version"] == original.as_str() && v["enabled"] == false)
    );
    let prints = azure
        .secret_version_fingerprints(&vault, SECRET)
        .await
        .unwrap();
    assert!(
        prints
            .iter()
            .any(|p| p.version.version == original && p.fingerprint.is_none())
    );
    assert!(
        azure
            .get_secret(&vault, SECRET, Some(&original))
            .await
            .is_err()
    );

    // The SDK kept the vault's path prefix on every request.
    let kv: Vec<_> = twin
        .requests()
        .await
        .into_iter()
        .filter(|e| {
            e["operation"]
                .as_str()
                .is_some_and(|o| o.starts_with("keyvault."))
        })
        .collect();
    assert!(!kv.is_empty());
    assert!(
        kv.iter().all(|e| e["path"]
            .as_str()
            .unwrap()
            .starts_with(&format!("/keyvault/{VAULT}/secrets/"))),
        "{kv:?}"
    );
}

#[tokio::test]
async fn a_reader_may_read_but_not_write_and_is_told_which_role_writes() {
    let twin = TestTwin::start();
    let azure = twin.azure(READER);
    let vault = twin.vault_url(VAULT);
    azure.get_secret(&vault, SECRET, None).await.unwrap();
    let key = StorageKey::new(twin.keys(ACCOUNT).await.1);
    let err = azure
        .set_secret(
            &vault,
            SECRET,
            NewSecretVersion {
                value: &key,
                content_type: None,
                tags: BTreeMap::new(),
                expires: None,
            },
        )
        .await
        .unwrap_err();
    let denial = err
        .denial()
        .unwrap_or_else(|| panic!("expected a 403, got {err}"));
    assert_eq!(denial.action, Some(actions::KV_SECRET_SET));
    assert_eq!(
        denial.role.map(|r| r.name),
        Some("Key Vault Secrets Officer")
    );
    assert!(!err.to_string().contains(key.expose()));
}

#[tokio::test]
async fn a_missing_secret_is_a_404() {
    let twin = TestTwin::start();
    let err = twin
        .azure(OPERATOR)
        .get_secret(&twin.vault_url(VAULT), "no-such-secret", None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("no-such-secret"), "{err}");
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried() {
    let twin = TestTwin::start();
    let azure = twin.azure(OPERATOR);
    let vault = twin.vault_url(VAULT);
    twin.fault(json!({"operation": "keyvault.get", "action": {"kind": "status", "status": 429, "retry_after": 1}})).await;
    twin.fault(
        json!({"operation": "keyvault.versions", "action": {"kind": "status", "status": 500}}),
    )
    .await;
    azure.get_secret(&vault, SECRET, None).await.unwrap();
    azure.secret_versions(&vault, SECRET).await.unwrap();
    let statuses = |op: &'static str| {
        let twin = &twin;
        async move {
            twin.requests_for(op)
                .await
                .iter()
                .map(|e| e["status"].as_u64().unwrap())
                .filter(|s| *s != 401)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(statuses("keyvault.get").await, vec![429, 200]);
    assert_eq!(statuses("keyvault.versions").await, vec![500, 200]);
}

#[tokio::test]
async fn malformed_answers_are_errors() {
    let twin = TestTwin::start();
    twin.fault(json!({"operation": "keyvault.get", "count": 0, "action": {"kind": "malformed"}}))
        .await;
    let err = twin
        .azure(OPERATOR)
        .get_secret(&twin.vault_url(VAULT), SECRET, None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::BadResponse { .. }), "{err}");
}
