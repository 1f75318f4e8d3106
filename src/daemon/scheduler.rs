//! The scheduler: one task that owns every plan's state and decides what runs when.
//!
//! It loops: read the injected clock, evaluate every plan (due by cron or key age
//! through [`schedule::decide`], retrying after a failure, waiting for its window),
//! start what is due within the concurrency limit, start drift observations whose
//! interval has passed, publish a [`Snapshot`], then sleep (through the clock) until
//! the earliest next instant or until a message arrives: a job finished, an
//! observation came back, a control request, a reload, a watchdog ping, shutdown.
//!
//! Promises:
//! - One owner: plan state changes only here, so no two jobs run for one plan.
//! - Unfinished rotations are resumed before anything new starts for their plan (and
//!   their resumes start before any new rotation is scheduled).
//! - What the schedule needs to survive a restart (first seen, last start, failures,
//!   retry time, parked state, observed keys) is written to the journal's
//!   `plan_state` before the job it describes starts.
//! - After downtime a missed occurrence runs once (`decide` counts from the last
//!   start); across a DST change nothing runs twice (croner, see `schedule::cron`).
//! - On shutdown nothing new starts; jobs finish their step in flight (bounded by
//!   `shutdown_timeout`) and their results are still recorded.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Loader;
use super::control::protocol::{Answer, CommandError, Request};
use super::drift::Observation;
use super::jobs::{Finished, Job};
use super::metrics::Metrics;
use super::notify::Notifier;
use super::snapshot::{Activity, PlanSnapshot, Snapshot};
use super::systemd::SystemdNotifier;
use crate::clock::Clock;
use crate::config::{Config, DaemonConfig};
use crate::exit::Exit;
use crate::journal::{Journal, PlanState};
use crate::plan::Plan;
use crate::rotation::{Engine, ProgressEvent, Trigger};
use crate::schedule::{self, Decision, Known};

/// Messages to the scheduler.
pub(crate) enum Msg {
    /// A job (rotation, resume, repair) ended.
    Finished(Finished),
    /// The engine recorded the rotation a job runs.
    RotationId { plan: String, rotation_id: String },
    /// A drift observation came back.
    Observed {
        plan: String,
        /// The plan's job epoch when the observation started.
        epoch: u64,
        result: Result<Observation, String>,
    },
    /// A control socket request.
    Request {
        request: Request,
        progress: mpsc::UnboundedSender<ProgressEvent>,
        reply: oneshot::Sender<Result<Answer, CommandError>>,
    },
    /// Reload configuration and plans (SIGHUP): the plan count, or every error.
    Reload(Option<oneshot::Sender<Result<usize, Vec<String>>>>),
    /// The watchdog asks whether the loop still turns.
    Ping(oneshot::Sender<()>),
}

/// What jobs and request tasks share.
#[derive(Clone)]
pub(super) struct Context {
    pub engine: Engine,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub notifier: Notifier,
    /// Every job, request task and notification; waited for on shutdown.
    pub tracker: TaskTracker,
    pub shutdown: CancellationToken,
    pub tx: mpsc::UnboundedSender<Msg>,
}

/// One plan as the scheduler knows it.
pub(super) struct Entry {
    pub plan: Arc<Plan>,
    pub state: PlanState,
    pub running: Option<Activity>,
    pub observing: bool,
    /// When the next drift observation starts.
    pub observe_at: DateTime<Utc>,
    /// At least one observation arrived (key-age scheduling needs one).
    pub observed_once: bool,
    /// `keyCreationTime` of the active key at the last observation.
    pub active_created: Option<DateTime<Utc>>,
    /// Current drift findings, one line each.
    pub drift: Vec<String>,
    /// A keyflip job changed the keys since the last observation.
    pub keyflip_changed: bool,
    /// Bumped whenever a job starts or ends: an observation that began in another
    /// epoch saw keys in flux and is discarded.
    pub epoch: u64,
    /// Removed by a reload while a job ran: dropped when the job ends.
    pub retired: bool,
    /// From the last evaluation, for the snapshot.
    pub next: Option<DateTime<Utc>>,
    pub reason: String,
}

/// What a plan does next, from one evaluation.
enum Next {
    Start(Trigger, DateTime<Utc>),
    At(DateTime<Utc>, String),
    Idle(&'static str),
}

pub(super) struct Scheduler {
    pub ctx: Context,
    pub journal: Journal,
    pub config: Config,
    pub plans: BTreeMap<String, Entry>,
    pub rx: mpsc::UnboundedReceiver<Msg>,
    pub snapshot: watch::Sender<Snapshot>,
    pub systemd: SystemdNotifier,
    pub loader: Loader,
    pub ready: bool,
    pub stopping: bool,
    pub last_summary: String,
}

impl Scheduler {
    pub fn settings(&self) -> &DaemonConfig {
        &self.config.daemon
    }

    /// A new entry for `plan`, from the journal's memory of it (or a fresh one that
    /// starts counting now, after the plan's last rotation if the journal has one).
    pub fn entry_for(&mut self, plan: Plan, now: DateTime<Utc>) -> Entry {
        let stored = self.journal.plan_state(&plan.name).unwrap_or_else(|e| {
            tracing::error!(plan = %plan.name, error = %e, "cannot read the plan's state; starting it afresh");
            None
        });
        let mut state = match stored {
            Some(state) => state,
            None => {
                let mut state = PlanState::new(&plan.name, now);
                if let Ok(last) = self.ctx.engine.history(Some(&plan.name), 1) {
                    state.last_started = last.first().map(|r| r.started_at);
                }
                if let Err(e) = self.journal.save_plan_state(&state) {
                    tracing::error!(plan = %plan.name, error = %e, "cannot record the plan's state");
                }
                state
            }
        };
        // The journal's last completed rotation, so last-success survives a restart
        // and counts rotations run while the daemon was not.
        match self.journal.last_success(&plan.name) {
            Ok(at) => state.last_success = state.last_success.max(at),
            Err(e) => {
                tracing::error!(plan = %plan.name, error = %e, "cannot read the plan's last success")
            }
        }
        Entry {
            plan: Arc::new(plan),
            state,
            running: None,
            observing: false,
            observe_at: now,
            observed_once: false,
            active_created: None,
            drift: Vec::new(),
            keyflip_changed: false,
            epoch: 0,
            retired: false,
            next: None,
            reason: String::new(),
        }
    }

    /// Writes the plan's state to the journal; a failure is logged (the schedule then
    /// only lives in memory until the next successful write).
    pub fn save(&mut self, plan: &str) {
        if let Some(entry) = self.plans.get(plan)
            && let Err(e) = self.journal.save_plan_state(&entry.state)
        {
            tracing::error!(plan, error = %e, "cannot record the plan's state in the journal");
        }
    }

    /// Runs until shutdown, then drains. The exit code is the daemon's.
    pub async fn run(mut self) -> Exit {
        let now = self.ctx.clock.now();
        self.start_resumes(now);
        self.ready = true;
        self.publish(now);
        self.systemd.ready(&self.last_summary);
        // The start-up summary is `daemon::start`'s one info line; this is its end.
        tracing::debug!(plans = self.plans.len(), summary = %self.last_summary, "keyflip daemon ready");
        loop {
            let now = self.ctx.clock.now();
            let wake = self.evaluate(now);
            self.publish(now);
            let sleep = wake.map(|at| self.ctx.clock.sleep_until(at));
            tokio::select! {
                biased;
                _ = self.ctx.shutdown.cancelled() => break,
                msg = self.rx.recv() => match msg {
                    Some(msg) => self.handle(msg),
                    None => break,
                },
                _ = async { match sleep { Some(s) => s.await, None => std::future::pending().await } } => {}
            }
        }
        self.drain().await
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Finished(finished) => self.conclude(finished),
            Msg::RotationId { plan, rotation_id } => {
                if let Some(activity) = self.plans.get_mut(&plan).and_then(|e| e.running.as_mut()) {
                    activity.rotation_id = Some(rotation_id);
                }
            }
            Msg::Observed {
                plan,
                epoch,
                result,
            } => self.observed(&plan, epoch, result),
            Msg::Request {
                request,
                progress,
                reply,
            } => self.request(request, progress, reply),
            Msg::Reload(reply) => {
                let result = self.reload();
                // Whoever asked sees the new plan set in the snapshot once answered.
                let now = self.ctx.clock.now();
                self.evaluate(now);
                self.publish(now);
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
            Msg::Ping(reply) => {
                let _ = reply.send(());
            }
        }
    }

    /// Starts what is due; returns when to look again.
    fn evaluate(&mut self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut wake: Option<DateTime<Utc>> = None;
        let mut earliest = |t: DateTime<Utc>| wake = Some(wake.map_or(t, |w| w.min(t)));
        let mut due: Vec<(DateTime<Utc>, String, Trigger)> = Vec::new();
        let mut observe = Vec::new();
        for (name, entry) in &mut self.plans {
            if entry.retired {
                continue;
            }
            match next(entry, now) {
                Next::Start(trigger, since) => {
                    entry.next = Some(since.min(now));
                    entry.reason = "due".into();
                    due.push((since, name.clone(), trigger));
                }
                Next::At(at, reason) => {
                    entry.next = Some(at);
                    entry.reason = reason;
                    earliest(at);
                }
                Next::Idle(reason) => {
                    entry.next = None;
                    entry.reason = reason.into();
                }
            }
            if !entry.observing && entry.running.is_none() {
                if entry.observe_at <= now {
                    observe.push(name.clone());
                } else {
                    earliest(entry.observe_at);
                }
            }
        }
        for name in observe {
            self.start_observation(&name, now);
        }
        if due.is_empty() {
            return wake;
        }
        due.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        // A plan with an unfinished rotation resumes it instead of starting another.
        let unfinished: Vec<String> = self
            .ctx
            .engine
            .unfinished()
            .map(|u| u.into_iter().map(|(_, plan)| plan).collect())
            .unwrap_or_default();
        for (_, name, trigger) in due {
            if self.running() >= self.settings().max_concurrent_rotations {
                break;
            }
            let job = if unfinished.contains(&name) {
                Job::Resume
            } else {
                Job::Rotate(crate::rotation::RotateRequest {
                    mode: crate::rotation::machine::Mode::Scheduled,
                    grace: None,
                    trigger,
                })
            };
            if let Some(entry) = self.plans.get_mut(&name) {
                entry.state.last_started = Some(now);
                entry.next = None;
                entry.reason = "running".into();
            }
            self.save(&name);
            self.start_job(&name, job, None, now);
        }
        wake
    }

    /// Jobs running now (rotations, resumes, repairs).
    pub fn running(&self) -> usize {
        self.plans.values().filter(|e| e.running.is_some()).count()
    }

    /// Resumes every unfinished rotation whose plan is loaded and idle.
    pub fn start_resumes(&mut self, now: DateTime<Utc>) {
        let unfinished = match self.ctx.engine.unfinished() {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(error = %e, "cannot list unfinished rotations");
                return;
            }
        };
        for (rotation_id, plan) in unfinished {
            match self.plans.get(&plan) {
                Some(entry) if entry.running.is_none() && !entry.retired => {
                    tracing::info!(plan = %plan, rotation_id = %rotation_id, "found an unfinished rotation; resuming it before anything new");
                    self.start_job(&plan, Job::Resume, None, now);
                }
                Some(_) => {}
                None => tracing::error!(
                    plan = %plan,
                    rotation_id = %rotation_id,
                    "an unfinished rotation belongs to a plan that is not loaded; restore the plan file and reload (SIGHUP) so the daemon resumes it"
                ),
            }
        }
    }

    /// Publishes the snapshot, and the summary to systemd when it changed.
    pub fn publish(&mut self, now: DateTime<Utc>) {
        let plans = self
            .plans
            .values()
            .filter(|e| !e.retired)
            .map(|e| PlanSnapshot {
                name: e.plan.name.clone(),
                account: e.plan.storage_account.to_string(),
                next_due: e.next,
                due_reason: e.reason.clone(),
                running: e.running.clone(),
                last_started: e.state.last_started,
                last_success: e.state.last_success,
                failures: e.state.failures,
                retry_at: e.state.retry_at,
                parked: e.state.parked.clone(),
                keys: e.state.observed,
                active_key_created: e.active_created,
                max_key_age: e.plan.schedule.as_ref().and_then(|s| s.max_key_age()),
                drift: e.drift.clone(),
            })
            .collect();
        let snapshot = Snapshot {
            evaluated_at: Some(now),
            ready: self.ready,
            stopping: self.stopping,
            plans,
        };
        let summary = snapshot.summary();
        self.snapshot.send_replace(snapshot);
        if summary != self.last_summary {
            if self.ready {
                self.systemd.status(&summary);
            }
            self.last_summary = summary;
        }
    }
}

/// What one plan does next. Pure apart from reading the entry.
fn next(entry: &Entry, now: DateTime<Utc>) -> Next {
    if entry.running.is_some() {
        return Next::Idle("running");
    }
    if entry.state.parked.is_some() {
        return Next::Idle("parked");
    }
    let Some(schedule) = &entry.plan.schedule else {
        return Next::Idle("manual");
    };
    if entry.state.failures > 0
        && let Some(retry_at) = entry.state.retry_at
    {
        if now < retry_at {
            return Next::At(retry_at, "retry".into());
        }
        let tz = schedule.timezone();
        return match schedule.window() {
            Some(w) if !w.contains(tz, now) => match w.next_opening(tz, now) {
                Some(at) => Next::At(at, "retry".into()),
                None => Next::Idle("never"),
            },
            _ => Next::Start(
                Trigger::Schedule {
                    reason: "retry".into(),
                },
                retry_at,
            ),
        };
    }
    if schedule.max_key_age().is_some() && !entry.observed_once {
        return Next::Idle("waiting-for-observation");
    }
    let known = Known {
        last_started: entry.state.last_started,
        active_key_created: entry.active_created,
        baseline: entry.state.first_seen,
    };
    match schedule::decide(&entry.plan.name, schedule, &known, now) {
        Decision::Due { trigger, since } => {
            let trigger = match trigger {
                schedule::Trigger::Cron { .. } => Trigger::Schedule {
                    reason: "cron".into(),
                },
                schedule::Trigger::KeyAge { .. } | schedule::Trigger::KeyAgeUnknown => {
                    Trigger::KeyAge
                }
            };
            Next::Start(trigger, since)
        }
        d @ Decision::Wait { until, .. } => Next::At(until, d.reason_code().into()),
        Decision::Never => Next::Idle("never"),
    }
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
