//! The shared write budget: two plans on two storage accounts of one subscription,
//! due at the same instant, rotate concurrently, and their ARM writes together never
//! exceed the budget (here one per second of daemon time). Time only moves when the
//! test moves it, so the count of writes is compared with the seconds that passed.

use std::time::Duration;

use chrono::{TimeDelta, TimeZone as _, Utc};
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

    // Both plans are due at 01:00; from then on the clock moves a second at a time.
    setup.set(Utc.with_ymd_and_hms(2026, 3, 2, 1, 0, 0).unwrap());
    let both_done = |s: &keyflip::daemon::Snapshot| {
        s.plans
            .iter()
            .all(|p| p.last_success.is_some() && p.running.is_none())
    };
    let mut steps = 0u32;
    let mut overlapped = false;
    while !both_done(&daemon.snapshot().await) {
        assert!(
            steps < 600,
            "the rotations do not finish: {:#?}",
            daemon.snapshot().await
        );
        overlapped |= daemon
            .snapshot()
            .await
            .plans
            .iter()
            .all(|p| p.running.is_some());
        let seen = arm_writes(&setup).await.len();
        // Let the daemon use what the current second allows before moving on.
        let _ = tokio::time::timeout(Duration::from_millis(300), async {
            while arm_writes(&setup).await.len() == seen && !both_done(&daemon.snapshot().await) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        if both_done(&daemon.snapshot().await) {
            break;
        }
        setup.advance(TimeDelta::seconds(1));
        steps += 1;
    }
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
