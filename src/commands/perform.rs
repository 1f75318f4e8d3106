//! Performing a [`Request`] with an [`Engine`]. [`Standalone`] does all of it in this
//! process when no daemon runs; the daemon performs dry runs, `status` and `history`
//! through the same functions ([`dry_run`], [`status`], [`history`]) and rotations
//! as its own jobs, so both build the same [`Answer`] from the same engine calls.
//!
//! `rotate now` of a plan with an unfinished rotation finishes that rotation first,
//! amended by the request (an incident takes it over, `--grace` shortens its grace),
//! in both processes: [`Engine::rotate_now`].

use std::path::Path;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::answer::{Answer, CommandError};
use super::request::Request;
use crate::clock::SystemClock;
use crate::config::Config;
use crate::exit::Exit;
use crate::plan::{self, Plan};
use crate::rotation::{Engine, Progress, RotateRequest};

/// `rotate now --dry-run`.
pub async fn dry_run(
    engine: &Engine,
    plan: &Plan,
    rotation: RotateRequest,
) -> Result<Answer, CommandError> {
    let dry_run = engine.dry_run(plan, rotation).await?;
    Ok(Answer::DryRun {
        dry_run: Box::new(dry_run),
    })
}

/// `status` of `plans`, as of the engine's clock.
pub async fn status(engine: &Engine, plans: &[Plan]) -> Result<Answer, CommandError> {
    let plans = engine.status(plans).await?;
    // Taken after the plans' own reads, so a plan found due is never shown due "later".
    let at = engine.clock().now();
    Ok(Answer::Status { at, plans })
}

/// `history`, newest first.
pub async fn history(
    engine: &Engine,
    plan: Option<&str>,
    since: Option<chrono::DateTime<chrono::Utc>>,
    limit: usize,
) -> Result<Answer, CommandError> {
    let rotations = engine.history_since(plan, since, limit).await?;
    Ok(Answer::History { rotations })
}

/// This process as the runner: the configuration's plans and an engine on its state
/// directory, with the wall clock.
pub struct Standalone {
    config: Config,
    engine: Engine,
}

impl Standalone {
    pub fn open(config: Config) -> Result<Standalone, CommandError> {
        let engine = Engine::open(&config, Arc::new(SystemClock))?;
        Ok(Standalone { config, engine })
    }

    /// For requests that only read (`status`, `history`, a dry run): an engine that
    /// creates nothing, not even the state directory (see [`Engine::open_to_read`]).
    pub(crate) fn open_to_read(config: Config) -> Result<Standalone, CommandError> {
        let engine = Engine::open_to_read(&config, Arc::new(SystemClock))?;
        Ok(Standalone { config, engine })
    }

    /// Cancelling this ends every wait of the Azure calls in flight (a signal).
    pub(crate) fn interrupt(&self) -> CancellationToken {
        self.engine.azure().interrupt()
    }

    fn plan(&self, name: &str) -> Result<Plan, CommandError> {
        Ok(plan::find(&self.config.plans_dir, name)?)
    }

    /// One plan, or every valid plan in the plans directory (invalid ones are
    /// reported on stderr and skipped).
    fn plans(&self, name: Option<&str>) -> Result<Vec<Plan>, CommandError> {
        match name {
            Some(name) => Ok(vec![self.plan(name)?]),
            None => Ok(all_plans(&self.config.plans_dir)),
        }
    }

    /// Performs `request`; rotations stop between journaled steps when `cancel` fires.
    pub(crate) async fn perform(
        &self,
        request: &Request,
        progress: &dyn Progress,
        cancel: CancellationToken,
    ) -> Result<Answer, CommandError> {
        let engine = &self.engine;
        match request {
            Request::RotateNow {
                plan,
                dry_run: true,
                ..
            } => {
                let rotation = request.rotation().unwrap_or_else(RotateRequest::manual);
                dry_run(engine, &self.plan(plan)?, rotation).await
            }
            Request::RotateNow { plan, .. } => {
                let plan = self.plan(plan)?;
                let rotation = request.rotation().unwrap_or_else(RotateRequest::manual);
                let report = engine.rotate_now(&plan, rotation, progress, cancel).await?;
                Ok(Answer::Rotation {
                    report: Box::new(report),
                })
            }
            Request::Resume {
                plan, force_retire, ..
            } => {
                let plans = self.plans(plan.as_deref())?;
                let mut reports = engine
                    .resume_amended(&plans, &request.amendment(), progress, cancel.clone())
                    .await?;
                // Then what swaps parked at the usage gate still owe.
                for plan in &plans {
                    if let Some(retire) = engine.held_at_gate(plan, *force_retire)? {
                        reports.push(
                            engine
                                .rotate(plan, retire, progress, cancel.clone())
                                .await?,
                        );
                    }
                }
                Ok(Answer::Resumed { reports })
            }
            Request::Status { plan } => status(engine, &self.plans(plan.as_deref())?).await,
            Request::History { plan, limit, since } => {
                history(engine, plan.as_deref(), *since, *limit).await
            }
        }
    }
}

/// The answer of a `rotate now`: its one report (a new rotation, or the unfinished
/// one it finished instead).
pub(crate) fn rotation_answer(
    plan: &str,
    reports: Vec<crate::rotation::RotationReport>,
) -> Result<Answer, CommandError> {
    match reports.into_iter().next() {
        Some(report) => Ok(Answer::Rotation {
            report: Box::new(report),
        }),
        None => Err(CommandError::new(
            super::answer::ErrorCode::Failed,
            format!(
                "plan {plan} had an unfinished rotation, but resuming it returned no report; `keyflip history {plan}` shows where it stands"
            ),
            Exit::Failure,
        )),
    }
}

/// Every valid plan in `dir`; invalid ones are reported on stderr.
fn all_plans(dir: &Path) -> Vec<Plan> {
    let (plans, errors) = plan::load_dir(dir);
    for e in errors {
        eprintln!("keyflip: skipping an invalid plan:\n{e}");
    }
    plans
}
