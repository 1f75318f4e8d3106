//! Per-consumer drift repairs as an earlier keyflip journaled them: one small
//! "repair" rotation of two steps (`Bind`, then `VerifyConsumer`) per consumer,
//! outside the state machine. keyflip now repairs drift as one `--adopt` rotation
//! through the machine (`Mode::Adopt`, trigger `repair`), and only finishes such a
//! journaled repair here: a repair interrupted by a crash is finished by `resume`,
//! which performs both steps again (both check before they act).

use tokio_util::sync::CancellationToken;

use super::engine::{EngineError, Inner};
use super::executor::durable;
use super::progress::{Progress, ProgressEvent};
use super::report::RotationReport;
use super::status::report_of;
use super::step::{Ctx, Done};
use crate::journal::StoredRotation;
use crate::plan::Plan;
use crate::rotation::machine::{
    Action, Attention, Command, Event, Outcome, StepResult, Warning, WarningKind,
};

/// Whether a stored rotation is a repair (its first command is a `Bind`).
pub(super) fn is_repair(stored: &StoredRotation) -> bool {
    stored
        .steps
        .first()
        .is_some_and(|s| matches!(s.command.action, Action::Bind { .. }))
}

/// Finishes a repair a crash interrupted: both steps again, then the outcome.
pub(super) async fn resume_repair(
    inner: &Inner,
    plan: &Plan,
    stored: &StoredRotation,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<RotationReport, EngineError> {
    let ctx = Ctx::new(inner, plan, &stored.id);
    let steps: Vec<Command> = stored.steps.iter().map(|s| s.command.clone()).collect();
    let mut all = steps.clone();
    if let Some(Action::Bind {
        consumer,
        key,
        fingerprint,
    }) = steps.first().map(|c| &c.action)
        && steps.len() < 2
    {
        all.push(Command {
            seq: 2,
            action: Action::VerifyConsumer {
                consumer: consumer.clone(),
                key: *key,
                fingerprint: *fingerprint,
            },
        });
    }
    let done: Vec<u32> = stored
        .steps
        .iter()
        .filter(|s| s.result.is_some())
        .map(|s| s.seq())
        .collect();
    run_from(&ctx, &all, &done, progress, cancel).await?;
    let record = inner.journal().rotation(&stored.id)?;
    match record {
        Some(record) => report_of(inner, &record),
        None => Err(EngineError::Stalled {
            rotation_id: stored.id.clone(),
        }),
    }
}

async fn run_from(
    ctx: &Ctx<'_>,
    steps: &[Command],
    done: &[u32],
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<(), EngineError> {
    let inner = ctx.inner;
    let id = ctx.rotation_id;
    let mut failure = None;
    let mut bound_at = None;
    for cmd in steps {
        if cancel.is_cancelled() {
            return Err(EngineError::Interrupted {
                rotation_id: id.to_owned(),
            });
        }
        if done.contains(&cmd.seq) {
            continue;
        }
        let at = inner.clock.now();
        inner.journal().record_intent(id, cmd, at)?;
        durable(inner, || {
            format!("intent:{}:{}", cmd.action.name(), cmd.seq)
        })?;
        if matches!(cmd.action, Action::Bind { .. }) {
            bound_at = Some(at);
        }
        let result = match &cmd.action {
            Action::Bind {
                consumer,
                key,
                fingerprint,
            } => ctx.bind(consumer, *key, *fingerprint).await?,
            Action::VerifyConsumer {
                consumer,
                key,
                fingerprint,
            } => ctx.verify(consumer, *key, *fingerprint, bound_at).await?,
            _ => Done::ok(StepResult::Committed),
        };
        let result = result.result;
        let event = Event::Answer {
            seq: cmd.seq,
            at: inner.clock.now(),
            result: result.clone(),
        };
        inner.journal().record_event(id, &event, event.at())?;
        durable(inner, || format!("result:{}:{}", result.name(), cmd.seq))?;
        if let Some(reason) = result.failure() {
            failure = Some(format!("{}: {reason}", cmd.action));
            break;
        }
    }
    let outcome = match (failure, steps.first().map(|c| &c.action)) {
        (None, Some(Action::Bind { key, consumer, .. })) => Outcome::Completed {
            active: *key,
            regenerated: vec![],
            warnings: vec![Warning::new(
                WarningKind::Repaired,
                format!("repair: {consumer} bound to {key}"),
            )],
        },
        (failure, _) => Outcome::NeedsAttention {
            reason: Attention::Drift {
                drifts: vec![],
                detail: format!(
                    "the drift repair failed: {}",
                    failure.unwrap_or_else(|| "no step to perform".into())
                ),
            },
            in_doubt: vec![],
        },
    };
    inner.journal().finish(id, &outcome, inner.clock.now())?;
    durable(inner, || "finish".to_owned())?;
    progress.event(&ProgressEvent::Finished {
        rotation_id: id.to_owned(),
        outcome,
    });
    Ok(())
}
