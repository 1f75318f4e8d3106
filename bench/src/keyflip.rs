//! keyflip as the bench drives it: a work directory with `keyflip.toml` pointing at
//! the twin, plan files, and the `keyflip` binary run as a command or as a daemon
//! (with its own `NOTIFY_SOCKET`, so READY, STATUS and watchdog pings arrive here, and
//! its JSON log read line by line from stderr).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use tokio::io::AsyncBufReadExt as _;
use tokio::net::UnixDatagram;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::twin::{BenchTwin, FLEET_VAULT, OPERATOR, fleet_account, fleet_account_id};

/// A keyflip installation for one row: configuration, plans and state.
pub struct Workdir {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub config: PathBuf,
    pub plans: PathBuf,
    pub keyflip: PathBuf,
}

/// What a fleet plan looks like.
#[derive(Clone, Debug)]
pub struct FleetPlan {
    pub cron: String,
    pub grace: &'static str,
    pub drift_interval: &'static str,
}

impl Workdir {
    /// `daemon_lines` go under `[daemon]` (e.g. budgets the twin's limits allow).
    pub fn new(twin: &BenchTwin, keyflip: &Path, daemon_lines: &str) -> anyhow::Result<Workdir> {
        let dir = tempfile::Builder::new()
            .prefix("keyflip-bench-")
            .tempdir()?;
        let root = dir.path().to_path_buf();
        let plans = root.join("plans");
        std::fs::create_dir_all(&plans)?;
        let e = &twin.endpoints;
        let principal = e
            .principals
            .get(OPERATOR)
            .ok_or_else(|| anyhow!("the world has no {OPERATOR}"))?;
        let text = format!(
            "plans_dir = \"{plans}\"\nstate_dir = \"{state}\"\n\n[cloud]\nname = \"custom\"\narm_url = \"{arm}\"\narm_audience = \"{aud}\"\nauthority_host = \"{auth}\"\nblob_endpoint = \"{base}/{{account}}/\"\nkey_vault_suffix = \"vault.azure.net\"\nca_bundle = \"{ca}\"\n\n[credential]\nkind = \"client-secret\"\ntenant_id = \"{tenant}\"\nclient_id = \"{client}\"\nclient_secret_file = \"{secret}\"\n\n[daemon]\nsocket = \"{socket}\"\nmetrics_listen = \"off\"\n{daemon_lines}\n",
            plans = plans.display(),
            state = root.join("state").display(),
            arm = e.arm_url,
            aud = e.arm_audience,
            auth = e.authority_host,
            base = e.base_url,
            ca = twin.dir.join("ca.pem").display(),
            tenant = e.tenant_id,
            client = principal.client_id,
            secret = twin
                .dir
                .join("principals")
                .join(format!("{OPERATOR}.secret"))
                .display(),
            socket = root.join("keyflip.sock").display(),
        );
        let config = root.join("keyflip.toml");
        std::fs::write(&config, text)?;
        Ok(Workdir {
            _dir: dir,
            root,
            config,
            plans,
            keyflip: keyflip.to_path_buf(),
        })
    }

    /// Writes plans for fleet accounts `range`, each with its raw-key secret.
    pub fn write_fleet_plans(
        &self,
        twin: &BenchTwin,
        range: std::ops::Range<usize>,
        plan: &FleetPlan,
    ) -> anyhow::Result<()> {
        let vault = &twin
            .endpoints
            .key_vaults
            .get(FLEET_VAULT)
            .ok_or_else(|| anyhow!("no vault {FLEET_VAULT}"))?
            .url;
        for i in range {
            let name = fleet_account(i);
            let text = format!(
                "description = \"bench fleet account {i}\"\nstorage_account = \"{id}\"\n\n[schedule]\ncron = \"{cron}\"\ntimezone = \"UTC\"\n\n[rotation]\ngrace = \"{grace}\"\n\n[[key_vault]]\nvault = \"{vault}\"\nsecret = \"{name}-key\"\nformat = \"raw-key\"\n\n[drift]\ninterval = \"{drift}\"\n",
                id = fleet_account_id(i),
                cron = plan.cron,
                grace = plan.grace,
                drift = plan.drift_interval,
            );
            std::fs::write(self.plans.join(format!("{name}.toml")), text)?;
        }
        Ok(())
    }

    /// Writes the built-in demo plan, pointed at this twin.
    pub fn write_demo_plan(&self, twin: &BenchTwin) -> anyhow::Result<()> {
        let mut text = include_str!("../../rotation-plans/demo.toml")
            .replace("https://127.0.0.1:47443", &twin.endpoints.base_url);
        // Without its usage gate: the gate holds a swap's retire for the ingestion
        // latency plus the quiet period (minutes), which the rotation rows do not
        // measure, and the bench's cloud names no Log Analytics endpoint, so the gate
        // would refuse every scheduled rotation (usage unknown).
        if let Some(start) = text.find("\n[usage_gate]\n") {
            let end = text[start + 1..]
                .find("\n[")
                .map_or(text.len(), |n| start + 1 + n);
            text.replace_range(start..end, "");
        }
        std::fs::write(self.plans.join("demo.toml"), text)?;
        Ok(())
    }

    /// The demo plan without its `[usage_gate]` (the last section): the bench's
    /// configuration names no Log Analytics API, so a scheduled rotation's check of the
    /// standby could not ask the logs and would be refused; with one, the world's
    /// forgotten client and keyflip's own probe of the standby in the incident rows
    /// before it would hold or refuse it. The rows measure the swap, not the gate.
    pub fn write_demo_plan_ungated(&self, twin: &BenchTwin) -> anyhow::Result<()> {
        let text = include_str!("../../rotation-plans/demo.toml")
            .replace("https://127.0.0.1:47443", &twin.endpoints.base_url);
        let ungated = text.split("\n[usage_gate]").next().unwrap_or(&text);
        std::fs::write(self.plans.join("demo.toml"), ungated)?;
        Ok(())
    }

    /// Runs `keyflip --config ... args`; (wall time, exit code, stdout, stderr).
    pub async fn run(&self, args: &[&str]) -> anyhow::Result<(Duration, i32, String, String)> {
        let started = Instant::now();
        let out = Command::new(&self.keyflip)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null())
            .env_remove("NOTIFY_SOCKET")
            .output()
            .await
            .with_context(|| format!("running {}", self.keyflip.display()))?;
        Ok((
            started.elapsed(),
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// Starts `keyflip daemon` with a notify socket of its own and the watchdog on.
    pub async fn start_daemon(&self, watchdog: Duration) -> anyhow::Result<Daemon> {
        let notify_path = self.root.join(format!(
            "notify-{}.sock",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        ));
        let socket = UnixDatagram::bind(&notify_path)?;
        let (notify_tx, notify_rx) = mpsc::unbounded_channel();
        let notify_task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf).await {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if notify_tx.send((Instant::now(), text)).is_err() {
                    return;
                }
            }
        });
        let started = Instant::now();
        let mut child = Command::new(&self.keyflip)
            .arg("--config")
            .arg(&self.config)
            .args(["--log-format", "json", "daemon"])
            .env("NOTIFY_SOCKET", &notify_path)
            .env("WATCHDOG_USEC", watchdog.as_micros().to_string())
            .env_remove("WATCHDOG_PID")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} daemon", self.keyflip.display()))?;
        let stderr = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
        let (log_tx, log_rx) = mpsc::unbounded_channel();
        let log_task = tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if log_tx.send((Instant::now(), line)).is_err() {
                    return;
                }
            }
        });
        let pid = child.id().ok_or_else(|| anyhow!("the daemon has no pid"))?;
        Ok(Daemon {
            child,
            pid,
            started,
            notify: notify_rx,
            log: log_rx,
            tasks: vec![notify_task, log_task],
        })
    }
}

/// A running `keyflip daemon`.
pub struct Daemon {
    child: Child,
    pub pid: u32,
    pub started: Instant,
    notify: mpsc::UnboundedReceiver<(Instant, String)>,
    log: mpsc::UnboundedReceiver<(Instant, String)>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Daemon {
    /// Waits for a notify message containing `what` (e.g. `READY=1`); when it came.
    pub async fn wait_notify(&mut self, what: &str, timeout: Duration) -> anyhow::Result<Instant> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.notify.recv()).await;
            match next {
                Ok(Some((at, text))) if text.contains(what) => return Ok(at),
                Ok(Some(_)) => {}
                Ok(None) => bail!("the notify socket closed"),
                Err(_) => {
                    self.check_alive()?;
                    bail!("no {what} within {timeout:?}")
                }
            }
        }
    }

    /// Counts notify messages containing `what` received so far (draining the queue).
    pub fn count_notify(&mut self, what: &str) -> usize {
        let mut n = 0;
        while let Ok((_, text)) = self.notify.try_recv() {
            if text.contains(what) {
                n += 1;
            }
        }
        n
    }

    /// Drops every log line received so far.
    pub fn drain_log(&mut self) {
        while self.log.try_recv().is_ok() {}
    }

    /// Waits for a log line containing `what`; when it came.
    pub async fn wait_log(&mut self, what: &str, timeout: Duration) -> anyhow::Result<Instant> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.log.recv()).await {
                Ok(Some((at, line))) if line.contains(what) => return Ok(at),
                Ok(Some(_)) => {}
                Ok(None) => bail!("the daemon's log ended while waiting for `{what}`"),
                Err(_) => bail!("no log line `{what}` within {timeout:?}"),
            }
        }
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("the daemon exited: {status}");
        }
        Ok(())
    }

    pub fn signal(&self, signal: i32) -> anyhow::Result<()> {
        let pid = i32::try_from(self.pid)?;
        // SAFETY: kill(2) on our own child's pid with a valid signal number.
        if unsafe { libc::kill(pid, signal) } != 0 {
            bail!("kill {pid}: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Resident memory now, in bytes.
    pub fn rss(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| anyhow!("no VmRSS for {}", self.pid))?;
        Ok(kb * 1024)
    }

    /// CPU time used so far (user + system).
    pub fn cpu(&self) -> anyhow::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        // Fields after the parenthesised command name; utime and stime are 14 and 15.
        let after = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .ok_or_else(|| anyhow!("cannot parse /proc/{}/stat", self.pid))?;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = fields
            .get(11)
            .and_then(|u| u.parse::<u64>().ok())
            .zip(fields.get(12).and_then(|s| s.parse::<u64>().ok()))
            .map(|(u, s)| u + s)
            .ok_or_else(|| anyhow!("no utime/stime for {}", self.pid))?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Ok(Duration::from_micros(ticks * 1_000_000 / hz))
    }

    /// SIGTERM, then waits for the exit; the exit code.
    pub async fn stop(mut self) -> anyhow::Result<i32> {
        self.signal(libc::SIGTERM)?;
        let status = tokio::time::timeout(Duration::from_secs(120), self.child.wait())
            .await
            .context("the daemon does not stop within 120 s")??;
        Ok(status.code().unwrap_or(-1))
    }
}
