//! A random SIGKILL loop over real keyflip processes: `rotate now` standalone and
//! through a daemon, every route (safe swap, `--leaked key1|key2|both|unknown`,
//! `--revoke-first`), half of them with a fault injected into one Azure operation, each
//! killed at a random moment. After every kill the twin's state is checked (while no
//! key was revoked on purpose every consumer still holds a key that works), then the
//! rotation is finished (`rotate resume` standalone, or a restarted daemon) and checked
//! against the twin's state and request log: every consumer holds a key that works,
//! the latest Key Vault versions are enabled, nothing is left unfinished, at most one
//! rotation was journaled, and every key Azure regenerated is one the journal reports
//! (so a resume never regenerated a key by accident).
//!
//! `KEYFLIP_KILL_ROTATIONS` (default 200) rotations over `KEYFLIP_KILL_LOOPS` (default
//! 4) twins at once; `KEYFLIP_KILL_SEED` picks the sequence (printed, so a failure
//! reproduces).

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::engine::{consumer_keys, keys_of, regenerations, versions};
use crate::support::service::Service;

/// A deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Operations a rotation calls (twin names), for the injected faults.
const FAULTED: &[&str] = &[
    "storage.get",
    "storage.listKeys",
    "storage.regenerateKey",
    "blob.accountInfo",
    "keyvault.set",
    "keyvault.get",
    "ml.datastore.put",
    "ml.datastore.listSecrets",
    "ml.workspace.resyncKeys",
    "databricks.put",
];

fn fault_action(rng: &mut Rng) -> Value {
    match rng.below(4) {
        0 => json!({"kind": "status", "status": 500}),
        1 => json!({"kind": "status", "status": 503}),
        2 => json!({"kind": "status", "status": 429, "retry_after": 1}),
        _ => json!({"kind": "reset"}),
    }
}

/// Which key every consumer holds (`key1`/`key2`), if they agree.
fn active(state: &Value) -> Option<&'static str> {
    let (key1, key2) = keys_of(state);
    let held: Vec<String> = consumer_keys(state).into_iter().map(|(_, k)| k).collect();
    if held.iter().all(|k| *k == key1) {
        Some("key1")
    } else if held.iter().all(|k| *k == key2) {
        Some("key2")
    } else {
        None
    }
}

/// Every consumer holds a key the account accepts; `Err` names the first that does not.
fn consumers_valid(state: &Value) -> Result<(), String> {
    let (key1, key2) = keys_of(state);
    for (consumer, key) in consumer_keys(state) {
        if key != key1 && key != key2 {
            return Err(format!("{consumer} holds a key the account no longer has"));
        }
    }
    for secret in ["stdatasci001-key", "stdatasci001-connection-string"] {
        if !versions(state, secret).last().is_some_and(|v| v.2) {
            return Err(format!("the latest version of {secret} is disabled"));
        }
    }
    Ok(())
}

async fn run(svc: &Service, args: &[&str]) -> (Option<i32>, Value, String) {
    let mut cmd = tokio::process::Command::from(svc.command(args, true));
    let out = cmd.output().await.expect("keyflip runs");
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (
        out.status.code(),
        json,
        format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The journal's rotations of the demo plan, newest first.
async fn history(svc: &Service) -> Vec<Value> {
    let (code, json, text) = run(svc, &["history", "demo", "--output", "json"]).await;
    assert_eq!(code, Some(0), "history after a kill: {text}");
    json["rotations"].as_array().cloned().unwrap_or_default()
}

fn kill(pid: u32) {
    // SAFETY: kill with a pid this test spawned and a valid signal number.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

#[derive(Default)]
struct Tally {
    rotations: u64,
    killed: u64,
    finished_before_kill: u64,
    through_daemon: u64,
    faulted: u64,
    regenerations: u64,
}

/// One twin, `count` rotations.
async fn one_loop(seed: u64, count: u64) -> Result<Tally, String> {
    let svc = Service::install("");
    // Only the loop rotates: no scheduled rotation in a daemon's short life.
    let plan = svc.path("plans/demo.toml");
    let text = std::fs::read_to_string(&plan).unwrap();
    let unscheduled = text.replace(
        "[schedule]\ncron = \"*/10 * * * *\"\ntimezone = \"UTC\"\n",
        "",
    );
    assert_ne!(text, unscheduled, "the demo plan's schedule moved");
    std::fs::write(&plan, unscheduled).unwrap();
    let mut rng = Rng(seed);
    let mut tally = Tally::default();
    for i in 0..count {
        let state = svc.twin.state().await;
        let before_regenerations = regenerations(&svc.twin).await;
        let before_history = history(&svc).await.len();
        let active = active(&state).unwrap_or("key1");
        let mut args = vec!["rotate", "now", "demo", "--yes", "--output", "json"];
        let route = rng.below(7);
        let revoke_first = route == 6;
        match route {
            0..=1 => {}
            2 => args.extend(["--leaked", "key1"]),
            3 => args.extend(["--leaked", "key2"]),
            4 => args.extend(["--leaked", "both"]),
            5 => args.extend(["--leaked", "unknown"]),
            _ => args.extend(["--leaked", active, "--revoke-first"]),
        }
        let what = format!("seed {seed:#x} rotation {i}: {}", args[3..].join(" "));
        if rng.below(2) == 0 {
            let operation = *rng.pick(FAULTED);
            svc.twin
                .fault(
                    json!({"operation": operation, "count": 1, "action": fault_action(&mut rng)}),
                )
                .await;
            tally.faulted += 1;
        }
        let daemon = if rng.below(3) == 0 {
            tally.through_daemon += 1;
            Some(tokio::task::block_in_place(|| svc.daemon()))
        } else {
            None
        };
        let mut child = tokio::process::Command::from(svc.command(&args, true))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("keyflip starts");
        // Most rotations here take one to three seconds; some kills come before
        // anything happened, some after the end.
        let delay = Duration::from_millis(rng.below(2_500));
        tokio::select! {
            _ = child.wait() => tally.finished_before_kill += 1,
            _ = tokio::time::sleep(delay) => {}
        }
        match &daemon {
            Some(d) => kill(d.pid()),
            None => {
                if let Some(pid) = child.id() {
                    kill(pid);
                }
            }
        }
        let _ = child.kill().await;
        drop(daemon);
        tally.killed += 1;

        // After the kill: unless the leaked key was revoked on purpose, no consumer is
        // left on a key that no longer works.
        let state = svc.twin.state().await;
        if !revoke_first {
            consumers_valid(&state).map_err(|e| format!("{what}: after the kill: {e}"))?;
        }
        svc.twin.clear_faults().await;

        // Finish it: a restarted daemon resumes at start; standalone, `rotate resume`.
        let started = Instant::now();
        if rng.below(2) == 0 {
            let d = tokio::task::block_in_place(|| svc.daemon());
            loop {
                let (code, json, text) = run(&svc, &["status", "--output", "json"]).await;
                if code == Some(0) && json["plans"][0]["unfinished"].is_null() {
                    break;
                }
                if started.elapsed() > Duration::from_secs(120) {
                    return Err(format!(
                        "{what}: the restarted daemon did not finish the rotation in 120 s: {text}\n{}",
                        d.log()
                    ));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            tokio::task::block_in_place(|| d.terminate(Duration::from_secs(30)));
        } else {
            let (code, _, text) = run(&svc, &["rotate", "resume", "--output", "json"]).await;
            if code != Some(0) {
                return Err(format!("{what}: rotate resume exited {code:?}: {text}"));
            }
        }

        // Checked against the twin's state and request log.
        let state = svc.twin.state().await;
        consumers_valid(&state).map_err(|e| format!("{what}: after the resume: {e}"))?;
        let rotations = history(&svc).await;
        let new = &rotations[..rotations.len() - before_history];
        if new.len() > 1 {
            return Err(format!(
                "{what}: {} rotations journaled for one request",
                new.len()
            ));
        }
        if let Some(last) = new.first()
            && last["outcome"]["outcome"].is_null()
        {
            return Err(format!("{what}: the rotation is still unfinished: {last}"));
        }
        let journaled: usize = new
            .iter()
            .map(|r| r["regenerated"].as_array().map_or(0, Vec::len))
            .sum();
        let performed = regenerations(&svc.twin).await - before_regenerations;
        if performed != journaled {
            return Err(format!(
                "{what}: Azure regenerated {performed} keys, the journal reports {journaled}: {new:?}"
            ));
        }
        tally.regenerations += performed as u64;
        tally.rotations += 1;
    }
    Ok(tally)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_kills_of_real_processes_never_strand_a_consumer_or_lose_a_key() {
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let total = env("KEYFLIP_KILL_ROTATIONS", 200);
    let loops = env("KEYFLIP_KILL_LOOPS", 4).max(1);
    let seed = env("KEYFLIP_KILL_SEED", 0x6b69_6c6c);
    let started = Instant::now();
    let mut handles = Vec::new();
    for n in 0..loops {
        let count = total / loops + u64::from(n < total % loops);
        handles.push(tokio::spawn(one_loop(
            seed.wrapping_add(n.wrapping_mul(0x9e37_79b9)),
            count,
        )));
    }
    let mut sum = Tally::default();
    let mut failures = Vec::new();
    for h in handles {
        match h.await.expect("a kill loop panicked") {
            Ok(t) => {
                sum.rotations += t.rotations;
                sum.killed += t.killed;
                sum.finished_before_kill += t.finished_before_kill;
                sum.through_daemon += t.through_daemon;
                sum.faulted += t.faulted;
                sum.regenerations += t.regenerations;
            }
            Err(e) => failures.push(e),
        }
    }
    eprintln!(
        "kill loop (seed {seed:#x}): {} rotations, {} kills ({} after the process had ended), {} through a daemon, {} with a fault, {} keys regenerated, in {:.0?}",
        sum.rotations,
        sum.killed,
        sum.finished_before_kill,
        sum.through_daemon,
        sum.faulted,
        sum.regenerations,
        started.elapsed()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(sum.rotations, total);
}
