//! The Databricks Secrets API against keyflip-twin, with Entra ID tokens for the
//! AzureDatabricks application.

use keyflip::azure::Error;
use keyflip::azure::databricks::ScopeBackend;
use keyflip::secret::StorageKey;

use crate::support::twin::{ACCOUNT, DATABRICKS, OPERATOR, READER, TestTwin};

const KEY: &str = "stdatasci001-key";

#[tokio::test]
async fn lists_scopes_and_writes_a_secret() {
    let twin = TestTwin::start();
    let azure = twin.azure(OPERATOR);
    let ws = twin.databricks_url(DATABRICKS);
    let scopes = azure.databricks_scopes(&ws).await.unwrap();
    let backend = |name: &str| {
        scopes
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.backend.clone())
    };
    assert_eq!(backend("datasci"), Some(ScopeBackend::Databricks));
    assert!(
        matches!(
            backend("kv-datasci"),
            Some(ScopeBackend::AzureKeyVault { .. })
        ),
        "{scopes:?}"
    );

    let before = azure.databricks_secrets(&ws, "datasci").await.unwrap();
    let stamp_before = before
        .iter()
        .find(|s| s.key == KEY)
        .and_then(|s| s.last_updated)
        .expect("a timestamp");

    let (_, key2) = twin.keys(ACCOUNT).await;
    azure
        .databricks_put_secret(&ws, "datasci", KEY, &StorageKey::new(key2.clone()))
        .await
        .unwrap();
    let state = twin.state().await;
    assert_eq!(
        state["databricks_workspaces"][DATABRICKS]["scopes"]["datasci"]["secrets"][KEY]["string_value"],
        key2.as_str()
    );
    let after = azure.databricks_secrets(&ws, "datasci").await.unwrap();
    let stamp_after = after
        .iter()
        .find(|s| s.key == KEY)
        .and_then(|s| s.last_updated)
        .unwrap();
    assert!(
        stamp_after >= stamp_before,
        "{stamp_before} -> {stamp_after}"
    );
    assert_eq!(twin.requests_for("databricks.put").await.len(), 1);
}

#[tokio::test]
async fn a_key_vault_backed_scope_cannot_be_written() {
    let twin = TestTwin::start();
    let err = twin
        .azure(OPERATOR)
        .databricks_put_secret(
            &twin.databricks_url(DATABRICKS),
            "kv-datasci",
            KEY,
            &StorageKey::new("dmFsdWU=".into()),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Rejected { status: 400, .. }), "{err}");
    assert!(err.to_string().contains("BAD_REQUEST"), "{err}");
}

#[tokio::test]
async fn a_principal_without_access_is_told_which_acl_to_grant() {
    let twin = TestTwin::start();
    let err = twin
        .azure(READER)
        .databricks_secrets(&twin.databricks_url(DATABRICKS), "datasci")
        .await
        .unwrap_err();
    let denial = err
        .denial()
        .unwrap_or_else(|| panic!("expected a 403, got {err}"));
    assert_eq!(
        denial.role, None,
        "Databricks permissions are not Azure roles"
    );
    assert!(
        err.to_string()
            .contains("READ on the secret scope 'datasci'"),
        "{err}"
    );
}
