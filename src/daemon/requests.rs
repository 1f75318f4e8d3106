//! Control socket requests, as the scheduler answers them: the same typed
//! [`Request`] the command line became, answered with the same [`Answer`] a
//! standalone run builds (through `commands::perform` for dry runs, `status` and
//! `history`), so the client prints it with the one renderer.
//!
//! Reads (`status`, `history`, dry runs) run as tasks, so a slow Azure never stalls the
//! scheduler; they are dropped on shutdown. `rotate now` and `resume` become jobs
//! owned by the scheduler (the client only waits for them): a plan that is already
//! busy is refused with `busy`, unless the request changes what its job does (an
//! incident, a shorter grace): then it pre-empts that job (stopped between journaled
//! steps) and runs right after it, on the rotation it left unfinished. `rotate now` of
//! a plan with an unfinished rotation finishes that one first, amended, as standalone
//! (`Engine::rotate_now`). An explicit `rotate now` is not held back by
//! `max_concurrent_rotations`: an operator responding to a leak must not queue behind
//! a fleet rotation.

use std::collections::HashMap;

use tokio::sync::{mpsc, oneshot};

use super::control::protocol::{Answer, CommandError, ErrorCode, Request};
use super::jobs::{Asked, Client, Job, error_reply};
use super::kept::KeptPlan;
use super::scheduler::{Scheduler, row};
use super::snapshot::PlanSnapshot;
use crate::commands::perform;
use crate::exit::Exit;
use crate::plan::{FindError, Plan};
use crate::rotation::engine::Amend;
use crate::rotation::{
    ParkedStatus, PlanStatus, ProgressEvent, RotateRequest, RunningJob, ScheduleStatus,
};

type ReplyTx = oneshot::Sender<Result<Answer, CommandError>>;

impl Scheduler {
    /// The loaded plan `name`, or the error a standalone run gives for a plan that is
    /// not in the plans directory.
    fn loaded(&self, name: &str) -> Result<&KeptPlan, CommandError> {
        match self.plans.get(name).filter(|e| !e.retired) {
            Some(entry) => Ok(&entry.plan),
            None => Err(CommandError::from(FindError::NotFound {
                name: name.to_owned(),
                dir: self.config.plans_dir.clone(),
                known: self
                    .plans
                    .values()
                    .filter(|e| !e.retired)
                    .map(|e| e.plan.name.clone())
                    .collect(),
            })),
        }
    }

    /// One loaded plan, or all of them, parsed again from the text the daemon keeps
    /// of idle plans.
    fn targets(&self, name: Option<&str>) -> Result<Vec<Plan>, CommandError> {
        match name {
            Some(name) => Ok(vec![parse(self.loaded(name)?)?]),
            None => self
                .plans
                .values()
                .filter(|e| !e.retired)
                .map(|e| parse(&e.plan))
                .collect(),
        }
    }

    pub fn request(
        &mut self,
        request: Request,
        progress: mpsc::UnboundedSender<ProgressEvent>,
        reply: ReplyTx,
    ) {
        match &request {
            Request::Status { plan } => match self.targets(plan.as_deref()) {
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
                Ok(plans) => self.status(plans, reply),
            },
            Request::History { plan, limit, since } => {
                let ctx = self.ctx.clone();
                let (plan, limit, since) = (plan.clone(), *limit, *since);
                self.ctx.tracker.spawn(async move {
                    let work = perform::history(&ctx.engine, plan.as_deref(), since, limit);
                    let answer = tokio::select! {
                        r = work => r,
                        _ = ctx.shutdown.cancelled() => return,
                    };
                    let _ = reply.send(answer);
                });
            }
            Request::RotateNow {
                plan,
                dry_run: true,
                ..
            } => {
                let plan = match self.loaded(plan).and_then(parse) {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return;
                    }
                };
                let rotation = request.rotation().unwrap_or_else(RotateRequest::manual);
                let ctx = self.ctx.clone();
                self.ctx.tracker.spawn(async move {
                    let work = perform::dry_run(&ctx.engine, &plan, rotation);
                    let answer = tokio::select! {
                        r = work => r,
                        _ = ctx.shutdown.cancelled() => return,
                    };
                    let _ = reply.send(answer);
                });
            }
            Request::RotateNow { plan, .. } => {
                let rotation = request.rotation().unwrap_or_else(RotateRequest::manual);
                let client = Client {
                    progress,
                    reply,
                    asked: Asked::RotateNow,
                };
                self.run_requested(plan, Job::RotateNow(rotation), client);
            }
            Request::Resume {
                plan, force_retire, ..
            } => {
                let amend = request.amendment();
                match (plan, amend.grace) {
                    // A shorter grace is for one plan's rotation (the CLI requires the
                    // plan), and may pre-empt the job waiting out that grace.
                    (Some(plan), Some(_)) => {
                        let client = Client {
                            progress,
                            reply,
                            asked: Asked::Resume,
                        };
                        self.run_requested(plan, Job::Resume(amend), client);
                    }
                    _ => self.resume(plan.as_deref(), amend, *force_retire, progress, reply),
                }
            }
        }
    }

    /// The plans with an unfinished rotation in the journal.
    fn unfinished_plans(&self) -> Result<Vec<String>, CommandError> {
        Ok(self
            .ctx
            .engine
            .unfinished()
            .map_err(|e| error_reply(&e))?
            .into_iter()
            .map(|(_, plan)| plan)
            .collect())
    }

    /// `busy` when a job runs for the plan.
    fn idle(&self, plan: &str) -> Result<(), CommandError> {
        match self.plans.get(plan).and_then(|e| e.running.as_ref()) {
            Some(a) => Err(busy_reply(plan, a.kind, a.rotation_id.as_deref())),
            None => Ok(()),
        }
    }

    /// Starts a person's job for `plan`; when a job runs for it already, pre-empts that
    /// job if this one changes what it does (an incident, a shorter grace), else answers
    /// `busy`.
    fn run_requested(&mut self, plan: &str, job: Job, client: Client) {
        if let Err(e) = self.loaded(plan) {
            let _ = client.reply.send(Err(e));
            return;
        }
        if self.idle(plan).is_err() && job.preempts() {
            self.preempt(plan, job, client);
            return;
        }
        if let Err(e) = self.idle(plan) {
            let _ = client.reply.send(Err(e));
            return;
        }
        let now = self.ctx.clock.now();
        if let Job::RotateNow(r) = &job {
            let unfinished = match self.unfinished_plans() {
                Ok(u) => u,
                Err(e) => {
                    let _ = client.reply.send(Err(e));
                    return;
                }
            };
            if unfinished.iter().any(|p| p == plan) {
                tracing::info!(plan = %plan, mode = %r.mode, "rotate now over the control socket: finishing the plan's unfinished rotation first");
            } else {
                // A new rotation: the plan's last start, as for a scheduled one.
                if let Some(entry) = self.plans.get_mut(plan) {
                    entry.state.last_started = Some(now);
                }
                self.save(plan);
                tracing::info!(plan = %plan, mode = %r.mode, "rotation requested over the control socket");
            }
        }
        self.start_job(plan, job, Some(client), now);
    }

    /// The plans `resume` works on, each idle, with its job: those of `plan` (or all)
    /// with an unfinished rotation (finished), then those whose swap the usage gate
    /// parked (retired, after the gate again unless `force_retire`).
    fn resume_plans(
        &self,
        plan: Option<&str>,
        amend: &Amend,
        force_retire: bool,
    ) -> Result<Vec<(String, Job)>, CommandError> {
        let unfinished = self.unfinished_plans()?;
        let mut pending: Vec<(String, Job)> = Vec::new();
        for p in self.targets(plan)? {
            if pending.iter().any(|(n, _)| *n == p.name) {
                continue;
            }
            if unfinished.contains(&p.name) {
                pending.push((p.name, Job::Resume(amend.clone())));
            } else if let Some(retire) = self
                .ctx
                .engine
                .held_at_gate(&p, force_retire)
                .map_err(|e| error_reply(&e))?
            {
                pending.push((p.name, Job::Rotate(retire, None)));
            }
        }
        for (name, _) in &pending {
            self.idle(name)?;
        }
        Ok(pending)
    }

    /// Finishes the unfinished rotations of one plan or all: one job per plan (each
    /// frees its plan when done); the client gets the reports of all.
    fn resume(
        &mut self,
        plan: Option<&str>,
        amend: Amend,
        force_retire: bool,
        progress: mpsc::UnboundedSender<ProgressEvent>,
        reply: ReplyTx,
    ) {
        let pending = match self.resume_plans(plan, &amend, force_retire) {
            Ok(p) => p,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let now = self.ctx.clock.now();
        match pending.as_slice() {
            [] => {
                let _ = reply.send(Ok(Answer::Resumed {
                    reports: Vec::new(),
                }));
            }
            [(one, job)] => {
                let (one, job) = (one.clone(), job.clone());
                let client = Client {
                    progress,
                    reply,
                    asked: Asked::Resume,
                };
                self.start_job(&one, job, Some(client), now);
            }
            _ => {
                let mut answers = Vec::new();
                for (name, job) in &pending {
                    let (tx, rx) = oneshot::channel();
                    answers.push(rx);
                    let client = Client {
                        progress: progress.clone(),
                        reply: tx,
                        asked: Asked::Resume,
                    };
                    self.start_job(name, job.clone(), Some(client), now);
                }
                self.ctx.tracker.spawn(async move {
                    let mut reports = Vec::new();
                    for rx in answers {
                        match rx.await {
                            Ok(Ok(Answer::Resumed { reports: r })) => reports.extend(r),
                            Ok(Err(e)) => {
                                let _ = reply.send(Err(e));
                                return;
                            }
                            _ => {}
                        }
                    }
                    let _ = reply.send(Ok(Answer::Resumed { reports }));
                });
            }
        }
    }

    /// Status: the engine's status of each plan (as standalone), with what the
    /// scheduler knows live in place of what the journal remembers.
    fn status(&mut self, plans: Vec<Plan>, reply: ReplyTx) {
        let ctx = self.ctx.clone();
        // Rows of the asked plans only, assembled now (the scheduler keeps no copy).
        let rows: Vec<PlanSnapshot> = plans
            .iter()
            .filter_map(|p| self.plans.get(&p.name))
            .map(|e| row(e))
            .collect();
        self.ctx.tracker.spawn(async move {
            let work = perform::status(&ctx.engine, &plans);
            let answer = tokio::select! {
                r = work => r,
                _ = ctx.shutdown.cancelled() => return,
            };
            let answer = answer.map(|answer| match answer {
                Answer::Status { at, mut plans } => {
                    // By name in a map: a status of 10,000 plans must not scan every
                    // row for every plan.
                    let rows: HashMap<&str, &PlanSnapshot> =
                        rows.iter().map(|r| (r.name.as_str(), r)).collect();
                    for status in &mut plans {
                        if let Some(p) = rows.get(status.plan.as_str()) {
                            overlay(status, p);
                        }
                    }
                    Answer::Status { at, plans }
                }
                other => other,
            });
            let _ = reply.send(answer);
        });
    }
}

/// The scheduler's knowledge of a plan over the engine's: its next due time and
/// reason win (the daemon knows retries, parking, jitter and its own last start), and
/// what runs now and the drift watch's findings only it knows. With `[coordination]`
/// read (`lease` is set) the engine's failures, retry time and park are the plan's
/// shared state, the same on every replica: they stay (a park another replica
/// recorded holds here too before this daemon's next decision learns it).
fn overlay(status: &mut PlanStatus, p: &PlanSnapshot) {
    if status.lease.is_some() {
        let shared = std::mem::take(&mut status.schedule);
        if shared.parked.is_some() {
            status.next_due = None;
            status.due_reason = "parked".to_owned();
        } else {
            status.next_due = p.next_due;
            status.due_reason = p.due_reason.clone();
        }
        status.schedule = ScheduleStatus {
            running: running(p),
            findings: p.drift.clone(),
            ..shared
        };
        return;
    }
    status.next_due = p.next_due;
    status.due_reason = p.due_reason.clone();
    status.schedule = ScheduleStatus {
        running: running(p),
        failures: p.failures,
        retry_at: p.retry_at.filter(|_| p.failures > 0),
        parked: p.parked.as_ref().map(|x| ParkedStatus {
            at: x.at,
            reason: x.reason.clone(),
        }),
        findings: p.drift.clone(),
    };
}

/// The job the plan runs now, as status shows it.
fn running(p: &PlanSnapshot) -> Option<RunningJob> {
    p.running.as_ref().map(|a| RunningJob {
        kind: a.kind.to_owned(),
        rotation_id: a.rotation_id.clone(),
        since: a.since,
    })
}

/// A kept plan parsed again; an error would mean parsing is not deterministic.
fn parse(kept: &KeptPlan) -> Result<Plan, CommandError> {
    kept.load()
        .map(|p| (*p).clone())
        .map_err(|m| CommandError::new(ErrorCode::Failed, m, Exit::Failure))
}

fn busy_reply(plan: &str, kind: &str, rotation_id: Option<&str>) -> CommandError {
    let what = rotation_id.map_or_else(String::new, |id| format!(" ({id})"));
    CommandError::new(
        ErrorCode::Busy,
        format!("plan `{plan}` is busy: a {kind}{what} is running; wait for it (`keyflip status`)"),
        Exit::Busy,
    )
}
