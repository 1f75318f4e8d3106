//! Prometheus metrics (text exposition format 0.0.4); [`super::endpoint`] serves them.
//!
//! Counters and the step-duration histogram accumulate here as things happen; gauges
//! (key ages, next rotation, last success, needs attention, drift) are computed at
//! scrape time from the scheduler's latest [`Snapshot`] and the injected clock, so
//! they are never stale. Throttling waits come from the shared call budgets.
//!
//! Promise: labels are plan names, outcomes, step kinds and key names; no metric
//! carries a key, a fingerprint or a URL query.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use super::snapshot::Snapshot;
use crate::azure::budget::Budgets;

/// Upper bounds of the step-duration histogram, in seconds. Steps range from a
/// sub-second read to a grace period of hours.
const BUCKETS: [f64; 14] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3_600.0, 86_400.0,
];

#[derive(Clone, Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (bound, count) in BUCKETS.iter().zip(self.counts.iter_mut()) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }
}

#[derive(Debug, Default)]
struct Counters {
    rotations: BTreeMap<(String, &'static str), u64>,
    steps: BTreeMap<String, Histogram>,
    drift_checks: BTreeMap<(String, &'static str), u64>,
    drift_findings: BTreeMap<(String, &'static str), u64>,
    notifications: BTreeMap<(&'static str, &'static str), u64>,
    reloads: BTreeMap<&'static str, u64>,
    /// Callers the usage gate last found still signing with the old key, per plan.
    usage_gate_callers: BTreeMap<String, u64>,
}

/// The daemon's metrics. Shared behind an `Arc`; every method is cheap.
#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<Counters>,
}

impl Metrics {
    fn with<T>(&self, f: impl FnOnce(&mut Counters) -> T) -> T {
        f(&mut self.counters.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A rotation run ended: `completed`, `rolled_back`, `refused`,
    /// `needs_attention`, `interrupted` or `error`.
    pub fn rotation(&self, plan: &str, outcome: &'static str) {
        self.with(|c| *c.rotations.entry((plan.to_owned(), outcome)).or_default() += 1);
    }

    /// A rotation step finished; `kind` is the command's kind (`bind`, `regenerate`, ...).
    pub fn step(&self, kind: &str, duration: Duration) {
        self.with(|c| {
            c.steps
                .entry(kind.to_owned())
                .or_default()
                .observe(duration.as_secs_f64())
        });
    }

    /// A drift check ran: `ok`, `drift` or `error`.
    pub fn drift_check(&self, plan: &str, result: &'static str) {
        self.with(|c| *c.drift_checks.entry((plan.to_owned(), result)).or_default() += 1);
    }

    /// A drift finding was reported for the first time: `consumer`, `key_regenerated`
    /// or `unknown_version`.
    pub fn drift_finding(&self, plan: &str, kind: &'static str) {
        self.with(|c| *c.drift_findings.entry((plan.to_owned(), kind)).or_default() += 1);
    }

    /// A webhook delivery ended: `delivered` or `failed`.
    pub fn notification(&self, event: &'static str, result: &'static str) {
        self.with(|c| *c.notifications.entry((event, result)).or_default() += 1);
    }

    /// How many callers the usage gate found still signing with the old key when the
    /// plan's last rotation ended (0 once one completes).
    pub fn usage_gate_callers(&self, plan: &str, callers: u64) {
        self.with(|c| {
            c.usage_gate_callers.insert(plan.to_owned(), callers);
        });
    }

    /// A reload (SIGHUP) was `applied` or `rejected`.
    pub fn reload(&self, result: &'static str) {
        self.with(|c| *c.reloads.entry(result).or_default() += 1);
    }

    /// The exposition text: counters, then gauges from `snapshot` at `now`.
    pub fn render(
        &self,
        snapshot: &Snapshot,
        budgets: Option<&Budgets>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> String {
        let mut out = String::new();
        self.with(|c| {
            family(
                &mut out,
                "keyflip_rotations_total",
                "counter",
                "Rotation runs by plan and how they ended.",
            );
            for ((plan, outcome), n) in &c.rotations {
                sample(
                    &mut out,
                    "keyflip_rotations_total",
                    &[("plan", plan), ("outcome", outcome)],
                    *n as f64,
                );
            }
            family(
                &mut out,
                "keyflip_rotation_step_duration_seconds",
                "histogram",
                "Duration of rotation steps (intent to result) by step kind.",
            );
            for (kind, h) in &c.steps {
                let name = "keyflip_rotation_step_duration_seconds";
                for (bound, count) in BUCKETS.iter().zip(h.counts.iter()) {
                    sample(
                        &mut out,
                        &format!("{name}_bucket"),
                        &[("step", kind), ("le", &bound.to_string())],
                        *count as f64,
                    );
                }
                sample(
                    &mut out,
                    &format!("{name}_bucket"),
                    &[("step", kind), ("le", "+Inf")],
                    h.count as f64,
                );
                sample(&mut out, &format!("{name}_sum"), &[("step", kind)], h.sum);
                sample(
                    &mut out,
                    &format!("{name}_count"),
                    &[("step", kind)],
                    h.count as f64,
                );
            }
            family(
                &mut out,
                "keyflip_drift_checks_total",
                "counter",
                "Drift checks by plan and result (ok, drift, error).",
            );
            for ((plan, result), n) in &c.drift_checks {
                sample(
                    &mut out,
                    "keyflip_drift_checks_total",
                    &[("plan", plan), ("result", result)],
                    *n as f64,
                );
            }
            family(
                &mut out,
                "keyflip_drift_findings_total",
                "counter",
                "New drift findings by plan and kind.",
            );
            for ((plan, kind), n) in &c.drift_findings {
                sample(
                    &mut out,
                    "keyflip_drift_findings_total",
                    &[("plan", plan), ("kind", kind)],
                    *n as f64,
                );
            }
            family(
                &mut out,
                "keyflip_notifications_total",
                "counter",
                "Webhook deliveries by event and result.",
            );
            for ((event, result), n) in &c.notifications {
                sample(
                    &mut out,
                    "keyflip_notifications_total",
                    &[("event", event), ("result", result)],
                    *n as f64,
                );
            }
            family(
                &mut out,
                "keyflip_reloads_total",
                "counter",
                "Configuration reloads (SIGHUP) by result.",
            );
            for (result, n) in &c.reloads {
                sample(
                    &mut out,
                    "keyflip_reloads_total",
                    &[("result", result)],
                    *n as f64,
                );
            }
        });

        if let Some(budgets) = budgets {
            let waits = budgets.waits();
            family(
                &mut out,
                "keyflip_throttle_waits_total",
                "counter",
                "Calls that waited for the shared call budget, by budget.",
            );
            for w in &waits {
                sample(
                    &mut out,
                    "keyflip_throttle_waits_total",
                    &[("budget", w.class.as_str())],
                    w.count as f64,
                );
            }
            family(
                &mut out,
                "keyflip_throttle_wait_seconds_total",
                "counter",
                "Time calls spent waiting for the shared call budget, by budget.",
            );
            for w in &waits {
                sample(
                    &mut out,
                    "keyflip_throttle_wait_seconds_total",
                    &[("budget", w.class.as_str())],
                    w.total.as_secs_f64(),
                );
            }
        }

        self.with(|c| {
            family(
                &mut out,
                "keyflip_usage_gate_callers",
                "gauge",
                "Callers still signing with the old key when the usage gate parked the plan's last rotation (0 after a completed one).",
            );
            for (plan, n) in &c.usage_gate_callers {
                sample(
                    &mut out,
                    "keyflip_usage_gate_callers",
                    &[("plan", plan)],
                    *n as f64,
                );
            }
        });
        family(
            &mut out,
            "keyflip_key_age_seconds",
            "gauge",
            "Age of each storage key at scrape time, from keyCreationTime at the last observation.",
        );
        for p in &snapshot.plans {
            let Some(keys) = &p.keys else { continue };
            for (name, key) in [("key1", &keys.key1), ("key2", &keys.key2)] {
                if let Some(created) = key.created {
                    sample(
                        &mut out,
                        "keyflip_key_age_seconds",
                        &[("plan", &p.name), ("key", name)],
                        seconds(now - created),
                    );
                }
            }
        }
        family(
            &mut out,
            "keyflip_next_rotation_timestamp_seconds",
            "gauge",
            "When the plan next rotates by schedule or retry (unix time).",
        );
        for p in &snapshot.plans {
            if let Some(at) = p.next_due {
                sample(
                    &mut out,
                    "keyflip_next_rotation_timestamp_seconds",
                    &[("plan", &p.name)],
                    unix(at),
                );
            }
        }
        family(
            &mut out,
            "keyflip_last_success_timestamp_seconds",
            "gauge",
            "When the plan's last completed rotation ended (unix time).",
        );
        for p in &snapshot.plans {
            if let Some(at) = p.last_success {
                sample(
                    &mut out,
                    "keyflip_last_success_timestamp_seconds",
                    &[("plan", &p.name)],
                    unix(at),
                );
            }
        }
        family(
            &mut out,
            "keyflip_plan_needs_attention",
            "gauge",
            "1 when the plan is parked and needs a human.",
        );
        family(
            &mut out,
            "keyflip_plan_failed_cycles",
            "gauge",
            "Failed rotation cycles in a row.",
        );
        family(
            &mut out,
            "keyflip_rotation_in_progress",
            "gauge",
            "1 while a rotation, resume or repair of the plan runs.",
        );
        family(
            &mut out,
            "keyflip_drift",
            "gauge",
            "Current drift findings of the plan.",
        );
        for p in &snapshot.plans {
            let labels = [("plan", p.name.as_str())];
            sample(
                &mut out,
                "keyflip_plan_needs_attention",
                &labels,
                f64::from(u8::from(p.parked.is_some())),
            );
            sample(
                &mut out,
                "keyflip_plan_failed_cycles",
                &labels,
                f64::from(p.failures),
            );
            sample(
                &mut out,
                "keyflip_rotation_in_progress",
                &labels,
                f64::from(u8::from(p.running.is_some())),
            );
            sample(&mut out, "keyflip_drift", &labels, p.drift.len() as f64);
        }
        let build = crate::build_info::BuildInfo::current();
        family(
            &mut out,
            "keyflip_build_info",
            "gauge",
            "Always 1; the labels say which build runs (as `keyflip version`).",
        );
        sample(&mut out, "keyflip_build_info", &build.metric_labels(), 1.0);
        family(
            &mut out,
            "keyflip_ready",
            "gauge",
            "1 once the journal is recovered and the daemon schedules.",
        );
        sample(
            &mut out,
            "keyflip_ready",
            &[],
            f64::from(u8::from(snapshot.ready && !snapshot.stopping)),
        );
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Label values escape backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn seconds(d: chrono::TimeDelta) -> f64 {
    d.num_milliseconds() as f64 / 1_000.0
}

fn unix(at: chrono::DateTime<chrono::Utc>) -> f64 {
    at.timestamp_millis() as f64 / 1_000.0
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone as _, Utc};

    use super::*;
    use crate::daemon::snapshot::PlanSnapshot;
    use crate::journal::{ObservedKeys, Parked};
    use crate::rotation::machine::KeyState;
    use crate::secret::Fingerprint;

    #[test]
    fn exposition_has_counters_histograms_and_gauges() {
        let m = Metrics::default();
        m.rotation("demo", "completed");
        m.rotation("demo", "completed");
        m.rotation("odd\"plan", "error");
        m.step("bind", Duration::from_millis(300));
        m.step("bind", Duration::from_secs(20));
        let now = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
        let fp = Fingerprint::from_hex(&"ab".repeat(16)).unwrap();
        let snapshot = Snapshot {
            evaluated_at: Some(now),
            ready: true,
            stopping: false,
            plans: vec![PlanSnapshot {
                name: "demo".into(),
                account: "/subscriptions/s/x".into(),
                next_due: Some(now + chrono::TimeDelta::hours(1)),
                due_reason: "not-yet".into(),
                running: None,
                last_started: None,
                last_success: Some(now),
                failures: 0,
                retry_at: None,
                parked: Some(Parked {
                    at: now,
                    reason: "r".into(),
                }),
                keys: Some(ObservedKeys {
                    at: now,
                    key1: KeyState {
                        fingerprint: fp,
                        created: Some(now - chrono::TimeDelta::days(2)),
                    },
                    key2: KeyState {
                        fingerprint: fp,
                        created: None,
                    },
                }),
                drift: vec!["x".into()],
            }],
        };
        let text = m.render(&snapshot, None, now);
        assert!(
            text.contains("keyflip_rotations_total{plan=\"demo\",outcome=\"completed\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("keyflip_rotations_total{plan=\"odd\\\"plan\",outcome=\"error\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "keyflip_rotation_step_duration_seconds_bucket{step=\"bind\",le=\"0.5\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "keyflip_rotation_step_duration_seconds_bucket{step=\"bind\",le=\"30\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("keyflip_rotation_step_duration_seconds_count{step=\"bind\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("keyflip_key_age_seconds{plan=\"demo\",key=\"key1\"} 172800\n"),
            "{text}"
        );
        assert!(!text.contains("key=\"key2\""), "no creation time, no age");
        assert!(text.contains(&format!(
            "keyflip_next_rotation_timestamp_seconds{{plan=\"demo\"}} {}\n",
            now.timestamp() + 3600
        )));
        assert!(text.contains("keyflip_plan_needs_attention{plan=\"demo\"} 1\n"));
        assert!(text.contains("keyflip_drift{plan=\"demo\"} 1\n"));
        assert!(
            !text.contains(&"ab".repeat(16)),
            "fingerprints stay out of metrics"
        );
        let build = crate::build_info::BuildInfo::current();
        let line = text
            .lines()
            .find(|l| l.starts_with("keyflip_build_info{"))
            .unwrap_or_else(|| panic!("no keyflip_build_info in {text}"));
        assert!(line.ends_with("} 1"), "{line}");
        for (label, value) in [
            ("version", build.version),
            ("commit", build.commit),
            ("dirty", build.dirty),
            ("target", build.target),
            ("azure_identity", build.azure_sdk[1].version),
        ] {
            assert!(line.contains(&format!("{label}=\"{value}\"")), "{line}");
        }
    }
}
