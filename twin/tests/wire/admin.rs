//! The admin API: token isolation, the request log, the state snapshot, regenerating
//! behind a client's back, settings, and the clock.

use reqwest::Method;
use serde_json::{Value, json};

use super::common::*;

#[tokio::test]
async fn admin_and_azure_tokens_do_not_cross() {
    let env = Env::demo().await;
    let arm = env.token(OPERATOR, ARM_SCOPE).await;
    let state = format!("{}/state", env.ep.admin.url);
    assert_eq!(
        env.http.get(&state).send().await.expect("answer").status(),
        401
    );
    assert_eq!(
        env.http
            .get(&state)
            .bearer_auth(&arm)
            .send()
            .await
            .expect("answer")
            .status(),
        401
    );
    assert_eq!(
        env.http
            .get(&state)
            .bearer_auth("x")
            .send()
            .await
            .expect("answer")
            .status(),
        401
    );
    let admin = env.ep.admin.token.clone();
    let (status, v) = body(env.list_keys(&admin, "stdatasci001").await).await;
    assert_eq!(
        (status.as_u16(), v["error"]["code"].as_str()),
        (401, Some("InvalidAuthenticationToken"))
    );
    let kv = format!(
        "{}/secrets/stdatasci001-key/?api-version=7.5",
        env.ep.key_vaults["kv-datasci"].url
    );
    assert_eq!(
        env.req(Method::GET, &kv, &admin)
            .send()
            .await
            .expect("answer")
            .status(),
        401
    );
    let dbx = format!(
        "{}/api/2.0/secrets/scopes/list",
        env.ep.databricks_workspaces["dbw-datasci"].url
    );
    assert_eq!(
        env.req(Method::GET, &dbx, &admin)
            .send()
            .await
            .expect("answer")
            .status(),
        401
    );
}

#[tokio::test]
async fn the_request_log_records_operation_principal_and_status() {
    let env = Env::demo().await;
    let op = env.token(OPERATOR, ARM_SCOPE).await;
    let reader = env.token(READER, ARM_SCOPE).await;
    let start = env
        .requests()
        .await
        .last()
        .and_then(|e| e["seq"].as_u64())
        .unwrap_or(0);
    env.list_keys(&op, "stdatasci001").await;
    env.list_keys(&reader, "stdatasci001").await;
    env.http
        .get(env.url("/nowhere"))
        .send()
        .await
        .expect("answer");
    let log = env
        .admin_json(Method::GET, &format!("/requests?since={start}"), None)
        .await;
    let log = log.as_array().expect("array");
    assert_eq!(log.len(), 3, "{log:?}");
    let path = format!("{}/listKeys", env.account_id("stdatasci001"));
    assert_eq!(log[0]["operation"], "storage.listKeys");
    assert_eq!(log[0]["method"], "POST");
    assert_eq!(log[0]["path"], path);
    assert_eq!(log[0]["principal"], OPERATOR);
    assert_eq!(log[0]["status"], 200);
    assert!(log[0]["at"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(
        (log[1]["principal"].as_str(), log[1]["status"].as_u64()),
        (Some(READER), Some(403))
    );
    assert_eq!(
        (log[2]["operation"].clone(), log[2]["status"].as_u64()),
        (Value::Null, Some(404))
    );
    let seqs: Vec<u64> = log.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    let earlier = env.requests().await;
    assert!(
        earlier
            .iter()
            .any(|e| e["operation"] == "entra.token" && e["principal"] == OPERATOR)
    );
    assert!(
        !earlier
            .iter()
            .any(|e| e["path"].as_str().is_some_and(|p| p.starts_with("/_admin"))),
        "admin calls are not logged"
    );
}

#[tokio::test]
async fn the_state_snapshot_shows_every_consumer_on_key1() {
    let env = Env::demo().await;
    let s = env.state().await;
    let key1 = key_of(&s, "stdatasci001", "key1");
    let blob = &env.ep.storage_accounts["stdatasci001"].blob_endpoint;
    assert_eq!(
        s["storage_accounts"]["stdatasci001"]["allowSharedKeyAccess"],
        true
    );
    assert!(s["storage_accounts"]["stdatasci001"]["keyCreationTime"]["key1"].is_string());
    let kv = &s["key_vaults"]["kv-datasci"]["secrets"];
    assert_eq!(kv["stdatasci001-key"][0]["value"], key1.as_str());
    assert_eq!(kv["stdatasci001-key"][0]["contentType"], "text/plain");
    assert_eq!(
        kv["stdatasci001-connection-string"][0]["value"],
        format!(
            "DefaultEndpointsProtocol=https;AccountName=stdatasci001;AccountKey={key1};BlobEndpoint={blob}"
        )
    );
    let ws = &s["ml_workspaces"]["mlw-datasci"];
    assert_eq!(ws["userStorageKey"], key1.as_str());
    for ds in [
        "workspaceblobstore",
        "training_data",
        "feature_snapshots",
        "workspaceworkingdirectory",
    ] {
        assert_eq!(ws["datastores"][ds]["key"], key1.as_str(), "{ds}");
    }
    assert_eq!(
        ws["datastores"]["workspaceworkingdirectory"]["datastoreType"],
        "AzureFile"
    );
    assert_eq!(ws["datastores"]["public_samples"]["credentialsType"], "Sas");
    assert_eq!(ws["datastores"]["workspaceblobstore"]["isDefault"], true);
    assert_eq!(
        s["databricks_workspaces"]["dbw-datasci"]["scopes"]["datasci"]["secrets"]["stdatasci001-key"]
            ["string_value"],
        key1.as_str()
    );
    assert_ne!(key_of(&s, "stdatasci001", "key2"), key1);
    assert_ne!(key_of(&s, "stexternal002", "key1"), key1);
}

#[tokio::test]
async fn admin_regenerate_changes_a_key_behind_the_clients_back() {
    let env = Env::demo().await;
    let before = env.state().await;
    let v = env
        .admin_json(Method::POST, "/storage/stdatasci001/regenerate/key1", None)
        .await;
    let after = env.state().await;
    assert_eq!(v["value"], key_of(&after, "stdatasci001", "key1").as_str());
    assert_ne!(
        key_of(&after, "stdatasci001", "key1"),
        key_of(&before, "stdatasci001", "key1")
    );
    assert_eq!(
        key_of(&after, "stdatasci001", "key2"),
        key_of(&before, "stdatasci001", "key2")
    );
    let t = env.token(OPERATOR, ARM_SCOPE).await;
    let (_, keys) = body(env.list_keys(&t, "stdatasci001").await).await;
    assert_eq!(keys["keys"][0]["value"], v["value"]);
    let r = env
        .admin(Method::POST, "/storage/stdatasci001/regenerate/key9")
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 400);
    let r = env
        .admin(Method::POST, "/storage/nope/regenerate/key1")
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn settings_and_clock_changes_are_validated() {
    let env = Env::demo().await;
    let s = env
        .admin_json(
            Method::PATCH,
            "/settings",
            Some(json!({"propagation_delay_secs": 12.5})),
        )
        .await;
    assert_eq!(s["propagation_delay_secs"], 12.5);
    assert_eq!(s["lro_retry_after_secs"], 1, "other settings are kept");
    for bad in [
        json!({"propagation_delay_secs": -1}),
        json!({"no_such_setting": 1}),
        json!({"arm_write_burst": "many"}),
        json!([]),
        json!({"arm_write_burst": 0}),
        json!({"token_lifetime_secs": 0}),
        json!({"propagation_delay_secs": 1e308}),
    ] {
        let r = env
            .admin(Method::PATCH, "/settings")
            .json(&bad)
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status(), 400, "{bad}");
        if let Some(field) = bad.as_object().and_then(|o| o.keys().next()) {
            let v: Value = r.json().await.expect("json");
            let message = v["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains(field.as_str()), "{bad}: {message}");
        }
    }
    assert_eq!(
        env.admin_json(Method::GET, "/settings", None).await["propagation_delay_secs"],
        12.5,
        "refused changes change nothing"
    );
    let c = env
        .admin_json(Method::POST, "/clock", Some(json!({"advance_secs": 60})))
        .await;
    assert_eq!(c["offset_ms"], 60_000);
    let r = env
        .admin(Method::POST, "/clock")
        .json(&json!({"advance_secs": -5}))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 400);
    for bad in [
        json!({"operation": "storage.nope", "action": {"kind": "reset"}}),
        json!({"operation": "storage.get", "action": {"kind": "explode"}}),
        json!({"operation": "storage.get", "action": {"kind": "status", "status": 200}}),
        json!({"operation": "storage.get"}),
    ] {
        let r = env
            .admin(Method::POST, "/faults")
            .json(&bad)
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status(), 400, "{bad}");
    }
    let r = env
        .admin(Method::POST, "/federated-token")
        .json(&json!({"principal": READER}))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 400, "the reader has no federated credential");
    let r = env
        .admin(Method::GET, "/nothing")
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn the_date_header_and_blob_error_times_follow_the_twin_clock() {
    let env = Env::demo().await;
    env.advance(86_400.0).await;
    let tomorrow = std::time::SystemTime::now() + std::time::Duration::from_secs(86_000);
    let date_of = |r: &reqwest::Response| {
        let v = r
            .headers()
            .get("date")
            .and_then(|v| v.to_str().ok())
            .expect("a Date header");
        httpdate::parse_http_date(v).expect("an HTTP date")
    };
    let arm = env
        .http
        .get(env.url("/metadata/endpoints?api-version=2022-09-01"));
    let vault = env.http.get(format!(
        "{}/secrets/x?api-version=7.6",
        env.ep.key_vaults["kv-datasci"].url
    ));
    for req in [arm, vault] {
        let r = req.send().await.expect("answer");
        assert!(date_of(&r) >= tomorrow, "{}", r.url());
    }
    let r = env
        .blob(
            Method::GET,
            "stdatasci001",
            "/?restype=account&comp=properties",
            "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==",
        )
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 403);
    assert!(date_of(&r) >= tomorrow);
    let text = r.text().await.expect("body");
    let time = text
        .split("\nTime:")
        .nth(1)
        .and_then(|t| t.split('<').next())
        .expect("a Time line");
    let time = chrono::DateTime::parse_from_rfc3339(time).expect("an RFC 3339 time");
    assert!(
        std::time::SystemTime::from(time) >= tomorrow,
        "Time:{time} in {text}"
    );
}
