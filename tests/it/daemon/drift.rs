//! Drift watch: a key regenerated behind keyflip's back through the twin's admin API
//! is noticed at the next interval, reported once (log, metrics, webhook), and a
//! consumer left on a dead key is reported as well.

use chrono::{TimeDelta, TimeZone as _, Utc};
use keyflip::exit::Exit;

use super::harness::{Consumers, Setup};
use super::notify::Receiver;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_regenerated_behind_keyflips_back_is_drift() {
    let setup = Setup::new(Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap());
    let hook = Receiver::start().await;
    let settings = format!(
        "[drift]\ninterval = \"1m\"\n[[notify]]\nwebhook = \"{}\"\nevents = [\"drift\"]\n",
        hook.url
    );
    setup.write_plan("demo", &setup.plan_text(Consumers::KeyVault, &settings));
    let daemon = setup.start().await;
    // Start-up checks are spread over the drift interval: the first comes within it.
    setup.advance(TimeDelta::minutes(1));
    daemon
        .wait_for("the first observation", |s| {
            s.plan("demo").is_some_and(|p| p.keys.is_some())
        })
        .await;
    let s = daemon.settle().await;
    assert!(s.plan("demo").unwrap().drift.is_empty(), "{s:#?}");

    // Someone regenerates the standby key in the portal.
    setup
        .twin
        .regenerate_behind_our_back("stdatasci001", "key2")
        .await;
    setup.advance(TimeDelta::minutes(1));
    let s = daemon
        .wait_for("drift to be noticed", |s| {
            s.plan("demo").is_some_and(|p| !p.drift.is_empty())
        })
        .await;
    let drift = &s.plan("demo").unwrap().drift;
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert!(
        drift[0].contains("key2 was regenerated outside keyflip"),
        "{drift:?}"
    );
    let bodies = hook.wait_for("drift", 1).await;
    assert_eq!(bodies[0]["plan"], "demo");
    assert!(
        bodies[0]["summary"]
            .as_str()
            .unwrap()
            .contains("key2 was regenerated"),
        "{bodies:?}"
    );
    // A regenerated standby breaks nobody: a warning, not a page.
    assert_eq!(bodies[0]["severity"], "warning", "{bodies:?}");
    let (_, metrics) = daemon.http_get("/metrics").await;
    assert!(
        metrics
            .contains("keyflip_drift_findings_total{plan=\"demo\",kind=\"key_regenerated\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("keyflip_drift{plan=\"demo\"} 1\n"),
        "{metrics}"
    );

    // The new value is the baseline now: the next check is clean and nobody is paged
    // again.
    setup.advance(TimeDelta::minutes(1));
    daemon
        .wait_for("the next clean check", |s| {
            s.plan("demo").is_some_and(|p| p.drift.is_empty())
        })
        .await;

    // Now the active key: the Key Vault secret holds a dead value.
    setup
        .twin
        .regenerate_behind_our_back("stdatasci001", "key1")
        .await;
    setup.advance(TimeDelta::minutes(1));
    let s = daemon
        .wait_for("drift on the active key", |s| {
            s.plan("demo").is_some_and(|p| p.drift.len() >= 2)
        })
        .await;
    let drift = s.plan("demo").unwrap().drift.join("\n");
    assert!(
        drift.contains("key1 was regenerated outside keyflip"),
        "{drift}"
    );
    assert!(
        drift.contains("stdatasci001-key holds neither key"),
        "{drift}"
    );
    let bodies = hook.wait_for("drift", 2).await;
    assert_eq!(
        bodies.len(),
        2,
        "one notification per new drift: {bodies:?}"
    );
    // Consumers on a dead key are an outage, not drift: the alert says so first and
    // names the command that mends it.
    let summary = bodies[1]["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("Consumers are down on demo: 1 consumer(s) hold neither key")
            && summary.contains("key1 regenerated outside keyflip")
            && summary.contains("`keyflip rotate now demo --adopt`"),
        "{summary}"
    );
    assert_eq!(
        bodies[1]["severity"], "critical",
        "an outage pages: {bodies:?}"
    );
    let (k1, k2) = setup.twin.keys("stdatasci001").await;
    let all = serde_json::to_string(&bodies).unwrap() + &drift;
    assert!(!all.contains(&k1) && !all.contains(&k2));

    // A person's `rotate now` is refused, naming `--adopt`; refusals of manual
    // commands are not the schedule's failed cycles, however many.
    use keyflip::daemon::control::protocol::{Answer, Request};
    use keyflip::rotation::machine::{Mode, Outcome};
    let rotate_now = |mode| Request::RotateNow {
        plan: "demo".into(),
        mode,
        grace: None,
        dry_run: false,
        by: Default::default(),
    };
    for _ in 0..3 {
        // A person's `rotate now` checks for unlisted consumers in full, waiting for
        // the write budget on the daemon's clock, which only the test moves.
        let request = daemon.request(rotate_now(Mode::Scheduled));
        let clock = async {
            loop {
                daemon.step(&setup).await;
            }
        };
        let answer = tokio::select! {
            answer = request => answer.unwrap(),
            () = clock => unreachable!(),
        };
        let Answer::Rotation { report } = answer else {
            panic!("{answer:?}")
        };
        let Some(Outcome::Refused { reasons }) = &report.outcome else {
            panic!("{:?}", report.outcome)
        };
        assert!(reasons.iter().any(|r| r.to_string().contains("--adopt")));
    }
    let s = daemon.settle_moving(&setup).await;
    let p = s.plan("demo").unwrap();
    assert_eq!((p.failures, p.parked.is_none()), (0, true), "{p:?}");
    // The way out, through the daemon: one rotation, consumers back on a working key.
    // Its steps' retry waits run on the daemon's clock, which only the test moves.
    let adopt = daemon.request(rotate_now(Mode::Adopt { key: None }));
    let clock = async {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            setup.advance(TimeDelta::seconds(5));
        }
    };
    let answer = tokio::select! {
        answer = adopt => answer.unwrap(),
        () = clock => unreachable!(),
    };
    let Answer::Rotation { report } = answer else {
        panic!("{answer:?}")
    };
    assert!(
        matches!(report.outcome, Some(Outcome::Completed { .. })),
        "{:?}",
        report.outcome
    );
    setup.advance(TimeDelta::minutes(1));
    daemon
        .wait_for("a clean look after the adopt", |s| {
            s.plan("demo")
                .is_some_and(|p| p.drift.is_empty() && p.running.is_none())
        })
        .await;
    assert_eq!(daemon.stop().await, Exit::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_secret_version_is_reported_and_repaired_when_the_plan_opts_in() {
    use keyflip::azure::keyvault::NewSecretVersion;
    use keyflip::daemon::control::protocol::{Answer, Request};
    use keyflip::rotation::machine::Mode;
    use keyflip::secret::StorageKey;

    let setup = Setup::new(Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap());
    let settings = "[rotation]\ngrace = \"0s\"\n[drift]\ninterval = \"1m\"\nrepair = true\n";
    setup.write_plan("demo", &setup.plan_text(Consumers::KeyVault, settings));
    let daemon = setup.start().await;
    // A rotation, so keyflip has written (and tagged) a version of the secret.
    let reply = daemon
        .request(keyflip::daemon::control::protocol::Request::RotateNow {
            plan: "demo".into(),
            mode: Mode::Scheduled,
            grace: None,
            dry_run: false,
            by: Default::default(),
        })
        .await
        .unwrap();
    assert!(
        matches!(&reply, Answer::Rotation { report } if report.exit() == keyflip::exit::Exit::Ok),
        "{reply:?}"
    );
    let s = daemon
        .wait_for("the observation after the rotation", |s| {
            s.plan("demo")
                .is_some_and(|p| p.running.is_none() && p.keys.is_some())
        })
        .await;
    assert!(s.plan("demo").unwrap().drift.is_empty(), "{s:#?}");

    // Someone puts the standby key (key1, after the rotation) into the secret by hand.
    let (key1, key2) = setup.twin.keys("stdatasci001").await;
    let azure = setup.twin.azure(crate::support::twin::OPERATOR);
    let vault = setup.twin.vault_url(crate::support::twin::VAULT);
    let foreign = azure
        .set_secret(
            &vault,
            "stdatasci001-key",
            NewSecretVersion {
                value: &StorageKey::new(key1.clone()),
                content_type: Some("text/plain".into()),
                tags: Default::default(),
                expires: None,
            },
        )
        .await
        .unwrap();
    setup.advance(TimeDelta::minutes(1));

    // Reported, then repaired: the secret holds the active key again, written by
    // keyflip, and the next look is clean.
    let s = daemon
        .wait_for("drift to be found", |s| {
            s.plan("demo").is_some_and(|p| !p.drift.is_empty())
        })
        .await;
    let drift = s.plan("demo").unwrap().drift.join("\n");
    assert!(
        drift.contains("stdatasci001-key holds key1, not the active key2"),
        "{drift}"
    );
    assert!(
        drift.contains(&format!("has version {}", foreign.version))
            && drift.contains("keyflip did not write"),
        "{drift}"
    );
    daemon
        .wait_for("the repair and a clean look", |s| {
            s.plan("demo")
                .is_some_and(|p| p.drift.is_empty() && p.running.is_none())
        })
        .await;
    let state = setup.twin.state().await;
    let latest = state["key_vaults"]["kv-datasci"]["secrets"]["stdatasci001-key"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        latest["value"].as_str().unwrap(),
        key2,
        "back on the active key"
    );
    assert!(
        latest["tags"]["keyflip-rotation"].is_string(),
        "{}",
        latest["tags"]
    );
    let history = daemon.history("demo").await;
    assert_eq!(
        history.len(),
        2,
        "the rotation and the repair are both journaled"
    );
    // The repair is one `--adopt` rotation, triggered by the drift watch.
    assert_eq!(
        history[0]["trigger"]["trigger"], "repair",
        "{:#}",
        history[0]
    );
    assert_eq!(history[0]["mode"]["mode"], "adopt");
    assert_eq!(history[0]["outcome"]["outcome"], "completed");
    let status = daemon
        .request(Request::Status { plan: None })
        .await
        .unwrap();
    let text = serde_json::to_string(&status).unwrap();
    assert!(!text.contains(&key1) && !text.contains(&key2));
    assert_eq!(daemon.stop().await, Exit::Ok);
}

/// Issue 12, part 2: with `repair = true`, the active key regenerated behind keyflip's
/// back (the portal's Regenerate button) leaves every consumer of the demo world on a
/// dead key; the drift watch moves all of them in **one** `--adopt` rotation (it once
/// wrote one "rotation" per consumer), ending with every consumer on the active key's
/// new value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outside_regeneration_of_the_active_key_is_repaired_in_one_rotation() {
    use keyflip::daemon::control::protocol::{Answer, Request};
    use keyflip::rotation::machine::Mode;

    let setup = Setup::new(Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap());
    let settings = "[rotation]\ngrace = \"0s\"\n[drift]\ninterval = \"1m\"\nrepair = true\n";
    setup.write_plan("demo", &setup.plan_text(Consumers::All, settings));
    let daemon = setup.start().await;
    // A rotation, so the journal knows the active key (key2).
    let rotate = daemon.request(Request::RotateNow {
        plan: "demo".into(),
        mode: Mode::Scheduled,
        grace: None,
        dry_run: false,
        by: Default::default(),
    });
    let clock = async {
        loop {
            daemon.step(&setup).await;
        }
    };
    let answer = tokio::select! {
        answer = rotate => answer.unwrap(),
        () = clock => unreachable!(),
    };
    assert!(
        matches!(&answer, Answer::Rotation { report } if report.exit() == Exit::Ok),
        "{answer:?}"
    );
    daemon.finish_jobs(&setup).await;
    setup.advance(TimeDelta::minutes(1));
    daemon
        .wait_for("the observation after the rotation", |s| {
            s.plan("demo")
                .is_some_and(|p| p.running.is_none() && p.keys.is_some() && p.drift.is_empty())
        })
        .await;

    let dead = setup.twin.keys("stdatasci001").await.1;
    let fresh = setup
        .twin
        .regenerate_behind_our_back("stdatasci001", "key2")
        .await;
    assert_ne!(dead, fresh);
    setup.advance(TimeDelta::minutes(1));
    // The next check comes at its place in the drift interval, which may be a little
    // past the minute just added: move the clock until it has looked.
    let found = async {
        loop {
            let s = daemon.snapshot().await;
            if s.plan("demo").is_some_and(|p| !p.drift.is_empty()) {
                return;
            }
            daemon.step(&setup).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(120), found)
        .await
        .expect("the drift is found");
    let repaired = async {
        loop {
            let history = daemon.history("demo").await;
            if history.len() == 2 && history[0]["finished_at"].is_string() {
                return history;
            }
            daemon.step(&setup).await;
        }
    };
    let history = tokio::time::timeout(std::time::Duration::from_secs(120), repaired)
        .await
        .expect("the repair finishes");
    daemon.finish_jobs(&setup).await;
    assert_eq!(
        history[0]["trigger"]["trigger"], "repair",
        "{:#}",
        history[0]
    );
    assert_eq!(
        history[0]["outcome"]["outcome"], "completed",
        "{:#}",
        history[0]
    );
    // Every consumer the plan lists (the demo world's Function app and Data Factory
    // are not in it).
    let state = setup.twin.state().await;
    let listed: Vec<_> = crate::support::engine::consumer_keys(&state)
        .into_iter()
        .filter(|(c, _)| !c.starts_with("app setting") && !c.starts_with("linked service"))
        .collect();
    assert_eq!(listed.len(), 8, "{listed:?}");
    for (consumer, key) in &listed {
        assert!(
            *key == fresh,
            "{consumer} is not on the active key2's new value"
        );
    }
    // Nothing more: one repair, and the next look is clean.
    setup.advance(TimeDelta::minutes(1));
    daemon
        .wait_for("a clean look after the repair", |s| {
            s.plan("demo")
                .is_some_and(|p| p.drift.is_empty() && p.running.is_none())
        })
        .await;
    assert_eq!(daemon.history("demo").await.len(), 2);
    assert_eq!(daemon.stop().await, Exit::Ok);
}
