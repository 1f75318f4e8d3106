//! An in-process `keyflip daemon` against keyflip-twin, on a manual clock.
//!
//! [`Setup`] owns the twin and a directory (the twin's) holding `keyflip.toml`,
//! `plans/`, `state/` and `run/keyflip.sock`; daemons started from it share the state
//! directory, so a test can stop one and start the next like a restart. Time moves
//! only when the test moves the [`ManualClock`]; [`Daemon::settle`] waits until the
//! scheduler has evaluated at the clock's current time and nothing is running, which
//! is how a test knows a decision *not* to rotate has been made.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use keyflip::clock::{Clock as _, ManualClock};
use keyflip::config::ConfigPath;
use keyflip::daemon::control::client;
use keyflip::daemon::control::protocol::{Answer, Request};
use keyflip::daemon::{DaemonHandle, DaemonOptions, Snapshot};
use keyflip::exit::Exit;
use keyflip::rotation::{EngineOptions, ProgressEvent};
use serde_json::Value;

use crate::support::fast_options;
use crate::support::twin::{ACCOUNT, DATABRICKS, OPERATOR, TestTwin, VAULT, WORKSPACE};

/// Which consumers a test plan lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consumers {
    /// The raw-key Key Vault secret only: the quickest rotation.
    KeyVault,
    /// Everything of the demo world (Key Vault, ML workspace and datastores, Databricks).
    All,
}

pub struct Setup {
    pub twin: TestTwin,
    pub clock: ManualClock,
    daemon_settings: String,
}

impl Setup {
    pub fn new(start: DateTime<Utc>) -> Setup {
        Self::with_twin(TestTwin::start(), start)
    }

    pub fn with_twin(twin: TestTwin, start: DateTime<Utc>) -> Setup {
        // `RUST_LOG=keyflip=debug cargo test ... daemon::` shows what the daemon does.
        if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
        std::fs::create_dir_all(twin.dir.path().join("plans")).unwrap();
        let setup = Setup {
            twin,
            clock: ManualClock::new(start),
            daemon_settings: String::new(),
        };
        setup.write_config();
        setup
    }

    pub fn dir(&self) -> PathBuf {
        self.twin.dir.path().to_path_buf()
    }

    pub fn socket(&self) -> PathBuf {
        self.dir().join("run/keyflip.sock")
    }

    /// Extra `[daemon]` lines (and sub-tables after them).
    pub fn daemon_settings(&mut self, text: &str) {
        self.daemon_settings = text.to_owned();
        self.write_config();
    }

    fn write_config(&self) {
        let text = format!(
            "state_dir = \"state\"\n{}\n[daemon]\nsocket = \"run/keyflip.sock\"\nmetrics_listen = \"127.0.0.1:0\"\nshutdown_timeout = \"20s\"\n{}\n",
            self.twin.config_text(OPERATOR),
            self.daemon_settings
        );
        std::fs::write(self.dir().join("keyflip.toml"), text).unwrap();
    }

    /// A plan for the demo account with `settings` (`[schedule]`, `[rotation]`,
    /// `[drift]`, `[[notify]]` sections) and the chosen consumers.
    pub fn plan_text(&self, consumers: Consumers, settings: &str) -> String {
        let e = &self.twin.endpoints;
        let vault = &e.key_vaults[VAULT].url;
        let mut text = format!(
            "storage_account = \"{}\"\n{settings}\n\n[[key_vault]]\nvault = \"{vault}\"\nsecret = \"stdatasci001-key\"\nformat = \"raw-key\"\n",
            e.storage_accounts[ACCOUNT].id
        );
        if consumers == Consumers::All {
            text.push_str(&format!(
                "\n[[key_vault]]\nvault = \"{vault}\"\nsecret = \"stdatasci001-connection-string\"\nformat = \"connection-string\"\n\n[[ml_workspace]]\nworkspace = \"{}\"\nresync = true\ndiscover = true\n\n[[databricks]]\nworkspace_url = \"{}\"\nscope = \"datasci\"\nkey = \"stdatasci001-key\"\nformat = \"raw-key\"\n",
                e.ml_workspaces[WORKSPACE].id, e.databricks_workspaces[DATABRICKS].url
            ));
        }
        text
    }

    /// A plan for fleet account `i` (see [`fleet_world`]) with its raw-key secret.
    pub fn fleet_plan_text(&self, i: usize, settings: &str) -> String {
        let vault = &self.twin.endpoints.key_vaults[VAULT].url;
        format!(
            "storage_account = \"{}\"\n{settings}\n\n[[key_vault]]\nvault = \"{vault}\"\nsecret = \"{}-key\"\nformat = \"raw-key\"\n",
            TestTwin::demo_account_id(&fleet_account(i)),
            fleet_account(i)
        )
    }

    pub fn write_plan(&self, name: &str, text: &str) {
        std::fs::write(self.dir().join("plans").join(format!("{name}.toml")), text).unwrap();
    }

    pub fn remove_plan(&self, name: &str) {
        std::fs::remove_file(self.dir().join("plans").join(format!("{name}.toml"))).unwrap();
    }

    pub fn config_path(&self) -> ConfigPath {
        ConfigPath {
            path: self.dir().join("keyflip.toml"),
            explicit: true,
        }
    }

    /// Starts a daemon on this setup's files and clock.
    pub async fn start(&self) -> Daemon {
        self.start_with(keyflip::daemon::systemd::SystemdNotifier::default(), None)
            .await
    }

    pub async fn start_with(
        &self,
        systemd: keyflip::daemon::systemd::SystemdNotifier,
        watchdog: Option<Duration>,
    ) -> Daemon {
        let env: keyflip::daemon::EnvFn = Arc::new(|_: &str| None);
        let loader = keyflip::daemon::file_loader(self.config_path(), env.clone());
        let (config, plans) = loader().unwrap_or_else(|e| panic!("test setup is invalid: {e:#?}"));
        let options = DaemonOptions {
            config,
            plans,
            loader,
            clock: Arc::new(self.clock.clone()),
            env,
            systemd,
            watchdog,
            azure: fast_options(),
            engine: EngineOptions {
                probe_backoff: Duration::from_millis(20),
                probe_max_backoff: Duration::from_millis(100),
                resync_deadline: Duration::from_secs(30),
                update_skew: Duration::from_secs(2),
                ..EngineOptions::default()
            },
            delivery: keyflip::daemon::notify::DeliveryOptions {
                attempts: 2,
                timeout: Duration::from_secs(5),
                backoff: Duration::from_millis(50),
            },
        };
        let handle = keyflip::daemon::start(options)
            .await
            .unwrap_or_else(|e| panic!("the daemon does not start: {e}"));
        Daemon {
            handle,
            clock: self.clock.clone(),
            socket: self.socket(),
        }
    }

    pub fn advance(&self, by: TimeDelta) {
        self.clock.advance(by);
    }

    pub fn set(&self, to: DateTime<Utc>) {
        self.clock.set(to);
    }

    /// Seconds of daemon time since `start`, rounded up.
    pub fn seconds_since(&self, start: DateTime<Utc>) -> u32 {
        let ms = (self.clock.now() - start).num_milliseconds().max(0);
        u32::try_from((ms + 999) / 1000).unwrap_or(u32::MAX)
    }
}

/// How long [`Setup::step`] waits for a task to sleep on the clock before it moves
/// the clock anyway (wall time).
const STEP_PATIENCE: Duration = Duration::from_millis(500);

pub struct Daemon {
    pub handle: DaemonHandle,
    clock: ManualClock,
    socket: PathBuf,
}

/// How long a test waits for the daemon to get somewhere (wall time; rotations
/// against the twin take well under a second each, this is a generous bound).
const PATIENCE: Duration = Duration::from_secs(60);

impl Daemon {
    pub async fn snapshot(&self) -> Snapshot {
        self.handle.snapshot().peek().await
    }

    /// Waits until `cond` holds for a published snapshot.
    pub async fn wait_for(&self, what: &str, cond: impl Fn(&Snapshot) -> bool) -> Snapshot {
        let mut rx = self.handle.snapshot();
        let result = tokio::time::timeout(PATIENCE, async {
            loop {
                {
                    let s = rx.snapshot().await;
                    if cond(&s) {
                        return s;
                    }
                }
                if rx.changed().await.is_err() {
                    let s = rx.peek().await;
                    panic!("the daemon stopped while waiting for {what}: {s:#?}");
                }
            }
        })
        .await;
        match result {
            Ok(s) => s,
            Err(_) => panic!("timed out waiting for {what}: {:#?}", self.snapshot().await),
        }
    }

    /// Waits until the scheduler has evaluated at the clock's current time with no
    /// job and no check running: every decision for "now" has been made and carried
    /// out.
    pub async fn settle(&self) -> Snapshot {
        let now = self.clock.now();
        self.handle.ping().await;
        self.wait_for(&format!("the scheduler to settle at {now}"), |s| {
            s.evaluated_at.is_some_and(|t| t >= now)
                && s.plans.iter().all(|p| p.running.is_none() && !p.checking)
        })
        .await
    }

    /// Waits until no plan runs or is being checked, moving the clock whenever the
    /// work waits for it (a check started while the clock moved may wait for the
    /// write budget).
    pub async fn settle_moving(&self, setup: &Setup) -> Snapshot {
        let settled = async {
            loop {
                let s = self.snapshot().await;
                if s.plans.iter().all(|p| p.running.is_none() && !p.checking) {
                    return s;
                }
                self.step(setup).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(120), settled)
            .await
            .expect("the daemon settles")
    }

    /// Lets running jobs finish, moving the clock whenever they wait for it (the
    /// shared write budget allows ten ARM writes per second of daemon time, and a full
    /// rotation of the demo world makes more), then settles.
    pub async fn finish_jobs(&self, setup: &Setup) -> Snapshot {
        let now = self.clock.now();
        self.handle.ping().await;
        self.wait_for(&format!("an evaluation at {now}"), |s| {
            s.evaluated_at.is_some_and(|t| t >= now)
        })
        .await;
        let start = self.clock.now();
        while self.clock.now() - start < TimeDelta::seconds(120) {
            let idle = |s: &Snapshot| s.plans.iter().all(|p| p.running.is_none());
            tokio::select! {
                _ = self.wait_for("jobs to finish", idle) => return self.settle().await,
                () = self.step(setup) => {}
            }
        }
        panic!("jobs do not finish: {:#?}", self.snapshot().await)
    }

    /// Moves the clock once every task of the daemon is asleep on it: every running
    /// job waits for its write budget or a timer, and a task sleeps on the clock
    /// until at most a second from now; the clock then jumps to that instant. When
    /// that does not happen within [`STEP_PATIENCE`] of wall time (the daemon waits
    /// for something else, or for longer) it moves a second, as the tests did before
    /// the clock could tell.
    pub async fn step(&self, setup: &Setup) {
        let clock = &setup.clock;
        let next = clock.now() + TimeDelta::seconds(1);
        let asleep = async {
            loop {
                let at = clock.asleep_until(next).await;
                if self.all_asleep().await {
                    return at;
                }
                // Look again when the work in flight may have come to a wait.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        match tokio::time::timeout(STEP_PATIENCE, asleep).await {
            Ok(_) => {
                clock.advance_to_next(TimeDelta::seconds(1));
            }
            Err(_) => clock.advance(TimeDelta::seconds(1)),
        }
    }

    /// Whether no job or check of the daemon is doing work: each running job waits
    /// for a timer or for its write budget, and no check is in flight.
    async fn all_asleep(&self) -> bool {
        let s = self.snapshot().await;
        if s.plans.iter().any(|p| p.checking) {
            return false;
        }
        let working = s
            .plans
            .iter()
            .filter(|p| {
                p.running
                    .as_ref()
                    .is_some_and(|r| r.waiting_until.is_none())
            })
            .count();
        self.handle.budgets().queued() >= working
    }

    /// Sends a request over the control socket, as the CLI does.
    pub async fn request(&self, request: Request) -> Result<Answer, client::ClientError> {
        self.request_with(request, &mut |_| {}).await
    }

    pub async fn request_with(
        &self,
        request: Request,
        on_progress: &mut (dyn FnMut(ProgressEvent) + Send),
    ) -> Result<Answer, client::ClientError> {
        let stream = client::connect(&self.socket)
            .await
            .expect("the socket opens")
            .expect("a daemon listens");
        let done = client::call(stream, &self.socket, &request, on_progress).await?;
        assert_eq!(
            done.daemon.pid,
            std::process::id(),
            "the daemon says who it is"
        );
        Ok(done.answer)
    }

    /// The plan's rotations, newest first, as `keyflip history --output json` prints
    /// them.
    pub async fn history(&self, plan: &str) -> Vec<Value> {
        match self
            .request(Request::History {
                plan: Some(plan.to_owned()),
                limit: 100,
                since: None,
            })
            .await
        {
            Ok(Answer::History { rotations }) => rotations
                .iter()
                .map(|r| serde_json::to_value(r).unwrap())
                .collect(),
            other => panic!("history: {other:?}"),
        }
    }

    /// Stops the daemon as SIGTERM does and returns its exit code.
    pub async fn stop(self) -> Exit {
        self.handle.shutdown();
        tokio::time::timeout(PATIENCE, self.handle.wait())
            .await
            .expect("the daemon stops in time")
    }

    /// GETs a path of the metrics endpoint: (status, body).
    pub async fn http_get(&self, path: &str) -> (u16, String) {
        let addr = self.handle.metrics_addr().expect("metrics are served");
        let response = reqwest::get(format!("http://{addr}{path}"))
            .await
            .expect("the metrics endpoint answers");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }
}

/// The name of fleet account `i` in [`fleet_world`].
pub fn fleet_account(i: usize) -> String {
    format!("stflt{i:02}")
}

/// World text to append to the demo world: `n` more storage accounts in the demo group
/// (the operator may read and regenerate their keys), each with a raw-key secret
/// `{account}-key` in `kv-datasci`, keys created at `created` when given.
pub fn fleet_world(n: usize, created: Option<DateTime<Utc>>) -> String {
    let mut text = String::new();
    for i in 0..n {
        let name = fleet_account(i);
        text.push_str(&format!(
            "\n[[key_vault.secret]]\nname = \"{name}-key\"\nvalue_from = {{ account = \"{name}\", key = \"key1\", format = \"raw-key\" }}\n"
        ));
    }
    for i in 0..n {
        text.push_str(&format!(
            "\n[[storage_account]]\nname = \"{}\"\nresource_group = \"rg-datascience\"\nsku = \"Standard_LRS\"\nkind = \"StorageV2\"\nallow_shared_key_access = true\n",
            fleet_account(i)
        ));
        if let Some(at) = created {
            let at = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            text.push_str(&format!(
                "key1_created = \"{at}\"\nkey2_created = \"{at}\"\n"
            ));
        }
    }
    text.push_str(&format!(
        "\n[[role_assignment]]\nprincipal = \"{OPERATOR}\"\nrole = \"Storage Account Key Operator Service Role\"\nscope = \"/subscriptions/3c9e5b1d-2a4f-4e6b-9c8d-0f1e2d3c4b5a/resourceGroups/rg-datascience\"\n"
    ));
    text
}

/// Outcome kinds (`completed`, ...) of history entries, oldest first.
pub fn outcomes(history: &[Value]) -> Vec<String> {
    history
        .iter()
        .rev()
        .map(|r| {
            r["outcome"]["outcome"]
                .as_str()
                .unwrap_or("unfinished")
                .to_owned()
        })
        .collect()
}
