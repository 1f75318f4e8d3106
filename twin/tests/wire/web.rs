//! App Service: site and slot GET, app settings and connection strings (list is a
//! POST, a PUT replaces the whole collection and restarts the app), slotConfigNames,
//! Key Vault references refetched at restart and after 24 hours, RBAC refusals,
//! faults and throttling.

use reqwest::Method;
use serde_json::{Value, json};

use super::common::*;

pub const WEB_API: &str = "2024-11-01";
pub const SITE: &str = "func-datasci-ingest";

pub fn site_id() -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Web/sites/{SITE}")
}

pub fn staging_id() -> String {
    format!("{}/slots/staging", site_id())
}

pub async fn call(env: &Env, m: Method, path: &str, token: &str, b: Option<Value>) -> (u16, Value) {
    let mut r = env.req(m, &env.arm(path, WEB_API), token);
    if let Some(b) = b {
        r = r.json(&b);
    }
    let (s, v) = body(r.send().await.expect("answer")).await;
    (s.as_u16(), v)
}

/// A connection string for stdatasci001 in the form the demo world's consumers hold.
fn connection_string(env: &Env, state: &Value, key: &str) -> String {
    format!(
        "DefaultEndpointsProtocol=https;AccountName=stdatasci001;AccountKey={};BlobEndpoint={}",
        key_of(state, "stdatasci001", key),
        env.ep.storage_accounts["stdatasci001"].blob_endpoint
    )
}

#[tokio::test]
async fn sites_and_slots_report_their_kind() {
    let env = Env::demo().await;
    let t = env.token(READER, ARM_SCOPE).await;
    let (s, site) = call(&env, Method::GET, &site_id(), &t, None).await;
    assert_eq!(s, 200, "{site}");
    assert_eq!(site["kind"], "functionapp");
    assert_eq!(site["type"], "Microsoft.Web/sites");
    assert_eq!(site["id"], site_id());
    assert_eq!(site["properties"]["sku"], "Standard");
    assert_eq!(site["properties"]["reserved"], false);
    assert_eq!(site["location"], "West Europe");
    let (s, slot) = call(&env, Method::GET, &staging_id(), &t, None).await;
    assert_eq!(s, 200, "{slot}");
    assert_eq!(slot["name"], format!("{SITE}/staging"));
    assert_eq!(slot["type"], "Microsoft.Web/sites/slots");
    assert_eq!(
        slot["properties"]["defaultHostName"],
        format!("{SITE}-staging.azurewebsites.net")
    );
    assert_eq!(env.ep.web_apps[SITE].kind, "functionapp");
    assert_eq!(env.ep.web_apps[SITE].slots, vec!["staging".to_string()]);

    let missing = site_id().replace(SITE, "func-nope");
    let (s, v) = call(&env, Method::GET, &missing, &t, None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("ResourceNotFound"))
    );
    let (s, v) = call(
        &env,
        Method::GET,
        &format!("{}/slots/qa", site_id()),
        &t,
        None,
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("ResourceNotFound"))
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("sites/func-datasci-ingest/slots/qa")
    );
    // No api-version, wrong method.
    let url = env.url(&site_id());
    let (s, v) = body(env.req(Method::GET, &url, &t).send().await.expect("answer")).await;
    assert_eq!(
        (s.as_u16(), v["error"]["code"].as_str()),
        (400, Some("MissingApiVersionParameter"))
    );
    let (s, _) = call(&env, Method::DELETE, &site_id(), &t, None).await;
    assert_eq!(s, 405);
}

#[tokio::test]
async fn app_settings_are_listed_by_post_and_replaced_whole_by_put_which_restarts_the_app() {
    let env = Env::demo().await;
    let t = env.token(OPERATOR, ARM_SCOPE).await;
    let state = env.state().await;
    let list = format!("{}/config/appsettings/list", site_id());
    let (s, v) = call(&env, Method::POST, &list, &t, None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["name"], "appsettings");
    assert_eq!(v["type"], "Microsoft.Web/sites/config");
    assert_eq!(v["id"], format!("{}/config/appsettings", site_id()));
    let held = v["properties"]["AzureWebJobsStorage"]
        .as_str()
        .expect("setting");
    assert_eq!(
        held,
        connection_string(&env, &state, "key1"),
        "AzureWebJobsStorage holds key1"
    );
    assert_eq!(
        held,
        state["web_apps"][SITE]["appSettings"]["AzureWebJobsStorage"]
    );
    let reference = v["properties"]["DATASCI_STORAGE_CONNECTION"]
        .as_str()
        .expect("reference");
    assert_eq!(
        reference,
        format!(
            "@Microsoft.KeyVault(SecretUri={}/secrets/stdatasci001-connection-string/)",
            env.ep.key_vaults["kv-datasci"].url
        )
    );
    assert_eq!(state["web_apps"][SITE]["restarts"], 0);

    // A PUT replaces the collection: what it leaves out is gone.
    let mut props = v["properties"].as_object().cloned().expect("object");
    props.remove("DATASCI_STORAGE_CONNECTION");
    props.insert(
        "AzureWebJobsStorage".into(),
        json!("UseDevelopmentStorage=false"),
    );
    env.advance(5.0).await;
    let put = format!("{}/config/appsettings", site_id());
    let (s, out) = call(
        &env,
        Method::PUT,
        &put,
        &t,
        Some(json!({"properties": props})),
    )
    .await;
    assert_eq!(s, 200, "{out}");
    assert_eq!(out["properties"], Value::Object(props.clone()));
    let (_, again) = call(&env, Method::POST, &list, &t, None).await;
    assert_eq!(again["properties"], Value::Object(props));
    assert!(
        again["properties"]
            .get("DATASCI_STORAGE_CONNECTION")
            .is_none()
    );

    // The write restarted the production slot, on the twin clock, and nothing else.
    let after = env.state().await;
    let app = &after["web_apps"][SITE];
    assert_eq!(app["restarts"], 1);
    let clock = env.admin_json(Method::GET, "/clock", None).await;
    let last = app["lastRestart"].as_str().expect("restart time");
    assert!(
        last[..16] == clock["now"].as_str().expect("now")[..16],
        "{last} vs {clock}"
    );
    assert_eq!(app["slots"]["staging"]["restarts"], 0);
    // The site shows the configuration change.
    let (_, site) = call(&env, Method::GET, &site_id(), &t, None).await;
    assert_eq!(
        site["properties"]["lastModifiedTimeUtc"]
            .as_str()
            .map(|s| &s[..16]),
        Some(&last[..16])
    );
}

#[tokio::test]
async fn slots_have_their_own_settings_and_restarts() {
    let env = Env::demo().await;
    let t = env.token(OPERATOR, ARM_SCOPE).await;
    let (s, v) = call(
        &env,
        Method::POST,
        &format!("{}/config/appsettings/list", staging_id()),
        &t,
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["type"], "Microsoft.Web/sites/slots/config");
    assert_eq!(v["id"], format!("{}/config/appsettings", staging_id()));
    assert!(
        v["properties"]["AzureWebJobsStorage"]
            .as_str()
            .is_some_and(|s| s.starts_with("@Microsoft.KeyVault("))
    );
    let body = json!({"properties": {"FUNCTIONS_EXTENSION_VERSION": "~4", "ONLY_IN_STAGING": "1"}});
    let (s, _) = call(
        &env,
        Method::PUT,
        &format!("{}/config/appsettings", staging_id()),
        &t,
        Some(body),
    )
    .await;
    assert_eq!(s, 200);
    let state = env.state().await;
    let app = &state["web_apps"][SITE];
    assert_eq!(app["slots"]["staging"]["restarts"], 1);
    assert_eq!(
        app["slots"]["staging"]["appSettings"]["ONLY_IN_STAGING"],
        "1"
    );
    assert_eq!(app["restarts"], 0);
    assert!(app["appSettings"].get("ONLY_IN_STAGING").is_none());
}

#[tokio::test]
async fn connection_strings_keep_their_type_and_bad_bodies_get_app_services_error() {
    let env = Env::demo().await;
    let t = env.token(OPERATOR, ARM_SCOPE).await;
    let state = env.state().await;
    let cs = connection_string(&env, &state, "key1");
    let list = format!("{}/config/connectionstrings/list", site_id());
    let (s, v) = call(&env, Method::POST, &list, &t, None).await;
    assert_eq!((s, v["properties"].clone()), (200, json!({})));
    let put = format!("{}/config/connectionstrings", site_id());
    let dict = json!({"Storage": {"value": cs, "type": "Custom"}, "Db": {"value": "Server=tcp:x", "type": "sqlazure"}});
    let (s, out) = call(
        &env,
        Method::PUT,
        &put,
        &t,
        Some(json!({"properties": dict})),
    )
    .await;
    assert_eq!(s, 200, "{out}");
    assert_eq!(out["name"], "connectionstrings");
    let (_, v) = call(&env, Method::POST, &list, &t, None).await;
    assert_eq!(
        v["properties"]["Storage"],
        json!({"value": cs, "type": "Custom"})
    );
    assert_eq!(
        v["properties"]["Db"]["type"], "SQLAzure",
        "types are canonicalised"
    );
    assert_eq!(env.state().await["web_apps"][SITE]["restarts"], 1);

    for bad in [
        json!({"properties": {"X": {"value": "v", "type": "Oracle"}}}),
        json!({"properties": {"X": {"type": "Custom"}}}),
        json!({"properties": "nope"}),
        json!({}),
    ] {
        let (s, v) = call(&env, Method::PUT, &put, &t, Some(bad.clone())).await;
        assert_eq!(
            (s, v["Code"].as_str()),
            (400, Some("BadRequest")),
            "{bad}: {v}"
        );
        assert_eq!(v["Details"][2]["ErrorEntity"]["ExtendedCode"], "51008");
        assert!(
            v["Message"]
                .as_str()
                .unwrap_or("")
                .starts_with("The parameter properties"),
            "{v}"
        );
    }
    let (s, v) = call(
        &env,
        Method::PUT,
        &format!("{}/config/appsettings", site_id()),
        &t,
        Some(json!({"properties": {"N": 1}})),
    )
    .await;
    assert_eq!(
        (s, v["Message"].as_str()),
        (
            400,
            Some("The parameter properties.N has an invalid value.")
        )
    );
    // Refused writes changed nothing and restarted nothing.
    let after = env.state().await;
    assert_eq!(after["web_apps"][SITE]["restarts"], 1);
    assert_eq!(
        after["web_apps"][SITE]["connectionStrings"]["Storage"]["value"],
        cs
    );
}

#[tokio::test]
async fn there_is_no_concurrency_control_the_last_writer_wins() {
    let env = Env::demo().await;
    let t = env.token(OPERATOR, ARM_SCOPE).await;
    let list = format!("{}/config/appsettings/list", site_id());
    let put = format!("{}/config/appsettings", site_id());
    let (_, first) = call(&env, Method::POST, &list, &t, None).await;
    // Someone else writes between our list and our PUT.
    let mut theirs = first["properties"].as_object().cloned().expect("object");
    theirs.insert("ADDED_BY_SOMEONE_ELSE".into(), json!("1"));
    let (s, _) = call(
        &env,
        Method::PUT,
        &put,
        &t,
        Some(json!({"properties": theirs})),
    )
    .await;
    assert_eq!(s, 200);
    // Our PUT, built from the stale list and carrying an If-Match, is accepted anyway.
    let mut ours = first["properties"].as_object().cloned().expect("object");
    ours.insert("OURS".into(), json!("1"));
    let r = env
        .req(Method::PUT, &env.arm(&put, WEB_API), &t)
        .header("if-match", "\"some-etag\"")
        .json(&json!({"properties": ours}))
        .send()
        .await
        .expect("answer");
    assert_eq!(
        r.status(),
        200,
        "App Service declares no If-Match on this PUT"
    );
    let (_, now) = call(&env, Method::POST, &list, &t, None).await;
    assert!(
        now["properties"].get("ADDED_BY_SOMEONE_ELSE").is_none(),
        "the other write is lost"
    );
    assert_eq!(now["properties"]["OURS"], "1");
    assert_eq!(env.state().await["web_apps"][SITE]["restarts"], 2);
}

#[tokio::test]
async fn slot_config_names_say_which_settings_are_sticky() {
    let env = Env::demo().await;
    let t = env.token(OPERATOR, ARM_SCOPE).await;
    let path = format!("{}/config/slotConfigNames", site_id());
    let (s, v) = call(&env, Method::GET, &path, &t, None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["name"], "slotConfigNames");
    assert_eq!(
        v["properties"]["appSettingNames"],
        json!(["AzureWebJobsStorage"])
    );
    assert_eq!(v["properties"]["connectionStringNames"], json!([]));
    let names = json!({"properties": {"appSettingNames": ["AzureWebJobsStorage", "X"], "connectionStringNames": ["Storage"]}});
    let (s, v) = call(&env, Method::PUT, &path, &t, Some(names)).await;
    assert_eq!(s, 200, "{v}");
    let (_, v) = call(&env, Method::GET, &path, &t, None).await;
    assert_eq!(
        v["properties"]["appSettingNames"],
        json!(["AzureWebJobsStorage", "X"])
    );
    assert_eq!(v["properties"]["connectionStringNames"], json!(["Storage"]));
    let state = env.state().await;
    assert_eq!(
        state["web_apps"][SITE]["slotConfigNames"]["appSettingNames"],
        json!(["AzureWebJobsStorage", "X"])
    );
    assert_eq!(
        state["web_apps"][SITE]["restarts"], 0,
        "slotConfigNames is not a settings write"
    );
    // It belongs to the app, not to a slot.
    let (s, _) = call(
        &env,
        Method::GET,
        &format!("{}/config/slotConfigNames", staging_id()),
        &t,
        None,
    )
    .await;
    assert_eq!(s, 404);
    let (s, v) = call(
        &env,
        Method::PUT,
        &path,
        &t,
        Some(json!({"properties": {"appSettingNames": [1]}})),
    )
    .await;
    assert_eq!((s, v["Code"].as_str()), (400, Some("BadRequest")));
}

#[tokio::test]
async fn key_vault_references_are_refetched_at_restart_and_after_24_hours() {
    let env = Env::demo().await;
    let state = env.state().await;
    let current = |s: &Value| {
        s["key_vaults"]["kv-datasci"]["secrets"]["stdatasci001-connection-string"]
            .as_array()
            .and_then(|v| v.last())
            .map(|v| v["version"].clone())
            .expect("a version")
    };
    let r = &state["web_apps"][SITE]["keyVaultReferences"]["DATASCI_STORAGE_CONNECTION"];
    assert_eq!(r["status"], "Resolved", "{r}");
    assert_eq!(r["vault"], "kv-datasci");
    assert_eq!(r["secret"], "stdatasci001-connection-string");
    assert_eq!(r["version"], current(&state));
    assert_eq!(
        state["web_apps"][SITE]["slots"]["staging"]["keyVaultReferences"]["AzureWebJobsStorage"]["status"],
        "Resolved"
    );

    // A new secret version: the app keeps the cached one.
    let kv = env.token(OPERATOR, VAULT_SCOPE).await;
    let url = format!(
        "{}/secrets/stdatasci001-connection-string?api-version=7.5",
        env.ep.key_vaults["kv-datasci"].url
    );
    let r = env
        .req(Method::PUT, &url, &kv)
        .json(&json!({"value": "rotated"}))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200);
    env.advance(3600.0).await;
    let later = env.state().await;
    let held = &later["web_apps"][SITE]["keyVaultReferences"]["DATASCI_STORAGE_CONNECTION"];
    assert_eq!(held["version"], current(&state));
    assert_ne!(held["version"], current(&later));
    // After 24 hours of cache the app refetches it.
    env.advance(23.0 * 3600.0).await;
    let day = env.state().await;
    let held = &day["web_apps"][SITE]["keyVaultReferences"]["DATASCI_STORAGE_CONNECTION"];
    assert_eq!(held["version"], current(&day));
    // The staging slot, restarted by a settings write, refetches at once (fresh
    // tokens: a day has passed on the twin clock).
    let kv = env.token(OPERATOR, VAULT_SCOPE).await;
    let t = env.token(OPERATOR, ARM_SCOPE).await;
    let another = env
        .req(Method::PUT, &url, &kv)
        .json(&json!({"value": "again"}))
        .send()
        .await
        .expect("answer");
    assert_eq!(another.status(), 200);
    let list = format!("{}/config/appsettings/list", staging_id());
    let (_, v) = call(&env, Method::POST, &list, &t, None).await;
    let (s, _) = call(
        &env,
        Method::PUT,
        &format!("{}/config/appsettings", staging_id()),
        &t,
        Some(json!({"properties": v["properties"]})),
    )
    .await;
    assert_eq!(s, 200);
    let after = env.state().await;
    assert_eq!(
        after["web_apps"][SITE]["slots"]["staging"]["keyVaultReferences"]["AzureWebJobsStorage"]["version"],
        current(&after)
    );
    assert_ne!(
        after["web_apps"][SITE]["keyVaultReferences"]["DATASCI_STORAGE_CONNECTION"]["version"],
        current(&after)
    );
}

#[tokio::test]
async fn a_reader_may_look_but_not_list_or_write_settings() {
    let env = Env::demo().await;
    let t = env.token(READER, ARM_SCOPE).await;
    let (s, _) = call(
        &env,
        Method::GET,
        &format!("{}/config/slotConfigNames", site_id()),
        &t,
        None,
    )
    .await;
    assert_eq!(
        s, 200,
        "Reader's */read covers Microsoft.Web/sites/config/read"
    );
    for (m, path, action) in [
        (
            Method::POST,
            format!("{}/config/appsettings/list", site_id()),
            "Microsoft.Web/sites/config/list/action",
        ),
        (
            Method::POST,
            format!("{}/config/connectionstrings/list", staging_id()),
            "Microsoft.Web/sites/slots/config/list/action",
        ),
        (
            Method::PUT,
            format!("{}/config/appsettings", site_id()),
            "Microsoft.Web/sites/config/write",
        ),
        (
            Method::PUT,
            format!("{}/config/connectionstrings", staging_id()),
            "Microsoft.Web/sites/slots/config/write",
        ),
    ] {
        let b = (m == Method::PUT).then(|| json!({"properties": {}}));
        let (s, v) = call(&env, m, &path, &t, b).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (403, Some("AuthorizationFailed")),
            "{path}"
        );
        let scope = path.trim_end_matches("/list");
        let oid = &env.ep.principals[READER].object_id;
        assert_eq!(
            v["error"]["message"],
            format!(
                "The client '{oid}' with object id '{oid}' does not have authorization to perform action '{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please refresh your credentials."
            )
        );
    }
    assert_eq!(env.state().await["web_apps"][SITE]["restarts"], 0);
}

#[tokio::test]
async fn faults_and_throttling_apply_to_settings_operations() {
    let env = Env::demo().await;
    let t = env.token(OPERATOR, ARM_SCOPE).await;
    let put = format!("{}/config/appsettings", site_id());
    let list = format!("{}/config/appsettings/list", site_id());
    env.fault(json!({"operation": "web.appSettings.put", "action": {"kind": "status", "status": 503, "retry_after": 3}})).await;
    let (s, v) = call(
        &env,
        Method::PUT,
        &put,
        &t,
        Some(json!({"properties": {"A": "1"}})),
    )
    .await;
    assert_eq!((s, v["error"]["code"].as_str()), (503, Some("ServerBusy")));
    assert_eq!(
        env.state().await["web_apps"][SITE]["restarts"],
        0,
        "nothing happened"
    );
    // `after`: the write lands and restarts the app, the client hears an error.
    env.fault(json!({"operation": "web.appSettings.put", "target": "/slots/staging/", "action": {"kind": "after", "status": 500}})).await;
    let (s, _) = call(
        &env,
        Method::PUT,
        &format!("{}/config/appsettings", staging_id()),
        &t,
        Some(json!({"properties": {"B": "2"}})),
    )
    .await;
    assert_eq!(s, 500);
    let state = env.state().await;
    assert_eq!(
        state["web_apps"][SITE]["slots"]["staging"]["appSettings"],
        json!({"B": "2"})
    );
    assert_eq!(state["web_apps"][SITE]["slots"]["staging"]["restarts"], 1);

    // The list is a POST: it draws on the subscription's write budget.
    env.settings(json!({"arm_write_burst": 1, "arm_write_refill_per_sec": 0.5}))
        .await;
    let (s, _) = call(&env, Method::POST, &list, &t, None).await;
    assert_eq!(s, 200);
    let r = env
        .req(Method::POST, &env.arm(&list, WEB_API), &t)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 429);
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("2")
    );
    let (_, v) = body(r).await;
    assert_eq!(v["error"]["code"], "SubscriptionRequestsThrottled");
    let log = env.requests().await;
    let ops: Vec<&str> = log.iter().filter_map(|e| e["operation"].as_str()).collect();
    assert!(
        ops.contains(&"web.appSettings.list") && ops.contains(&"web.appSettings.put"),
        "{ops:?}"
    );
}
