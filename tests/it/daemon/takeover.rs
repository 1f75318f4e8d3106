//! A daemon waiting out a grace period is pre-empted by a person's request that
//! changes what the rotation does (issue 12, part 1): an incident takes the rotation
//! over (the daemon stops its job between journaled steps and runs the incident on
//! the rotation it left unfinished), and `rotate resume PLAN --grace 0s` ends the
//! grace now. The client that started the waiting rotation is told why it stopped.

use std::time::Duration;

use chrono::{TimeZone as _, Utc};
use keyflip::daemon::control::client::ClientError;
use keyflip::daemon::control::protocol::{Answer, ErrorCode, Request};
use keyflip::exit::Exit;
use keyflip::key::KeyName;
use keyflip::rotation::Requester;
use keyflip::rotation::machine::{Mode, Outcome};

use super::harness::{Consumers, Daemon, Setup};

const GRACE_AN_HOUR: &str = "[rotation]\ngrace = \"1h\"\n[drift]\ninterval = \"7d\"\n";

fn rotate_now(mode: Mode) -> Request {
    Request::RotateNow {
        plan: "demo".into(),
        mode,
        grace: None,
        dry_run: false,
        by: Requester {
            reason: Some("found in a build log".into()),
            ..Requester::default()
        },
    }
}

/// Waits until the plan's rotation is waiting out its grace (a `wait_until` step
/// without a result).
async fn in_grace(daemon: &Daemon) {
    for _ in 0..600 {
        let history = daemon.history("demo").await;
        let waiting = history.first().is_some_and(|r| {
            r["steps"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["kind"] == "wait_until" && s["result"].is_null())
        });
        if waiting {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the rotation never reached its grace period");
}

fn pre_empted(first: Result<Answer, ClientError>) {
    match first {
        Err(ClientError::Daemon(e)) => {
            assert_eq!(
                (e.code, e.exit),
                (ErrorCode::Interrupted, Exit::Interrupted)
            );
            assert!(e.message.contains("pre-empted"), "{}", e.message);
        }
        other => panic!("the waiting rotation's client: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_pre_empts_the_daemon_waiting_out_a_grace() {
    let setup = Setup::new(Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap());
    setup.write_plan("demo", &setup.plan_text(Consumers::KeyVault, GRACE_AN_HOUR));
    let daemon = setup.start().await;
    let (key1, _) = setup.twin.keys("stdatasci001").await;
    let first = daemon.request(rotate_now(Mode::Scheduled));
    let incident = async {
        in_grace(&daemon).await;
        daemon
            .request(rotate_now(Mode::Leaked {
                key: KeyName::Key1,
                revoke_first: false,
            }))
            .await
    };
    let (first, incident) = tokio::join!(first, incident);
    pre_empted(first);
    let Ok(Answer::Rotation { report }) = incident else {
        panic!("{incident:?}")
    };
    assert!(report.resumed, "the same rotation, taken over");
    assert!(
        matches!(
            report.outcome,
            Some(Outcome::Completed {
                active: KeyName::Key2,
                ..
            })
        ),
        "{:?}",
        report.outcome
    );
    let escalation = report.escalation.as_ref().expect("taken over");
    assert!(escalation.handled_here);
    let by = escalation.by.as_ref().unwrap();
    assert_eq!(by.reason.as_deref(), Some("found in a build log"));
    assert!(by.uid.is_some(), "the daemon stamps its peer's uid");
    assert!(report.incident_report.is_some());
    // The daemon's clock never moved: the hour's grace was not waited out.
    assert_ne!(
        setup.twin.keys("stdatasci001").await.0,
        key1,
        "key1 retired"
    );
    let s = daemon.settle().await;
    let p = s.plan("demo").unwrap();
    assert_eq!((p.failures, p.parked.is_none()), (0, true), "{p:?}");
    assert_eq!(daemon.history("demo").await.len(), 1);
    assert_eq!(daemon.stop().await, Exit::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_with_no_grace_pre_empts_the_daemon_waiting_out_a_grace() {
    let setup = Setup::new(Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap());
    setup.write_plan("demo", &setup.plan_text(Consumers::KeyVault, GRACE_AN_HOUR));
    let daemon = setup.start().await;
    let (key1, _) = setup.twin.keys("stdatasci001").await;
    let first = daemon.request(rotate_now(Mode::Scheduled));
    let resume = async {
        in_grace(&daemon).await;
        daemon
            .request(Request::Resume {
                plan: Some("demo".into()),
                grace: Some(Duration::ZERO),
                by: Requester::default(),
                force_retire: false,
            })
            .await
    };
    let (first, resume) = tokio::join!(first, resume);
    pre_empted(first);
    let Ok(Answer::Resumed { reports }) = resume else {
        panic!("{resume:?}")
    };
    assert_eq!(reports.len(), 1);
    assert!(matches!(
        reports[0].outcome,
        Some(Outcome::Completed { .. })
    ));
    assert_eq!(reports[0].grace_shortened.len(), 1);
    assert_ne!(
        setup.twin.keys("stdatasci001").await.0,
        key1,
        "key1 retired"
    );
    // A grace that is over cannot be shortened: refused, not ignored.
    let again = daemon
        .request(Request::Resume {
            plan: Some("demo".into()),
            grace: Some(Duration::ZERO),
            by: Requester::default(),
            force_retire: false,
        })
        .await;
    match again {
        Err(ClientError::Daemon(e)) => {
            assert_eq!(e.exit, Exit::Usage, "{}", e.message);
            assert!(e.message.contains("nothing to shorten"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(daemon.stop().await, Exit::Ok);
}
