//! What the scheduler does with results: a finished job moves the plan's state
//! (success, a failed cycle with backoff, parking after too many), updates metrics and
//! notifies; a drift observation is assessed, reported, and repaired when the plan
//! opts in.
//!
//! Promises: every state change here is written to the journal before the next
//! evaluation; a failed cycle always notifies `failure`, and parking always notifies
//! `needs-attention`; drift notifies only when a finding is new, so a drift that
//! persists does not page someone every interval.

use chrono::{DateTime, TimeDelta, Utc};

use super::drift::{self, Finding};
use super::jobs::{Ending, Finished, Job};
use super::notify::{Notification, outcome_label};
use super::observe::{self, Checked};
use super::scheduler::{KeyAge, Scheduler, check_interval, spread};
use crate::journal::{ObservedKeys, Parked};
use crate::key::KeyName;
use crate::rotation::RotationReport;
use crate::rotation::machine::{Attention, Caller, Outcome};

impl Scheduler {
    pub(crate) fn conclude(&mut self, finished: Finished) {
        let now = self.ctx.clock.now();
        let name = finished.plan;
        let Some(entry) = self.entry_mut(&name) else {
            tracing::warn!(plan = %name, "a job ended for a plan the daemon no longer knows");
            return;
        };
        let was_waiting = entry
            .running
            .take()
            .is_some_and(|a| a.waiting_until.is_some());
        entry.cancel = None;
        let preempted = entry.preempted.take();
        entry.epoch += 1;
        // Until a report says otherwise, the next check reads everything.
        entry.needs_full = true;
        self.jobs = self.jobs.saturating_sub(1);
        if !was_waiting {
            self.busy = self.busy.saturating_sub(1);
        }
        // Replicas: whether this ending changed what the other replicas must know
        // (failures, retry time, parking), so the plan's shared state is written.
        let mut share = false;
        match finished.ending {
            Ending::Interrupted => self.ctx.metrics.rotation(&name, "interrupted"),
            Ending::Superseded(shared) => self.learned(&name, &shared),
            Ending::Failed {
                message,
                busy,
                elsewhere,
            } => {
                self.ctx.metrics.rotation(&name, "error");
                tracing::error!(plan = %name, job = finished.kind, busy, error = %message, "the job could not run");
                // A person's command that could not run told them so; only the
                // schedule's own attempts are failed cycles.
                if finished.kind != "repair" && !finished.manual {
                    if elsewhere {
                        self.held_elsewhere(&name, &message, now);
                        if let (Some(known), Some(entry)) =
                            (finished.known_started, self.plans.get_mut(&name))
                        {
                            entry.state.last_started = known;
                        }
                    } else {
                        self.failed_cycle(&name, message, None, now);
                        share = true;
                    }
                }
            }
            Ending::Reports(reports) => {
                for report in reports {
                    if finished.kind == "repair" {
                        self.repaired(&name, &report);
                    } else {
                        self.apply(&name, &report, finished.manual, now);
                        share = true;
                    }
                }
            }
        }
        if let Some(entry) = self.plans.get(&name)
            && entry.retired
        {
            self.save(&name);
            self.remove_plan(&name);
            return;
        }
        self.save(&name);
        if share {
            self.share(&name, now);
        }
        // The next check: soon when the job left no full picture of the keys and the
        // consumers, at the plan's usual place in its interval when it did.
        if let Some(entry) = self.entry_mut(&name) {
            let interval = check_interval(&entry.plan);
            entry.observe_at = Some(if entry.needs_full {
                now
            } else {
                spread(&entry.plan.name, interval, now)
            });
        }
        self.arm_check(&name, now);
        self.decide(&name, now);
        // A person's request that pre-empted the job runs now, with the plan's
        // bookkeeping already done.
        if let Some((job, client)) = preempted.map(|p| *p) {
            if self.stopping {
                let _ = client.reply.send(Err(super::control::protocol::CommandError::new(
                    super::control::protocol::ErrorCode::ShuttingDown,
                    "the daemon is shutting down; run the command again once it is back (or without it)",
                    crate::exit::Exit::Interrupted,
                )));
            } else if self.plans.get(&name).is_some_and(|e| !e.retired) {
                self.start_job(&name, job, Some(client), now);
            }
        }
    }

    fn apply(&mut self, name: &str, report: &RotationReport, manual: bool, now: DateTime<Utc>) {
        let Some(outcome) = &report.outcome else {
            return;
        };
        self.ctx.metrics.rotation(name, outcome_label(outcome));
        if report.mode.is_incident() {
            self.ctx.metrics.incident(name);
        }
        let summary = crate::rotation::describe::outcome(outcome, report.mode, name);
        let Some(entry) = self.plans.get_mut(name) else {
            return;
        };
        entry.keyflip_changed = true;
        // The start the shared journal recorded (a little after the dispatch's): what
        // this replica's next decision is compared with (see `learned`).
        entry.state.last_started = entry.state.last_started.max(Some(report.started_at));
        let finished_at = report.finished_at.unwrap_or(now);
        if let Some(keys) = report.keys_after {
            entry.state.observed = Some(ObservedKeys {
                at: finished_at,
                key1: keys.key1,
                key2: keys.key2,
            });
        }
        match outcome {
            Outcome::Completed { active, .. } => {
                // A completed rotation verified every consumer on `active` and read
                // both keys at its end: that is the new baseline. Its key age is the
                // active key's new one, so a plan due by `max_key_age` is not due again
                // (the stale age made it rotate in a loop).
                if let Some(keys) = report.keys_after {
                    let created = match active {
                        KeyName::Key1 => keys.key1.created,
                        KeyName::Key2 => keys.key2.created,
                    };
                    entry.active_created = KeyAge::Known(created);
                    entry.keyflip_changed = false;
                    entry.needs_full = false;
                    entry.drift.clear();
                } else {
                    entry.active_created = KeyAge::Unknown;
                }
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
            // A person's command that was refused changed nothing and told them why:
            // it is not one of the schedule's failed cycles.
            Outcome::Refused { .. } if manual => {
                tracing::info!(plan = name, rotation_id = %report.rotation_id, refused = %summary, "a manual rotation was refused; not counted as a failed cycle");
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

    /// Replicas: another replica holds the account's lease, so it is rotating it.
    /// Not this plan's failure: no notification and never parked (a long rotation
    /// elsewhere must not park the plan here); tried again after the first backoff,
    /// when the other replica's completion is learned from the shared journal.
    fn held_elsewhere(&mut self, name: &str, message: &str, now: DateTime<Utc>) {
        let wait = self.settings().retry.backoff(1);
        let Some(entry) = self.plans.get_mut(name) else {
            return;
        };
        // A retry time counts only with a failure on the books; a real failure
        // after this one still parks at `park_after_failures`.
        entry.state.failures = entry.state.failures.max(1);
        entry.state.retry_at =
            Some(now + chrono::TimeDelta::from_std(wait).unwrap_or(chrono::TimeDelta::hours(1)));
        tracing::info!(plan = name, retry_in_secs = wait.as_secs(), reason = %message, "another replica is rotating the plan's account; trying again later");
    }

    /// Replicas: the plan's shared state, read under the account's lease, was newer
    /// than this replica's decision (another replica started or parked the plan):
    /// folded in, nothing counted or notified (the replica that acted did), and the
    /// plan decided again from it. A plan parked elsewhere is parked here too, until a
    /// rotation of it completes on any replica.
    fn learned(&mut self, name: &str, shared: &crate::coordination::document::PlanDoc) {
        let Some(entry) = self.plans.get_mut(name) else {
            return;
        };
        if shared.last_started > entry.state.last_started {
            // Another replica rotated (or tried): the key age this replica knows is
            // stale, and a plan due by `max_key_age` must not rotate on it; the next
            // check (at once, see `conclude`) reads everything.
            entry.active_created = KeyAge::Unknown;
            entry.needs_full = true;
        }
        let state = &mut entry.state;
        state.last_started = state.last_started.max(shared.last_started);
        state.last_success = state.last_success.max(shared.last_success);
        state.failures = shared.failures;
        state.retry_at = shared.retry_at;
        state.parked = shared.parked.as_ref().map(|p| Parked {
            at: p.at,
            reason: p.reason.clone(),
        });
        tracing::info!(plan = name, by = shared.by.as_deref().unwrap_or("another replica"), last_started = ?state.last_started, failures = state.failures, parked = state.parked.is_some(), "another replica acted on the plan since this one decided; deciding again from the shared plan state");
    }

    /// Replicas: the shared state of a plan parked here, read at its check. A rotation
    /// of the plan that completed after the park (on another replica, or the CLI)
    /// cleared it there: the plan is unparked here too and decided again.
    pub(crate) fn unparked_elsewhere(
        &mut self,
        name: &str,
        shared: &crate::coordination::document::PlanDoc,
    ) {
        let now = self.ctx.clock.now();
        let Some(entry) = self.plans.get(name) else {
            return;
        };
        let Some(parked) = &entry.state.parked else {
            return;
        };
        if shared.parked.is_some() || shared.last_success.is_none_or(|s| s < parked.at) {
            return;
        }
        tracing::info!(plan = name, last_success = ?shared.last_success, "a rotation of the plan completed elsewhere after it was parked here; unparked");
        self.learned(name, shared);
        if let Some(entry) = self.entry_mut(name) {
            // Another replica changed the keys: the next check reads everything.
            entry.needs_full = true;
        }
        self.save(name);
        self.decide(name, now);
    }

    /// Replicas: writes the plan's state after a concluded cycle to the account's
    /// shared journal (in the background, under the account's lease), so every
    /// replica's next decision for it starts from the same failures, retry time and
    /// parking. One write per concluded job, whatever the number of plans.
    fn share(&self, name: &str, now: DateTime<Utc>) {
        let Some(coordinator) = self.ctx.engine.coordination().cloned() else {
            return;
        };
        let Some(entry) = self.plans.get(name) else {
            return;
        };
        let Ok(account) = entry
            .plan
            .account()
            .parse::<crate::resource_id::ResourceId>()
        else {
            return;
        };
        let state = &entry.state;
        if state.failures == 0 && state.parked.is_none() {
            // A clean state: a completed rotation's finish in the shared journal
            // already says so (and a refused manual one changed nothing).
            return;
        }
        let shared = crate::coordination::document::PlanDoc {
            last_started: state.last_started,
            last_success: state.last_success,
            failures: state.failures,
            retry_at: state.retry_at,
            parked: state
                .parked
                .as_ref()
                .map(|p| crate::coordination::document::ParkedDoc {
                    at: p.at,
                    reason: p.reason.clone(),
                }),
            by: Some(coordinator.config().replica.clone()),
            updated_at: Some(now),
        };
        let plan = name.to_owned();
        self.ctx.tracker.spawn(async move {
            if let Err(e) = coordinator.record_plan(&account, &plan, shared).await {
                tracing::warn!(plan = %plan, error = %e, "cannot write the plan's state to the shared journal; other replicas decide from what it held before (a rotation of the plan they start is still fenced by the account's lease)");
            }
        });
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

    /// A check came back.
    pub fn observed(&mut self, name: &str, epoch: u64, result: Result<Checked, String>) {
        let now = self.ctx.clock.now();
        self.checks = self.checks.saturating_sub(1);
        let Some(entry) = self.entry_mut(name) else {
            return;
        };
        entry.observing = false;
        let interval = check_interval(&entry.plan);
        let checked = match result {
            Ok(c) => c,
            Err(e) => {
                // Soon, not a whole interval later: a plan whose first check failed
                // would otherwise wait days for a key age or a drift baseline.
                entry.observe_failures = entry.observe_failures.saturating_add(1);
                let backoff = TimeDelta::minutes(1)
                    * 2i32.saturating_pow(entry.observe_failures.saturating_sub(1).min(10));
                let wait = backoff.min(interval).min(TimeDelta::hours(1));
                entry.observe_at = Some(now + wait);
                self.ctx.metrics.drift_check(name, "error");
                tracing::warn!(plan = name, error = %e, retry_in_secs = wait.num_seconds(), "check failed; trying again soon");
                self.arm_check(name, now);
                return;
            }
        };
        entry.observe_failures = 0;
        if entry.running.is_some() || entry.epoch != epoch {
            // Keys and consumers were in flux while a job ran; the job's end arms the
            // next check.
            tracing::debug!(plan = name, "check ignored: a job ran meanwhile");
            return;
        }
        // The next check at the plan's place in its interval, at least half an
        // interval from now (a check that waited long for the budget is not repeated
        // at once).
        entry.observe_at = Some(spread(&entry.plan.name, interval, now + interval / 2));
        let observation = match checked {
            Checked::Unchanged { at } => {
                // Same keys and secrets as the last full look: its consumer findings
                // stand; a regenerated key was news only once.
                entry
                    .drift
                    .retain(|f| !matches!(f, Finding::KeyRegenerated { .. }));
                if let Some(keys) = entry.state.observed.as_mut() {
                    keys.at = at;
                }
                let result = if entry.drift.is_empty() {
                    "ok"
                } else {
                    "drift"
                };
                self.ctx.metrics.drift_check(name, result);
                tracing::debug!(plan = name, "quick check: nothing changed");
                self.save(name);
                self.arm_check(name, now);
                return;
            }
            Checked::Full(o) => *o,
        };
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
        // Marked for republishing when the check came back.
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
        entry.needs_full = false;
        entry.kv_seen = observe::newest_versions(&observation);
        entry.active_created = KeyAge::Known(inv.active.and_then(|k| inv.key(k).created));
        entry.state.observed = Some(ObservedKeys {
            at: inv.observed_at,
            key1: inv.key1,
            key2: inv.key2,
        });
        let lines: Vec<String> = findings.iter().map(ToString::to_string).collect();
        let new: Vec<&Finding> = findings
            .iter()
            .filter(|f| matches!(f, Finding::KeyRegenerated { .. }) || !entry.drift.contains(f))
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
            // Consumers on a dead key are an outage: the headline says so first.
            let headline = drift::headline(&plan.name, &findings, new[0]);
            let outage = drift::consumers_down(&findings) > 0;
            let n = Notification::drift(&plan, &headline, outage, lines.clone(), now);
            self.ctx.notifier.send(&plan, n);
        }
        if findings.is_empty() && !entry.drift.is_empty() {
            tracing::info!(plan = name, "drift resolved");
        }
        entry.drift = findings.clone();
        // One `--adopt` rotation moves every drifted consumer back at once.
        let repair = match (plan.drift.repair, active) {
            (true, Some(active)) if findings.iter().any(|f| f.repairable().is_some()) => {
                match plan.load() {
                    Ok(full) => findings
                        .iter()
                        .filter_map(Finding::repairable)
                        .any(|id| crate::consumer::listed(&full, id).is_some())
                        .then_some(active),
                    Err(e) => {
                        tracing::error!(plan = name, error = %e, "cannot repair drift");
                        None
                    }
                }
            }
            _ => None,
        };
        self.save(name);
        self.arm_check(name, now);
        // The key age may have changed what the schedule says.
        self.decide(name, now);
        if let Some(active) = repair
            && !self.stopping
        {
            self.start_job(name, Job::Repair(active), None, now);
        }
    }
}
