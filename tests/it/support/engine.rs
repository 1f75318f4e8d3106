//! The rotation engine against a demo twin: a state directory, the demo plan pointed
//! at the twin, a test clock, and fresh engines on the same state (a restart).

use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use keyflip::clock::Clock;
use keyflip::journal::Journal;
use keyflip::plan::Plan;
use keyflip::rotation::{Engine, EngineOptions};
use serde_json::{Value, json};

use super::twin::{
    ACCOUNT, DATA_FACTORY, DATABRICKS, FUNCTION_APP, LINKED_SERVICE, OPERATOR, TestTwin, VAULT,
    WORKSPACE,
};
use super::{config, fast_options, fingerprinter};

/// Real time plus an offset; a sleep jumps the offset forward and returns at once, so
/// grace periods and backoffs take no real time.
#[derive(Debug, Default)]
pub struct JumpClock {
    offset: Mutex<TimeDelta>,
}

impl JumpClock {
    pub fn offset(&self) -> TimeDelta {
        *self.offset.lock().unwrap()
    }
}

impl Clock for JumpClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + *self.offset.lock().unwrap()
    }

    fn sleep_until(
        &self,
        at: DateTime<Utc>,
    ) -> Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>> {
        let mut offset = self.offset.lock().unwrap();
        let now = Utc::now() + *offset;
        if at > now {
            *offset += at - now;
        }
        Box::pin(async {})
    }
}

/// keyflip's clock and the twin's, moved together: real time plus an offset, and a
/// sleep jumps both (the twin's through its admin API), so the twin's simulated
/// clients fill the skipped time with requests and resource-log rows, and queries
/// that keyflip times by its clock find them.
pub struct TwinClock {
    offset: Mutex<TimeDelta>,
    admin: (reqwest::Client, String, String),
}

impl TwinClock {
    pub fn new(twin: &TestTwin) -> TwinClock {
        TwinClock {
            offset: Mutex::new(TimeDelta::zero()),
            admin: twin.admin_handle(),
        }
    }
}

impl Clock for TwinClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + *self.offset.lock().unwrap()
    }

    fn sleep_until(
        &self,
        at: DateTime<Utc>,
    ) -> Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>> {
        let jump = {
            let mut offset = self.offset.lock().unwrap();
            let now = Utc::now() + *offset;
            let jump = (at - now).max(TimeDelta::zero());
            *offset += jump;
            jump
        };
        let (http, url, token) = self.admin.clone();
        Box::pin(async move {
            if jump > TimeDelta::zero() {
                let answer = http
                    .post(format!("{url}/clock"))
                    .bearer_auth(token)
                    .header("content-type", "application/json")
                    .body(
                        json!({"advance_secs": jump.num_milliseconds() as f64 / 1000.0})
                            .to_string(),
                    )
                    .send()
                    .await
                    .expect("the twin's clock moves");
                assert!(answer.status().is_success());
            }
        })
    }
}

pub const DEMO_PLAN: &str = include_str!("../../../rotation-plans/demo.toml");

/// The demo plan text pointed at this twin, without its usage gate: the tests written
/// before the gate run on their own clocks and the twin's forgotten client.
pub fn demo_plan_text(twin: &TestTwin) -> String {
    let text = gated_demo_plan_text(twin);
    match text.find("\n# The usage gate:") {
        Some(at) => format!("{}\n", &text[..at]),
        None => text,
    }
}

/// The demo plan text pointed at this twin, usage gate included.
pub fn gated_demo_plan_text(twin: &TestTwin) -> String {
    DEMO_PLAN.replace("https://127.0.0.1:47443", &twin.endpoints.base_url)
}

pub fn plan_from(text: &str) -> Plan {
    keyflip::plan::parse(text, "demo.toml").unwrap_or_else(|e| panic!("{e}"))
}

pub struct Harness {
    pub twin: TestTwin,
    pub state: tempfile::TempDir,
    pub plan: Plan,
    pub clock: Arc<JumpClock>,
}

pub fn engine_options() -> EngineOptions {
    EngineOptions {
        probe_backoff: Duration::from_millis(100),
        probe_max_backoff: Duration::from_millis(400),
        resync_deadline: Duration::from_secs(30),
        update_skew: Duration::from_secs(2),
        ..EngineOptions::default()
    }
}

impl Harness {
    /// The demo world with its long-running operations made instant.
    pub async fn start() -> Harness {
        Self::with_twin(TestTwin::start()).await
    }

    pub async fn with_twin(twin: TestTwin) -> Harness {
        twin.settings(json!({"lro_retry_after_secs": 0, "resync_duration_secs": 0.0}))
            .await;
        let plan = plan_from(&demo_plan_text(&twin));
        Harness {
            twin,
            state: tempfile::tempdir().unwrap(),
            plan,
            clock: Arc::new(JumpClock::default()),
        }
    }

    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    /// A fresh engine on the state directory, as `principal`.
    pub fn engine_as(&self, principal: &str) -> Engine {
        self.engine_with(principal, fast_options())
    }

    /// The same with other Azure options (short timeouts for hung connections).
    pub fn engine_with(&self, principal: &str, options: keyflip::azure::AzureOptions) -> Engine {
        self.engine_with_clock(principal, options, self.clock.clone())
    }

    pub fn engine(&self) -> Engine {
        self.engine_as(OPERATOR)
    }

    /// A fresh engine on the state directory with another clock (a [`TwinClock`]).
    pub fn engine_on(&self, clock: Arc<dyn Clock>) -> Engine {
        self.engine_with_clock(OPERATOR, fast_options(), clock)
    }

    /// A fresh engine on the state directory, as `principal`, with these Azure options
    /// and this clock.
    pub fn engine_with_clock(
        &self,
        principal: &str,
        options: keyflip::azure::AzureOptions,
        clock: Arc<dyn Clock>,
    ) -> Engine {
        // `state_dir` is a top-level key, so it goes before the first table.
        let text = format!(
            "state_dir = \"{}\"\n{}",
            self.state_dir().display(),
            self.twin.config_text(principal)
        );
        let config = config(&text, self.twin.dir.path(), &[]);
        let fingerprinter = fingerprinter();
        let azure = keyflip::azure::Azure::with_options(
            &config,
            fingerprinter.clone(),
            options,
            &|_: &str| None,
        )
        .unwrap();
        let journal = Journal::open(&self.state_dir().join("journal.db"), &fingerprinter).unwrap();
        Engine::with_options(
            &config,
            azure,
            journal,
            fingerprinter,
            clock,
            engine_options(),
        )
    }

    /// Moves the twin's clock to where the test clock jumped, so times the twin stamps
    /// (Databricks' `last_updated_timestamp`) agree with keyflip's again.
    pub async fn sync_twin_clock(&self) {
        let ahead = self.clock.offset() - self.twin.clock_offset().await;
        if ahead > TimeDelta::zero() {
            self.twin
                .advance_clock(ahead.num_milliseconds() as f64 / 1000.0)
                .await;
        }
    }
}

/// Every value a consumer of the demo account holds, from the twin's state: (name,
/// the account key inside it). Databricks and the workspace included.
pub fn consumer_keys(state: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let secrets = &state["key_vaults"][VAULT]["secrets"];
    for name in ["stdatasci001-key", "stdatasci001-connection-string"] {
        let versions = secrets[name].as_array().expect("versions");
        let latest = versions.last().expect("a version");
        out.push((
            format!("keyvault {name}"),
            account_key(latest["value"].as_str().unwrap()),
        ));
    }
    let ws = &state["ml_workspaces"][WORKSPACE];
    out.push((
        "workspace".into(),
        ws["userStorageKey"].as_str().unwrap().to_owned(),
    ));
    for name in [
        "workspaceblobstore",
        "training_data",
        "feature_snapshots",
        "workspaceworkingdirectory",
    ] {
        out.push((
            format!("datastore {name}"),
            ws["datastores"][name]["key"].as_str().unwrap().to_owned(),
        ));
    }
    let dbx = &state["databricks_workspaces"][DATABRICKS]["scopes"]["datasci"]["secrets"]["stdatasci001-key"]
        ["string_value"];
    out.push(("databricks".into(), dbx.as_str().unwrap().to_owned()));
    let app = &state["web_apps"][FUNCTION_APP]["appSettings"]["AzureWebJobsStorage"];
    out.push((
        "app setting AzureWebJobsStorage".into(),
        account_key(app.as_str().expect("AzureWebJobsStorage")),
    ));
    let ls = &state["data_factories"][DATA_FACTORY]["linkedServices"][LINKED_SERVICE]["properties"]
        ["typeProperties"]["connectionString"]["value"];
    out.push((
        format!("linked service {LINKED_SERVICE}"),
        account_key(ls.as_str().expect("the linked service's connection string")),
    ));
    out
}

/// The account key in a raw key or a connection string.
pub fn account_key(value: &str) -> String {
    match value.split(';').find_map(|p| p.strip_prefix("AccountKey=")) {
        Some(k) => k.to_owned(),
        None => value.to_owned(),
    }
}

pub fn keys_of(state: &Value) -> (String, String) {
    let a = &state["storage_accounts"][ACCOUNT];
    (
        a["key1"].as_str().unwrap().to_owned(),
        a["key2"].as_str().unwrap().to_owned(),
    )
}

/// Operations that change something in Azure (as the twin names them).
pub const WRITES: &[&str] = &[
    "storage.regenerateKey",
    "storage.patch",
    "keyvault.set",
    "keyvault.update",
    "ml.datastore.put",
    "ml.workspace.resyncKeys",
    "databricks.put",
    "web.appSettings.put",
    "web.connectionStrings.put",
    "datafactory.linkedService.put",
];

/// The request log entries that changed something.
pub async fn writes(twin: &TestTwin) -> Vec<Value> {
    twin.requests()
        .await
        .into_iter()
        .filter(|e| {
            e["operation"]
                .as_str()
                .is_some_and(|op| WRITES.contains(&op))
        })
        .collect()
}

/// Successful `regenerateKey` calls.
pub async fn regenerations(twin: &TestTwin) -> usize {
    twin.requests_for("storage.regenerateKey")
        .await
        .iter()
        .filter(|e| {
            e["status"]
                .as_u64()
                .is_some_and(|s| (200..300).contains(&s))
        })
        .count()
}

/// Every version of a Key Vault secret of the demo account: (version, value, enabled).
pub fn versions(state: &Value, secret: &str) -> Vec<(String, String, bool)> {
    state["key_vaults"][VAULT]["secrets"][secret]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| {
            (
                v["version"].as_str().unwrap().to_owned(),
                account_key(v["value"].as_str().unwrap()),
                v["enabled"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// Asserts every consumer holds one of the account's current keys and Key Vault's
/// latest versions are enabled; returns the consumers' keys.
pub fn assert_consumers_valid(state: &Value, when: &str) -> Vec<(String, String)> {
    let (key1, key2) = keys_of(state);
    let held = consumer_keys(state);
    for (consumer, key) in &held {
        assert!(
            *key == key1 || *key == key2,
            "{when}: {consumer} holds a key that is not valid any more"
        );
    }
    for secret in ["stdatasci001-key", "stdatasci001-connection-string"] {
        let v = versions(state, secret);
        assert!(
            v.last().unwrap().2,
            "{when}: the latest version of {secret} is disabled"
        );
    }
    held
}
