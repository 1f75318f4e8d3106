//! What the daemon looks like from outside at one moment: one [`Snapshot`] the
//! scheduler publishes after every evaluation (through a `watch` channel), read by the
//! metrics endpoint, `status` replies, systemd's `STATUS=` line and tests.
//!
//! Promise: a snapshot holds names, times, counts and fingerprints, never a key.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::journal::{ObservedKeys, Parked};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Clock time of the scheduler's last evaluation; `None` before the first.
    pub evaluated_at: Option<DateTime<Utc>>,
    /// The journal is open and every unfinished rotation has been handed to resume.
    pub ready: bool,
    /// Shutdown has begun: nothing new starts.
    pub stopping: bool,
    pub plans: Vec<PlanSnapshot>,
}

/// What is running for a plan right now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Activity {
    /// `rotation`, `resume` or `repair`.
    pub kind: &'static str,
    /// Known once the engine has recorded the rotation.
    pub rotation_id: Option<String>,
    pub since: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PlanSnapshot {
    pub name: String,
    /// The storage account's ARM id.
    pub account: String,
    /// When the plan next rotates by schedule (or retries); `None` when nothing will
    /// make it due (no schedule, parked, running).
    pub next_due: Option<DateTime<Utc>>,
    /// `schedule::Decision::reason_code`, or `manual`, `parked`, `running`, `retry`,
    /// `waiting-for-observation`.
    pub due_reason: String,
    pub running: Option<Activity>,
    pub last_started: Option<DateTime<Utc>>,
    pub last_success: Option<DateTime<Utc>>,
    pub failures: u32,
    pub retry_at: Option<DateTime<Utc>>,
    pub parked: Option<Parked>,
    /// Both keys at the last observation.
    pub keys: Option<ObservedKeys>,
    /// `keyCreationTime` of the key consumers hold, at the last observation.
    pub active_key_created: Option<DateTime<Utc>>,
    /// The plan's `max_key_age` policy, when it has one.
    pub max_key_age: Option<chrono::TimeDelta>,
    /// Current drift findings, one line each.
    pub drift: Vec<String>,
}

impl Snapshot {
    pub fn plan(&self, name: &str) -> Option<&PlanSnapshot> {
        self.plans.iter().find(|p| p.name == name)
    }

    /// One line for systemd's `STATUS=` and `status` replies.
    pub fn summary(&self) -> String {
        if !self.ready {
            return "starting: recovering the journal".to_owned();
        }
        if self.stopping {
            let busy = self.plans.iter().filter(|p| p.running.is_some()).count();
            return format!("stopping: waiting for {busy} step(s) in flight");
        }
        let n = self.plans.len();
        let running: Vec<&str> = self
            .plans
            .iter()
            .filter(|p| p.running.is_some())
            .map(|p| p.name.as_str())
            .collect();
        let parked = self.plans.iter().filter(|p| p.parked.is_some()).count();
        let drifted = self.plans.iter().filter(|p| !p.drift.is_empty()).count();
        let mut line = format!("{n} plan{}", if n == 1 { "" } else { "s" });
        if running.is_empty() {
            line.push_str(", none rotating");
        } else {
            line.push_str(&format!(", rotating {}", running.join(" ")));
        }
        if let Some(next) = self
            .plans
            .iter()
            .filter_map(|p| p.next_due.map(|t| (t, &p.name)))
            .min()
        {
            line.push_str(&format!(
                ", next {} at {}",
                next.1,
                next.0.format("%Y-%m-%dT%H:%M:%SZ")
            ));
        }
        if parked > 0 {
            line.push_str(&format!(", {parked} need attention"));
        }
        if drifted > 0 {
            line.push_str(&format!(", drift on {drifted}"));
        }
        line
    }
}
