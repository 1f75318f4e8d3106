//! One command path: every request command prints the same whichever process did the
//! work. Each test runs the `keyflip` binary standalone against one demo twin, and
//! the same command against a second, equivalent twin whose state directory a
//! running daemon owns (in this process, on the wall clock), so the binary goes
//! through the control socket. Stdout, human and JSON, must be identical once ids,
//! fingerprints, times, durations, ports and directories are redacted, and so must
//! the exit code; the daemon's run says on stderr that the daemon answered, and the
//! standalone run does not.

use std::path::PathBuf;
use std::sync::Arc;

use keyflip::clock::SystemClock;
use keyflip::config::ConfigPath;
use keyflip::daemon::{DaemonHandle, DaemonOptions};
use keyflip::exit::Exit;

use crate::support::binary::{Cli, Run};
use crate::support::engine::{demo_plan_text, regenerations};
use crate::support::redact::redact;
use crate::support::twin::{ACCOUNT, OPERATOR};

const THROUGH_DAEMON: &str = "keyflip: answered by the running keyflip daemon";

/// Two equivalent demo worlds: one for standalone runs, one behind a daemon.
struct Pair {
    standalone: Cli,
    daemon: Cli,
    handle: Option<DaemonHandle>,
}

/// The demo plan, with a schedule that does not fire while a test runs and a drift
/// watch that looks once at start: the daemon must change nothing on its own.
fn plan_text(cli: &Cli) -> String {
    let text = demo_plan_text(&cli.twin);
    let text = text.replace("cron = \"*/10 * * * *\"", "cron = \"0 3 1 1 *\"");
    let text = text.replace("interval = \"1m\"", "interval = \"7d\"");
    assert!(
        text.contains("0 3 1 1 *") && text.contains("\"7d\""),
        "{text}"
    );
    text
}

/// keyflip.toml with its control socket in the Cli's directory.
fn write_config(cli: &Cli, name: &str, socket: &str) -> PathBuf {
    let path = cli.write_config(name, OPERATOR);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "\n[daemon]\nsocket = \"{}\"\nmetrics_listen = \"127.0.0.1:0\"\n",
        cli.dir.path().join(socket).display()
    ));
    std::fs::write(&path, text).unwrap();
    path
}

impl Pair {
    async fn start() -> Pair {
        Self::start_with(|_| {}).await
    }

    /// Starts the pair after `prepare` ran on both state directories.
    async fn start_with(prepare: impl Fn(&Cli)) -> Pair {
        let standalone = Cli::start().await;
        let daemon = Cli::start().await;
        for cli in [&standalone, &daemon] {
            std::fs::write(cli.dir.path().join("plans/demo.toml"), plan_text(cli)).unwrap();
            write_config(cli, "keyflip.toml", "keyflip.sock");
            prepare(cli);
        }
        // The same state directory without the socket: a process that runs
        // standalone beside the daemon (to crash one, for `rotate resume`).
        write_config(&daemon, "beside.toml", "nobody-listens.sock");
        let env: keyflip::daemon::EnvFn = Arc::new(|_: &str| None);
        let path = ConfigPath {
            path: daemon.dir.path().join("keyflip.toml"),
            explicit: true,
        };
        let loader = keyflip::daemon::file_loader(path, env.clone());
        let (config, plans) = loader().unwrap_or_else(|e| panic!("{e:#?}"));
        let handle = keyflip::daemon::start(DaemonOptions {
            config,
            plans,
            loader,
            clock: Arc::new(SystemClock),
            env,
            systemd: Default::default(),
            watchdog: None,
            azure: Default::default(),
            engine: Default::default(),
            delivery: Default::default(),
        })
        .await
        .unwrap_or_else(|e| panic!("the daemon does not start: {e}"));
        Pair {
            standalone,
            daemon,
            handle: Some(handle),
        }
    }

    fn redact(&self, text: &str) -> String {
        redact(
            text,
            &[
                (&self.standalone.twin.endpoints.base_url, "https://TWIN"),
                (&self.daemon.twin.endpoints.base_url, "https://TWIN"),
                (&self.standalone.dir.path().display().to_string(), "DIR"),
                (&self.daemon.dir.path().display().to_string(), "DIR"),
            ],
        )
    }

    /// Runs `args` standalone, then through the daemon; asserts both print the same
    /// and exit alike, and returns both runs.
    async fn same(&self, args: &[&str]) -> (Run, Run) {
        self.compare(args, true).await
    }

    /// [`Pair::same`]; `reaches_daemon` false for a command refused before any
    /// process is asked.
    async fn compare(&self, args: &[&str], reaches_daemon: bool) -> (Run, Run) {
        let alone = self.standalone.run(args).await;
        let daemon = self.daemon.run(args).await;
        assert!(
            !alone.stderr.contains(THROUGH_DAEMON),
            "{args:?}: the standalone run went to a daemon:\n{}",
            alone.stderr
        );
        assert_eq!(
            daemon.stderr.matches(THROUGH_DAEMON).count(),
            usize::from(reaches_daemon),
            "{args:?}: whether the daemon's run says the daemon answered:\n{}",
            daemon.stderr
        );
        let (a, d) = (self.redact(&alone.stdout), self.redact(&daemon.stdout));
        assert!(
            a == d,
            "{args:?}: standalone and daemon print differently\n--- standalone (exit {:?}) ---\n{a}\n--- daemon (exit {:?}) ---\n{d}\n--- standalone stderr ---\n{}\n--- daemon stderr ---\n{}",
            alone.code,
            daemon.code,
            alone.stderr,
            daemon.stderr
        );
        assert_eq!(alone.code, daemon.code, "{args:?}: exit codes\n{a}");
        // Errors are worded alike on stderr too (the daemon adds its one line).
        let errors = |run: &Run| {
            self.redact(
                &run.stderr
                    .lines()
                    .filter(|l| l.starts_with("keyflip: ") && !l.starts_with(THROUGH_DAEMON))
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
        };
        assert_eq!(errors(&alone), errors(&daemon), "{args:?}: error lines");
        (alone, daemon)
    }

    /// The same for the human and the JSON output of `args`.
    async fn same_both_ways(&self, args: &[&str]) -> Run {
        let (alone, _) = self.same(args).await;
        let json: Vec<&str> = args.iter().copied().chain(["--output", "json"]).collect();
        let (json, _) = self.same(&json).await;
        json.json();
        alone
    }

    async fn stop(mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown();
            assert_eq!(handle.wait().await, Exit::Ok);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_dry_runs_and_refusals_print_the_same() {
    let pair = Pair::start().await;

    let status = pair.same_both_ways(&["status"]).await;
    assert_eq!(status.code, Some(0), "{}", status.stderr);
    assert!(
        status.stdout.starts_with("PLAN ") && status.stdout.contains("\ndemo "),
        "{}",
        status.stdout
    );
    let detail = pair.same_both_ways(&["status", "--plan", "demo"]).await;
    assert!(
        detail.stdout.contains("  key ages:      key1 "),
        "{}",
        detail.stdout
    );
    let history = pair.same_both_ways(&["history"]).await;
    assert!(
        history.stdout.contains("No rotations recorded."),
        "{}",
        history.stdout
    );
    let resume = pair.same_both_ways(&["rotate", "resume"]).await;
    assert!(
        resume.stdout.contains("Nothing to resume"),
        "{}",
        resume.stdout
    );
    let dry = pair
        .same_both_ways(&["rotate", "now", "demo", "--dry-run"])
        .await;
    assert_eq!(dry.code, Some(0), "{}", dry.stderr);
    assert!(
        dry.stdout.contains("Steps, in order") && dry.stdout.contains("  regenerates: key2 staged"),
        "{}",
        dry.stdout
    );
    let calls = pair
        .same_both_ways(&["rotate", "now", "demo", "--dry-run", "--show-calls"])
        .await;
    assert!(
        calls.stdout.contains("POST <account>/regenerateKey"),
        "{}",
        calls.stdout
    );
    let history = pair
        .same_both_ways(&["history", "--limit", "1", "--since", "1d"])
        .await;
    assert_eq!(history.code, Some(0), "{}", history.stderr);
    let unknown = pair.same_both_ways(&["history", "nosuchplan"]).await;
    assert_eq!(unknown.code, Some(0), "history of an unknown plan is empty");
    let (unknown, _) = pair.same(&["rotate", "now", "nosuch", "--yes"]).await;
    assert_eq!(unknown.code, Some(2), "{}", unknown.stderr);

    // Refused in the one place arguments become a request: never downgraded to a
    // both-keys incident, whichever process would have run it.
    for output in ["human", "json"] {
        let args = [
            "rotate",
            "now",
            "demo",
            "--yes",
            "--leaked",
            "both",
            "--revoke-first",
            "--output",
            output,
        ];
        let (revoke, _) = pair.compare(&args, false).await;
        assert_eq!(revoke.code, Some(2), "{}", revoke.stderr);
        assert!(
            revoke.stderr.contains("--revoke-first applies to"),
            "{}",
            revoke.stderr
        );
    }
    for cli in [&pair.standalone, &pair.daemon] {
        assert_eq!(regenerations(&cli.twin).await, 0, "nothing was regenerated");
    }

    // A precheck refusal: key1, which every consumer holds, regenerated behind
    // keyflip's back, so every consumer holds neither key.
    for cli in [&pair.standalone, &pair.daemon] {
        cli.twin.regenerate_behind_our_back(ACCOUNT, "key1").await;
    }
    let dry = pair
        .same_both_ways(&["rotate", "now", "demo", "--dry-run"])
        .await;
    assert_eq!(dry.code, Some(3), "{}", dry.stdout);
    assert!(
        dry.stdout.contains("refused, nothing was changed:"),
        "{}",
        dry.stdout
    );
    assert!(
        !dry.stdout.contains('{'),
        "no raw serde in a refusal:\n{}",
        dry.stdout
    );
    let refused = pair
        .same_both_ways(&["rotate", "now", "demo", "--yes"])
        .await;
    assert_eq!(refused.code, Some(3), "{}", refused.stdout);
    assert!(
        refused.stdout.contains("refused, nothing was changed:"),
        "{}",
        refused.stdout
    );
    let history = pair.same_both_ways(&["history", "demo"]).await;
    assert!(history.stdout.contains("refused"), "{}", history.stdout);
    for cli in [&pair.standalone, &pair.daemon] {
        assert_eq!(
            regenerations(&cli.twin).await,
            0,
            "a refusal changes nothing"
        );
    }
    pair.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotations_status_and_history_print_the_same() {
    let pair = Pair::start().await;
    let human = pair
        .same(&["rotate", "now", "demo", "--yes", "--grace", "1s"])
        .await
        .0;
    assert_eq!(human.code, Some(0), "{}", human.stderr);
    assert!(
        human.stdout.contains("decided: consumers hold key1"),
        "{}",
        human.stdout
    );
    assert!(human.stdout.contains(": completed"), "{}", human.stdout);
    let json = pair
        .same(&[
            "rotate", "now", "demo", "--yes", "--grace", "1s", "--output", "json",
        ])
        .await
        .0;
    assert_eq!(json.json()["outcome"]["outcome"], "completed");

    let history = pair.same_both_ways(&["history", "demo"]).await;
    assert!(
        history.stdout.contains("  ✓  1 observe"),
        "history has its steps:\n{}",
        history.stdout
    );
    let status = pair.same_both_ways(&["status", "--plan", "demo"]).await;
    assert!(
        status.stdout.contains("  last rotation: completed "),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("  next due:      ") && !status.stdout.contains(".000"),
        "{}",
        status.stdout
    );
    let table = pair.same_both_ways(&["status"]).await;
    assert!(
        table
            .stdout
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("demo ") && l.ends_with(" ok")),
        "{}",
        table.stdout
    );
    let history = pair.same_both_ways(&["history", "--limit", "1"]).await;
    assert_eq!(
        history.stdout.matches(" plan demo ").count(),
        1,
        "{}",
        history.stdout
    );
    pair.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incident_rotations_print_the_same() {
    let pair = Pair::start().await;
    let both = pair
        .same(&["rotate", "now", "demo", "--yes", "--leaked", "both"])
        .await
        .0;
    assert_eq!(both.code, Some(0), "{}", both.stderr);
    assert!(
        both.stdout.contains("incident: both keys leaked"),
        "{}",
        both.stdout
    );
    assert!(both.stdout.contains("incident report: "), "{}", both.stdout);
    // After it consumers are on key2: key2 is the active key that leaked.
    let active = pair
        .same(&[
            "rotate", "now", "demo", "--yes", "--leaked", "key2", "--output", "json",
        ])
        .await
        .0;
    let report = active.json();
    assert_eq!(report["outcome"]["outcome"], "completed", "{report:#}");
    assert_eq!(report["mode"]["mode"], "leaked");
    assert_eq!(report["trigger"]["trigger"], "incident");
    pair.stop().await;
}

#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_print_the_same() {
    let pair = Pair::start().await;
    let crash = |cli: &Cli, config: &str| {
        let mut cmd = cli.command(
            &cli.dir.path().join(config),
            &["rotate", "now", "demo", "--yes", "--grace", "1s"],
        );
        // Before the first regenerateKey is sent: a point every run reaches the same
        // way (a crash mid-batch would leave a different set of steps in doubt).
        cmd.env("KEYFLIP_FAILPOINT", "intent:regenerate");
        cmd
    };
    for output in ["human", "json"] {
        // Standalone both times: the daemon's twin is crashed by a process beside the
        // daemon, on the same state directory.
        let alone = pair
            .standalone
            .run_cmd(crash(&pair.standalone, "keyflip.toml"))
            .await;
        let beside = pair
            .daemon
            .run_cmd(crash(&pair.daemon, "beside.toml"))
            .await;
        for run in [&alone, &beside] {
            assert_eq!(run.code, None, "killed by SIGABRT\n{}", run.stderr);
        }
        let (resumed, _) = pair.same(&["rotate", "resume", "--output", output]).await;
        assert_eq!(resumed.code, Some(0), "{}", resumed.stderr);
        if output == "human" {
            assert!(
                resumed.stdout.contains("resuming rotation"),
                "{}",
                resumed.stdout
            );
            assert!(resumed.stdout.contains("(resumed)"), "{}", resumed.stdout);
        } else {
            assert_eq!(resumed.json()["rotations"][0]["resumed"], true);
        }
    }
    pair.same_both_ways(&["history"]).await;
    pair.stop().await;
}

/// A resumed incident finishes in the incident's words: its last line calls the leaked
/// key's regeneration a revoke, as its step lines do, whether the resuming event came
/// over the daemon's socket or from this process.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_incident_calls_its_revoke_a_revoke() {
    let pair = Pair::start().await;
    for (cli, config) in [
        (&pair.standalone, "keyflip.toml"),
        (&pair.daemon, "beside.toml"),
    ] {
        // key1 is the active key: its regeneration is the retire the incident revokes.
        let mut cmd = cli.command(
            &cli.dir.path().join(config),
            &["rotate", "now", "demo", "--yes", "--leaked", "key1"],
        );
        cmd.env("KEYFLIP_FAILPOINT", "intent:regenerate");
        let run = cli.run_cmd(cmd).await;
        assert_eq!(run.code, None, "killed by SIGABRT\n{}", run.stderr);
    }
    let (resumed, _) = pair.same(&["rotate", "resume"]).await;
    assert_eq!(resumed.code, Some(0), "{}", resumed.stderr);
    let last = resumed
        .stdout
        .lines()
        .find(|l| l.starts_with("finished: "))
        .unwrap_or_default();
    assert!(
        last.contains("key1 regenerated (revoke)") && !last.contains("(retire)"),
        "{}",
        resumed.stdout
    );
    pair.stop().await;
}

/// The daemon's memory of a plan (parked after failed cycles) shows in `status`
/// whichever process reads it: the daemon from its scheduler, a standalone run from
/// the journal's `plan_state`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_plan_prints_the_same() {
    let parked_at = chrono::Utc::now() - chrono::TimeDelta::hours(2);
    let pair = Pair::start_with(|cli| {
        let state = cli.state_dir();
        std::fs::create_dir_all(&state).unwrap();
        let fingerprinter =
            keyflip::secret::Fingerprinter::load_or_create(&state.join("fingerprint.key")).unwrap();
        let mut journal =
            keyflip::journal::Journal::open(&state.join("journal.db"), &fingerprinter).unwrap();
        let mut plan = keyflip::journal::PlanState::new("demo", parked_at);
        plan.failures = 3;
        plan.retry_at = Some(parked_at + chrono::TimeDelta::minutes(10));
        plan.parked = Some(keyflip::journal::Parked {
            at: parked_at,
            reason: "3 failed rotation cycles in a row; the last: refused".into(),
        });
        journal.save_plan_state(&plan).unwrap();
    })
    .await;
    let status = pair.same_both_ways(&["status", "--plan", "demo"]).await;
    assert_eq!(status.code, Some(5), "needs attention: {}", status.stdout);
    // Wrapped lines joined again: the words, not where the width broke them.
    let joined = status.stdout.replace("\n    ", " ");
    assert!(
        joined.contains("  NEEDS ATTENTION since ")
            && joined.contains(": 3 failed rotation cycles in a row; the last: refused"),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("  next due:      parked\n"),
        "{}",
        status.stdout
    );
    let table = pair.same_both_ways(&["status"]).await;
    assert_eq!(table.code, Some(5), "needs attention: {}", table.stdout);
    assert!(
        table
            .stdout
            .lines()
            .nth(1)
            .is_some_and(|l| l.ends_with("NEEDS ATTENTION")),
        "{}",
        table.stdout
    );
    assert!(
        table.stdout.contains("demo: NEEDS ATTENTION since"),
        "{}",
        table.stdout
    );
    pair.stop().await;
}
