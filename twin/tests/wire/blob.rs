//! The Blob data plane: SharedKey acceptance and refusal, account information, list
//! containers, shared keys disabled, and key propagation after regeneration.

use reqwest::Method;
use serde_json::json;

use super::common::*;

const WRONG_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

#[tokio::test]
async fn both_keys_authorize_and_a_wrong_key_gets_the_xml_403() {
    let env = Env::demo().await;
    let state = env.state().await;
    for key in ["key1", "key2"] {
        let k = key_of(&state, "stdatasci001", key);
        let r = env
            .blob_with(
                Method::GET,
                "stdatasci001",
                "/?restype=account&comp=properties",
                &k,
                &[("x-ms-client-request-id", "probe-1")],
            )
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status(), 200, "{key}");
        let h = r.headers();
        assert_eq!(
            h.get("x-ms-sku-name").and_then(|v| v.to_str().ok()),
            Some("Standard_LRS")
        );
        assert_eq!(
            h.get("x-ms-account-kind").and_then(|v| v.to_str().ok()),
            Some("StorageV2")
        );
        assert_eq!(
            h.get("x-ms-client-request-id")
                .and_then(|v| v.to_str().ok()),
            Some("probe-1")
        );
        assert!(h.contains_key("x-ms-request-id"));
    }
    let r = env
        .blob(
            Method::GET,
            "stdatasci001",
            "/?restype=account&comp=properties",
            WRONG_KEY,
        )
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.headers()
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok()),
        Some("AuthenticationFailed")
    );
    let text = r.text().await.expect("body");
    assert!(text.starts_with("<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>AuthenticationFailed</Code><Message>Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.\nRequestId:"), "{text}");
    assert!(
        text.contains("Server used following string to sign: 'GET\n"),
        "{text}"
    );
    assert!(
        text.contains("\n/stdatasci001/stdatasci001/\ncomp:properties\nrestype:account"),
        "path-style resource: {text}"
    );

    // HEAD, and the container and blob paths, answer account information too.
    let k1 = key_of(&state, "stdatasci001", "key1");
    for (m, path) in [
        (Method::HEAD, "/?restype=account&comp=properties"),
        (Method::GET, "/raw?restype=account&comp=properties"),
        (
            Method::GET,
            "/raw/some%20blob.txt?restype=account&comp=properties",
        ),
    ] {
        let r = env
            .blob(m.clone(), "stdatasci001", path, &k1)
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status(), 200, "{m} {path}");
    }
    // A key of another account does not work here.
    let other = key_of(&state, "stexternal002", "key1");
    assert_eq!(env.probe("stdatasci001", &other).await, 403);
}

#[tokio::test]
async fn list_containers_returns_the_world_containers() {
    let env = Env::demo().await;
    let k1 = key_of(&env.state().await, "stdatasci001", "key1");
    let r = env
        .blob(Method::GET, "stdatasci001", "/?comp=list", &k1)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200);
    let text = r.text().await.expect("body");
    assert!(
        text.starts_with(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><EnumerationResults ServiceEndpoint="
        ),
        "{text}"
    );
    for name in ["raw", "curated", "training-data"] {
        assert!(
            text.contains(&format!("<Name>{name}</Name>")),
            "{name} in {text}"
        );
    }
    let r = env
        .blob(Method::GET, "stdatasci001", "/?comp=list&maxresults=1", &k1)
        .send()
        .await
        .expect("answer");
    let text = r.text().await.expect("body");
    assert_eq!(text.matches("<Container>").count(), 1);
    assert!(text.contains("<NextMarker>curated</NextMarker>"), "{text}");
    let r = env
        .blob(Method::GET, "stdatasci001", "/?comp=list&prefix=tr", &k1)
        .send()
        .await
        .expect("answer");
    let text = r.text().await.expect("body");
    assert_eq!(text.matches("<Container>").count(), 1, "{text}");
    let r = env
        .blob(Method::GET, "stdatasci001", "/?comp=list&maxresults=0", &k1)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn requests_without_authorization_or_shared_keys_disabled_are_refused() {
    let env = Env::start(world_with_owner()).await;
    let k1 = key_of(&env.state().await, "stdatasci001", "key1");
    let url = format!(
        "{}?restype=account&comp=properties",
        env.ep.storage_accounts["stdatasci001"].blob_endpoint
    );
    let r = env.http.get(&url).send().await.expect("answer");
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok()),
        Some("NoAuthenticationInformation")
    );

    let t = env.token(OWNER, ARM_SCOPE).await;
    let patch = json!({"properties": {"allowSharedKeyAccess": false}});
    let r = env
        .req(
            Method::PATCH,
            &env.arm(&env.account_id("stdatasci001"), STORAGE_API),
            &t,
        )
        .json(&patch)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200);
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
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.headers()
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok()),
        Some("KeyBasedAuthenticationNotPermitted")
    );
    assert_eq!(
        env.probe(
            "stexternal002",
            &key_of(&env.state().await, "stexternal002", "key1")
        )
        .await,
        200
    );
}

#[tokio::test]
async fn a_regenerated_key_works_after_the_propagation_delay_and_the_old_value_dies_at_once() {
    let env = Env::demo().await;
    env.settings(json!({"propagation_delay_secs": 30})).await;
    let before = env.state().await;
    let (old1, old2) = (
        key_of(&before, "stdatasci001", "key1"),
        key_of(&before, "stdatasci001", "key2"),
    );
    assert_eq!(env.probe("stdatasci001", &old2).await, 200);

    let t = env.token(OPERATOR, ARM_SCOPE).await;
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
    assert_eq!(r.status(), 200);
    let new2 = key_of(&env.state().await, "stdatasci001", "key2");
    assert_ne!(new2, old2);

    assert_eq!(
        env.probe("stdatasci001", &old2).await,
        403,
        "the old value is refused at once"
    );
    assert_eq!(
        env.probe("stdatasci001", &new2).await,
        403,
        "the new value is not accepted yet"
    );
    assert_eq!(
        env.probe("stdatasci001", &old1).await,
        200,
        "key1 is unaffected"
    );
    env.advance(29.0).await;
    assert_eq!(env.probe("stdatasci001", &new2).await, 403);
    env.advance(1.5).await;
    assert_eq!(
        env.probe("stdatasci001", &new2).await,
        200,
        "accepted once the delay has passed"
    );
    assert_eq!(env.probe("stdatasci001", &old2).await, 403);
}

#[tokio::test]
async fn unmodelled_blob_operations_say_so() {
    let env = Env::demo().await;
    let k1 = key_of(&env.state().await, "stdatasci001", "key1");
    let r = env
        .blob(Method::GET, "stdatasci001", "/raw/file.txt", &k1)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.headers()
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok()),
        Some("UnsupportedOperation")
    );
}

#[tokio::test]
async fn a_request_without_authorization_gets_the_storage_bearer_challenge() {
    // Azure answers an anonymous request with the challenge its message points to;
    // clients with tenant discovery read the tenant from it.
    let env = Env::demo().await;
    let url = format!(
        "{}?restype=account&comp=properties",
        env.ep.storage_accounts["stdatasci001"].blob_endpoint
    );
    let r = env.http.get(&url).send().await.expect("answer");
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some(
            format!(
                "Bearer authorization_uri={}/{TENANT}/oauth2/authorize resource_id=https://storage.azure.com",
                env.ep.authority_host
            )
            .as_str()
        )
    );
    let text = r.text().await.expect("body");
    assert!(
        text.contains("Please refer to the information in the www-authenticate header."),
        "{text}"
    );
}

/// Issue 12: a SharedKey request dated more than 15 minutes before the twin clock is
/// refused as Azure refuses it (403 AuthenticationFailed, "Request date header too
/// old: '<date as sent>'"); a malformed date too; a date in the future is accepted,
/// as Azure does. The twin clock decides: moving it makes a signed request stale.
#[tokio::test]
async fn stale_and_malformed_request_dates_are_refused_like_azure() {
    let env = Env::demo().await;
    let key = key_of(&env.state().await, "stdatasci001", "key1");
    let twin_now = || async {
        let c = env.admin_json(Method::GET, "/clock", None).await;
        chrono::DateTime::parse_from_rfc3339(c["now"].as_str().expect("now"))
            .expect("rfc3339")
            .with_timezone(&chrono::Utc)
    };
    let http_date =
        |t: chrono::DateTime<chrono::Utc>| httpdate::fmt_http_date(std::time::SystemTime::from(t));
    let probe = |date: String| {
        env.blob_dated(
            Method::GET,
            "stdatasci001",
            "/?restype=account&comp=properties",
            &key,
            &date,
        )
        .send()
    };
    let detail = |text: &str| {
        text.split("<AuthenticationErrorDetail>")
            .nth(1)
            .and_then(|d| d.split("</AuthenticationErrorDetail>").next())
            .unwrap_or_default()
            .to_string()
    };

    let now = twin_now().await;
    let fresh = http_date(now - chrono::TimeDelta::minutes(14));
    assert_eq!(probe(fresh).await.expect("answer").status(), 200);
    let future = http_date(now + chrono::TimeDelta::hours(2));
    assert_eq!(probe(future).await.expect("answer").status(), 200);

    let stale = http_date(now - chrono::TimeDelta::minutes(16));
    let r = probe(stale.clone()).await.expect("answer");
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.headers()
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok()),
        Some("AuthenticationFailed")
    );
    let text = r.text().await.expect("body");
    assert!(text.contains("<Code>AuthenticationFailed</Code>"), "{text}");
    assert_eq!(
        detail(&text),
        format!("Request date header too old: '{stale}'")
    );

    let r = probe("yesterday, around noon".into())
        .await
        .expect("answer");
    assert_eq!(r.status(), 403);
    let text = r.text().await.expect("body");
    assert_eq!(
        detail(&text),
        "The Date header in the request is incorrect."
    );

    // Signed now, sent after the twin clock moved 16 minutes on: stale.
    let signed_now = http_date(twin_now().await);
    env.advance(16.0 * 60.0).await;
    let r = probe(signed_now.clone()).await.expect("answer");
    assert_eq!(r.status(), 403);
    assert_eq!(
        detail(&r.text().await.expect("body")),
        format!("Request date header too old: '{signed_now}'")
    );
}

/// `Date` instead of `x-ms-date` is judged the same way (it is then part of the
/// string to sign).
#[tokio::test]
async fn the_date_header_is_checked_when_x_ms_date_is_absent() {
    use base64::Engine as _;
    let env = Env::demo().await;
    let key = key_of(&env.state().await, "stdatasci001", "key1");
    let c = env.admin_json(Method::GET, "/clock", None).await;
    let now = chrono::DateTime::parse_from_rfc3339(c["now"].as_str().expect("now"))
        .expect("rfc3339")
        .with_timezone(&chrono::Utc);
    let send = |date: String| {
        let sts = format!(
            "GET\n\n\n\n\n\n{date}\n\n\n\n\n\nx-ms-version:2023-11-03\n/stdatasci001/stdatasci001/\ncomp:properties\nrestype:account"
        );
        let k = base64::engine::general_purpose::STANDARD
            .decode(&key)
            .expect("key");
        let tag = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &k),
            sts.as_bytes(),
        );
        let sig = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
        env.http
            .get(env.url("/stdatasci001/?restype=account&comp=properties"))
            .header("date", date)
            .header("x-ms-version", "2023-11-03")
            .header("authorization", format!("SharedKey stdatasci001:{sig}"))
            .send()
    };
    let fresh = httpdate::fmt_http_date(std::time::SystemTime::from(now));
    assert_eq!(send(fresh).await.expect("answer").status(), 200);
    let stale = httpdate::fmt_http_date(std::time::SystemTime::from(
        now - chrono::TimeDelta::minutes(20),
    ));
    let r = send(stale.clone()).await.expect("answer");
    assert_eq!(r.status(), 403);
    assert!(
        r.text()
            .await
            .expect("body")
            .contains(&format!("Request date header too old: '{stale}'"))
    );
}
