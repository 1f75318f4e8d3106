//! A key regenerated outside keyflip (the portal's Regenerate button) is an outage
//! with one way out (issue 12, part 2): every refusal names `rotate now --adopt`, and
//! that one command moves every consumer to a key that works now, as one rotation in
//! history, regenerating nothing.

use super::ways_out::on_one_working_key;
use crate::support::binary::Cli;
use crate::support::engine::{keys_of, regenerations};
use crate::support::twin::ACCOUNT;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_down_after_an_outside_regeneration_are_refused_with_adopt_named_then_adopted() {
    let cli = Cli::start().await;
    let outside = cli.twin.regenerate_behind_our_back(ACCOUNT, "key1").await;
    // Every way in refuses, changes nothing, and names the way out.
    for args in [
        &["rotate", "now", "demo", "--yes"][..],
        &["rotate", "now", "demo", "--yes", "--leaked", "key1"][..],
    ] {
        let run = cli.run(args).await;
        assert_eq!(
            run.code,
            Some(3),
            "{args:?}: {}\n{}",
            run.stdout,
            run.stderr
        );
        assert!(
            run.stdout.contains("so it is down")
                && run.stdout.contains("`keyflip rotate now demo --adopt`"),
            "{args:?}: {}",
            run.stdout
        );
    }
    let run = cli
        .runbook("keyflip rotate now PLAN --leaked unknown", &[])
        .await;
    assert_eq!(run.code, Some(3), "{}", run.stdout);
    assert!(run.stdout.contains("--adopt"), "{}", run.stdout);
    assert_eq!(regenerations(&cli.twin).await, 0, "nothing was changed");

    let run = cli.runbook("keyflip rotate now PLAN --adopt", &[]).await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert_eq!(on_one_working_key(&cli.twin, "adopted").await, "key1");
    assert_eq!(
        keys_of(&cli.twin.state().await).0,
        outside,
        "the key that works now"
    );
    assert_eq!(
        regenerations(&cli.twin).await,
        0,
        "adopting regenerates nothing"
    );
    let history = cli
        .run(&["history", "demo", "--output", "json"])
        .await
        .json();
    let adopted: Vec<_> = history["rotations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["trigger"]["trigger"] == "adopt")
        .collect();
    assert_eq!(adopted.len(), 1, "one rotation in history: {history:#}");
    assert_eq!(adopted[0]["outcome"]["outcome"], "completed");
    assert_eq!(adopted[0]["decision"]["route"]["route"], "adopt");
    assert!(adopted[0]["requested_by"]["uid"].is_u64());

    // From one working key every rotation works again, an incident included.
    let run = cli
        .runbook("keyflip rotate now PLAN --leaked unknown", &[])
        .await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    on_one_working_key(&cli.twin, "after the incident").await;
}
