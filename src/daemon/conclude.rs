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
use super::notify::{Notification, outcome_label};
use super::scheduler::Scheduler;
use crate::journal::{ObservedKeys, Parked};
use crate::rotation::RotationReport;
use crate::rotation::machine::{Attention, Caller, Outcome};

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
        if report.mode.is_incident() {
            self.ctx.metrics.incident(name);
        }
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
                let plan = entry.plan.clone();
                let n = if report.mode.is_incident() {
                    Notification::incident(&plan, report, now)
                } else {
                    Notification::completed(&plan, report, now)
                };
                self.ctx.notifier.send(&plan, n);
            }
            Outcome::RolledBack { .. } | Outcome::Refused { .. } => {
                self.failed_cycle(name, summary, Some(report), now);
            }
            Outcome::NeedsAttention { reason, .. } => {
                self.park(name, summary.clone(), &summary, Some(report), now);
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
        self.ctx.notifier.send(
            &plan,
            Notification::usage_gate_hold(&plan, report, callers, now),
        );
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
        let wait = retry.backoff(failures);
        let retry_at = (failures < retry.park_after).then(|| {
            now + chrono::TimeDelta::from_std(wait).unwrap_or(chrono::TimeDelta::hours(1))
        });
        self.ctx.notifier.send(
            &plan,
            Notification::failed_cycle(&plan, report, &summary, failures, retry_at, now),
        );
        if failures >= retry.park_after {
            self.park(
                name,
                format!("{failures} failed rotation cycles in a row; the last: {summary}"),
                &summary,
                report,
                now,
            );
            return;
        }
        let Some(entry) = self.plans.get_mut(name) else {
            return;
        };
        entry.state.retry_at = retry_at;
        tracing::warn!(plan = name, failures, retry_in_secs = wait.as_secs(), error = %summary, "rotation cycle failed; will retry");
    }

    /// Parks the plan. `reason` is what `status` shows; `cause` the root cause a
    /// notification starts with when no report says it.
    fn park(
        &mut self,
        name: &str,
        reason: String,
        cause: &str,
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
        let failures = entry.state.failures;
        tracing::error!(plan = name, reason = %reason, "plan parked: needs attention; no automatic rotations until `keyflip rotate now` or `keyflip rotate resume` succeeds");
        self.ctx.notifier.send(
            &plan,
            Notification::needs_attention(&plan, report, cause, failures, now),
        );
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
        tracing::debug!(
            plan = name,
            findings = findings.len(),
            active = active.map_or("unknown", |k| k.as_str()),
            "drift check finished"
        );
        let plan = entry.plan.clone();
        if !new.is_empty() {
            let n = Notification::drift(&plan, &new[0].to_string(), lines.clone(), now);
            self.ctx.notifier.send(&plan, n);
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
