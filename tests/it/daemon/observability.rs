//! What the daemon shows: a rotation asked for over the control socket, reflected in
//! `/metrics` and `status`, with no key value anywhere in replies or metrics.

use chrono::{TimeZone as _, Utc};
use keyflip::daemon::control::protocol::{Answer, Request};
use keyflip::exit::Exit;
use keyflip::rotation::ProgressEvent;
use keyflip::rotation::machine::{Mode, Outcome};

use super::harness::{Consumers, Setup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_status_reflect_a_rotation_and_hold_no_key() {
    let start = Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap();
    let setup = Setup::new(start);
    let settings = "[schedule]\ncron = \"0 3 * * *\"\n[rotation]\ngrace = \"0s\"\n[drift]\ninterval = \"7d\"\n";
    setup.write_plan("demo", &setup.plan_text(Consumers::KeyVault, settings));
    let (old1, old2) = setup.twin.keys("stdatasci001").await;
    let daemon = setup.start().await;
    // Its first check is due somewhere in the week; the rotation below reads the keys.
    daemon.settle().await;

    let dry = daemon
        .request(Request::RotateNow {
            plan: "demo".into(),
            mode: Mode::Scheduled,
            grace: None,
            dry_run: true,
            by: Default::default(),
        })
        .await
        .expect("a dry run");
    assert!(
        matches!(&dry, Answer::DryRun { dry_run } if dry_run.exit() == Exit::Ok && dry_run.refused.is_none()),
        "{dry:?}"
    );

    let mut events = Vec::new();
    let reply = daemon
        .request_with(
            Request::RotateNow {
                plan: "demo".into(),
                mode: Mode::Scheduled,
                grace: Some(std::time::Duration::ZERO),
                dry_run: false,
                by: Default::default(),
            },
            &mut |e| events.push(e),
        )
        .await
        .expect("the rotation runs");
    let Answer::Rotation { report } = &reply else {
        panic!("{reply:?}")
    };
    assert_eq!(report.exit(), Exit::Ok, "{:#?}", report.outcome);
    assert!(
        matches!(report.outcome, Some(Outcome::Completed { .. })),
        "{:#?}",
        report.outcome
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ProgressEvent::StepFinished { .. })),
        "progress reaches the client"
    );

    daemon.settle().await;
    let (status, metrics) = daemon.http_get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("keyflip_rotations_total{plan=\"demo\",outcome=\"completed\"} 1\n"),
        "{metrics}"
    );
    // Steps are labelled by the command's stable name, one series per kind.
    for step in [
        "observe",
        "regenerate",
        "verify_key",
        "bind",
        "verify_consumer",
        "commit",
    ] {
        assert!(
            metrics.contains(&format!(
                "keyflip_rotation_step_duration_seconds_count{{step=\"{step}\"}}"
            )),
            "{step}: {metrics}"
        );
    }
    assert!(
        metrics.contains(&format!(
            "keyflip_last_success_timestamp_seconds{{plan=\"demo\"}} {}\n",
            start.timestamp()
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "keyflip_next_rotation_timestamp_seconds{{plan=\"demo\"}} {}\n",
            start.timestamp() + 3 * 3600
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("keyflip_key_age_seconds{plan=\"demo\",key=\"key1\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("keyflip_plan_needs_attention{plan=\"demo\"} 0\n"),
        "{metrics}"
    );
    assert!(metrics.contains("keyflip_ready 1\n"), "{metrics}");
    let build = keyflip::build_info::BuildInfo::current();
    assert!(
        metrics.contains(&format!(
            "keyflip_build_info{{version=\"{}\",commit=\"{}\",dirty=\"{}\",target=\"{}\",",
            build.version, build.commit, build.dirty, build.target
        )),
        "{metrics}"
    );

    let status = daemon
        .request(Request::Status {
            plan: Some("demo".into()),
        })
        .await
        .unwrap();
    // (The harness checks every answer names this process as the daemon.)
    let Answer::Status { plans, .. } = &status else {
        panic!("{status:?}")
    };
    assert_eq!(
        plans[0].next_due,
        Some(Utc.with_ymd_and_hms(2026, 3, 2, 3, 0, 0).unwrap())
    );
    let last = plans[0].last_rotation.as_ref().expect("the last rotation");
    assert_eq!(
        (last.outcome.as_str(), last.finished_at),
        ("completed", Some(start))
    );
    assert_eq!(plans[0].schedule.failures, 0);
    assert!(plans[0].schedule.parked.is_none() && plans[0].schedule.running.is_none());
    let history = daemon.history("demo").await;

    let (new1, new2) = setup.twin.keys("stdatasci001").await;
    assert!(new1 != old1 || new2 != old2, "a key was regenerated");
    let everything = format!(
        "{}\n{}\n{}\n{}\n{metrics}",
        serde_json::to_string(&reply).unwrap(),
        serde_json::to_string(&status).unwrap(),
        serde_json::to_string(&events).unwrap(),
        serde_json::to_string(&history).unwrap(),
    );
    for key in [&old1, &old2, &new1, &new2] {
        assert!(
            !everything.contains(key.as_str()),
            "a key value leaked into a reply or metric"
        );
    }
    assert_eq!(daemon.stop().await, Exit::Ok);
}
