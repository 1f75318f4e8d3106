//! The daemon's [`Progress`]: every rotation event becomes one structured `tracing`
//! event (plan, rotation id, step, outcome, Azure request id), step durations feed the
//! metrics histogram, the rotation id reaches the scheduler (for `status`), waits
//! (grace, retry backoff) release the job's concurrency slot until they end, and a
//! client that asked for the rotation over the control socket gets the events too.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::metrics::Metrics;
use super::scheduler::Msg;
use crate::rotation::{Progress, ProgressEvent};

pub(super) struct DaemonProgress {
    pub plan: String,
    pub metrics: Arc<Metrics>,
    pub scheduler: mpsc::UnboundedSender<Msg>,
    /// The control client that asked for this run, if any.
    pub client: Option<mpsc::UnboundedSender<ProgressEvent>>,
}

impl Progress for DaemonProgress {
    fn event(&self, event: &ProgressEvent) {
        let plan = self.plan.as_str();
        match event {
            ProgressEvent::Started {
                rotation_id, mode, ..
            } => {
                // The engine logs the start and the end itself; these add the daemon's
                // field names for correlation at debug level.
                tracing::debug!(plan, rotation_id = %rotation_id, mode = %crate::commands::render::mode_text(*mode), "rotation started");
                let _ = self.scheduler.send(Msg::RotationId {
                    plan: plan.to_owned(),
                    rotation_id: rotation_id.clone(),
                });
            }
            ProgressEvent::Resuming {
                rotation_id,
                in_doubt,
                ..
            } => {
                tracing::debug!(plan, rotation_id = %rotation_id, in_doubt, "resuming an unfinished rotation");
                let _ = self.scheduler.send(Msg::RotationId {
                    plan: plan.to_owned(),
                    rotation_id: rotation_id.clone(),
                });
            }
            ProgressEvent::Decided {
                rotation_id,
                active,
                standby,
                ..
            } => {
                tracing::info!(plan, rotation_id = %rotation_id, active = %active, standby = %standby, "consumers move to the standby key");
            }
            ProgressEvent::Issued { .. } => {}
            ProgressEvent::StepStarted {
                rotation_id,
                seq,
                step,
                ..
            } => {
                tracing::debug!(plan, rotation_id = %rotation_id, seq, step = %step, "step started");
            }
            ProgressEvent::StepFinished {
                rotation_id,
                seq,
                kind,
                step,
                ok,
                detail,
                duration,
                request_id,
            } => {
                let outcome = if *ok { "ok" } else { "failed" };
                let duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
                if *ok {
                    tracing::info!(plan, rotation_id = %rotation_id, seq, kind, step = %step, outcome, detail = detail.as_deref(), request_id = request_id.as_deref(), duration_ms, "rotation step");
                } else {
                    tracing::warn!(plan, rotation_id = %rotation_id, seq, kind, step = %step, outcome, detail = detail.as_deref(), request_id = request_id.as_deref(), duration_ms, "rotation step");
                }
                self.metrics.step(kind, *duration);
                if *kind == "wait_until" {
                    // The wait is over: the job works (and counts against the limit) again.
                    let _ = self.scheduler.send(Msg::Working {
                        plan: plan.to_owned(),
                    });
                }
            }
            ProgressEvent::Waiting {
                rotation_id,
                until,
                why,
            } => {
                tracing::info!(plan, rotation_id = %rotation_id, until = %until, why = %why, "waiting");
                // A timer, not work: the scheduler gives the slot to the next due plan.
                let _ = self.scheduler.send(Msg::Waiting {
                    plan: plan.to_owned(),
                    until: *until,
                });
            }
            ProgressEvent::Finished {
                rotation_id,
                outcome,
            } => {
                tracing::debug!(plan, rotation_id = %rotation_id, outcome = %outcome, "rotation finished");
            }
        }
        if let Some(client) = &self.client {
            let _ = client.send(event.clone());
        }
    }
}
