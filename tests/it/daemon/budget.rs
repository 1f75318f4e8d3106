//! The shared write budget: two plans on two storage accounts of one subscription,
//! due at the same instant, rotate concurrently, and their ARM writes together never
//! exceed the budget (here one per second of daemon time). Time only moves when the
//! test moves it, so the count of writes is compared with the seconds that passed.

use chrono::{TimeZone as _, Utc};
use keyflip::azure::budget::Class;
use keyflip::exit::Exit;

use super::harness::{Consumers, Setup};
use crate::support::twin::{OPERATOR, TestTwin};

fn world_extra() -> String {
    format!(
        "\n[[key_vault.secret]]\nname = \"stexternal002-key\"\nvalue_from = {{ account = \"stexternal002\", key = \"key1\", format = \"raw-key\" }}\n\n[[role_assignment]]\nprincipal = \"{OPERATOR}\"\nrole = \"Storage Account Key Operator Service Role\"\nscope = \"{}\"\n",
        TestTwin::demo_account_id("stexternal002")
    )
}

/// ARM writes the twin has seen: (request log seq, storage account name).
async fn arm_writes(setup: &Setup) -> Vec<(u64, String)> {
    setup
        .twin
        .requests()
        .await
        .into_iter()
        .filter(|e| {
            e["method"] != "GET"
                && e["path"]
                    .as_str()
                    .is_some_and(|p| p.to_ascii_lowercase().starts_with("/subscriptions/"))
        })
        .map(|e| {
            let path = e["path"].as_str().unwrap().to_owned();
            let account = if path.contains("stexternal002") {
                "stexternal002"
            } else {
                "other"
            };
            (e["seq"].as_u64().unwrap(), account.to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_budget_spaces_arm_writes_across_concurrent_plans() {
    let twin = TestTwin::start_with(&world_extra());
    let mut setup = Setup::with_twin(twin, Utc.with_ymd_and_hms(2026, 3, 2, 0, 30, 0).unwrap());
    setup.daemon_settings("[daemon.budget]\narm_writes_per_second = 1\n");
    let settings = "[schedule]\ncron = \"0 * * * *\"\n[rotation]\ngrace = \"0s\"\n[drift]\ninterval = \"7d\"\n";
    setup.write_plan("datasci", &setup.plan_text(Consumers::KeyVault, settings));
    let vault = &setup.twin.endpoints.key_vaults["kv-datasci"].url;
    setup.write_plan(
        "external",
        &format!(
            "storage_account = \"{}\"\n{settings}\n[[key_vault]]\nvault = \"{vault}\"\nsecret = \"stexternal002-key\"\nformat = \"raw-key\"\n",
            TestTwin::demo_account_id("stexternal002")
        ),
    );
    let daemon = setup.start().await;
    daemon.settle().await;
    let before = arm_writes(&setup).await.len();

    // Both plans are due at 01:00; from then on the clock moves whenever the daemon
    // waits for it, at most a second at a time.
    let start = Utc.with_ymd_and_hms(2026, 3, 2, 1, 0, 0).unwrap();
    setup.set(start);
    let both_done = |s: &keyflip::daemon::Snapshot| {
        s.plans
            .iter()
            .all(|p| p.last_success.is_some() && p.running.is_none())
    };
    let mut overlapped = false;
    loop {
        let s = daemon.snapshot().await;
        if both_done(&s) {
            break;
        }
        overlapped |= s.plans.iter().all(|p| p.running.is_some());
        assert!(
            setup.seconds_since(start) < 600,
            "the rotations do not finish: {s:#?}"
        );
        // Let the daemon use what the current second allows before moving on.
        tokio::select! {
            _ = daemon.wait_for("both rotations", both_done) => break,
            () = daemon.step(&setup) => {}
        }
    }
    let steps = setup.seconds_since(start);
    let writes = arm_writes(&setup).await;
    let during = writes.len() - before;
    assert!(overlapped, "the two rotations ran at the same time");
    assert!(during >= 4, "each rotation writes to ARM: {writes:?}");
    assert!(
        during as u32 <= steps + 1,
        "{during} ARM writes in {} seconds of daemon time break a budget of 1 per second",
        steps + 1
    );
    let waits = daemon.handle.budgets().waits();
    let arm = waits.iter().find(|w| w.class == Class::ArmWrite).unwrap();
    assert!(
        arm.count > 0 && !arm.total.is_zero(),
        "writes waited for the budget: {arm:?}"
    );
    let throttled = setup
        .twin
        .requests()
        .await
        .into_iter()
        .filter(|e| e["status"] == 429)
        .count();
    assert_eq!(throttled, 0, "keyflip never tripped throttling");
    let (_, metrics) = daemon.http_get("/metrics").await;
    assert!(
        metrics.contains("keyflip_throttle_waits_total{budget=\"arm_write\"}"),
        "{metrics}"
    );
    for plan in ["datasci", "external"] {
        assert_eq!(
            super::harness::outcomes(&daemon.history(plan).await),
            ["completed"]
        );
    }
    assert_eq!(daemon.stop().await, Exit::Ok);
}

/// The unlisted-consumer check of the daemon's own rotation never waits for the
/// budget: with one ARM write a second, its App Service settings listings (POSTs, which
/// ARM counts as writes) do not fit a quarter of the second the observation's
/// `listKeys` used (daemon time stands still until the test moves it), so they are put
/// off, the rotation goes on, and its report in `history` says what was not checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemons_rotation_puts_off_discovery_reads_and_its_report_says_what_was_not_checked() {
    let mut setup = Setup::new(Utc.with_ymd_and_hms(2026, 3, 2, 0, 30, 0).unwrap());
    setup.daemon_settings("[daemon.budget]\narm_writes_per_second = 1\n");
    let settings = "[schedule]\ncron = \"0 * * * *\"\n[rotation]\ngrace = \"0s\"\n[drift]\ninterval = \"7d\"\n";
    setup.write_plan("datasci", &setup.plan_text(Consumers::KeyVault, settings));
    let daemon = setup.start().await;
    daemon.settle().await;
    setup.set(Utc.with_ymd_and_hms(2026, 3, 2, 1, 0, 0).unwrap());
    daemon.finish_jobs(&setup).await;
    let history = daemon.history("datasci").await;
    assert_eq!(super::harness::outcomes(&history), ["completed"]);
    let warnings = history[0]["outcome"]["warnings"]
        .as_array()
        .unwrap_or_else(|| panic!("{:#}", history[0]));
    let incomplete: Vec<&str> = warnings
        .iter()
        .filter(|w| w["kind"] == "unlisted_check_incomplete")
        .filter_map(|w| w["message"].as_str())
        .collect();
    assert_eq!(incomplete.len(), 1, "{warnings:#?}");
    assert!(
        incomplete[0].contains("func-datasci-ingest (put off"),
        "{}",
        incomplete[0]
    );
    assert!(
        incomplete[0].contains("`keyflip doctor --strict`"),
        "{}",
        incomplete[0]
    );
    assert_eq!(daemon.stop().await, Exit::Ok);
}
