//! Webhook notifications: each plan's `[[notify]]` webhooks receive a
//! [`Notification`] on the events they subscribe to (`completed`, `failure`,
//! `rolled-back`, `needs-attention`, `incident`, `drift`, `usage-gate-hold`: the usage
//! gate parked a rotation, its `details` one line per caller still signing with the
//! old key), in the format each asks for ([`body`]): keyflip's own JSON
//! (`keyflip.notification/v1`, documented in `docs/operations.md`), a Slack
//! incoming-webhook message, or a Microsoft Teams message carrying an Adaptive Card
//! (for a Teams Workflows webhook). With `secret_file` the body is signed:
//! `X-Keyflip-Signature: sha256=<hex HMAC-SHA256 of the body>`.
//!
//! A notification says the root cause first, in one sentence (`summary`: "Step 4,
//! bind Key Vault secret kv/x to key2, failed: 403 …"), then the structured fields
//! (what happened, failures in a row, what to do next).
//!
//! Promises: delivery never blocks the scheduler (each is its own task); each
//! webhook gets a bounded number of attempts, each with a timeout, retried only on
//! network errors, 408, 429 and 5xx; a notification never carries a key (its text
//! comes from outcomes and drift findings, which name keys and fingerprints only);
//! webhook URLs are logged by host only, since chat webhooks carry their token in the
//! path; a signing key is read from its file for each delivery and never logged.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use tokio_util::task::TaskTracker;

use super::kept::KeptPlan;
use super::metrics::Metrics;
use crate::plan::{NotifyEvent, Webhook, WebhookFormat};
use crate::rotation::machine::{Cause, ConsumerRef, Outcome};
use crate::rotation::{RotationReport, describe};

pub(crate) const SCHEMA: &str = "keyflip.notification/v1";

/// The signature header: `sha256=` and the hex HMAC-SHA256 of the body.
pub(crate) const SIGNATURE_HEADER: &str = "x-keyflip-signature";

/// How urgent, for chat colours and routing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

/// One event, as keyflip's own format posts it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Notification {
    pub schema: &'static str,
    pub event: &'static str,
    pub severity: Severity,
    /// One line for a list: `demo: rotation rolled back`.
    pub title: String,
    /// The root cause (for good news, the result), one sentence.
    pub summary: String,
    pub plan: String,
    pub account: String,
    pub at: DateTime<Utc>,
    pub rotation_id: Option<String>,
    /// `completed`, `rolled_back`, `refused`, `needs_attention` or `error`.
    pub outcome: Option<String>,
    /// Failed cycles in a row, for failures and parking.
    pub failures: Option<u32>,
    /// What happens next, or what a person should do.
    pub next_step: Option<String>,
    pub details: Vec<String>,
}

/// `outcome` labels, as metrics and notifications spell them.
pub(crate) fn outcome_label(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Completed { .. } => "completed",
        Outcome::RolledBack { .. } => "rolled_back",
        Outcome::Refused { .. } => "refused",
        Outcome::NeedsAttention { .. } => "needs_attention",
    }
}

/// `text` as a sentence: a capital first letter (unless the first word is a name
/// such as `key2`) and a full stop.
fn sentence(text: &str) -> String {
    let text = text.trim().trim_end_matches(['.', ';']);
    let first = text.split([' ', ',', ':']).next().unwrap_or_default();
    let word = first.chars().all(|c| c.is_ascii_lowercase());
    let mut chars = text.chars();
    let mut out: String = match chars.next() {
        Some(c) if word => c.to_uppercase().chain(chars).collect(),
        Some(_) => text.to_owned(),
        None => return String::new(),
    };
    out.push('.');
    out
}

/// The report's consumers, to name them by their short label.
fn consumers(report: Option<&RotationReport>) -> Vec<&ConsumerRef> {
    report
        .map(|r| r.consumers.iter().map(|c| &c.consumer).collect())
        .unwrap_or_default()
}

/// Why an outcome is what it is, first, in one sentence; and what else to say.
pub(crate) fn root_cause(
    outcome: &Outcome,
    report: Option<&RotationReport>,
) -> (String, Vec<String>) {
    let refs = consumers(report);
    let short = |t: String| crate::commands::render::shorten(t, &refs);
    match outcome {
        Outcome::RolledBack {
            cause, discarded, ..
        } => {
            let cause = match cause {
                Cause::Failed {
                    seq,
                    action,
                    reason,
                } => short(format!(
                    "step {seq}, {}, failed: {reason}",
                    describe::step(action)
                )),
                other => short(other.to_string()),
            };
            let mut details = vec![format!(
                "rolled back: every consumer is on the old key, which still works{}",
                discarded.map_or_else(String::new, |k| format!("; the staged {k} was discarded"))
            )];
            if let Some(r) = report {
                details.extend(r.warnings.iter().map(|w| short(w.to_string())));
            }
            (sentence(&cause), details)
        }
        Outcome::Refused { reasons } => {
            let first = reasons.first().map_or_else(
                || "the precheck refused".to_owned(),
                |r| short(r.to_string()),
            );
            let details =
                std::iter::once("refused before any change: nothing was changed".to_owned())
                    .chain(reasons.iter().skip(1).map(|r| short(r.to_string())))
                    .collect();
            (sentence(&first), details)
        }
        Outcome::NeedsAttention { reason, .. } => {
            (sentence(&short(reason.to_string())), Vec::new())
        }
        Outcome::Completed { .. } => (sentence(&short(outcome.to_string())), Vec::new()),
    }
}

impl Notification {
    fn base(
        event: NotifyEvent,
        severity: Severity,
        plan: &KeptPlan,
        at: DateTime<Utc>,
        what: &str,
        summary: String,
    ) -> Notification {
        Notification {
            schema: SCHEMA,
            event: event.as_str(),
            severity,
            title: format!("{}: {what}", plan.name),
            summary,
            plan: plan.name.to_string(),
            account: plan.account().to_owned(),
            at,
            rotation_id: None,
            outcome: None,
            failures: None,
            next_step: None,
            details: Vec::new(),
        }
    }

    /// A rotation completed (scheduled or asked for).
    pub(super) fn completed(
        plan: &KeptPlan,
        report: &RotationReport,
        at: DateTime<Utc>,
    ) -> Notification {
        let (summary, _) = report
            .outcome
            .as_ref()
            .map(|o| root_cause(o, Some(report)))
            .unwrap_or_default();
        let mut n = Self::base(
            NotifyEvent::Completed,
            Severity::Info,
            plan,
            at,
            "rotation completed",
            summary,
        );
        n.rotation_id = Some(report.rotation_id.clone());
        n.outcome = Some("completed".into());
        n.details = report.warnings.iter().map(ToString::to_string).collect();
        n
    }

    /// An incident rotation completed: the leaked key is dead.
    pub(super) fn incident(
        plan: &KeptPlan,
        report: &RotationReport,
        at: DateTime<Utc>,
    ) -> Notification {
        let killed: Vec<String> = report
            .regenerated
            .iter()
            .map(|r| {
                format!(
                    "{} {} at {}",
                    r.key,
                    describe::regeneration(report.mode, r.key, r.purpose),
                    r.at.format("%Y-%m-%dT%H:%M:%SZ")
                )
            })
            .collect();
        let summary = sentence(&format!(
            "incident rotation finished: {}",
            report.outcome.as_ref().map_or_else(
                || "unfinished".to_owned(),
                |o| describe::outcome(o, report.mode, &report.plan)
            )
        ));
        let mut n = Self::base(
            NotifyEvent::Incident,
            Severity::Warning,
            plan,
            at,
            "incident rotation completed",
            summary,
        );
        n.rotation_id = Some(report.rotation_id.clone());
        n.outcome = Some("completed".into());
        n.next_step = Some(crate::rotation::SAS_WARNING.to_owned());
        n.details = killed
            .into_iter()
            .chain(
                report
                    .incident_report
                    .iter()
                    .map(|p| format!("incident report: {}", p.markdown.display())),
            )
            .chain(report.warnings.iter().map(ToString::to_string))
            .collect();
        n
    }

    /// A rotation cycle failed (`report` when a rotation ran; else `error` says why it
    /// could not), `failures` in a row; `retry_at` when the daemon tries again.
    pub(super) fn failed_cycle(
        plan: &KeptPlan,
        report: Option<&RotationReport>,
        error: &str,
        failures: u32,
        retry_at: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    ) -> Notification {
        let outcome = report.and_then(|r| r.outcome.as_ref());
        let (summary, details) = match outcome {
            Some(o) => root_cause(o, report),
            None => (sentence(error), Vec::new()),
        };
        let (event, what) = match outcome {
            Some(Outcome::RolledBack { .. }) => (NotifyEvent::RolledBack, "rotation rolled back"),
            Some(Outcome::Refused { .. }) => (NotifyEvent::Failure, "rotation refused"),
            _ => (NotifyEvent::Failure, "rotation could not run"),
        };
        let mut n = Self::base(event, Severity::Warning, plan, at, what, summary);
        n.rotation_id = report.map(|r| r.rotation_id.clone());
        n.outcome = Some(outcome.map_or("error", outcome_label).to_owned());
        n.failures = Some(failures);
        n.next_step = retry_at.map(|t| {
            format!(
                "keyflip retries at {} ({failures} failed in a row); fix the cause, or run `keyflip rotate now {}`",
                t.format("%Y-%m-%d %H:%M:%S UTC"),
                plan.name
            )
        });
        n.details = details;
        n
    }

    /// The plan was parked: `cause` is the root cause (the last failure's, or the
    /// rotation's own), `failures` how many cycles failed in a row.
    pub(super) fn needs_attention(
        plan: &KeptPlan,
        report: Option<&RotationReport>,
        cause: &str,
        failures: u32,
        at: DateTime<Utc>,
    ) -> Notification {
        let outcome = report.and_then(|r| r.outcome.as_ref());
        let (summary, mut details) = match outcome {
            Some(o) => root_cause(o, report),
            None => (sentence(cause), Vec::new()),
        };
        if failures > 1 {
            details.insert(0, format!("{failures} failed rotation cycles in a row"));
        }
        let mut n = Self::base(
            NotifyEvent::NeedsAttention,
            Severity::Critical,
            plan,
            at,
            "needs attention",
            summary,
        );
        n.rotation_id = report.map(|r| r.rotation_id.clone());
        n.outcome = outcome.map(|o| outcome_label(o).to_owned());
        n.failures = Some(failures);
        n.next_step = Some(format!(
            "no automatic rotations until one succeeds: fix the cause, then `keyflip rotate now {0}` (or `keyflip rotate resume {0}` for an unfinished rotation); `keyflip status --plan {0}` and `keyflip history {0}` show what happened",
            plan.name
        ));
        n.details = details;
        n
    }

    /// The usage gate parked a rotation: `callers` still sign with the old key, one
    /// detail line each (IP, user agent, operation, requests, last seen).
    pub(super) fn usage_gate_hold(
        plan: &KeptPlan,
        report: &RotationReport,
        callers: &[crate::rotation::machine::Caller],
        at: DateTime<Utc>,
    ) -> Notification {
        let mut n = Self::base(
            NotifyEvent::UsageGateHold,
            Severity::Critical,
            plan,
            at,
            "usage gate holds the retire",
            sentence(&format!(
                "the usage gate holds the retire: {} caller(s) still sign with the old key; both keys still work",
                callers.len()
            )),
        );
        n.rotation_id = Some(report.rotation_id.clone());
        n.outcome = Some("needs_attention".into());
        n.next_step = Some(format!(
            "move each caller to the new key (or to Entra ID), then `keyflip rotate resume {0}`; `keyflip rotate resume {0} --force-retire` retires the old key now and breaks them",
            plan.name
        ));
        n.details = callers.iter().map(ToString::to_string).collect();
        n
    }

    /// New drift findings (`first` the first of them); `all` every current one.
    /// `outage`: some consumer holds neither key, so something is down now and the
    /// alert is critical, not a warning.
    pub(super) fn drift(
        plan: &KeptPlan,
        first: &str,
        outage: bool,
        all: Vec<String>,
        at: DateTime<Utc>,
    ) -> Notification {
        let severity = if outage {
            Severity::Critical
        } else {
            Severity::Warning
        };
        let mut n = Self::base(
            NotifyEvent::Drift,
            severity,
            plan,
            at,
            "drift",
            sentence(first),
        );
        n.next_step = Some(match plan.drift.repair {
            true => {
                "keyflip moves every drifted consumer to a key that works now, as one `--adopt` rotation (repair = true)".to_owned()
            }
            false => format!(
                "`keyflip status --plan {0}` shows it; `keyflip rotate now {0} --adopt` moves every consumer to a key that works now",
                plan.name
            ),
        });
        n.details = all;
        n
    }
}

/// Slack's mrkdwn escapes `&`, `<` and `>`.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// At most `max` characters (Slack and Teams limit field lengths).
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The facts every chat format shows under the summary.
fn facts(n: &Notification) -> Vec<(&'static str, String)> {
    let mut facts = vec![
        ("Plan", n.plan.clone()),
        (
            "Account",
            n.account
                .rsplit('/')
                .next()
                .unwrap_or(&n.account)
                .to_owned(),
        ),
        ("Event", n.event.to_owned()),
        ("At", n.at.format("%Y-%m-%d %H:%M:%S UTC").to_string()),
    ];
    if let Some(o) = &n.outcome {
        facts.push(("Outcome", o.replace('_', " ")));
    }
    if let Some(f) = n.failures {
        facts.push(("Failures in a row", f.to_string()));
    }
    if let Some(id) = &n.rotation_id {
        facts.push(("Rotation", id.clone()));
    }
    facts
}

/// The body `format` wants for `n`.
pub fn body(n: &Notification, format: WebhookFormat) -> Value {
    match format {
        WebhookFormat::Json => serde_json::to_value(n).unwrap_or(Value::Null),
        WebhookFormat::Slack => slack(n),
        WebhookFormat::Teams => teams(n),
    }
}

/// A Slack incoming-webhook message: `text` for notifications and clients without
/// blocks, then a header, the summary, the facts and what to do.
fn slack(n: &Notification) -> Value {
    let icon = match n.severity {
        Severity::Info => ":white_check_mark:",
        Severity::Warning => ":warning:",
        Severity::Critical => ":rotating_light:",
    };
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": cut(&format!("keyflip {}", n.title), 150)}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": cut(&format!("{icon} {}", slack_escape(&n.summary)), 3000)}}),
        json!({"type": "section", "fields": facts(n).into_iter().take(10).map(|(k, v)| {
            json!({"type": "mrkdwn", "text": cut(&format!("*{k}*\n{}", slack_escape(&v)), 2000)})
        }).collect::<Vec<_>>()}),
    ];
    if !n.details.is_empty() {
        let list: Vec<String> = n
            .details
            .iter()
            .map(|d| format!("• {}", slack_escape(d)))
            .collect();
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": cut(&list.join("\n"), 3000)}}));
    }
    if let Some(next) = &n.next_step {
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": cut(&format!("*Next:* {}", slack_escape(next)), 3000)}]}));
    }
    json!({
        "text": cut(&format!("keyflip {}: {}", slack_escape(&n.title), slack_escape(&n.summary)), 3000),
        "blocks": blocks,
    })
}

/// A Teams message for a Workflows webhook ("post to a channel when a webhook
/// request is received"): one Adaptive Card (schema 1.4) with the title, the summary,
/// the facts and what to do.
fn teams(n: &Notification) -> Value {
    let color = match n.severity {
        Severity::Info => "Good",
        Severity::Warning => "Warning",
        Severity::Critical => "Attention",
    };
    let mut body = vec![
        json!({"type": "TextBlock", "text": format!("keyflip {}", n.title), "weight": "Bolder", "size": "Medium", "color": color, "wrap": true}),
        json!({"type": "TextBlock", "text": n.summary, "wrap": true}),
        json!({"type": "FactSet", "facts": facts(n).into_iter().map(|(k, v)| json!({"title": k, "value": v})).collect::<Vec<_>>()}),
    ];
    for d in &n.details {
        body.push(json!({"type": "TextBlock", "text": format!("- {d}"), "wrap": true, "spacing": "Small"}));
    }
    if let Some(next) = &n.next_step {
        body.push(json!({"type": "TextBlock", "text": format!("Next: {next}"), "wrap": true, "isSubtle": true}));
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": body,
            },
        }],
    })
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under `key`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let tag = ring::hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// The signing key in `path`: its bytes, a trailing newline dropped.
fn signing_key(path: &std::path::Path) -> Result<zeroize::Zeroizing<Vec<u8>>, String> {
    let mut bytes = zeroize::Zeroizing::new(
        crate::input::read_bytes(path, crate::input::MAX_SECRET_BYTES).map_err(|e| {
            format!(
                "cannot read the webhook secret file {}: {e}",
                path.display()
            )
        })?,
    );
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(format!(
            "the webhook secret file {} is empty",
            path.display()
        ));
    }
    Ok(bytes)
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
pub(crate) struct Notifier {
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
            let pem = crate::input::read_bytes(path, crate::input::MAX_CA_BUNDLE_BYTES)
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

    /// Posts `notification` to every webhook of `plan` that wants its event, in the
    /// background.
    pub(super) fn send(&self, plan: &KeptPlan, notification: Notification) {
        let Some(event) = NotifyEvent::ALL
            .into_iter()
            .find(|e| e.as_str() == notification.event)
        else {
            return;
        };
        let body = Arc::new(notification);
        for hook in plan.notify.iter().filter(|h| h.wants(event)) {
            let this = self.clone();
            let hook = hook.clone();
            let body = body.clone();
            self.tracker
                .spawn(async move { this.deliver(&hook, event, &body).await });
        }
    }

    async fn deliver(&self, hook: &Webhook, event: NotifyEvent, n: &Notification) {
        let host = hook.url.host_str().unwrap_or("?").to_owned();
        let format = hook.format.as_str();
        let failed = |why: &str| {
            tracing::error!(plan = %n.plan, event = event.as_str(), webhook_host = %host, format, error = why, "notification not delivered");
            self.metrics.notification(event.as_str(), "failed");
        };
        let json = match serde_json::to_vec(&body(n, hook.format)) {
            Ok(json) => json,
            Err(e) => return failed(&format!("cannot encode the notification: {e}")),
        };
        let signature = match &hook.secret_file {
            Some(path) => match signing_key(path) {
                Ok(key) => Some(signature(&key, &json)),
                Err(e) => return failed(&e),
            },
            None => None,
        };
        let mut backoff = self.options.backoff;
        for attempt in 1..=self.options.attempts.max(1) {
            let mut request = self
                .client
                .post(hook.url.clone())
                .header("content-type", "application/json")
                .header("x-keyflip-event", event.as_str())
                .body(json.clone());
            if let Some(sig) = &signature {
                request = request.header(SIGNATURE_HEADER, sig);
            }
            let result = request.send().await;
            let retry = match &result {
                Ok(r) if r.status().is_success() => {
                    tracing::info!(plan = %n.plan, event = event.as_str(), webhook_host = %host, format, "notification delivered");
                    self.metrics.notification(event.as_str(), "delivered");
                    return;
                }
                Ok(r) => {
                    let status = r.status().as_u16();
                    tracing::warn!(plan = %n.plan, event = event.as_str(), webhook_host = %host, format, status, attempt, "webhook refused the notification");
                    status == 408 || status == 429 || (500..600).contains(&status)
                }
                Err(e) => {
                    tracing::warn!(plan = %n.plan, event = event.as_str(), webhook_host = %host, format, attempt, error = %without_url(e), "webhook unreachable");
                    true
                }
            };
            if !retry || attempt == self.options.attempts {
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff = backoff.saturating_mul(2);
        }
        failed("no attempt was accepted; giving up");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_the_hex_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn sentences_start_with_a_capital_and_end_with_a_full_stop() {
        assert_eq!(sentence("step 4 failed: 403;"), "Step 4 failed: 403.");
        assert_eq!(
            sentence("key2 was regenerated outside keyflip"),
            "key2 was regenerated outside keyflip."
        );
        assert_eq!(slack_escape("a <b> & c"), "a &lt;b&gt; &amp; c");
        assert_eq!(cut("abcdef", 4), "abc…");
    }
}
