//! Prometheus metrics (text exposition format 0.0.4); [`super::endpoint`] serves them.
//!
//! Counters and the step-duration histogram accumulate here as things happen; gauges
//! (key ages against the plan's policy, next rotation, last success, needs attention,
//! drift) are computed at scrape time from the scheduler's latest [`Snapshot`] and
//! the injected clock, so they are never stale. Throttling waits come from the shared
//! call budgets.
//!
//! Promises: every family is written whole (`HELP`, `TYPE`, then all its samples), so
//! any Prometheus text parser reads it as one family of its type; every counter of a
//! known plan exists from the first scrape, at zero, for every label value it can
//! take (so `rate()` and `increase()` see the first event, and an alert on a missing
//! series never hides one that never fired); labels are plan names, outcomes, step
//! kinds, key names and the other fixed values the docs list; no metric carries a
//! key, a fingerprint or a URL.

use std::collections::{BTreeMap, BTreeSet};
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

/// How a rotation run ended (`keyflip_rotations_total{outcome}`).
pub const OUTCOMES: [&str; 6] = [
    "completed",
    "rolled_back",
    "refused",
    "needs_attention",
    "interrupted",
    "error",
];
/// `keyflip_rotation_step_duration_seconds{step}`: the command's kind.
pub const STEPS: [&str; 8] = [
    "observe",
    "regenerate",
    "verify_key",
    "bind",
    "verify_consumer",
    "disable_versions",
    "commit",
    "wait_until",
];
/// `keyflip_drift_checks_total{result}`.
pub const DRIFT_RESULTS: [&str; 3] = ["ok", "drift", "error"];
/// `keyflip_drift_findings_total{kind}`.
pub const DRIFT_KINDS: [&str; 3] = ["consumer", "key_regenerated", "unknown_version"];
/// `keyflip_notifications_total{result}`.
pub const DELIVERY_RESULTS: [&str; 2] = ["delivered", "failed"];
/// `keyflip_reloads_total{result}`.
pub const RELOAD_RESULTS: [&str; 2] = ["applied", "rejected"];

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
    /// When the daemon started (`keyflip_start_time_seconds`).
    started: Option<chrono::DateTime<chrono::Utc>>,
    rotations: BTreeMap<(String, &'static str), u64>,
    incidents: BTreeMap<String, u64>,
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

/// One family being written: its header once, then its samples.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Family<'a> {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out, name }
    }

    fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        sample(self.out, self.name, "", labels, value);
    }

    /// A histogram's `_bucket`, `_sum` or `_count` sample.
    fn part(&mut self, suffix: &str, labels: &[(&str, &str)], value: f64) {
        sample(self.out, self.name, suffix, labels, value);
    }
}

impl Metrics {
    fn with<T>(&self, f: impl FnOnce(&mut Counters) -> T) -> T {
        f(&mut self.counters.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A rotation run ended: one of [`OUTCOMES`].
    pub fn rotation(&self, plan: &str, outcome: &'static str) {
        self.with(|c| *c.rotations.entry((plan.to_owned(), outcome)).or_default() += 1);
    }

    /// The daemon started at `at` (a restart shows as a new value).
    pub fn started(&self, at: chrono::DateTime<chrono::Utc>) {
        self.with(|c| c.started = Some(at));
    }

    /// An incident rotation (`--leaked`) of `plan` ended, however it ended.
    pub fn incident(&self, plan: &str) {
        self.with(|c| *c.incidents.entry(plan.to_owned()).or_default() += 1);
    }

    /// A rotation step finished; `kind` is the command's kind (one of [`STEPS`]).
    pub fn step(&self, kind: &str, duration: Duration) {
        self.with(|c| {
            c.steps
                .entry(kind.to_owned())
                .or_default()
                .observe(duration.as_secs_f64())
        });
    }

    /// A drift check ran: one of [`DRIFT_RESULTS`].
    pub fn drift_check(&self, plan: &str, result: &'static str) {
        self.with(|c| *c.drift_checks.entry((plan.to_owned(), result)).or_default() += 1);
    }

    /// A drift finding was reported for the first time: one of [`DRIFT_KINDS`].
    pub fn drift_finding(&self, plan: &str, kind: &'static str) {
        self.with(|c| *c.drift_findings.entry((plan.to_owned(), kind)).or_default() += 1);
    }

    /// A webhook delivery of `event` (a `[[notify]]` event name) ended: one of
    /// [`DELIVERY_RESULTS`].
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

    /// A reload (SIGHUP): one of [`RELOAD_RESULTS`].
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
        let plans: BTreeSet<&str> = snapshot.plans.iter().map(|p| p.name.as_str()).collect();
        self.with(|c| {
            per_plan_counter(
                &mut out,
                (
                    "keyflip_rotations_total",
                    "Rotation runs by plan and how they ended.",
                ),
                ("outcome", &OUTCOMES),
                &plans,
                &c.rotations,
            );
            let mut f = Family::new(
                &mut out,
                "keyflip_incident_rotations_total",
                "counter",
                "Incident rotations (--leaked) by plan, however they ended.",
            );
            let incident_plans: BTreeSet<String> = plans
                .iter()
                .map(|p| (*p).to_owned())
                .chain(c.incidents.keys().cloned())
                .collect();
            for plan in incident_plans {
                let n = c.incidents.get(&plan).copied().unwrap_or(0);
                f.sample(&[("plan", &plan)], n as f64);
            }
            let mut f = Family::new(
                &mut out,
                "keyflip_rotation_step_duration_seconds",
                "histogram",
                "Duration of rotation steps (intent to result) by step kind.",
            );
            let kinds: BTreeSet<String> = STEPS
                .iter()
                .map(|s| (*s).to_owned())
                .chain(c.steps.keys().cloned())
                .collect();
            let empty = Histogram::default();
            for kind in &kinds {
                let h = c.steps.get(kind).unwrap_or(&empty);
                for (bound, count) in BUCKETS.iter().zip(h.counts.iter()) {
                    f.part(
                        "_bucket",
                        &[("step", kind), ("le", &bound.to_string())],
                        *count as f64,
                    );
                }
                f.part("_bucket", &[("step", kind), ("le", "+Inf")], h.count as f64);
                f.part("_sum", &[("step", kind)], h.sum);
                f.part("_count", &[("step", kind)], h.count as f64);
            }
            per_plan_counter(
                &mut out,
                (
                    "keyflip_drift_checks_total",
                    "Drift checks by plan and result (ok, drift, error).",
                ),
                ("result", &DRIFT_RESULTS),
                &plans,
                &c.drift_checks,
            );
            per_plan_counter(
                &mut out,
                (
                    "keyflip_drift_findings_total",
                    "New drift findings by plan and kind.",
                ),
                ("kind", &DRIFT_KINDS),
                &plans,
                &c.drift_findings,
            );
            let mut f = Family::new(
                &mut out,
                "keyflip_notifications_total",
                "counter",
                "Webhook deliveries by event and result.",
            );
            for event in crate::plan::NotifyEvent::ALL {
                for result in DELIVERY_RESULTS {
                    let n = c
                        .notifications
                        .get(&(event.as_str(), result))
                        .copied()
                        .unwrap_or(0);
                    f.sample(&[("event", event.as_str()), ("result", result)], n as f64);
                }
            }
            let mut f = Family::new(
                &mut out,
                "keyflip_reloads_total",
                "counter",
                "Configuration reloads (SIGHUP) by result.",
            );
            for result in RELOAD_RESULTS {
                let n = c.reloads.get(result).copied().unwrap_or(0);
                f.sample(&[("result", result)], n as f64);
            }
            // Every plan has a sample (0 until the gate parks one of its rotations),
            // so an alert on it needs no absent() clause.
            let mut f = Family::new(
                &mut out,
                "keyflip_usage_gate_callers",
                "gauge",
                "Callers still signing with the old key when the usage gate parked the plan's last rotation (0 after a completed one).",
            );
            for plan in &plans {
                let n = c.usage_gate_callers.get(*plan).copied().unwrap_or(0);
                f.sample(&[("plan", plan)], n as f64);
            }
            let mut f = Family::new(
                &mut out,
                "keyflip_usage_gate_holding",
                "gauge",
                "1 while the usage gate holds back retiring the old key: the plan's last rotation parked at the gate, until a retire completes.",
            );
            for plan in &plans {
                let n = c.usage_gate_callers.get(*plan).copied().unwrap_or(0);
                f.sample(&[("plan", plan)], f64::from(u8::from(n > 0)));
            }
        });

        if let Some(budgets) = budgets {
            let waits = budgets.waits();
            let mut f = Family::new(
                &mut out,
                "keyflip_throttle_waits_total",
                "counter",
                "Calls that waited for the shared call budget, by budget.",
            );
            for w in &waits {
                f.sample(&[("budget", w.class.as_str())], w.count as f64);
            }
            let mut f = Family::new(
                &mut out,
                "keyflip_throttle_wait_seconds_total",
                "counter",
                "Time calls spent waiting for the shared call budget, by budget.",
            );
            for w in &waits {
                f.sample(&[("budget", w.class.as_str())], w.total.as_secs_f64());
            }
        }

        let mut f = Family::new(
            &mut out,
            "keyflip_key_age_seconds",
            "gauge",
            "Age of each storage key at scrape time, from keyCreationTime at the last observation.",
        );
        for p in &snapshot.plans {
            let Some(keys) = &p.keys else { continue };
            for (name, key) in [("key1", &keys.key1), ("key2", &keys.key2)] {
                if let Some(created) = key.created {
                    f.sample(&[("plan", &p.name), ("key", name)], seconds(now - created));
                }
            }
        }
        let mut f = Family::new(
            &mut out,
            "keyflip_active_key_age_seconds",
            "gauge",
            "Age of the key consumers hold, at scrape time; compare with keyflip_key_max_age_seconds.",
        );
        for p in &snapshot.plans {
            if let Some(created) = p.active_key_created {
                f.sample(&[("plan", &p.name)], seconds(now - created));
            }
        }
        let mut f = Family::new(
            &mut out,
            "keyflip_key_max_age_seconds",
            "gauge",
            "The plan's max_key_age policy; plans without one have no sample.",
        );
        for p in &snapshot.plans {
            if let Some(max) = p.max_key_age {
                f.sample(&[("plan", &p.name)], seconds(max));
            }
        }
        let mut f = Family::new(
            &mut out,
            "keyflip_next_rotation_timestamp_seconds",
            "gauge",
            "When the plan next rotates by schedule or retry (unix time).",
        );
        for p in &snapshot.plans {
            if let Some(at) = p.next_due {
                f.sample(&[("plan", &p.name)], unix(at));
            }
        }
        let mut f = Family::new(
            &mut out,
            "keyflip_last_success_timestamp_seconds",
            "gauge",
            "When the plan's last completed rotation ended (unix time), from the journal.",
        );
        for p in &snapshot.plans {
            if let Some(at) = p.last_success {
                f.sample(&[("plan", &p.name)], unix(at));
            }
        }
        type Gauge = fn(&super::snapshot::PlanSnapshot) -> f64;
        let gauges: [(&'static str, &str, Gauge); 4] = [
            (
                "keyflip_plan_needs_attention",
                "1 when the plan is parked and needs a human.",
                |p| f64::from(u8::from(p.parked.is_some())),
            ),
            (
                "keyflip_plan_failed_cycles",
                "Failed rotation cycles in a row.",
                |p| f64::from(p.failures),
            ),
            (
                "keyflip_rotation_in_progress",
                "1 while a rotation, resume or repair of the plan runs.",
                |p| f64::from(u8::from(p.running.is_some())),
            ),
            (
                "keyflip_drift",
                "Current drift findings of the plan.",
                |p| p.drift.len() as f64,
            ),
        ];
        for (name, help, value) in gauges {
            let mut f = Family::new(&mut out, name, "gauge", help);
            for p in &snapshot.plans {
                f.sample(&[("plan", p.name.as_str())], value(p));
            }
        }
        if let Some(started) = self.with(|c| c.started) {
            let mut f = Family::new(
                &mut out,
                "keyflip_start_time_seconds",
                "gauge",
                "When the daemon started (unix time); it changes at every restart.",
            );
            f.sample(&[], unix(started));
        }
        let build = crate::build_info::BuildInfo::current();
        let mut f = Family::new(
            &mut out,
            "keyflip_build_info",
            "gauge",
            "Always 1; the labels say which build runs (as `keyflip version`).",
        );
        f.sample(&build.metric_labels(), 1.0);
        let mut f = Family::new(
            &mut out,
            "keyflip_ready",
            "gauge",
            "1 once the journal is recovered and the daemon schedules.",
        );
        f.sample(
            &[],
            f64::from(u8::from(snapshot.ready && !snapshot.stopping)),
        );
        out
    }
}

/// The replica's lease families (`[coordination]` only): leases held now, lease
/// acquisitions, refusals (another replica held it), losses, fenced journal writes,
/// and the renewal latency histogram. No label: one replica is one scrape target.
pub fn coordination(out: &mut String, coordinator: &crate::coordination::Coordinator) {
    use std::sync::atomic::Ordering::Relaxed;
    let stats = &coordinator.stats;
    let mut f = Family::new(
        out,
        "keyflip_coordination_leases_held",
        "gauge",
        "Account leases this replica holds now (one per rotation it drives).",
    );
    f.sample(&[], coordinator.held().len() as f64);
    let counters: [(&'static str, &str, &std::sync::atomic::AtomicU64); 4] = [
        (
            "keyflip_coordination_lease_acquisitions_total",
            "Account leases this replica acquired.",
            &stats.acquisitions,
        ),
        (
            "keyflip_coordination_lease_refusals_total",
            "Account leases this replica asked for while another replica held them.",
            &stats.refused,
        ),
        (
            "keyflip_coordination_lease_losses_total",
            "Account leases this replica lost while it held them (renewal refused or too late, a journal write refused).",
            &stats.losses,
        ),
        (
            "keyflip_coordination_journal_writes_total",
            "Writes to the shared journal (each with the lease id and If-Match).",
            &stats.writes,
        ),
    ];
    for (name, help, value) in counters {
        let mut f = Family::new(out, name, "counter", help);
        f.sample(&[], value.load(Relaxed) as f64);
    }
    let mut f = Family::new(
        out,
        "keyflip_coordination_lease_renewal_seconds",
        "histogram",
        "Latency of successful lease renewals.",
    );
    for (bound, count) in crate::coordination::RENEWAL_BUCKETS
        .iter()
        .zip(&stats.renewal_buckets)
    {
        f.part(
            "_bucket",
            &[("le", &bound.to_string())],
            count.load(Relaxed) as f64,
        );
    }
    let renewals = stats.renewals.load(Relaxed) as f64;
    f.part("_bucket", &[("le", "+Inf")], renewals);
    f.part(
        "_sum",
        &[],
        stats.renewal_us_total.load(Relaxed) as f64 / 1e6,
    );
    f.part("_count", &[], renewals);
}

/// A counter labelled by plan and one more label: every plan loaded now and any that
/// counted before a reload removed it (a counter never goes back to missing), times
/// every value the label can take, at zero until counted.
fn per_plan_counter(
    out: &mut String,
    (name, help): (&'static str, &str),
    (label, values): (&str, &[&'static str]),
    plans: &BTreeSet<&str>,
    counts: &BTreeMap<(String, &'static str), u64>,
) {
    let all: BTreeSet<&str> = plans
        .iter()
        .copied()
        .chain(counts.keys().map(|(p, _)| p.as_str()))
        .collect();
    let mut f = Family::new(out, name, "counter", help);
    for plan in all {
        for value in values {
            let n = counts.get(&(plan.to_owned(), *value)).copied().unwrap_or(0);
            f.sample(&[("plan", plan), (label, value)], n as f64);
        }
    }
}

fn sample(out: &mut String, name: &str, suffix: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    out.push_str(suffix);
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
                checking: false,
                last_started: None,
                last_success: Some(now),
                failures: 0,
                retry_at: None,
                parked: Some(Parked {
                    at: now,
                    reason: "r".into(),
                }),
                active_key_created: Some(now - chrono::TimeDelta::days(2)),
                max_key_age: Some(chrono::TimeDelta::days(30)),
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
        assert!(text.contains("keyflip_active_key_age_seconds{plan=\"demo\"} 172800\n"));
        assert!(text.contains("keyflip_key_max_age_seconds{plan=\"demo\"} 2592000\n"));
        // Counters exist at zero for every value they can take.
        assert!(
            text.contains("keyflip_rotations_total{plan=\"demo\",outcome=\"rolled_back\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("keyflip_drift_checks_total{plan=\"demo\",result=\"error\"} 0\n"));
        assert!(text.contains(
            "keyflip_notifications_total{event=\"needs-attention\",result=\"failed\"} 0\n"
        ));
        assert!(
            text.contains("keyflip_rotation_step_duration_seconds_count{step=\"verify_key\"} 0\n")
        );
        // Each family's samples come right after its header, before the next family.
        let mut current = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                current = rest.split(' ').next().unwrap().to_owned();
            } else if !line.starts_with('#') {
                assert!(line.starts_with(&current), "{line} outside {current}");
            }
        }
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
