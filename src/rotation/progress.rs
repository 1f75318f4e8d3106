//! What a running rotation tells the outside world while it runs: one
//! [`ProgressEvent`] per decision, step and wait. The CLI draws them as a spinner or
//! plain lines; the daemon logs each as one `tracing` event and updates metrics.
//!
//! Promise: no event carries a key value. Steps are named by the machine's commands,
//! which hold key names and fingerprints only.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::key::KeyName;
use crate::rotation::machine::{Mode, Outcome, Route};

/// Receives progress events. Called from the task that drives the rotation; keep it
/// quick (draw, log, count) and never block on IO that can stall.
pub trait Progress: Send + Sync {
    fn event(&self, event: &ProgressEvent);
}

/// Ignores every event (tests, `status`).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _: &ProgressEvent) {}
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ProgressEvent {
    /// A new rotation was recorded in the journal.
    Started {
        rotation_id: String,
        plan: String,
        mode: Mode,
    },
    /// An unfinished rotation is being picked up again after a crash or a signal.
    Resuming {
        rotation_id: String,
        plan: String,
        /// Commands whose intent was recorded without a result: reconciled first.
        in_doubt: usize,
        /// The rotation's mode, so the last line words its outcome as `Started`'s
        /// does (a leaked key's regeneration is a revoke). Optional on the wire: a
        /// peer that predates it sends none and one that reads none gets `None`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<Mode>,
    },
    /// The precheck passed: which key consumers hold and which they move to.
    Decided {
        rotation_id: String,
        route: Route,
        active: KeyName,
        standby: KeyName,
    },
    /// Steps the machine issued, to run next (some at once, some after others): a
    /// display prints their results in this order.
    Issued { rotation_id: String, seqs: Vec<u32> },
    StepStarted {
        rotation_id: String,
        seq: u32,
        /// The command's stable name (`regenerate`, `bind`, `verify_key`, ...): a
        /// label for metrics and log queries, where `step` is for people.
        kind: String,
        /// What the step does, e.g. `bind Key Vault secret keyvault:…/secrets/x to key2 (fp:…)`.
        step: String,
    },
    StepFinished {
        rotation_id: String,
        seq: u32,
        kind: String,
        step: String,
        ok: bool,
        /// The result in words (a failure's reason, the versions disabled, ...).
        detail: Option<String>,
        #[serde(rename = "duration_ms", with = "millis")]
        duration: Duration,
        /// Azure's request id of the failed call, for support tickets.
        request_id: Option<String>,
    },
    /// A wait through the injected clock: grace period or retry backoff.
    Waiting {
        rotation_id: String,
        until: DateTime<Utc>,
        why: String,
    },
    Finished {
        rotation_id: String,
        outcome: Outcome,
    },
}

impl ProgressEvent {
    pub fn rotation_id(&self) -> &str {
        match self {
            ProgressEvent::Started { rotation_id, .. }
            | ProgressEvent::Resuming { rotation_id, .. }
            | ProgressEvent::Decided { rotation_id, .. }
            | ProgressEvent::Issued { rotation_id, .. }
            | ProgressEvent::StepStarted { rotation_id, .. }
            | ProgressEvent::StepFinished { rotation_id, .. }
            | ProgressEvent::Waiting { rotation_id, .. }
            | ProgressEvent::Finished { rotation_id, .. } => rotation_id,
        }
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}
