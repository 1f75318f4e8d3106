//! The hook that puts every journal write into a shared journal first (replicas, see
//! `crate::coordination`), and the import of a rotation another replica recorded.
//!
//! Promises: a write the [`Mirror`] refuses is not recorded locally either (it runs
//! inside the write's transaction, before the commit), so nothing is performed on the
//! strength of an intent only this process knows. [`Journal::import`] replaces the
//! local copy of one rotation by the shared one in one transaction, without going
//! through the mirror.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rusqlite::OptionalExtension as _;

use super::record::{NewRotation, StepRecord, encode, time_text};
use super::{Journal, JournalError, outcome_kind, sql, write};
use crate::rotation::machine::{Command, Event, Outcome};

/// One journal write, as the shared journal receives it.
#[derive(Clone, Copy, Debug)]
pub enum SharedWrite<'a> {
    Begin(&'a NewRotation),
    Intent {
        command: &'a Command,
        at: DateTime<Utc>,
    },
    Event {
        event: &'a Event,
        at: DateTime<Utc>,
    },
    Finish {
        outcome: &'a Outcome,
        at: DateTime<Utc>,
    },
}

/// Where journal writes go before they are committed locally.
pub trait Mirror: Send + Sync + std::fmt::Debug {
    /// Records `write` of `rotation_id` durably, or fails (then the local write is
    /// rolled back and the caller stops).
    fn record(
        &self,
        rotation_id: &str,
        write: SharedWrite<'_>,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
}

pub(super) fn mirror(
    mirror: &Option<Arc<dyn Mirror>>,
    rotation_id: &str,
    write: SharedWrite<'_>,
) -> Result<(), JournalError> {
    match mirror {
        None => Ok(()),
        Some(m) => m
            .record(rotation_id, write)
            .map_err(|source| JournalError::Shared {
                rotation_id: rotation_id.to_owned(),
                source,
            }),
    }
}

/// A whole rotation as the shared journal holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct ImportedRotation {
    pub rotation: NewRotation,
    pub steps: Vec<StepRecord>,
    /// Every accepted event with the time it was recorded, in order.
    pub events: Vec<(Event, DateTime<Utc>)>,
    pub finished: Option<(DateTime<Utc>, Outcome)>,
}

impl Journal {
    /// Sends every later write to `mirror` first.
    pub fn set_mirror(&mut self, mirror: Arc<dyn Mirror>) {
        self.mirror = Some(mirror);
    }

    /// Replaces this journal's copy of `r` (if any) with `r`. Another unfinished
    /// rotation of the same account here is left alone and refused, as `begin` would.
    pub fn import(&mut self, r: &ImportedRotation) -> Result<(), JournalError> {
        let path = self.path.clone();
        let tx = write(&mut self.conn, &path, "import a rotation")?;
        let id = &r.rotation.id;
        let other: Option<(String, String, String)> = tx
            .query_row(
                "SELECT id, plan, started_at FROM rotations
                 WHERE account_lower = ?1 AND finished_at IS NULL AND id <> ?2",
                (r.rotation.account.as_str().to_lowercase(), id),
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()
            .map_err(|e| sql(&path, "look for unfinished rotations", e))?;
        if let Some((rotation_id, plan, started)) = other
            && r.finished.is_none()
        {
            let started_at = super::record::parse_time(&started)
                .map_err(|d| super::corrupt(&path, &rotation_id, "rotations, started_at", d))?;
            return Err(JournalError::Busy {
                rotation_id,
                plan,
                started_at,
            });
        }
        for table in ["events", "steps"] {
            tx.execute(&format!("DELETE FROM {table} WHERE rotation_id = ?1"), [id])
                .map_err(|e| sql(&path, "replace the rotation", e))?;
        }
        tx.execute("DELETE FROM rotations WHERE id = ?1", [id])
            .map_err(|e| sql(&path, "replace the rotation", e))?;
        let n = &r.rotation;
        tx.execute(
            "INSERT INTO rotations (id, plan, account, account_lower, mode, options, started_at, finished_at, outcome, outcome_kind, origin)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            (
                &n.id,
                &n.plan,
                n.account.as_str(),
                n.account.as_str().to_lowercase(),
                encode(&n.mode),
                encode(&n.options),
                time_text(n.started_at),
                r.finished.as_ref().map(|(at, _)| time_text(*at)),
                r.finished.as_ref().map(|(_, o)| encode(o)),
                r.finished.as_ref().map(|(_, o)| outcome_kind(o)),
                encode(&n.origin),
            ),
        )
        .map_err(|e| sql(&path, "import the rotation", e))?;
        for s in &r.steps {
            tx.execute(
                "INSERT INTO steps (rotation_id, seq, kind, consumer, command, intent_at, result_kind, result, result_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                (
                    id,
                    s.command.seq,
                    s.command.action.name(),
                    s.command.action.consumer().map(|c| c.id.to_string()),
                    encode(&s.command),
                    time_text(s.intent_at),
                    s.result.as_ref().map(|r| r.name()),
                    s.result.as_ref().map(encode),
                    s.result_at.map(time_text),
                ),
            )
            .map_err(|e| sql(&path, "import a step", e))?;
        }
        for (i, (event, at)) in r.events.iter().enumerate() {
            tx.execute(
                "INSERT INTO events (rotation_id, n, event, at) VALUES (?1, ?2, ?3, ?4)",
                (id, i as i64 + 1, encode(event), time_text(*at)),
            )
            .map_err(|e| sql(&path, "import an event", e))?;
        }
        tx.commit().map_err(|e| sql(&path, "commit", e))
    }
}
