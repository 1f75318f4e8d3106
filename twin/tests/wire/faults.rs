//! Fault injection: every action, rule selection, and error shapes per service.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use super::common::*;

#[tokio::test]
async fn status_faults_answer_with_an_azure_body_and_retry_after_then_expire() {
    let env = Env::demo().await;
    let t = env.token(OPERATOR, ARM_SCOPE).await;
    env.fault(json!({"operation": "storage.listKeys", "action": {"kind": "status", "status": 503, "code": "ServerBusy", "retry_after": 2}})).await;
    let r = env.list_keys(&t, "stdatasci001").await;
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("2")
    );
    assert!(r.headers().contains_key("x-ms-request-id"));
    let (_, v) = body(r).await;
    assert_eq!(v["error"]["code"], "ServerBusy");
    assert_eq!(
        env.list_keys(&t, "stdatasci001").await.status(),
        200,
        "count defaults to 1"
    );
}

#[tokio::test]
async fn rules_select_by_target_and_principal() {
    let env = Env::demo().await;
    let op = env.token(OPERATOR, ARM_SCOPE).await;
    let reader = env.token(READER, ARM_SCOPE).await;
    env.fault(json!({"operation": "storage.get", "principal": READER, "target": "stexternal002", "count": 0,
        "action": {"kind": "status", "status": 500}})).await;
    let get = |token: &str, account: &str| {
        let url = env.arm(&env.account_id(account), STORAGE_API);
        env.req(Method::GET, &url, token).send()
    };
    assert_eq!(
        get(&op, "stexternal002").await.expect("answer").status(),
        200
    );
    assert_eq!(
        get(&reader, "stdatasci001").await.expect("answer").status(),
        200
    );
    for _ in 0..3 {
        let (status, v) = body(get(&reader, "stexternal002").await.expect("answer")).await;
        assert_eq!(
            (status.as_u16(), v["error"]["code"].as_str()),
            (500, Some("InternalServerError"))
        );
    }
    let listed = env.admin_json(Method::GET, "/faults", None).await;
    assert_eq!(listed[0]["fired"], 3);
    let cleared = env
        .admin(Method::DELETE, "/faults")
        .send()
        .await
        .expect("answer");
    assert_eq!(cleared.status(), 200);
    assert_eq!(
        get(&reader, "stexternal002")
            .await
            .expect("answer")
            .status(),
        200
    );
}

#[tokio::test]
async fn latency_delays_then_serves_normally() {
    let env = Env::demo().await;
    let t = env.token(OPERATOR, ARM_SCOPE).await;
    env.fault(json!({"operation": "storage.listKeys", "action": {"kind": "latency", "ms": 50}}))
        .await;
    let (status, v) = body(env.list_keys(&t, "stdatasci001").await).await;
    assert_eq!(status, 200);
    assert!(v["keys"].is_array());
}

#[tokio::test]
async fn reset_drops_the_connection_without_an_answer() {
    let env = Env::demo().await;
    let t = env.token(OPERATOR, ARM_SCOPE).await;
    env.fault(json!({"operation": "storage.regenerateKey", "action": {"kind": "reset"}}))
        .await;
    let before = env.state().await;
    let h1 = client(env.twin.ca_pem(), true);
    let url = env.arm(
        &format!("{}/regenerateKey", env.account_id("stdatasci001")),
        STORAGE_API,
    );
    let err = h1
        .post(&url)
        .bearer_auth(&t)
        .json(&json!({"keyName": "key1"}))
        .send()
        .await;
    assert!(err.is_err(), "no HTTP answer: {err:?}");
    assert_eq!(
        env.state().await["storage_accounts"],
        before["storage_accounts"],
        "nothing happened"
    );
    let log = env.requests().await;
    let last = log.last().expect("logged");
    assert_eq!(last["operation"], "storage.regenerateKey");
    assert_eq!(last["status"], Value::Null);
    // Over HTTP/2 the stream is reset; the connection keeps working.
    env.fault(json!({"operation": "storage.listKeys", "action": {"kind": "reset"}}))
        .await;
    assert!(
        env.req(
            Method::POST,
            &env.arm(
                &format!("{}/listKeys", env.account_id("stdatasci001")),
                STORAGE_API
            ),
            &t
        )
        .send()
        .await
        .is_err()
    );
    assert_eq!(env.list_keys(&t, "stdatasci001").await.status(), 200);
}

#[tokio::test]
async fn hang_never_answers_and_shutdown_still_completes() {
    let env = Env::demo().await;
    let t = env.token(OPERATOR, VAULT_SCOPE).await;
    env.fault(json!({"operation": "keyvault.get", "action": {"kind": "hang"}}))
        .await;
    let url = format!(
        "{}/secrets/stdatasci001-key/?api-version=7.5",
        env.ep.key_vaults["kv-datasci"].url
    );
    let r = env
        .req(Method::GET, &url, &t)
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(r.as_ref().is_err_and(|e| e.is_timeout()), "{r:?}");
    let log = env.requests().await;
    assert_eq!(
        log.last().map(|e| e["operation"].clone()),
        Some(json!("keyvault.get"))
    );
    env.twin.shutdown().await;
}

#[tokio::test]
async fn after_performs_the_operation_then_reports_an_error() {
    let env = Env::demo().await;
    let t = env.token(OPERATOR, ARM_SCOPE).await;
    let before = key_of(&env.state().await, "stdatasci001", "key1");
    env.fault(
        json!({"operation": "storage.regenerateKey", "action": {"kind": "after", "status": 500}}),
    )
    .await;
    let url = env.arm(
        &format!("{}/regenerateKey", env.account_id("stdatasci001")),
        STORAGE_API,
    );
    let (status, v) = body(
        env.req(Method::POST, &url, &t)
            .json(&json!({"keyName": "key1"}))
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(
        (status.as_u16(), v["error"]["code"].as_str()),
        (500, Some("InternalServerError"))
    );
    assert_ne!(
        key_of(&env.state().await, "stdatasci001", "key1"),
        before,
        "the key was regenerated anyway"
    );
}

#[tokio::test]
async fn lro_fail_makes_the_resync_end_failed() {
    let env = Env::demo().await;
    let t = env.token(OPERATOR, ARM_SCOPE).await;
    env.advance(1.0).await;
    let regen = env.arm(
        &format!("{}/regenerateKey", env.account_id("stdatasci001")),
        STORAGE_API,
    );
    env.req(Method::POST, &regen, &t)
        .json(&json!({"keyName": "key2"}))
        .send()
        .await
        .expect("answer");
    let cached_before = env.state().await["ml_workspaces"]["mlw-datasci"]["userStorageKey"].clone();
    env.fault(json!({"operation": "ml.workspace.resyncKeys", "action": {"kind": "lro_fail", "code": "InternalServerError"}})).await;
    let url = env.arm(&format!("{}/resyncKeys", env.workspace_id()), ML_API);
    let r = env
        .req(Method::POST, &url, &t)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 202, "the failure shows only when polling");
    let location = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("Location")
        .to_string();
    env.advance(2.0).await;
    let (status, v) = body(
        env.req(Method::GET, &location, &t)
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(
        (status.as_u16(), v["error"]["code"].as_str()),
        (500, Some("InternalServerError"))
    );
    assert_eq!(
        env.state().await["ml_workspaces"]["mlw-datasci"]["userStorageKey"],
        cached_before
    );
}

#[tokio::test]
async fn malformed_answers_200_with_an_unparseable_body() {
    let env = Env::demo().await;
    let t = env.token(OPERATOR, ARM_SCOPE).await;
    env.fault(json!({"operation": "storage.listKeys", "action": {"kind": "malformed"}}))
        .await;
    let r = env.list_keys(&t, "stdatasci001").await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.expect("body");
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");

    let k1 = key_of(&env.state().await, "stdatasci001", "key1");
    env.fault(json!({"operation": "blob.listContainers", "action": {"kind": "malformed"}}))
        .await;
    let r = env
        .blob(Method::GET, "stdatasci001", "/?comp=list", &k1)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200);
    let text = r.text().await.expect("body");
    assert!(!text.ends_with("</EnumerationResults>"), "{text}");
}

#[tokio::test]
async fn each_service_answers_faults_in_its_own_error_shape() {
    let env = Env::demo().await;
    let dbx = env.token(OPERATOR, DATABRICKS_SCOPE).await;
    let k1 = key_of(&env.state().await, "stdatasci001", "key1");
    for op in [
        "entra.token",
        "msi.token",
        "databricks.scopes",
        "blob.accountInfo",
        "keyvault.set",
    ] {
        env.fault(json!({"operation": op, "action": {"kind": "status", "status": 503}}))
            .await;
    }
    let (status, v) = body(env.token_request(OPERATOR, None, ARM_SCOPE).await).await;
    assert_eq!(
        (status.as_u16(), v["error"].as_str()),
        (503, Some("temporarily_unavailable"))
    );
    let mi = &env.ep.managed_identity;
    let r = env
        .http
        .get(format!(
            "{}?api-version=2019-08-01&resource=https://vault.azure.net",
            mi.endpoint
        ))
        .header("x-identity-header", &mi.header)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 503);
    let url = format!(
        "{}/api/2.0/secrets/scopes/list",
        env.ep.databricks_workspaces["dbw-datasci"].url
    );
    let (status, v) = body(
        env.req(Method::GET, &url, &dbx)
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(
        (status.as_u16(), v["error_code"].as_str()),
        (503, Some("TEMPORARILY_UNAVAILABLE"))
    );
    let r = env
        .blob(
            Method::GET,
            "stdatasci001",
            "/?restype=account&comp=properties",
            &k1,
        )
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.headers()
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok()),
        Some("ServerBusy")
    );
    // Key Vault faults apply after the challenge, to the authenticated request.
    let vault = format!(
        "{}/secrets/x?api-version=7.5",
        env.ep.key_vaults["kv-datasci"].url
    );
    assert_eq!(
        env.http
            .put(&vault)
            .header("content-length", "0")
            .send()
            .await
            .expect("answer")
            .status(),
        401
    );
    let kv = env.token(OPERATOR, VAULT_SCOPE).await;
    let (status, v) = body(
        env.req(Method::PUT, &vault, &kv)
            .json(&json!({"value": "v"}))
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(
        (status.as_u16(), v["error"]["code"].as_str()),
        (503, Some("ServerBusy"))
    );
}

/// Issue 9: a Key Vault challenge is an answer like any other, so injected latency
/// on the operation delays it too (and counts as a firing); other fault actions
/// still wait for the authenticated request.
#[tokio::test]
async fn latency_rules_delay_the_key_vault_challenge_too() {
    let env = Env::demo().await;
    // Rules fire in the order they were added: the 503 comes first.
    env.fault(json!({"operation": "keyvault.get", "action": {"kind": "status", "status": 503}}))
        .await;
    let id = env
        .fault(json!({"operation": "keyvault.get", "count": 0, "action": {"kind": "latency", "ms": 300}}))
        .await;
    let url = format!(
        "{}/secrets/stdatasci001-key?api-version=7.5",
        env.ep.key_vaults["kv-datasci"].url
    );
    let start = std::time::Instant::now();
    let r = env.http.get(&url).send().await.expect("answer");
    assert_eq!(r.status(), 401, "the challenge");
    assert!(
        start.elapsed() >= std::time::Duration::from_millis(300),
        "the challenge came back after {:?}, before the injected 300 ms",
        start.elapsed()
    );
    let rules = env.admin_json(Method::GET, "/faults", None).await;
    let rules = rules.as_array().expect("rules");
    let fired = |rule_id: &str| {
        rules
            .iter()
            .find(|r| r["id"] == rule_id)
            .map(|r| r["fired"].clone())
    };
    assert_eq!(fired(&id), Some(json!(1)), "{rules:?}");
    // The 503 rule did not fire on the challenge: the authenticated request gets it.
    let kv = env.token(OPERATOR, VAULT_SCOPE).await;
    let r = env
        .req(Method::GET, &url, &kv)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 503);
}
