//! What a request comes back with, whichever process did the work: an [`Answer`]
//! holding the engine's typed reports, or a [`CommandError`] holding the message and
//! the exit code. The standalone runner returns them in this process; the daemon sends
//! them over the control socket as they are; [`super::render`] prints them.
//!
//! Promise: an answer holds names, times and fingerprints only, never a key (it is
//! built from reports, which hold none), and its `Debug` shows the kind only, so an
//! answer logged by mistake prints nothing it holds.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::exit::Exit;
use crate::plan::FindError;
use crate::rotation::{DryRun, EngineError, PlanStatus, RotationReport};

/// The result of a request.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Answer {
    /// `rotate now`: the rotation it ran, or the unfinished one it finished instead
    /// (`report.resumed`).
    Rotation { report: Box<RotationReport> },
    /// `rotate now --dry-run`.
    DryRun { dry_run: Box<DryRun> },
    /// `rotate resume`: one report per rotation finished, oldest first.
    Resumed { reports: Vec<RotationReport> },
    /// `status`, as of `at` (key ages are counted to it).
    Status {
        at: DateTime<Utc>,
        plans: Vec<PlanStatus>,
    },
    /// `history`, newest first.
    History { rotations: Vec<RotationReport> },
}

impl Answer {
    pub fn kind(&self) -> &'static str {
        match self {
            Answer::Rotation { .. } => "rotation",
            Answer::DryRun { .. } => "dry_run",
            Answer::Resumed { .. } => "resumed",
            Answer::Status { .. } => "status",
            Answer::History { .. } => "history",
        }
    }

    /// The exit code the command ends with (documented in `docs/operations.md`).
    pub fn exit(&self) -> Exit {
        match self {
            Answer::Rotation { report } => report.exit(),
            Answer::DryRun { dry_run } => dry_run.exit(),
            Answer::Resumed { reports } => super::worst(reports.iter().map(RotationReport::exit)),
            // A plan that needs a person outranks one that could not be read: the
            // exit code a monitoring check keys on (docs/operations.md).
            Answer::Status { plans, .. } => {
                if plans.iter().any(PlanStatus::needs_attention) {
                    Exit::NeedsAttention
                } else if plans.iter().any(|p| p.error.is_some()) {
                    Exit::Failure
                } else {
                    Exit::Ok
                }
            }
            Answer::History { .. } => Exit::Ok,
        }
    }
}

/// Only the kind: the payloads are reports that must never end up in a log by way of
/// a stray `{:?}`, however harmless they are meant to be.
impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Answer::{}(..)", self.kind())
    }
}

/// Why a request could not be done. `message` says what went wrong and what to do;
/// `exit` is what the command exits with, the same standalone and through a daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct CommandError {
    pub code: ErrorCode,
    pub message: String,
    #[serde(with = "exit_code")]
    pub exit: Exit,
}

/// What kind of failure, for scripts reading the control socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The peer's uid may not use the socket.
    PermissionDenied,
    UnsupportedVersion,
    BadRequest,
    /// The configuration or a plan is invalid, or the arguments ask for nothing
    /// keyflip can do.
    Usage,
    UnknownPlan,
    /// The plan is rotating, resuming or being repaired already.
    Busy,
    /// A signal (standalone) or the daemon's shutdown stopped the work between
    /// journaled steps.
    Interrupted,
    ShuttingDown,
    /// The engine failed (Azure, journal, ...); the message says how.
    Failed,
}

impl CommandError {
    pub fn new(code: ErrorCode, message: impl Into<String>, exit: Exit) -> CommandError {
        CommandError {
            code,
            message: message.into(),
            exit,
        }
    }

    /// A runtime failure (exit 1).
    pub fn failed(message: impl fmt::Display) -> CommandError {
        CommandError::new(ErrorCode::Failed, message.to_string(), Exit::Failure)
    }

    /// Bad usage or configuration (exit 2).
    pub fn usage(message: impl fmt::Display) -> CommandError {
        CommandError::new(ErrorCode::Usage, message.to_string(), Exit::Usage)
    }
}

impl From<&EngineError> for CommandError {
    fn from(e: &EngineError) -> CommandError {
        let code = match e {
            EngineError::Busy { .. } => ErrorCode::Busy,
            EngineError::Interrupted { .. } => ErrorCode::Interrupted,
            EngineError::Config(_) | EngineError::Plan { .. } => ErrorCode::Usage,
            _ => ErrorCode::Failed,
        };
        CommandError::new(code, e.to_string(), e.exit())
    }
}

impl From<EngineError> for CommandError {
    fn from(e: EngineError) -> CommandError {
        CommandError::from(&e)
    }
}

impl From<FindError> for CommandError {
    fn from(e: FindError) -> CommandError {
        let code = match e {
            FindError::NotFound { .. } => ErrorCode::UnknownPlan,
            FindError::Invalid(_) => ErrorCode::Usage,
        };
        CommandError::new(code, e.to_string(), Exit::Usage)
    }
}

/// [`Exit`] as its number.
mod exit_code {
    use serde::{Deserialize as _, Deserializer, Serializer};

    use crate::exit::Exit;

    pub fn serialize<S: Serializer>(exit: &Exit, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(*exit as u8)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Exit, D::Error> {
        u8::deserialize(d).map(Exit::from_code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_their_exit_code_on_the_wire() {
        for exit in [
            Exit::Ok,
            Exit::Failure,
            Exit::Usage,
            Exit::Refused,
            Exit::RolledBack,
            Exit::NeedsAttention,
            Exit::Busy,
            Exit::Interrupted,
        ] {
            let e = CommandError::new(ErrorCode::Failed, "x", exit);
            let text = serde_json::to_string(&e).unwrap();
            assert!(text.contains(&format!("\"exit\":{}", exit as u8)), "{text}");
            assert_eq!(serde_json::from_str::<CommandError>(&text).unwrap(), e);
        }
        let busy = CommandError::from(EngineError::Busy {
            account: "a".into(),
            holder: "pid 7".into(),
        });
        assert_eq!((busy.code, busy.exit), (ErrorCode::Busy, Exit::Busy));
    }

    #[test]
    fn answer_debug_shows_the_kind_only() {
        let answer = Answer::History {
            rotations: Vec::new(),
        };
        assert_eq!(format!("{answer:?}"), "Answer::history(..)");
    }
}
