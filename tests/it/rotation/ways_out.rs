//! Every state a rotation can stop in has a way out (issue 12, part 3): for each way
//! a rotation parks (every `Attention` a twin can bring about) and each refusal that
//! leaves consumers split or down, the `keyflip` binary is driven into it against
//! keyflip-twin, then the command `docs/operations.md` ("When things go wrong") names
//! for it is run as written, and the test ends with every consumer on one key that
//! works. Plans here retry once (`retire_attempts = 1`), so each park comes at once.

use serde_json::{Value, json};

use crate::support::binary::{Cli, Run};
use crate::support::engine::{assert_consumers_valid, keys_of, regenerations};
use crate::support::twin::{ACCOUNT, OPERATOR, TestTwin, WORKSPACE};

/// The demo plan retrying a step that cannot roll back once.
async fn one_attempt() -> Cli {
    Cli::start_with_plan(|t| t.replace("retire_attempts = 8", "retire_attempts = 1")).await
}

/// Every consumer holds the same key, and it is one of the account's keys now
/// (`assert_consumers_valid`: a key that works); returns which.
pub(crate) async fn on_one_working_key(twin: &TestTwin, when: &str) -> &'static str {
    let state = twin.state().await;
    let held = assert_consumers_valid(&state, when);
    let (key1, key2) = keys_of(&state);
    let first = &held[0].1;
    for (consumer, key) in &held {
        assert_eq!(
            key, first,
            "{when}: {consumer} is on another key than {}",
            held[0].0
        );
    }
    if *first == key1 {
        "key1"
    } else {
        assert_eq!(*first, key2);
        "key2"
    }
}

/// The consumers do not all hold one working key.
async fn split_or_down(twin: &TestTwin) -> bool {
    let state = twin.state().await;
    let (key1, key2) = keys_of(&state);
    let held = crate::support::engine::consumer_keys(&state);
    held.iter().any(|(_, k)| *k != key1 && *k != key2) || held.iter().any(|(_, k)| *k != held[0].1)
}

/// `rotate now` with `args`, as JSON; asserts the exit code and returns the report.
async fn rotate(cli: &Cli, args: &[&str], exit: i32) -> Value {
    let mut all = vec!["rotate", "now", "demo", "--yes", "--output", "json"];
    all.extend_from_slice(args);
    let run = cli.run(&all).await;
    assert_eq!(run.code, Some(exit), "{}\n{}", run.stdout, run.stderr);
    run.json()
}

fn attention(report: &Value) -> &str {
    report["outcome"]["reason"]["attention"]
        .as_str()
        .unwrap_or("")
}

async fn ok(run: Run) -> Run {
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retire_that_keeps_failing_parks_and_leaked_old_key_revokes_it() {
    let cli = one_attempt().await;
    let stopped = cli
        .interrupt_at(
            &["rotate", "now", "demo", "--yes", "--grace", "1h"],
            "wait until",
        )
        .await;
    assert_eq!(
        stopped.code,
        Some(130),
        "{}\n{}",
        stopped.stdout,
        stopped.stderr
    );
    cli.twin
        .fault(json!({"operation": "storage.regenerateKey", "count": 0,
            "action": {"kind": "status", "status": 500}}))
        .await;
    // The grace is cut short and the retire fails: parked, consumers fine on key2.
    let run = cli
        .runbook("keyflip rotate resume PLAN --grace 0s", &[])
        .await;
    assert_eq!(run.code, Some(5), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("`keyflip rotate now demo --leaked key1` regenerates it"),
        "{}",
        run.stdout
    );
    assert_eq!(on_one_working_key(&cli.twin, "parked").await, "key2");
    let status = cli.runbook("keyflip status", &[]).await;
    assert_eq!(status.code, Some(5), "needs attention: {}", status.stdout);

    cli.twin.clear_faults().await;
    let before = keys_of(&cli.twin.state().await);
    ok(cli
        .runbook("keyflip rotate now PLAN --leaked KEY", &[("KEY", "key1")])
        .await)
    .await;
    assert_eq!(on_one_working_key(&cli.twin, "after").await, "key2");
    let after = keys_of(&cli.twin.state().await);
    assert_ne!(after.0, before.0, "the old key1 is dead");
    assert_eq!(after.1, before.1, "consumers' key2 untouched");
    let status = cli.runbook("keyflip status", &[]).await;
    assert_eq!(status.code, Some(0), "{}", status.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discard_that_keeps_failing_parks_and_leaked_staged_key_revokes_it() {
    let cli = one_attempt().await;
    // The stage goes through, the first Key Vault write fails (a rollback), the
    // discard fails.
    for rule in [
        json!({"operation": "storage.regenerateKey", "count": 1, "action": {"kind": "latency", "ms": 1}}),
        json!({"operation": "storage.regenerateKey", "count": 0, "action": {"kind": "status", "status": 500}}),
        json!({"operation": "keyvault.set", "count": 1, "action": {"kind": "status", "status": 400, "code": "BadParameter"}}),
    ] {
        cli.twin.fault(rule).await;
    }
    let report = rotate(&cli, &[], 5).await;
    assert_eq!(attention(&report), "retries_exhausted", "{report:#}");
    assert_eq!(report["outcome"]["reason"]["purpose"], "discard");
    assert_eq!(on_one_working_key(&cli.twin, "parked").await, "key1");
    cli.twin.clear_faults().await;
    let staged = keys_of(&cli.twin.state().await).1;
    ok(cli
        .runbook("keyflip rotate now PLAN --leaked KEY", &[("KEY", "key2")])
        .await)
    .await;
    assert_eq!(on_one_working_key(&cli.twin, "after").await, "key1");
    assert_ne!(
        keys_of(&cli.twin.state().await).1,
        staged,
        "the staged key is dead"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_that_keeps_failing_parks_and_the_same_incident_finishes_it() {
    let cli = one_attempt().await;
    cli.twin
        .fault(json!({"operation": "storage.regenerateKey", "count": 0,
            "action": {"kind": "status", "status": 503}}))
        .await;
    let report = rotate(&cli, &["--leaked", "key2"], 5).await;
    assert_eq!(
        report["outcome"]["reason"]["purpose"], "revoke",
        "{report:#}"
    );
    cli.twin.clear_faults().await;
    let leaked = keys_of(&cli.twin.state().await).1;
    ok(cli
        .runbook("keyflip rotate now PLAN --leaked KEY", &[("KEY", "key2")])
        .await)
    .await;
    assert_eq!(on_one_working_key(&cli.twin, "after").await, "key1");
    assert_ne!(keys_of(&cli.twin.state().await).1, leaked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_down_after_revoke_first_are_brought_back_by_adopt() {
    let cli = one_attempt().await;
    cli.twin
        .fault(json!({"operation": "keyvault.set", "count": 0,
            "action": {"kind": "status", "status": 403, "code": "Forbidden"}}))
        .await;
    let report = rotate(&cli, &["--leaked", "key1", "--revoke-first"], 5).await;
    assert_eq!(attention(&report), "consumers_not_moved", "{report:#}");
    assert!(
        split_or_down(&cli.twin).await,
        "the Key Vault secrets hold the dead key"
    );
    cli.twin.clear_faults().await;
    ok(cli.runbook("keyflip rotate now PLAN --adopt", &[]).await).await;
    assert_eq!(on_one_working_key(&cli.twin, "after").await, "key1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_the_data_plane_rejects_parks_and_adopt_moves_everyone_once_it_works() {
    let cli = Cli::start_with_plan(|t| {
        t.replace("retire_attempts = 8", "retire_attempts = 1")
            .replace("verify_budget = \"30s\"", "verify_budget = \"1s\"")
    })
    .await;
    // A new key is refused on the data plane for a while (longer than the 1 s
    // verification budget); the old standby works.
    const ACCEPTED_AFTER: std::time::Duration = std::time::Duration::from_secs(10);
    cli.twin
        .settings(json!({"propagation_delay_secs": ACCEPTED_AFTER.as_secs_f64()}))
        .await;
    let revoked = std::time::Instant::now();
    let report = rotate(&cli, &["--leaked", "key1", "--revoke-first"], 5).await;
    assert_eq!(attention(&report), "key_not_accepted", "{report:#}");
    assert!(split_or_down(&cli.twin).await);
    // While key1 is still refused, adopting it changes nothing.
    let run = cli.runbook("keyflip rotate now PLAN --adopt", &[]).await;
    assert_eq!(
        run.code,
        Some(4),
        "rolled back, nothing moved: {}",
        run.stdout
    );
    // The ML workspace resyncs to the newest key (key1), so key2 cannot be adopted.
    let run = cli
        .runbook("keyflip rotate now PLAN --adopt KEY", &[("KEY", "key2")])
        .await;
    assert_eq!(run.code, Some(3), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("resync takes the account's newest key, key1"),
        "{}",
        run.stdout
    );
    // The data plane takes the fresh key1 now (the revoke came a little after the
    // command started: a margin).
    let margin = std::time::Duration::from_secs(3);
    tokio::time::sleep((ACCEPTED_AFTER + margin).saturating_sub(revoked.elapsed())).await;
    ok(cli.runbook("keyflip rotate now PLAN --adopt", &[]).await).await;
    assert_eq!(on_one_working_key(&cli.twin, "after").await, "key1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_that_keeps_failing_parks_and_adopt_resyncs_the_workspace() {
    let cli = one_attempt().await;
    cli.twin
        .fault(json!({"operation": "ml.workspace.resyncKeys", "count": 0,
            "action": {"kind": "lro_fail", "code": "InternalServerError"}}))
        .await;
    let report = rotate(&cli, &["--grace", "0s"], 5).await;
    assert_eq!(attention(&report), "resync_failed", "{report:#}");
    assert!(
        split_or_down(&cli.twin).await,
        "the workspace is on key1, the rest on key2"
    );
    cli.twin.clear_faults().await;
    let run = ok(cli.runbook("keyflip rotate now PLAN --adopt", &[]).await).await;
    assert!(
        run.stdout.contains("every consumer moves to key2"),
        "{}",
        run.stdout
    );
    assert_eq!(on_one_working_key(&cli.twin, "after").await, "key2");
    assert_eq!(
        regenerations(&cli.twin).await,
        1,
        "adopting regenerates nothing"
    );
    // And the rotation the park's advice names next works from there.
    ok(cli.runbook("keyflip rotate now PLAN", &[]).await).await;
    assert_eq!(on_one_working_key(&cli.twin, "rotated").await, "key1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_that_cannot_finish_parks_and_adopt_reunites_the_consumers() {
    let cli = one_attempt().await;
    for rule in [
        // Both forward Key Vault writes go through; every later one (the binds back)
        // fails. A datastore's forward write fails once: the rollback.
        json!({"operation": "keyvault.set", "count": 2, "action": {"kind": "latency", "ms": 1}}),
        json!({"operation": "keyvault.set", "count": 0, "action": {"kind": "status", "status": 403, "code": "Forbidden"}}),
        json!({"operation": "ml.datastore.put", "target": "training_data", "count": 1,
            "action": {"kind": "status", "status": 400, "code": "UserError"}}),
    ] {
        cli.twin.fault(rule).await;
    }
    let report = rotate(&cli, &[], 5).await;
    assert_eq!(attention(&report), "rollback_incomplete", "{report:#}");
    assert!(
        split_or_down(&cli.twin).await,
        "Key Vault on key2, the rest back on key1"
    );
    cli.twin.clear_faults().await;
    ok(cli.runbook("keyflip rotate now PLAN --adopt", &[]).await).await;
    assert_eq!(on_one_working_key(&cli.twin, "after").await, "key2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_that_rolls_back_parks_and_the_same_incident_finishes_it() {
    let cli = one_attempt().await;
    cli.twin
        .fault(
            json!({"operation": "ml.datastore.put", "target": "training_data", "count": 1,
            "action": {"kind": "status", "status": 400, "code": "UserError"}}),
        )
        .await;
    let report = rotate(&cli, &["--leaked", "key1"], 5).await;
    assert_eq!(attention(&report), "leaked_key_in_use", "{report:#}");
    assert_eq!(on_one_working_key(&cli.twin, "parked").await, "key1");
    let leaked = keys_of(&cli.twin.state().await).0;
    ok(cli
        .runbook("keyflip rotate now PLAN --leaked KEY", &[("KEY", "key1")])
        .await)
    .await;
    assert_eq!(on_one_working_key(&cli.twin, "after").await, "key2");
    assert_ne!(keys_of(&cli.twin.state().await).0, leaked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adopt_that_cannot_move_a_consumer_parks_and_runs_again_once_fixed() {
    let cli = one_attempt().await;
    cli.twin.regenerate_behind_our_back(ACCOUNT, "key1").await;
    cli.twin
        .fault(json!({"operation": "databricks.put", "count": 0,
            "action": {"kind": "status", "status": 403, "code": "PERMISSION_DENIED"}}))
        .await;
    let run = cli.runbook("keyflip rotate now PLAN --adopt", &[]).await;
    assert_eq!(run.code, Some(5), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("`keyflip rotate now demo --adopt` again"),
        "{}",
        run.stdout
    );
    cli.twin.clear_faults().await;
    ok(cli.runbook("keyflip rotate now PLAN --adopt", &[]).await).await;
    assert_eq!(on_one_working_key(&cli.twin, "after").await, "key1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_changed_while_a_rotation_was_stopped_parks_on_resume_and_adopt_follows_azure() {
    let cli = Cli::start().await;
    let stopped = cli
        .interrupt_at(
            &["rotate", "now", "demo", "--yes", "--grace", "1h"],
            "wait until",
        )
        .await;
    assert_eq!(stopped.code, Some(130), "{}", stopped.stderr);
    // Someone regenerates key2, which every consumer was just moved to.
    cli.twin.regenerate_behind_our_back(ACCOUNT, "key2").await;
    let run = cli.runbook("keyflip rotate resume PLAN", &[]).await;
    assert_eq!(run.code, Some(5), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("changed outside keyflip"),
        "{}",
        run.stdout
    );
    assert!(split_or_down(&cli.twin).await);
    let history = cli.runbook("keyflip history PLAN", &[]).await;
    assert!(
        history.stdout.contains("NEEDS ATTENTION") || history.stdout.contains("needs attention"),
        "{}",
        history.stdout
    );
    ok(cli.runbook("keyflip rotate now PLAN --adopt", &[]).await).await;
    assert_eq!(on_one_working_key(&cli.twin, "after").await, "key2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_split_across_keys_are_refused_then_adopted() {
    let cli = Cli::start().await;
    let (_, key2) = cli.twin.keys(ACCOUNT).await;
    cli.twin
        .azure(OPERATOR)
        .set_ml_datastore_key(
            &cli.twin.workspace_id(WORKSPACE),
            "feature_snapshots",
            &keyflip::secret::StorageKey::new(key2),
        )
        .await
        .unwrap();
    let dry = cli.runbook("keyflip rotate now PLAN --dry-run", &[]).await;
    assert_eq!(dry.code, Some(3), "{}", dry.stdout);
    assert!(
        dry.stdout.contains("`keyflip rotate now demo --adopt`"),
        "{}",
        dry.stdout
    );
    ok(cli.runbook("keyflip rotate now PLAN --adopt", &[]).await).await;
    assert_eq!(on_one_working_key(&cli.twin, "after").await, "key1");
    assert_eq!(regenerations(&cli.twin).await, 0);
}

/// `--revoke-first` reads the consumers only after the revoke, so consumers split
/// across keys can no longer refuse it: the leaked key dies, the rotation parks naming
/// the split and `--adopt`, and that brings everyone onto one working key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_consumers_found_after_a_revoke_first_park_then_adopt_reunites_them() {
    let cli = Cli::start().await;
    let (key1, key2) = cli.twin.keys(ACCOUNT).await;
    cli.twin
        .azure(OPERATOR)
        .set_ml_datastore_key(
            &cli.twin.workspace_id(WORKSPACE),
            "feature_snapshots",
            &keyflip::secret::StorageKey::new(key2),
        )
        .await
        .unwrap();
    let report = rotate(&cli, &["--leaked", "key1", "--revoke-first"], 5).await;
    assert_eq!(attention(&report), "not_moved_after_revoke", "{report:#}");
    assert_eq!(
        report["outcome"]["reason"]["reasons"][0]["reason"], "consumers_split",
        "{report:#}"
    );
    assert_eq!(
        regenerations(&cli.twin).await,
        1,
        "the revoke, nothing else"
    );
    assert_ne!(
        cli.twin.keys(ACCOUNT).await.0,
        key1,
        "the leaked key1 is dead"
    );
    assert!(split_or_down(&cli.twin).await);
    ok(cli.runbook("keyflip rotate now PLAN --adopt", &[]).await).await;
    assert_eq!(on_one_working_key(&cli.twin, "after").await, "key1");
    assert_eq!(
        regenerations(&cli.twin).await,
        1,
        "adopting regenerates nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_consumer_key_known_is_refused_then_adopted() {
    // Only the Databricks secret, which keyflip never wrote and cannot read back.
    let cli = Cli::start_with_plan(|t| {
        let start = t.find("[[key_vault]]").unwrap();
        let end = t.find("[[databricks]]").unwrap();
        let after = t.find("[[app_service]]").unwrap();
        let drift = t.find("[drift]").unwrap();
        format!("{}{}{}", &t[..start], &t[end..after], &t[drift..])
    })
    .await;
    let report = rotate(&cli, &[], 3).await;
    assert_eq!(
        report["outcome"]["reasons"][0]["reason"], "no_consumer_key_known",
        "{report:#}"
    );
    ok(cli.runbook("keyflip rotate now PLAN --adopt", &[]).await).await;
    let state = cli.twin.state().await;
    let dbx = crate::support::engine::consumer_keys(&state)
        .into_iter()
        .find(|(c, _)| c == "databricks")
        .unwrap()
        .1;
    assert_eq!(dbx, keys_of(&state).0, "written the key adopted");
    // Now keyflip knows what it holds, and rotates.
    let report = rotate(&cli, &["--grace", "0s"], 0).await;
    assert_eq!(report["outcome"]["outcome"], "completed", "{report:#}");
}

/// Azure's limit of 15 tags on a Key Vault secret (issue 12, part 5), enforced before
/// the point of no return: 12 tags of the plan's plus keyflip's own 3 rotate (the twin
/// refuses a 16th as Azure does, so one more of keyflip's own would roll back); 13 are
/// refused by `plan check` and by `rotate now` before anything is read or regenerated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_vault_tags_past_azures_limit_are_refused_before_any_key_changes() {
    let with_tags = |n: usize| {
        move |t: String| {
            let tags: Vec<String> = (0..n).map(|i| format!("team{i:02} = \"x\"")).collect();
            t.replacen(
                "format = \"raw-key\"\n",
                &format!("format = \"raw-key\"\ntags = {{ {} }}\n", tags.join(", ")),
                1,
            )
        }
    };
    let cli = Cli::start_with_plan(with_tags(12)).await;
    let report = rotate(&cli, &["--grace", "0s"], 0).await;
    assert_eq!(report["outcome"]["outcome"], "completed", "{report:#}");

    let cli = Cli::start_with_plan(with_tags(13)).await;
    let check = cli.run(&["plan", "check"]).await;
    assert_ne!(check.code, Some(0), "{}", check.stdout);
    let said = check.stdout.clone() + &check.stderr;
    assert!(
        said.contains("13 tags, but Key Vault allows at most 15 on a secret"),
        "{said}"
    );
    let run = cli.run(&["rotate", "now", "demo", "--yes"]).await;
    assert_eq!(run.code, Some(2), "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("at most 15"), "{}", run.stderr);
    assert_eq!(regenerations(&cli.twin).await, 0, "nothing was regenerated");
}

/// "After a crash, a kill or Ctrl-C": a swap stopped halfway through binding (some
/// consumers on the staged key, some not, nothing committed) is finished by either
/// documented command, as the same rotation: every consumer on the new key, the old
/// one retired, one rotation in history with no step left in doubt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_stopped_mid_bind_is_finished_by_resume_or_by_rotate_now() {
    for command in ["keyflip rotate resume PLAN", "keyflip rotate now PLAN"] {
        let cli = Cli::start().await;
        let before = keys_of(&cli.twin.state().await);
        let stopped = cli
            .interrupt_at(
                &["rotate", "now", "demo", "--yes", "--grace", "0s"],
                " bind ",
            )
            .await;
        assert_eq!(
            stopped.code,
            Some(130),
            "{}\n{}",
            stopped.stdout,
            stopped.stderr
        );
        let status = cli.run(&["status"]).await;
        assert!(
            status.stdout.contains("unfinished"),
            "{command}: {}",
            status.stdout
        );
        let run = ok(cli.runbook(command, &[]).await).await;
        if command.contains("now") {
            assert!(
                run.stdout
                    .contains("it was resumed instead of starting another"),
                "{}",
                run.stdout
            );
        }
        assert_eq!(on_one_working_key(&cli.twin, command).await, "key2");
        let after = keys_of(&cli.twin.state().await);
        assert_ne!(after.0, before.0, "{command}: the old key1 was retired");
        assert_ne!(after.1, before.1, "{command}: key2 was staged");
        let history = cli.run(&["history", "demo", "--output", "json"]).await;
        let rotations = history.json()["rotations"].as_array().unwrap().clone();
        assert_eq!(rotations.len(), 1, "{command}: {rotations:#?}");
        assert_eq!(rotations[0]["outcome"]["outcome"], "completed");
        let text = cli.run(&["history", "demo"]).await.stdout;
        assert!(!text.contains("??") && !text.contains("in doubt"), "{text}");
        let status = cli.runbook("keyflip status", &[]).await;
        assert_eq!(status.code, Some(0), "{}", status.stdout);
    }
}

/// The other way out of `key_not_accepted` the table names: without an ML workspace
/// to resync (its resync would take the newest key, the refused one), every consumer
/// moves at once to the other key, which the revoke left as it was, while the revoked key's
/// fresh value is still refused on the data plane. Nothing more is regenerated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_the_data_plane_rejects_parks_and_without_a_workspace_adopt_key_takes_the_other()
 {
    let cli = Cli::start_with_plan(|t| {
        t.replace("retire_attempts = 8", "retire_attempts = 1")
            .replace("verify_budget = \"30s\"", "verify_budget = \"1s\"")
            .replace("resync = true", "resync = false")
    })
    .await;
    // A new key is refused on the data plane for longer than the test runs.
    cli.twin
        .settings(json!({"propagation_delay_secs": 3600.0}))
        .await;
    let report = rotate(&cli, &["--leaked", "key1", "--revoke-first"], 5).await;
    assert_eq!(attention(&report), "key_not_accepted", "{report:#}");
    assert!(split_or_down(&cli.twin).await);
    assert_eq!(regenerations(&cli.twin).await, 1, "the revoke");
    ok(cli
        .runbook("keyflip rotate now PLAN --adopt KEY", &[("KEY", "key2")])
        .await)
    .await;
    // Every consumer of the plan on key2, which works; the workspace's own cached key
    // is not the plan's to move (`resync = false`).
    let state = cli.twin.state().await;
    let (_, key2) = keys_of(&state);
    let held = crate::support::engine::consumer_keys(&state);
    assert_eq!(
        held.len(),
        10,
        "{:?}",
        held.iter().map(|h| &h.0).collect::<Vec<_>>()
    );
    for (consumer, key) in held.iter().filter(|(c, _)| c != "workspace") {
        assert!(*key == key2, "{consumer} is not on key2");
    }
    assert_eq!(
        regenerations(&cli.twin).await,
        1,
        "adopting regenerates nothing"
    );
}
