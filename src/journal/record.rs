//! What the journal hands back: rotations with their steps, and how a stored rotation
//! is rebuilt into a [`Machine`] by replay. Also the storage encoding of the JSON
//! columns (a schema envelope) and of timestamps.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::resource_id::ResourceId;
use crate::rotation::machine::{
    Action, Command, Event, HandleError, Machine, Mode, Options, Outcome, SCHEMA, StepResult,
    WarningKind,
};
use crate::rotation::origin::Origin;

/// What `Journal::begin` records about a new rotation.
#[derive(Clone, Debug, PartialEq)]
pub struct NewRotation {
    /// A UUID string, unique per rotation.
    pub id: String,
    pub plan: String,
    pub account: ResourceId,
    pub mode: Mode,
    pub options: Options,
    pub started_at: DateTime<Utc>,
    /// Why it runs and who asked.
    pub origin: Origin,
}

/// One command and what became of it.
#[derive(Clone, Debug, PartialEq)]
pub struct StepRecord {
    pub command: Command,
    /// When the intent was recorded (just before the effect).
    pub intent_at: DateTime<Utc>,
    /// The result, once recorded.
    pub result: Option<StepResult>,
    pub result_at: Option<DateTime<Utc>>,
}

impl StepRecord {
    pub fn seq(&self) -> u32 {
        self.command.seq
    }
}

/// A rotation as `keyflip history` shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct RotationRecord {
    pub id: String,
    pub plan: String,
    pub account: ResourceId,
    pub mode: Mode,
    pub options: Options,
    pub started_at: DateTime<Utc>,
    /// Why it ran and who asked; `None` for rotations journaled before schema 4.
    pub origin: Option<Origin>,
    /// `None` while the rotation is unfinished.
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: Option<Outcome>,
    /// Every command, in `seq` order.
    pub steps: Vec<StepRecord>,
}

/// An unfinished rotation: everything needed to rebuild its machine and to know
/// which commands are in doubt.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredRotation {
    pub id: String,
    pub plan: String,
    pub account: ResourceId,
    pub mode: Mode,
    pub options: Options,
    pub started_at: DateTime<Utc>,
    pub origin: Option<Origin>,
    /// Every event the machine accepted, in the order it accepted them.
    pub events: Vec<Event>,
    /// Every command with a recorded intent, in `seq` order.
    pub steps: Vec<StepRecord>,
}

impl StoredRotation {
    /// Commands whose intent was recorded but whose result was not: the effect may or
    /// may not have happened, so the executor reconciles each with Azure. Commands the
    /// replayed machine lists as outstanding *without* an intent here were never
    /// started and can simply be performed.
    pub fn in_doubt(&self) -> Vec<&Command> {
        self.steps
            .iter()
            .filter(|s| s.result.is_none())
            .map(|s| &s.command)
            .collect()
    }

    /// A fresh machine fed the stored events, checked against the stored intents: every
    /// recorded command must be exactly what the machine issues with that `seq`.
    pub fn replay(&self) -> Result<Machine, ResumeError> {
        let machine = Machine::replay(self.mode, self.options, &self.events).map_err(|e| {
            ResumeError::Rejected {
                rotation_id: self.id.clone(),
                index: e.index,
                error: e.error,
            }
        })?;
        for step in &self.steps {
            let replayed = machine.command(step.seq());
            if !replayed.is_some_and(|r| same_command(&step.command, r)) {
                return Err(ResumeError::Diverged {
                    rotation_id: self.id.clone(),
                    seq: step.seq(),
                    stored: step.command.action.to_string(),
                    replayed: replayed.map_or_else(
                        || "nothing (no such command)".to_owned(),
                        |c| c.action.to_string(),
                    ),
                });
            }
        }
        Ok(machine)
    }
}

/// Whether a stored intent is the command replay issues with its `seq`: equal, or a
/// `Finish` whose outcome is [`same_outcome`].
fn same_command(stored: &Command, replayed: &Command) -> bool {
    if stored == replayed {
        return true;
    }
    let (Action::Finish { outcome: stored }, Action::Finish { outcome: replayed }) =
        (&stored.action, &replayed.action)
    else {
        return false;
    };
    same_outcome(stored, replayed)
}

/// Whether a stored outcome is the one replay reaches. An outcome journaled under
/// record schema 1 holds its warnings as plain strings, which read as kind
/// `Unclassified`; the replayed outcome names their kinds. Such an outcome is the
/// same when it matches with the replayed warnings' kinds left out. Everything else
/// in it (failure reasons included: they come from stored results, which read the
/// same way) must still be equal.
pub(super) fn same_outcome(stored: &Outcome, replayed: &Outcome) -> bool {
    if stored == replayed {
        return true;
    }
    let unclassified = |outcome: &Outcome| {
        let mut outcome = outcome.clone();
        if let Outcome::Completed { warnings, .. } | Outcome::RolledBack { warnings, .. } =
            &mut outcome
        {
            for w in warnings {
                w.kind = WarningKind::Unclassified;
            }
        }
        outcome
    };
    *stored == unclassified(stored) && *stored == unclassified(replayed)
}

/// A stored rotation that cannot be rebuilt by replay.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ResumeError {
    #[error(
        "rotation {rotation_id}: the machine rejects stored event {index} ({error}); the journal was changed by hand or by a different keyflip version. Inspect it with `keyflip history`, then finish the rotation by hand"
    )]
    Rejected {
        rotation_id: String,
        index: usize,
        error: HandleError,
    },
    #[error(
        "rotation {rotation_id}: stored command {seq} is `{stored}` but replay issues `{replayed}`; it was probably written by another keyflip version. Finish it with that version, or resolve it by hand"
    )]
    Diverged {
        rotation_id: String,
        seq: u32,
        stored: String,
        replayed: String,
    },
}

/// The stored form of every JSON column: the schema the body was written with, so a
/// later keyflip can still read (or convert) old rows.
#[derive(Serialize)]
struct EnvelopeOut<'a, T> {
    schema: u32,
    body: &'a T,
}

#[derive(Deserialize)]
struct EnvelopeIn {
    schema: u32,
    body: serde_json::Value,
}

pub(super) fn encode<T: Serialize>(value: &T) -> String {
    // Serializing these types cannot fail: no maps with non-string keys, no
    // fallible `Serialize` impls. Fall back to an unreadable marker rather than panic.
    serde_json::to_string(&EnvelopeOut {
        schema: SCHEMA,
        body: value,
    })
    .unwrap_or_else(|e| format!("{{\"unencodable\":\"{e}\"}}"))
}

/// Decodes a JSON column; the error says what is wrong, for `JournalError::Corrupt`.
pub(super) fn decode<T: DeserializeOwned>(json: &str) -> Result<T, String> {
    let envelope: EnvelopeIn =
        serde_json::from_str(json).map_err(|e| format!("not a keyflip JSON record: {e}"))?;
    match envelope.schema {
        // Schema 1 differs only in holding plain strings where failure reasons and
        // warnings now have a kind and a message; `Failure` and `Warning` read such a
        // string as kind `Unclassified` with it as the message.
        1 | SCHEMA => serde_json::from_value(envelope.body).map_err(|e| e.to_string()),
        n => Err(format!(
            "written with record schema {n}, newer than this keyflip reads (up to {SCHEMA}); upgrade keyflip"
        )),
    }
}

/// Fixed-width UTC text, so SQL string order is time order.
pub(super) fn time_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

pub(super) fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("bad timestamp '{text}': {e}"))
}
