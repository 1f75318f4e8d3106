//! Webhook notifications: each plan's `[[notify]]` webhooks receive a JSON
//! [`Notification`] on the events they subscribe to (`failure`, `needs-attention`,
//! `incident`, `drift`, `usage-gate-hold`: the usage gate parked a rotation, its
//! `details` one line per caller still signing with the old key).
//!
//! The body (schema `keyflip.notification/v1`, documented in `docs/operations.md`):
//!
//! ```json
//! {"schema": "keyflip.notification/v1", "event": "failure", "plan": "demo",
//!  "account": "/subscriptions/…/storageAccounts/stdatasci001",
//!  "at": "2026-03-01T03:00:12Z", "summary": "one line",
//!  "rotation_id": "…" | null, "outcome": "rolled_back" | null, "details": ["…"]}
//! ```
//!
//! Promises: delivery never blocks the scheduler (each is its own task); each
//! webhook gets a bounded number of attempts, each with a timeout, retried only on
//! network errors, 408, 429 and 5xx; a notification never carries a key (its text
//! comes from outcomes and drift findings, which name keys and fingerprints only);
//! webhook URLs are logged by host only, since chat webhooks carry their token in the
//! path.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::task::TaskTracker;

use super::metrics::Metrics;
use crate::plan::{NotifyEvent, Plan};

pub const SCHEMA: &str = "keyflip.notification/v1";

/// One event, as posted to a webhook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Notification {
    pub schema: &'static str,
    pub event: &'static str,
    pub plan: String,
    pub account: String,
    pub at: DateTime<Utc>,
    pub summary: String,
    pub rotation_id: Option<String>,
    /// `completed`, `rolled_back`, `refused`, `needs_attention` or `error`.
    pub outcome: Option<String>,
    pub details: Vec<String>,
}

impl Notification {
    pub fn new(
        event: NotifyEvent,
        plan: &Plan,
        at: DateTime<Utc>,
        summary: String,
    ) -> Notification {
        Notification {
            schema: SCHEMA,
            event: event.as_str(),
            plan: plan.name.clone(),
            account: plan.storage_account.to_string(),
            at,
            summary,
            rotation_id: None,
            outcome: None,
            details: Vec::new(),
        }
    }
}

/// How hard delivery tries. Production keeps the defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeliveryOptions {
    pub attempts: u32,
    /// Per attempt, connection included.
    pub timeout: Duration,
    /// Before the second attempt; doubles after.
    pub backoff: Duration,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        DeliveryOptions {
            attempts: 3,
            timeout: Duration::from_secs(10),
            backoff: Duration::from_secs(2),
        }
    }
}

/// Posts notifications to webhooks.
#[derive(Clone)]
pub struct Notifier {
    client: reqwest::Client,
    options: DeliveryOptions,
    metrics: Arc<Metrics>,
    tracker: TaskTracker,
}

impl Notifier {
    /// `ca_bundle` (the configuration's `[cloud] ca_bundle`, for TLS-inspecting
    /// proxies) is added to the system roots.
    pub fn new(
        ca_bundle: Option<&std::path::Path>,
        options: DeliveryOptions,
        metrics: Arc<Metrics>,
        tracker: TaskTracker,
    ) -> Result<Notifier, String> {
        let mut builder = reqwest::Client::builder()
            .timeout(options.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("keyflip/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_bundle {
            let pem = std::fs::read(path)
                .map_err(|e| format!("cannot read the CA bundle {}: {e}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("the CA bundle {} is not PEM: {e}", path.display()))?;
            builder = builder.tls_certs_merge(certs);
        }
        let client = builder
            .build()
            .map_err(|e| format!("cannot build the webhook HTTP client: {e}"))?;
        Ok(Notifier {
            client,
            options,
            metrics,
            tracker,
        })
    }

    /// Posts `notification` to every webhook of `plan` that wants `event`, in the
    /// background.
    pub fn send(&self, plan: &Plan, event: NotifyEvent, notification: Notification) {
        let body = Arc::new(notification);
        for hook in plan.notify.iter().filter(|h| h.wants(event)) {
            let this = self.clone();
            let url = hook.url.clone();
            let body = body.clone();
            self.tracker
                .spawn(async move { this.deliver(url, event, &body).await });
        }
    }

    async fn deliver(&self, url: url::Url, event: NotifyEvent, body: &Notification) {
        let host = url.host_str().unwrap_or("?").to_owned();
        let json = match serde_json::to_vec(body) {
            Ok(json) => json,
            Err(e) => {
                tracing::error!(plan = %body.plan, error = %e, "cannot encode the notification");
                return;
            }
        };
        let mut backoff = self.options.backoff;
        for attempt in 1..=self.options.attempts.max(1) {
            let result = self
                .client
                .post(url.clone())
                .header("content-type", "application/json")
                .body(json.clone())
                .send()
                .await;
            let retry = match &result {
                Ok(r) if r.status().is_success() => {
                    tracing::info!(plan = %body.plan, event = event.as_str(), webhook_host = %host, "notification delivered");
                    self.metrics.notification(event.as_str(), "delivered");
                    return;
                }
                Ok(r) => {
                    let status = r.status().as_u16();
                    tracing::warn!(plan = %body.plan, event = event.as_str(), webhook_host = %host, status, attempt, "webhook refused the notification");
                    status == 408 || status == 429 || (500..600).contains(&status)
                }
                Err(e) => {
                    tracing::warn!(plan = %body.plan, event = event.as_str(), webhook_host = %host, attempt, error = %without_url(e), "webhook unreachable");
                    true
                }
            };
            if !retry || attempt == self.options.attempts {
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff = backoff.saturating_mul(2);
        }
        tracing::error!(plan = %body.plan, event = event.as_str(), webhook_host = %host, "notification not delivered; giving up");
        self.metrics.notification(event.as_str(), "failed");
    }
}

/// reqwest's error text includes the URL; the path may be a token.
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    match std::error::Error::source(e) {
        Some(source) => format!("{kind}: {source}"),
        None => kind.to_owned(),
    }
}
