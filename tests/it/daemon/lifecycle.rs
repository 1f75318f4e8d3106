//! Start, reload and stop: systemd notifications, a reload that keeps the old plans
//! when the new set is broken, and a shutdown in the middle of a rotation that the
//! next start finishes.

use std::time::Duration;

use chrono::{TimeZone as _, Utc};
use keyflip::daemon::control::client::ClientError;
use keyflip::daemon::control::protocol::{ErrorCode, Request};
use keyflip::daemon::systemd::SystemdNotifier;
use keyflip::exit::Exit;
use keyflip::rotation::ProgressEvent;
use keyflip::rotation::machine::Mode;
use serde_json::json;

use super::harness::{Consumers, Setup, outcomes};
use crate::support::twin::TestTwin;

const MANUAL: &str = "[drift]\ninterval = \"7d\"\n";

/// The plans a daemon publishes.
async fn names(d: &super::harness::Daemon) -> Vec<String> {
    d.snapshot()
        .await
        .plans
        .iter()
        .map(|p| p.name.clone())
        .collect()
}

/// The next datagram systemd would have received.
async fn next(receiver: &tokio::net::UnixDatagram) -> String {
    let mut buf = vec![0u8; 4096];
    let len = tokio::time::timeout(Duration::from_secs(20), receiver.recv(&mut buf))
        .await
        .expect("systemd is notified")
        .unwrap();
    String::from_utf8(buf[..len].to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_status_watchdog_and_stopping() {
    let setup = Setup::new(Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap());
    setup.write_plan("demo", &setup.plan_text(Consumers::KeyVault, MANUAL));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let receiver = tokio::net::UnixDatagram::bind(&path).unwrap();
    let daemon = setup
        .start_with(
            SystemdNotifier::to_socket(path),
            Some(Duration::from_millis(200)),
        )
        .await;

    let mut seen = Vec::new();
    while !seen.iter().any(|m: &String| m.contains("WATCHDOG=1")) {
        seen.push(next(&receiver).await);
    }
    let ready = seen
        .iter()
        .find(|m| m.starts_with("READY=1\n"))
        .unwrap_or_else(|| panic!("READY=1 before the first watchdog ping: {seen:?}"));
    assert!(ready.contains("STATUS=1 plan, none rotating"), "{ready}");
    assert_eq!(daemon.http_get("/readyz").await.0, 200);
    assert_eq!(daemon.http_get("/healthz").await.0, 200);

    daemon.handle.shutdown();
    loop {
        let message = next(&receiver).await;
        if message.contains("STOPPING=1") {
            assert!(message.contains("STATUS=stopping"), "{message}");
            break;
        }
    }
    assert_eq!(daemon.handle.wait().await, Exit::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_a_broken_plan_keeps_the_old_plans() {
    let setup = Setup::new(Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap());
    setup.write_plan("demo", &setup.plan_text(Consumers::KeyVault, MANUAL));
    let daemon = setup.start().await;
    assert_eq!(names(&daemon).await, ["demo"]);

    // A new plan with a mistake, and a change to the existing one: neither applies.
    let other = TestTwin::demo_account_id("stexternal002");
    let broken = format!(
        "storage_account = \"{other}\"\n[schedule]\ncron = \"0 3 * * *\"\njitter = \"2d\"\n[[key_vault]]\nvault = \"https://kv.example.net\"\nsecret = \"s\"\nformat = \"raw-key\"\n"
    );
    setup.write_plan("external", &broken);
    setup.write_plan(
        "demo",
        &setup.plan_text(
            Consumers::KeyVault,
            "[schedule]\ncron = \"0 * * * *\"\n[drift]\ninterval = \"7d\"\n",
        ),
    );
    let errors = daemon
        .handle
        .reload()
        .await
        .expect_err("the broken set is rejected");
    let text = errors.join("\n");
    assert!(
        text.contains("external.toml") && text.contains("jitter"),
        "{text}"
    );
    let s = daemon.settle().await;
    assert_eq!(names(&daemon).await, ["demo"]);
    assert_eq!(
        s.plan("demo").unwrap().due_reason,
        "manual",
        "the old demo plan (no schedule) stays"
    );

    // A broken configuration file is rejected the same way.
    let config = std::fs::read_to_string(setup.dir().join("keyflip.toml")).unwrap();
    std::fs::write(
        setup.dir().join("keyflip.toml"),
        format!("{config}\nbogus_setting = 1\n"),
    )
    .unwrap();
    setup.write_plan("external", &broken.replace("jitter = \"2d\"\n", ""));
    let errors = daemon
        .handle
        .reload()
        .await
        .expect_err("the broken configuration is rejected");
    assert!(errors.join("\n").contains("bogus_setting"), "{errors:?}");
    assert_eq!(names(&daemon).await, ["demo"]);

    // Fixed: both plans, and the changed demo plan now has its schedule.
    std::fs::write(setup.dir().join("keyflip.toml"), config).unwrap();
    assert_eq!(daemon.handle.reload().await, Ok(2));
    let s = daemon.settle().await;
    assert_eq!(names(&daemon).await, ["demo", "external"]);
    assert_eq!(
        s.plan("demo").unwrap().next_due,
        Some(Utc.with_ymd_and_hms(2026, 3, 2, 1, 0, 0).unwrap())
    );
    let (_, metrics) = daemon.http_get("/metrics").await;
    assert!(
        metrics.contains("keyflip_reloads_total{result=\"rejected\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("keyflip_reloads_total{result=\"applied\"} 1"),
        "{metrics}"
    );

    // A removed plan is dropped.
    setup.remove_plan("external");
    assert_eq!(daemon.handle.reload().await, Ok(1));
    assert_eq!(names(&daemon).await, ["demo"]);
    assert_eq!(daemon.stop().await, Exit::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_mid_rotation_exits_cleanly_and_the_next_start_finishes_it() {
    let setup = Setup::new(Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap());
    setup.write_plan(
        "demo",
        &setup.plan_text(
            Consumers::KeyVault,
            "[rotation]\ngrace = \"0s\"\n[drift]\ninterval = \"7d\"\n",
        ),
    );
    // The bind to Key Vault takes a while: shutdown arrives while it is in flight.
    setup
        .twin
        .fault(json!({"operation": "keyvault.set", "count": 1, "action": {"kind": "latency", "ms": 1500}}))
        .await;
    let daemon = setup.start().await;
    let (binding_tx, binding_rx) = tokio::sync::oneshot::channel::<String>();
    let request = Request::RotateNow {
        plan: "demo".into(),
        mode: Mode::Scheduled,
        grace: None,
        dry_run: false,
        by: Default::default(),
    };
    let client = {
        let socket = setup.socket();
        tokio::spawn(async move {
            let mut binding_tx = Some(binding_tx);
            let mut rotation_id = String::new();
            let stream = keyflip::daemon::control::client::connect(&socket)
                .await
                .unwrap()
                .unwrap();
            let mut on_progress = |event: ProgressEvent| {
                if let ProgressEvent::Started {
                    rotation_id: id, ..
                } = &event
                {
                    rotation_id = id.clone();
                }
                if let ProgressEvent::StepStarted { step, .. } = &event
                    && step.starts_with("bind")
                    && let Some(tx) = binding_tx.take()
                {
                    let _ = tx.send(rotation_id.clone());
                }
            };
            keyflip::daemon::control::client::call(stream, &socket, &request, &mut on_progress)
                .await
        })
    };
    let rotation_id = tokio::time::timeout(Duration::from_secs(60), binding_rx)
        .await
        .expect("the rotation reaches its bind step")
        .unwrap();
    daemon.handle.shutdown();
    assert_eq!(
        daemon.handle.wait().await,
        Exit::Ok,
        "SIGTERM mid-rotation exits 0"
    );
    match client.await.unwrap() {
        Err(ClientError::Daemon(e)) => {
            assert_eq!(e.code, ErrorCode::ShuttingDown, "{e:?}");
            assert_eq!(e.exit, Exit::Interrupted);
        }
        other => panic!("the client should hear of the interruption: {other:?}"),
    }

    // The next start resumes it before anything else, and it completes.
    let daemon = setup.start().await;
    let s = daemon
        .wait_for("the interrupted rotation to be resumed and finished", |s| {
            s.plan("demo")
                .is_some_and(|p| p.last_success.is_some() && p.running.is_none())
        })
        .await;
    assert_eq!(s.plan("demo").unwrap().failures, 0);
    let history = daemon.history("demo").await;
    assert_eq!(outcomes(&history), ["completed"], "one rotation, finished");
    assert_eq!(history[0]["rotation_id"], rotation_id.as_str());
    let binds = history[0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "bind")
        .count();
    assert_eq!(
        binds, 1,
        "the bind in flight at shutdown was journaled, not sent twice"
    );
    let sets: Vec<_> = setup
        .twin
        .requests_for("keyvault.set")
        .await
        .into_iter()
        .filter(|e| e["status"] == 200)
        .collect();
    assert_eq!(sets.len(), 1, "{sets:?}");
    assert_eq!(daemon.stop().await, Exit::Ok);
}
