//! Starting and resuming rotations: the account lock, the check for an unfinished
//! rotation, the first observation and `begin` for a new one; replay, re-observation
//! and the in-doubt set for an interrupted one. Both then hand the machine to the
//! executor's [`Run`].

use std::collections::HashSet;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::engine::{EngineError, Inner, RotateRequest, machine_options};
use super::executor::{Run, durable};
use super::observe::observe;
use super::progress::{Progress, ProgressEvent};
use super::report::RotationReport;
use super::step::{Ctx, Done};
use crate::journal::{NewRotation, StoredRotation};
use crate::plan::Plan;
use crate::rotation::machine::{Action, Event, Machine, StepResult};

/// Starts and runs a new rotation of `plan`.
pub(super) async fn rotate(
    inner: &Inner,
    plan: &Plan,
    request: RotateRequest,
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
            resume_one(inner, plan, s, progress, cancel)
                .instrument(span)
                .await?
        };
        drop(lock);
        return Ok(report);
    }
    if let Some(report) =
        super::replicas::completed_elsewhere(inner, plan, &lock, &request.trigger)?
    {
        return Ok(report);
    }
    let _lock = lock;
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
    let observation = observe(&ctx).await?;
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
    super::replicas::discover(inner, plans).await?;
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
