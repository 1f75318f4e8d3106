//! Regression tests for the daemon at fleet scale (issue 9), each on a manual clock
//! against the twin: a plan due by `max_key_age` rotates once, not in a loop; a
//! rotation waiting out its grace holds no concurrency slot; start-up checks are spread
//! over the drift interval, a failed one is retried soon, and a check that finds
//! nothing changed spends no ARM write; an incident goes ahead of queued routine work.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone as _, Timelike as _, Utc};
use keyflip::clock::Clock as _;
use keyflip::daemon::control::protocol::{Answer, Request};
use keyflip::exit::Exit;
use keyflip::key::KeyName;
use keyflip::rotation::machine::Mode;
use serde_json::{Value, json};

use super::harness::{Daemon, Setup, fleet_account, fleet_world, outcomes};
use crate::support::twin::TestTwin;

fn at(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, h, m, 0).unwrap()
}

/// Successful `regenerateKey` calls on `account` in the twin's log.
async fn regenerations(setup: &Setup, account: &str) -> usize {
    setup
        .twin
        .requests_for("storage.regenerateKey")
        .await
        .iter()
        .filter(|e| e["status"] == 200 && names(e, account))
        .count()
}

/// Whether a logged request is about `account`.
fn names(entry: &Value, account: &str) -> bool {
    entry["path"].as_str().is_some_and(|p| {
        p.to_ascii_lowercase()
            .contains(&format!("/storageaccounts/{account}/"))
    })
}

/// ARM calls other than GET in the twin's log.
async fn arm_writes(setup: &Setup) -> usize {
    setup
        .twin
        .requests()
        .await
        .iter()
        .filter(|e| {
            e["method"] != "GET"
                && e["path"]
                    .as_str()
                    .is_some_and(|p| p.to_ascii_lowercase().starts_with("/subscriptions/"))
        })
        .count()
}

/// Moves the clock whenever the daemon waits for it (the write budget counts daemon
/// seconds) until `done` holds; the seconds of daemon time it took, rounded up.
async fn step_until<F, Fut>(setup: &Setup, daemon: &Daemon, limit: u32, what: &str, done: F) -> u32
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = setup.clock.now();
    loop {
        if done().await {
            return setup.seconds_since(start);
        }
        assert!(
            setup.seconds_since(start) <= limit,
            "{what}: not within {limit} seconds of daemon time"
        );
        // Look at `done` again every 25 ms while the daemon works.
        tokio::select! {
            () = daemon.step(setup) => {}
            () = async {
                while !done().await {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            } => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_due_by_key_age_rotates_once_not_in_a_loop() {
    // The manual clock starts at the twin's own time, so the daemon's key ages agree
    // with the keyCreationTime the twin writes when it regenerates a key.
    let now = Utc::now().with_nanosecond(0).unwrap();
    let twin = TestTwin::start_with(&fleet_world(1, Some(now - TimeDelta::hours(2))));
    let setup = Setup::with_twin(twin, now);
    let settings = "[schedule]\nmax_key_age = \"1h\"\n[rotation]\ngrace = \"0s\"\n[drift]\ninterval = \"7d\"\n";
    setup.write_plan("aged", &setup.fleet_plan_text(0, settings));
    let account = fleet_account(0);
    let daemon = setup.start().await;

    // The first check finds both keys two hours old: one rotation, and then the new
    // active key's age counts, so nothing is due for an hour.
    step_until(&setup, &daemon, 120, "the first rotation", || async {
        regenerations(&setup, &account).await >= 2
    })
    .await;
    daemon.finish_jobs(&setup).await;
    for _ in 0..5 {
        setup.advance(TimeDelta::seconds(10));
        daemon.settle().await;
    }
    let history = daemon.history("aged").await;
    assert_eq!(outcomes(&history), ["completed"]);
    // Journaled as the key age's doing, with nobody asking (issue 12, part 4).
    assert_eq!(
        history[0]["trigger"]["trigger"], "key_age",
        "{:#}",
        history[0]
    );
    assert!(history[0]["requested_by"].is_null(), "{:#}", history[0]);
    assert_eq!(
        regenerations(&setup, &account).await,
        2,
        "stage and retire, once"
    );
    let s = daemon.settle().await;
    let p = s.plan("aged").unwrap();
    let next = p.next_due.expect("a next rotation by key age");
    assert!(
        next > now + TimeDelta::minutes(55) && next < now + TimeDelta::minutes(65),
        "due again an hour after the new key's creation, not now: {next} ({:?})",
        p.due_reason
    );

    // Nothing more for the rest of the hour. (The twin's clock does not follow the
    // manual one, and its tokens live an hour, so the test stops short of it.)
    for _ in 0..5 {
        setup.advance(TimeDelta::minutes(10));
        daemon.settle().await;
    }
    assert_eq!(outcomes(&daemon.history("aged").await), ["completed"]);
    assert_eq!(regenerations(&setup, &account).await, 2);
    assert_eq!(daemon.stop().await, Exit::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotations_waiting_out_their_grace_hold_no_concurrency_slot() {
    let twin = TestTwin::start_with(&fleet_world(4, None));
    let mut setup = Setup::with_twin(twin, at(0, 30));
    setup.daemon_settings("max_concurrent_rotations = 2\n");
    let settings = "[schedule]\ncron = \"0 1 * * *\"\n[rotation]\ngrace = \"1h\"\n[drift]\ninterval = \"7d\"\n";
    for i in 0..4 {
        setup.write_plan(&format!("p{i}"), &setup.fleet_plan_text(i, settings));
    }
    let daemon = setup.start().await;
    daemon.settle().await;

    // All four are due at 01:00 and two may work at once. Each swaps its consumers and
    // then waits an hour before retiring the old key: while they wait, the other two
    // start. All four stage their standby key within minutes, not after an hour.
    setup.set(at(1, 0));
    let staged = || async {
        let mut n = 0;
        for i in 0..4 {
            if regenerations(&setup, &fleet_account(i)).await >= 1 {
                n += 1;
            }
        }
        n
    };
    step_until(
        &setup,
        &daemon,
        300,
        "all four to stage their standby key",
        || async {
            let s = daemon.snapshot().await;
            let working = s
                .plans
                .iter()
                .filter(|p| {
                    p.running
                        .as_ref()
                        .is_some_and(|a| a.waiting_until.is_none())
                })
                .count();
            assert!(working <= 2, "at most two work at once: {s:#?}");
            staged().await == 4
        },
    )
    .await;
    // The last two still verify their consumers, which spends ARM writes: daemon time
    // goes on, so the shared write budget refills, and two still work at most.
    step_until(
        &setup,
        &daemon,
        300,
        "all four to wait out their grace",
        || async {
            let s = daemon.snapshot().await;
            let working = s
                .plans
                .iter()
                .filter(|p| {
                    p.running
                        .as_ref()
                        .is_some_and(|a| a.waiting_until.is_none())
                })
                .count();
            assert!(working <= 2, "at most two work at once: {s:#?}");
            s.plans.iter().all(|p| {
                p.running
                    .as_ref()
                    .is_some_and(|a| a.waiting_until.is_some())
            })
        },
    )
    .await;
    let s = daemon.snapshot().await;
    assert!(
        s.evaluated_at.unwrap() < at(1, 30),
        "well inside the first grace period: {:?}",
        s.evaluated_at
    );

    // After the grace every old key is retired, without waiting for a slot.
    setup.set(at(2, 10));
    daemon.finish_jobs(&setup).await;
    for i in 0..4 {
        assert_eq!(
            outcomes(&daemon.history(&format!("p{i}")).await),
            ["completed"]
        );
        assert_eq!(regenerations(&setup, &fleet_account(i)).await, 2);
    }
    assert_eq!(daemon.stop().await, Exit::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_checks_are_spread_over_the_interval_and_a_failed_one_is_retried_soon() {
    let twin = TestTwin::start_with(&fleet_world(8, None));
    let setup = Setup::with_twin(twin, at(0, 0));
    for i in 0..8 {
        setup.write_plan(
            &format!("p{i}"),
            &setup.fleet_plan_text(i, "[drift]\ninterval = \"1h\"\n"),
        );
    }
    // A plan due by key age needs its first check at once; it fails once.
    setup.write_plan(
        "aged",
        &setup.plan_text(
            super::harness::Consumers::KeyVault,
            "[schedule]\nmax_key_age = \"30d\"\n[drift]\ninterval = \"7d\"\n",
        ),
    );
    setup
        .twin
        .fault(json!({"operation": "storage.listKeys", "target": "stdatasci001", "count": 1, "action": {"kind": "status", "status": 404}}))
        .await;
    let daemon = setup.start().await;
    let s = daemon.settle().await;
    let checked = |s: &keyflip::daemon::Snapshot| {
        (0..8)
            .filter(|i| s.plan(&format!("p{i}")).is_some_and(|p| p.keys.is_some()))
            .count()
    };
    assert!(
        checked(&s) <= 1,
        "the start does not check every plan at once: {}",
        checked(&s)
    );
    let looked_at = setup.twin.requests_for("storage.get").await.len()
        + setup.twin.requests_for("storage.listKeys").await.len();
    assert!(looked_at <= 3, "{looked_at} account reads at start");

    // The failed check is tried again a minute later, not a drift interval later.
    let aged = s.plan("aged").unwrap();
    assert!(aged.keys.is_none(), "{aged:?}");
    assert_eq!(aged.due_reason, "waiting-for-observation");
    setup.advance(TimeDelta::seconds(61));
    daemon
        .wait_for("the retried check", |s| {
            s.plan("aged").is_some_and(|p| p.keys.is_some())
        })
        .await;

    // Within the interval every plan has been checked, a few at a time.
    let mut t = at(0, 1);
    while t <= at(1, 2) {
        setup.set(t);
        daemon.settle().await;
        t += TimeDelta::minutes(1);
    }
    let s = daemon.settle().await;
    assert_eq!(checked(&s), 8, "{s:#?}");
    assert_eq!(daemon.stop().await, Exit::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_that_finds_nothing_changed_spends_no_arm_write() {
    let setup = Setup::new(at(0, 0));
    setup.write_plan(
        "demo",
        &setup.plan_text(
            super::harness::Consumers::KeyVault,
            "[drift]\ninterval = \"10m\"\n",
        ),
    );
    let daemon = setup.start().await;
    // The first check reads everything (listKeys, a POST Azure counts as a write).
    setup.advance(TimeDelta::minutes(10));
    daemon
        .wait_for("the first check", |s| {
            s.plan("demo").is_some_and(|p| p.keys.is_some())
        })
        .await;
    daemon.settle().await;
    let writes = arm_writes(&setup).await;
    let gets = setup.twin.requests_for("storage.get").await.len();

    // Three more intervals: three quick checks, reads only.
    for _ in 0..30 {
        setup.advance(TimeDelta::minutes(1));
        daemon.settle().await;
    }
    assert_eq!(
        arm_writes(&setup).await,
        writes,
        "checks that found nothing new sent no ARM write"
    );
    assert!(
        setup.twin.requests_for("storage.get").await.len() >= gets + 2,
        "but they did look at the account"
    );
    assert!(
        daemon
            .snapshot()
            .await
            .plan("demo")
            .unwrap()
            .drift
            .is_empty()
    );
    assert_eq!(daemon.stop().await, Exit::Ok);
}

/// Runs `--leaked key1 --revoke-first` on `plan` through the control socket.
async fn incident(daemon: &Daemon, plan: &str) -> Answer {
    daemon
        .request(Request::RotateNow {
            plan: plan.into(),
            mode: Mode::Leaked {
                key: KeyName::Key1,
                revoke_first: true,
            },
            grace: None,
            dry_run: false,
            by: Default::default(),
        })
        .await
        .expect("the daemon answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_goes_ahead_of_queued_routine_work() {
    let twin = TestTwin::start_with(&fleet_world(7, None));
    let mut setup = Setup::with_twin(twin, at(0, 30));
    // One ARM write a second: six rotations due together queue for it.
    setup.daemon_settings(
        "max_concurrent_rotations = 6\n[daemon.budget]\narm_writes_per_second = 1\n",
    );
    let routine = "[schedule]\ncron = \"0 1 * * *\"\n[rotation]\ngrace = \"0s\"\n[drift]\ninterval = \"7d\"\n";
    for i in 0..6 {
        setup.write_plan(&format!("p{i}"), &setup.fleet_plan_text(i, routine));
    }
    setup.write_plan(
        "leak",
        &setup.fleet_plan_text(6, "[drift]\ninterval = \"7d\"\n"),
    );
    let daemon = setup.start().await;
    daemon.settle().await;
    setup.set(at(1, 0));
    for _ in 0..3 {
        daemon.step(&setup).await;
    }

    // Key1 of `leak` leaked: it must die within a few daemon seconds, ahead of the
    // queued routine writes, not after them.
    let leak = fleet_account(6);
    let daemon = std::sync::Arc::new(daemon);
    let request = tokio::spawn({
        let daemon = daemon.clone();
        async move { incident(&daemon, "leak").await }
    });
    let seconds = step_until(
        &setup,
        &daemon,
        120,
        "the leaked key's regeneration",
        || async { regenerations(&setup, &leak).await >= 1 },
    )
    .await;
    let busy = daemon
        .snapshot()
        .await
        .plans
        .iter()
        .filter(|p| p.name != "leak" && p.running.is_some())
        .count();
    assert!(
        seconds <= 4,
        "the leaked key died {seconds} daemon seconds after the request"
    );
    assert!(busy > 0, "routine rotations were still queued behind it");

    step_until(&setup, &daemon, 300, "the incident's answer", || async {
        request.is_finished()
    })
    .await;
    let reply = request.await.unwrap();
    assert!(
        matches!(&reply, Answer::Rotation { report } if report.exit() == Exit::Ok),
        "{reply:?}"
    );
    // The routine rotations finish at one write a second.
    step_until(&setup, &daemon, 600, "the routine rotations", || async {
        daemon
            .snapshot()
            .await
            .plans
            .iter()
            .all(|p| p.running.is_none())
    })
    .await;
    daemon.settle().await;
    for i in 0..6 {
        assert_eq!(
            outcomes(&daemon.history(&format!("p{i}")).await),
            ["completed"]
        );
    }
    let Ok(daemon) = std::sync::Arc::try_unwrap(daemon) else {
        panic!("the daemon is still shared");
    };
    assert_eq!(daemon.stop().await, Exit::Ok);
}
