//! Client assertions signed with a certificate registered on the principal
//! (`private_key_jwt`): PS256 with `x5t#S256` and RS256 with `x5t` are accepted, and
//! each way Entra ID refuses one is refused here too: a certificate not registered on
//! the app, a signature by another key, another app's id, another audience, an
//! expired assertion.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use ring::signature::{RSA_PKCS1_SHA256, RSA_PSS_SHA256, RsaKeyPair};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};

use super::common::*;

struct Signer {
    der: Vec<u8>,
    key: RsaKeyPair,
}

fn signer(name: &str) -> Signer {
    let path = format!("{}/worlds/certs/{name}.pem", env!("CARGO_MANIFEST_DIR"));
    let pem = std::fs::read(path).expect("fixture");
    let der = CertificateDer::from_pem_slice(&pem)
        .expect("certificate")
        .to_vec();
    let key = match PrivateKeyDer::from_pem_slice(&pem).expect("key") {
        PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()).expect("rsa"),
        other => panic!("unexpected key {other:?}"),
    };
    Signer { der, key }
}

impl Signer {
    fn thumb(&self, alg: &'static ring::digest::Algorithm) -> String {
        B64URL.encode(ring::digest::digest(alg, &self.der).as_ref())
    }

    /// A compact JWS over `header` and `claims`, signed with this key.
    fn sign(&self, header: &Value, claims: &Value, pss: bool) -> String {
        let mut jwt = format!(
            "{}.{}",
            B64URL.encode(header.to_string()),
            B64URL.encode(claims.to_string())
        );
        let mut sig = vec![0; self.key.public().modulus_len()];
        let rng = ring::rand::SystemRandom::new();
        let alg: &'static dyn ring::signature::RsaEncoding = if pss {
            &RSA_PSS_SHA256
        } else {
            &RSA_PKCS1_SHA256
        };
        self.key
            .sign(alg, &rng, jwt.as_bytes(), &mut sig)
            .expect("sign");
        jwt.push('.');
        jwt.push_str(&B64URL.encode(&sig));
        jwt
    }
}

fn claims(env: &Env, client_id: &str, now: i64) -> Value {
    json!({
        "aud": format!("{}/{TENANT}/oauth2/v2.0/token", env.ep.base_url),
        "iss": client_id,
        "sub": client_id,
        "jti": uuid_like(now),
        "nbf": now,
        "iat": now,
        "exp": now + 600,
    })
}

fn uuid_like(n: i64) -> String {
    format!("00000000-0000-4000-8000-{:012x}", n.unsigned_abs())
}

async fn present(env: &Env, client_id: &str, assertion: &str) -> (reqwest::StatusCode, Value) {
    let url = env.url(&format!("/{TENANT}/oauth2/v2.0/token"));
    let body = form(&[
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("scope", ARM_SCOPE),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", assertion),
    ]);
    let r = env
        .http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("answer");
    body_of(r).await
}

async fn body_of(r: reqwest::Response) -> (reqwest::StatusCode, Value) {
    body(r).await
}

#[tokio::test]
async fn registered_certificates_sign_assertions_and_nothing_else_does() {
    let env = Env::demo().await;
    let op = env.ep.principals[OPERATOR].client_id.clone();
    let reader = env.ep.principals[READER].client_id.clone();
    let now = chrono::Utc::now().timestamp();
    let mine = signer("keyflip-operator");
    let stranger = signer("unregistered");

    // PS256 with x5t#S256 (what Microsoft documents today) gets a token that works.
    let header =
        json!({"alg": "PS256", "typ": "JWT", "x5t#S256": mine.thumb(&ring::digest::SHA256)});
    let (status, v) = present(
        &env,
        &op,
        &mine.sign(&header, &claims(&env, &op, now), true),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let token = v["access_token"].as_str().expect("token");
    assert_eq!(env.list_keys(token, "stdatasci001").await.status(), 200);

    // RS256 with the SHA-1 x5t (the older form MSAL libraries still send).
    let header = json!({"alg": "RS256", "typ": "JWT", "x5t": mine.thumb(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY)});
    let (status, v) = present(
        &env,
        &op,
        &mine.sign(&header, &claims(&env, &op, now), false),
    )
    .await;
    assert_eq!(status, 200, "{v}");

    let refused = |v: &Value, code: u64| {
        v["error_codes"]
            .as_array()
            .is_some_and(|c| c.contains(&json!(code)))
    };
    // A certificate the app does not have.
    let header =
        json!({"alg": "PS256", "typ": "JWT", "x5t#S256": stranger.thumb(&ring::digest::SHA256)});
    let (status, v) = present(
        &env,
        &op,
        &stranger.sign(&header, &claims(&env, &op, now), true),
    )
    .await;
    assert_eq!(status, 401, "{v}");
    assert!(
        refused(&v, 700027)
            && v["error_description"]
                .as_str()
                .unwrap()
                .contains("not registered"),
        "{v}"
    );

    // The registered certificate's thumbprint, but signed by another key.
    let header =
        json!({"alg": "PS256", "typ": "JWT", "x5t#S256": mine.thumb(&ring::digest::SHA256)});
    let (status, v) = present(
        &env,
        &op,
        &stranger.sign(&header, &claims(&env, &op, now), true),
    )
    .await;
    assert_eq!(status, 401, "{v}");
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .contains("signature validation"),
        "{v}"
    );

    // The operator's certificate presented for another app (the reader has none).
    let (status, v) = present(
        &env,
        &reader,
        &mine.sign(&header, &claims(&env, &reader, now), true),
    )
    .await;
    assert_eq!(status, 401, "{v}");
    assert!(refused(&v, 700027), "{v}");

    // iss/sub of another app inside an assertion for this one.
    let (status, v) = present(
        &env,
        &op,
        &mine.sign(&header, &claims(&env, &reader, now), true),
    )
    .await;
    assert_eq!(status, 401, "{v}");
    assert!(refused(&v, 700023), "{v}");

    // Another audience.
    let mut c = claims(&env, &op, now);
    c["aud"] = json!("https://login.microsoftonline.com/other/oauth2/v2.0/token");
    let (status, v) = present(&env, &op, &mine.sign(&header, &c, true)).await;
    assert_eq!(status, 401, "{v}");
    assert!(refused(&v, 700024), "{v}");

    // Expired.
    let (status, v) = present(
        &env,
        &op,
        &mine.sign(&header, &claims(&env, &op, now - 3600), true),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .contains("valid time range"),
        "{v}"
    );
}
