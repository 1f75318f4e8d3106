//! Azure Monitor: diagnostic settings over ARM, `StorageBlobLogs` rows written by
//! the Blob data plane (only where a diagnostic setting sends them, visible after the
//! ingestion delay), the Log Analytics query API and its errors, and the simulated
//! "forgotten" client of the demo world.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::common::*;

const LA_SCOPE: &str = "https://api.loganalytics.io/.default";
const INSIGHTS_API: &str = "2021-05-01-preview";
const WORKSPACE_ID: &str = "4e1d2c3b-5a6f-4b7c-8d9e-0f1a2b3c4d5e";
const FORGOTTEN: &str = "10.42.7.19:52314";

fn settings_url(env: &Env, account: &str, service: &str, name: Option<&str>) -> String {
    let mut path = format!(
        "{}/{service}Services/default/providers/Microsoft.Insights/diagnosticSettings",
        env.account_id(account)
    );
    if let Some(n) = name {
        path.push('/');
        path.push_str(n);
    }
    env.arm(&path, INSIGHTS_API)
}

fn workspace_arm_id() -> String {
    format!(
        "/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.OperationalInsights/workspaces/log-datasci"
    )
}

async fn query(env: &Env, token: &str, body: Value) -> (StatusCode, Value) {
    let url = env.url(&format!("/v1/workspaces/{WORKSPACE_ID}/query"));
    body_of(
        env.req(Method::POST, &url, token)
            .json(&body)
            .send()
            .await
            .expect("answer"),
    )
    .await
}

async fn body_of(r: reqwest::Response) -> (StatusCode, Value) {
    body(r).await
}

/// The rows of a result as maps of column name to value.
fn rows(v: &Value) -> Vec<serde_json::Map<String, Value>> {
    let t = &v["tables"][0];
    let names: Vec<String> = t["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| c["name"].as_str().expect("name").to_string())
        .collect();
    t["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            names
                .iter()
                .cloned()
                .zip(r.as_array().expect("row").iter().cloned())
                .collect()
        })
        .collect()
}

async fn disable_forgotten_client(env: &Env) {
    env.admin_json(
        Method::PATCH,
        "/clients/legacy-nightly-export",
        Some(json!({"enabled": false})),
    )
    .await;
}

fn sha256_upper(key_b64: &str) -> String {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(key_b64)
        .expect("base64 key");
    ring::digest::digest(&ring::digest::SHA256, &bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}

#[tokio::test]
async fn endpoints_name_the_query_api_and_the_workspaces() {
    let env = Env::demo().await;
    let la = env.ep.log_analytics.as_ref().expect("log_analytics");
    assert_eq!(la.url, env.ep.base_url);
    assert_eq!(la.audience, "https://api.loganalytics.io");
    let ws = &env.ep.log_analytics_workspaces["log-datasci"];
    assert_eq!(ws.workspace_id, WORKSPACE_ID);
    assert_eq!(ws.id, workspace_arm_id());
}

#[tokio::test]
async fn diagnostic_settings_are_listed_read_and_refused_like_azure() {
    let env = Env::start(world_with_owner()).await;
    let reader = env.token(READER, ARM_SCOPE).await;
    let (status, list) = body(
        env.req(
            Method::GET,
            &settings_url(&env, "stdatasci001", "blob", None),
            &reader,
        )
        .send()
        .await
        .expect("answer"),
    )
    .await;
    assert_eq!(status, 200, "{list}");
    let value = list["value"].as_array().expect("value");
    assert_eq!(value.len(), 1);
    let s = &value[0];
    assert_eq!(s["name"], "blob-logs-to-log-datasci");
    assert_eq!(s["type"], "Microsoft.Insights/diagnosticSettings");
    assert_eq!(
        s["id"],
        format!(
            "{}/blobServices/default/providers/microsoft.insights/diagnosticSettings/blob-logs-to-log-datasci",
            env.account_id("stdatasci001")
        )
    );
    assert_eq!(s["properties"]["workspaceId"], workspace_arm_id());
    let cats: Vec<&str> = s["properties"]["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .filter(|l| l["enabled"] == true)
        .filter_map(|l| l["category"].as_str())
        .collect();
    assert_eq!(cats, vec!["StorageRead", "StorageWrite", "StorageDelete"]);
    // GET by name (case-insensitively), the other services, the other account.
    let (status, one) = body(
        env.req(
            Method::GET,
            &settings_url(
                &env,
                "stdatasci001",
                "blob",
                Some("BLOB-LOGS-TO-LOG-DATASCI"),
            ),
            &reader,
        )
        .send()
        .await
        .expect("answer"),
    )
    .await;
    assert_eq!(
        (status.as_u16(), &one["name"]),
        (200, &json!("blob-logs-to-log-datasci"))
    );
    for (account, service) in [
        ("stdatasci001", "file"),
        ("stdatasci001", "queue"),
        ("stdatasci001", "table"),
        ("stexternal002", "blob"),
    ] {
        let (status, v) = body(
            env.req(
                Method::GET,
                &settings_url(&env, account, service, None),
                &reader,
            )
            .send()
            .await
            .expect("answer"),
        )
        .await;
        assert_eq!(
            (status.as_u16(), v),
            (200, json!({"value": []})),
            "{account} {service}"
        );
    }
    // A missing setting: Insights' flat error body, with Azure's message.
    let (status, v) = body(
        env.req(
            Method::GET,
            &settings_url(&env, "stdatasci001", "blob", Some("nope")),
            &reader,
        )
        .send()
        .await
        .expect("answer"),
    )
    .await;
    assert_eq!(
        (status.as_u16(), v),
        (
            404,
            json!({"code": "ResourceNotFound", "message": "The diagnostic setting 'nope' doesn't exist."})
        )
    );
    // Writing needs Microsoft.Insights/diagnosticSettings/write: Reader lacks it.
    let put = json!({"properties": {"workspaceId": workspace_arm_id(), "logs": [{"category": "StorageWrite", "enabled": true}]}});
    let (status, v) = body(
        env.req(
            Method::PUT,
            &settings_url(&env, "stdatasci001", "queue", Some("q")),
            &reader,
        )
        .json(&put)
        .send()
        .await
        .expect("answer"),
    )
    .await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["error"]["code"], "AuthorizationFailed");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("'Microsoft.Insights/diagnosticSettings/write'")
            && message.contains("/storageAccounts/stdatasci001/queueServices/default'"),
        "{message}"
    );
    // Unknown api-version, other methods.
    let r = env
        .req(
            Method::GET,
            &env.arm(
                &format!(
                    "{}/blobServices/default/providers/Microsoft.Insights/diagnosticSettings",
                    env.account_id("stdatasci001")
                ),
                "2010-01-01",
            ),
            &reader,
        )
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 400);
    let r = env
        .req(
            Method::POST,
            &settings_url(&env, "stdatasci001", "blob", Some("x")),
            &reader,
        )
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 405);
}

#[tokio::test]
async fn diagnostic_settings_are_created_validated_and_deleted() {
    let env = Env::start(world_with_owner()).await;
    let owner = env.token(OWNER, ARM_SCOPE).await;
    let put = |service: &'static str, name: &'static str, body: Value| {
        let req = env
            .req(
                Method::PUT,
                &settings_url(&env, "stdatasci001", service, Some(name)),
                &owner,
            )
            .json(&body);
        async move { body_of(req.send().await.expect("answer")).await }
    };
    let ws = workspace_arm_id();
    // The same sink for the same category from a second setting is refused.
    let (status, v) = put("blob", "second", json!({"properties": {"workspaceId": ws, "logs": [{"categoryGroup": "allLogs", "enabled": true}]}})).await;
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["code"], "Conflict");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or_default()
            .contains("already used in diagnostic setting 'blob-logs-to-log-datasci'"),
        "{v}"
    );
    for (body, why) in [
        (
            json!({"properties": {"logs": [{"category": "StorageRead", "enabled": true}]}}),
            "no destination",
        ),
        (
            json!({"properties": {"workspaceId": ws, "logs": [{"category": "AuditEvent", "enabled": true}]}}),
            "a category storage does not have",
        ),
        (
            json!({"properties": {"workspaceId": format!("{ws}-missing"), "logs": [{"category": "StorageRead", "enabled": true}]}}),
            "an unknown workspace",
        ),
        (
            json!({"properties": {"workspaceId": ws, "logs": [{"category": "StorageRead", "categoryGroup": "allLogs", "enabled": true}]}}),
            "category and group",
        ),
        (
            json!({"properties": {"workspaceId": ws, "logs": [{"category": "StorageRead"}]}}),
            "no enabled",
        ),
        (json!({"name": "x"}), "no properties"),
    ] {
        let (status, v) = put("file", "f", body).await;
        assert_eq!(
            (status.as_u16(), &v["code"]),
            (400, &json!("BadRequest")),
            "{why}: {v}"
        );
    }
    // A valid setting on the file service, then an update, then delete.
    let (status, v) = put("file", "files", json!({"properties": {"workspaceId": ws, "logs": [{"categoryGroup": "audit", "enabled": true}], "metrics": [{"category": "Transaction", "enabled": true}]}})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["properties"]["logs"][0]["categoryGroup"], "audit");
    assert_eq!(
        v["properties"]["logs"][0]["retentionPolicy"],
        json!({"enabled": false, "days": 0})
    );
    assert_eq!(v["properties"]["metrics"][0]["category"], "Transaction");
    let (status, v) = put("file", "FILES", json!({"properties": {"storageAccountId": env.account_id("stexternal002"), "logs": [{"category": "StorageRead", "enabled": true}]}})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["name"], "files", "an update keeps the first spelling");
    assert!(v["properties"].get("workspaceId").is_none());
    let state = env.state().await;
    let files: Vec<&Value> = state["diagnostic_settings"]
        .as_array()
        .expect("settings")
        .iter()
        .filter(|s| s["service"] == "file")
        .collect();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0]["categories"], json!(["StorageRead"]));
    let del = |name: &'static str| {
        env.req(
            Method::DELETE,
            &settings_url(&env, "stdatasci001", "file", Some(name)),
            &owner,
        )
        .send()
    };
    assert_eq!(del("files").await.expect("answer").status(), 200);
    assert_eq!(del("files").await.expect("answer").status(), 204);
    // Five settings per resource at most.
    for (i, name) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
        let body = json!({"properties": {"storageAccountId": env.account_id("stexternal002"), "metrics": [{"category": "Transaction", "enabled": i % 2 == 0}]}});
        let (status, v) = put("table", name, body).await;
        assert_eq!(status, 200, "{name}: {v}");
    }
    let (status, v) = put("table", "f", json!({"properties": {"storageAccountId": env.account_id("stexternal002"), "metrics": [{"category": "Transaction", "enabled": true}]}})).await;
    assert_eq!(status, 400, "{v}");
}

#[tokio::test]
async fn blob_requests_become_storage_blob_logs_rows_after_the_ingestion_delay() {
    let env = Env::demo().await;
    disable_forgotten_client(&env).await;
    env.settings(json!({"log_ingestion_delay_secs": 120.0}))
        .await;
    let state = env.state().await;
    let key1 = key_of(&state, "stdatasci001", "key1");
    let la = env.token(OPERATOR, LA_SCOPE).await;
    let ours = "StorageBlobLogs | where CallerIpAddress startswith '127.0.0.1:' | project TimeGenerated, AccountName, OperationName, AuthenticationType, AuthenticationHash, CallerIpAddress, UserAgentHeader, StatusCode, StatusText, Uri, TenantId, Type, Category, OperationVersion, ClientRequestId, CorrelationId, _ResourceId";

    let r = env
        .blob_with(
            Method::GET,
            "stdatasci001",
            "/?restype=account&comp=properties",
            &key1,
            &[("x-ms-client-request-id", "req-1")],
        )
        .header("user-agent", "keyflip-test/1.0 (probe)")
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200);
    let request_id = r.headers()["x-ms-request-id"]
        .to_str()
        .expect("id")
        .to_string();
    // Refused: a wrong key (logged, no hash); anonymous (not logged); another
    // account without a diagnostic setting (not logged).
    let wrong =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
    assert_eq!(env.probe("stdatasci001", wrong).await, 403);
    let anon = env
        .http
        .get(env.url("/stdatasci001/?restype=account&comp=properties"))
        .send()
        .await
        .expect("answer");
    assert_eq!(anon.status(), 401);
    let k_ext = key_of(&state, "stexternal002", "key1");
    assert_eq!(env.probe("stexternal002", &k_ext).await, 200);

    let (status, v) = query(&env, &la, json!({"query": ours})).await;
    assert_eq!(status, 200, "{v}");
    assert!(rows(&v).is_empty(), "not ingested yet: {v}");
    env.advance(121.0).await;
    let (status, v) = query(&env, &la, json!({"query": ours})).await;
    assert_eq!(status, 200, "{v}");
    let got = rows(&v);
    assert_eq!(got.len(), 2, "{v}");
    let ok = got
        .iter()
        .find(|r| r["StatusCode"] == "200")
        .expect("the accepted probe");
    assert_eq!(ok["AccountName"], "stdatasci001");
    assert_eq!(ok["OperationName"], "GetAccountInformation");
    assert_eq!(ok["AuthenticationType"], "AccountKey");
    assert_eq!(
        ok["AuthenticationHash"],
        format!("key1({})", sha256_upper(&key1))
    );
    assert_eq!(ok["UserAgentHeader"], "keyflip-test/1.0 (probe)");
    assert_eq!(ok["StatusText"], "Success");
    assert_eq!(ok["Category"], "StorageRead");
    assert_eq!(ok["OperationVersion"], "2023-11-03");
    assert_eq!(ok["ClientRequestId"], "req-1");
    assert_eq!(ok["CorrelationId"], request_id.as_str());
    assert_eq!(ok["TenantId"], WORKSPACE_ID);
    assert_eq!(ok["Type"], "StorageBlobLogs");
    assert_eq!(
        ok["_ResourceId"],
        format!("{}/blobservices/default", env.account_id("stdatasci001")).to_ascii_lowercase()
    );
    assert_eq!(
        ok["Uri"],
        format!(
            "{}/stdatasci001/?restype=account&comp=properties",
            env.ep.base_url
        )
    );
    let caller = ok["CallerIpAddress"].as_str().expect("caller");
    assert!(caller.parse::<std::net::SocketAddr>().is_ok(), "{caller}");
    let refused = got
        .iter()
        .find(|r| r["StatusCode"] == "403")
        .expect("the refused probe");
    assert_eq!(refused["AuthenticationType"], "AccountKey");
    assert_eq!(refused["AuthenticationHash"], "");
    assert_eq!(refused["StatusText"], "AuthenticationError");
    // Column types as the query API reports them.
    let types: Value = v["tables"][0]["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_string(),
                c["type"].clone(),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into();
    assert_eq!(types["TimeGenerated"], "datetime");
    assert_eq!(types["StatusCode"], "string");
}

#[tokio::test]
async fn the_query_api_answers_and_refuses_with_log_analytics_shapes() {
    let env = Env::start(world_with_owner()).await;
    disable_forgotten_client(&env).await;
    let la = env.token(OPERATOR, LA_SCOPE).await;
    let url = env.url(&format!("/v1/workspaces/{WORKSPACE_ID}/query"));
    let shape = |v: &Value, status: StatusCode, code: &str| {
        assert_eq!(v["error"]["code"], code, "{status}: {v}");
        assert!(v["error"]["message"].is_string(), "{v}");
        assert!(v["error"]["correlationId"].is_string(), "{v}");
    };
    // No token, a token for another resource, a principal without access.
    let (status, v) = body_of(
        env.http
            .post(&url)
            .json(&json!({"query": "StorageBlobLogs"}))
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(status, 401);
    shape(&v, status, "AuthorizationRequiredError");
    let arm = env.token(OPERATOR, ARM_SCOPE).await;
    let (status, v) = query(&env, &arm, json!({"query": "StorageBlobLogs"})).await;
    assert_eq!(status, 403);
    shape(&v, status, "InvalidTokenError");
    let stranger = env.token(STRANGER, LA_SCOPE).await;
    let (status, v) = query(
        &env,
        &stranger,
        json!({"query": "StorageBlobLogs | take 1"}),
    )
    .await;
    assert_eq!(status, 403);
    shape(&v, status, "InsufficientAccessError");
    // Unknown workspace and path.
    let (status, v) = body_of(
        env.req(
            Method::POST,
            &env.url("/v1/workspaces/00000000-0000-0000-0000-000000000000/query"),
            &la,
        )
        .json(&json!({"query": "StorageBlobLogs"}))
        .send()
        .await
        .expect("answer"),
    )
    .await;
    assert_eq!(status, 404);
    shape(&v, status, "PathNotFoundError");
    let (status, v) = body_of(
        env.req(Method::POST, &env.url("/v1/nothing"), &la)
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(status, 404);
    shape(&v, status, "PathNotFoundError");
    // Query errors: BadArgumentError with the inner Kusto error.
    let (status, v) = query(&env, &la, json!({"query": "StorageBlobLogs | wher x"})).await;
    assert_eq!(status, 400);
    shape(&v, status, "BadArgumentError");
    assert_eq!(
        v["error"]["message"],
        "The request had some invalid properties"
    );
    assert_eq!(v["error"]["innererror"]["code"], "SyntaxError");
    assert_eq!(v["error"]["innererror"]["innererror"]["code"], "SYN0002");
    assert_eq!(v["error"]["innererror"]["innererror"]["line"], 1);
    let (status, v) = query(&env, &la, json!({"query": "StorageBlobLog | take 1"})).await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["innererror"]["code"], "SemanticError");
    assert_eq!(
        v["error"]["innererror"]["innererror"]["message"],
        "'take' operator: Failed to resolve table or column expression named 'StorageBlobLog'"
    );
    let (status, v) = query(
        &env,
        &la,
        json!({"query": "StorageBlobLogs | extend x = 1"}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        v["error"]["innererror"]["innererror"]["code"],
        "KeyflipTwinUnsupported"
    );
    for bad in [
        json!({}),
        json!({"query": 5}),
        json!({"query": "StorageBlobLogs", "timespan": "yesterday"}),
        json!({"query": "StorageBlobLogs", "workspaces": ["another"]}),
    ] {
        let (status, v) = query(&env, &la, bad.clone()).await;
        assert_eq!(status, 400, "{bad}");
        shape(&v, status, "BadArgumentError");
    }
    // An empty answer has Azure's shape: one PrimaryResult table.
    let (status, v) = query(
        &env,
        &la,
        json!({"query": "StorageBlobLogs | summarize count()"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v["tables"][0]["name"], "PrimaryResult");
    assert_eq!(
        v["tables"][0]["columns"],
        json!([{"name": "count_", "type": "long"}])
    );
    assert_eq!(v["tables"][0]["rows"], json!([[0]]));
    // The spec's GET form.
    let (status, v) = body_of(
        env.req(
            Method::GET,
            &format!("{url}?query=StorageBlobLogs%20%7C%20count"),
            &la,
        )
        .send()
        .await
        .expect("answer"),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["tables"][0]["columns"][0]["name"], "Count");
    // The request log names the operation and the principal.
    let log = env.requests().await;
    assert!(log.iter().any(|e| e["operation"] == "loganalytics.query"
        && e["principal"] == OPERATOR
        && e["status"] == 200));
}

#[tokio::test]
async fn the_timespan_parameter_narrows_the_window() {
    let env = Env::demo().await;
    disable_forgotten_client(&env).await;
    let k1 = key_of(&env.state().await, "stdatasci001", "key1");
    assert_eq!(env.probe("stdatasci001", &k1).await, 200);
    env.advance(7200.0).await;
    let la = env.token(OPERATOR, LA_SCOPE).await;
    let count = |timespan: Value| {
        let la = la.clone();
        let env = &env;
        async move {
            let (status, v) = query(env, &la, json!({"query": "StorageBlobLogs | where CallerIpAddress startswith '127.0.0.1:' | count", "timespan": timespan})).await;
            assert_eq!(status, 200, "{v}");
            v["tables"][0]["rows"][0][0].clone()
        }
    };
    assert_eq!(count(Value::Null).await, 1);
    assert_eq!(count(json!("PT1H")).await, 0);
    assert_eq!(count(json!("PT10800.0S")).await, 1);
}

#[tokio::test]
async fn the_forgotten_client_signs_with_its_stale_key_until_it_is_turned_off() {
    let env = Env::demo().await;
    // Rows visible at once, so counts are exact at each step.
    env.settings(json!({"log_ingestion_delay_secs": 0.0})).await;
    let la = env.token(OPERATOR, LA_SCOPE).await;
    let state = env.state().await;
    let key1 = key_of(&state, "stdatasci001", "key1");
    let clients = env.admin_json(Method::GET, "/clients", None).await;
    assert_eq!(clients[0]["name"], "legacy-nightly-export");
    assert_eq!(clients[0]["key"], "key1");
    assert!(
        !clients.to_string().contains(&key1),
        "the admin API never shows the key"
    );

    // Five minutes at one request every 30 s: 11 requests (one at start), all
    // accepted with key1.
    env.advance(300.0).await;
    let q = format!(
        "StorageBlobLogs | where CallerIpAddress == '{FORGOTTEN}' | summarize n = count(), ok = countif(StatusCode == '200'), last = max(TimeGenerated) by AuthenticationHash, UserAgentHeader, OperationName"
    );
    let (status, v) = query(&env, &la, json!({"query": q})).await;
    assert_eq!(status, 200, "{v}");
    let got = rows(&v);
    assert_eq!(got.len(), 1, "{v}");
    assert_eq!(
        got[0]["AuthenticationHash"],
        format!("key1({})", sha256_upper(&key1))
    );
    assert_eq!(got[0]["OperationName"], "ListContainers");
    assert!(
        got[0]["UserAgentHeader"]
            .as_str()
            .unwrap_or_default()
            .contains("nightly-export")
    );
    let before = got[0]["n"].as_i64().expect("n");
    assert!((10..=11).contains(&before), "{v}");
    assert_eq!(got[0]["ok"], got[0]["n"]);

    // key1 regenerated behind its back: the next requests fail, with no hash.
    let r = env
        .admin(Method::POST, "/storage/stdatasci001/regenerate/key1")
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200);
    env.advance(90.0).await;
    let q = format!(
        "StorageBlobLogs | where CallerIpAddress == '{FORGOTTEN}' | summarize n = count() by StatusCode, AuthenticationHash"
    );
    let (_, v) = query(&env, &la, json!({"query": q})).await;
    let refused = rows(&v)
        .into_iter()
        .find(|r| r["StatusCode"] == "403")
        .expect("refused requests after the regeneration");
    assert_eq!(refused["AuthenticationHash"], "");
    assert_eq!(refused["n"], 3);

    // Turned off: no more requests, even after an hour.
    let off = env
        .admin_json(
            Method::PATCH,
            "/clients/legacy-nightly-export",
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(off["enabled"], false);
    let total = |v: &Value| {
        rows(v)
            .iter()
            .map(|r| r["n"].as_i64().unwrap_or(0))
            .sum::<i64>()
    };
    let (_, v) = query(&env, &la, json!({"query": q})).await;
    let stopped_at = total(&v);
    env.advance(3600.0).await;
    let la = env.token(OPERATOR, LA_SCOPE).await;
    let (_, v) = query(&env, &la, json!({"query": q})).await;
    assert_eq!(total(&v), stopped_at);
    // Back on, it resumes now, not over the hour it was off.
    env.admin_json(
        Method::PATCH,
        "/clients/legacy-nightly-export",
        Some(json!({"enabled": true})),
    )
    .await;
    env.advance(1.0).await;
    let (_, v) = query(&env, &la, json!({"query": q})).await;
    assert_eq!(total(&v), stopped_at + 1);
    let r = env
        .admin(Method::PATCH, "/clients/nope")
        .json(&json!({"enabled": false}))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 404);
    let r = env
        .admin(Method::PATCH, "/clients/legacy-nightly-export")
        .json(&json!({"enabled": "no"}))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn a_world_can_start_with_the_client_off() {
    let mut world = keyflip_twin::World::demo();
    assert!(world.set_client_enabled("legacy-nightly-export", false));
    assert!(!world.set_client_enabled("nobody", false));
    let env = Env::start(world).await;
    let la = env.token(OPERATOR, LA_SCOPE).await;
    env.advance(600.0).await;
    let (status, v) = query(&env, &la, json!({"query": format!("StorageBlobLogs | where CallerIpAddress == '{FORGOTTEN}' | count")})).await;
    assert_eq!(status, 200);
    assert_eq!(v["tables"][0]["rows"], json!([[0]]));
}

/// Faults on the query API answer in its own error shape.
#[tokio::test]
async fn faults_on_the_query_api_use_its_error_shape() {
    let env = Env::demo().await;
    let la = env.token(OPERATOR, LA_SCOPE).await;
    env.fault(json!({"operation": "loganalytics.query", "action": {"kind": "status", "status": 503, "retry_after": 7}}))
        .await;
    let url = env.url(&format!("/v1/workspaces/{WORKSPACE_ID}/query"));
    let r = env
        .req(Method::POST, &url, &la)
        .json(&json!({"query": "StorageBlobLogs | count"}))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "7");
    let (_, v) = body(r).await;
    assert_eq!(v["error"]["code"], "ServerBusy");
    assert!(v["error"]["correlationId"].is_string());
    let (status, _) = query(&env, &la, json!({"query": "StorageBlobLogs | count"})).await;
    assert_eq!(status, 200);
}
