//! Who asked and why (issue 12, part 4), through the `keyflip` binary: a manual
//! command's `--reason` and `--ticket`, with the caller's uid and the user name the
//! system has for it, are journaled with the rotation and shown in its report,
//! `history` (text and JSON) and the incident report; the trigger says what kind of
//! request it was.

use serde_json::Value;

use crate::support::binary::Cli;

/// This process's uid and its `/etc/passwd` name, as keyflip (a child of this
/// process, same user) must report them.
fn caller() -> (u64, Option<String>) {
    use std::os::unix::fs::MetadataExt as _;
    let uid = std::fs::metadata("/proc/self").unwrap().uid();
    let name = std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_owned())
        });
    (u64::from(uid), name)
}

fn assert_requester(by: &Value, reason: Option<&str>, ticket: Option<&str>, what: &str) {
    let (uid, name) = caller();
    assert_eq!(by["uid"], uid, "{what}: {by:#}");
    assert_eq!(by["user"].as_str(), name.as_deref(), "{what}: {by:#}");
    assert_eq!(by["reason"].as_str(), reason, "{what}: {by:#}");
    assert_eq!(by["ticket"].as_str(), ticket, "{what}: {by:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_asked_and_why_are_journaled_and_shown_in_history_and_reports() {
    let cli = Cli::start().await;
    let (uid, name) = caller();
    let who = match &name {
        Some(name) => format!("uid {uid} ({name})"),
        None => format!("uid {uid}"),
    };

    // A plain rotation: manual, the caller's uid and name, nothing else.
    let run = cli
        .run(&[
            "rotate", "now", "demo", "--yes", "--grace", "0s", "--output", "json",
        ])
        .await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    let report = run.json();
    assert_eq!(report["trigger"]["trigger"], "manual", "{report:#}");
    assert_requester(&report["requested_by"], None, None, "the swap's report");

    // An incident with a reason and a ticket.
    let run = cli
        .run(&[
            "rotate",
            "now",
            "demo",
            "--yes",
            "--leaked",
            "key1",
            "--reason",
            "key in a gist",
            "--ticket",
            "INC-42",
            "--output",
            "json",
        ])
        .await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    let report = run.json();
    assert_eq!(report["trigger"]["trigger"], "incident", "{report:#}");
    assert_requester(
        &report["requested_by"],
        Some("key in a gist"),
        Some("INC-42"),
        "the incident's report",
    );
    let markdown = std::fs::read_to_string(
        report["incident_report"]["markdown"]
            .as_str()
            .expect("an incident report"),
    )
    .unwrap();
    assert!(
        markdown.contains(&format!(
            "- Declared by: {who}, ticket INC-42: key in a gist"
        )),
        "{markdown}"
    );

    // `history` reads both back from the journal, whichever process wrote them.
    let history = cli.run(&["history", "demo", "--output", "json"]).await;
    assert_eq!(history.code, Some(0), "{}", history.stderr);
    let rotations = history.json()["rotations"].as_array().unwrap().clone();
    assert_eq!(rotations.len(), 2, "{rotations:#?}");
    assert_eq!(rotations[0]["trigger"]["trigger"], "incident");
    assert_requester(
        &rotations[0]["requested_by"],
        Some("key in a gist"),
        Some("INC-42"),
        "history of the incident",
    );
    assert_eq!(rotations[1]["trigger"]["trigger"], "manual");
    assert_requester(
        &rotations[1]["requested_by"],
        None,
        None,
        "history of the swap",
    );
    let text = cli
        .run_env(&["history", "demo"], &[("COLUMNS", "200")])
        .await;
    for want in [
        format!("trigger:   incident, asked by {who}, ticket INC-42: key in a gist\n"),
        format!("trigger:   manual, asked by {who}\n"),
    ] {
        assert!(text.stdout.contains(&want), "{want:?} in:\n{}", text.stdout);
    }
}
