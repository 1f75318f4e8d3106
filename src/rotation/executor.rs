//! The executor: drives one rotation's [`Machine`] by performing its commands.
//!
//! For every command: its intent is recorded in the journal (durable) before it is
//! performed, its result after. A result goes to the machine first (a rejected event is
//! never stored), then into the journal, and only then are the commands it issued
//! started. Commands from
//! one batch run concurrently (consumers are independent), as futures polled by this
//! task, so a crash (or a fail point) drops every one of them at once.
//!
//! Two orderings are the executor's own:
//! - The machine itself issues the bind of a consumer
//!   [`steered_by_azure`](crate::rotation::machine::steered_by_azure) (an ML
//!   workspace's `resyncKeys`: Azure chooses which key it takes and a resync cannot be
//!   steered back) only once every other consumer was bound and verified, and after it
//!   nothing rolls back. Only `revoke_first`, where nothing rolls back at all, binds a
//!   workspace in one batch with the rest. There, and for any consumer that binds last
//!   ([`bind_last`](crate::consumer::Capabilities::bind_last)), the bind waits until
//!   every other bind of its batch has answered. Any forward bind still outstanding
//!   once a rollback has started (a deferred one, or after a crash an in-doubt one) is
//!   answered as not attempted instead of being sent, since it would be undone.
//! - Cancellation is checked only between journaled steps: effects in flight finish and
//!   are recorded; reads and waits in flight are abandoned (an abandoned wait resumes
//!   from its absolute deadline; a read is simply done again).
//!
//! Resuming (see `docs/ARCHITECTURE.md`, "Crash recovery"): the stored events are
//! replayed into a fresh machine (which checks every stored intent), Azure is observed
//! again and fed as `Reobserved`, then every outstanding command is performed; one with
//! an intent but no result is in doubt and is reconciled (a `regenerateKey` is never
//! sent again before Azure says it did not happen; everything else checks before it
//! writes).

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::FutureExt as _;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use tokio_util::sync::CancellationToken;

use super::engine::{EngineError, Inner};
use super::incident;
use super::observe::{observe, observe_against, observe_keys};
use super::progress::{Progress, ProgressEvent};
use super::report::{IncidentReportPaths, RotationReport};
use super::step::{Ctx, Done};
use crate::consumer::ConsumerId;
use crate::rotation::machine::{
    Action, Command, Event, Failure, FailureKind, Machine, Outcome, Phase, Purpose, StepResult,
};

/// Called after every durable journal write; with the `failpoints` feature a test can
/// make it stop the run dead there.
#[cfg(feature = "failpoints")]
pub(super) fn durable(inner: &Inner, name: impl FnOnce() -> String) -> Result<(), EngineError> {
    inner
        .failpoint
        .hit(&name())
        .map_err(|at| EngineError::Crashed { at })
}

#[cfg(not(feature = "failpoints"))]
pub(super) fn durable(_: &Inner, _: impl FnOnce() -> String) -> Result<(), EngineError> {
    Ok(())
}

type Running<'f> = Pin<
    Box<dyn Future<Output = (Command, Instant, Option<Result<Done, EngineError>>)> + Send + 'f>,
>;

/// Reads made ahead for a bind held back to the end of its batch (no intent: they
/// change nothing).
type Preparing<'f> = Pin<Box<dyn Future<Output = ()> + Send + 'f>>;

/// One rotation being driven.
pub(super) struct Run<'c, 'a> {
    ctx: &'c Ctx<'a>,
    pub(super) machine: Machine,
    progress: &'c dyn Progress,
    cancel: CancellationToken,
    /// Commands whose intent is in the journal.
    pub(super) intents: HashSet<u32>,
    /// Commands a crashed run had started without recording their result.
    pub(super) in_doubt: HashSet<u32>,
    /// When each consumer's latest bind was started (a consumer whose value cannot be
    /// read back is verified by it).
    pub(super) bound_at: HashMap<ConsumerId, DateTime<Utc>>,
    pub(super) queue: VecDeque<Command>,
    pub(super) decided: bool,
    binds_running: usize,
    incident_report: Option<IncidentReportPaths>,
}

/// Reads and waits; abandoned on cancellation (everything else runs to its end).
fn abandonable(action: &Action) -> bool {
    matches!(
        action,
        Action::Observe
            | Action::ObserveKeys
            | Action::ObserveAfterRevoke { .. }
            | Action::VerifyKey { .. }
            | Action::VerifyConsumer { .. }
            | Action::CheckUsage { .. }
            | Action::WaitUntil { .. }
    )
}

/// A bind of a consumer that must be bound after the rest of its batch.
fn binds_last(action: &Action) -> bool {
    matches!(action, Action::Bind { consumer, .. } if consumer.capabilities.bind_last)
}

/// The result in words, for progress output.
fn detail(result: &StepResult) -> Option<String> {
    match result {
        StepResult::VersionsDisabled { versions } if !versions.is_empty() => {
            Some(format!("disabled version(s) {}", versions.join(", ")))
        }
        StepResult::Regenerated { fingerprint, .. } => Some(format!("now {fingerprint}")),
        StepResult::UsageChecked { callers, .. } if callers.is_empty() => {
            Some("nobody signs with it".to_owned())
        }
        StepResult::UsageChecked { callers, .. } => Some(format!(
            "{} caller(s): {}",
            callers.len(),
            callers
                .iter()
                .map(|c| format!(
                    "{} ({}), last {}",
                    c.ip,
                    c.user_agent,
                    c.last_seen.format("%H:%M:%S")
                ))
                .collect::<Vec<_>>()
                .join("; ")
        )),
        other => other.failure().map(ToString::to_string),
    }
}

impl<'c, 'a> Run<'c, 'a> {
    pub(super) fn new(
        ctx: &'c Ctx<'a>,
        machine: Machine,
        progress: &'c dyn Progress,
        cancel: CancellationToken,
    ) -> Self {
        Run {
            ctx,
            machine,
            progress,
            cancel,
            intents: HashSet::new(),
            in_doubt: HashSet::new(),
            bound_at: HashMap::new(),
            queue: VecDeque::new(),
            decided: false,
            binds_running: 0,
            incident_report: None,
        }
    }

    fn id(&self) -> &str {
        self.ctx.rotation_id
    }

    fn inner(&self) -> &'a Inner {
        self.ctx.inner
    }

    /// Records `cmd`'s intent unless it is recorded already (durable on return).
    pub(super) fn record_intent(&mut self, cmd: &Command) -> Result<(), EngineError> {
        if self.intents.contains(&cmd.seq) {
            return Ok(());
        }
        let at = self.inner().clock.now();
        self.inner().journal().record_intent(self.id(), cmd, at)?;
        durable(self.inner(), || {
            format!("intent:{}:{}", cmd.action.name(), cmd.seq)
        })?;
        self.intents.insert(cmd.seq);
        if let Action::Bind { consumer, .. } = &cmd.action {
            self.bound_at.insert(consumer.id.clone(), at);
        }
        Ok(())
    }

    /// Queues commands and tells progress which steps are coming, so a display can
    /// print a batch in order whatever order its steps finish in.
    pub(super) fn enqueue(&mut self, commands: Vec<Command>) {
        let seqs: Vec<u32> = commands
            .iter()
            .filter(|c| !matches!(c.action, Action::Finish { .. }))
            .map(|c| c.seq)
            .collect();
        if !seqs.is_empty() {
            self.progress.event(&ProgressEvent::Issued {
                rotation_id: self.id().to_owned(),
                seqs,
            });
        }
        self.queue.extend(commands);
    }

    /// Feeds an event to the machine and queues what it issues.
    pub(super) fn accept(&mut self, event: &Event) -> Result<(), EngineError> {
        let issued = self
            .machine
            .handle(event)
            .map_err(|error| EngineError::Machine {
                rotation_id: self.id().to_owned(),
                error,
            })?;
        self.enqueue(issued);
        if !self.decided {
            let view = self.machine.view();
            if let (Some(route), Some(active), Some(standby)) =
                (view.route, view.active, view.standby)
            {
                self.decided = true;
                self.progress.event(&ProgressEvent::Decided {
                    rotation_id: self.id().to_owned(),
                    route,
                    active,
                    standby,
                });
            }
        }
        Ok(())
    }

    /// An amendment (an incident taking over, a shorter grace): to the machine, then
    /// the journal. The caller checked it is accepted.
    pub(super) fn amend(&mut self, event: &Event) -> Result<(), EngineError> {
        self.accept(event)?;
        let at = event.at();
        self.inner().journal().record_event(self.id(), event, at)?;
        durable(self.inner(), || match event {
            Event::Escalated { .. } => "event:escalated".to_owned(),
            _ => "event:grace".to_owned(),
        })
    }

    /// A command's result: to the machine, then the journal, then progress.
    pub(super) fn answer(
        &mut self,
        cmd: &Command,
        done: Done,
        took: Duration,
    ) -> Result<(), EngineError> {
        self.answer_all(vec![(cmd.clone(), done, took)])
    }

    /// Results of steps that answered together: each to the machine, in order, then
    /// all into the journal in one transaction, then progress. Nothing the machine
    /// issued meanwhile has started yet.
    fn answer_all(&mut self, answers: Vec<(Command, Done, Duration)>) -> Result<(), EngineError> {
        let mut accepted = Vec::with_capacity(answers.len());
        let mut refused = None;
        for (cmd, done, took) in answers {
            let event = Event::Answer {
                seq: cmd.seq,
                at: self.inner().clock.now(),
                result: done.result,
            };
            if let Err(e) = self.accept(&event) {
                refused = Some(e);
                break;
            }
            accepted.push((cmd, event, done.note, done.request_id, took));
        }
        if !accepted.is_empty() {
            let events: Vec<(&Event, DateTime<Utc>)> =
                accepted.iter().map(|(_, e, ..)| (e, e.at())).collect();
            self.inner().journal().record_events(self.id(), &events)?;
        }
        for (cmd, event, note, request_id, took) in accepted {
            let Event::Answer { result, .. } = &event else {
                continue;
            };
            durable(self.inner(), || {
                format!("result:{}:{}", result.name(), cmd.seq)
            })?;
            self.progress.event(&ProgressEvent::StepFinished {
                rotation_id: self.id().to_owned(),
                seq: cmd.seq,
                kind: cmd.action.name().to_owned(),
                step: super::describe::step_in(&cmd.action, self.machine.mode()),
                ok: result.failure().is_none(),
                detail: note.or_else(|| detail(result)),
                duration: took,
                request_id,
            });
        }
        refused.map_or(Ok(()), Err)
    }

    pub(super) fn progress_started(&self, cmd: &Command) {
        self.progress.event(&ProgressEvent::StepStarted {
            rotation_id: self.id().to_owned(),
            seq: cmd.seq,
            kind: cmd.action.name().to_owned(),
            step: super::describe::step_in(&cmd.action, self.machine.mode()),
        });
        if let Some(at) = self.machine.deadline(cmd) {
            let why = match self.machine.phase() {
                Phase::Grace if self.machine.options().usage_gate.is_some() => {
                    "grace period, and log ingestion plus the quiet period before the usage gate's first check"
                }
                Phase::Grace => "grace period before the old key is retired",
                Phase::UsageGate => "the old key is still in use; the usage gate checks again",
                _ => "backoff before retrying",
            };
            self.progress.event(&ProgressEvent::Waiting {
                rotation_id: self.id().to_owned(),
                until: at,
                why: why.to_owned(),
            });
        }
    }

    /// Records the intents of `cmds` (one journal transaction) and starts performing
    /// them.
    fn start_all(
        &mut self,
        cmds: Vec<Command>,
        running: &mut FuturesUnordered<Running<'c>>,
    ) -> Result<(), EngineError> {
        let new: Vec<&Command> = cmds
            .iter()
            .filter(|c| !self.intents.contains(&c.seq))
            .collect();
        if !new.is_empty() {
            let at = self.inner().clock.now();
            self.inner().journal().record_intents(self.id(), &new, at)?;
            for cmd in new {
                durable(self.inner(), || {
                    format!("intent:{}:{}", cmd.action.name(), cmd.seq)
                })?;
                self.intents.insert(cmd.seq);
                if let Action::Bind { consumer, .. } = &cmd.action {
                    self.bound_at.insert(consumer.id.clone(), at);
                }
            }
        }
        for cmd in cmds {
            self.start(cmd, running)?;
        }
        Ok(())
    }

    /// Records the intent (unless recorded) and starts performing `cmd`.
    fn start(
        &mut self,
        cmd: Command,
        running: &mut FuturesUnordered<Running<'c>>,
    ) -> Result<(), EngineError> {
        self.record_intent(&cmd)?;
        self.progress_started(&cmd);
        let in_doubt = self.in_doubt.remove(&cmd.seq);
        let bound_at = cmd
            .action
            .consumer()
            .and_then(|c| self.bound_at.get(&c.id).copied());
        // A grace the rotation's amendments shortened ends earlier than the command says.
        let until = self.machine.deadline(&cmd);
        if matches!(cmd.action, Action::Bind { .. }) {
            self.binds_running += 1;
        }
        let ctx = self.ctx;
        let cancel = self.cancel.clone();
        running.push(Box::pin(async move {
            let started = Instant::now();
            let work = perform(ctx, &cmd, in_doubt, bound_at, until);
            let done = if abandonable(&cmd.action) {
                tokio::select! {
                    done = work => Some(done),
                    () = cancel.cancelled() => None,
                }
            } else {
                Some(work.await)
            };
            (cmd, started, done)
        }));
        Ok(())
    }

    /// Runs until the machine finishes, a fail point fires, or (after `cancel`) nothing
    /// journaled is left in flight.
    pub(super) async fn drive(&mut self) -> Result<Outcome, EngineError> {
        let mut running: FuturesUnordered<Running<'c>> = FuturesUnordered::new();
        let mut preparing: FuturesUnordered<Preparing<'c>> = FuturesUnordered::new();
        let mut deferred: Vec<Command> = Vec::new();
        let mut cancelled = self.cancel.is_cancelled();
        // Whether the batch since the last boundary did anything in Azure.
        let mut reached_azure = true;
        loop {
            if running.is_empty() && deferred.is_empty() {
                // A batch boundary (a bind deferred to the end of its batch is still
                // in it). Consumer verification reads the keys afresh; other steps may
                // use keys Azure gave just before (see `Ctx::keys`). A batch that was
                // only a `Commit` (a journal marker) is no boundary for them.
                let verifying = matches!(
                    self.queue.front().map(|c| &c.action),
                    Some(Action::VerifyConsumer { .. })
                );
                if reached_azure || verifying {
                    self.ctx.forget_keys(verifying);
                }
                reached_azure = self
                    .queue
                    .iter()
                    .any(|c| !matches!(c.action, Action::Commit));
            }
            // Started together once popped: their intents go in one transaction.
            let mut starting: Vec<Command> = Vec::new();
            while !cancelled && let Some(cmd) = self.queue.pop_front() {
                if matches!(cmd.action, Action::Finish { .. }) {
                    self.start_all(std::mem::take(&mut starting), &mut running)?;
                    if !running.is_empty() {
                        tracing::warn!(rotation_id = %self.id(), in_flight = running.len(), "the rotation finished with commands in flight; their results are not recorded");
                    }
                    return self.finish(&cmd).await;
                }
                if self.rolling_back_past(&cmd) {
                    self.skip(&cmd)?;
                    continue;
                }
                let other_bind =
                    |c: &Command| matches!(c.action, Action::Bind { .. }) && !binds_last(&c.action);
                let other_binds = self.binds_running > 0
                    || starting.iter().any(other_bind)
                    || self.queue.iter().any(other_bind);
                if binds_last(&cmd.action) && other_binds {
                    // What its write reads first is read now, beside the other binds.
                    if let Action::Bind {
                        consumer,
                        fingerprint,
                        ..
                    } = &cmd.action
                    {
                        let (ctx, consumer, fingerprint) =
                            (self.ctx, consumer.clone(), *fingerprint);
                        preparing.push(Box::pin(async move {
                            ctx.prepare_bind(&consumer, fingerprint).await;
                        }));
                    }
                    deferred.push(cmd);
                    continue;
                }
                starting.push(cmd);
            }
            self.start_all(starting, &mut running)?;
            if running.is_empty() {
                if cancelled {
                    return Err(EngineError::Interrupted {
                        rotation_id: self.id().to_owned(),
                    });
                }
                if deferred.is_empty() {
                    return Err(EngineError::Stalled {
                        rotation_id: self.id().to_owned(),
                    });
                }
                // Released once what was read ahead for them is in.
                if preparing.is_empty() {
                    self.release(&mut deferred, &mut running)?;
                    continue;
                }
            }
            tokio::select! {
                biased;
                () = self.cancel.cancelled(), if !cancelled => {
                    tracing::info!(rotation_id = %self.id(), "cancelled; letting the steps in flight finish");
                    cancelled = true;
                }
                Some(first) = running.next() => {
                    // Every step that has answered by now is recorded with it: one
                    // journal transaction for results that came in together.
                    let mut finished = vec![first];
                    while let Some(Some(next)) = running.next().now_or_never() {
                        finished.push(next);
                    }
                    let mut answers = Vec::with_capacity(finished.len());
                    let mut failed = None;
                    for (cmd, started, done) in finished {
                        if matches!(cmd.action, Action::Bind { .. }) {
                            self.binds_running -= 1;
                        }
                        match done {
                            // Abandoned: `cancel` fired. The branch above may not have
                            // seen it yet (it can fire between the two polls), so note it
                            // here; otherwise an empty loop would read as a stalled
                            // machine.
                            None => cancelled = true,
                            Some(Err(e)) => {
                                failed.get_or_insert(e);
                            }
                            // Stopped by the interruption, not by Azure: left in doubt.
                            Some(Ok(done)) if done.interrupted => {
                                tracing::info!(rotation = %self.id(), seq = cmd.seq, "interrupted; the step stays in doubt until the rotation resumes");
                                cancelled = true;
                            }
                            Some(Ok(done)) => answers.push((cmd, done, started.elapsed())),
                        }
                    }
                    self.answer_all(answers)?;
                    if let Some(e) = failed {
                        return Err(e);
                    }
                }
                Some(()) = preparing.next() => {}
            }
        }
    }

    /// A forward bind (to the standby) while the rotation is rolling back: the
    /// machine binds every consumer back anyway, so it is not sent. This is what keeps
    /// a deferred (or, after a crash, in-doubt) bind-last consumer (a workspace resync)
    /// from moving to a key it would then have to be moved off again.
    fn rolling_back_past(&self, cmd: &Command) -> bool {
        let Action::Bind { key, .. } = &cmd.action else {
            return false;
        };
        self.machine.phase() == Phase::RollingBack && self.machine.view().standby == Some(*key)
    }

    /// Answers a forward bind as not attempted (its intent recorded first).
    fn skip(&mut self, cmd: &Command) -> Result<(), EngineError> {
        self.record_intent(cmd)?;
        self.progress_started(cmd);
        let done = Done::ok(StepResult::BindFailed {
            reason: Failure::new(
                FailureKind::NotAttempted,
                "not attempted: the rotation is rolling back, so this consumer stays on the old key",
            ),
        });
        self.answer(cmd, done, Duration::ZERO)
    }

    /// The bind-last binds held back until the rest of their batch answered: performed,
    /// or, when the rotation turned back meanwhile, answered as not attempted.
    fn release(
        &mut self,
        deferred: &mut Vec<Command>,
        running: &mut FuturesUnordered<Running<'c>>,
    ) -> Result<(), EngineError> {
        for cmd in std::mem::take(deferred) {
            if self.rolling_back_past(&cmd) {
                self.skip(&cmd)?;
            } else {
                self.start(cmd, running)?;
            }
        }
        Ok(())
    }

    /// `Finish`: its intent, the incident report, then the outcome in the journal.
    async fn finish(&mut self, cmd: &Command) -> Result<Outcome, EngineError> {
        self.record_intent(cmd)?;
        let Action::Finish { outcome } = &cmd.action else {
            return Err(EngineError::Stalled {
                rotation_id: self.id().to_owned(),
            });
        };
        let outcome: Outcome = (**outcome).clone();
        // An incident that took this rotation over and left it to a follow-up gets its
        // report from the follow-up, which names this rotation.
        if self.machine.mode().is_incident() {
            let record = self.inner().journal().rotation(self.id())?;
            if let Some(record) = record {
                let finished_at = self.inner().clock.now();
                self.incident_report = Some(incident::write(
                    self.inner(),
                    &record,
                    &self.machine.view(),
                    finished_at,
                )?);
            }
        }
        let at = self.inner().clock.now();
        self.inner().journal().finish(self.id(), &outcome, at)?;
        durable(self.inner(), || "finish".to_owned())?;
        tracing::info!(rotation_id = %self.id(), plan = %self.ctx.plan.name, outcome = %outcome, "rotation finished");
        self.progress.event(&ProgressEvent::Finished {
            rotation_id: self.id().to_owned(),
            outcome: outcome.clone(),
        });
        Ok(outcome)
    }

    pub(super) fn report(&self, resumed: bool) -> Result<RotationReport, EngineError> {
        let record =
            self.inner()
                .journal()
                .rotation(self.id())?
                .ok_or_else(|| EngineError::Stalled {
                    rotation_id: self.id().to_owned(),
                })?;
        Ok(RotationReport::build(
            &record,
            Some(&self.machine.view()),
            resumed,
            self.incident_report.clone(),
        ))
    }
}

/// Performs one command (never `Finish`).
async fn perform(
    ctx: &Ctx<'_>,
    cmd: &Command,
    in_doubt: bool,
    bound_at: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> Result<Done, EngineError> {
    // Replicas: an effect goes out only while this replica still holds the account's
    // lease (a process paused past it wakes up here and stops).
    if let Some(c) = &ctx.inner.coordination
        && !abandonable(&cmd.action)
    {
        c.ensure_sending(&ctx.plan.storage_account)?;
    }
    match &cmd.action {
        Action::Observe => Ok(Done::ok(StepResult::Observed(observe(ctx).await?))),
        Action::ObserveKeys => Ok(Done::ok(StepResult::Observed(observe_keys(ctx).await?))),
        Action::ObserveAfterRevoke { key, leaked } => Ok(Done::ok(StepResult::Observed(
            observe_against(ctx, Some((*key, *leaked))).await?,
        ))),
        Action::Regenerate {
            key,
            before,
            purpose,
        } => {
            if *purpose == Purpose::Revoke {
                // The incident's usage report asks about the leaked value after it
                // died (a revoke first): keep it in memory for that one query.
                ctx.keep_revoked(*key, before.fingerprint).await;
            }
            ctx.regenerate(*key, *before, in_doubt).await
        }
        Action::VerifyKey {
            key,
            fingerprint,
            budget,
        } => ctx.verify_key(*key, *fingerprint, *budget).await,
        Action::Bind {
            consumer,
            key,
            fingerprint,
        } => ctx.bind(consumer, *key, *fingerprint).await,
        Action::VerifyConsumer {
            consumer,
            key,
            fingerprint,
        } => ctx.verify(consumer, *key, *fingerprint, bound_at).await,
        Action::DisableVersions {
            consumer,
            fingerprints,
        } => ctx.disable_versions(consumer, fingerprints).await,
        Action::CheckUsage {
            key,
            fingerprint,
            since,
            purpose,
        } => ctx.check_usage(*key, *fingerprint, *since, *purpose).await,
        Action::Commit => Ok(Done::ok(StepResult::Committed)),
        Action::WaitUntil { at } => {
            ctx.inner.clock.sleep_until(until.unwrap_or(*at)).await;
            Ok(Done::ok(StepResult::Waited))
        }
        Action::Finish { .. } => Err(EngineError::Stalled {
            rotation_id: ctx.rotation_id.to_owned(),
        }),
    }
}
