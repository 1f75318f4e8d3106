//! What the daemon looks like from outside: one row per plan ([`PlanSnapshot`]) and a
//! header (last evaluation, ready, stopping, the one-line summary), read by the
//! metrics endpoint, `status` replies, systemd's `STATUS=` line and tests.
//!
//! The scheduler keeps the rows in a shared [`Table`] and updates only the rows of
//! plans that changed, with the summary's counts kept alongside, so publishing after an
//! event costs the same with ten plans or ten thousand. A reader who wants the whole
//! picture assembles a [`Snapshot`] (one pass over the rows); waiting for a change is
//! waiting on the header's `watch` channel.
//!
//! Promise: a snapshot holds names, times, counts and fingerprints, never a key.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::watch;

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
            counts.add(p, 1);
        }
        counts.summary(self.ready, self.stopping)
    }
}

/// What the summary line needs, kept up to date row by row.
#[derive(Clone, Debug, Default)]
struct Counts {
    plans: usize,
    parked: usize,
    drifted: usize,
    running: BTreeSet<String>,
    next_due: BTreeSet<(DateTime<Utc>, String)>,
}

impl Counts {
    /// Adds (`sign` 1) or removes (-1) a row's share.
    fn add(&mut self, p: &PlanSnapshot, sign: i8) {
        let step = |n: &mut usize| {
            *n = if sign > 0 {
                *n + 1
            } else {
                n.saturating_sub(1)
            }
        };
        step(&mut self.plans);
        if p.parked.is_some() {
            step(&mut self.parked);
        }
        if !p.drift.is_empty() {
            step(&mut self.drifted);
        }
        if p.running.is_some() {
            if sign > 0 {
                self.running.insert(p.name.clone());
            } else {
                self.running.remove(&p.name);
            }
        }
        if let Some(t) = p.next_due {
            if sign > 0 {
                self.next_due.insert((t, p.name.clone()));
            } else {
                self.next_due.remove(&(t, p.name.clone()));
            }
        }
    }

    fn summary(&self, ready: bool, stopping: bool) -> String {
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
            let names: Vec<&str> = self.running.iter().map(String::as_str).collect();
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

/// Every plan's row, by name, and the summary's counts.
#[derive(Debug, Default)]
pub struct Table {
    rows: BTreeMap<String, PlanSnapshot>,
    counts: Counts,
}

impl Table {
    fn upsert(&mut self, row: PlanSnapshot) {
        if let Some(old) = self.rows.get(&row.name) {
            if *old == row {
                return;
            }
            let old = old.clone();
            self.counts.add(&old, -1);
        }
        self.counts.add(&row, 1);
        self.rows.insert(row.name.clone(), row);
    }

    fn remove(&mut self, name: &str) {
        if let Some(old) = self.rows.remove(name) {
            self.counts.add(&old, -1);
        }
    }
}

/// The header every evaluation publishes.
#[derive(Clone, Debug, Default, PartialEq)]
struct Header {
    evaluated_at: Option<DateTime<Utc>>,
    ready: bool,
    stopping: bool,
    summary: String,
}

/// The scheduler's side: rows and header.
pub(super) struct Publisher {
    header: watch::Sender<Header>,
    table: Arc<RwLock<Table>>,
}

impl Publisher {
    pub fn new() -> (Publisher, SnapshotWatch) {
        let (tx, rx) = watch::channel(Header::default());
        let table = Arc::new(RwLock::new(Table::default()));
        (
            Publisher {
                header: tx,
                table: table.clone(),
            },
            SnapshotWatch { header: rx, table },
        )
    }

    pub fn set_row(&self, row: PlanSnapshot) {
        self.table
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .upsert(row);
    }

    pub fn remove_row(&self, name: &str) {
        self.table
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }

    /// Publishes the header; the summary line it carries.
    pub fn publish(&self, evaluated_at: DateTime<Utc>, ready: bool, stopping: bool) -> String {
        let summary = self
            .table
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .counts
            .summary(ready, stopping);
        self.header.send_replace(Header {
            evaluated_at: Some(evaluated_at),
            ready,
            stopping,
            summary: summary.clone(),
        });
        summary
    }

    /// The whole picture now (one pass over the rows).
    pub fn borrow(&self) -> Snapshot {
        assemble(&self.header.borrow(), &self.table)
    }
}

fn assemble(header: &Header, table: &RwLock<Table>) -> Snapshot {
    let table = table.read().unwrap_or_else(|e| e.into_inner());
    Snapshot {
        evaluated_at: header.evaluated_at,
        ready: header.ready,
        stopping: header.stopping,
        plans: table.rows.values().cloned().collect(),
    }
}

/// A reader's side: the current snapshot, one plan's row, and waiting for the next
/// evaluation.
#[derive(Clone, Debug)]
pub struct SnapshotWatch {
    header: watch::Receiver<Header>,
    table: Arc<RwLock<Table>>,
}

impl SnapshotWatch {
    /// The whole picture now; marks it seen for [`SnapshotWatch::changed`].
    pub fn snapshot(&mut self) -> Snapshot {
        let header = self.header.borrow_and_update().clone();
        assemble(&header, &self.table)
    }

    /// The whole picture now, without marking it seen.
    pub fn peek(&self) -> Snapshot {
        assemble(&self.header.borrow(), &self.table)
    }

    /// One plan's row.
    pub fn plan(&self, name: &str) -> Option<PlanSnapshot> {
        self.table
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .rows
            .get(name)
            .cloned()
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

    fn row(name: &str) -> PlanSnapshot {
        PlanSnapshot {
            name: name.into(),
            account: format!("/subscriptions/s/x/{name}"),
            next_due: None,
            due_reason: String::new(),
            running: None,
            checking: false,
            last_started: None,
            last_success: None,
            failures: 0,
            retry_at: None,
            parked: None,
            keys: None,
            drift: Vec::new(),
        }
    }

    #[test]
    fn the_kept_counts_give_the_summary_a_full_pass_gives() {
        let t = |h| Utc.with_ymd_and_hms(2026, 3, 2, h, 0, 0).unwrap();
        let (publisher, mut watch) = Publisher::new();
        let mut a = row("a");
        a.next_due = Some(t(5));
        let mut b = row("b");
        b.next_due = Some(t(3));
        b.drift = vec!["x".into()];
        let mut c = row("c");
        c.running = Some(Activity {
            kind: "rotation",
            rotation_id: None,
            since: t(1),
            waiting_until: None,
        });
        c.parked = Some(Parked {
            at: t(1),
            reason: "r".into(),
        });
        for r in [a.clone(), b.clone(), c.clone()] {
            publisher.set_row(r);
        }
        // Rows change: b is no longer drifting and becomes due later; c goes away.
        b.drift.clear();
        b.next_due = Some(t(7));
        publisher.set_row(b);
        publisher.set_row(a);
        publisher.remove_row("c");
        publisher.set_row(c);
        let line = publisher.publish(t(2), true, false);
        let full = watch.snapshot();
        assert_eq!(line, full.summary());
        assert_eq!(
            line,
            "3 plans, rotating c, next a at 2026-03-02T05:00:00Z, 1 need attention"
        );
        assert_eq!(watch.summary(), line);
        assert_eq!(full.plans.len(), 3);
        assert_eq!(watch.plan("b").unwrap().next_due, Some(t(7)));
        assert_eq!(
            publisher.publish(t(2), false, false),
            "starting: recovering the journal"
        );
    }
}
