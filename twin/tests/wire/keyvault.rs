//! Key Vault secrets: the challenge handshake, set/get/versions/update, paging,
//! disabled versions, RBAC refusals and bad requests.

use reqwest::Method;
use serde_json::{Value, json};

use super::common::*;

const API: &str = "7.5";

fn secret_url(env: &Env, path: &str) -> String {
    format!(
        "{}/secrets/{path}?api-version={API}",
        env.ep.key_vaults["kv-datasci"].url
    )
}

#[tokio::test]
async fn the_first_bodiless_request_gets_the_challenge() {
    let env = Env::demo().await;
    let r = env
        .http
        .put(secret_url(&env, "new-secret"))
        .header("content-length", "0")
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 401);
    let challenge = r
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    assert_eq!(
        challenge.as_deref(),
        Some(
            format!(
                "Bearer authorization=\"{}/{TENANT}\", resource=\"https://vault.azure.net\"",
                env.ep.base_url
            )
            .as_str()
        )
    );
    let (_, v) = body(r).await;
    assert_eq!(v["error"]["code"], "Unauthorized");
    // A token for another resource is refused with the challenge too.
    let arm = env.token(OPERATOR, ARM_SCOPE).await;
    let r = env
        .req(Method::GET, &secret_url(&env, "stdatasci001-key/"), &arm)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let (_, v) = body(r).await;
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("AKV10022")),
        "{v}"
    );
}

#[tokio::test]
async fn set_get_versions_and_update_round_trip() {
    let env = Env::demo().await;
    let t = env.token(OPERATOR, VAULT_SCOPE).await;
    let state = env.state().await;
    let key1 = key_of(&state, "stdatasci001", "key1");
    let first = state["key_vaults"]["kv-datasci"]["secrets"]["stdatasci001-key"][0].clone();
    assert_eq!(
        first["value"],
        key1.as_str(),
        "the world seeds the raw key1"
    );

    // Latest, with the trailing slash SDKs send.
    let (status, v) = body(
        env.req(Method::GET, &secret_url(&env, "stdatasci001-key/"), &t)
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v["value"], key1.as_str());
    assert_eq!(v["contentType"], "text/plain");
    assert_eq!(v["tags"]["CredentialId"], "key1");
    assert!(v["attributes"]["created"].is_i64(), "unix seconds: {v}");

    let body_json = json!({"value": "new-value", "contentType": "text/plain", "tags": {"CredentialId": "key2"}});
    let (status, set) = body(
        env.req(Method::PUT, &secret_url(&env, "stdatasci001-key"), &t)
            .json(&body_json)
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(status, 200, "{set}");
    let id = set["id"].as_str().expect("id").to_string();
    let prefix = format!("{}/secrets/stdatasci001-key/", env.ep.base_url);
    let version = id
        .strip_prefix(&prefix)
        .expect("id is {base_url}/secrets/{name}/{version}");
    assert_eq!(version.len(), 32);
    assert!(version.chars().all(|c| c.is_ascii_hexdigit()));

    let (_, latest) = body(
        env.req(Method::GET, &secret_url(&env, "stdatasci001-key"), &t)
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(latest["value"], "new-value");
    let old = format!(
        "stdatasci001-key/{}",
        first["version"].as_str().expect("version")
    );
    let (_, by_version) = body(
        env.req(Method::GET, &secret_url(&env, &old), &t)
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(
        by_version["value"],
        key1.as_str(),
        "older versions stay readable"
    );
    // The id itself is a URL the twin serves.
    let (status, by_id) = body(
        env.req(Method::GET, &format!("{id}?api-version={API}"), &t)
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(
        (status.as_u16(), by_id["value"].as_str()),
        (200, Some("new-value"))
    );

    // Versions, one per page, following absolute nextLinks.
    let mut url = secret_url(&env, "stdatasci001-key/versions") + "&maxresults=1";
    let mut seen = Vec::new();
    loop {
        let (status, page) =
            body(env.req(Method::GET, &url, &t).send().await.expect("answer")).await;
        assert_eq!(status, 200, "{page}");
        let items = page["value"].as_array().expect("value");
        assert_eq!(items.len(), 1);
        assert!(
            items[0].get("value").is_none(),
            "listing never returns values"
        );
        seen.push(items[0]["id"].as_str().expect("id").to_string());
        match page["nextLink"].as_str() {
            Some(next) => {
                assert!(
                    next.starts_with(&env.ep.key_vaults["kv-datasci"].url),
                    "absolute nextLink: {next}"
                );
                url = next.to_string();
            }
            None => break,
        }
    }
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1], id);

    // Disable the old version: updates return no value, and a disabled version is unreadable.
    let patch = json!({"attributes": {"enabled": false}, "tags": {"leaked": "true"}});
    let (status, updated) = body(
        env.req(Method::PATCH, &secret_url(&env, &old), &t)
            .json(&patch)
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["attributes"]["enabled"], false);
    assert_eq!(updated["tags"]["leaked"], "true");
    assert!(updated.get("value").is_none());
    let (status, v) = body(
        env.req(Method::GET, &secret_url(&env, &old), &t)
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(
        (status.as_u16(), v["error"]["innererror"]["code"].as_str()),
        (403, Some("SecretDisabled"))
    );
    let state = env.state().await;
    let versions = &state["key_vaults"]["kv-datasci"]["secrets"]["stdatasci001-key"];
    assert_eq!(versions[0]["enabled"], false);
    assert_eq!(versions[1]["value"], "new-value");
}

#[tokio::test]
async fn the_reader_reads_but_cannot_write() {
    let env = Env::demo().await;
    let t = env.token(READER, VAULT_SCOPE).await;
    let r = env
        .req(Method::GET, &secret_url(&env, "stdatasci001-key/"), &t)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200);
    let r = env
        .req(Method::PUT, &secret_url(&env, "stdatasci001-key"), &t)
        .json(&json!({"value": "x"}))
        .send()
        .await
        .expect("answer");
    let (status, v) = body(r).await;
    assert_eq!(status, 403);
    assert_eq!(v["error"]["code"], "Forbidden");
    assert_eq!(v["error"]["innererror"]["code"], "ForbiddenByRbac");
    let p = &env.ep.principals[READER];
    let message = v["error"]["message"].as_str().expect("message");
    let expected_start = format!(
        "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: appid={};oid={};iss=https://sts.windows.net/{TENANT}/\r\nAction: 'Microsoft.KeyVault/vaults/secrets/setSecret/action'\r\n",
        p.client_id, p.object_id
    );
    assert!(message.starts_with(&expected_start), "{message}");
    assert!(
        message.contains("DecisionReason: 'DeniedWithNoValidRBAC'"),
        "{message}"
    );
}

#[tokio::test]
async fn bad_requests_get_key_vault_errors() {
    let env = Env::demo().await;
    let t = env.token(OPERATOR, VAULT_SCOPE).await;
    let check = |r: (reqwest::StatusCode, Value), status: u16, code: &str| {
        assert_eq!(
            (r.0.as_u16(), r.1["error"]["code"].as_str()),
            (status, Some(code)),
            "{}",
            r.1
        );
    };
    let r = env
        .req(
            Method::GET,
            &(secret_url(&env, "stdatasci001-key/versions") + "&maxresults=26"),
            &t,
        )
        .send()
        .await
        .expect("answer");
    check(body(r).await, 400, "BadParameter");
    let url = format!(
        "{}/secrets/stdatasci001-key",
        env.ep.key_vaults["kv-datasci"].url
    );
    check(
        body(env.req(Method::GET, &url, &t).send().await.expect("answer")).await,
        400,
        "BadParameter",
    );
    check(
        body(
            env.req(Method::GET, &format!("{url}?api-version=6.0"), &t)
                .send()
                .await
                .expect("answer"),
        )
        .await,
        400,
        "BadParameter",
    );
    assert_eq!(
        env.req(Method::GET, &format!("{url}?api-version=2025-07-01"), &t)
            .send()
            .await
            .expect("answer")
            .status(),
        200
    );
    check(
        body(
            env.req(Method::GET, &secret_url(&env, "nope"), &t)
                .send()
                .await
                .expect("answer"),
        )
        .await,
        404,
        "SecretNotFound",
    );
    check(
        body(
            env.req(Method::PUT, &secret_url(&env, "bad_name"), &t)
                .json(&json!({"value": "x"}))
                .send()
                .await
                .expect("answer"),
        )
        .await,
        400,
        "BadParameter",
    );
    check(
        body(
            env.req(Method::PUT, &secret_url(&env, "s"), &t)
                .json(&json!({"tags": {}}))
                .send()
                .await
                .expect("answer"),
        )
        .await,
        400,
        "BadParameter",
    );
    check(
        body(
            env.req(Method::PUT, &secret_url(&env, "s"), &t)
                .body("{not json")
                .header("content-type", "application/json")
                .send()
                .await
                .expect("answer"),
        )
        .await,
        400,
        "BadParameter",
    );
    check(
        body(
            env.req(Method::PUT, &secret_url(&env, "s"), &t)
                .body("{}")
                .header("content-type", "text/plain")
                .send()
                .await
                .expect("answer"),
        )
        .await,
        415,
        "UnsupportedMediaType",
    );
    let r = env
        .req(Method::DELETE, &secret_url(&env, "s"), &t)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 400);
    let r = env
        .http
        .get(format!(
            "{}/keyvault/kv-nope/secrets/x?api-version={API}",
            env.ep.base_url
        ))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 404);
}

/// Issue 12: Key Vault holds at most 15 tags on a secret; a 16th is refused with the
/// body Azure sends, on set and on update, and nothing changes.
#[tokio::test]
async fn more_than_fifteen_tags_are_refused_on_set_and_update() {
    let env = Env::demo().await;
    let t = env.token(OPERATOR, VAULT_SCOPE).await;
    let tags = |n: usize| -> Value {
        Value::Object(
            (0..n)
                .map(|i| (format!("tag{i}"), json!("v")))
                .collect::<serde_json::Map<_, _>>(),
        )
    };
    let url = secret_url(&env, "tagged");
    let (status, v) = body(
        env.req(Method::PUT, &url, &t)
            .json(&json!({"value": "x", "tags": tags(15)}))
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(status, 200, "15 tags are allowed: {v}");
    assert_eq!(v["tags"].as_object().map(|m| m.len()), Some(15));
    let refused =
        json!({"error": {"code": "BadParameter", "message": "Property has invalid value\r\n"}});
    let (status, v) = body(
        env.req(Method::PUT, &url, &t)
            .json(&json!({"value": "y", "tags": tags(16)}))
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!((status.as_u16(), &v), (400, &refused));
    let (status, v) = body(
        env.req(Method::PATCH, &url, &t)
            .json(&json!({"tags": tags(16)}))
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!((status.as_u16(), &v), (400, &refused));
    let versions = &env.state().await["key_vaults"]["kv-datasci"]["secrets"]["tagged"];
    assert_eq!(versions.as_array().map(Vec::len), Some(1), "no new version");
    assert_eq!(versions[0]["value"], "x");
    assert_eq!(versions[0]["tags"].as_object().map(|m| m.len()), Some(15));
}
