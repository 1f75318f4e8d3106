//! What a person sees: the human output of every command of the `keyflip` binary,
//! snapshotted at 80 and at 60 columns (`COLUMNS`) with ids, fingerprints, times,
//! durations and paths redacted, and checked to fit the width (only a word longer than
//! half a line, an ARM id, may run past it). Also: the ASCII fallback without a UTF-8
//! locale, no colour when stdout is not a terminal, and no Rust `Debug` text.
//!
//! `UPDATE_SNAPSHOTS=1 cargo test -p keyflip --test it output` rewrites the files in
//! `tests/it/snapshots/output/` after a deliberate change; review the diff.

use crate::support::binary::{Cli, Run};
use crate::support::redact::redact;
use crate::support::twin::READER;

const WIDTHS: [usize; 2] = [80, 60];

/// Compares `text` with the snapshot `name`, or writes it with `UPDATE_SNAPSHOTS`.
pub fn snapshot(name: &str, text: &str) {
    let path = format!(
        "{}/tests/it/snapshots/output/{name}.txt",
        env!("CARGO_MANIFEST_DIR")
    );
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(std::path::Path::new(&path).parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        text == want,
        "{name}: the human output changed; run with UPDATE_SNAPSHOTS=1 to accept it\n--- got ---\n{text}\n--- want ---\n{want}"
    );
}

/// Every line fits `width`, except one whose overflow is a single long word.
pub fn assert_fits(name: &str, text: &str, width: usize) {
    for line in text.lines() {
        let cells = line.chars().count();
        let long_word = line.split(' ').any(|w| w.chars().count() > width / 2);
        assert!(
            cells <= width || long_word,
            "{name}: a line of {cells} columns at width {width}:\n{line}\n\n{text}"
        );
    }
    for debug in ["Key1", "Key2", "Some(", "None,", " { ", "Neither"] {
        assert!(
            !text.contains(debug),
            "{name}: Rust Debug text ({debug:?}) for a person:\n{text}"
        );
    }
    assert!(!text.contains('\x1b'), "{name}: colour on a pipe:\n{text}");
}

async fn run_at(cli: &Cli, args: &[&str], width: usize) -> Run {
    cli.run_env(args, &[("COLUMNS", &width.to_string())]).await
}

fn redacted(cli: &Cli, text: &str) -> String {
    redact(
        text,
        &[
            (&cli.twin.endpoints.base_url, "https://TWIN"),
            (&cli.dir.path().display().to_string(), "DIR"),
        ],
    )
}

/// Runs `args` at each width, checks the exit code and the fit, and compares the
/// redacted stdout with the snapshot `name-WIDTH`.
async fn check(cli: &Cli, name: &str, args: &[&str], exit: i32) {
    for width in WIDTHS {
        let run = run_at(cli, args, width).await;
        assert_eq!(
            run.code,
            Some(exit),
            "{name} at {width}: {}\n{}",
            run.stdout,
            run.stderr
        );
        assert_fits(name, &run.stdout, width);
        snapshot(&format!("{name}-{width}"), &redacted(cli, &run.stdout));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_reads_well_at_80_and_60_columns() {
    let cli = Cli::start().await;
    check(&cli, "plan-check", &["plan", "check"], 0).await;
    check(&cli, "status-before", &["status"], 0).await;
    check(&cli, "history-empty", &["history"], 0).await;
    check(&cli, "resume-nothing", &["rotate", "resume"], 0).await;
    check(&cli, "dry-run", &["rotate", "now", "demo", "--dry-run"], 0).await;
    check(
        &cli,
        "dry-run-calls",
        &["rotate", "now", "demo", "--dry-run", "--show-calls"],
        0,
    )
    .await;
    check(
        &cli,
        "dry-run-incident",
        &["rotate", "now", "demo", "--dry-run", "--leaked", "key1"],
        0,
    )
    .await;
    // Two rotations, one per width: the second moves consumers back to key1.
    check(
        &cli,
        "rotate-now",
        &["rotate", "now", "demo", "--yes", "--grace", "1s"],
        0,
    )
    .await;
    check(&cli, "status-after", &["status"], 0).await;
    check(&cli, "status-plan", &["status", "--plan", "demo"], 0).await;
    check(&cli, "history", &["history", "--limit", "1"], 0).await;
    check(
        &cli,
        "incident",
        &["rotate", "now", "demo", "--yes", "--leaked", "both"],
        0,
    )
    .await;

    // A refusal, worded: the reader may not list keys.
    let reader = cli.write_config("reader.toml", READER);
    for width in WIDTHS {
        let mut cmd = cli.command(&reader, &["rotate", "now", "demo", "--dry-run"]);
        cmd.env("COLUMNS", width.to_string());
        let run = cli.run_cmd(cmd).await;
        assert_eq!(run.code, Some(3), "{}\n{}", run.stdout, run.stderr);
        assert_fits("refused", &run.stdout, width);
        snapshot(&format!("refused-{width}"), &redacted(&cli, &run.stdout));
    }

    for width in WIDTHS {
        // The build, with what changes from build to build (the commit, the
        // toolchain, the features tests are built with, the lock file's versions) as
        // placeholders.
        let run = run_at(&cli, &["version"], width).await;
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        assert_fits("version", &run.stdout, width);
        snapshot(&format!("version-{width}"), &build_redacted(&run.stdout));

        // A refusal is a person's too: on stderr, wrapped to the width.
        let run = run_at(&cli, &["coordination", "import-journal"], width).await;
        assert_eq!(run.code, Some(2), "{}\n{}", run.stdout, run.stderr);
        assert_eq!(run.stdout, "", "the refusal is on stderr");
        assert_fits("import-journal-refused", &run.stderr, width);
        snapshot(
            &format!("import-journal-refused-{width}"),
            &redacted(&cli, &run.stderr),
        );
    }
}

/// `keyflip version`'s text with the values that differ between builds replaced by
/// their label: `keyflip PACKAGE_VERSION`, `rustc:    RUSTC`, `azure_core: VERSION`.
fn build_redacted(text: &str) -> String {
    text.lines()
        .map(|line| match line.split_once(':') {
            Some((label, value)) if !value.trim().is_empty() => {
                let pad = value.len() - value.trim_start().len();
                let placeholder = match label {
                    "commit" | "target" | "rustc" | "features" => label.to_uppercase(),
                    _ => "VERSION".to_owned(),
                };
                format!("{label}:{}{placeholder}\n", " ".repeat(pad))
            }
            _ => format!(
                "{}\n",
                line.replace(env!("CARGO_PKG_VERSION"), "PACKAGE_VERSION")
            ),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ascii_without_a_utf8_locale_and_json_documents_carry_a_version() {
    let cli = Cli::start().await;
    let run = cli
        .run_env(
            &["rotate", "now", "demo", "--yes", "--grace", "1s"],
            &[("LANG", "C")],
        )
        .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.contains("  ok    1 observe"), "{}", run.stdout);
    assert!(
        run.stdout.is_ascii(),
        "no ✓ ✗ → without UTF-8:\n{}",
        run.stdout
    );
    // LC_ALL wins over LANG.
    let run = cli
        .run_env(&["history"], &[("LC_ALL", "C"), ("LANG", "C.UTF-8")])
        .await;
    assert!(run.stdout.contains("  ok    "), "{}", run.stdout);
    assert!(run.stdout.is_ascii(), "{}", run.stdout);
    let run = cli.run(&["history"]).await;
    assert!(run.stdout.contains("  ✓  "), "{}", run.stdout);

    // NO_COLOR and a pipe: never an escape sequence.
    let run = cli.run_env(&["history"], &[("NO_COLOR", "1")]).await;
    assert!(!run.stdout.contains('\x1b'), "{}", run.stdout);

    for args in [
        vec!["status"],
        vec!["status", "--plan", "demo"],
        vec!["history"],
        vec!["rotate", "resume"],
        vec!["rotate", "now", "demo", "--dry-run"],
        vec!["rotate", "now", "nosuchplan", "--dry-run"],
        vec!["plan", "check"],
        vec!["version"],
    ] {
        let args: Vec<&str> = args.into_iter().chain(["--output", "json"]).collect();
        let run = cli.run(&args).await;
        let doc = run.json();
        assert_eq!(doc["version"], 1, "{args:?}: {doc:#}");
    }
    let run = cli
        .run(&["rotate", "now", "demo", "--dry-run", "--output", "json"])
        .await;
    let summary = &run.json()["summary"];
    assert_eq!(summary["regenerations"][0]["key"], "key1", "{summary:#}");
    assert_eq!(summary["consumers_moved"]["datastore"], 4, "{summary:#}");
    assert!(summary["arm_writes"].as_u64().unwrap() > 10, "{summary:#}");
    // Per-service counts keep their field names (`{service}_calls`), as the text does.
    assert!(
        summary["key_vault_calls"].as_u64().unwrap() > 0,
        "{summary:#}"
    );
    assert_eq!(summary["databricks_calls"], 4, "{summary:#}");
}

/// `demo --keep-running` writes a configuration that `doctor` passes with no warning,
/// and says how to use it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_configuration_passes_doctor_without_a_warning() {
    let twin = crate::support::twin::TestTwin::start();
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("plans")).unwrap();
    std::fs::write(
        root.path().join("plans/demo.toml"),
        crate::support::engine::demo_plan_text(&twin),
    )
    .unwrap();
    let config = root.path().join("keyflip.toml");
    std::fs::write(
        &config,
        keyflip::commands::demo::config_file(&twin.endpoints, twin.dir.path(), root.path()),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyflip"))
        .env_clear()
        .env("KEYFLIP_CONFIG", &config)
        .env("LANG", "C.UTF-8")
        .arg("doctor")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("demo: nothing blocks a rotation, 0 warnings"),
        "{text}"
    );
    assert!(!text.contains("  !  "), "{text}");
}

/// The demo itself, at both widths, with its temporary directory and port redacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_reads_well_at_80_and_60_columns() {
    for width in WIDTHS {
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_keyflip"))
                .env_clear()
                .env("LANG", "C.UTF-8")
                .env("COLUMNS", width.to_string())
                .arg("demo")
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(0), "{text}");
        assert_fits("demo", &text, width);
        let dir = text
            .split_whitespace()
            .find(|w| w.contains("/keyflip-demo-"))
            .expect("the demo names its directory")
            .to_owned();
        let port = text
            .split_whitespace()
            .find(|w| w.starts_with("https://127.0.0.1:"))
            .expect("the demo names its twin")
            .to_owned();
        let text = redact(&text, &[(&dir, "DIR"), (&port, "https://TWIN")]);
        // The demo jumps its clock minutes ahead, so whether the plan's `*/10` cron
        // fired meanwhile (its last table then says NEXT DUE "now", and with that
        // narrower column fits longer times) depends on the minute the run started.
        // The table is left out here; `status` has width snapshots of its own.
        let text = match (text.find("keyflip status:\n"), text.find("\n1 plan.")) {
            (Some(start), Some(end)) if start < end => {
                format!("{}keyflip status:\nTABLE{}", &text[..start], &text[end..])
            }
            _ => panic!("the demo ends with a status table:\n{text}"),
        };
        snapshot(&format!("demo-{width}"), &text);
    }
}

/// A JSON object whose keys are all different (serde_json keeps the last of two).
struct UniqueKeys(Vec<String>);

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Keys;
        impl<'de> serde::de::Visitor<'de> for Keys {
            type Value = UniqueKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<UniqueKeys, A::Error> {
                let mut keys: Vec<String> = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    let _: serde::de::IgnoredAny = map.next_value()?;
                    if keys.contains(&key) {
                        return Err(serde::de::Error::custom(format!("key {key} twice")));
                    }
                    keys.push(key);
                }
                Ok(UniqueKeys(keys))
            }
        }
        d.deserialize_map(Keys)
    }
}

/// `--log-format json`: every line is one flat object with each key once, every
/// Azure call line names the plan and the rotation, and values are worded, not Rust
/// `Debug` output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_have_unique_keys_and_name_the_plan_and_rotation() {
    let cli = Cli::start().await;
    let run = cli
        .run(&[
            "-v",
            "--log-format",
            "json",
            "rotate",
            "now",
            "demo",
            "--yes",
            "--grace",
            "1s",
            "--output",
            "json",
        ])
        .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let report: serde_json::Value = run.json();
    let rotation_id = report["rotation_id"].as_str().unwrap();
    let mut azure_lines = 0;
    for line in run.stderr.lines() {
        let keys: UniqueKeys = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one flat object with unique keys ({e}): {line}"));
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        for key in ["timestamp", "level", "target", "message"] {
            assert!(keys.0.iter().any(|k| k == key), "no {key}: {line}");
        }
        assert!(
            !keys.0.iter().any(|k| k == "rotation"),
            "rotation_id, not rotation: {line}"
        );
        if value.get("operation").is_some() {
            azure_lines += 1;
            assert_eq!(value["plan"], "demo", "{line}");
            assert_eq!(value["rotation_id"], rotation_id, "{line}");
            assert!(value.get("resource").is_some(), "{line}");
        }
        for debug in ["Some(", "None", "Key1", "Key2", "Scheduled", " { "] {
            assert!(!line.contains(debug), "Rust Debug text ({debug}) in {line}");
        }
    }
    assert!(
        azure_lines > 20,
        "Azure call lines were logged:\n{}",
        run.stderr
    );
}

/// `rotate now` without `--yes` on a terminal, answered with `answer` at the prompt.
async fn on_a_terminal(cli: &Cli, answer: &'static str) -> crate::support::pty::Screen {
    let config = cli.dir.path().join("keyflip.toml");
    let mut cmd = cli.command(&config, &["rotate", "now", "demo", "--grace", "3s"]);
    cmd.env("COLUMNS", "80");
    tokio::task::spawn_blocking(move || crate::support::pty::run(cmd, "[y/N]", answer))
        .await
        .unwrap()
}

/// The question comes after the dry run's summary (not its step list); anything but
/// `y` exits 2 and changes nothing (docs/operations.md, "Exit codes").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prompt_follows_the_summary_and_no_exits_2_with_nothing_changed() {
    let cli = Cli::start().await;
    let before = cli.twin.keys("stdatasci001").await;
    let screen = on_a_terminal(&cli, "n\n").await;
    let text = &screen.text;
    assert_eq!(screen.code, Some(2), "{text}");
    let summary = text.find("  route:").expect("the summary is shown");
    let grace = text
        .find("  grace:       3s")
        .expect("the summary has the grace");
    let question = text
        .find("Rotate the keys of stdatasci001 now? [y/N]")
        .expect("the question");
    assert!(summary < grace && grace < question, "{text}");
    assert!(
        !text.contains("Steps, in order"),
        "the step list is not shown before the question:\n{text}"
    );
    assert!(
        text[question..].contains("not confirmed; nothing was changed"),
        "{text}"
    );
    assert!(!text.contains("started (safe swap)"), "{text}");
    assert_eq!(
        cli.twin.keys("stdatasci001").await,
        before,
        "no key changed"
    );
    let history = cli.run(&["history", "--output", "json"]).await;
    assert_eq!(history.json()["rotations"], serde_json::json!([]));
}

/// Answered `y`: the rotation runs, the grace wait is printed once and the spinner
/// counts it down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yes_rotates_with_the_grace_counted_down_once_and_no_colour_under_no_color() {
    let cli = Cli::start().await;
    let before = cli.twin.keys("stdatasci001").await;
    let screen = on_a_terminal(&cli, "y\n").await;
    let text = &screen.text;
    assert_eq!(screen.code, Some(0), "{text}");
    assert!(text.contains("Rotation "), "the report: {text}");
    let after = cli.twin.keys("stdatasci001").await;
    assert!(
        after.0 != before.0 && after.1 != before.1,
        "both keys regenerated"
    );
    // Printed once (the spinner's own line says `grace period …: 2s left`).
    assert_eq!(
        text.matches("(grace period before the old key is").count(),
        1,
        "the wait is printed once:\n{text}"
    );
    // The spinner redraws the wait with the time left: more than one value of it.
    let lefts: std::collections::BTreeSet<&str> = text
        .match_indices("s left")
        .map(|(at, _)| {
            let start = text[..at].rfind(' ').map_or(0, |s| s + 1);
            &text[start..at]
        })
        .collect();
    assert!(
        lefts.len() >= 2,
        "a live countdown of the grace period: {lefts:?}\n{text}"
    );
    assert!(has_colour(text), "colour on a terminal:\n{text}");

    // NO_COLOR: a terminal, and still no colour.
    let config = cli.dir.path().join("keyflip.toml");
    let mut cmd = cli.command(
        &config,
        &["rotate", "now", "demo", "--yes", "--grace", "1s"],
    );
    cmd.env("COLUMNS", "80").env("NO_COLOR", "1");
    let screen = tokio::task::spawn_blocking(move || crate::support::pty::run(cmd, "", ""))
        .await
        .unwrap();
    assert_eq!(screen.code, Some(0), "{}", screen.text);
    assert!(screen.text.contains("Rotation "), "{}", screen.text);
    assert!(!has_colour(&screen.text), "NO_COLOR:\n{}", screen.text);
}

/// An SGR escape sequence (`ESC [ 1;32 m`): colour or weight, not cursor movement.
fn has_colour(text: &str) -> bool {
    text.split("\x1b[").skip(1).any(|rest| {
        let params = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == ';')
            .count();
        rest[params..].starts_with('m')
    })
}

/// `keyflip daemon` logs one start-up line saying where everything is, and a
/// routine control request (a `status`) at debug, not info.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_logs_one_start_up_line_and_reads_at_debug() {
    let cli = Cli::start().await;
    let config = cli.dir.path().join("keyflip.toml");
    let socket = cli.dir.path().join("keyflip.sock");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[daemon]\nsocket = \"{}\"\nmetrics_listen = \"127.0.0.1:0\"\n",
        socket.display()
    ));
    std::fs::write(&config, text).unwrap();
    let log = cli.dir.path().join("daemon.log");
    let mut daemon = cli.command(&config, &["-v", "--log-format", "json", "daemon"]);
    daemon.stderr(std::fs::File::create(&log).unwrap());
    let mut child = daemon.spawn().expect("the daemon starts");
    let started = std::time::Instant::now();
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the daemon exited:\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "no control socket:\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let status = cli.run(&["status", "--output", "json"]).await;
    assert_eq!(status.code, Some(0), "{}", status.stderr);
    assert!(
        status
            .stderr
            .contains("answered by the running keyflip daemon"),
        "{}",
        status.stderr
    );
    // SAFETY: kill with the pid of the child this test spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(exit.code(), Some(0), "{text}");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let start: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["message"] == "keyflip daemon started")
        .collect();
    assert_eq!(start.len(), 1, "one start-up line:\n{text}");
    let start = start[0];
    assert_eq!(start["level"], "INFO", "{start}");
    assert_eq!(start["config"], config.display().to_string(), "{start}");
    assert_eq!(start["plans"], 1, "{start}");
    assert_eq!(start["socket"], socket.display().to_string(), "{start}");
    assert!(
        start["metrics"]
            .as_str()
            .is_some_and(|m| m.starts_with("http://127.0.0.1:") && m.ends_with("/metrics")),
        "{start}"
    );
    assert!(
        start["credential"].as_str().is_some_and(|c| !c.is_empty()),
        "{start}"
    );
    let requests: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["message"] == "control request" && l["request"] == "status")
        .collect();
    assert!(
        !requests.is_empty(),
        "the status request is logged:\n{text}"
    );
    for r in requests {
        assert_eq!(r["level"], "DEBUG", "a read is logged at debug: {r}");
    }
}

/// `plan discover`: the plan it writes on stdout is a file, the same whatever the
/// terminal (snapshotted once), and its summary on stderr reads well at both widths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_discover_reads_well_at_80_and_60_columns() {
    let cli = Cli::start().await;
    let account = cli
        .twin
        .account_id(crate::support::twin::ACCOUNT)
        .to_string();
    let mut plans = Vec::new();
    for width in WIDTHS {
        let run = run_at(&cli, &["plan", "discover", &account], width).await;
        assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
        assert_fits("plan-discover", &run.stderr, width);
        // `N Azure call(s) in 1.0s over …`: how long the scan took varies.
        let summary = redacted(&cli, &run.stderr);
        let summary = match summary.split_once(" Azure call(s) in ") {
            Some((head, tail)) => format!(
                "{head} Azure call(s) in SECS{}",
                &tail[tail.find(" over").unwrap_or(0)..]
            ),
            None => summary,
        };
        snapshot(&format!("plan-discover-summary-{width}"), &summary);
        plans.push(redacted(&cli, &run.stdout));
    }
    assert_eq!(plans[0], plans[1], "the plan does not depend on COLUMNS");
    snapshot("plan-discover", &plans[0]);
}

/// `keyflip demo --keep-running` as a person runs it: it prints the `export
/// KEYFLIP_CONFIG=…` line, `doctor` run with that variable passes with no warning,
/// and Ctrl-C (SIGINT) ends it and removes its files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_keep_running_prints_an_export_line_that_doctor_passes() {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_keyflip"))
        .env_clear()
        .env("LANG", "C.UTF-8")
        .env("COLUMNS", "1000")
        .args(["demo", "--keep-running"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the demo starts");
    let stdout = child.stdout.take().unwrap();
    let (config, lines) = tokio::task::spawn_blocking(move || {
        let mut lines = std::io::BufReader::new(stdout).lines();
        let mut seen = String::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            seen.push_str(&line);
            seen.push('\n');
            if let Some(path) = line.trim().strip_prefix("export KEYFLIP_CONFIG=") {
                return (std::path::PathBuf::from(path), lines);
            }
        }
        panic!("no export KEYFLIP_CONFIG= line:\n{seen}");
    })
    .await
    .unwrap();
    assert!(config.is_file(), "{}", config.display());
    let doctor = tokio::task::spawn_blocking({
        let config = config.clone();
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_keyflip"))
                .env_clear()
                .env("LANG", "C.UTF-8")
                .env("KEYFLIP_CONFIG", &config)
                .arg("doctor")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert_eq!(doctor.status.code(), Some(0), "{text}");
    assert!(
        text.contains("demo: nothing blocks a rotation, 0 warnings"),
        "{text}"
    );
    // SAFETY: kill with the pid of the child this test spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = tokio::task::spawn_blocking(move || {
        // Read to the end: the demo may still print while it stops.
        lines.for_each(drop);
        child.wait().unwrap()
    })
    .await
    .unwrap();
    assert!(status.success(), "{status}");
    assert!(!config.exists(), "the demo's files are removed at the end");
}
