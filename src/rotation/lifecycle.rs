//! Starting and resuming rotations: the account lock, the check for an unfinished
//! rotation, the first observation and `begin` for a new one; replay, re-observation
//! and the in-doubt set for an interrupted one. Both then hand the machine to the
//! executor's [`Run`].

use std::collections::HashSet;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::engine::Trigger;
use super::engine::{EngineError, Inner, RotateRequest, machine_options};
use super::executor::{Run, durable};
use super::observe::observe;
use super::progress::{Progress, ProgressEvent};
use super::report::RotationReport;
use super::step::{Ctx, Done};
use crate::journal::{NewRotation, StoredRotation};
use crate::plan::Plan;
use crate::rotation::machine::{
    Action, Attention, Event, Machine, Mode, Observation, Outcome, StepResult, UnlistedConsumer,
};

/// Starts and runs a new rotation of `plan`.
pub(super) async fn rotate(
    inner: &Inner,
    plan: &Plan,
    request: RotateRequest,
    progress: &dyn Progress,
    cancel: CancellationToken,
) -> Result<RotationReport, EngineError> {
    let _lock = inner.lock(&plan.storage_account)?;
    let account = plan.storage_account.as_str();
    let unfinished = inner.journal().unfinished()?;
    if let Some(r) = unfinished
        .iter()
        .find(|r| r.account.as_str().eq_ignore_ascii_case(account))
    {
        return Err(EngineError::Busy {
            account: account.to_owned(),
            holder: format!(
                "rotation {} of plan {} (started {}) is unfinished; finish it first with `keyflip rotate resume {}`",
                r.id,
                r.plan,
                r.started_at.to_rfc3339(),
                r.plan
            ),
        });
    }
    let id = uuid::Uuid::new_v4().to_string();
    // Every Azure call from here on names the rotation, the first observation's too.
    crate::logging::record_rotation(&id);
    let ctx = Ctx::new(inner, plan, &id);
    // Reads only: observed before the rotation is recorded, so a plan that points at
    // something missing, or an unreachable Azure, leaves no unfinished rotation behind.
    let observed_from = Instant::now();
    let mut observation = observe(&ctx).await?;
    if !matches!(request.mode, Mode::Retire { .. }) {
        observation.unlisted = unlisted(inner, plan, &observation).await;
    }
    let options = machine_options(plan, &request);
    let machine = Machine::new(request.mode, options);
    let started_at = inner.clock.now();
    inner.journal().begin(&NewRotation {
        id: id.clone(),
        plan: plan.name.clone(),
        account: plan.storage_account.clone(),
        mode: request.mode,
        options,
        started_at,
    })?;
    durable(inner, || "begin".to_owned())?;
    tracing::info!(rotation_id = %id, plan = %plan.name, mode = %crate::commands::render::mode_text(request.mode), "rotation started");
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
    run.report(Some(request.trigger), false)
}

/// Resumes every unfinished rotation whose plan is in `plans`.
pub(super) async fn resume(
    inner: &Inner,
    plans: &[Plan],
    progress: &dyn Progress,
    cancel: CancellationToken,
) -> Result<Vec<RotationReport>, EngineError> {
    let mut reports = Vec::new();
    let stored = inner.journal().unfinished()?;
    for s in stored {
        let Some(plan) = plans.iter().find(|p| p.name == s.plan) else {
            tracing::warn!(rotation = %s.id, plan = %s.plan, "unfinished rotation of a plan that was not given; left for later");
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
        let _lock = inner.lock(&s.account)?;
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
            reports.push(
                super::repair::resume_repair(inner, plan, &s, progress, &cancel)
                    .instrument(span)
                    .await?,
            );
            continue;
        }
        reports.push(
            resume_one(inner, plan, s, progress, cancel.clone())
                .instrument(span)
                .await?,
        );
    }
    Ok(reports)
}

async fn resume_one(
    inner: &Inner,
    plan: &Plan,
    stored: StoredRotation,
    progress: &dyn Progress,
    cancel: CancellationToken,
) -> Result<RotationReport, EngineError> {
    let machine = stored.replay()?;
    let ctx = Ctx::new(inner, plan, &stored.id);
    let in_doubt: HashSet<u32> = stored.in_doubt().iter().map(|c| c.seq).collect();
    tracing::info!(rotation_id = %stored.id, plan = %plan.name, in_doubt = in_doubt.len(), "resuming an unfinished rotation");
    progress.event(&ProgressEvent::Resuming {
        rotation_id: stored.id.clone(),
        plan: plan.name.clone(),
        in_doubt: in_doubt.len(),
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
    // Everything outstanding, replacing what the re-observation queued.
    let outstanding = run.machine.outstanding();
    run.queue.clear();
    run.enqueue(outstanding);
    run.drive().await?;
    run.report(None, true)
}

/// The consumers of the plan's account that the plan does not list, by discovery in
/// the account's subscription (through the engine's cache; the keys the observation
/// just read). A discovery that fails leaves the list empty and says so in the log:
/// the check informs, it never stops a rotation by failing.
pub(super) async fn unlisted(
    inner: &Inner,
    plan: &Plan,
    obs: &Observation,
) -> Vec<UnlistedConsumer> {
    let written = match crate::discover::journal_writes(&inner.journal(), &plan.storage_account) {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(plan = %plan.name, error = %e, "unlisted-consumer check: the journal's writes of Databricks secrets and Data Factory linked services could not be read");
            Vec::new()
        }
    };
    let started = Instant::now();
    let (found, calls) = crate::discover::unlisted::check(
        &inner.azure,
        &inner.fingerprinter,
        &inner.discovery,
        &inner.databricks,
        &written,
        plan,
        [obs.key1.fingerprint, obs.key2.fingerprint],
    )
    .await;
    tracing::info!(
        plan = %plan.name,
        unlisted = found.len(),
        calls,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "unlisted-consumer check"
    );
    found
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
    }))
}
