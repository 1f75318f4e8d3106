//! Entra ID: discovery, client-secret and client-assertion tokens, managed identity,
//! and how ARM refuses tokens that are missing, for another resource, expired or
//! forged.

use base64::Engine as _;
use reqwest::Method;
use serde_json::{Value, json};

use super::common::*;

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("claims json")
}

#[tokio::test]
async fn discovery_documents_point_back_at_the_twin() {
    let env = Env::demo().await;
    let url = env.url(&format!("/{TENANT}/v2.0/.well-known/openid-configuration"));
    let (status, v) = body(env.http.get(url).send().await.expect("answer")).await;
    assert_eq!(status, 200);
    assert_eq!(
        v["token_endpoint"],
        format!("{}/{TENANT}/oauth2/v2.0/token", env.ep.base_url)
    );
    assert!(
        v["authorization_endpoint"]
            .as_str()
            .is_some_and(|s| s.starts_with(&env.ep.base_url))
    );
    let jwks_uri = v["jwks_uri"].as_str().expect("jwks_uri").to_string();
    let (status, keys) = body(env.http.get(jwks_uri).send().await.expect("answer")).await;
    assert_eq!(status, 200);
    assert_eq!(keys["keys"][0]["kty"], "EC");
    assert_eq!(keys["keys"][0]["crv"], "P-256");
}

#[tokio::test]
async fn client_secret_tokens_carry_azure_claims() {
    let env = Env::demo().await;
    let (status, v) = body(env.token_request(OPERATOR, None, ARM_SCOPE).await).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["token_type"], "Bearer");
    assert!(v["expires_in"].is_u64(), "expires_in is a number: {v}");
    assert!(
        v["ext_expires_in"].is_u64(),
        "ext_expires_in is required by azure_identity: {v}"
    );
    let c = claims(v["access_token"].as_str().expect("token"));
    let op = &env.ep.principals[OPERATOR];
    assert_eq!(c["aud"], "https://management.azure.com");
    assert_eq!(c["iss"], format!("https://sts.windows.net/{TENANT}/"));
    assert_eq!(c["tid"], TENANT);
    assert_eq!(c["oid"], op.object_id);
    assert_eq!(c["appid"], op.client_id);
    assert!(c["exp"].as_i64() > c["iat"].as_i64());
}

#[tokio::test]
async fn every_scope_spelling_real_clients_send_is_accepted() {
    let env = Env::demo().await;
    let arm_url = env.ep.arm_url.clone();
    let scopes = [
        "https://management.azure.com/.default".to_string(),
        "https://management.core.windows.net//.default".to_string(),
        format!("{arm_url}.default"),
        format!("{arm_url}/.default"),
    ];
    for scope in &scopes {
        let (status, v) = body(env.token_request(OPERATOR, None, scope).await).await;
        assert_eq!(status, 200, "{scope}: {v}");
        let token = v["access_token"].as_str().expect("token");
        let r = env.list_keys(token, "stdatasci001").await;
        assert_eq!(r.status(), 200, "a token for {scope} works on ARM");
    }
    for (scope, aud) in [
        (VAULT_SCOPE, "https://vault.azure.net"),
        (DATABRICKS_SCOPE, "2ff814a6-3304-4ab8-85cb-cd0e6f879c1d"),
        (
            "https://storage.azure.com/.default",
            "https://storage.azure.com",
        ),
    ] {
        let token = env.token(OPERATOR, scope).await;
        assert_eq!(claims(&token)["aud"], aud);
    }
    // client_secret_basic, plus the client_info and claims parameters MSAL adds.
    let p = &env.ep.principals[OPERATOR];
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", p.client_id, p.client_secret));
    let r = env
        .http
        .post(env.url(&format!("/{TENANT}/oauth2/v2.0/token")))
        .header(
            "content-type",
            "application/x-www-form-urlencoded;charset=utf-8",
        )
        .header("authorization", format!("Basic {basic}"))
        .body(form(&[
            ("grant_type", "client_credentials"),
            ("scope", ARM_SCOPE),
            ("client_info", "1"),
            ("claims", "{\"access_token\":{}}"),
        ]))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn bad_credentials_are_refused_like_entra() {
    let env = Env::demo().await;
    let (status, v) = body(env.token_request(OPERATOR, Some("wrong"), ARM_SCOPE).await).await;
    assert_eq!(status, 401);
    assert_eq!(v["error"], "invalid_client");
    assert_eq!(v["error_codes"], json!([7000215]));
    assert!(
        v["error_description"]
            .as_str()
            .is_some_and(|d| d.starts_with("AADSTS7000215: Invalid client secret provided."))
    );

    let (status, v) = body(
        env.token_request(OPERATOR, None, "https://example.com/.default")
            .await,
    )
    .await;
    assert_eq!(
        (status.as_u16(), v["error"].as_str()),
        (400, Some("invalid_resource"))
    );
    let (status, v) = body(
        env.token_request(
            OPERATOR,
            None,
            "https://management.azure.com/user_impersonation",
        )
        .await,
    )
    .await;
    assert_eq!(
        (status.as_u16(), v["error"].as_str()),
        (400, Some("invalid_scope"))
    );

    let post = |path: String, form_body: String| {
        env.http
            .post(env.url(&path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body)
            .send()
    };
    let token_path = format!("/{TENANT}/oauth2/v2.0/token");
    let r = post(
        token_path.clone(),
        form(&[
            ("client_id", "00000000-0000-4000-8000-000000000000"),
            ("client_secret", "x"),
            ("grant_type", "client_credentials"),
            ("scope", ARM_SCOPE),
        ]),
    );
    let (status, v) = body(r.await.expect("answer")).await;
    assert_eq!(
        (status.as_u16(), v["error_codes"][0].as_u64()),
        (400, Some(700016))
    );
    let p = &env.ep.principals[OPERATOR];
    let r = post(
        token_path.clone(),
        form(&[
            ("client_id", &p.client_id),
            ("grant_type", "client_credentials"),
            ("scope", ARM_SCOPE),
        ]),
    );
    let (status, v) = body(r.await.expect("answer")).await;
    assert_eq!(
        (status.as_u16(), v["error_codes"][0].as_u64()),
        (401, Some(7000218))
    );
    let r = post(
        token_path.clone(),
        form(&[
            ("client_id", &p.client_id),
            ("client_secret", &p.client_secret),
            ("grant_type", "password"),
            ("scope", ARM_SCOPE),
        ]),
    );
    let (status, v) = body(r.await.expect("answer")).await;
    assert_eq!(
        (status.as_u16(), v["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
    let r = post(
        "/00000000-0000-4000-8000-000000000000/oauth2/v2.0/token".into(),
        form(&[("client_id", &p.client_id)]),
    );
    let (status, v) = body(r.await.expect("answer")).await;
    assert_eq!(
        (status.as_u16(), v["error_codes"][0].as_u64()),
        (400, Some(90002))
    );
}

#[tokio::test]
async fn arm_refuses_missing_foreign_expired_and_forged_tokens() {
    let env = Env::demo().await;
    let url = env.arm(&env.account_id("stdatasci001"), STORAGE_API);

    let (status, v) = body(env.http.get(&url).send().await.expect("answer")).await;
    assert_eq!(
        (status.as_u16(), v["error"]["code"].as_str()),
        (401, Some("AuthenticationFailed"))
    );

    let vault_token = env.token(OPERATOR, VAULT_SCOPE).await;
    let r = env
        .req(Method::GET, &url, &vault_token)
        .send()
        .await
        .expect("answer");
    let challenge = r
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(
        challenge.starts_with("Bearer authorization_uri="),
        "{challenge}"
    );
    let (status, v) = body(r).await;
    assert_eq!(
        (status.as_u16(), v["error"]["code"].as_str()),
        (401, Some("InvalidAuthenticationTokenAudience"))
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("'https://vault.azure.net'"))
    );

    let token = env.token(OPERATOR, ARM_SCOPE).await;
    let mut forged: Vec<char> = token.chars().collect();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == 'A' { 'B' } else { 'A' };
    let forged: String = forged.into_iter().collect();
    let (status, v) = body(
        env.req(Method::GET, &url, &forged)
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(
        (status.as_u16(), v["error"]["code"].as_str()),
        (401, Some("InvalidAuthenticationToken"))
    );

    let r = env
        .req(Method::GET, &url, &token)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200);
    env.advance(3601.0).await;
    let (status, v) = body(
        env.req(Method::GET, &url, &token)
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(
        (status.as_u16(), v["error"]["code"].as_str()),
        (401, Some("ExpiredAuthenticationToken"))
    );
}

#[tokio::test]
async fn workload_identity_assertions_are_exchanged_for_tokens() {
    let env = Env::demo().await;
    let assertion = env
        .admin_json(
            Method::POST,
            "/federated-token",
            Some(json!({"principal": OPERATOR})),
        )
        .await["token"]
        .as_str()
        .expect("token")
        .to_string();
    let c = claims(&assertion);
    assert_eq!(c["aud"], "api://AzureADTokenExchange");
    assert_eq!(c["sub"], "system:serviceaccount:keyflip:keyflip-operator");

    let exchange = |client: &str, assertion: &str| {
        let client_id = env.ep.principals[client].client_id.clone();
        env.http
            .post(env.url(&format!("/{TENANT}/oauth2/v2.0/token")))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[
                ("client_id", &client_id),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion),
                ("grant_type", "client_credentials"),
                ("scope", ARM_SCOPE),
            ]))
            .send()
    };
    let (status, v) = body(exchange(OPERATOR, &assertion).await.expect("answer")).await;
    assert_eq!(status, 200, "{v}");
    let token = v["access_token"].as_str().expect("token");
    assert_eq!(env.list_keys(token, "stdatasci001").await.status(), 200);

    // The reader has no federated credential matching the operator's subject.
    let (status, v) = body(exchange(READER, &assertion).await.expect("answer")).await;
    assert_eq!(
        (status.as_u16(), v["error_codes"][0].as_u64()),
        (400, Some(70021))
    );
    // An assertion the twin did not sign.
    let (status, v) = body(
        exchange(OPERATOR, "eyJhbGciOiJub25lIn0.e30.")
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(
        (status.as_u16(), v["error_codes"][0].as_u64()),
        (401, Some(700027))
    );
    // An ARM access token is not an assertion (wrong audience and issuer).
    let (status, v) = body(exchange(OPERATOR, token).await.expect("answer")).await;
    assert_eq!(
        (status.as_u16(), v["error_codes"][0].as_u64()),
        (400, Some(70021))
    );
    // Assertions expire.
    env.advance(3601.0).await;
    let (status, v) = body(exchange(OPERATOR, &assertion).await.expect("answer")).await;
    assert_eq!(
        (status.as_u16(), v["error_codes"][0].as_u64()),
        (400, Some(700024))
    );
}

#[tokio::test]
async fn managed_identity_endpoint_serves_the_app_service_form() {
    let env = Env::demo().await;
    let mi = env.ep.managed_identity.clone();
    let get = |query: &str, header: Option<&str>| {
        let mut r = env.http.get(format!("{}?{query}", mi.endpoint));
        if let Some(h) = header {
            r = r.header("x-identity-header", h);
        }
        r.send()
    };
    let q = "api-version=2019-08-01&resource=https%3A%2F%2Fmanagement.azure.com%2F";
    let (status, v) = body(get(q, Some(&mi.header)).await.expect("answer")).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["expires_on"].is_string(), "expires_on is a string: {v}");
    assert_eq!(v["resource"], "https://management.azure.com/");
    assert_eq!(v["token_type"], "Bearer");
    let token = v["access_token"].as_str().expect("token");
    assert_eq!(
        claims(token)["oid"],
        env.ep.principals[OPERATOR].object_id,
        "the default identity is the operator"
    );
    assert_eq!(env.list_keys(token, "stdatasci001").await.status(), 200);

    let reader = &env.ep.principals[READER].client_id;
    let (status, v) = body(
        get(&format!("{q}&client_id={reader}"), Some(&mi.header))
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(status, 200);
    let token = v["access_token"].as_str().expect("token");
    assert_eq!(
        env.list_keys(token, "stdatasci001").await.status(),
        403,
        "the reader's token is the reader's"
    );

    assert_eq!(get(q, None).await.expect("answer").status(), 401);
    assert_eq!(get(q, Some("wrong")).await.expect("answer").status(), 401);
    let status = get(
        "api-version=2017-09-01&resource=https://management.azure.com/",
        Some(&mi.header),
    )
    .await
    .expect("answer")
    .status();
    assert_eq!(status, 400);
    let status = get(
        "api-version=2019-08-01&resource=https://example.com/",
        Some(&mi.header),
    )
    .await
    .expect("answer")
    .status();
    assert_eq!(status, 400);
    let status = get(
        &format!("{q}&client_id=00000000-0000-4000-8000-000000000000"),
        Some(&mi.header),
    )
    .await
    .expect("answer")
    .status();
    assert_eq!(status, 400);
}
