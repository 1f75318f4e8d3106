//! What monitoring reads from the daemon, through real parsers: `/metrics` by
//! Prometheus's Python client (`prometheus_client`'s text parser, the one that
//! splits a family whose samples are not under its header) and by `promtool check
//! metrics`; every metric the shipped alert rules and Grafana dashboard query is one
//! keyflip exports; and the last success survives into a new daemon from the journal.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use chrono::{TimeZone as _, Utc};
use keyflip::daemon::control::protocol::{Answer, Request};
use keyflip::exit::Exit;
use keyflip::rotation::machine::Mode;
use serde_json::Value;

use super::harness::{Consumers, Setup};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Runs `program` with `stdin`, failing the test (naming `.ci/run`) when the tool is
/// missing: nothing is skipped silently.
fn run_tool(mut cmd: Command, stdin: &str, what: &str) -> std::process::Output {
    use std::io::Write as _;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{what} is not installed ({e}); run .ci/run (or .ci/setup) first")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

const PARSE: &str = r#"
import json, sys
try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:
    sys.stderr.write("prometheus_client is not installed in .tools/venv; run .ci/setup\n")
    sys.exit(3)
families = []
for f in text_string_to_metric_families(sys.stdin.read()):
    families.append({"name": f.name, "type": f.type,
                     "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples]})
print(json.dumps(families))
"#;

/// The exposition as `prometheus_client` reads it: one object per family.
pub fn parse_metrics(text: &str) -> Vec<Value> {
    let mut cmd = Command::new(repo(".tools/venv/bin/python"));
    cmd.args(["-c", PARSE]);
    let out = run_tool(cmd, text, "the Python venv in .tools/venv");
    assert!(
        out.status.success(),
        "prometheus_client could not parse /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
}

/// `keyflip_…` names in a PromQL expression (histogram parts as their sample names).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("keyflip_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    if expr.contains("up{") {
        names.push("up".to_owned());
    }
    names
}

/// Every expression of the shipped rules and dashboard.
fn shipped_expressions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let rules = std::fs::read_to_string(repo("deploy/prometheus/keyflip-rules.yml")).unwrap();
    for line in rules.lines() {
        if let Some(expr) = line.trim().strip_prefix("expr:") {
            out.push(("rules".to_owned(), expr.trim().to_owned()));
        }
    }
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo("deploy/grafana/keyflip.json")).unwrap(),
    )
    .expect("deploy/grafana/keyflip.json is JSON");
    for panel in dashboard["panels"].as_array().expect("panels") {
        let targets = panel["targets"].as_array().expect("every panel queries");
        assert!(!targets.is_empty(), "{panel}");
        for t in targets {
            out.push((
                format!("panel {}", panel["title"]),
                t["expr"].as_str().expect("a PromQL expression").to_owned(),
            ));
        }
    }
    out
}

/// docs/operations.md's metrics table: (name, type, label names) per metric.
fn documented_metrics() -> Vec<(String, String, BTreeSet<String>)> {
    let docs = std::fs::read_to_string(repo("docs/operations.md")).unwrap();
    let table = docs
        .split("| metric | type | labels | meaning |")
        .nth(1)
        .expect("the metrics table in docs/operations.md");
    let ticked = |cell: &str| -> Vec<String> {
        cell.split('`')
            .skip(1)
            .step_by(2)
            .map(ToOwned::to_owned)
            .collect()
    };
    let mut out = Vec::new();
    for row in table.lines().skip(2).take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let labels: BTreeSet<String> = ticked(cells[3]).into_iter().collect();
        for name in ticked(cells[1]) {
            out.push((name, cells[2].to_owned(), labels.clone()));
        }
    }
    assert!(out.len() > 20, "{out:#?}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_the_rules_and_dashboard_use_only_exported_metrics() {
    let start = Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap();
    let setup = Setup::new(start);
    let settings = "[schedule]\ncron = \"0 3 * * *\"\nmax_key_age = \"3650d\"\n[rotation]\ngrace = \"0s\"\n[drift]\ninterval = \"7d\"\n";
    setup.write_plan("demo", &setup.plan_text(Consumers::KeyVault, settings));
    let daemon = setup.start().await;
    // Before anything happened: every counter of the plan is there, at zero.
    daemon
        .wait_for("the first observation", |s| {
            s.plan("demo").is_some_and(|p| p.keys.is_some())
        })
        .await;
    let (_, before) = daemon.http_get("/metrics").await;
    let reply = daemon
        .request(Request::RotateNow {
            plan: "demo".into(),
            mode: Mode::Scheduled,
            grace: None,
            dry_run: false,
            by: Default::default(),
        })
        .await
        .expect("the rotation runs");
    assert!(matches!(&reply, Answer::Rotation { report } if report.exit() == Exit::Ok));
    daemon.settle().await;
    let (_, after) = daemon.http_get("/metrics").await;

    for text in [&before, &after] {
        let families = parse_metrics(text);
        let mut names = BTreeSet::new();
        for f in &families {
            let name = f["name"].as_str().unwrap();
            assert!(
                names.insert(name.to_owned()),
                "family {name} twice:\n{text}"
            );
            assert_ne!(f["type"], "unknown", "{name} parsed as untyped:\n{text}");
        }
        let out = run_tool(
            {
                let mut c = Command::new("promtool");
                c.args(["check", "metrics"]);
                c
            },
            text,
            "promtool (Debian's prometheus package)",
        );
        assert!(
            out.status.success(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let family = |text: &str, name: &str| -> Value {
        parse_metrics(text)
            .into_iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("no family {name}:\n{text}"))
    };
    let value = |f: &Value, labels: &[(&str, &str)]| -> Option<f64> {
        f["samples"].as_array().unwrap().iter().find_map(|s| {
            labels
                .iter()
                .all(|(k, v)| s["labels"][*k] == *v)
                .then(|| s["value"].as_f64().unwrap())
        })
    };
    let rotations = family(&before, "keyflip_rotations");
    assert_eq!(rotations["type"], "counter");
    for outcome in [
        "completed",
        "rolled_back",
        "refused",
        "needs_attention",
        "interrupted",
        "error",
    ] {
        assert_eq!(
            value(&rotations, &[("plan", "demo"), ("outcome", outcome)]),
            Some(0.0),
            "{outcome}"
        );
    }
    let rotations = family(&after, "keyflip_rotations");
    assert_eq!(
        value(&rotations, &[("plan", "demo"), ("outcome", "completed")]),
        Some(1.0)
    );
    assert_eq!(
        family(&after, "keyflip_rotation_step_duration_seconds")["type"],
        "histogram"
    );
    let max = family(&after, "keyflip_key_max_age_seconds");
    assert_eq!(value(&max, &[("plan", "demo")]), Some(3650.0 * 86_400.0));
    // (The manual clock runs behind the twin's, so the age itself is not checked.)
    let age = family(&after, "keyflip_active_key_age_seconds");
    assert!(value(&age, &[("plan", "demo")]).is_some(), "{age}");
    assert!(
        value(
            &family(&after, "keyflip_last_success_timestamp_seconds"),
            &[("plan", "demo")]
        )
        .is_some()
    );
    assert_eq!(
        value(&family(&after, "keyflip_start_time_seconds"), &[]),
        Some(start.timestamp() as f64)
    );

    // The metrics table of docs/operations.md and the exposition agree: every family
    // exported is documented with its type and labels, and every documented family
    // (but the `[coordination]` ones, absent without it) is exported.
    let documented = documented_metrics();
    let mut exported_families = BTreeSet::new();
    for f in parse_metrics(&after) {
        let name = f["name"].as_str().unwrap().to_owned();
        let (kind, labels) = documented
            .iter()
            .find(|(n, ..)| n.strip_suffix("_total").unwrap_or(n) == name)
            .map(|(_, kind, labels)| (kind, labels))
            .unwrap_or_else(|| panic!("{name} is exported but not in docs/operations.md"));
        assert_eq!(f["type"], kind.as_str(), "{name}: its documented type");
        for sample in f["samples"].as_array().unwrap() {
            let names: BTreeSet<String> = sample["labels"]
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| *k != "le")
                .cloned()
                .collect();
            assert_eq!(&names, labels, "{name}: its documented labels ({sample})");
        }
        exported_families.insert(name);
    }
    for (name, ..) in &documented {
        let family = name.strip_suffix("_total").unwrap_or(name);
        assert!(
            name.starts_with("keyflip_coordination_") || exported_families.contains(family),
            "{name} is documented but not exported:\n{after}"
        );
    }

    // The shipped rules and dashboard query nothing keyflip does not export.
    let exported: BTreeSet<String> = parse_metrics(&after)
        .iter()
        .flat_map(|f| f["samples"].as_array().unwrap().clone())
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .chain(["up".to_owned()])
        .collect();
    let shipped = shipped_expressions();
    assert!(shipped.len() >= 15, "{shipped:#?}");
    for (where_, expr) in shipped {
        for name in metric_names(&expr) {
            assert!(
                exported.contains(&name),
                "{where_} queries {name}, which keyflip does not export: {expr}\nexported: {exported:#?}"
            );
        }
    }
    assert_eq!(daemon.stop().await, Exit::Ok);
}

/// The rules file is valid and its own unit tests pass (`promtool`, as CI runs it).
#[test]
fn the_alert_rules_pass_promtool() {
    for args in [
        vec!["check", "rules", "keyflip-rules.yml"],
        vec!["test", "rules", "keyflip-rules.test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(repo("deploy/prometheus"))
            .output()
            .unwrap_or_else(|e| {
                panic!("promtool is not installed ({e}); run .ci/run (or .ci/setup) first")
            });
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A rotation run while no daemon was running still counts as the last success when
/// one starts: it is read from the journal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_success_is_read_from_the_journal_at_start() {
    let start = Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap();
    let setup = Setup::new(start);
    let settings = "[rotation]\ngrace = \"0s\"\n[drift]\ninterval = \"7d\"\n";
    setup.write_plan("demo", &setup.plan_text(Consumers::KeyVault, settings));
    let out = tokio::task::spawn_blocking({
        let config = setup.dir().join("keyflip.toml");
        move || {
            Command::new(env!("CARGO_BIN_EXE_keyflip"))
                .env_clear()
                .arg("--config")
                .arg(config)
                .args(["rotate", "now", "demo", "--yes", "--output", "json"])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let finished = chrono::DateTime::parse_from_rfc3339(report["finished_at"].as_str().unwrap())
        .unwrap()
        .timestamp_millis() as f64
        / 1000.0;
    let daemon = setup.start().await;
    let (_, text) = daemon.http_get("/metrics").await;
    let last = parse_metrics(&text)
        .into_iter()
        .find(|f| f["name"] == "keyflip_last_success_timestamp_seconds")
        .expect("a last success");
    assert_eq!(
        last["samples"][0]["value"].as_f64(),
        Some(finished),
        "{text}"
    );
    assert_eq!(daemon.stop().await, Exit::Ok);
}
