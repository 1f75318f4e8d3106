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
