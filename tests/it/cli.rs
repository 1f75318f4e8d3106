//! The `keyflip` binary: exit codes, JSON that parses, the human output (snapshot with
//! ids, fingerprints, times and ports redacted), real process kills followed by
//! `rotate resume`, and a search of everything a rotation leaves behind for every key
//! the twin ever held.

use keyflip::journal::lock::AccountLock;

use crate::support::binary::Cli;
use crate::support::engine::keys_of;
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
    assert_eq!(status["version"], 1);
    assert_eq!(status["plans"][0]["plan"], "demo");
    assert_eq!(status["plans"][0]["active"], "key2");
    assert_eq!(status["plans"][0]["last_rotation"]["outcome"], "completed");

    let run = cli.run(&["history", "demo", "--output", "json"]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let history = run.json()["rotations"].clone();
    assert_eq!(
        history.as_array().unwrap().len(),
        2,
        "the refusal and the rotation"
    );
    assert_eq!(history[0]["rotation_id"], report["rotation_id"]);
    // Every field once: the outcome does not repeat the report's lists.
    assert_eq!(report["version"], 1);
    assert!(report["regenerated"].is_array() && report["warnings"].is_array());
    assert!(
        report["outcome"].get("regenerated").is_none()
            && report["outcome"].get("warnings").is_none(),
        "{report:#}"
    );

    let run = cli.run(&["rotate", "resume"]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.contains("Nothing to resume"), "{}", run.stdout);
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
        let history = cli.run(&["history", "--output", "json"]).await.json()["rotations"].clone();
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

/// Read-only commands create nothing (issue 12, part 4): on a fresh state directory
/// `status`, `history` and a dry run leave neither a journal nor a fingerprint key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_on_an_empty_state_directory_create_nothing() {
    let cli = Cli::start().await;
    let state = cli.state_dir();
    for args in [
        &["status"][..],
        &["history"][..],
        &["history", "demo", "--output", "json"][..],
        &["rotate", "now", "demo", "--dry-run"][..],
    ] {
        let run = cli.run(args).await;
        assert_eq!(
            run.code,
            Some(0),
            "{args:?}: {}\n{}",
            run.stdout,
            run.stderr
        );
        for file in ["journal.db", "fingerprint.key"] {
            assert!(
                !state.join(file).exists(),
                "{args:?} created {file}: {}",
                run.stdout
            );
        }
    }
    // The first rotation creates them, as it must.
    let run = cli
        .run(&["rotate", "now", "demo", "--yes", "--grace", "0s"])
        .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(state.join("journal.db").exists() && state.join("fingerprint.key").exists());
}

/// One rule finds the plans directory for every command: without `plans_dir` in the
/// file, `$KEYFLIP_PLANS_DIR` is honoured by `plan check`, `status`, `rotate now` and
/// `doctor` alike; with it, the file wins over the variable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_finds_plans_by_the_same_rule() {
    let cli = Cli::start().await;
    let with = cli.dir.path().join("keyflip.toml");
    let text = std::fs::read_to_string(&with).unwrap();
    let plans = cli.dir.path().join("plans");
    let line = format!("plans_dir = \"{}\"\n", plans.display());
    assert!(text.contains(&line), "{text}");
    let without = cli.dir.path().join("no-plans-dir.toml");
    std::fs::write(&without, text.replace(&line, "")).unwrap();
    let elsewhere = cli.dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let plans_env = plans.display().to_string();
    let elsewhere_env = elsewhere.display().to_string();
    for args in [
        vec!["plan", "check"],
        vec!["status"],
        vec!["rotate", "now", "demo", "--dry-run"],
        vec!["doctor", "--plan", "demo"],
    ] {
        let args: Vec<&str> = args.into_iter().chain(["--output", "json"]).collect();
        // The variable, when the file says nothing.
        let mut cmd = cli.command(&without, &args);
        cmd.env("KEYFLIP_PLANS_DIR", &plans_env);
        let run = cli.run_cmd(cmd).await;
        assert_eq!(
            run.code,
            Some(0),
            "{args:?} with KEYFLIP_PLANS_DIR:\n{}{}",
            run.stdout,
            run.stderr
        );
        assert!(run.stdout.contains("demo"), "{args:?}: {}", run.stdout);
        // The file's plans_dir wins over a variable naming an empty directory.
        let mut cmd = cli.command(&with, &args);
        cmd.env("KEYFLIP_PLANS_DIR", &elsewhere_env);
        let run = cli.run_cmd(cmd).await;
        assert_eq!(
            run.code,
            Some(0),
            "{args:?} with plans_dir and KEYFLIP_PLANS_DIR:\n{}{}",
            run.stdout,
            run.stderr
        );
        assert!(run.stdout.contains("demo"), "{args:?}: {}", run.stdout);
        // Neither: the default /etc/keyflip/rotation-plans, which holds no demo plan.
        let run = cli.run_cmd(cli.command(&without, &args)).await;
        assert!(
            run.code != Some(0) || !run.stdout.contains("demo"),
            "{args:?} found the demo plan without a plans directory:\n{}",
            run.stdout
        );
    }
}
