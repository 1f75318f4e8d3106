//! Bad input gets Azure-shaped 4xx answers, and odd requests never make the twin
//! fail or drop the connection.

use reqwest::Method;

use super::common::*;

#[tokio::test]
async fn arm_rejects_bad_bodies_content_types_and_api_versions() {
    let env = Env::demo().await;
    let t = env.token(OPERATOR, ARM_SCOPE).await;
    let regen = |api: &str| {
        env.arm(
            &format!("{}/regenerateKey", env.account_id("stdatasci001")),
            api,
        )
    };
    let code = |r: (reqwest::StatusCode, serde_json::Value)| {
        (
            r.0.as_u16(),
            r.1["error"]["code"].as_str().map(str::to_string),
        )
    };

    let r = env
        .req(Method::POST, &regen(STORAGE_API), &t)
        .header("content-type", "application/json")
        .body("{\"keyName\":")
        .send()
        .await
        .expect("answer");
    assert_eq!(
        code(body(r).await),
        (400, Some("InvalidRequestContent".into()))
    );
    let r = env
        .req(Method::POST, &regen(STORAGE_API), &t)
        .header("content-type", "application/json")
        .body(vec![0xff, 0xfe, 0x00])
        .send()
        .await
        .expect("answer");
    assert_eq!(
        code(body(r).await),
        (400, Some("InvalidRequestContent".into()))
    );
    let r = env
        .req(Method::POST, &regen(STORAGE_API), &t)
        .header("content-type", "application/json")
        .body("[\"key1\"]")
        .send()
        .await
        .expect("answer");
    assert_eq!(
        code(body(r).await),
        (400, Some("InvalidRequestContent".into()))
    );
    let r = env
        .req(Method::POST, &regen(STORAGE_API), &t)
        .header("content-type", "text/plain")
        .body("{\"keyName\":\"key1\"}")
        .send()
        .await
        .expect("answer");
    assert_eq!(
        code(body(r).await),
        (415, Some("UnsupportedMediaType".into()))
    );

    let bare = format!("{}{}", env.ep.base_url, env.account_id("stdatasci001"));
    let r = env
        .req(Method::GET, &bare, &t)
        .send()
        .await
        .expect("answer");
    assert_eq!(
        code(body(r).await),
        (400, Some("MissingApiVersionParameter".into()))
    );
    let r = env
        .req(Method::GET, &format!("{bare}?api-version=2099-01-01"), &t)
        .send()
        .await
        .expect("answer");
    assert_eq!(
        code(body(r).await),
        (400, Some("NoRegisteredProviderFound".into()))
    );
    let r = env
        .req(Method::GET, &format!("{bare}?api-version=banana"), &t)
        .send()
        .await
        .expect("answer");
    assert_eq!(
        code(body(r).await),
        (400, Some("InvalidApiVersionParameter".into()))
    );
    // Versions newer than the spec examples, as current SDKs send them.
    for api in ["2026-09-01", "2023-05-01", "2019-06-01"] {
        assert_eq!(
            env.req(Method::GET, &format!("{bare}?api-version={api}"), &t)
                .send()
                .await
                .expect("answer")
                .status(),
            200,
            "{api}"
        );
    }
    let ws = env.arm(&env.workspace_id(), "2024-10-01-preview");
    assert_eq!(
        env.req(Method::GET, &ws, &t)
            .send()
            .await
            .expect("answer")
            .status(),
        200
    );

    let r = env
        .req(
            Method::DELETE,
            &env.arm(&env.account_id("stdatasci001"), STORAGE_API),
            &t,
        )
        .send()
        .await
        .expect("answer");
    assert_eq!(code(body(r).await), (405, Some("MethodNotAllowed".into())));
    let r = env.req(Method::GET, &env.arm(&format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines/vm"), "2024-01-01"), &t).send().await.expect("answer");
    assert_eq!(code(body(r).await), (404, Some("NotFound".into())));
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let env = Env::demo().await;
    let t = env.token(OPERATOR, ARM_SCOPE).await;
    let big = vec![b'a'; 5 * 1024 * 1024];
    let url = env.arm(
        &format!("{}/regenerateKey", env.account_id("stdatasci001")),
        STORAGE_API,
    );
    let r = env
        .req(Method::POST, &url, &t)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 413);
}

#[tokio::test]
async fn odd_requests_get_4xx_never_5xx_or_a_dropped_connection() {
    let env = Env::start(world_with_owner()).await;
    let t = env.token(OWNER, ARM_SCOPE).await;
    let long = "a".repeat(8000);
    let paths = [
        "/".to_string(),
        "/%".to_string(),
        "/%ff%fe".to_string(),
        format!("/{long}"),
        "/subscriptions/%ZZ/resourceGroups".to_string(),
        format!(
            "/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Storage/storageAccounts"
        ),
        format!(
            "/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.MachineLearningServices/workspaces/mlw-datasci/datastores/a/b/c"
        ),
        "/providers/Microsoft.Authorization".to_string(),
        "/providers/Microsoft.Authorization/roleDefinitions".to_string(),
        "/keyvault".to_string(),
        "/keyvault/kv-datasci".to_string(),
        "/keyvault/kv-datasci/secrets".to_string(),
        "/secrets/nope".to_string(),
        "/databricks".to_string(),
        "/databricks/dbw-datasci/api/2.0/secrets/put".to_string(),
        "/msi".to_string(),
        "/msi/token/extra".to_string(),
        format!("/{TENANT}"),
        format!("/{TENANT}/oauth2/v2.0/authorize"),
        "/common/oauth2/v2.0/token".to_string(),
        "/stdatasci001".to_string(),
        "/stdatasci001/?comp=list&maxresults=abc".to_string(),
        "/_admin".to_string(),
    ];
    for path in &paths {
        for m in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::HEAD,
        ] {
            let r = env
                .http
                .request(
                    m.clone(),
                    env.url(&format!("{path}?api-version=2024-01-01")),
                )
                .bearer_auth(&t)
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap_or_else(|e| panic!("{m} {path}: the connection must not drop: {e}"));
            let s = r.status().as_u16();
            assert!((400..500).contains(&s), "{m} {path} answered {s}");
        }
    }
    // Garbage JSON everywhere a body is read.
    let kv = env.token(OPERATOR, VAULT_SCOPE).await;
    let dbx = env.token(OPERATOR, DATABRICKS_SCOPE).await;
    let cases = [
        (
            Method::PATCH,
            env.arm(&env.account_id("stdatasci001"), STORAGE_API),
            t.clone(),
        ),
        (
            Method::PUT,
            env.arm(&format!("{}/datastores/x", env.workspace_id()), ML_API),
            t.clone(),
        ),
        (
            Method::PUT,
            format!(
                "{}/secrets/x?api-version=7.5",
                env.ep.key_vaults["kv-datasci"].url
            ),
            kv.clone(),
        ),
        (
            Method::PATCH,
            format!(
                "{}/secrets/stdatasci001-key?api-version=7.5",
                env.ep.key_vaults["kv-datasci"].url
            ),
            kv,
        ),
        (
            Method::POST,
            format!(
                "{}/api/2.0/secrets/put",
                env.ep.databricks_workspaces["dbw-datasci"].url
            ),
            dbx,
        ),
    ];
    for (m, url, token) in cases {
        for garbage in ["", "null", "\"x\"", "{{{{", "[]"] {
            let r = env
                .http
                .request(m.clone(), &url)
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(garbage)
                .send()
                .await
                .expect("answer");
            let s = r.status().as_u16();
            assert!(
                (400..500).contains(&s),
                "{m} {url} with {garbage:?} answered {s}"
            );
        }
    }
    let r = env
        .req(
            Method::PATCH,
            &env.arm(&env.account_id("stdatasci001"), STORAGE_API),
            &t,
        )
        .json(&serde_json::json!({"properties": 5}))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 400);
}
