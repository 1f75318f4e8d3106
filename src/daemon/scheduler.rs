//! The scheduler: one task that owns every plan's state and decides what runs when.
//!
//! Every plan has at most two timers in one ordered queue: when its schedule next needs
//! a decision (a cron occurrence, a key reaching `max_key_age`, a window opening, a
//! retry), and when its next drift check is due. The loop reads the injected clock,
//! fires the timers that have come (deciding for those plans only, through
//! [`schedule::decide`]), starts what is due within the concurrency limits, publishes
//! the rows that changed, then sleeps (through the clock) until the first timer or a
//! message: a job finished or started waiting, a check came back, a control request, a
//! reload, a watchdog ping, shutdown. A message concerns one plan and re-decides that
//! plan only. So the work per event does not grow with the number of plans, a cron's
//! next occurrence is computed once per occurrence, and between timers the daemon does
//! not wake at all (the system clock re-reads the wall time once a minute during long
//! sleeps, and the watchdog pings when systemd asks for it).
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
//! - At most `max_concurrent_rotations` jobs do Azure work at once; a job waiting out
//!   a grace period or a retry backoff holds no slot (it is a timer, not work), and
//!   continues when its wait ends without queueing for one.
//! - Due plans start in the order they became due; checks are spread over each plan's
//!   drift interval and run a few at a time, behind rotations in every budget.
//! - On shutdown nothing new starts; jobs finish their step in flight (bounded by
//!   `shutdown_timeout`) and their results are still recorded.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Loader;
use super::control::protocol::{Answer, CommandError, Request};
use super::drift::Finding;
use super::jobs::{Finished, Job};
use super::kept::{KeptPlan, LoadedPlan};
use super::metrics::Metrics;
use super::notify::Notifier;
use super::observe::Checked;
use super::snapshot::{Activity, Counts, Header, PlanSnapshot, Share, Snapshot};
use super::systemd::SystemdNotifier;
use crate::clock::Clock;
use crate::config::{Config, DaemonConfig};
use crate::exit::Exit;
use crate::journal::PlanState;
use crate::rotation::{Engine, ProgressEvent, Trigger};
use crate::schedule::{self, Decision, Known};

/// Drift and start-up checks running at once. Each is a handful of reads; a few in
/// flight keep the read budget busy without crowding rotations.
pub(super) const MAX_CHECKS: usize = 4;

/// Messages to the scheduler.
pub(crate) enum Msg {
    /// A job (rotation, resume, repair) ended.
    Finished(Finished),
    /// The engine recorded the rotation a job runs.
    RotationId { plan: String, rotation_id: String },
    /// A job started waiting (grace, retry backoff) until `until`.
    Waiting { plan: String, until: DateTime<Utc> },
    /// A job's wait ended; it works again.
    Working { plan: String },
    /// A drift or start-up check came back.
    Observed {
        plan: String,
        /// The plan's job epoch when the check started.
        epoch: u64,
        result: Result<Checked, String>,
    },
    /// Replicas: the shared state of a plan parked here, read at its check.
    Shared {
        plan: String,
        state: Box<crate::coordination::document::PlanDoc>,
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
    /// Someone wants the whole picture (a scrape, a test).
    Snapshot(oneshot::Sender<Snapshot>),
}

/// What jobs and request tasks share.
#[derive(Clone)]
pub(super) struct Context {
    pub(super) engine: Engine,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) notifier: Notifier,
    /// Every job, request task and notification; waited for on shutdown.
    pub(super) tracker: TaskTracker,
    pub(super) shutdown: CancellationToken,
    pub(super) tx: mpsc::UnboundedSender<Msg>,
}

/// How old the active key is, as far as the scheduler knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum KeyAge {
    /// Nothing observed yet: key-age scheduling waits for a check.
    Unknown,
    /// `keyCreationTime` of the active key (`None`: Azure reports none). Before the
    /// first check after a restart, the older key's: a key is never younger than the
    /// journal last saw it, so this can only make a rotation come early, never late.
    Known(Option<DateTime<Utc>>),
}

/// One plan as the scheduler knows it.
pub(super) struct Entry {
    pub(super) plan: KeptPlan,
    /// The plan's name, shared with its timers and queue entries.
    pub(super) key: Arc<str>,
    pub(super) state: PlanState,
    pub(super) running: Option<Box<Activity>>,
    pub(super) observing: bool,
    /// When the next check is due; in the timer queue unless running or observing.
    pub(super) observe_at: Option<DateTime<Utc>>,
    /// Checks that failed in a row: the next comes sooner than the interval.
    pub(super) observe_failures: u32,
    /// The next check must read everything (a job ended without a full picture).
    pub(super) needs_full: bool,
    /// Per Key Vault consumer, the newest version at the last full check (hashed).
    pub(super) kv_seen: Box<[u64]>,
    pub(super) active_created: KeyAge,
    /// Current drift findings.
    pub(super) drift: Vec<Finding>,
    /// A keyflip job changed the keys since the last observation.
    pub(super) keyflip_changed: bool,
    /// Bumped whenever a job starts or ends: a check that began in another epoch saw
    /// keys in flux and is discarded.
    pub(super) epoch: u64,
    /// Removed by a reload while a job ran: dropped when the job ends.
    pub(super) retired: bool,
    /// Stops the running job between journaled steps (a pre-emption).
    pub(super) cancel: Option<CancellationToken>,
    /// A person's request that stopped the running job, started when it has ended.
    pub(super) preempted: Option<Box<(Job, super::jobs::Client)>>,
    /// From the last decision, for the snapshot.
    pub(super) next: Option<DateTime<Utc>>,
    pub(super) reason: &'static str,
    /// The schedule timer in the queue, if any.
    pub(super) due_timer: Option<DateTime<Utc>>,
    /// In the queue of due plans waiting for a slot, since then.
    /// Boxed: only due plans have one, and in place it took 48 bytes of every entry.
    pub(super) queued: Option<Box<(DateTime<Utc>, Trigger)>>,
    /// Its part in the published summary, as last counted.
    pub(super) share: Share,
}

/// What a plan does next, from one decision.
pub(super) enum Next {
    Start(Trigger, DateTime<Utc>),
    At(DateTime<Utc>, &'static str),
    Idle(&'static str),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum TimerKind {
    Due,
    Check,
}

pub(super) struct Scheduler {
    pub(super) ctx: Context,
    pub(super) config: Config,
    /// Boxed: a map node then holds pointers, not half-empty slots of whole entries.
    pub(super) plans: BTreeMap<String, Box<Entry>>,
    pub(super) rx: mpsc::UnboundedReceiver<Msg>,
    /// What every evaluation publishes; rows are assembled on request.
    pub(super) header: watch::Sender<Header>,
    pub(super) counts: Counts,
    pub(super) evaluated_at: Option<DateTime<Utc>>,
    pub(super) systemd: SystemdNotifier,
    pub(super) loader: Loader,
    pub(super) ready: bool,
    pub(super) stopping: bool,
    pub(super) last_summary: String,
    /// Every plan's next decision and next check, earliest first.
    pub(super) timers: BTreeSet<(DateTime<Utc>, TimerKind, Arc<str>)>,
    /// Due plans waiting for a slot, in the order they became due.
    pub(super) due: BTreeSet<(DateTime<Utc>, Arc<str>)>,
    /// Checks due, waiting for one of [`MAX_CHECKS`].
    pub(super) checks_due: BTreeSet<(DateTime<Utc>, Arc<str>)>,
    /// Jobs running, and those among them doing Azure work (not waiting).
    pub(super) jobs: usize,
    pub(super) busy: usize,
    pub(super) checks: usize,
    /// Plans whose published row is stale.
    pub(super) dirty: BTreeSet<Arc<str>>,
}

impl Scheduler {
    pub fn settings(&self) -> &DaemonConfig {
        &self.config.daemon
    }

    /// New entries for `plans`, from the journal's memory of them (or fresh ones that
    /// start counting now, after each plan's last rotation if the journal has one).
    /// One read of every stored state and one transaction for the new ones, however
    /// many plans there are.
    pub(crate) fn entries_for(&mut self, plans: Vec<LoadedPlan>, now: DateTime<Utc>) -> Vec<Entry> {
        let mut stored: HashMap<String, PlanState> = match self.ctx.engine.journal().plan_states() {
            Ok(states) => states.into_iter().map(|s| (s.plan.clone(), s)).collect(),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the plans' state; starting them afresh");
                HashMap::new()
            }
        };
        // The journal's last completed rotations, so last-success survives a restart
        // and counts rotations run while the daemon was not.
        let successes = self
            .ctx
            .engine
            .journal()
            .last_successes()
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot read the plans' last successes");
                HashMap::new()
            });
        let mut fresh = Vec::new();
        let mut last_starts: Option<HashMap<String, DateTime<Utc>>> = None;
        let mut entries = Vec::with_capacity(plans.len());
        for LoadedPlan(plan) in plans {
            let mut state = match stored.remove(&*plan.name) {
                Some(state) => state,
                None => {
                    let starts = last_starts.get_or_insert_with(|| {
                        self.ctx.engine.journal().last_starts().unwrap_or_else(|e| {
                            tracing::error!(error = %e, "cannot read past rotations");
                            HashMap::new()
                        })
                    });
                    let mut state = PlanState::new(&plan.name, now);
                    state.last_started = starts.get(&*plan.name).copied();
                    fresh.push(state.clone());
                    state
                }
            };
            state.last_success = state.last_success.max(successes.get(&*plan.name).copied());
            entries.push(new_entry(plan, state, now));
        }
        if !fresh.is_empty()
            && let Err(e) = self.ctx.engine.journal().save_plan_states(&fresh)
        {
            tracing::error!(error = %e, plans = fresh.len(), "cannot record the new plans' state");
        }
        entries
    }

    /// Adds an entry and arms its timers.
    pub fn insert(&mut self, entry: Entry, now: DateTime<Utc>) {
        let name = entry.plan.name.to_string();
        self.plans.insert(name.clone(), Box::new(entry));
        self.arm_check(&name, now);
        self.decide(&name, now);
    }

    /// Writes the plan's state to the journal; a failure is logged (the schedule then
    /// only lives in memory until the next successful write).
    pub(crate) fn save(&mut self, plan: &str) {
        if let Some(entry) = self.plans.get(plan)
            && let Err(e) = self.ctx.engine.journal().save_plan_state(&entry.state)
        {
            tracing::error!(plan, error = %e, "cannot record the plan's state in the journal");
        }
    }

    /// The entry, marked for republishing.
    pub(crate) fn entry_mut(&mut self, name: &str) -> Option<&mut Entry> {
        let entry = self.plans.get_mut(name)?;
        // One search of the set, not two (a refcount for an entry already marked).
        self.dirty.insert(entry.key.clone());
        Some(entry)
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
            self.fire(now);
            self.dispatch(now);
            self.publish(now);
            let wake = self.timers.first().map(|t| t.0);
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

    /// Once the last check or job in flight has ended, hands the heap it freed (HTTP
    /// answers, parsed plans, observations) back to the kernel, so resident memory
    /// returns to the idle level after each burst of work, not only after a load.
    fn settle_heap(&self) {
        if self.checks == 0 && self.jobs == 0 {
            self.ctx.engine.journal().shrink_memory();
            super::release_heap();
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Finished(finished) => {
                self.conclude(finished);
                self.settle_heap();
            }
            Msg::RotationId { plan, rotation_id } => {
                if let Some(activity) = self.entry_mut(&plan).and_then(|e| e.running.as_mut()) {
                    activity.rotation_id = Some(rotation_id);
                }
            }
            Msg::Waiting { plan, until } => self.waiting(&plan, Some(until)),
            Msg::Working { plan } => self.waiting(&plan, None),
            Msg::Observed {
                plan,
                epoch,
                result,
            } => {
                self.observed(&plan, epoch, result);
                self.settle_heap();
            }
            Msg::Shared { plan, state } => self.unparked_elsewhere(&plan, &state),
            Msg::Request {
                request,
                progress,
                reply,
            } => self.request(request, progress, reply),
            Msg::Reload(reply) => {
                let result = self.reload();
                // Whoever asked sees the new plan set in the snapshot once answered.
                let now = self.ctx.clock.now();
                self.fire(now);
                self.dispatch(now);
                self.publish(now);
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
            Msg::Ping(reply) => {
                let _ = reply.send(());
            }
            Msg::Snapshot(reply) => {
                let _ = reply.send(self.snapshot_now());
            }
        }
    }

    /// A job started (`Some`) or stopped (`None`) waiting: it holds a slot only while
    /// it works.
    fn waiting(&mut self, plan: &str, until: Option<DateTime<Utc>>) {
        let Some(activity) = self.entry_mut(plan).and_then(|e| e.running.as_mut()) else {
            return;
        };
        let was = activity.waiting_until.is_some();
        activity.waiting_until = until;
        match (was, until.is_some()) {
            (false, true) => self.busy = self.busy.saturating_sub(1),
            (true, false) => self.busy += 1,
            _ => {}
        }
    }

    /// Fires every timer that has come.
    pub fn fire(&mut self, now: DateTime<Utc>) {
        while let Some((at, kind, name)) = self.timers.first().cloned() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            match kind {
                TimerKind::Due => {
                    if let Some(e) = self.plans.get_mut(&*name) {
                        e.due_timer = None;
                    }
                    self.decide(&name, now);
                }
                TimerKind::Check => {
                    let Some(e) = self.plans.get_mut(&*name) else {
                        continue;
                    };
                    if e.running.is_none() && !e.observing && !e.retired {
                        self.checks_due.insert((at, name));
                    }
                }
            }
        }
    }

    /// Starts due jobs within the concurrency limit and due checks within theirs.
    pub(crate) fn dispatch(&mut self, now: DateTime<Utc>) {
        if self.stopping {
            return;
        }
        let limit = self.settings().max_concurrent_rotations;
        let mut unfinished: Option<Vec<String>> = None;
        while self.busy < limit {
            let Some((_, name)) = self.due.pop_first() else {
                break;
            };
            let Some(entry) = self.plans.get_mut(&*name) else {
                continue;
            };
            let Some((_, trigger)) = entry.queued.take().map(|q| *q) else {
                continue;
            };
            if entry.running.is_some() || entry.retired {
                continue;
            }
            // A plan with an unfinished rotation resumes it instead of starting another.
            let unfinished = unfinished.get_or_insert_with(|| {
                self.ctx
                    .engine
                    .unfinished()
                    .map(|u| u.into_iter().map(|(_, plan)| plan).collect())
                    .unwrap_or_default()
            });
            let job = if unfinished.iter().any(|u| **u == *name) {
                Job::Resume(Default::default())
            } else {
                Job::Rotate(
                    crate::rotation::RotateRequest::by_daemon(
                        crate::rotation::machine::Mode::Scheduled,
                        trigger,
                    ),
                    entry.state.last_started,
                )
            };
            if let Some(entry) = self.entry_mut(&name) {
                entry.state.last_started = Some(now);
            }
            self.save(&name);
            self.start_job(&name, job, None, now);
        }
        while self.checks < MAX_CHECKS {
            let Some((_, name)) = self.checks_due.pop_first() else {
                break;
            };
            let Some(entry) = self.plans.get(&*name) else {
                continue;
            };
            if entry.running.is_some() || entry.observing || entry.retired {
                continue;
            }
            self.start_observation(&name, now);
        }
    }

    /// Decides what `name` does next and files it: into the due queue, under a timer,
    /// or nowhere.
    pub fn decide(&mut self, name: &str, now: DateTime<Utc>) {
        let Some(entry) = self.plans.get(name) else {
            return;
        };
        if entry.retired {
            return;
        }
        let decision = next(entry, now);
        self.unfile(name);
        let Some(entry) = self.entry_mut(name) else {
            return;
        };
        let key = entry.key.clone();
        match decision {
            Next::Start(trigger, since) => {
                entry.next = Some(since.min(now));
                entry.reason = "due";
                entry.queued = Some(Box::new((since, trigger)));
                self.due.insert((since, key));
            }
            Next::At(at, reason) => {
                entry.next = Some(at);
                entry.reason = reason;
                entry.due_timer = Some(at);
                self.timers.insert((at, TimerKind::Due, key));
            }
            Next::Idle(reason) => {
                entry.next = None;
                entry.reason = reason;
            }
        }
    }

    /// Puts the plan's next check under a timer (at `observe_at`), unless it is busy.
    pub(crate) fn arm_check(&mut self, name: &str, now: DateTime<Utc>) {
        let Some(entry) = self.plans.get(name) else {
            return;
        };
        if entry.running.is_some() || entry.observing || entry.retired {
            return;
        }
        let at = entry.observe_at.unwrap_or(now);
        self.timers
            .insert((at, TimerKind::Check, entry.key.clone()));
    }

    /// Takes the plan's check timer out of the queue.
    pub(crate) fn disarm_check(&mut self, name: &str) {
        let Some(entry) = self.plans.get(name) else {
            return;
        };
        let Some(at) = entry.observe_at else {
            return;
        };
        let key = entry.key.clone();
        self.timers.remove(&(at, TimerKind::Check, key.clone()));
        self.checks_due.remove(&(at, key));
    }

    /// Takes the plan's schedule timer and due-queue entry out.
    pub(crate) fn unfile(&mut self, name: &str) {
        let Some(entry) = self.plans.get_mut(name) else {
            return;
        };
        let key = entry.key.clone();
        if let Some(at) = entry.due_timer.take() {
            self.timers.remove(&(at, TimerKind::Due, key.clone()));
        }
        if let Some((since, _)) = entry.queued.take().map(|q| *q) {
            self.due.remove(&(since, key));
        }
    }

    /// Forgets a plan: its timers, queue entries and part in the summary.
    pub fn remove_plan(&mut self, name: &str) {
        self.disarm_check(name);
        self.unfile(name);
        if let Some(entry) = self.plans.remove(name) {
            self.counts
                .apply(&entry.key, &entry.share, &Share::default());
        }
    }

    /// Jobs running now (rotations, resumes, repairs), waiting ones included.
    pub fn running(&self) -> usize {
        self.jobs
    }

    /// Resumes every unfinished rotation whose plan is loaded and idle.
    pub(crate) fn start_resumes(&mut self, now: DateTime<Utc>) {
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
                    self.start_job(&plan, Job::Resume(Default::default()), None, now);
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

    /// Republishes the rows that changed and the header, and the summary to systemd
    /// when it changed.
    pub(crate) fn publish(&mut self, now: DateTime<Utc>) {
        for name in std::mem::take(&mut self.dirty) {
            let Some(entry) = self.plans.get_mut(&*name) else {
                continue;
            };
            let share = if entry.retired {
                Share::default()
            } else {
                Share {
                    counted: true,
                    parked: entry.state.parked.is_some(),
                    drifted: !entry.drift.is_empty(),
                    running: entry.running.is_some(),
                    next_due: entry.next,
                }
            };
            self.counts.apply(&name, &entry.share, &share);
            entry.share = share;
        }
        self.evaluated_at = Some(now);
        let summary = self.counts.summary(self.ready, self.stopping);
        self.header.send_replace(Header {
            evaluated_at: Some(now),
            ready: self.ready,
            stopping: self.stopping,
            summary: summary.clone(),
        });
        if summary != self.last_summary {
            if self.ready {
                self.systemd.status(&summary);
            }
            self.last_summary = summary;
        }
    }

    /// The whole picture now: one row per plan, assembled from the entries.
    pub(crate) fn snapshot_now(&self) -> Snapshot {
        Snapshot {
            evaluated_at: self.evaluated_at,
            ready: self.ready,
            stopping: self.stopping,
            plans: self
                .plans
                .values()
                .filter(|e| !e.retired)
                .map(|e| row(e))
                .collect(),
        }
    }
}

/// The published row of one plan.
pub(super) fn row(e: &Entry) -> PlanSnapshot {
    PlanSnapshot {
        name: e.plan.name.to_string(),
        account: e.plan.account().to_owned(),
        next_due: e.next,
        due_reason: e.reason.to_owned(),
        running: e.running.as_deref().cloned(),
        checking: e.observing,
        last_started: e.state.last_started,
        last_success: e.state.last_success,
        failures: e.state.failures,
        retry_at: e.state.retry_at,
        parked: e.state.parked.clone(),
        keys: e.state.observed,
        active_key_created: match e.active_created {
            KeyAge::Known(at) => at,
            KeyAge::Unknown => None,
        },
        max_key_age: e.plan.schedule.as_ref().and_then(|s| s.max_key_age()),
        drift: e.drift.iter().map(ToString::to_string).collect(),
    }
}

/// A fresh entry for `plan` with its stored state. Its first check is due at the
/// plan's place in its drift interval (a hash of its name), or when the last one
/// recorded plus the interval says, or at once when key-age scheduling needs one: so
/// the checks of a restart are spread over the interval, not fired together.
pub(super) fn new_entry(plan: KeptPlan, state: PlanState, now: DateTime<Utc>) -> Entry {
    let interval = check_interval(&plan);
    let active_created = match &state.observed {
        Some(o) => KeyAge::Known(match (o.key1.created, o.key2.created) {
            (Some(a), Some(b)) => Some(a.min(b)),
            _ => None,
        }),
        None => KeyAge::Unknown,
    };
    let needs_age = plan
        .schedule
        .as_ref()
        .is_some_and(|s| s.max_key_age().is_some())
        && active_created == KeyAge::Unknown;
    let observe_at = match &state.observed {
        _ if needs_age => now,
        Some(o) if o.at + interval > now => o.at + interval,
        _ => spread(&plan.name, interval, now),
    };
    Entry {
        key: plan.name.clone(),
        plan,
        state,
        running: None,
        observing: false,
        observe_at: Some(observe_at),
        observe_failures: 0,
        needs_full: false,
        kv_seen: Box::new([]),
        active_created,
        drift: Vec::new(),
        keyflip_changed: false,
        epoch: 0,
        retired: false,
        cancel: None,
        preempted: None,
        next: None,
        reason: "",
        due_timer: None,
        queued: None,
        share: Share::default(),
    }
}

/// The plan's drift interval as a time span.
pub(super) fn check_interval(plan: &KeptPlan) -> TimeDelta {
    TimeDelta::from_std(plan.drift.interval).unwrap_or(TimeDelta::hours(1))
}

/// The next instant at or after `now` at the plan's own offset within `interval`
/// (FNV-1a of its name): plans spread evenly and keep their places across restarts.
pub(super) fn spread(name: &str, interval: TimeDelta, now: DateTime<Utc>) -> DateTime<Utc> {
    let period = interval.num_milliseconds().max(1);
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let offset = (hash % period as u64) as i64;
    let into = now.timestamp_millis().rem_euclid(period);
    now + TimeDelta::milliseconds((offset - into).rem_euclid(period))
}

/// What one plan does next. Pure apart from reading the entry.
pub(super) fn next(entry: &Entry, now: DateTime<Utc>) -> Next {
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
            return Next::At(retry_at, "retry");
        }
        let tz = schedule.timezone();
        return match schedule.window() {
            Some(w) if !w.contains(tz, now) => match w.next_opening(tz, now) {
                Some(at) => Next::At(at, "retry"),
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
    let active_key_created = match entry.active_created {
        KeyAge::Known(created) => created,
        KeyAge::Unknown if schedule.max_key_age().is_some() => {
            return Next::Idle("waiting-for-observation");
        }
        KeyAge::Unknown => None,
    };
    let known = Known {
        last_started: entry.state.last_started,
        active_key_created,
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
        d @ Decision::Wait { until, .. } => Next::At(until, d.reason_code()),
        Decision::Never => Next::Idle("never"),
    }
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
