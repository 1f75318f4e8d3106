//! Control socket requests, as the scheduler answers them.
//!
//! Reads (`status`, `history`, dry runs) run as tasks, so a slow Azure never stalls the
//! scheduler; they are dropped on shutdown. `rotate now` and `resume` become jobs
//! owned by the scheduler (the client only waits for them): a plan that is already
//! busy is refused with `busy`. An explicit `rotate now` is not held back by
//! `max_concurrent_rotations`: an operator responding to a leak must not queue behind
//! a fleet rotation.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::control::protocol::{DaemonInfo, ErrorCode, ErrorReply, Reply, Request};
use super::jobs::{Client, Job, error_reply, json};
use super::scheduler::Scheduler;
use super::snapshot::PlanSnapshot;
use crate::exit::Exit;
use crate::plan::Plan;
use crate::rotation::{ProgressEvent, RotateRequest, Trigger};

type ReplyTx = oneshot::Sender<Result<Reply, ErrorReply>>;

fn unknown_plan(name: &str, known: Vec<&str>) -> ErrorReply {
    ErrorReply::new(
        ErrorCode::UnknownPlan,
        format!(
            "the daemon has no plan named `{name}`; its plans: {}",
            known.join(", ")
        ),
        Exit::Usage,
    )
}

impl Scheduler {
    pub fn request(
        &mut self,
        request: Request,
        progress: mpsc::UnboundedSender<ProgressEvent>,
        reply: ReplyTx,
    ) {
        let known: Vec<&str> = self
            .plans
            .values()
            .filter(|e| !e.retired)
            .map(|e| e.plan.name.as_str())
            .collect();
        // The daemon keeps idle plans as their source text; these parse them again.
        let load = |e: &super::scheduler::Entry| -> Result<Plan, ErrorReply> {
            e.plan
                .load()
                .map(|p| (*p).clone())
                .map_err(|m| ErrorReply::new(ErrorCode::Failed, m, Exit::Failure))
        };
        let find = |name: &Option<String>| -> Result<Vec<Plan>, ErrorReply> {
            match name {
                None => self
                    .plans
                    .values()
                    .filter(|e| !e.retired)
                    .map(|e| load(e))
                    .collect(),
                Some(n) => match self.plans.get(n).filter(|e| !e.retired) {
                    Some(e) => Ok(vec![load(e)?]),
                    None => Err(unknown_plan(n, known.clone())),
                },
            }
        };
        match request {
            Request::Status { plan } => match find(&plan) {
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
                Ok(plans) => self.status(plans, reply),
            },
            Request::History { plan, limit } => {
                let ctx = self.ctx.clone();
                self.ctx.tracker.spawn(async move {
                    let answer = ctx
                        .engine
                        .history(plan.as_deref(), limit)
                        .map(|reports| Reply::History {
                            rotations: reports.iter().map(json).collect(),
                        })
                        .map_err(|e| error_reply(&e));
                    let _ = reply.send(answer);
                });
            }
            Request::RotateNow {
                plan,
                mode,
                grace_secs,
                dry_run,
            } => {
                let Some(entry) = self.plans.get(&plan).filter(|e| !e.retired) else {
                    let _ = reply.send(Err(unknown_plan(&plan, known)));
                    return;
                };
                let request = RotateRequest {
                    mode,
                    grace: grace_secs.map(Duration::from_secs),
                    trigger: if mode.is_incident() {
                        Trigger::Incident
                    } else {
                        Trigger::Manual
                    },
                };
                if dry_run {
                    let ctx = self.ctx.clone();
                    let plan = match load(entry) {
                        Ok(plan) => plan,
                        Err(e) => {
                            let _ = reply.send(Err(e));
                            return;
                        }
                    };
                    self.ctx.tracker.spawn(async move {
                        let work = ctx.engine.dry_run(&plan, request);
                        let answer = tokio::select! {
                            r = work => r,
                            _ = ctx.shutdown.cancelled() => return,
                        };
                        let _ = reply.send(
                            answer
                                .map(|d| Reply::DryRun {
                                    exit: d.exit() as u8,
                                    dry_run: json(&d),
                                })
                                .map_err(|e| error_reply(&e)),
                        );
                    });
                    return;
                }
                if let Some(busy) = &entry.running {
                    let _ = reply.send(Err(busy_reply(
                        &plan,
                        busy.kind,
                        busy.rotation_id.as_deref(),
                    )));
                    return;
                }
                let now = self.ctx.clock.now();
                let unfinished = self.ctx.engine.unfinished().unwrap_or_default();
                if let Some((id, _)) = unfinished.iter().find(|(_, p)| *p == plan) {
                    let _ = reply.send(Err(ErrorReply::new(
                        ErrorCode::Busy,
                        format!("plan `{plan}` has an unfinished rotation {id}; finish it first with `keyflip rotate resume {plan}`"),
                        Exit::Busy,
                    )));
                    return;
                }
                if let Some(entry) = self.plans.get_mut(&plan) {
                    entry.state.last_started = Some(now);
                }
                self.save(&plan);
                tracing::info!(plan = %plan, mode = ?mode, "rotation requested over the control socket");
                self.start_job(
                    &plan,
                    Job::Rotate(request),
                    Some(Client { progress, reply }),
                    now,
                );
            }
            Request::Resume { plan } => {
                let targets = match find(&plan) {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return;
                    }
                };
                let unfinished = match self.ctx.engine.unfinished() {
                    Ok(u) => u,
                    Err(e) => {
                        let _ = reply.send(Err(error_reply(&e)));
                        return;
                    }
                };
                let mut pending: Vec<String> = targets
                    .iter()
                    .filter(|p| unfinished.iter().any(|(_, name)| *name == p.name))
                    .map(|p| p.name.clone())
                    .collect();
                pending.dedup();
                if let Some(busy) = pending.iter().find_map(|name| {
                    self.plans
                        .get(name)
                        .and_then(|e| e.running.as_ref())
                        .map(|a| busy_reply(name, a.kind, a.rotation_id.as_deref()))
                }) {
                    let _ = reply.send(Err(busy));
                    return;
                }
                match pending.as_slice() {
                    [] => {
                        let _ = reply.send(Ok(Reply::Resumed {
                            reports: Vec::new(),
                            exit: Exit::Ok as u8,
                        }));
                    }
                    [one] => {
                        let now = self.ctx.clock.now();
                        let one = one.clone();
                        self.start_job(&one, Job::Resume, Some(Client { progress, reply }), now);
                    }
                    _ => {
                        // One job per plan (each frees its plan when done); the client
                        // gets the reports of all.
                        let now = self.ctx.clock.now();
                        let mut answers = Vec::new();
                        for name in &pending {
                            let (tx, rx) = oneshot::channel();
                            answers.push(rx);
                            self.start_job(
                                name,
                                Job::Resume,
                                Some(Client {
                                    progress: progress.clone(),
                                    reply: tx,
                                }),
                                now,
                            );
                        }
                        self.ctx.tracker.spawn(async move {
                            let mut reports = Vec::new();
                            let mut exit = Exit::Ok as u8;
                            for rx in answers {
                                match rx.await {
                                    Ok(Ok(Reply::Resumed {
                                        reports: r,
                                        exit: e,
                                    })) => {
                                        reports.extend(r);
                                        if exit == Exit::Ok as u8 {
                                            exit = e;
                                        }
                                    }
                                    Ok(Err(e)) => {
                                        let _ = reply.send(Err(e));
                                        return;
                                    }
                                    _ => {}
                                }
                            }
                            let _ = reply.send(Ok(Reply::Resumed { reports, exit }));
                        });
                    }
                }
            }
        }
    }

    /// Status: the engine's live view of each plan, with the daemon's schedule state.
    fn status(&mut self, plans: Vec<Plan>, reply: ReplyTx) {
        let ctx = self.ctx.clone();
        let snapshot = self.snapshot_now();
        let daemon = DaemonInfo {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            summary: snapshot.summary(),
        };
        self.ctx.tracker.spawn(async move {
            let work = ctx.engine.status(&plans);
            let statuses = tokio::select! {
                r = work => r,
                _ = ctx.shutdown.cancelled() => return,
            };
            let statuses = match statuses {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "status: cannot read live state");
                    Vec::new()
                }
            };
            let values = plans
                .iter()
                .map(|plan| {
                    let mut value = statuses
                        .iter()
                        .find(|s| s.plan == plan.name)
                        .map(json)
                        .unwrap_or_else(|| {
                            serde_json::json!({
                                "plan": plan.name,
                                "account": plan.storage_account.to_string(),
                                "error": "live state could not be read",
                            })
                        });
                    if let (Some(p), Some(map)) = (snapshot.plan(&plan.name), value.as_object_mut())
                    {
                        merge(map, p);
                    }
                    value
                })
                .collect();
            let _ = reply.send(Ok(Reply::Status {
                daemon,
                plans: values,
            }));
        });
    }
}

/// The daemon's own knowledge of a plan, over the engine's: its next due time and
/// reason win (the daemon knows retries, parking and jitter), and a `daemon` object
/// holds the rest.
fn merge(map: &mut serde_json::Map<String, serde_json::Value>, p: &PlanSnapshot) {
    map.insert("next_due".into(), json(&p.next_due));
    map.insert("due_reason".into(), json(&p.due_reason));
    map.insert(
        "daemon".into(),
        serde_json::json!({
            "running": p.running.as_ref().map(|a| a.rotation_id.clone().unwrap_or_else(|| a.kind.to_owned())),
            "activity": p.running,
            "last_started": p.last_started,
            "last_success": p.last_success,
            "failures": p.failures,
            "retry_at": p.retry_at,
            "parked": p.parked.as_ref().map(|x| serde_json::json!({"at": x.at, "reason": x.reason})),
            "drift": p.drift,
        }),
    );
}

fn busy_reply(plan: &str, kind: &str, rotation_id: Option<&str>) -> ErrorReply {
    let what = rotation_id.map_or_else(String::new, |id| format!(" ({id})"));
    ErrorReply::new(
        ErrorCode::Busy,
        format!("plan `{plan}` is busy: a {kind}{what} is running; wait for it (`keyflip status`)"),
        Exit::Busy,
    )
}
