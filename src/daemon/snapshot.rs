//! What the daemon looks like from outside: one row per plan ([`PlanSnapshot`]) and a
//! header (last evaluation, ready, stopping, the one-line summary), read by the
//! metrics endpoint, `status` replies, systemd's `STATUS=` line and tests.
//!
//! The scheduler publishes only the header after each evaluation, with the summary's
//! counts kept up to date plan by plan ([`Counts`]), so an event costs the same with
//! ten plans or ten thousand. The rows are assembled from the scheduler's own state
//! when someone asks ([`SnapshotWatch::snapshot`]: a scrape, `status`, a test), one
//! pass over the plans per request; the daemon keeps no second copy of them.
//!
//! Promise: a snapshot holds names, times, counts and fingerprints, never a key.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use super::scheduler::Msg;
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
    /// Waiting out a grace period or a retry backoff until then: a timer, holding no
    /// concurrency slot.
    pub waiting_until: Option<DateTime<Utc>>,
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
    /// A start-up or drift check is in flight.
    pub checking: bool,
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
        let mut counts = Counts::default();
        for p in &self.plans {
            let share = Share {
                counted: true,
                parked: p.parked.is_some(),
                drifted: !p.drift.is_empty(),
                running: p.running.is_some(),
                next_due: p.next_due,
            };
            counts.apply(&Arc::from(p.name.as_str()), &Share::default(), &share);
        }
        counts.summary(self.ready, self.stopping)
    }
}

/// One plan's part in the summary, as last counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Share {
    pub counted: bool,
    pub parked: bool,
    pub drifted: bool,
    pub running: bool,
    pub next_due: Option<DateTime<Utc>>,
}

/// What the summary line needs, kept up to date plan by plan.
#[derive(Clone, Debug, Default)]
pub(super) struct Counts {
    plans: usize,
    parked: usize,
    drifted: usize,
    running: BTreeSet<Arc<str>>,
    next_due: BTreeSet<(DateTime<Utc>, Arc<str>)>,
}

impl Counts {
    /// Replaces `name`'s share `old` with `new`.
    pub fn apply(&mut self, name: &Arc<str>, old: &Share, new: &Share) {
        if old == new {
            return;
        }
        let flip = |n: &mut usize, was: bool, is: bool| match (was, is) {
            (false, true) => *n += 1,
            (true, false) => *n = n.saturating_sub(1),
            _ => {}
        };
        flip(&mut self.plans, old.counted, new.counted);
        flip(&mut self.parked, old.parked, new.parked);
        flip(&mut self.drifted, old.drifted, new.drifted);
        if old.running != new.running {
            if new.running {
                self.running.insert(name.clone());
            } else {
                self.running.remove(name);
            }
        }
        if old.next_due != new.next_due {
            if let Some(t) = old.next_due {
                self.next_due.remove(&(t, name.clone()));
            }
            if let Some(t) = new.next_due {
                self.next_due.insert((t, name.clone()));
            }
        }
    }

    pub fn summary(&self, ready: bool, stopping: bool) -> String {
        if !ready {
            return "starting: recovering the journal".to_owned();
        }
        if stopping {
            return format!(
                "stopping: waiting for {} step(s) in flight",
                self.running.len()
            );
        }
        let n = self.plans;
        let mut line = format!("{n} plan{}", if n == 1 { "" } else { "s" });
        if self.running.is_empty() {
            line.push_str(", none rotating");
        } else {
            let names: Vec<&str> = self.running.iter().map(|n| &**n).collect();
            line.push_str(&format!(", rotating {}", names.join(" ")));
        }
        if let Some((at, name)) = self.next_due.first() {
            line.push_str(&format!(
                ", next {name} at {}",
                at.format("%Y-%m-%dT%H:%M:%SZ")
            ));
        }
        if self.parked > 0 {
            line.push_str(&format!(", {} need attention", self.parked));
        }
        if self.drifted > 0 {
            line.push_str(&format!(", drift on {}", self.drifted));
        }
        line
    }
}

/// The header every evaluation publishes.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Header {
    pub evaluated_at: Option<DateTime<Utc>>,
    pub ready: bool,
    pub stopping: bool,
    pub summary: String,
}

/// A reader's side: waiting for the next evaluation, the summary, and the whole
/// picture on request.
#[derive(Clone, Debug)]
pub struct SnapshotWatch {
    header: watch::Receiver<Header>,
    tx: mpsc::UnboundedSender<Msg>,
    /// The last snapshot assembled, what readers get once the scheduler has stopped.
    last: Arc<Mutex<Snapshot>>,
}

impl SnapshotWatch {
    pub(super) fn new(header: watch::Receiver<Header>, tx: mpsc::UnboundedSender<Msg>) -> Self {
        SnapshotWatch {
            header,
            tx,
            last: Arc::new(Mutex::new(Snapshot::default())),
        }
    }

    /// The whole picture now, from the scheduler; marks the evaluation seen for
    /// [`SnapshotWatch::changed`].
    pub async fn snapshot(&mut self) -> Snapshot {
        self.header.borrow_and_update();
        self.peek().await
    }

    /// The whole picture now, without marking anything seen.
    pub async fn peek(&self) -> Snapshot {
        let (reply, answer) = oneshot::channel();
        if self.tx.send(Msg::Snapshot(reply)).is_ok()
            && let Ok(snapshot) = answer.await
        {
            *self.last.lock().unwrap_or_else(|e| e.into_inner()) = snapshot.clone();
            return snapshot;
        }
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let header = self.header.borrow();
        last.evaluated_at = header.evaluated_at;
        last.ready = header.ready;
        last.stopping = header.stopping;
        last
    }

    /// `(ready, stopping)` of the last evaluation.
    pub fn readiness(&self) -> (bool, bool) {
        let h = self.header.borrow();
        (h.ready, h.stopping)
    }

    /// The summary line of the last evaluation.
    pub fn summary(&self) -> String {
        self.header.borrow().summary.clone()
    }

    /// Waits for the next evaluation; an error once the scheduler has stopped.
    pub async fn changed(&mut self) -> Result<(), watch::error::RecvError> {
        self.header.changed().await
    }

    /// Whether the scheduler still runs (it owns the header's sender).
    pub fn alive(&self) -> bool {
        self.header.has_changed().is_ok()
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;

    #[test]
    fn counts_kept_share_by_share_give_the_summary_a_full_pass_gives() {
        let t = |h| Utc.with_ymd_and_hms(2026, 3, 2, h, 0, 0).unwrap();
        let mut counts = Counts::default();
        let share = |next: Option<u32>, drifted, running, parked| Share {
            counted: true,
            parked,
            drifted,
            running,
            next_due: next.map(t),
        };
        let a = share(Some(5), false, false, false);
        let b = share(Some(3), true, false, false);
        let c = share(None, false, true, true);
        let name = |n: &str| -> Arc<str> { Arc::from(n) };
        counts.apply(&name("a"), &Share::default(), &a);
        counts.apply(&name("b"), &Share::default(), &b);
        counts.apply(&name("c"), &Share::default(), &c);
        // b stops drifting and becomes due later; d comes and goes.
        let b2 = share(Some(7), false, false, false);
        counts.apply(&name("b"), &b, &b2);
        let d = share(Some(1), true, true, true);
        counts.apply(&name("d"), &Share::default(), &d);
        counts.apply(&name("d"), &d, &Share::default());
        let line = counts.summary(true, false);
        assert_eq!(
            line,
            "3 plans, rotating c, next a at 2026-03-02T05:00:00Z, 1 need attention"
        );
        let row = |name: &str, s: &Share| PlanSnapshot {
            name: name.into(),
            account: String::new(),
            next_due: s.next_due,
            due_reason: String::new(),
            running: s.running.then(|| Activity {
                kind: "rotation",
                rotation_id: None,
                since: t(1),
                waiting_until: None,
            }),
            checking: false,
            last_started: None,
            last_success: None,
            failures: 0,
            retry_at: None,
            parked: s.parked.then(|| Parked {
                at: t(1),
                reason: "r".into(),
            }),
            keys: None,
            active_key_created: None,
            max_key_age: None,
            drift: if s.drifted {
                vec!["x".into()]
            } else {
                Vec::new()
            },
        };
        let full = Snapshot {
            evaluated_at: Some(t(2)),
            ready: true,
            stopping: false,
            plans: vec![row("a", &a), row("b", &b2), row("c", &c)],
        };
        assert_eq!(full.summary(), line);
        assert_eq!(
            counts.summary(false, false),
            "starting: recovering the journal"
        );
        assert_eq!(
            counts.summary(true, true),
            "stopping: waiting for 1 step(s) in flight"
        );
    }
}
