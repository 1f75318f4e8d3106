//! Shared set-up: a running demo twin, an HTTPS client that trusts its CA, tokens,
//! admin calls and an independent SharedKey signer.

use std::time::Duration;

use base64::Engine as _;
use keyflip_twin::{Endpoints, Twin, TwinHandle, TwinOptions, World};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

pub const TENANT: &str = "7f3c1a2e-4b5d-4c6e-8f90-1a2b3c4d5e6f";
pub const SUB: &str = "3c9e5b1d-2a4f-4e6b-9c8d-0f1e2d3c4b5a";
pub const RG: &str = "rg-datascience";
pub const OPERATOR: &str = "keyflip-operator";
pub const READER: &str = "keyflip-reader";
pub const ARM_SCOPE: &str = "https://management.azure.com/.default";
pub const VAULT_SCOPE: &str = "https://vault.azure.net/.default";
pub const DATABRICKS_SCOPE: &str = "2ff814a6-3304-4ab8-85cb-cd0e6f879c1d/.default";
pub const STORAGE_API: &str = "2024-01-01";
pub const ML_API: &str = "2024-04-01";

/// The demo world's TOML, for tests that extend it.
pub const DEMO_TOML: &str = include_str!("../../worlds/demo.toml");

/// The demo world plus `twin-owner`, an Owner of the subscription (for operations
/// the least-privilege demo principals may not perform) and `twin-stranger`, a
/// principal with no role at all.
pub fn world_with_owner() -> World {
    with_owner(DEMO_TOML, "demo+owner")
}

/// A world file plus the principals `world_with_owner` adds.
pub fn with_owner(base: &str, origin: &str) -> World {
    let extra = format!(
        r#"
[[principal]]
name = "twin-owner"
client_id = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
object_id = "1b2c3d4e-5f6a-4b7c-9d8e-0f1a2b3c4d5e"
client_secret = "owner-secret"

[[principal]]
name = "twin-stranger"
client_id = "2c3d4e5f-6a7b-4c8d-8e9f-1a2b3c4d5e6f"
object_id = "3d4e5f6a-7b8c-4d9e-9f0a-2b3c4d5e6f7a"
client_secret = "stranger-secret"

[[role_assignment]]
principal = "twin-owner"
role = "Owner"
scope = "/subscriptions/{SUB}"
"#
    );
    World::from_toml_str(&format!("{base}\n{extra}"), origin).expect("extended world")
}

pub const OWNER: &str = "twin-owner";
pub const STRANGER: &str = "twin-stranger";

pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub struct Env {
    pub twin: TwinHandle,
    pub http: reqwest::Client,
    pub ep: Endpoints,
}

impl Env {
    pub async fn demo() -> Env {
        Env::start(World::demo()).await
    }

    pub async fn start(world: World) -> Env {
        install_crypto();
        let twin = Twin::start(world, TwinOptions::default())
            .await
            .expect("the twin starts");
        let http = client(twin.ca_pem(), false);
        let ep = twin.endpoints().clone();
        Env { twin, http, ep }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.ep.base_url)
    }

    pub fn account_id(&self, name: &str) -> String {
        format!(
            "/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Storage/storageAccounts/{name}"
        )
    }

    pub fn workspace_id(&self) -> String {
        format!(
            "/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.MachineLearningServices/workspaces/mlw-datasci"
        )
    }

    /// An ARM URL for a resource id plus a suffix, with an api-version.
    pub fn arm(&self, path: &str, api: &str) -> String {
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("{}{path}{sep}api-version={api}", self.ep.base_url)
    }

    /// A token for a principal, through the client-credentials flow.
    pub async fn token(&self, principal: &str, scope: &str) -> String {
        let r = self.token_request(principal, None, scope).await;
        assert_eq!(r.status(), 200, "token request for {principal}");
        let v: Value = r.json().await.expect("json");
        v["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }

    pub async fn token_request(
        &self,
        principal: &str,
        secret: Option<&str>,
        scope: &str,
    ) -> Response {
        let p = &self.ep.principals[principal];
        let form = form(&[
            ("client_id", p.client_id.as_str()),
            ("client_secret", secret.unwrap_or(&p.client_secret)),
            ("grant_type", "client_credentials"),
            ("scope", scope),
            ("client_info", "1"),
        ]);
        self.http
            .post(self.url(&format!("/{TENANT}/oauth2/v2.0/token")))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .expect("token endpoint answers")
    }

    pub fn req(&self, method: Method, url: &str, token: &str) -> RequestBuilder {
        self.http.request(method, url).bearer_auth(token)
    }

    pub fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.ep.admin.url))
            .bearer_auth(&self.ep.admin.token)
    }

    pub async fn admin_json(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let mut r = self.admin(method, path);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("admin answers");
        assert_eq!(resp.status(), 200, "admin {path}");
        resp.json().await.expect("admin json")
    }

    pub async fn state(&self) -> Value {
        self.admin_json(Method::GET, "/state", None).await
    }

    pub async fn settings(&self, patch: Value) {
        self.admin_json(Method::PATCH, "/settings", Some(patch))
            .await;
    }

    pub async fn advance(&self, secs: f64) {
        self.admin_json(Method::POST, "/clock", Some(json!({"advance_secs": secs})))
            .await;
    }

    pub async fn fault(&self, rule: Value) -> String {
        let v = self.admin_json(Method::POST, "/faults", Some(rule)).await;
        v["id"].as_str().expect("fault id").to_string()
    }

    pub async fn requests(&self) -> Vec<Value> {
        let v = self.admin_json(Method::GET, "/requests", None).await;
        v.as_array().cloned().expect("array")
    }

    pub async fn list_keys(&self, token: &str, account: &str) -> Response {
        let url = self.arm(
            &format!("{}/listKeys", self.account_id(account)),
            STORAGE_API,
        );
        self.req(Method::POST, &url, token)
            .send()
            .await
            .expect("answer")
    }

    /// A blob request signed with SharedKey by the test's own signer.
    pub fn blob(
        &self,
        method: Method,
        account: &str,
        path_and_query: &str,
        key: &str,
    ) -> RequestBuilder {
        self.blob_with(method, account, path_and_query, key, &[])
    }

    /// A signed blob request dated `date` (an `x-ms-date` value) instead of now.
    pub fn blob_dated(
        &self,
        method: Method,
        account: &str,
        path_and_query: &str,
        key: &str,
        date: &str,
    ) -> RequestBuilder {
        let url = format!("{}/{account}{path_and_query}", self.ep.base_url);
        let headers: Vec<(String, String)> = vec![
            ("x-ms-date".into(), date.to_string()),
            ("x-ms-version".into(), "2023-11-03".into()),
        ];
        let sig = sign_shared_key(method.as_str(), account, &url, &headers, key);
        let mut r = self.http.request(method, url);
        for (k, v) in &headers {
            r = r.header(k, v);
        }
        r.header("authorization", format!("SharedKey {account}:{sig}"))
    }

    /// The same, with extra `x-ms-*` headers (signed too).
    pub fn blob_with(
        &self,
        method: Method,
        account: &str,
        path_and_query: &str,
        key: &str,
        extra: &[(&str, &str)],
    ) -> RequestBuilder {
        let url = format!("{}/{account}{path_and_query}", self.ep.base_url);
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        let mut headers: Vec<(String, String)> = vec![
            ("x-ms-date".into(), date),
            ("x-ms-version".into(), "2023-11-03".into()),
        ];
        headers.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let sig = sign_shared_key(method.as_str(), account, &url, &headers, key);
        let mut r = self.http.request(method, url);
        for (k, v) in &headers {
            r = r.header(k, v);
        }
        r.header("authorization", format!("SharedKey {account}:{sig}"))
    }

    pub async fn probe(&self, account: &str, key: &str) -> StatusCode {
        self.blob(
            Method::GET,
            account,
            "/?restype=account&comp=properties",
            key,
        )
        .send()
        .await
        .expect("answer")
        .status()
    }
}

pub fn client(ca_pem: &str, http1_only: bool) -> reqwest::Client {
    let cert = reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA pem");
    let mut b = reqwest::Client::builder()
        .tls_certs_only([cert])
        .timeout(Duration::from_secs(20))
        .redirect(reqwest::redirect::Policy::none());
    if http1_only {
        b = b.http1_only();
    }
    b.build().expect("client")
}

pub fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// SharedKey as Microsoft's SDKs compute it for a request with no body and only
/// `x-ms-*` headers: written from Microsoft Learn's "Authorize with Shared Key", independently of the twin's
/// verifier.
pub fn sign_shared_key(
    method: &str,
    account: &str,
    url: &str,
    headers: &[(String, String)],
    key: &str,
) -> String {
    let u = url::Url::parse(url).expect("url");
    let mut ms = headers.to_vec();
    ms.sort();
    let canonical: String = ms.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let mut sts = format!(
        "{method}\n\n\n\n\n\n\n\n\n\n\n\n{canonical}/{account}{}",
        u.path()
    );
    let mut q: Vec<(String, String)> = u
        .query_pairs()
        .map(|(k, v)| (k.to_lowercase(), v.into_owned()))
        .collect();
    q.sort();
    for (k, v) in q {
        sts.push_str(&format!("\n{k}:{v}"));
    }
    let key = base64::engine::general_purpose::STANDARD
        .decode(key)
        .expect("base64 key");
    let tag = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
        sts.as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
}

pub async fn body(r: Response) -> (StatusCode, Value) {
    let status = r.status();
    let text = r.text().await.expect("body");
    let v = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, v)
}

pub fn key_of(state: &Value, account: &str, key: &str) -> String {
    state["storage_accounts"][account][key]
        .as_str()
        .expect("key in state")
        .to_string()
}
