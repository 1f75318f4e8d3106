//! The twin the benchmark runs against: the demo world plus a fleet of storage
//! accounts (`stfl00000`, ...), each with a raw-key secret in the vault `kv-fleet`,
//! started in-process on a runtime of its own and then used only over HTTPS: keyflip
//! through a `keyflip.toml`, the bench through the admin API (latency rules, request
//! log, state, settings).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use anyhow::{Context as _, anyhow, bail};
use chrono::{DateTime, TimeDelta, Utc};
use keyflip_twin::{Endpoints, Twin, TwinOptions, World};
use serde_json::{Value, json};

pub const SUBSCRIPTION: &str = "3c9e5b1d-2a4f-4e6b-9c8d-0f1e2d3c4b5a";
pub const FLEET_GROUP: &str = "rg-fleet";
pub const FLEET_VAULT: &str = "kv-fleet";
pub const OPERATOR: &str = "keyflip-operator";

/// Every operation the twin names (twin/README.md): latency is injected on each.
const OPERATIONS: &[&str] = &[
    "entra.token",
    "entra.discovery",
    "msi.token",
    "arm.metadata",
    "arm.subscriptions",
    "arm.tenants",
    "storage.get",
    "storage.patch",
    "storage.listKeys",
    "storage.regenerateKey",
    "ml.workspace.get",
    "ml.workspace.listKeys",
    "ml.workspace.resyncKeys",
    "ml.operation.poll",
    "ml.datastore.list",
    "ml.datastore.get",
    "ml.datastore.put",
    "ml.datastore.listSecrets",
    "authz.permissions",
    "authz.roleDefinition",
    "keyvault.set",
    "keyvault.get",
    "keyvault.versions",
    "keyvault.update",
    "blob.accountInfo",
    "blob.listContainers",
    "databricks.scopes",
    "databricks.put",
    "databricks.list",
    "web.site.get",
    "web.appSettings.list",
    "web.appSettings.put",
    "web.connectionStrings.list",
    "web.connectionStrings.put",
    "web.slotConfigNames.get",
    "web.slotConfigNames.put",
    "datafactory.factory.get",
    "datafactory.linkedService.list",
    "datafactory.linkedService.get",
    "datafactory.linkedService.put",
    "monitor.diagnosticSettings.list",
    "monitor.diagnosticSettings.get",
    "monitor.diagnosticSettings.put",
    "monitor.diagnosticSettings.delete",
    "loganalytics.query",
];

/// The name of fleet account `i`.
pub fn fleet_account(i: usize) -> String {
    format!("stfl{i:05}")
}

pub fn fleet_account_id(i: usize) -> String {
    format!(
        "/subscriptions/{SUBSCRIPTION}/resourceGroups/{FLEET_GROUP}/providers/Microsoft.Storage/storageAccounts/{}",
        fleet_account(i)
    )
}

/// The demo world with `fleet` more accounts, their secrets and the operator's roles.
fn world_text(fleet: usize) -> String {
    let mut text = include_str!("../../twin/worlds/demo.toml").to_owned();
    text.push_str(&format!(
        "\n# --- The bench's fleet ---\n[[resource_group]]\nname = \"{FLEET_GROUP}\"\nlocation = \"westeurope\"\n\n[[key_vault]]\nname = \"{FLEET_VAULT}\"\nresource_group = \"{FLEET_GROUP}\"\n"
    ));
    for i in 0..fleet {
        let name = fleet_account(i);
        text.push_str(&format!(
            "\n[[key_vault.secret]]\nname = \"{name}-key\"\ncontent_type = \"text/plain\"\nvalue_from = {{ account = \"{name}\", key = \"key1\", format = \"raw-key\" }}\n"
        ));
    }
    for i in 0..fleet {
        text.push_str(&format!(
            "\n[[storage_account]]\nname = \"{}\"\nresource_group = \"{FLEET_GROUP}\"\nsku = \"Standard_LRS\"\nkind = \"StorageV2\"\nallow_shared_key_access = true\n",
            fleet_account(i)
        ));
    }
    let group = format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/{FLEET_GROUP}");
    for (role, scope) in [
        ("Reader", group.clone()),
        ("Storage Account Key Operator Service Role", group.clone()),
        (
            "Key Vault Secrets Officer",
            format!("{group}/providers/Microsoft.KeyVault/vaults/{FLEET_VAULT}"),
        ),
    ] {
        text.push_str(&format!(
            "\n[[role_assignment]]\nprincipal = \"{OPERATOR}\"\nrole = \"{role}\"\nscope = \"{scope}\"\n"
        ));
    }
    text
}

/// A running twin and an HTTPS client for its admin API.
pub struct BenchTwin {
    pub endpoints: Endpoints,
    pub dir: PathBuf,
    admin: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for BenchTwin {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One request log entry.
#[derive(Clone, Debug)]
pub struct Logged {
    pub seq: u64,
    pub operation: String,
    pub method: String,
    pub path: String,
    pub status: Option<u16>,
    /// When the twin answered (its clock, millisecond resolution).
    pub at: DateTime<Utc>,
}

impl Logged {
    /// An ARM call that Azure counts as a write (every method but GET and HEAD).
    pub fn is_arm_write(&self) -> bool {
        self.is_arm() && self.method != "GET" && self.method != "HEAD"
    }

    pub fn is_arm(&self) -> bool {
        self.path
            .to_ascii_lowercase()
            .starts_with("/subscriptions/")
    }

    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// The storage account a `Microsoft.Storage` path names, lower case.
    pub fn storage_account(&self) -> Option<String> {
        let lower = self.path.to_ascii_lowercase();
        let rest = lower.split("/storageaccounts/").nth(1)?;
        Some(rest.split('/').next()?.to_owned())
    }
}

impl BenchTwin {
    /// Starts the world with `fleet` extra accounts, writing ca.pem, endpoints.json and
    /// principals/ into `dir`.
    pub fn start(fleet: usize, dir: &Path) -> anyhow::Result<BenchTwin> {
        let world = World::from_toml_str(&world_text(fleet), "bench world")
            .map_err(|e| anyhow!("the bench world is invalid: {e}"))?;
        let options = TwinOptions {
            state_dir: Some(dir.to_path_buf()),
            ..TwinOptions::default()
        };
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow!("cannot start the twin's runtime: {e}")));
                    return;
                }
            };
            runtime.block_on(async move {
                match Twin::start(world, options).await {
                    Ok(handle) => {
                        let _ = ready_tx.send(Ok(handle.endpoints().clone()));
                        let _ = stop_rx.await;
                        handle.shutdown().await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow!("the twin does not start: {e}")));
                    }
                }
            });
        });
        let endpoints = ready_rx
            .recv()
            .context("the twin thread ended before reporting its endpoints")??;
        let ca = std::fs::read(dir.join("ca.pem")).context("reading the twin's ca.pem")?;
        let admin = reqwest::Client::builder()
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(&ca)?)
            .build()?;
        Ok(BenchTwin {
            endpoints,
            dir: dir.to_path_buf(),
            admin,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    async fn admin_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.endpoints.admin.url);
        let mut request = self
            .admin
            .request(method, &url)
            .bearer_auth(&self.endpoints.admin.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        if !status.is_success() {
            bail!(
                "admin {path}: HTTP {status}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        Ok(serde_json::from_slice(&bytes)?)
    }

    /// Adds `ms` of latency to every call of every operation.
    pub async fn inject_latency(&self, ms: u64) -> anyhow::Result<()> {
        self.admin_call(reqwest::Method::DELETE, "/faults", None)
            .await?;
        if ms == 0 {
            return Ok(());
        }
        for op in OPERATIONS {
            self.admin_call(
                reqwest::Method::POST,
                "/faults",
                Some(
                    &json!({"operation": op, "count": 0, "action": {"kind": "latency", "ms": ms}}),
                ),
            )
            .await?;
        }
        Ok(())
    }

    /// Refills every throttle bucket (changing settings does), so each row starts with
    /// Azure's full burst.
    pub async fn refill_buckets(&self) -> anyhow::Result<()> {
        let settings = self
            .admin_call(reqwest::Method::GET, "/settings", None)
            .await?;
        let burst = settings["arm_write_burst"].clone();
        self.admin_call(
            reqwest::Method::PATCH,
            "/settings",
            Some(&json!({"arm_write_burst": burst})),
        )
        .await?;
        Ok(())
    }

    /// The twin's write limits: (burst, refill per second).
    pub async fn write_limits(&self) -> anyhow::Result<(f64, f64)> {
        let s = self
            .admin_call(reqwest::Method::GET, "/settings", None)
            .await?;
        Ok((
            s["arm_write_burst"].as_f64().unwrap_or(200.0),
            s["arm_write_refill_per_sec"].as_f64().unwrap_or(10.0),
        ))
    }

    pub async fn settings(&self) -> anyhow::Result<Value> {
        self.admin_call(reqwest::Method::GET, "/settings", None)
            .await
    }

    /// The twin clock's offset from this machine's clock.
    pub async fn clock_offset(&self) -> anyhow::Result<TimeDelta> {
        let answer = self
            .admin_call(reqwest::Method::GET, "/clock", None)
            .await?;
        Ok(TimeDelta::milliseconds(
            answer["offset_ms"].as_i64().unwrap_or(0),
        ))
    }

    /// The last sequence number in the request log (everything after it is new).
    pub async fn last_seq(&self) -> anyhow::Result<u64> {
        let all = self.requests_since(0).await?;
        Ok(all.last().map_or(0, |e| e.seq))
    }

    /// Request log entries after `seq`.
    pub async fn requests_since(&self, seq: u64) -> anyhow::Result<Vec<Logged>> {
        let answer = self
            .admin_call(
                reqwest::Method::GET,
                &format!("/requests?since={seq}"),
                None,
            )
            .await?;
        let Value::Array(entries) = answer else {
            bail!("the request log is not a list");
        };
        entries
            .into_iter()
            .map(|e| {
                Ok(Logged {
                    seq: e["seq"].as_u64().unwrap_or(0),
                    operation: e["operation"].as_str().unwrap_or("").to_owned(),
                    method: e["method"].as_str().unwrap_or("").to_owned(),
                    path: e["path"].as_str().unwrap_or("").to_owned(),
                    status: e["status"].as_u64().map(|s| s as u16),
                    at: e["at"]
                        .as_str()
                        .unwrap_or("")
                        .parse()
                        .with_context(|| format!("a bad time in the request log: {e}"))?,
                })
            })
            .collect()
    }

    pub async fn state(&self) -> anyhow::Result<Value> {
        self.admin_call(reqwest::Method::GET, "/state", None).await
    }

    /// Which key every consumer of the demo account holds now: `key1` or `key2`.
    pub async fn demo_active_key(&self) -> anyhow::Result<&'static str> {
        let state = self.state().await?;
        let account = &state["storage_accounts"]["stdatasci001"];
        let secret = state["key_vaults"]["kv-datasci"]["secrets"]["stdatasci001-key"]
            .as_array()
            .and_then(|v| v.last())
            .and_then(|v| v["value"].as_str())
            .unwrap_or_default()
            .to_owned();
        if account["key1"].as_str() == Some(secret.as_str()) {
            Ok("key1")
        } else if account["key2"].as_str() == Some(secret.as_str()) {
            Ok("key2")
        } else {
            bail!("the demo secret holds neither key: the world is not in a rotatable state")
        }
    }
}
