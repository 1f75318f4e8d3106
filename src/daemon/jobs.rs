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
use crate::consumer::ConsumerId;
use crate::exit::Exit;
use crate::key::KeyName;
use crate::plan::Plan;
use crate::rotation::{EngineError, ProgressEvent, RotateRequest, RotationReport};

/// What a job does.
#[derive(Clone, Debug)]
pub(super) enum Job {
    Rotate(RotateRequest),
    Resume,
    /// Bind each consumer to the key (drift repair).
    Repair(Vec<(ConsumerId, KeyName)>),
}

impl Job {
    pub fn kind(&self) -> &'static str {
        match self {
            Job::Rotate(_) => "rotation",
            Job::Resume => "resume",
            Job::Repair(_) => "repair",
        }
    }
}

/// How a job ended.
#[derive(Debug)]
pub(super) enum Ending {
    Reports(Vec<RotationReport>),
    Interrupted,
    /// The engine could not do it; `busy` when another process holds the account.
    Failed {
        busy: bool,
        message: String,
    },
}

#[derive(Debug)]
pub(crate) struct Finished {
    pub plan: String,
    pub kind: &'static str,
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
    pub fn start_job(&mut self, name: &str, job: Job, client: Option<Client>, now: DateTime<Utc>) {
        let lane = self.lane_of(name, &job);
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
        let plan = entry.plan.load();
        self.jobs += 1;
        self.busy += 1;
        let ctx = self.ctx.clone();
        let kind = job.kind();
        let name = name.to_owned();
        self.ctx.tracker.spawn(budget::in_lane(lane, async move {
            match plan {
                Ok(plan) => run(ctx, plan, job, client).await,
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
                        ending: Ending::Failed {
                            busy: false,
                            message,
                        },
                    }));
                }
            }
        }));
    }

    /// Which budget lane a job's calls take: an incident (a `--leaked` rotation, or the
    /// resume of one) goes ahead of everything.
    fn lane_of(&self, name: &str, job: &Job) -> Lane {
        match job {
            Job::Rotate(request) if request.mode.is_incident() => Lane::Incident,
            Job::Rotate(_) | Job::Repair(_) => Lane::Scheduled,
            Job::Resume => {
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
    pub fn start_observation(&mut self, name: &str, now: DateTime<Utc>) {
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
        self.checks += 1;
        let ctx = self.ctx.clone();
        let name = name.to_owned();
        tracing::debug!(plan = %name, at = %now, "check started");
        self.ctx
            .tracker
            .spawn(budget::in_lane(Lane::Background, async move {
                let result = match plan {
                    Ok(plan) => {
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

async fn run(ctx: Context, plan: Arc<Plan>, job: Job, client: Option<Client>) {
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
    let cancel = ctx.shutdown.child_token();
    let kind = job.kind();
    let result: Result<Vec<RotationReport>, EngineError> = match job {
        Job::Rotate(request) => ctx
            .engine
            .rotate(&plan, request, &progress, cancel)
            .await
            .map(|r| vec![r]),
        Job::Resume => {
            ctx.engine
                .resume(std::slice::from_ref(&*plan), &progress, cancel)
                .await
        }
        Job::Repair(consumers) => {
            let mut reports = Vec::new();
            let mut failure = None;
            for (consumer, key) in consumers {
                tracing::info!(plan = %plan.name, consumer = %consumer, key = %key, "repairing drift: binding the consumer to the active key");
                match ctx
                    .engine
                    .repair(&plan, &consumer, key, &progress, cancel.clone())
                    .await
                {
                    Ok(report) => reports.push(report),
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            match failure {
                Some(e) if reports.is_empty() => Err(e),
                Some(e) => {
                    tracing::warn!(plan = %plan.name, error = %e, "drift repair stopped early");
                    Ok(reports)
                }
                None => Ok(reports),
            }
        }
    };
    if let Some((reply, asked)) = reply {
        let answer = match (&result, asked) {
            (Ok(reports), Asked::RotateNow) => {
                crate::commands::perform::rotation_answer(&plan.name, reports.clone())
            }
            (Ok(reports), Asked::Resume) => Ok(Answer::Resumed {
                reports: reports.clone(),
            }),
            (Err(e), _) => Err(error_reply(e)),
        };
        let _ = reply.send(answer);
    }
    let ending = match result {
        Ok(reports) => Ending::Reports(reports),
        Err(EngineError::Interrupted { rotation_id }) => {
            tracing::info!(plan = %plan.name, rotation_id = %rotation_id, "interrupted by shutdown after the step in flight; the next start resumes it");
            Ending::Interrupted
        }
        Err(e) => Ending::Failed {
            busy: matches!(e, EngineError::Busy { .. }),
            message: e.to_string(),
        },
    };
    let _ = ctx.tx.send(Msg::Finished(Finished {
        plan: plan.name.clone(),
        kind,
        ending,
    }));
}
