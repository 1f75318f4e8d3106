//! keyflip-twin for tests: started through its library API on a runtime of its own
//! (so it outlives no test and no test's runtime, and its log events never reach a
//! test's thread-local subscriber), then used only over HTTPS: keyflip through a real
//! `keyflip.toml`, the tests through the admin API (faults, request log, state).

use std::os::unix::fs::PermissionsExt as _;
use std::sync::mpsc;
use std::thread::JoinHandle;

use keyflip::azure::{Azure, AzureOptions};
use keyflip::resource_id::ResourceId;
use keyflip_twin::{Endpoints, Twin, TwinOptions, World};
use serde_json::Value;
use url::Url;

use super::{config, fast_options, fingerprinter};

pub const OPERATOR: &str = "keyflip-operator";
pub const READER: &str = "keyflip-reader";
pub const ACCOUNT: &str = "stdatasci001";
pub const VAULT: &str = "kv-datasci";
pub const WORKSPACE: &str = "mlw-datasci";
pub const DATABRICKS: &str = "dbw-datasci";
pub const FUNCTION_APP: &str = "func-datasci-ingest";
pub const DATA_FACTORY: &str = "adf-datasci";
/// The demo factory's linked service that holds the key as a SecureString.
pub const LINKED_SERVICE: &str = "ls_stdatasci001_blob";

pub struct TestTwin {
    pub endpoints: Endpoints,
    pub dir: tempfile::TempDir,
    admin: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for TestTwin {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl TestTwin {
    /// Starts the demo world on a free port.
    pub fn start() -> TestTwin {
        Self::start_world(World::demo(), TwinOptions::default())
    }

    /// Starts the demo world writing its state directory (ca.pem, endpoints.json,
    /// principals/*.secret) to `state_dir`, as `keyflip-twin serve --state-dir` does.
    pub fn start_in(state_dir: &std::path::Path) -> TestTwin {
        let options = TwinOptions {
            state_dir: Some(state_dir.to_path_buf()),
            ..TwinOptions::default()
        };
        Self::start_world(World::demo(), options)
    }

    /// Starts the demo world with `extra` TOML appended (e.g. another role assignment).
    pub fn start_with(extra: &str) -> TestTwin {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/twin/worlds/demo.toml");
        let demo = std::fs::read_to_string(path).expect("twin/worlds/demo.toml");
        let world = World::from_toml_str(&format!("{demo}\n{extra}"), "demo.toml + test")
            .unwrap_or_else(|e| panic!("the test world is invalid: {e}"));
        Self::start_world(world, TwinOptions::default())
    }

    /// Starts the world in `text` (a whole world file).
    pub fn start_from(text: &str) -> TestTwin {
        let world = World::from_toml_str(text, "test world")
            .unwrap_or_else(|e| panic!("the test world is invalid: {e}"));
        Self::start_world(world, TwinOptions::default())
    }

    /// The demo world's file, for tests that start a variant of it.
    pub fn demo_world_text() -> String {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/twin/worlds/demo.toml");
        std::fs::read_to_string(path).expect("twin/worlds/demo.toml")
    }

    fn start_world(world: World, options: TwinOptions) -> TestTwin {
        keyflip::install_crypto_provider();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime for the twin");
            runtime.block_on(async move {
                let handle = Twin::start(world, options)
                    .await
                    .expect("the demo twin starts");
                let _ = ready_tx.send((handle.endpoints().clone(), handle.ca_pem().to_owned()));
                let _ = stop_rx.await;
                handle.shutdown().await;
            });
        });
        let (endpoints, ca_pem) = ready_rx
            .recv()
            .expect("the twin thread reports its endpoints");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), &ca_pem).unwrap();
        std::fs::create_dir(dir.path().join("principals")).unwrap();
        for (name, p) in &endpoints.principals {
            let path = dir.path().join("principals").join(format!("{name}.secret"));
            std::fs::write(&path, format!("{}\n", p.client_secret)).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let admin = reqwest::Client::builder()
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(ca_pem.as_bytes()).unwrap())
            .build()
            .unwrap();
        TestTwin {
            endpoints,
            dir,
            admin,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// The keyflip.toml that points at this twin as `principal`.
    pub fn config_text(&self, principal: &str) -> String {
        let e = &self.endpoints;
        format!(
            r#"plans_dir = "plans"
[cloud]
name = "custom"
arm_url = "{arm}"
arm_audience = "{audience}"
authority_host = "{authority}"
log_analytics_url = "{logs}"
blob_endpoint = "{base}/{{account}}/"
ca_bundle = "ca.pem"

[credential]
kind = "client-secret"
tenant_id = "{tenant}"
client_id = "{client}"
client_secret_file = "principals/{principal}.secret"
"#,
            arm = e.arm_url,
            audience = e.arm_audience,
            authority = e.authority_host,
            logs = e.base_url,
            base = e.base_url,
            tenant = e.tenant_id,
            client = e.principals[principal].client_id,
        )
    }

    pub fn azure(&self, principal: &str) -> Azure {
        self.azure_with(principal, fast_options())
    }

    pub fn azure_with(&self, principal: &str, options: AzureOptions) -> Azure {
        self.azure_from(&self.config_text(principal), options)
            .unwrap_or_else(|e| panic!("cannot build the facade: {e}"))
    }

    /// A facade from arbitrary keyflip.toml text (relative paths in the twin's dir).
    pub fn azure_from(
        &self,
        text: &str,
        options: AzureOptions,
    ) -> Result<Azure, keyflip::azure::Error> {
        let config = config(text, self.dir.path(), &[]);
        Azure::with_options(&config, fingerprinter(), options, &|_: &str| None)
    }

    /// A storage account id in the demo world, before any twin is started.
    pub fn demo_account_id(name: &str) -> String {
        format!(
            "/subscriptions/3c9e5b1d-2a4f-4e6b-9c8d-0f1e2d3c4b5a/resourceGroups/rg-datascience/providers/Microsoft.Storage/storageAccounts/{name}"
        )
    }

    pub fn account_id(&self, name: &str) -> ResourceId {
        self.endpoints.storage_accounts[name].id.parse().unwrap()
    }

    pub fn workspace_id(&self, name: &str) -> ResourceId {
        self.endpoints.ml_workspaces[name].id.parse().unwrap()
    }

    pub fn vault_url(&self, name: &str) -> Url {
        Url::parse(&self.endpoints.key_vaults[name].url).unwrap()
    }

    pub fn site_id(&self, name: &str) -> ResourceId {
        self.endpoints.web_apps[name].id.parse().unwrap()
    }

    pub fn factory_id(&self, name: &str) -> ResourceId {
        self.endpoints.data_factories[name].id.parse().unwrap()
    }

    pub fn databricks_url(&self, name: &str) -> Url {
        Url::parse(&self.endpoints.databricks_workspaces[name].url).unwrap()
    }

    async fn admin_call(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Value {
        let url = format!("{}{path}", self.endpoints.admin.url);
        let mut request = self
            .admin
            .request(method, &url)
            .bearer_auth(&self.endpoints.admin.token);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.expect("the admin API answers");
        let status = response.status();
        let bytes = response.bytes().await.unwrap();
        assert!(
            status.is_success(),
            "admin {path}: HTTP {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
        serde_json::from_slice(&bytes).unwrap()
    }

    /// Changes twin settings (`PATCH /_admin/settings`), e.g. the propagation delay.
    pub async fn settings(&self, changes: Value) {
        self.admin_call(reqwest::Method::PATCH, "/settings", Some(&changes))
            .await;
    }

    /// How far the twin's clock is ahead of the system clock.
    pub async fn clock_offset(&self) -> chrono::TimeDelta {
        let answer = self.admin_call(reqwest::Method::GET, "/clock", None).await;
        chrono::TimeDelta::milliseconds(answer["offset_ms"].as_i64().unwrap_or(0))
    }

    /// Moves the twin's clock forward.
    pub async fn advance_clock(&self, secs: f64) {
        self.admin_call(
            reqwest::Method::POST,
            "/clock",
            Some(&serde_json::json!({"advance_secs": secs})),
        )
        .await;
    }

    /// Removes every fault rule.
    pub async fn clear_faults(&self) {
        self.admin_call(reqwest::Method::DELETE, "/faults", None)
            .await;
    }

    /// Adds a fault rule (see twin/src/faults.rs for the shape).
    pub async fn fault(&self, rule: Value) {
        self.admin_call(reqwest::Method::POST, "/faults", Some(&rule))
            .await;
    }

    /// The fault rules, each with how often it `fired` (a latency rule counts when the
    /// request starts waiting, so a test can act while it waits).
    pub async fn faults(&self) -> Vec<Value> {
        match self.admin_call(reqwest::Method::GET, "/faults", None).await {
            Value::Array(rules) => rules,
            other => panic!("the fault list is not a list: {other}"),
        }
    }

    /// Waits until the fault rule on `operation` has fired `n` times.
    pub async fn fired(&self, operation: &str, n: u64) {
        for _ in 0..600 {
            let fired = self
                .faults()
                .await
                .iter()
                .filter(|r| r["operation"] == operation)
                .map(|r| r["fired"].as_u64().unwrap_or(0))
                .sum::<u64>();
            if fired >= n {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("the fault on {operation} never fired {n} times");
    }

    /// The request log: `{seq, operation, method, path, principal, status, at}`.
    pub async fn requests(&self) -> Vec<Value> {
        match self
            .admin_call(reqwest::Method::GET, "/requests", None)
            .await
        {
            Value::Array(entries) => entries,
            other => panic!("the request log is not a list: {other}"),
        }
    }

    /// Request log entries for one operation.
    pub async fn requests_for(&self, operation: &str) -> Vec<Value> {
        self.requests()
            .await
            .into_iter()
            .filter(|e| e["operation"] == operation)
            .collect()
    }

    /// The twin's whole state, key values included.
    pub async fn state(&self) -> Value {
        self.admin_call(reqwest::Method::GET, "/state", None).await
    }

    /// A federated (Kubernetes service account) token for `principal`, as a workload
    /// identity webhook would mount it.
    pub async fn federated_token(&self, principal: &str) -> String {
        let answer = self
            .admin_call(
                reqwest::Method::POST,
                "/federated-token",
                Some(&serde_json::json!({"principal": principal})),
            )
            .await;
        answer["token"].as_str().expect("a token").to_owned()
    }

    /// Regenerates a key behind keyflip's back; returns the new value.
    pub async fn regenerate_behind_our_back(&self, account: &str, key: &str) -> String {
        let answer = self
            .admin_call(
                reqwest::Method::POST,
                &format!("/storage/{account}/regenerate/{key}"),
                None,
            )
            .await;
        answer["value"].as_str().expect("the new key").to_owned()
    }

    /// Turns a simulated client (`[[client]]`, such as the demo world's forgotten
    /// `legacy-nightly-export`) on or off.
    pub async fn set_client(&self, name: &str, enabled: bool) {
        self.admin_call(
            reqwest::Method::PATCH,
            &format!("/clients/{name}"),
            Some(&serde_json::json!({"enabled": enabled})),
        )
        .await;
    }

    /// A separate handle on the admin API, for clocks that move the twin's clock.
    pub fn admin_handle(&self) -> (reqwest::Client, String, String) {
        (
            self.admin.clone(),
            self.endpoints.admin.url.clone(),
            self.endpoints.admin.token.clone(),
        )
    }

    /// The account's keys as the twin holds them.
    pub async fn keys(&self, account: &str) -> (String, String) {
        let state = self.state().await;
        let a = &state["storage_accounts"][account];
        (
            a["key1"].as_str().expect("key1 in the state").to_owned(),
            a["key2"].as_str().expect("key2 in the state").to_owned(),
        )
    }
}
