//! No token or signature goes to a foreign origin: every URL keyflip (or the SDK on
//! its behalf) follows from an answer is checked by the one origin policy in each
//! client's pipeline. The twin's `relink` fault rewrites an answer's links to
//! `https://localhost:PORT`: the same twin (its certificate names `localhost`), so a
//! client that followed would be served, with its token, and the request log would
//! show it. Each test checks the call fails, names the foreign origin, and that the
//! twin saw no request after the rewritten answer.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::twin::{ACCOUNT, OPERATOR, TestTwin, VAULT, WORKSPACE};

const SECRET: &str = "stdatasci001-key";

/// The twin's own base URL under another host name: another origin.
fn elsewhere(twin: &TestTwin) -> String {
    twin.endpoints.base_url.replace("127.0.0.1", "localhost")
}

async fn relink(twin: &TestTwin, operation: &str, to: &str, async_operation: bool) {
    twin.fault(json!({
        "operation": operation,
        "action": {"kind": "relink", "to": to, "async_operation": async_operation},
    }))
    .await;
}

/// Requests for `operation` the twin served to an authenticated principal.
async fn served(twin: &TestTwin, operation: &str) -> Vec<Value> {
    twin.requests_for(operation)
        .await
        .into_iter()
        .filter(|e| e["principal"] == OPERATOR)
        .collect()
}

#[tokio::test]
async fn a_key_vault_next_link_to_another_origin_is_not_followed() {
    let twin = TestTwin::start();
    let azure = twin.azure(OPERATOR);
    let to = elsewhere(&twin);
    relink(&twin, "keyvault.versions", &to, false).await;
    let result = azure.secret_versions(&twin.vault_url(VAULT), SECRET).await;
    // Today's SDK pager follows the link with the Key Vault token: a second, served
    // request. The origin policy stops it before the token is attached.
    assert_eq!(served(&twin, "keyvault.versions").await.len(), 1);
    let err = result.expect_err("a nextLink to another origin");
    let text = err.to_string();
    assert!(text.contains(&to), "{text}");
    assert!(
        text.contains("keyvault.versions") || text.contains("secret"),
        "{text}"
    );
    assert!(!err.is_transient(), "{text}");
}

#[tokio::test]
async fn an_arm_next_link_to_another_origin_is_not_followed() {
    let twin = TestTwin::start();
    let azure = twin.azure(OPERATOR);
    let to = elsewhere(&twin);
    relink(&twin, "ml.datastore.list", &to, false).await;
    let result = azure.ml_datastores(&twin.workspace_id(WORKSPACE)).await;
    assert_eq!(served(&twin, "ml.datastore.list").await.len(), 1);
    let err = result.expect_err("a nextLink to another origin");
    assert!(err.to_string().contains(&to), "{err}");
}

#[tokio::test]
async fn a_location_or_async_operation_on_another_origin_is_not_polled() {
    for async_operation in [false, true] {
        let twin = TestTwin::start();
        let azure = twin.azure(OPERATOR);
        let to = elsewhere(&twin);
        relink(&twin, "ml.workspace.resyncKeys", &to, async_operation).await;
        let result = azure
            .resync_ml_workspace_keys(&twin.workspace_id(WORKSPACE), Duration::from_secs(10))
            .await;
        assert!(
            twin.requests_for("ml.operation.poll").await.is_empty(),
            "async_operation={async_operation}: a poll was sent"
        );
        let err = result.expect_err("a polling URL on another origin");
        assert!(err.to_string().contains(&to), "{err}");
    }
}

#[tokio::test]
async fn a_blob_endpoint_elsewhere_or_over_http_gets_no_signed_request() {
    let twin = TestTwin::start();
    let azure = twin.azure(OPERATOR);
    let id = twin.account_id(ACCOUNT);
    let plain = twin.endpoints.base_url.replace("https://", "http://");
    for (to, why) in [
        (plain.as_str(), "not HTTPS"),
        (&elsewhere(&twin), "blob_endpoint"),
    ] {
        relink(&twin, "storage.get", to, false).await;
        let err = azure
            .storage_account(&id)
            .await
            .expect_err("an endpoint keyflip must refuse");
        let text = err.to_string();
        assert!(text.contains(to) && text.contains(why), "{text}");
        assert!(
            text.contains("no SharedKey-signed request was sent"),
            "{text}"
        );
    }
    assert!(twin.requests_for("blob.accountInfo").await.is_empty());
    // Unchanged answers still work.
    let account = azure.storage_account(&id).await.unwrap();
    let keys = azure.storage_keys(&id).await.unwrap();
    let probe = azure
        .probe_account_key(&account, keys.value(keyflip::key::KeyName::Key1))
        .await
        .unwrap();
    assert_eq!(probe.outcome, keyflip::azure::probe::ProbeOutcome::Works);
}
