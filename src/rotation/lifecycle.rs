//! Starting and resuming rotations: the account lock, the check for an unfinished
//! rotation, the first observation and `begin` for a new one; replay, re-observation
//! and the in-doubt set for an interrupted one. Both then hand the machine to the
//! executor's [`Run`].
//!
//! `rotate now` ([`rotate_now`]) of a plan with an unfinished rotation resumes it
//! first, amended by what was asked: an incident is journaled as
//! [`Event::Escalated`] (the machine finishes the incident itself or winds down), a
//! `--grace` as [`Event::GraceShortened`] (refused before anything is journaled when
//! the rotation has no grace left to shorten). A follow-up rotation (the incident the
//! resumed rotation did not handle, or `--adopt`) then begins under the same account
//! lock, its origin naming the rotation it follows. No incident is ever dropped
//! silently: it is handled, followed up, or the resumed rotation parked and its report
//! says what to run.

use std::collections::HashSet;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::engine::{Amend, EngineError, Inner, RotateRequest, machine_options};
use super::executor::{Run, durable};
use super::observe::{observe, observe_keys};
use super::progress::{Progress, ProgressEvent};
use super::report::RotationReport;
use super::step::{Ctx, Done};
use crate::journal::{NewRotation, StoredRotation};
use crate::plan::Plan;
use crate::rotation::machine::{
    Action, Attention, Event, HandleError, Machine, Mode, Observation, Outcome, StepResult,
};
use crate::rotation::origin::{Requester, Trigger};

/// Starts and runs a new rotation of `plan`; refuses when its account has an
/// unfinished rotation.
pub(super) async fn rotate(
    inner: &Inner,
    plan: &Plan,
    request: RotateRequest,
    decided: Option<super::replicas::Decided>,
    progress: &dyn Progress,
    cancel: CancellationToken,
) -> Result<RotationReport, EngineError> {
    let lock = inner.lock(&plan.storage_account).await?;
    // Replicas: a rotation of this plan another replica left unfinished is finished
    // first, exactly as after a local restart.
    if let Some(s) = super::replicas::unfinished_of(inner, plan)? {
        tracing::info!(plan = %plan.name, rotation_id = %s.id, "the shared journal holds an unfinished rotation of this plan; resuming it instead of starting another");
        let span = crate::logging::rotation_span(&plan.name, &s.id);
        let report = if super::repair::is_repair(&s) {
            super::repair::resume_repair(inner, plan, &s, progress, &cancel)
                .instrument(span)
                .await?
        } else {
            let amendments = Amendments {
                grace: None,
                incident: None,
                by: None,
            };
            resume_one(inner, plan, s, &amendments, progress, cancel)
                .instrument(span)
                .await?
                .0
        };
        drop(lock);
        return Ok(report);
    }
    if let Some(decided) = &decided {
        super::replicas::superseded(plan, &lock, &request.trigger, decided)?;
    }
    if let Some(report) =
        super::replicas::completed_elsewhere(inner, plan, &lock, &request.trigger)?
    {
        return Ok(report);
    }
    let _lock = lock;
    if let Some(r) = unfinished_of(inner, plan)? {
        return Err(EngineError::Busy {
            account: plan.storage_account.to_string(),
            holder: format!(
                "rotation {} of plan {} (started {}) is unfinished; finish it first with `keyflip rotate resume {}`",
                r.id,
                r.plan,
                r.started_at.to_rfc3339(),
                r.plan
            ),
        });
    }
    begin_and_run(inner, plan, request, None, progress, cancel).await
}

/// The account's unfinished rotation, whichever plan it belongs to.
fn unfinished_of(inner: &Inner, plan: &Plan) -> Result<Option<StoredRotation>, EngineError> {
    let account = plan.storage_account.as_str();
    Ok(inner
        .journal()
        .unfinished()?
        .into_iter()
        .find(|r| r.account.as_str().eq_ignore_ascii_case(account)))
}

/// `rotate now`: see [`super::Engine::rotate_now`]. Holds the account's lock for the
/// unfinished rotation and any follow-up, so nothing can start in between.
pub(super) async fn rotate_now(
    inner: &Inner,
    plan: &Plan,
    request: RotateRequest,
    progress: &dyn Progress,
    cancel: CancellationToken,
) -> Result<RotationReport, EngineError> {
    let _lock = inner.lock(&plan.storage_account).await?;
    let Some(stored) = unfinished_of(inner, plan)? else {
        return begin_and_run(inner, plan, request, None, progress, cancel).await;
    };
    if stored.plan != plan.name {
        return Err(EngineError::Busy {
            account: plan.storage_account.to_string(),
            holder: format!(
                "rotation {} of plan {} (started {}) is unfinished; finish it first with `keyflip rotate resume {}`",
                stored.id,
                stored.plan,
                stored.started_at.to_rfc3339(),
                stored.plan
            ),
        });
    }
    let id = stored.id.clone();
    let mode = request.mode;
    tracing::info!(rotation_id = %id, plan = %plan.name, mode = %mode, "rotate now: the plan has an unfinished rotation; finishing it first");
    let (report, follow) = if super::repair::is_repair(&stored) {
        if request.grace.is_some() {
            return Err(EngineError::Amend {
                rotation_id: id,
                plan: plan.name.clone(),
                reason: "it is a drift repair, which has no grace period".to_owned(),
            });
        }
        let report = super::repair::resume_repair(inner, plan, &stored, progress, &cancel).await?;
        (report, mode.is_incident().then_some(mode))
    } else {
        let amend = Amendments {
            grace: request.grace,
            incident: mode.is_incident().then_some(mode),
            by: request.by.clone(),
        };
        resume_one(inner, plan, stored, &amend, progress, cancel.clone()).await?
    };
    // An incident the unfinished rotation did not handle runs next, unless that one
    // parked (a person must look first; its report says what to run). `--adopt` runs
    // next whatever happened: it is how a parked rotation's consumers get back onto
    // one working key.
    let next = match mode {
        Mode::Adopt { .. } => Some(mode),
        _ => follow.filter(|_| {
            !matches!(
                report.outcome,
                Some(crate::rotation::machine::Outcome::NeedsAttention { .. }) | None
            )
        }),
    };
    let Some(next) = next else {
        return Ok(report);
    };
    if cancel.is_cancelled() {
        return Err(EngineError::Interrupted { rotation_id: id });
    }
    tracing::info!(follows = %id, plan = %plan.name, mode = %next, "starting the follow-up rotation");
    let request = RotateRequest {
        mode: next,
        grace: None,
        ..request
    };
    begin_and_run(inner, plan, request, Some(id), progress, cancel).await
}

/// Observes, records and runs a new rotation; the caller holds the account's lock and
/// has checked that nothing is unfinished.
async fn begin_and_run(
    inner: &Inner,
    plan: &Plan,
    request: RotateRequest,
    follows: Option<String>,
    progress: &dyn Progress,
    cancel: CancellationToken,
) -> Result<RotationReport, EngineError> {
    let id = uuid::Uuid::new_v4().to_string();
    // Every Azure call from here on names the rotation, the first observation's too.
    crate::logging::record_rotation(&id);
    let ctx = Ctx::new(inner, plan, &id);
    // Reads only: observed before the rotation is recorded, so a plan that points at
    // something missing, or an unreachable Azure, leaves no unfinished rotation behind.
    let options = machine_options(plan, &request);
    let machine = Machine::new(request.mode, options);
    let observed_from = Instant::now();
    // The machine's first command says what to read: everything, or with a revoke
    // first only the keys.
    let keys_only = matches!(
        machine.outstanding().first().map(|c| &c.action),
        Some(Action::ObserveKeys)
    );
    let mut observation = if keys_only {
        observe_keys(&ctx).await?
    } else {
        observe(&ctx).await?
    };
    if checks_unlisted(request.mode) {
        unlisted(inner, plan, &request.trigger, &mut observation).await;
    }
    let started_at = inner.clock.now();
    inner.journal().begin(&NewRotation {
        id: id.clone(),
        plan: plan.name.clone(),
        account: plan.storage_account.clone(),
        mode: request.mode,
        options,
        started_at,
        origin: request.origin(follows),
    })?;
    durable(inner, || "begin".to_owned())?;
    tracing::info!(rotation_id = %id, plan = %plan.name, mode = %request.mode, trigger = %request.trigger, "rotation started");
    progress.event(&ProgressEvent::Started {
        rotation_id: id.clone(),
        plan: plan.name.clone(),
        mode: request.mode,
    });
    let mut run = Run::new(&ctx, machine, progress, cancel);
    let observe_cmd = run.machine.outstanding().into_iter().next();
    if let Some(cmd) = observe_cmd {
        run.record_intent(&cmd)?;
        run.progress_started(&cmd);
        run.answer(
            &cmd,
            Done::ok(StepResult::Observed(observation)),
            observed_from.elapsed(),
        )?;
    }
    run.drive().await?;
    run.report(false)
}

/// What a resume changes in the rotation it resumes.
#[derive(Default)]
struct Amendments {
    grace: Option<std::time::Duration>,
    /// An incident taking the rotation over.
    incident: Option<Mode>,
    by: Option<Requester>,
}

/// Resumes every unfinished rotation whose plan is in `plans`.
pub(super) async fn resume(
    inner: &Inner,
    plans: &[Plan],
    amend: &Amend,
    progress: &dyn Progress,
    cancel: CancellationToken,
) -> Result<Vec<RotationReport>, EngineError> {
    let mut reports = Vec::new();
    super::replicas::discover(inner, plans).await?;
    let stored = inner.journal().unfinished()?;
    if amend.grace.is_some()
        && !stored
            .iter()
            .any(|s| plans.iter().any(|p| p.name == s.plan))
    {
        let names: Vec<&str> = plans.iter().map(|p| p.name.as_str()).collect();
        return Err(EngineError::Amend {
            rotation_id: "(none)".to_owned(),
            plan: names.join(", "),
            reason: "there is no unfinished rotation, so --grace has nothing to shorten".to_owned(),
        });
    }
    for s in stored {
        let Some(plan) = plans.iter().find(|p| p.name == s.plan) else {
            tracing::warn!(rotation_id = %s.id, plan = %s.plan, "unfinished rotation of a plan that was not given; left for later");
            continue;
        };
        if !plan
            .storage_account
            .as_str()
            .eq_ignore_ascii_case(s.account.as_str())
        {
            return Err(EngineError::Plan {
                plan: plan.name.clone(),
                detail: format!(
                    "unfinished rotation {} is of account {}, but the plan now names {}; put the plan back as it was until the rotation has finished",
                    s.id, s.account, plan.storage_account
                ),
            });
        }
        if cancel.is_cancelled() {
            return Err(EngineError::Interrupted { rotation_id: s.id });
        }
        let _lock = inner.lock(&s.account).await?;
        // Another process may have finished it between the listing and the lock.
        let Some(s) = inner
            .journal()
            .unfinished()?
            .into_iter()
            .find(|r| r.id == s.id)
        else {
            continue;
        };
        let span = crate::logging::rotation_span(&plan.name, &s.id);
        if super::repair::is_repair(&s) {
            if amend.grace.is_some() {
                return Err(EngineError::Amend {
                    rotation_id: s.id,
                    plan: plan.name.clone(),
                    reason: "it is a drift repair, which has no grace period".to_owned(),
                });
            }
            reports.push(
                super::repair::resume_repair(inner, plan, &s, progress, &cancel)
                    .instrument(span)
                    .await?,
            );
            continue;
        }
        let amendments = Amendments {
            grace: amend.grace,
            incident: None,
            by: amend.by.clone(),
        };
        let (report, _) = resume_one(inner, plan, s, &amendments, progress, cancel.clone())
            .instrument(span)
            .await?;
        reports.push(report);
    }
    Ok(reports)
}

/// Resumes one unfinished rotation with `amend` applied; returns its report and the
/// incident a follow-up rotation must run (one asked for that this rotation did not
/// handle: it wound down, or had finished already).
async fn resume_one(
    inner: &Inner,
    plan: &Plan,
    stored: StoredRotation,
    amend: &Amendments,
    progress: &dyn Progress,
    cancel: CancellationToken,
) -> Result<(RotationReport, Option<Mode>), EngineError> {
    let machine = stored.replay()?;
    let refused = |e: HandleError| EngineError::Amend {
        rotation_id: stored.id.clone(),
        plan: plan.name.clone(),
        reason: match e {
            HandleError::Amendment { reason } => reason,
            other => other.to_string(),
        },
    };
    // Checked before anything is read or journaled: a refused change changes nothing.
    let shorten = |at| {
        amend.grace.map(|grace| Event::GraceShortened {
            at,
            grace: chrono::TimeDelta::from_std(grace).unwrap_or(chrono::TimeDelta::MAX),
            by: amend.by.clone(),
        })
    };
    if let Some(event) = shorten(inner.clock.now()) {
        machine.accepts(&event).map_err(refused)?;
    }
    let ctx = Ctx::new(inner, plan, &stored.id);
    let in_doubt: HashSet<u32> = stored.in_doubt().iter().map(|c| c.seq).collect();
    tracing::info!(rotation_id = %stored.id, plan = %plan.name, in_doubt = in_doubt.len(), "resuming an unfinished rotation");
    progress.event(&ProgressEvent::Resuming {
        rotation_id: stored.id.clone(),
        plan: plan.name.clone(),
        in_doubt: in_doubt.len(),
        mode: Some(machine.mode()),
    });
    let mut run = Run::new(&ctx, machine, progress, cancel);
    run.decided = run.machine.view().route.is_some();
    for step in &stored.steps {
        run.intents.insert(step.seq());
        if let Action::Bind { consumer, .. } = &step.command.action {
            run.bound_at.insert(consumer.id.clone(), step.intent_at);
        }
    }
    run.in_doubt = in_doubt;
    if !run.machine.is_finished() {
        let observation = observe(&ctx).await?;
        let at = inner.clock.now();
        let event = Event::Reobserved { at, observation };
        run.accept(&event)?;
        inner.journal().record_event(&stored.id, &event, at)?;
        durable(inner, || "event:reobserved".to_owned())?;
    }
    if let Some(event) = shorten(inner.clock.now())
        && !run.machine.is_finished()
    {
        run.amend(&event)?;
        tracing::info!(rotation_id = %stored.id, plan = %plan.name, "grace period shortened");
    }
    let mut follow = amend.incident;
    if let Some(mode) = amend.incident {
        if run.machine.mode().covers(mode) {
            follow = None;
        } else if !run.machine.is_finished() {
            let event = Event::Escalated {
                at: inner.clock.now(),
                mode,
                by: amend.by.clone(),
            };
            run.amend(&event)?;
            follow = run.machine.follow_up();
            tracing::warn!(rotation_id = %stored.id, plan = %plan.name, incident = %mode, handled_here = follow.is_none(), "an incident took over the unfinished rotation");
        }
    }
    // Everything outstanding, replacing what the re-observation and amendments queued.
    let outstanding = run.machine.outstanding();
    run.queue.clear();
    run.enqueue(outstanding);
    run.drive().await?;
    Ok((run.report(true)?, follow))
}

/// Whether a rotation in `mode` runs the unlisted-consumer check before it starts.
/// Not an incident: a leaked key dies first, and nothing routine (discovery's reads
/// of a whole subscription) stands before it; incidents only ever warned about
/// unlisted consumers anyway. Not a retire of a parked swap, whose consumers were
/// checked when it swapped, nor an adopt, which regenerates nothing and so breaks no
/// consumer the plan does not list (the daemon's drift repair adopts).
pub(super) fn checks_unlisted(mode: Mode) -> bool {
    !mode.is_incident() && !matches!(mode, Mode::Retire { .. } | Mode::Adopt { .. })
}

/// The consumers of the plan's account that the plan does not list, by discovery in
/// the account's subscription (through the engine's cache; the keys the observation
/// just read), into `obs.unlisted`, and the reads that check could not make into
/// `obs.unlisted_unchecked`: the machine warns about them, or with
/// `unlisted = "refuse"` refuses (it never starts on a partial check).
///
/// Whether its calls may be put off: only in the daemon's own rotations (not a
/// person's `rotate now`, `trigger` manual) of a plan that only warns, in an engine
/// whose owner asked for it ([`super::EngineOptions::defer_unlisted_check`], the
/// daemon). Those calls are deferrable reads of the budgets' background lane (see
/// `budget::deferrable`): each goes at once within a quarter of its windows, or not
/// at all, so the check never makes a scheduled rotation wait for the budget nor
/// spends what the rotation's own calls need; what was put off is a warning in the
/// report, and the next check (through the warm `crate::discover::DiscoveryCache`)
/// reads it. Otherwise (`rotate now`, standalone or through the daemon, and plans
/// that refuse) the calls wait for the budget like the rotation's own, a few seconds
/// at worst, and the check is complete unless Azure refuses or fails a read: the same
/// command prints the same report whichever process ran it.
pub(super) async fn unlisted(
    inner: &Inner,
    plan: &Plan,
    trigger: &super::origin::Trigger,
    obs: &mut Observation,
) {
    use crate::azure::budget;
    let defers = defers_unlisted_reads(inner.options.defer_unlisted_check, plan, trigger);
    let checked = if defers {
        budget::in_lane(
            budget::Lane::Background,
            budget::deferrable(unlisted_now(inner, plan, obs)),
        )
        .await
    } else {
        unlisted_now(inner, plan, obs).await
    };
    obs.unlisted = checked.unlisted;
    obs.unlisted_unchecked = checked.unchecked;
}

/// Whether the unlisted-consumer check of a rotation for `trigger` may put its reads
/// off (see [`unlisted`]).
fn defers_unlisted_reads(
    engine_defers: bool,
    plan: &Plan,
    trigger: &super::origin::Trigger,
) -> bool {
    // A person's `rotate now` checks everything whichever process runs it (one truth:
    // the daemon's run must not print a warning the standalone run does not); the
    // daemon's own rotations never wait for discovery.
    engine_defers
        && plan.unlisted != crate::plan::UnlistedPolicy::Refuse
        && *trigger != super::origin::Trigger::Manual
}

async fn unlisted_now(
    inner: &Inner,
    plan: &Plan,
    obs: &Observation,
) -> crate::discover::unlisted::Checked {
    let written = match crate::discover::journal_writes(&inner.journal(), &plan.storage_account) {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(plan = %plan.name, error = %e, "unlisted-consumer check: the journal's writes of consumers whose values cannot be read back could not be read");
            Vec::new()
        }
    };
    let started = Instant::now();
    let checked = crate::discover::unlisted::check(
        &inner.azure,
        &inner.fingerprinter,
        &inner.discovery,
        &inner.sources,
        &written,
        plan,
        [obs.key1.fingerprint, obs.key2.fingerprint],
    )
    .await;
    tracing::info!(
        plan = %plan.name,
        unlisted = checked.unlisted.len(),
        unchecked = checked.unchecked.len(),
        calls = checked.calls,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "unlisted-consumer check"
    );
    checked
}

/// The retire a swap of `plan` parked at the usage gate still owes (see
/// [`super::Engine::held_at_gate`]).
pub(super) fn held_at_gate(
    inner: &Inner,
    plan: &Plan,
    force: bool,
) -> Result<Option<RotateRequest>, EngineError> {
    let history = inner.journal().history(Some(&plan.name), 20)?;
    // Refusals changed nothing: the latest rotation that did decides.
    let Some(last) = history
        .into_iter()
        .filter(|r| r.finished_at.is_some())
        .find(|r| !matches!(r.outcome, Some(Outcome::Refused { .. })))
    else {
        return Ok(None);
    };
    let Some(Outcome::NeedsAttention {
        reason: Attention::UsageGateHeld { key, since, .. },
        ..
    }) = &last.outcome
    else {
        return Ok(None);
    };
    // The key's value as that rotation left it: observed, then any regeneration.
    let mut expect = None;
    for step in &last.steps {
        match (&step.command.action, &step.result) {
            (_, Some(StepResult::Observed(obs))) if expect.is_none() => {
                expect = Some(obs.key(*key).fingerprint);
            }
            (
                Action::Regenerate { key: k, .. },
                Some(StepResult::Regenerated { fingerprint, .. }),
            ) if k == key => expect = Some(*fingerprint),
            _ => {}
        }
    }
    Ok(expect.map(|expect| RotateRequest {
        mode: Mode::Retire {
            key: *key,
            expect,
            since: *since,
            force,
        },
        grace: None,
        trigger: Trigger::Manual,
        by: None,
    }))
}
