//! Scheduling against the twin on a manual clock: cron inside a window, a missed
//! occurrence run once after downtime, and a DST fall-back night without a double
//! rotation.

use chrono::{DateTime, TimeDelta, TimeZone as _, Utc};
use keyflip::exit::Exit;

use super::harness::{Consumers, Daemon, Setup, outcomes};

fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
}

/// Lets the rotation the clock just triggered finish; the plan then has `n`.
async fn completed(setup: &Setup, daemon: &Daemon, plan: &str, n: usize) -> Vec<String> {
    daemon.finish_jobs(setup).await;
    let kinds = outcomes(&daemon.history(plan).await);
    assert_eq!(kinds.len(), n, "{kinds:?}");
    kinds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_plan_fires_on_schedule_inside_its_window() {
    let setup = Setup::new(at(2026, 3, 2, 0, 30));
    let settings = "[schedule]\ncron = \"0 * * * *\"\ntimezone = \"UTC\"\nwindow = { start = \"02:00\", end = \"04:00\" }\n[rotation]\ngrace = \"0s\"\n[drift]\ninterval = \"7d\"\n";
    setup.write_plan("demo", &setup.plan_text(Consumers::All, settings));
    let daemon = setup.start().await;
    let s = daemon.settle().await;
    assert_eq!(
        s.plan("demo").unwrap().next_due,
        Some(at(2026, 3, 2, 2, 0)),
        "01:00 is outside the window"
    );

    setup.set(at(2026, 3, 2, 1, 0));
    daemon.settle().await;
    assert!(
        daemon.history("demo").await.is_empty(),
        "no rotation outside the window"
    );

    setup.set(at(2026, 3, 2, 2, 0));
    assert_eq!(completed(&setup, &daemon, "demo", 1).await, ["completed"]);
    let history = daemon.history("demo").await;
    // The journal's start is when the engine recorded it, after the first writes the
    // budget let through; the daemon's is when it decided.
    assert!(
        history[0]["started_at"]
            .as_str()
            .unwrap()
            .starts_with("2026-03-02T02:00:"),
        "{}",
        history[0]["started_at"]
    );
    // Journaled as the schedule's doing, with nobody asking (issue 12, part 4).
    assert_eq!(
        history[0]["trigger"]["trigger"], "schedule",
        "{:#}",
        history[0]
    );
    assert!(history[0]["requested_by"].is_null(), "{:#}", history[0]);
    let s = daemon.settle().await;
    let p = s.plan("demo").unwrap();
    assert_eq!(p.last_started, Some(at(2026, 3, 2, 2, 0)));
    assert_eq!(p.next_due, Some(at(2026, 3, 2, 3, 0)));

    // Every consumer of the demo world followed: the twin's Key Vault, datastores,
    // workspace cache and Databricks secret all hold the new active key.
    let state = setup.twin.state().await;
    let (key1, key2) = setup.twin.keys("stdatasci001").await;
    let kv = state["key_vaults"]["kv-datasci"]["secrets"]["stdatasci001-key"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(kv == key1 || kv == key2);
    let ws = &state["ml_workspaces"]["mlw-datasci"];
    assert_eq!(ws["userStorageKey"].as_str().unwrap(), kv);
    assert_eq!(
        ws["datastores"]["training_data"]["key"].as_str().unwrap(),
        kv
    );
    let dbx = &state["databricks_workspaces"]["dbw-datasci"]["scopes"]["datasci"]["secrets"]["stdatasci001-key"];
    assert_eq!(dbx["string_value"].as_str().unwrap(), kv);

    setup.set(at(2026, 3, 2, 3, 0));
    completed(&setup, &daemon, "demo", 2).await;
    let s = daemon.settle().await;
    assert_eq!(
        s.plan("demo").unwrap().next_due,
        Some(at(2026, 3, 3, 2, 0)),
        "04:00 is the window's end"
    );

    setup.set(at(2026, 3, 2, 4, 0));
    daemon.settle().await;
    assert_eq!(daemon.history("demo").await.len(), 2);
    assert_eq!(daemon.stop().await, Exit::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_rotation_runs_once_after_downtime() {
    let setup = Setup::new(at(2026, 3, 2, 0, 30));
    let settings = "[schedule]\ncron = \"0 * * * *\"\n[rotation]\ngrace = \"0s\"\n[drift]\ninterval = \"7d\"\n";
    setup.write_plan("hourly", &setup.plan_text(Consumers::KeyVault, settings));
    let daemon = setup.start().await;
    setup.set(at(2026, 3, 2, 1, 0));
    completed(&setup, &daemon, "hourly", 1).await;
    assert_eq!(daemon.stop().await, Exit::Ok);

    // Down from 01:00 to 05:30: the 02:00, 03:00, 04:00 and 05:00 occurrences pass.
    setup.set(at(2026, 3, 2, 5, 30));
    let daemon = setup.start().await;
    completed(&setup, &daemon, "hourly", 2).await;
    let history = daemon.history("hourly").await;
    assert_eq!(
        history[0]["started_at"], "2026-03-02T05:30:00Z",
        "the missed rotation runs at start"
    );
    let s = daemon.settle().await;
    assert_eq!(
        s.plan("hourly").unwrap().next_due,
        Some(at(2026, 3, 2, 6, 0)),
        "and only once"
    );
    assert_eq!(daemon.history("hourly").await.len(), 2);

    setup.set(at(2026, 3, 2, 6, 0));
    completed(&setup, &daemon, "hourly", 3).await;
    assert_eq!(daemon.stop().await, Exit::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dst_fall_back_night_rotates_once() {
    // 2026-10-25 in Berlin: 03:00 CEST becomes 02:00 CET, so 02:30 happens twice
    // (00:30Z and 01:30Z).
    let setup = Setup::new(at(2026, 10, 24, 22, 0));
    let settings = "[schedule]\ncron = \"30 2 * * *\"\ntimezone = \"Europe/Berlin\"\n[rotation]\ngrace = \"0s\"\n[drift]\ninterval = \"7d\"\n";
    setup.write_plan("nightly", &setup.plan_text(Consumers::KeyVault, settings));
    let daemon = setup.start().await;
    let s = daemon.settle().await;
    assert_eq!(
        s.plan("nightly").unwrap().next_due,
        Some(at(2026, 10, 25, 0, 30))
    );
    let mut t = at(2026, 10, 24, 22, 0);
    while t < at(2026, 10, 25, 5, 0) {
        t += TimeDelta::minutes(30);
        setup.set(t);
        daemon.finish_jobs(&setup).await;
    }
    let history = daemon.history("nightly").await;
    assert_eq!(
        outcomes(&history),
        ["completed"],
        "one rotation across the repeated hour"
    );
    assert_eq!(history[0]["started_at"], "2026-10-25T00:30:00Z");
    let s = daemon.settle().await;
    assert_eq!(
        s.plan("nightly").unwrap().next_due,
        Some(at(2026, 10, 26, 1, 30)),
        "next night, 02:30 CET"
    );
    assert_eq!(daemon.stop().await, Exit::Ok);
}
