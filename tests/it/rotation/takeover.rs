//! An incident pre-empts whatever is running (issue 12, part 1), through the `keyflip`
//! binary: a rotation stopped by Ctrl-C in its grace period or mid-swap is taken over
//! by `rotate now --leaked`, which either finishes the incident in that rotation (the
//! old key leaked: retired at once, no grace) or winds it down and runs a follow-up
//! incident rotation; the journal says which rotation was taken over, when and by
//! whom. And `rotate resume --grace` shortens a waiting grace, or refuses, never
//! ignoring it.

use serde_json::Value;

use super::ways_out::on_one_working_key;
use crate::support::binary::Cli;
use crate::support::engine::{keys_of, versions};

const GRACE_AN_HOUR: &[&str] = &["rotate", "now", "demo", "--yes", "--grace", "1h"];

/// A swap stopped by Ctrl-C while it waits out an hour's grace: committed, every
/// consumer on key2, key1 not yet retired.
async fn stopped_in_grace() -> (Cli, (String, String)) {
    let cli = Cli::start().await;
    let before = keys_of(&cli.twin.state().await);
    let run = cli.interrupt_at(GRACE_AN_HOUR, "wait until").await;
    assert_eq!(run.code, Some(130), "{}\n{}", run.stdout, run.stderr);
    assert_eq!(on_one_working_key(&cli.twin, "in grace").await, "key2");
    (cli, before)
}

async fn history(cli: &Cli) -> Vec<Value> {
    let run = cli.run(&["history", "demo", "--output", "json"]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    run.json()["rotations"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_for_the_old_key_takes_over_a_rotation_in_grace_and_retires_it_at_once() {
    let (cli, before) = stopped_in_grace().await;
    let started = std::time::Instant::now();
    let run = cli
        .runbook("keyflip rotate now PLAN --leaked KEY", &[("KEY", "key1")])
        .await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "the hour's grace was not waited out"
    );
    for want in [
        "taken over at",
        "incident (incident: key1 leaked)",
        "this rotation handled it, with no grace period",
        "incident report:",
    ] {
        assert!(run.stdout.contains(want), "{want:?} in:\n{}", run.stdout);
    }
    let state = cli.twin.state().await;
    let (key1, key2) = keys_of(&state);
    assert_ne!(key1, before.0, "the leaked key1 is dead");
    assert_eq!(on_one_working_key(&cli.twin, "after").await, "key2");
    assert_eq!(key2, crate::support::engine::consumer_keys(&state)[0].1);
    for secret in ["stdatasci001-key", "stdatasci001-connection-string"] {
        for (version, value, enabled) in versions(&state, secret) {
            assert_eq!(enabled, value != before.0, "{secret}/{version}");
        }
    }
    // One rotation: taken over, with when and by whom; its incident report says so.
    let rotations = history(&cli).await;
    assert_eq!(rotations.len(), 1, "{rotations:#?}");
    let r = &rotations[0];
    assert_eq!(r["outcome"]["outcome"], "completed");
    assert_eq!(r["trigger"]["trigger"], "manual");
    assert_eq!(r["escalation"]["handled_here"], true);
    assert_eq!(r["escalation"]["mode"]["key"], "key1");
    assert!(r["escalation"]["at"].is_string());
    assert!(r["escalation"]["by"]["uid"].is_u64(), "{r:#}");
    let report =
        std::fs::read_to_string(r["incident_report"]["markdown"].as_str().unwrap()).unwrap();
    assert!(report.contains("took over"), "{report}");
    // Every step has its result: no `??` in history, a clean run shows none.
    let text = cli.runbook("keyflip history PLAN", &[]).await;
    assert!(
        !text.stdout.contains("??") && !text.stdout.contains("in doubt"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("taken over at"), "{}", text.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_for_the_new_key_winds_the_rotation_down_and_a_follow_up_rotation_handles_it() {
    let (cli, before) = stopped_in_grace().await;
    let run = cli
        .runbook("keyflip rotate now PLAN --leaked KEY", &[("KEY", "key2")])
        .await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("follows:   rotation"), "{}", run.stdout);
    // Consumers ended on key1, regenerated after the incident was declared; the key2
    // they held (the leaked one) is dead.
    assert_eq!(on_one_working_key(&cli.twin, "after").await, "key1");
    let rotations = history(&cli).await;
    assert_eq!(rotations.len(), 2, "the swap and the follow-up");
    let (follow_up, swap) = (&rotations[0], &rotations[1]);
    assert_eq!(swap["escalation"]["handled_here"], false);
    assert_eq!(swap["outcome"]["outcome"], "completed");
    assert_eq!(follow_up["follows"], swap["rotation_id"]);
    assert_eq!(follow_up["trigger"]["trigger"], "incident");
    assert_eq!(follow_up["mode"]["key"], "key2");
    assert_eq!(follow_up["outcome"]["outcome"], "completed");
    assert!(follow_up["incident_report"]["markdown"].is_string());
    let (key1, _) = keys_of(&cli.twin.state().await);
    assert_ne!(key1, before.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_keys_leaked_mid_swap_roll_the_swap_back_and_a_follow_up_renews_both() {
    let cli = Cli::start().await;
    let before = keys_of(&cli.twin.state().await);
    // Stopped after the first consumer was bound: before commit, nothing resynced.
    let run = cli.interrupt_at(GRACE_AN_HOUR, " bind ").await;
    assert_eq!(run.code, Some(130), "{}\n{}", run.stdout, run.stderr);
    let run = cli
        .runbook("keyflip rotate now PLAN --leaked unknown", &[])
        .await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    let rotations = history(&cli).await;
    assert_eq!(rotations.len(), 2, "{rotations:#?}");
    let swap = &rotations[1];
    assert!(
        matches!(
            swap["outcome"]["outcome"].as_str(),
            Some("rolled_back") | Some("completed")
        ),
        "{swap:#}"
    );
    assert_eq!(swap["escalation"]["handled_here"], false, "{swap:#}");
    assert_eq!(rotations[0]["mode"]["mode"], "leaked_both");
    let (key1, key2) = keys_of(&cli.twin.state().await);
    assert_ne!(key1, before.0);
    assert_ne!(key2, before.1);
    on_one_working_key(&cli.twin, "after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grace_period_is_shortened_by_resume_or_refused_never_ignored() {
    let (cli, before) = stopped_in_grace().await;
    // Longer than the rotation's: refused, nothing changed.
    let run = cli
        .run(&["rotate", "resume", "demo", "--grace", "2h"])
        .await;
    assert_eq!(run.code, Some(2), "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("can only shorten"), "{}", run.stderr);
    // With an incident: refused before anything is read.
    let run = cli
        .run(&[
            "rotate", "now", "demo", "--yes", "--leaked", "key1", "--grace", "0s",
        ])
        .await;
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("--grace does not apply to --leaked"),
        "{}",
        run.stderr
    );
    assert_eq!(
        keys_of(&cli.twin.state().await).0,
        before.0,
        "nothing retired"
    );
    // `rotate now --grace` on the unfinished rotation shortens its grace as well.
    let run = cli
        .run(&[
            "rotate",
            "now",
            "demo",
            "--yes",
            "--grace",
            "0s",
            "--reason",
            "change window closes",
            "--ticket",
            "CHG-7",
        ])
        .await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("resumed"), "{}", run.stdout);
    assert_ne!(keys_of(&cli.twin.state().await).0, before.0, "key1 retired");
    let rotations = history(&cli).await;
    let shortened = &rotations[0]["grace_shortened"][0];
    assert_eq!(shortened["grace_ms"], 0, "{:#}", rotations[0]);
    assert_eq!(shortened["by"]["ticket"], "CHG-7");
    assert_eq!(shortened["by"]["reason"], "change window closes");
    let text = cli.run(&["history", "demo"]).await.stdout;
    assert!(
        text.contains("grace period shortened to 0s at")
            && text.contains("ticket CHG-7: change window closes"),
        "{text}"
    );

    // Nothing unfinished: nothing to shorten, refused.
    let run = cli
        .run(&["rotate", "resume", "demo", "--grace", "0s"])
        .await;
    assert_eq!(run.code, Some(2), "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("nothing to shorten"), "{}", run.stderr);

    // The documented way: resume the plan with no grace left.
    let cli = Cli::start().await;
    let run = cli.interrupt_at(GRACE_AN_HOUR, "wait until").await;
    assert_eq!(run.code, Some(130));
    let run = cli
        .runbook("keyflip rotate resume PLAN --grace 0s", &[])
        .await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert_eq!(on_one_working_key(&cli.twin, "after").await, "key2");
}

/// "The same happens after a crash": a swap killed (SIGKILL, nothing recorded on the
/// way out) while it waits out an hour's grace is taken over by the incident just as
/// after Ctrl-C: the leaked old key retired at once, in the same rotation, the
/// takeover journaled with who asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_takes_over_a_rotation_a_crash_left_in_its_grace() {
    let cli = Cli::start().await;
    let before = keys_of(&cli.twin.state().await);
    let run = cli.kill_at(GRACE_AN_HOUR, "wait until").await;
    assert_eq!(run.code, None, "killed: {}\n{}", run.stdout, run.stderr);
    assert_eq!(
        on_one_working_key(&cli.twin, "crashed in grace").await,
        "key2"
    );
    let started = std::time::Instant::now();
    let run = cli
        .runbook("keyflip rotate now PLAN --leaked KEY", &[("KEY", "key1")])
        .await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "the hour's grace was not waited out"
    );
    for want in ["taken over at", "incident report:"] {
        assert!(run.stdout.contains(want), "{want:?} in:\n{}", run.stdout);
    }
    assert_ne!(
        keys_of(&cli.twin.state().await).0,
        before.0,
        "the leaked key1 is dead"
    );
    assert_eq!(on_one_working_key(&cli.twin, "after").await, "key2");
    let rotations = history(&cli).await;
    assert_eq!(rotations.len(), 1, "{rotations:#?}");
    let r = &rotations[0];
    assert_eq!(r["outcome"]["outcome"], "completed", "{r:#}");
    assert_eq!(r["escalation"]["handled_here"], true, "{r:#}");
    assert_eq!(r["escalation"]["mode"]["key"], "key1");
    assert!(r["escalation"]["by"]["uid"].is_u64(), "{r:#}");
    assert!(r["incident_report"]["markdown"].is_string(), "{r:#}");
}

/// `--revoke-first` on a rotation already moving consumers off the leaked key is not
/// applied (that swap retires the key at once), and the report says so rather than
/// dropping the request silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_first_on_a_swap_moving_off_the_leaked_key_is_not_applied_and_says_so() {
    let (cli, before) = stopped_in_grace().await;
    let run = cli
        .run(&[
            "rotate",
            "now",
            "demo",
            "--yes",
            "--leaked",
            "key1",
            "--revoke-first",
            "--output",
            "json",
        ])
        .await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    let report = run.json();
    let warned = report["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w["message"].as_str())
        .any(|m| m.contains("--revoke-first was not applied"));
    assert!(warned, "{report:#}");
    assert_eq!(report["escalation"]["handled_here"], true, "{report:#}");
    assert_ne!(keys_of(&cli.twin.state().await).0, before.0, "key1 retired");
    assert_eq!(on_one_working_key(&cli.twin, "after").await, "key2");
}
