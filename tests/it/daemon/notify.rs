//! Webhooks: a local receiver gets `failure` and `needs-attention` when a plan's
//! rotations fail until it is parked, and `incident` when an incident rotation
//! completes; each body follows the documented schema and holds no key.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use chrono::{TimeDelta, TimeZone as _, Utc};
use keyflip::daemon::control::protocol::{Answer, Request};
use keyflip::exit::Exit;
use keyflip::key::KeyName;
use keyflip::rotation::machine::Mode;
use serde_json::{Value, json};

use super::harness::{Consumers, Setup};

/// An HTTP endpoint on 127.0.0.1 that records every JSON body posted to it.
pub struct Receiver {
    pub url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .route(
                "/hook/{token}",
                axum::routing::post(
                    |State(b): State<Arc<Mutex<Vec<Value>>>>, Json(body): Json<Value>| async move {
                        b.lock().unwrap().push(body);
                        "ok"
                    },
                ),
            )
            .with_state(bodies.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url: format!("http://{addr}/hook/secret-token"),
            bodies,
        }
    }

    /// Waits until `n` bodies with event `event` arrived; returns them all.
    pub async fn wait_for(&self, event: &str, n: usize) -> Vec<Value> {
        tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                let got: Vec<Value> = self.bodies.lock().unwrap().clone();
                if got.iter().filter(|b| b["event"] == event).count() >= n {
                    return got;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {event} notification: {:?}", self.bodies.lock().unwrap()))
    }

    pub fn all(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_hear_failures_parking_and_incidents() {
    let start = Utc.with_ymd_and_hms(2026, 3, 2, 0, 30, 0).unwrap();
    let mut setup = Setup::new(start);
    setup.daemon_settings("park_after_failures = 2\nretry_backoff = \"10m\"\n");
    let hook = Receiver::start().await;
    let settings = format!(
        "[schedule]\ncron = \"0 * * * *\"\n[rotation]\ngrace = \"0s\"\n[drift]\ninterval = \"7d\"\n[[notify]]\nwebhook = \"{}\"\nevents = [\"failure\", \"needs-attention\", \"incident\"]\n",
        hook.url
    );
    setup.write_plan("demo", &setup.plan_text(Consumers::KeyVault, &settings));
    // Staging fails: every regenerate is refused, so each cycle rolls back.
    setup
        .twin
        .fault(json!({"operation": "storage.regenerateKey", "count": 0, "action": {"kind": "status", "status": 409, "code": "Conflict"}}))
        .await;
    let daemon = setup.start().await;

    setup.set(Utc.with_ymd_and_hms(2026, 3, 2, 1, 0, 0).unwrap());
    let bodies = hook.wait_for("failure", 1).await;
    let s = daemon.settle().await;
    let p = s.plan("demo").unwrap();
    assert_eq!((p.failures, p.parked.is_none()), (1, true));
    assert_eq!(
        p.next_due,
        Some(Utc.with_ymd_and_hms(2026, 3, 2, 1, 10, 0).unwrap()),
        "retry after the backoff"
    );
    let failure = bodies.iter().find(|b| b["event"] == "failure").unwrap();
    assert_eq!(failure["schema"], "keyflip.notification/v1");
    assert_eq!(failure["plan"], "demo");
    assert_eq!(
        failure["account"],
        setup.twin.endpoints.storage_accounts["stdatasci001"]
            .id
            .as_str()
    );
    assert_eq!(failure["outcome"], "rolled_back");
    assert!(failure["rotation_id"].is_string());
    assert_eq!(failure["at"], "2026-03-02T01:00:00Z");

    // The retry fails too: parked, and someone is told.
    setup.advance(TimeDelta::minutes(10));
    let bodies = hook.wait_for("needs-attention", 1).await;
    let s = daemon.settle().await;
    let p = s.plan("demo").unwrap();
    assert!(p.parked.is_some(), "{p:?}");
    assert_eq!(p.next_due, None, "a parked plan is not scheduled");
    assert_eq!(bodies.iter().filter(|b| b["event"] == "failure").count(), 2);
    let parked = bodies
        .iter()
        .find(|b| b["event"] == "needs-attention")
        .unwrap();
    assert!(
        parked["summary"]
            .as_str()
            .unwrap()
            .contains("2 failed rotation cycles"),
        "{parked}"
    );
    let (_, metrics) = daemon.http_get("/metrics").await;
    assert!(
        metrics.contains("keyflip_plan_needs_attention{plan=\"demo\"} 1\n"),
        "{metrics}"
    );

    // Parked means parked: the next occurrence passes without a rotation.
    setup.set(Utc.with_ymd_and_hms(2026, 3, 2, 2, 0, 0).unwrap());
    daemon.settle().await;
    assert_eq!(daemon.history("demo").await.len(), 2);

    // The fault is fixed; an operator revokes the standby key after a leak. It
    // completes, the plan is unparked, and the incident webhook fires.
    setup.twin.clear_faults().await;
    let reply = daemon
        .request(Request::RotateNow {
            plan: "demo".into(),
            mode: Mode::Leaked {
                key: KeyName::Key2,
                revoke_first: false,
            },
            grace: None,
            dry_run: false,
            by: Default::default(),
        })
        .await
        .expect("the incident rotation runs");
    assert!(
        matches!(&reply, Answer::Rotation { report } if report.exit() == keyflip::exit::Exit::Ok),
        "{reply:?}"
    );
    let bodies = hook.wait_for("incident", 1).await;
    let incident = bodies.iter().find(|b| b["event"] == "incident").unwrap();
    assert_eq!(incident["outcome"], "completed");
    assert!(
        incident["details"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d.as_str().unwrap().contains("key2 regenerated")),
        "{incident}"
    );
    let s = daemon.settle().await;
    let p = s.plan("demo").unwrap();
    assert_eq!((p.failures, p.parked.is_none()), (0, true));
    assert_eq!(
        p.next_due,
        Some(Utc.with_ymd_and_hms(2026, 3, 2, 3, 0, 0).unwrap())
    );

    let (k1, k2) = setup.twin.keys("stdatasci001").await;
    let all = serde_json::to_string(&hook.all()).unwrap();
    assert!(
        !all.contains(&k1) && !all.contains(&k2),
        "no key in a notification"
    );
    assert_eq!(daemon.stop().await, Exit::Ok);
}
