//! The daemon's plan state shared by replicas (real daemon processes): a plan parked
//! on one replica stays parked on the other, which rotates nothing for it until a
//! rotation of it completes; and an occurrence one replica rotated is not rotated
//! again by the other, which takes its last start and success from the shared state.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keyflip::coordination::blob_name;
use keyflip::coordination::document::{AccountDoc, PlanDoc};
use serde_json::json;

use super::Shared;
use crate::support::engine::{plan_from, regenerations};

/// The demo plan, due every minute, with a short grace.
pub(super) fn every_minute(shared: &Shared) -> String {
    let text = crate::support::engine::demo_plan_text(&shared.twin)
        .replace("cron = \"*/10 * * * *\"", "cron = \"* * * * *\"")
        .replace("grace = \"30s\"", "grace = \"1s\"");
    std::fs::write(shared.dir.path().join("plans/demo.toml"), &text).unwrap();
    text
}

/// A daemon replica: the process, its configuration and its log.
pub(super) struct Daemon {
    pub(super) child: Child,
    pub(super) config: PathBuf,
    pub(super) log: PathBuf,
}

impl Daemon {
    /// Started with `retry_backoff = "10s"` and `park_after_failures = 1`.
    pub(super) fn start(shared: &Shared, replica: &str) -> Daemon {
        let mut config = shared.config_text(replica, 15);
        let run = shared.dir.path().join(format!("run-{replica}"));
        std::fs::create_dir_all(&run).unwrap();
        config.push_str(&format!(
            "\n[daemon]\nsocket = \"{}\"\nmetrics_listen = \"off\"\nretry_backoff = \"10s\"\npark_after_failures = 1\nshutdown_timeout = \"10s\"\n",
            run.join("keyflip.sock").display()
        ));
        let path = shared.dir.path().join(format!("{replica}-daemon.toml"));
        std::fs::write(&path, config).unwrap();
        let log = shared.dir.path().join(format!("{replica}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_keyflip"))
            .arg("--config")
            .arg(&path)
            .arg("daemon")
            .env_remove("KEYFLIP_FAILPOINT")
            .env("RUST_LOG", "keyflip=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon {
            child,
            config: path,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until its log says `what`.
    async fn wait_for(&mut self, what: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.log().contains(what) {
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "the daemon exited:\n{}",
                self.log()
            );
            assert!(
                Instant::now() < deadline,
                "never logged {what:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// `keyflip status --output json` through its socket.
    async fn status(&self) -> serde_json::Value {
        let config = self.config.clone();
        tokio::task::spawn_blocking(move || run(&config, &["status", "--output", "json"]))
            .await
            .unwrap()
            .1
    }

    fn kill(mut self, signal: &str) {
        let _ = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// Runs keyflip with `config`; its exit code and JSON output.
fn run(config: &Path, args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_keyflip"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), json)
}

/// The plan's state in the shared journal, as an operator reads it.
async fn shared_state(shared: &Shared, text: &str) -> Option<PlanDoc> {
    let plan = plan_from(text);
    let blob = shared.operator_blob();
    let (bytes, _) = blob.get(&blob_name(&plan.storage_account)).await.unwrap()?;
    AccountDoc::parse(&bytes).unwrap().plans.remove(&plan.name)
}

const LEARNED: &str = "another replica acted on the plan since this one decided";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_parked_on_one_replica_stays_parked_on_another_until_a_rotation_completes() {
    let shared = Shared::start().await;
    let text = every_minute(&shared);
    let name = plan_from(&text).name;
    // Every stage is refused: the first cycle rolls back, and parks (park after 1).
    shared
        .twin
        .fault(json!({"operation": "storage.regenerateKey", "count": 0, "action": {"kind": "status", "status": 409, "code": "Conflict"}}))
        .await;
    let mut a = Daemon::start(&shared, "a");
    a.wait_for("plan parked", Duration::from_secs(120)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let parked = loop {
        match shared_state(&shared, &text).await {
            Some(state) if state.parked.is_some() => break state,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "the park never reached the shared journal:\n{}",
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(
        (parked.failures, parked.by.as_deref()),
        (1, Some("a")),
        "{parked:?}"
    );
    a.kill("KILL");
    // Any machine's `status` shows it parked, from the shared state (a CLI with an
    // empty state directory, no daemon).
    let mut cli = super::processes::keyflip(&shared, "c", &["status", "--output", "json"]);
    let out = tokio::task::spawn_blocking(move || cli.output().unwrap())
        .await
        .unwrap();
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(5), "needs attention: {s}");
    assert_eq!(
        s["plans"][0]["schedule"]["failures"], 1,
        "the shared failures: {s}"
    );
    assert!(!s["plans"][0]["schedule"]["parked"].is_null(), "{s}");
    // Azure works again: a rotation B started now would succeed, and show.
    shared.twin.clear_faults().await;

    // B knows nothing of the plan; at its first due time it reads the shared state
    // under the lease and parks instead of rotating.
    let mut b = Daemon::start(&shared, "b");
    b.wait_for(LEARNED, Duration::from_secs(100)).await;
    let s = b.status().await;
    let p = &s["plans"][0];
    assert!(!p["schedule"]["parked"].is_null(), "parked on b: {s}");
    assert_eq!(regenerations(&shared.twin).await, 0, "b rotated nothing");
    assert!(!b.log().contains("rotation completed"), "{}", b.log());

    // The way out is the same on every replica and machine: a rotation of the plan
    // that completes unparks it everywhere. Here `rotate now` from a CLI elsewhere
    // (no daemon socket): b learns it at the plan's next check.
    let mut cli = super::processes::keyflip(&shared, "c", &["rotate", "now", &name, "--yes"]);
    let out = tokio::task::spawn_blocking(move || cli.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(regenerations(&shared.twin).await, 2);
    let state = shared_state(&shared, &text).await.unwrap();
    assert_eq!((state.parked, state.failures), (None, 0));
    assert!(state.last_success.is_some());
    // Every machine's status shows it at once (the shared state); b's scheduler
    // learns it at the plan's next check.
    let s = b.status().await;
    assert!(s["plans"][0]["schedule"]["parked"].is_null(), "{s}");
    b.wait_for(
        "a rotation of the plan completed elsewhere after it was parked here",
        Duration::from_secs(100),
    )
    .await;
    b.kill("TERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_occurrence_one_replica_rotated_is_not_rotated_again_by_the_other() {
    let shared = Shared::start().await;
    let text = every_minute(&shared);
    // Both due at the same minute: one takes the lease and rotates, the other is
    // refused as busy, tries again 10 s later and finds the plan's shared state newer
    // than its decision.
    let mut a = Daemon::start(&shared, "a");
    let mut b = Daemon::start(&shared, "b");
    let deadline = Instant::now() + Duration::from_secs(150);
    let (winner, loser) = loop {
        if a.log().contains(LEARNED) {
            break (&mut b, &mut a);
        }
        if b.log().contains(LEARNED) {
            break (&mut a, &mut b);
        }
        assert!(
            Instant::now() < deadline,
            "neither replica learned of the other's rotation:\n--- a\n{}\n--- b\n{}",
            a.log(),
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    winner
        .wait_for("rotation completed", Duration::from_secs(30))
        .await;
    assert_eq!(
        regenerations(&shared.twin).await,
        2,
        "one stage and one retire, by one replica"
    );
    assert!(
        !loser.log().contains("rotation completed"),
        "{}",
        loser.log()
    );
    // The loser took the start and success from the shared state: its next due time
    // is the next occurrence, not a retry or the same one.
    let state = shared_state(&shared, &text).await.unwrap();
    assert!(state.last_success.is_some(), "{state:?}");
    let s = loser.status().await;
    let p = &s["plans"][0];
    assert_eq!(p["schedule"]["failures"], 0, "{s}");
    assert!(p["schedule"]["parked"].is_null(), "{s}");
    a.kill("TERM");
    b.kill("TERM");
}
