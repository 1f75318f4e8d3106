//! What the scheduler does with results: a finished job moves the plan's state
//! (success, a failed cycle with backoff, parking after too many), updates metrics and
//! notifies; a drift observation is assessed, reported, and repaired when the plan
//! opts in.
//!
//! Promises: every state change here is written to the journal before the next
//! evaluation; a failed cycle always notifies `failure`, and parking always notifies
//! `needs-attention`; drift notifies only when a finding is new, so a drift that
//! persists does not page someone every interval.

use chrono::{DateTime, Utc};

use super::drift::{self, Finding, Observation};
use super::jobs::{Ending, Finished, Job};
use super::notify::Notification;
use super::scheduler::Scheduler;
use crate::journal::{ObservedKeys, Parked};
use crate::plan::NotifyEvent;
use crate::rotation::RotationReport;
use crate::rotation::machine::{Attention, Caller, Outcome};

fn outcome_label(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Completed { .. } => "completed",
        Outcome::RolledBack { .. } => "rolled_back",
        Outcome::Refused { .. } => "refused",
        Outcome::NeedsAttention { .. } => "needs_attention",
    }
}

impl Scheduler {
    pub fn conclude(&mut self, finished: Finished) {
        let now = self.ctx.clock.now();
        let name = finished.plan;
        let Some(entry) = self.plans.get_mut(&name) else {
            tracing::warn!(plan = %name, "a job ended for a plan the daemon no longer knows");
            return;
        };
        entry.running = None;
        entry.epoch += 1;
        // Look again soon: key ages and the drift baseline changed.
        entry.observe_at = entry.observe_at.min(now);
        match finished.ending {
            Ending::Interrupted => self.ctx.metrics.rotation(&name, "interrupted"),
            Ending::Failed { message, busy } => {
                self.ctx.metrics.rotation(&name, "error");
                tracing::error!(plan = %name, job = finished.kind, busy, error = %message, "the job could not run");
                if finished.kind != "repair" {
                    self.failed_cycle(&name, message, None, now);
                }
            }
            Ending::Reports(reports) => {
                for report in reports {
                    if finished.kind == "repair" {
                        self.repaired(&name, &report);
                    } else {
                        self.apply(&name, &report, now);
                    }
                }
            }
        }
        if let Some(entry) = self.plans.get(&name)
            && entry.retired
        {
            self.save(&name);
            self.plans.remove(&name);
            return;
        }
        self.save(&name);
    }

    fn apply(&mut self, name: &str, report: &RotationReport, now: DateTime<Utc>) {
        let Some(outcome) = &report.outcome else {
            return;
        };
        self.ctx.metrics.rotation(name, outcome_label(outcome));
        let summary = outcome.to_string();
        let Some(entry) = self.plans.get_mut(name) else {
            return;
        };
        entry.keyflip_changed = true;
        let finished_at = report.finished_at.unwrap_or(now);
        if let Some(keys) = report.keys_after {
            entry.state.observed = Some(ObservedKeys {
                at: finished_at,
                key1: keys.key1,
                key2: keys.key2,
            });
        }
        match outcome {
            Outcome::Completed { .. } => {
                let was_parked = entry.state.parked.is_some();
                entry.state.failures = 0;
                entry.state.retry_at = None;
                entry.state.parked = None;
                entry.state.last_success = Some(finished_at);
                tracing::info!(plan = name, rotation_id = %report.rotation_id, was_parked, "rotation completed");
                if report.mode.is_incident() {
                    let plan = entry.plan.clone();
                    let mut n = Notification::new(
                        NotifyEvent::Incident,
                        &plan,
                        now,
                        format!("incident rotation {}: {summary}", report.rotation_id),
                    );
                    n.rotation_id = Some(report.rotation_id.clone());
                    n.outcome = Some("completed".into());
                    n.details = report
                        .regenerated
                        .iter()
                        .map(|r| {
                            format!(
                                "{} regenerated ({}) at {}",
                                r.key,
                                r.purpose,
                                r.at.format("%Y-%m-%dT%H:%M:%SZ")
                            )
                        })
                        .chain(
                            report
                                .incident_report
                                .iter()
                                .map(|p| format!("incident report: {}", p.markdown.display())),
                        )
                        .chain(report.warnings.iter().map(ToString::to_string))
                        .collect();
                    self.ctx.notifier.send(&plan, NotifyEvent::Incident, n);
                }
            }
            Outcome::RolledBack { .. } | Outcome::Refused { .. } => {
                self.failed_cycle(name, summary, Some(report), now);
            }
            Outcome::NeedsAttention { reason, .. } => {
                self.park(name, summary, Some(report), now);
                if let Attention::UsageGateHeld { callers, .. } = reason {
                    self.usage_gate_hold(name, report, callers, now);
                }
            }
        }
        if matches!(outcome, Outcome::Completed { .. }) {
            self.ctx.metrics.usage_gate_callers(name, 0);
        }
    }

    /// The usage gate parked the rotation: its own event, naming each caller.
    fn usage_gate_hold(
        &mut self,
        name: &str,
        report: &RotationReport,
        callers: &[Caller],
        now: DateTime<Utc>,
    ) {
        self.ctx
            .metrics
            .usage_gate_callers(name, callers.len() as u64);
        let Some(entry) = self.plans.get(name) else {
            return;
        };
        let plan = entry.plan.clone();
        let mut n = Notification::new(
            NotifyEvent::UsageGateHold,
            &plan,
            now,
            format!(
                "the usage gate holds the retire: {} caller(s) still sign with the old key",
                callers.len()
            ),
        );
        n.rotation_id = Some(report.rotation_id.clone());
        n.outcome = Some("needs_attention".into());
        n.details = callers.iter().map(ToString::to_string).collect();
        self.ctx.notifier.send(&plan, NotifyEvent::UsageGateHold, n);
    }

    /// One more failed cycle: notify, then retry later or park.
    fn failed_cycle(
        &mut self,
        name: &str,
        summary: String,
        report: Option<&RotationReport>,
        now: DateTime<Utc>,
    ) {
        let retry = self.settings().retry;
        let Some(entry) = self.plans.get_mut(name) else {
            return;
        };
        entry.state.failures = entry.state.failures.saturating_add(1);
        let failures = entry.state.failures;
        let plan = entry.plan.clone();
        let mut n = Notification::new(
            NotifyEvent::Failure,
            &plan,
            now,
            format!("rotation failed ({failures} in a row): {summary}"),
        );
        n.rotation_id = report.map(|r| r.rotation_id.clone());
        n.outcome = Some(
            report
                .and_then(|r| r.outcome.as_ref())
                .map_or("error", outcome_label)
                .to_owned(),
        );
        n.details = report
            .map(|r| r.warnings.iter().map(ToString::to_string).collect())
            .unwrap_or_default();
        self.ctx.notifier.send(&plan, NotifyEvent::Failure, n);
        if failures >= retry.park_after {
            self.park(
                name,
                format!("{failures} failed rotation cycles in a row; the last: {summary}"),
                report,
                now,
            );
            return;
        }
        let wait = retry.backoff(failures);
        let Some(entry) = self.plans.get_mut(name) else {
            return;
        };
        entry.state.retry_at =
            Some(now + chrono::TimeDelta::from_std(wait).unwrap_or(chrono::TimeDelta::hours(1)));
        tracing::warn!(plan = name, failures, retry_in_secs = wait.as_secs(), error = %summary, "rotation cycle failed; will retry");
    }

    fn park(
        &mut self,
        name: &str,
        reason: String,
        report: Option<&RotationReport>,
        now: DateTime<Utc>,
    ) {
        let Some(entry) = self.plans.get_mut(name) else {
            return;
        };
        entry.state.parked = Some(Parked {
            at: now,
            reason: reason.clone(),
        });
        entry.state.retry_at = None;
        let plan = entry.plan.clone();
        tracing::error!(plan = name, reason = %reason, "plan parked: needs attention; no automatic rotations until `keyflip rotate now` or `keyflip rotate resume` succeeds");
        let mut n = Notification::new(
            NotifyEvent::NeedsAttention,
            &plan,
            now,
            format!("needs attention: {reason}"),
        );
        n.rotation_id = report.map(|r| r.rotation_id.clone());
        n.outcome = report
            .and_then(|r| r.outcome.as_ref())
            .map(|o| outcome_label(o).to_owned());
        self.ctx
            .notifier
            .send(&plan, NotifyEvent::NeedsAttention, n);
    }

    fn repaired(&mut self, name: &str, report: &RotationReport) {
        let outcome = report
            .outcome
            .as_ref()
            .map_or_else(|| "unfinished".to_owned(), |o| o.to_string());
        tracing::info!(plan = name, rotation_id = %report.rotation_id, outcome = %outcome, "drift repair finished");
    }

    /// A drift observation came back.
    pub fn observed(&mut self, name: &str, epoch: u64, result: Result<Observation, String>) {
        let now = self.ctx.clock.now();
        let Some(entry) = self.plans.get_mut(name) else {
            return;
        };
        entry.observing = false;
        let observation = match result {
            Ok(o) => o,
            Err(e) => {
                self.ctx.metrics.drift_check(name, "error");
                tracing::warn!(plan = name, error = %e, "drift check failed; trying again at the next interval");
                return;
            }
        };
        if entry.running.is_some() || entry.epoch != epoch {
            // Keys and consumers were in flux while a job ran; look again after it.
            tracing::debug!(plan = name, "drift check ignored: a job ran meanwhile");
            entry.observe_at = entry.observe_at.min(now);
            return;
        }
        let inv = &observation.inventory;
        let previous = entry.state.observed;
        // A rotation the journal knows of since the last look (a CLI run while the
        // daemon was down, say) changed the keys, not a stranger.
        let journal_rotated = previous.is_some_and(|p| {
            self.ctx
                .engine
                .history(Some(name), 1)
                .ok()
                .and_then(|h| h.into_iter().next())
                .is_some_and(|r| {
                    r.finished_at.unwrap_or(r.started_at) > p.at || r.finished_at.is_none()
                })
        });
        // The key keyflip last moved consumers to: the journal's word, not whatever
        // the consumers happen to agree on now.
        let expected = self.ctx.engine.history(Some(name), 20).ok().and_then(|h| {
            h.into_iter().find_map(|r| match r.outcome {
                Some(Outcome::Completed { active, .. }) => Some(active),
                _ => None,
            })
        });
        let Some(entry) = self.plans.get_mut(name) else {
            return;
        };
        let findings = drift::assess(
            previous.as_ref(),
            entry.keyflip_changed || journal_rotated,
            expected,
            &observation,
        );
        let active = expected.or(inv.active);
        entry.keyflip_changed = false;
        entry.observed_once = true;
        entry.active_created = inv.active.and_then(|k| inv.key(k).created);
        entry.state.observed = Some(ObservedKeys {
            at: inv.observed_at,
            key1: inv.key1,
            key2: inv.key2,
        });
        let lines: Vec<String> = findings.iter().map(ToString::to_string).collect();
        let new: Vec<&Finding> = findings
            .iter()
            .filter(|f| {
                matches!(f, Finding::KeyRegenerated { .. }) || !entry.drift.contains(&f.to_string())
            })
            .collect();
        for f in &new {
            tracing::warn!(plan = name, kind = f.kind(), finding = %f, "drift");
            self.ctx.metrics.drift_finding(name, f.kind());
        }
        self.ctx
            .metrics
            .drift_check(name, if findings.is_empty() { "ok" } else { "drift" });
        tracing::debug!(plan = name, findings = findings.len(), active = ?active, "drift check finished");
        let plan = entry.plan.clone();
        if !new.is_empty() {
            let mut n = Notification::new(
                NotifyEvent::Drift,
                &plan,
                now,
                format!("drift on {}: {}", plan.name, new[0]),
            );
            n.details = lines.clone();
            self.ctx.notifier.send(&plan, NotifyEvent::Drift, n);
        }
        if findings.is_empty() && !entry.drift.is_empty() {
            tracing::info!(plan = name, "drift resolved");
        }
        entry.drift = lines;
        let repairs: Vec<_> = match (plan.drift.repair, active) {
            (true, Some(active)) => findings
                .iter()
                .filter_map(Finding::repairable)
                .filter_map(|id| crate::consumer::listed(&plan, id))
                .map(|id| (id, active))
                .collect(),
            _ => Vec::new(),
        };
        self.save(name);
        if !repairs.is_empty() && !self.stopping {
            self.start_job(name, Job::Repair(repairs), None, now);
        }
    }
}
