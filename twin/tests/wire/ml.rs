//! Azure ML: workspace GET and listKeys, resyncKeys as a long-running operation, and
//! datastores with a write-only key and validated PUTs.

use reqwest::Method;
use serde_json::{Value, json};

use super::common::*;

fn ds_url(env: &Env, name: &str, suffix: &str) -> String {
    env.arm(
        &format!("{}/datastores/{name}{suffix}", env.workspace_id()),
        ML_API,
    )
}

fn blob_datastore(account: &str, key: &str) -> Value {
    json!({"properties": {
        "datastoreType": "AzureBlob", "accountName": account, "containerName": "training-data",
        "endpoint": "core.windows.net", "protocol": "https", "description": "", "tags": {},
        "credentials": {"credentialsType": "AccountKey", "secrets": {"secretsType": "AccountKey", "key": key}},
    }})
}

#[tokio::test]
async fn workspace_get_and_list_keys_return_the_cached_key() {
    let env = Env::demo().await;
    let t = env.token(OPERATOR, ARM_SCOPE).await;
    let (status, ws) = body(
        env.req(Method::GET, &env.arm(&env.workspace_id(), ML_API), &t)
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        ws["properties"]["storageAccount"],
        env.account_id("stdatasci001")
    );
    let url = env.arm(&format!("{}/listKeys", env.workspace_id()), ML_API);
    let (status, keys) = body(
        env.req(Method::POST, &url, &t)
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(status, 200, "{keys}");
    let state = env.state().await;
    assert_eq!(
        keys["userStorageKey"],
        key_of(&state, "stdatasci001", "key1").as_str()
    );
    assert_eq!(
        keys["userStorageResourceId"],
        env.account_id("stdatasci001")
    );
    // AzureML Data Scientist alone excludes listKeys; the reader has no ML role at all.
    let reader = env.token(READER, ARM_SCOPE).await;
    let (status, v) = body(
        env.req(Method::POST, &url, &reader)
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(
        (status.as_u16(), v["error"]["code"].as_str()),
        (403, Some("AuthorizationFailed"))
    );
    assert!(v["error"]["message"].as_str().is_some_and(|m| {
        m.contains("'Microsoft.MachineLearningServices/workspaces/listKeys/action'")
    }));
}

#[tokio::test]
async fn resync_is_a_long_running_operation_that_caches_the_newest_key() {
    let env = Env::demo().await;
    let t = env.token(OPERATOR, ARM_SCOPE).await;
    env.advance(1.0).await;
    let regen = env.arm(
        &format!("{}/regenerateKey", env.account_id("stdatasci001")),
        STORAGE_API,
    );
    assert_eq!(
        env.req(Method::POST, &regen, &t)
            .json(&json!({"keyName": "key2"}))
            .send()
            .await
            .expect("answer")
            .status(),
        200
    );
    let new2 = key_of(&env.state().await, "stdatasci001", "key2");

    let url = env.arm(&format!("{}/resyncKeys", env.workspace_id()), ML_API);
    let r = env
        .req(Method::POST, &url, &t)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 202);
    let location = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("Location")
        .to_string();
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert!(
        location.starts_with(&format!(
            "{}/subscriptions/{SUB}/providers/Microsoft.MachineLearningServices/",
            env.ep.base_url
        )),
        "{location}"
    );

    let list = env.arm(&format!("{}/listKeys", env.workspace_id()), ML_API);
    let cached = |v: Value| v["userStorageKey"].as_str().map(str::to_string);
    let r = env
        .req(Method::GET, &location, &t)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 202, "still running");
    assert!(r.headers().contains_key("location"));
    let (_, v) = body(
        env.req(Method::POST, &list, &t)
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_ne!(
        cached(v),
        Some(new2.clone()),
        "not synced before completion"
    );

    env.advance(1.1).await;
    let r = env
        .req(Method::GET, &location, &t)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200, "done");
    let (_, v) = body(
        env.req(Method::POST, &list, &t)
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(cached(v), Some(new2), "the newest key by keyCreationTime");
    // Unauthenticated polls are refused; unknown operations are 404.
    assert_eq!(
        env.http
            .get(&location)
            .send()
            .await
            .expect("answer")
            .status(),
        401
    );
    let bogus = location.replace("workspaceOperationResults/", "workspaceOperationResults/x");
    assert_eq!(
        env.req(Method::GET, &bogus, &t)
            .send()
            .await
            .expect("answer")
            .status(),
        404
    );
}

#[tokio::test]
async fn datastore_keys_are_write_only() {
    let env = Env::demo().await;
    let t = env.token(OPERATOR, ARM_SCOPE).await;
    let key1 = key_of(&env.state().await, "stdatasci001", "key1");
    let r = env
        .req(Method::GET, &ds_url(&env, "workspaceblobstore", ""), &t)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200);
    let text = r.text().await.expect("body");
    assert!(!text.contains(&key1), "GET never returns the key");
    let v: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(
        v["properties"]["credentials"]["secrets"],
        json!({"secretsType": "AccountKey"})
    );
    assert_eq!(v["properties"]["isDefault"], true);

    let (status, list) = body(
        env.req(
            Method::GET,
            &env.arm(&format!("{}/datastores", env.workspace_id()), ML_API),
            &t,
        )
        .send()
        .await
        .expect("answer"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(list["value"].as_array().map(Vec::len), Some(6));
    assert!(!list.to_string().contains(&key1), "list never returns keys");
    let (_, page) = body(
        env.req(
            Method::GET,
            &(env.arm(&format!("{}/datastores", env.workspace_id()), ML_API) + "&count=4"),
            &t,
        )
        .send()
        .await
        .expect("answer"),
    )
    .await;
    let next = page["nextLink"]
        .as_str()
        .expect("a second page")
        .to_string();
    let (_, page2) = body(
        env.req(Method::GET, &next, &t)
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(page2["value"].as_array().map(Vec::len), Some(2));

    let secrets = |name: &'static str| {
        env.req(Method::POST, &ds_url(&env, name, "/listSecrets"), &t)
            .json(&json!({"expirableSecret": true, "expireAfterHours": 1}))
            .send()
    };
    let (status, v) = body(secrets("workspaceblobstore").await.expect("answer")).await;
    assert_eq!(
        (status.as_u16(), v),
        (200, json!({"secretsType": "AccountKey", "key": key1}))
    );
    let (_, v) = body(secrets("public_samples").await.expect("answer")).await;
    assert_eq!(v["secretsType"], "Sas");
    assert!(v["sasToken"].is_string());
    let (status, _) = body(secrets("nope").await.expect("answer")).await;
    assert_eq!(status, 404);
    let state = env.state().await;
    let external = key_of(&state, "stexternal002", "key1");
    assert_eq!(
        state["ml_workspaces"]["mlw-datasci"]["datastores"]["external_reference"]["key"],
        external.as_str()
    );
}

#[tokio::test]
async fn datastore_put_validates_the_key_unless_told_not_to() {
    let env = Env::demo().await;
    env.settings(json!({"propagation_delay_secs": 30})).await;
    let t = env.token(OPERATOR, ARM_SCOPE).await;
    let put = |name: &str, suffix: &str, b: Value| {
        env.req(Method::PUT, &ds_url(&env, name, suffix), &t)
            .json(&b)
            .send()
    };

    let (status, v) = body(
        put(
            "training_data",
            "",
            blob_datastore("stdatasci001", "bm90LWEta2V5"),
        )
        .await
        .expect("answer"),
    )
    .await;
    assert_eq!(
        (status.as_u16(), v["error"]["code"].as_str()),
        (400, Some("UserError")),
        "{v}"
    );
    let (status, _) = body(
        put(
            "training_data",
            "?skipValidation=true",
            blob_datastore("stdatasci001", "bm90LWEta2V5"),
        )
        .await
        .expect("answer"),
    )
    .await;
    assert_eq!(status, 200, "skipValidation stores an unchecked key");
    let (_, v) = body(
        env.req(
            Method::POST,
            &ds_url(&env, "training_data", "/listSecrets"),
            &t,
        )
        .send()
        .await
        .expect("answer"),
    )
    .await;
    assert_eq!(v["key"], "bm90LWEta2V5");

    // A freshly regenerated key is refused until it has propagated.
    let regen = env.arm(
        &format!("{}/regenerateKey", env.account_id("stdatasci001")),
        STORAGE_API,
    );
    env.req(Method::POST, &regen, &t)
        .json(&json!({"keyName": "key2"}))
        .send()
        .await
        .expect("answer");
    let new2 = key_of(&env.state().await, "stdatasci001", "key2");
    let (status, _) = body(
        put("training_data", "", blob_datastore("stdatasci001", &new2))
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(status, 400);
    env.advance(31.0).await;
    let (status, v) = body(
        put("training_data", "", blob_datastore("stdatasci001", &new2))
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["properties"]["credentials"]["secrets"],
        json!({"secretsType": "AccountKey"})
    );
    assert_eq!(v["properties"]["isDefault"], false);
    let state = env.state().await;
    assert_eq!(
        state["ml_workspaces"]["mlw-datasci"]["datastores"]["training_data"]["key"],
        new2.as_str()
    );

    // A new name creates (201); isDefault cannot be set by the client.
    let mut b = blob_datastore("stdatasci001", &new2);
    b["properties"]["isDefault"] = json!(true);
    let (status, v) = body(put("scratch", "", b).await.expect("answer")).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["properties"]["isDefault"], false);
    // The default datastore stays the default when updated.
    let (status, v) = body(
        put(
            "workspaceblobstore",
            "",
            blob_datastore("stdatasci001", &new2),
        )
        .await
        .expect("answer"),
    )
    .await;
    assert_eq!(
        (status.as_u16(), v["properties"]["isDefault"].as_bool()),
        (200, Some(true))
    );
    // Bad bodies.
    for b in [
        json!({}),
        json!({"properties": {"datastoreType": "AzureBlob"}}),
        json!([1]),
    ] {
        let (status, _) = body(put("scratch", "", b.clone()).await.expect("answer")).await;
        assert_eq!(status, 400, "{b}");
    }
    let (status, _) = body(
        put("bad name", "", blob_datastore("stdatasci001", &new2))
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(status, 400);
}

/// Issue 12: the datastore list honours `names` (comma-joined as Microsoft's Python
/// client sends it, or repeated), case-insensitively, and its nextLink keeps it.
#[tokio::test]
async fn datastore_list_honours_the_names_filter() {
    let env = Env::demo().await;
    let t = env.token(OPERATOR, ARM_SCOPE).await;
    let list = |query: &str| {
        let url = env.arm(&format!("{}/datastores", env.workspace_id()), ML_API) + query;
        let req = env.req(Method::GET, &url, &t);
        async move { body(req.send().await.expect("answer")).await }
    };
    let names = |v: &Value| -> Vec<String> {
        v["value"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|d| d["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (status, v) = list("&names=training_data,PUBLIC_SAMPLES").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(names(&v), vec!["training_data", "public_samples"]);
    let (_, v) = list("&names=training_data&names=workspaceblobstore").await;
    assert_eq!(names(&v), vec!["workspaceblobstore", "training_data"]);
    let (_, v) = list("&names=nope").await;
    assert_eq!(names(&v), Vec::<String>::new());
    let (_, v) = list("&names=training_data,feature_snapshots,external_reference&count=2").await;
    assert_eq!(names(&v), vec!["training_data", "feature_snapshots"]);
    let next = v["nextLink"].as_str().expect("a second page").to_string();
    let (_, v) = body(
        env.req(Method::GET, &next, &t)
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(
        names(&v),
        vec!["external_reference"],
        "the filter survives paging"
    );
    assert!(v["nextLink"].is_null());
}
