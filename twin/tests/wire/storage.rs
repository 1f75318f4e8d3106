//! Storage accounts over ARM: GET, PATCH, listKeys, regenerateKey, RBAC refusals,
//! case-insensitive paths, HTTP/2 and the headers every ARM response carries.

use reqwest::Method;
use serde_json::{Value, json};

use super::common::*;

#[tokio::test]
async fn operator_lists_keys_with_full_permissions() {
    let env = Env::demo().await;
    let t = env.token(OPERATOR, ARM_SCOPE).await;
    let r = env.list_keys(&t, "stdatasci001").await;
    let remaining = r
        .headers()
        .get("x-ms-ratelimit-remaining-subscription-writes")
        .cloned();
    let (status, v) = body(r).await;
    assert_eq!(status, 200, "{v}");
    assert!(remaining.is_some(), "listKeys counts as a write");
    let state = env.state().await;
    assert_eq!(v["keys"][0]["keyName"], "key1");
    assert_eq!(
        v["keys"][0]["value"],
        key_of(&state, "stdatasci001", "key1")
    );
    assert_eq!(
        v["keys"][1]["value"],
        key_of(&state, "stdatasci001", "key2")
    );
    assert_eq!(v["keys"][0]["permissions"], "FULL");
    assert_eq!(
        v["keys"][0]["value"].as_str().map(str::len),
        Some(88),
        "64 random bytes, base64"
    );
    // $expand=kerb is tolerated.
    let url = env.arm(
        &format!("{}/listKeys?$expand=kerb", env.account_id("stdatasci001")),
        STORAGE_API,
    );
    assert_eq!(
        env.req(Method::POST, &url, &t)
            .send()
            .await
            .expect("answer")
            .status(),
        200
    );
}

#[tokio::test]
async fn regenerate_changes_only_the_named_key_and_its_creation_time() {
    let env = Env::demo().await;
    let t = env.token(OPERATOR, ARM_SCOPE).await;
    let get = env.arm(&env.account_id("stdatasci001"), STORAGE_API);
    let (_, before) = body(env.req(Method::GET, &get, &t).send().await.expect("answer")).await;
    let (_, keys_before) = body(env.list_keys(&t, "stdatasci001").await).await;
    env.advance(5.0).await;

    let url = env.arm(
        &format!("{}/regenerateKey", env.account_id("stdatasci001")),
        STORAGE_API,
    );
    let r = env
        .req(Method::POST, &url, &t)
        .json(&json!({"keyName": "key2"}))
        .send()
        .await
        .expect("answer");
    let (status, after) = body(r).await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(
        after["keys"][0]["value"], keys_before["keys"][0]["value"],
        "key1 is untouched"
    );
    assert_ne!(
        after["keys"][1]["value"], keys_before["keys"][1]["value"],
        "key2 is new"
    );
    let (_, listed) = body(env.list_keys(&t, "stdatasci001").await).await;
    assert_eq!(
        listed["keys"], after["keys"],
        "listKeys reads back what regenerateKey returned"
    );

    let (_, now) = body(env.req(Method::GET, &get, &t).send().await.expect("answer")).await;
    let kct = |v: &Value, k: &str| {
        v["properties"]["keyCreationTime"][k]
            .as_str()
            .map(str::to_string)
    };
    assert_eq!(kct(&now, "key1"), kct(&before, "key1"));
    assert_ne!(kct(&now, "key2"), kct(&before, "key2"));
    assert!(
        kct(&now, "key2") > kct(&before, "key2"),
        "keyCreationTime moves forward"
    );

    for bad in [
        json!({"keyName": "key3"}),
        json!({"keyName": "kerb1"}),
        json!({}),
    ] {
        let r = env
            .req(Method::POST, &url, &t)
            .json(&bad)
            .send()
            .await
            .expect("answer");
        let (status, v) = body(r).await;
        assert_eq!(
            (status.as_u16(), v["error"]["code"].as_str()),
            (400, Some("InvalidValuesForRequestParameters")),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn get_reports_the_path_style_blob_endpoint_and_patch_changes_policy() {
    let env = Env::start(world_with_owner()).await;
    let t = env.token(OWNER, ARM_SCOPE).await;
    let url = env.arm(&env.account_id("stdatasci001"), STORAGE_API);
    let (status, v) = body(env.req(Method::GET, &url, &t).send().await.expect("answer")).await;
    assert_eq!(status, 200);
    assert_eq!(
        v["properties"]["primaryEndpoints"]["blob"],
        env.ep.storage_accounts["stdatasci001"].blob_endpoint
    );
    assert_eq!(v["id"], env.ep.storage_accounts["stdatasci001"].id);
    assert_eq!(v["properties"]["allowSharedKeyAccess"], true);
    assert!(v["properties"].get("keyPolicy").is_none());

    let patch = json!({"properties": {"keyPolicy": {"keyExpirationPeriodInDays": 90}, "allowSharedKeyAccess": false}});
    let (status, v) = body(
        env.req(Method::PATCH, &url, &t)
            .json(&patch)
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["properties"]["keyPolicy"]["keyExpirationPeriodInDays"],
        90
    );
    assert_eq!(v["properties"]["allowSharedKeyAccess"], false);
    let state = env.state().await;
    assert_eq!(
        state["storage_accounts"]["stdatasci001"]["allowSharedKeyAccess"],
        false
    );

    let bad = json!({"properties": {"allowSharedKeyAccess": "no"}});
    let (status, _) = body(
        env.req(Method::PATCH, &url, &t)
            .json(&bad)
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(status, 400);

    // The operator may list keys but not write the account.
    let op = env.token(OPERATOR, ARM_SCOPE).await;
    let (status, v) = body(
        env.req(Method::PATCH, &url, &op)
            .json(&patch)
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(
        (status.as_u16(), v["error"]["code"].as_str()),
        (403, Some("AuthorizationFailed"))
    );
}

#[tokio::test]
async fn refusals_use_azure_exact_authorization_failed_body() {
    let env = Env::demo().await;
    let t = env.token(READER, ARM_SCOPE).await;
    let (status, v) = body(env.list_keys(&t, "stdatasci001").await).await;
    assert_eq!(status, 403);
    let oid = &env.ep.principals[READER].object_id;
    let scope = env.account_id("stdatasci001");
    assert_eq!(
        v,
        json!({"error": {"code": "AuthorizationFailed", "message": format!(
            "The client '{oid}' with object id '{oid}' does not have authorization to perform action 'Microsoft.Storage/storageAccounts/listKeys/action' over scope '{scope}' or the scope is invalid. If access was recently granted, please refresh your credentials."
        )}})
    );
    // The reader may read the account.
    let url = env.arm(&scope, STORAGE_API);
    assert_eq!(
        env.req(Method::GET, &url, &t)
            .send()
            .await
            .expect("answer")
            .status(),
        200
    );
    // The operator's key role covers stdatasci001 only.
    let op = env.token(OPERATOR, ARM_SCOPE).await;
    assert_eq!(env.list_keys(&op, "stexternal002").await.status(), 403);
    // A principal with no role at all cannot even read.
    let env = Env::start(world_with_owner()).await;
    let s = env.token(STRANGER, ARM_SCOPE).await;
    let url = env.arm(&env.account_id("stdatasci001"), STORAGE_API);
    assert_eq!(
        env.req(Method::GET, &url, &s)
            .send()
            .await
            .expect("answer")
            .status(),
        403
    );
}

#[tokio::test]
async fn missing_resources_get_arm_not_found_codes() {
    let env = Env::start(world_with_owner()).await;
    let t = env.token(OWNER, ARM_SCOPE).await;
    let cases = [
        (env.account_id("stnope"), "ResourceNotFound"),
        (
            format!(
                "/subscriptions/{SUB}/resourceGroups/rg-nope/providers/Microsoft.Storage/storageAccounts/x"
            ),
            "ResourceGroupNotFound",
        ),
    ];
    for (path, code) in cases {
        let url = env.arm(&path, STORAGE_API);
        let (status, v) = body(env.req(Method::GET, &url, &t).send().await.expect("answer")).await;
        assert_eq!(
            (status.as_u16(), v["error"]["code"].as_str()),
            (404, Some(code)),
            "{path}"
        );
    }
}

#[tokio::test]
async fn arm_paths_match_case_insensitively_and_tolerate_empty_segments() {
    let env = Env::demo().await;
    let t = env.token(OPERATOR, ARM_SCOPE).await;
    for path in [
        format!(
            "/subscriptions/{SUB}/resourcegroups/{RG}/providers/microsoft.storage/storageaccounts/stdatasci001/listkeys"
        ),
        format!(
            "/SUBSCRIPTIONS/{}/RESOURCEGROUPS/RG-DATASCIENCE/providers/Microsoft.Storage/storageAccounts/stdatasci001/LISTKEYS",
            SUB.to_uppercase()
        ),
        format!(
            "//subscriptions/{SUB}/resourceGroups/{RG}//providers/Microsoft.Storage/storageAccounts/stdatasci001/listKeys"
        ),
    ] {
        let r = env
            .req(Method::POST, &env.arm(&path, STORAGE_API), &t)
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn arm_responses_carry_request_ids_and_rate_limit_headers() {
    let env = Env::demo().await;
    let t = env.token(OPERATOR, ARM_SCOPE).await;
    let url = env.arm(&env.account_id("stdatasci001"), STORAGE_API);
    let r = env
        .req(Method::GET, &url, &t)
        .header("x-ms-correlation-request-id", "corr-123")
        .send()
        .await
        .expect("answer");
    let h = r.headers();
    assert!(h.contains_key("x-ms-request-id"));
    assert_eq!(
        h.get("x-ms-correlation-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("corr-123")
    );
    let reads = |h: &reqwest::header::HeaderMap| {
        h.get("x-ms-ratelimit-remaining-subscription-reads")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let first = reads(h).expect("reads header on a GET");
    let r = env.req(Method::GET, &url, &t).send().await.expect("answer");
    let second = reads(r.headers()).expect("reads header");
    assert!(
        second < first,
        "the read budget counts down ({first} then {second})"
    );
    // Even a refusal carries the ARM headers.
    let r = env.http.get(&url).send().await.expect("answer");
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("x-ms-request-id"));
    assert!(
        r.headers()
            .contains_key("x-ms-ratelimit-remaining-subscription-reads")
    );
}

#[tokio::test]
async fn http2_requests_route_on_the_path() {
    let env = Env::demo().await;
    let t = env.token(OPERATOR, ARM_SCOPE).await;
    let r = env.list_keys(&t, "stdatasci001").await;
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "ALPN negotiates h2");
    assert_eq!(r.status(), 200);
    let h1 = client(env.twin.ca_pem(), true);
    let url = env.arm(
        &format!("{}/listKeys", env.account_id("stdatasci001")),
        STORAGE_API,
    );
    let r = h1.post(url).bearer_auth(&t).send().await.expect("answer");
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn secondary_region_fields_only_for_geo_redundant_accounts() {
    // Azure reports secondaryLocation and statusOfSecondary only for geo-redundant
    // SKUs, and geoReplicationStats only when asked with $expand=geoReplicationStats.
    let lrs =
        "name = \"stexternal002\"\nresource_group = \"rg-datascience\"\nsku = \"Standard_LRS\"";
    assert!(
        DEMO_TOML.contains(lrs),
        "the demo world still has stexternal002 on LRS"
    );
    let toml = DEMO_TOML.replace(lrs, &lrs.replace("Standard_LRS", "Standard_RAGRS"));
    let world = keyflip_twin::World::from_toml_str(&toml, "demo+ragrs").expect("world");
    let env = Env::start(world).await;
    let t = env.token(OPERATOR, ARM_SCOPE).await;
    let get = |name: &str, expand: bool| {
        let mut path = env.account_id(name);
        if expand {
            path.push_str("?$expand=geoReplicationStats");
        }
        env.req(Method::GET, &env.arm(&path, STORAGE_API), &t)
            .send()
    };

    let v: Value = get("stdatasci001", true)
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    let p = &v["properties"];
    assert_eq!(v["sku"]["name"], "Standard_LRS");
    for absent in [
        "secondaryLocation",
        "statusOfSecondary",
        "geoReplicationStats",
    ] {
        assert!(p.get(absent).is_none(), "{absent} on an LRS account: {p:#}");
    }
    assert_eq!(p["primaryLocation"], "westeurope");
    assert_eq!(p["statusOfPrimary"], "available");

    let v: Value = get("stexternal002", false)
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    let p = &v["properties"];
    assert_eq!(p["secondaryLocation"], "northeurope", "West Europe's pair");
    assert_eq!(p["statusOfSecondary"], "available");
    assert!(
        p.get("geoReplicationStats").is_none(),
        "only with $expand: {p:#}"
    );

    let v: Value = get("stexternal002", true)
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert_eq!(v["properties"]["geoReplicationStats"]["status"], "Live");
}
