//! Webhooks: a local receiver gets `rolled-back` (a webhook listing `failure` receives
//! rollbacks too) and `needs-attention` when a plan's rotations fail until it is
//! parked, each starting with the root cause, and `incident` when an incident
//! rotation completes; `usage-gate-hold` naming the caller when the usage gate parks a
//! rotation; each body follows the documented schema and holds no key. And
//! every format: keyflip's JSON signed with HMAC-SHA256, a Slack message and a Teams
//! Adaptive Card, each delivered to a local receiver.

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
    let bodies = hook.wait_for("rolled-back", 1).await;
    let s = daemon.settle().await;
    let p = s.plan("demo").unwrap();
    assert_eq!((p.failures, p.parked.is_none()), (1, true));
    assert_eq!(
        p.next_due,
        Some(Utc.with_ymd_and_hms(2026, 3, 2, 1, 10, 0).unwrap()),
        "retry after the backoff"
    );
    let failure = bodies.iter().find(|b| b["event"] == "rolled-back").unwrap();
    assert_eq!(failure["schema"], "keyflip.notification/v1");
    // The root cause first, one sentence: the step that failed and why.
    let summary = failure["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("Step 2, regenerate key2 (stage), failed: ") && summary.ends_with('.'),
        "{failure:#}"
    );
    assert_eq!(failure["severity"], "warning");
    assert_eq!(failure["title"], "demo: rotation rolled back");
    assert_eq!(failure["failures"], 1);
    assert!(
        failure["next_step"]
            .as_str()
            .unwrap()
            .starts_with("keyflip retries at 2026-03-02 01:10:00 UTC"),
        "{failure:#}"
    );
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
    assert_eq!(
        bodies
            .iter()
            .filter(|b| b["event"] == "rolled-back")
            .count(),
        2
    );
    let parked = bodies
        .iter()
        .find(|b| b["event"] == "needs-attention")
        .unwrap();
    assert!(
        parked["summary"]
            .as_str()
            .unwrap()
            .starts_with("Step 2, regenerate key2 (stage), failed: "),
        "{parked}"
    );
    assert_eq!(parked["details"][0], "2 failed rotation cycles in a row");
    assert_eq!(
        (parked["failures"].as_u64(), parked["severity"].as_str()),
        (Some(2), Some("critical"))
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
            // In an incident's words: the leaked standby was revoked at once.
            .any(|d| d.as_str().unwrap().contains("key2 revoked at ")),
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

/// What one delivery looked like on the wire.
#[derive(Clone, Debug)]
struct Delivery {
    path: String,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

/// An HTTP endpoint that records every request, raw, on any path.
async fn raw_receiver() -> (String, Arc<Mutex<Vec<Delivery>>>) {
    let got = Arc::new(Mutex::new(Vec::<Delivery>::new()));
    let app = axum::Router::new()
        .route(
            "/{kind}",
            axum::routing::post(
                |State(g): State<Arc<Mutex<Vec<Delivery>>>>,
                 axum::extract::Path(kind): axum::extract::Path<String>,
                 headers: axum::http::HeaderMap,
                 body: axum::body::Bytes| async move {
                    g.lock().unwrap().push(Delivery {
                        path: kind,
                        headers,
                        body: body.to_vec(),
                    });
                    "ok"
                },
            ),
        )
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_format_reaches_its_receiver_and_json_is_signed() {
    let start = Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap();
    let setup = Setup::new(start);
    let (base, got) = raw_receiver().await;
    let secret = setup.dir().join("webhook.secret");
    std::fs::write(&secret, "s3cret-signing-key\n").unwrap();
    let settings = format!(
        "[rotation]\ngrace = \"0s\"\n[drift]\ninterval = \"7d\"\n\
         [[notify]]\nwebhook = \"{base}/json\"\nevents = [\"completed\"]\nsecret_file = \"{}\"\n\
         [[notify]]\nwebhook = \"{base}/slack\"\nevents = [\"completed\"]\nformat = \"slack\"\n\
         [[notify]]\nwebhook = \"{base}/teams\"\nevents = [\"completed\"]\nformat = \"teams\"\n\
         [[notify]]\nwebhook = \"{base}/quiet\"\n",
        secret.display()
    );
    setup.write_plan("demo", &setup.plan_text(Consumers::KeyVault, &settings));
    let daemon = setup.start().await;
    let reply = daemon
        .request(Request::RotateNow {
            plan: "demo".into(),
            mode: Mode::Scheduled,
            grace: None,
            dry_run: false,
            by: Default::default(),
        })
        .await
        .expect("the rotation runs");
    assert!(
        matches!(&reply, Answer::Rotation { report } if report.exit() == Exit::Ok),
        "{reply:?}"
    );
    let deliveries = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let d = got.lock().unwrap().clone();
            if d.len() >= 3 {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("three deliveries");
    let by = |kind: &str| -> &Delivery {
        deliveries
            .iter()
            .find(|d| d.path == kind)
            .unwrap_or_else(|| panic!("no {kind} delivery: {deliveries:?}"))
    };

    // keyflip's JSON, signed: the receiver recomputes the HMAC over the raw body.
    let json_hook = by("json");
    let body: Value = serde_json::from_slice(&json_hook.body).unwrap();
    assert_eq!(body["schema"], "keyflip.notification/v1");
    assert_eq!(body["event"], "completed");
    assert_eq!(body["title"], "demo: rotation completed");
    assert!(
        body["summary"]
            .as_str()
            .unwrap()
            .starts_with("Completed: consumers on key2"),
        "{body:#}"
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"s3cret-signing-key");
    let want = ring::hmac::sign(&key, &json_hook.body);
    let hex: String = want.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        json_hook.headers["x-keyflip-signature"],
        format!("sha256={hex}").as_str()
    );
    assert_eq!(json_hook.headers["x-keyflip-event"], "completed");

    // Slack: a text fallback and Block Kit blocks within Slack's limits.
    let slack: Value = serde_json::from_slice(&by("slack").body).unwrap();
    assert!(
        slack["text"]
            .as_str()
            .unwrap()
            .starts_with("keyflip demo: rotation completed: ")
    );
    let blocks = slack["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert!(blocks[0]["text"]["text"].as_str().unwrap().chars().count() <= 150);
    let fields = blocks[2]["fields"].as_array().unwrap();
    assert!(fields.len() <= 10 && fields.iter().any(|f| f["text"] == "*Plan*\ndemo"));
    assert!(by("slack").headers.get("x-keyflip-signature").is_none());

    // Teams: a message with one Adaptive Card, as a Workflows webhook takes it.
    let teams: Value = serde_json::from_slice(&by("teams").body).unwrap();
    assert_eq!(teams["type"], "message");
    let card = &teams["attachments"][0];
    assert_eq!(
        card["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(card["content"]["type"], "AdaptiveCard");
    assert_eq!(card["content"]["version"], "1.4");
    assert_eq!(
        card["content"]["body"][0]["text"],
        "keyflip demo: rotation completed"
    );
    assert!(
        card["content"]["body"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["type"] == "FactSet"),
        "{teams:#}"
    );

    // A webhook without `events` does not hear of routine completions.
    daemon.settle().await;
    assert!(
        !got.lock().unwrap().iter().any(|d| d.path == "quiet"),
        "completed is opt-in"
    );
    let (_, metrics) = daemon.http_get("/metrics").await;
    assert!(
        metrics
            .contains("keyflip_notifications_total{event=\"completed\",result=\"delivered\"} 3\n"),
        "{metrics}"
    );
    assert_eq!(daemon.stop().await, Exit::Ok);
}

/// Moves the twin's clock up to the daemon's manual clock, so the twin's simulated
/// clients have signed (and its logs hold) what the skipped time would have put there.
async fn twin_catches_up(setup: &Setup) {
    use keyflip::clock::Clock as _;
    let twin_now = Utc::now() + setup.twin.clock_offset().await;
    let behind = setup.clock.now() - twin_now;
    if behind > TimeDelta::zero() {
        setup
            .twin
            .advance_clock(behind.num_milliseconds() as f64 / 1000.0)
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_the_usage_gate_parks_sends_usage_gate_hold_naming_the_caller() {
    // The daemon's clock starts at the twin's, and the twin's follows it: the demo
    // world's forgotten client (legacy-nightly-export, 10.42.7.19, in no plan) signs
    // with key1 every 30 s of twin time, so the gate sees it while it holds.
    let twin = crate::support::twin::TestTwin::start();
    let start = Utc::now() + twin.clock_offset().await;
    let setup = Setup::with_twin(twin, start);
    let hook = Receiver::start().await;
    let settings = format!(
        "[rotation]\ngrace = \"0s\"\n[drift]\ninterval = \"7d\"\n\n[usage_gate]\nworkspace = \"/subscriptions/3c9e5b1d-2a4f-4e6b-9c8d-0f1e2d3c4b5a/resourceGroups/rg-datascience/providers/Microsoft.OperationalInsights/workspaces/log-datasci\"\nworkspace_id = \"4e1d2c3b-5a6f-4b7c-8d9e-0f1a2b3c4d5e\"\nservices = [\"blob\"]\ningestion_latency = \"3m\"\nquiet_period = \"1m\"\nrecheck = \"1m\"\ndeadline = \"5m\"\n\n[[notify]]\nwebhook = \"{}\"\nevents = [\"usage-gate-hold\", \"needs-attention\"]\n",
        hook.url
    );
    setup.write_plan("demo", &setup.plan_text(Consumers::KeyVault, &settings));
    let (key1, _) = setup.twin.keys("stdatasci001").await;
    let daemon = setup.start().await;

    let rotate = daemon.request(Request::RotateNow {
        plan: "demo".into(),
        mode: Mode::Scheduled,
        grace: None,
        dry_run: false,
        by: Default::default(),
    });
    let drive = async {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            if hook.all().iter().any(|b| b["event"] == "usage-gate-hold") {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the gate never parked the rotation: {:?}",
                hook.all()
            );
            // Twenty seconds at a time: the gate waits minutes (ingestion latency,
            // quiet period, rechecks), and the twin's clock follows.
            setup.advance(TimeDelta::seconds(20));
            twin_catches_up(&setup).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (reply, ()) = tokio::join!(rotate, drive);
    let reply = reply.expect("the rotation runs");
    assert!(
        matches!(&reply, Answer::Rotation { report } if report.exit() == Exit::NeedsAttention),
        "{reply:?}"
    );

    let bodies = hook.wait_for("usage-gate-hold", 1).await;
    let held = bodies
        .iter()
        .find(|b| b["event"] == "usage-gate-hold")
        .unwrap();
    assert_eq!(held["schema"], "keyflip.notification/v1");
    assert_eq!(held["plan"], "demo");
    assert_eq!(held["severity"], "critical");
    assert_eq!(held["outcome"], "needs_attention");
    assert!(held["rotation_id"].is_string());
    // The root cause first, then who: one line per caller, named by address and agent.
    assert!(
        held["summary"].as_str().unwrap().starts_with(
            "The usage gate holds the retire: 1 caller(s) still sign with the old key"
        ),
        "{held:#}"
    );
    let details = held["details"].as_array().unwrap();
    assert_eq!(details.len(), 1, "{held:#}");
    let caller = details[0].as_str().unwrap();
    assert!(caller.contains("10.42.7.19"), "{caller}");
    assert!(caller.contains("nightly-export/2.3"), "{caller}");
    assert!(
        held["next_step"]
            .as_str()
            .unwrap()
            .contains("keyflip rotate resume demo"),
        "{held:#}"
    );
    // A needs-attention is sent too, as documented.
    assert!(
        bodies.iter().any(|b| b["event"] == "needs-attention"),
        "{bodies:?}"
    );
    // Held, not retired: the old key still works for the caller.
    let (key1_now, _) = setup.twin.keys("stdatasci001").await;
    assert_eq!(key1_now, key1, "the old key was not retired");
    let all = serde_json::to_string(&hook.all()).unwrap();
    assert!(!all.contains(&key1), "no key in a notification");
    let (_, metrics) = daemon.http_get("/metrics").await;
    assert!(
        metrics.contains("keyflip_usage_gate_callers{plan=\"demo\"} 1\n"),
        "{metrics}"
    );
    assert_eq!(daemon.stop().await, Exit::Ok);
}
