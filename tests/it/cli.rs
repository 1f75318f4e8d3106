//! The `keyflip` binary: exit codes, JSON that parses, the human output (snapshot with
//! ids, fingerprints, times and ports redacted), real process kills followed by
//! `rotate resume`, and a search of everything a rotation leaves behind for every key
//! the twin ever held.

use keyflip::journal::lock::AccountLock;

use crate::support::binary::Cli;
use crate::support::engine::keys_of;
use crate::support::redact::stable_progress;
use crate::support::twin::{ACCOUNT, READER};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_and_json_output() {
    let cli = Cli::start().await;
    let run = cli.run(&["rotate", "now", "demo"]).await;
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("pass --yes"), "{}", run.stderr);

    let run = cli
        .run(&["rotate", "now", "demo", "--dry-run", "--output", "json"])
        .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let dry = run.json();
    assert_eq!(dry["decision"]["active"], "key1");
    assert!(dry["steps"].as_array().unwrap().len() > 20);
    assert!(
        cli.twin
            .requests_for("storage.regenerateKey")
            .await
            .is_empty()
    );

    let reader = cli.write_config("reader.toml", READER);
    let run = cli
        .run_cmd(cli.command(
            &reader,
            &["rotate", "now", "demo", "--yes", "--output", "json"],
        ))
        .await;
    assert_eq!(run.code, Some(3), "{}", run.stderr);
    assert_eq!(run.json()["outcome"]["outcome"], "refused");

    let account = cli.twin.account_id(ACCOUNT);
    let lock = AccountLock::acquire(&cli.state_dir(), &account).unwrap();
    let run = cli.run(&["rotate", "now", "demo", "--yes"]).await;
    assert_eq!(run.code, Some(6), "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("pid {}", std::process::id())),
        "{}",
        run.stderr
    );
    drop(lock);

    let run = cli
        .run(&[
            "rotate", "now", "demo", "--yes", "--grace", "1s", "--output", "json",
        ])
        .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let report = run.json();
    assert_eq!(report["outcome"]["outcome"], "completed");
    assert_eq!(report["outcome"]["active"], "key2");

    let run = cli.run(&["status", "--output", "json"]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let status = run.json();
    assert_eq!(status[0]["plan"], "demo");
    assert_eq!(status[0]["active"], "key2");
    assert_eq!(status[0]["last_rotation"]["outcome"], "completed");

    let run = cli.run(&["history", "demo", "--output", "json"]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let history = run.json();
    assert_eq!(
        history.as_array().unwrap().len(),
        2,
        "the refusal and the rotation"
    );
    assert_eq!(history[0]["rotation_id"], report["rotation_id"]);

    let run = cli.run(&["rotate", "resume"]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.contains("Nothing to resume"), "{}", run.stdout);
}

/// Replaces what changes from run to run with placeholders.
fn redact(text: &str, base_url: &str) -> String {
    let mut out = Vec::new();
    for line in text.replace(base_url, "https://TWIN").lines() {
        let mut l = String::new();
        let mut rest = line;
        // Fingerprints, rotation ids, times, durations, in that order of appearance.
        while !rest.is_empty() {
            if let Some(tail) = rest.strip_prefix("fp:") {
                l.push_str("fp:FINGERPRINT");
                rest = tail.trim_start_matches(|c: char| c.is_ascii_hexdigit());
                continue;
            }
            let c = rest.chars().next().unwrap();
            l.push(c);
            rest = &rest[c.len_utf8()..];
        }
        out.push(l);
    }
    let text = out.join("\n");
    let uuid = regex_lite(
        &text,
        |w| w.len() == 36 && w.chars().filter(|c| *c == '-').count() == 4,
        "ROTATION-ID",
    );
    let time = uuid
        .split('\n')
        .map(|line| {
            let words: Vec<&str> = line.split(' ').collect();
            let mut out = Vec::new();
            let mut i = 0;
            while i < words.len() {
                let w = words[i];
                if w.len() == 10 && w.chars().nth(4) == Some('-') && w.chars().nth(7) == Some('-') {
                    out.push("DATE".to_owned());
                } else if w.len() == 8 && w.chars().nth(2) == Some(':') {
                    out.push("TIME".to_owned());
                } else if w.starts_with('(')
                    && w.ends_with("s)")
                    && w[1..w.len() - 2].parse::<f64>().is_ok()
                {
                    out.push("(SECS)".to_owned());
                } else if w.starts_with('(')
                    && w.ends_with("s):")
                    && w[1..w.len() - 3].parse::<f64>().is_ok()
                {
                    out.push("(SECS):".to_owned());
                } else {
                    out.push(w.to_owned());
                }
                i += 1;
            }
            out.join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n");
    time.lines()
        .map(|line| match (line.find("took "), line.rfind(" (")) {
            (Some(a), Some(b)) if b > a => format!("{}took DURATION{}", &line[..a], &line[b..]),
            _ => line.to_owned(),
        })
        .map(|line| caller(&line))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `asked by uid 1000 (alice)` depends on who runs the tests: `asked by CALLER`.
fn caller(line: &str) -> String {
    let Some(at) = line.find("asked by uid ") else {
        return line.to_owned();
    };
    let rest = &line[at + "asked by uid ".len()..];
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let mut rest = &rest[digits..];
    if rest.starts_with(" (")
        && let Some(end) = rest.find(')')
    {
        rest = &rest[end + 1..];
    }
    format!("{}asked by CALLER{rest}", &line[..at])
}

fn regex_lite(text: &str, is: impl Fn(&str) -> bool, with: &str) -> String {
    text.split('\n')
        .map(|line| {
            line.split(' ')
                .map(|w| {
                    let core = w.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-');
                    if is(core) {
                        w.replace(core, with)
                    } else {
                        w.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn human_output_matches_the_snapshot() {
    let cli = Cli::start().await;
    let run = cli
        .run(&["rotate", "now", "demo", "--yes", "--grace", "1s"])
        .await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    let got = stable_progress(&redact(&run.stdout, &cli.twin.endpoints.base_url));
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/snapshots/rotate-now.txt"
    );
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(path, &got).unwrap();
    }
    let want = std::fs::read_to_string(path).unwrap_or_default();
    assert_eq!(
        got, want,
        "the human output changed; run with UPDATE_SNAPSHOTS=1 to accept it"
    );
}

#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_process_is_finished_by_rotate_resume() {
    for (point, resume_with_now) in [
        ("intent:regenerate", false),
        ("result:bound#3", false),
        ("intent:wait_until", true),
    ] {
        let cli = Cli::start().await;
        let before = keys_of(&cli.twin.state().await);
        let mut cmd = cli.command(
            &cli.dir.path().join("keyflip.toml"),
            &["rotate", "now", "demo", "--yes", "--grace", "1s"],
        );
        cmd.env("KEYFLIP_FAILPOINT", point);
        let run = cli.run_cmd(cmd).await;
        assert_eq!(run.code, None, "{point}: killed by SIGABRT\n{}", run.stderr);
        assert!(
            run.stderr.contains("aborting after durable write"),
            "{}",
            run.stderr
        );

        let run = if resume_with_now {
            let run = cli
                .run(&["rotate", "now", "demo", "--yes", "--grace", "1s"])
                .await;
            assert!(
                run.stdout.contains("had an unfinished rotation")
                    && run.stdout.contains("resumed instead of starting another"),
                "{}",
                run.stdout
            );
            run
        } else {
            cli.run(&["rotate", "resume", "--output", "json"]).await
        };
        assert_eq!(run.code, Some(0), "{point}: {}\n{}", run.stdout, run.stderr);
        let state = cli.twin.state().await;
        let (key1, key2) = keys_of(&state);
        assert_ne!(key1, before.0, "{point}");
        assert_ne!(key2, before.1, "{point}");
        assert_eq!(
            crate::support::engine::regenerations(&cli.twin).await,
            2,
            "{point}"
        );
        let history = cli.run(&["history", "--output", "json"]).await.json();
        assert_eq!(history[0]["outcome"]["outcome"], "completed", "{point}");
        assert_eq!(
            history.as_array().unwrap().len(),
            1,
            "{point}: one rotation, resumed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_value_is_left_behind_anywhere() {
    let cli = Cli::start().await;
    let mut seen = Vec::new();
    let mut keys = vec![keys_of(&cli.twin.state().await)];
    for args in [
        vec!["-vv", "rotate", "now", "demo", "--yes", "--grace", "1s"],
        vec![
            "-vv", "rotate", "now", "demo", "--yes", "--grace", "1s", "--output", "json",
        ],
        vec!["-vv", "rotate", "now", "demo", "--yes", "--leaked", "both"],
        vec!["-vv", "--log-format", "json", "status"],
        vec!["-vv", "history"],
        vec!["-vv", "rotate", "now", "demo", "--dry-run"],
    ] {
        let run = cli.run(&args).await;
        assert!(matches!(run.code, Some(0)), "{args:?}: {}", run.stderr);
        seen.push(run.stdout);
        seen.push(run.stderr);
        keys.push(keys_of(&cli.twin.state().await));
    }
    assert!(
        seen.iter().any(|s| s.contains("TRACE")),
        "trace logs were captured"
    );
    let mut files = Vec::new();
    for entry in walk(&cli.state_dir()) {
        files.push((entry.display().to_string(), std::fs::read(&entry).unwrap()));
    }
    assert!(files.iter().any(|(p, _)| p.ends_with("journal.db")));
    assert!(
        files.iter().any(|(p, _)| p.ends_with(".md")),
        "an incident report"
    );
    for (key1, key2) in &keys {
        for key in [key1, key2] {
            for text in &seen {
                assert!(!text.contains(key.as_str()), "a key value in the output");
            }
            for (path, bytes) in &files {
                assert!(
                    !bytes.windows(key.len()).any(|w| w == key.as_bytes()),
                    "a key value in {path}"
                );
            }
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
