//! The work the scheduler hands out: rotations, resumes and repairs (which hold the
//! account and change Azure), and drift observations (reads only). Each runs as its
//! own task on the scheduler's tracker and reports back with one message.
//!
//! Promises: a job that changes Azure runs with a child of the shutdown token, so on
//! SIGTERM the engine finishes the step in flight, journals it and returns
//! `Interrupted`; an observation is simply dropped on shutdown (it changes nothing).
//! A control client that asked for a job gets its answer from the job itself, the
//! scheduler its state change from the [`Finished`] message.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

use super::control::protocol::{Answer, CommandError, ErrorCode};
use super::observe::{self, Baseline};
use super::progress::DaemonProgress;
use super::scheduler::{Context, Msg, Scheduler};
use super::snapshot::Activity;
use crate::azure::budget::{self, Lane};
use crate::exit::Exit;
use crate::key::KeyName;
use crate::plan::Plan;
use crate::rotation::engine::Amend;
use crate::rotation::machine::Mode;
use crate::rotation::{EngineError, ProgressEvent, RotateRequest, RotationReport, Trigger};

/// What a job does.
#[derive(Clone, Debug)]
pub(super) enum Job {
    /// A rotation the schedule started (refused if the account has an unfinished one),
    /// with the plan's last start the schedule knew of when it decided (replicas: a
    /// later one in the shared plan state supersedes the decision).
    Rotate(RotateRequest, Option<chrono::DateTime<chrono::Utc>>),
    /// `rotate now` over the control socket: [`Engine::rotate_now`], which finishes
    /// the plan's unfinished rotation first, amended by the request.
    ///
    /// [`Engine::rotate_now`]: crate::rotation::Engine::rotate_now
    RotateNow(RotateRequest),
    /// Finish the plan's unfinished rotation, with a person's amendment (`rotate
    /// resume --grace`) or none.
    Resume(Amend),
    /// Move every consumer to the key (drift repair): one `--adopt` rotation.
    Repair(KeyName),
}

impl Job {
    pub fn kind(&self) -> &'static str {
        match self {
            Job::Rotate(..) | Job::RotateNow(_) => "rotation",
            Job::Resume(_) => "resume",
            Job::Repair(_) => "repair",
        }
    }

    /// A person asked for it (over the control socket).
    pub fn manual(&self) -> bool {
        match self {
            Job::RotateNow(_) => true,
            Job::Resume(amend) => amend.by.is_some(),
            Job::Rotate(..) | Job::Repair(_) => false,
        }
    }

    /// Whether it changes what an unfinished rotation does, and so may pre-empt the
    /// job running for the plan (an incident, a shorter grace) instead of waiting.
    pub(crate) fn preempts(&self) -> bool {
        match self {
            Job::RotateNow(r) => r.mode.is_incident() || r.grace.is_some(),
            Job::Resume(amend) => amend.grace.is_some(),
            Job::Rotate(..) | Job::Repair(_) => false,
        }
    }
}

/// How a job ended.
#[derive(Debug)]
pub(super) enum Ending {
    Reports(Vec<RotationReport>),
    /// Replicas: another replica started or parked the plan since this one decided;
    /// the plan's shared state, to decide again from.
    Superseded(Box<crate::coordination::document::PlanDoc>),
    Interrupted,
    /// The engine could not do it; `busy` when another process holds the account,
    /// `elsewhere` when that is another replica holding its lease.
    Failed {
        busy: bool,
        elsewhere: bool,
        message: String,
    },
}

#[derive(Debug)]
pub(crate) struct Finished {
    pub plan: String,
    pub kind: &'static str,
    /// A person asked for the job: its refusals and errors went to them and are not
    /// the schedule's failed cycles.
    pub manual: bool,
    /// A scheduled rotation's decision basis (the plan's last start known before its
    /// dispatch): restored when another replica's lease refused it, which started
    /// nothing, so the retry is judged against the shared state like the first try.
    pub known_started: Option<Option<chrono::DateTime<chrono::Utc>>>,
    pub ending: Ending,
}

/// Who asked for a job over the control socket.
pub(super) struct Client {
    pub progress: mpsc::UnboundedSender<ProgressEvent>,
    pub reply: oneshot::Sender<Result<Answer, CommandError>>,
    /// What the client asked for, which shapes its answer.
    pub asked: Asked,
}

/// The request behind a job a client waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Asked {
    /// `rotate now`: one rotation's report (a new one, or the unfinished one it
    /// finished instead).
    RotateNow,
    /// `rotate resume`: every report.
    Resume,
}

/// The error an engine failure means to a control client: the standalone command's
/// error, except that an interruption here is the daemon shutting down.
pub(super) fn error_reply(e: &EngineError) -> CommandError {
    let mut error = CommandError::from(e);
    if matches!(e, EngineError::Interrupted { .. }) {
        error.code = ErrorCode::ShuttingDown;
    }
    error
}

impl Scheduler {
    /// Marks the plan busy and starts the job.
    pub(crate) fn start_job(
        &mut self,
        name: &str,
        job: Job,
        client: Option<Client>,
        now: DateTime<Utc>,
    ) {
        let lane = self.lane_of(name, &job);
        let cancel = self.ctx.shutdown.child_token();
        self.disarm_check(name);
        self.unfile(name);
        let Some(entry) = self.entry_mut(name) else {
            return;
        };
        entry.next = None;
        entry.reason = "running";
        entry.running = Some(Box::new(Activity {
            kind: job.kind(),
            rotation_id: None,
            since: now,
            waiting_until: None,
        }));
        entry.epoch += 1;
        entry.cancel = Some(cancel.clone());
        let plan = entry.plan.load();
        self.jobs += 1;
        self.busy += 1;
        let ctx = self.ctx.clone();
        let kind = job.kind();
        let manual = job.manual();
        let name = name.to_owned();
        self.ctx.tracker.spawn(budget::in_lane(lane, async move {
            match plan {
                Ok(plan) => run(ctx, plan, job, client, cancel).await,
                Err(message) => {
                    tracing::error!(plan = %name, error = %message, "the job cannot start");
                    if let Some(c) = client {
                        let _ = c.reply.send(Err(CommandError::new(
                            ErrorCode::Failed,
                            message.clone(),
                            Exit::Failure,
                        )));
                    }
                    let _ = ctx.tx.send(Msg::Finished(Finished {
                        plan: name,
                        kind,
                        manual,
                        known_started: None,
                        ending: Ending::Failed {
                            busy: false,
                            elsewhere: false,
                            message,
                        },
                    }));
                }
            }
        }));
    }

    /// Stops the plan's running job between journaled steps (a grace wait at once) so
    /// that `job` runs as soon as it has: an incident or a shorter grace does not wait
    /// an hour behind the rotation it changes. The stopped rotation stays unfinished
    /// and `job` finishes it, amended. A second pre-emption replaces a pending one,
    /// whose client is told.
    pub(crate) fn preempt(&mut self, name: &str, job: Job, client: Client) {
        let Some(entry) = self.plans.get_mut(name) else {
            return;
        };
        tracing::warn!(
            plan = name,
            job = job.kind(),
            "pre-empting the running job: it stops after its step in flight, then this one runs"
        );
        if let Some(cancel) = &entry.cancel {
            cancel.cancel();
        }
        if let Some((_, old)) = entry.preempted.replace(Box::new((job, client))).map(|p| *p) {
            let _ = old.reply.send(Err(CommandError::new(
                ErrorCode::Busy,
                format!("plan `{name}`: another request pre-empted the running job after yours; run yours again if it is still needed"),
                crate::exit::Exit::Busy,
            )));
        }
    }

    /// Which budget lane a job's calls take: an incident (a `--leaked` rotation, or the
    /// resume of one) goes ahead of everything.
    fn lane_of(&self, name: &str, job: &Job) -> Lane {
        match job {
            Job::Rotate(request, _) | Job::RotateNow(request) if request.mode.is_incident() => {
                Lane::Incident
            }
            Job::Rotate(..) | Job::RotateNow(_) | Job::Repair(_) => Lane::Scheduled,
            Job::Resume(_) => {
                let incident = self
                    .ctx
                    .engine
                    .history(Some(name), 1)
                    .ok()
                    .and_then(|h| h.into_iter().next())
                    .is_some_and(|r| r.finished_at.is_none() && r.mode.is_incident());
                if incident {
                    Lane::Incident
                } else {
                    Lane::Scheduled
                }
            }
        }
    }

    /// Starts a check of the plan (quick or full, see `observe`), in the background lane.
    pub(crate) fn start_observation(&mut self, name: &str, now: DateTime<Utc>) {
        let coordination = self.ctx.engine.coordination().cloned();
        let Some(entry) = self.entry_mut(name) else {
            return;
        };
        entry.observing = true;
        let base = Baseline {
            keys: entry.state.observed,
            kv_seen: entry.kv_seen.clone(),
            full: entry.needs_full || entry.keyflip_changed,
        };
        let plan = entry.plan.load();
        let epoch = entry.epoch;
        // Replicas: a plan parked here may have been unparked by a rotation that
        // completed on another replica; its check reads the shared state (one read,
        // parked plans only).
        let coordinator = entry.state.parked.as_ref().and(coordination);
        self.checks += 1;
        let ctx = self.ctx.clone();
        let name = name.to_owned();
        tracing::debug!(plan = %name, at = %now, "check started");
        self.ctx
            .tracker
            .spawn(budget::in_lane(Lane::Background, async move {
                let result = match plan {
                    Ok(plan) => {
                        if let Some(coordinator) = coordinator {
                            match coordinator.peek_plans(&plan.storage_account).await {
                                Ok(mut plans) => {
                                    if let Some(state) = plans.remove(&name) {
                                        let _ = ctx.tx.send(Msg::Shared {
                                            plan: name.clone(),
                                            state: Box::new(state),
                                        });
                                    }
                                }
                                Err(e) => {
                                    tracing::warn!(plan = %name, error = %e, "cannot read the plan's shared state");
                                }
                            }
                        }
                        let work = observe::check(&ctx, &plan, base);
                        tokio::select! {
                            result = work => result,
                            _ = ctx.shutdown.cancelled() => return,
                        }
                    }
                    Err(e) => Err(e),
                };
                let _ = ctx.tx.send(Msg::Observed {
                    plan: name,
                    epoch,
                    result,
                });
            }));
    }
}

async fn run(
    ctx: Context,
    plan: Arc<Plan>,
    job: Job,
    client: Option<Client>,
    cancel: tokio_util::sync::CancellationToken,
) {
    let (progress_tx, reply) = match client {
        Some(c) => (Some(c.progress), Some((c.reply, c.asked))),
        None => (None, None),
    };
    let progress = DaemonProgress {
        plan: plan.name.clone(),
        metrics: ctx.metrics.clone(),
        scheduler: ctx.tx.clone(),
        client: progress_tx,
    };
    let kind = job.kind();
    let manual = job.manual();
    let known_started = match &job {
        Job::Rotate(_, known) => Some(*known),
        _ => None,
    };
    let result: Result<Vec<RotationReport>, EngineError> = match job {
        Job::Rotate(request, known_started) => ctx
            .engine
            .rotate_scheduled(&plan, request, known_started, &progress, cancel.clone())
            .await
            .map(|r| vec![r]),
        Job::RotateNow(request) => ctx
            .engine
            .rotate_now(&plan, request, &progress, cancel.clone())
            .await
            .map(|r| vec![r]),
        Job::Resume(amend) => {
            ctx.engine
                .resume_amended(
                    std::slice::from_ref(&*plan),
                    &amend,
                    &progress,
                    cancel.clone(),
                )
                .await
        }
        Job::Repair(key) => {
            tracing::info!(plan = %plan.name, key = %key, "repairing drift: moving every consumer to the active key in one rotation");
            let request = RotateRequest::by_daemon(Mode::Adopt { key: Some(key) }, Trigger::Repair);
            ctx.engine
                .rotate(&plan, request, &progress, cancel.clone())
                .await
                .map(|r| vec![r])
        }
    };
    // Stopped, but not for a shutdown: a person's request pre-empted this job.
    let preempted = cancel.is_cancelled() && !ctx.shutdown.is_cancelled();
    if let Some((reply, asked)) = reply {
        let answer = match (&result, asked) {
            (Ok(reports), Asked::RotateNow) => {
                crate::commands::perform::rotation_answer(&plan.name, reports.clone())
            }
            (Ok(reports), Asked::Resume) => Ok(Answer::Resumed {
                reports: reports.clone(),
            }),
            (Err(EngineError::Interrupted { rotation_id }), _) if preempted => {
                Err(CommandError::new(
                    ErrorCode::Interrupted,
                    format!(
                        "rotation {rotation_id} of plan {} was pre-empted by a later request (an incident or a shorter grace), which finishes it; `keyflip history {}` shows how it ended",
                        plan.name, plan.name
                    ),
                    crate::exit::Exit::Interrupted,
                ))
            }
            (Err(e), _) => Err(error_reply(e)),
        };
        let _ = reply.send(answer);
    }
    let ending = match result {
        Ok(reports) => Ending::Reports(reports),
        Err(EngineError::Superseded { state, .. }) => Ending::Superseded(state),
        Err(EngineError::Interrupted { rotation_id }) => {
            tracing::info!(plan = %plan.name, rotation_id = %rotation_id, "interrupted by shutdown after the step in flight; the next start resumes it");
            Ending::Interrupted
        }
        Err(e) => Ending::Failed {
            busy: matches!(e, EngineError::Busy { .. }),
            elsewhere: matches!(&e, EngineError::Busy { holder, .. } if holder == crate::coordination::HELD_ELSEWHERE),
            message: e.to_string(),
        },
    };
    let _ = ctx.tx.send(Msg::Finished(Finished {
        plan: plan.name.clone(),
        kind,
        manual,
        known_started,
        ending,
    }));
}
