//! The Databricks Secrets API: scopes, put and list, Key Vault-backed scopes, and who
//! may call it.

use reqwest::Method;
use serde_json::{Value, json};

use super::common::*;

fn api(env: &Env, path: &str) -> String {
    format!(
        "{}/api/2.0/secrets/{path}",
        env.ep.databricks_workspaces["dbw-datasci"].url
    )
}

#[tokio::test]
async fn scopes_list_shows_both_backends() {
    let env = Env::demo().await;
    let t = env.token(OPERATOR, DATABRICKS_SCOPE).await;
    let (status, v) = body(
        env.req(Method::GET, &api(&env, "scopes/list"), &t)
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        v["scopes"][0],
        json!({"name": "datasci", "backend_type": "DATABRICKS"})
    );
    assert_eq!(v["scopes"][1]["name"], "kv-datasci");
    assert_eq!(v["scopes"][1]["backend_type"], "AZURE_KEYVAULT");
    assert_eq!(
        v["scopes"][1]["keyvault_metadata"]["resource_id"],
        env.ep.key_vaults["kv-datasci"].id
    );
}

#[tokio::test]
async fn put_stores_the_value_and_list_reports_when() {
    let env = Env::demo().await;
    let t = env.token(OPERATOR, DATABRICKS_SCOPE).await;
    let state = env.state().await;
    let seeded = &state["databricks_workspaces"]["dbw-datasci"]["scopes"]["datasci"]["secrets"]["stdatasci001-key"];
    assert_eq!(
        seeded["string_value"],
        key_of(&state, "stdatasci001", "key1").as_str()
    );
    let before = seeded["last_updated_timestamp"].as_i64().expect("ms");

    env.advance(2.0).await;
    let put = json!({"scope": "datasci", "key": "stdatasci001-key", "string_value": "rotated"});
    let (status, v) = body(
        env.req(Method::POST, &api(&env, "put"), &t)
            .json(&put)
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!((status.as_u16(), v), (200, json!({})));

    let (status, v) = body(
        env.req(Method::GET, &(api(&env, "list") + "?scope=datasci"), &t)
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(status, 200);
    let after = v["secrets"][0]["last_updated_timestamp"]
        .as_i64()
        .expect("ms since epoch");
    assert_eq!(v["secrets"][0]["key"], "stdatasci001-key");
    assert!(after >= before + 2000, "{before} -> {after}");
    let state = env.state().await;
    assert_eq!(
        state["databricks_workspaces"]["dbw-datasci"]["scopes"]["datasci"]["secrets"]["stdatasci001-key"]
            ["string_value"],
        "rotated"
    );

    let put = json!({"scope": "datasci", "key": "as-bytes", "bytes_value": "aGVsbG8="});
    assert_eq!(
        env.req(Method::POST, &api(&env, "put"), &t)
            .json(&put)
            .send()
            .await
            .expect("answer")
            .status(),
        200
    );
}

#[tokio::test]
async fn key_vault_backed_scopes_refuse_put_and_list_the_vault() {
    let env = Env::demo().await;
    let t = env.token(OPERATOR, DATABRICKS_SCOPE).await;
    let put = json!({"scope": "kv-datasci", "key": "stdatasci001-key", "string_value": "x"});
    let (status, v) = body(
        env.req(Method::POST, &api(&env, "put"), &t)
            .json(&put)
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(
        (status.as_u16(), v["error_code"].as_str()),
        (400, Some("BAD_REQUEST"))
    );
    let (status, v) = body(
        env.req(Method::GET, &(api(&env, "list") + "?scope=kv-datasci"), &t)
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(status, 200);
    let keys: Vec<&str> = v["secrets"]
        .as_array()
        .expect("secrets")
        .iter()
        .filter_map(|s| s["key"].as_str())
        .collect();
    assert!(
        keys.contains(&"stdatasci001-connection-string") && keys.contains(&"stdatasci001-key"),
        "{v}"
    );
}

#[tokio::test]
async fn callers_need_the_databricks_audience_and_workspace_membership() {
    let env = Env::demo().await;
    let arm = env.token(OPERATOR, ARM_SCOPE).await;
    let (status, v) = body(
        env.req(Method::GET, &api(&env, "scopes/list"), &arm)
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(
        (status.as_u16(), v["error_code"].as_str()),
        (401, Some("UNAUTHENTICATED"))
    );
    let (status, _) = body(
        env.http
            .get(api(&env, "scopes/list"))
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(status, 401);
    let reader = env.token(READER, DATABRICKS_SCOPE).await;
    let (status, v) = body(
        env.req(Method::GET, &api(&env, "scopes/list"), &reader)
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(
        (status.as_u16(), v["error_code"].as_str()),
        (403, Some("PERMISSION_DENIED"))
    );
}

#[tokio::test]
async fn bad_input_gets_databricks_error_codes() {
    let env = Env::demo().await;
    let t = env.token(OPERATOR, DATABRICKS_SCOPE).await;
    let put = |b: Value| env.req(Method::POST, &api(&env, "put"), &t).json(&b).send();
    let cases = [
        (
            json!({"key": "k", "string_value": "v"}),
            400,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            json!({"scope": "datasci", "key": "k"}),
            400,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            json!({"scope": "datasci", "key": "k", "string_value": "v", "bytes_value": "dg=="}),
            400,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            json!({"scope": "datasci", "key": "bad key!", "string_value": "v"}),
            400,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            json!({"scope": "nope", "key": "k", "string_value": "v"}),
            404,
            "RESOURCE_DOES_NOT_EXIST",
        ),
        (
            json!({"scope": "datasci", "key": "k", "string_value": "x".repeat(128 * 1024 + 1)}),
            400,
            "INVALID_PARAMETER_VALUE",
        ),
        (json!([1, 2]), 400, "MALFORMED_REQUEST"),
    ];
    for (b, status, code) in cases {
        let (s, v) = body(put(b).await.expect("answer")).await;
        assert_eq!((s.as_u16(), v["error_code"].as_str()), (status, Some(code)));
    }
    let r = env
        .req(Method::POST, &api(&env, "put"), &t)
        .body("{oops")
        .send()
        .await
        .expect("answer");
    let (s, v) = body(r).await;
    assert_eq!(
        (s.as_u16(), v["error_code"].as_str()),
        (400, Some("MALFORMED_REQUEST"))
    );
    let (s, v) = body(
        env.req(Method::GET, &api(&env, "list"), &t)
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(
        (s.as_u16(), v["error_code"].as_str()),
        (400, Some("INVALID_PARAMETER_VALUE"))
    );
    let (s, v) = body(
        env.req(Method::GET, &api(&env, "get"), &t)
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(
        (s.as_u16(), v["error_code"].as_str()),
        (404, Some("ENDPOINT_NOT_FOUND"))
    );
}
