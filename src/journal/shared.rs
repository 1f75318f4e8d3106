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
    /// keyflip's latest write of a consumer whose value cannot be read back (a Data
    /// Factory linked service): `consumer` is its id as the journal keys it.
    Mark {
        consumer: &'a str,
        mark: &'a super::WriteMark,
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
    /// Every rotation in this journal, whole, oldest first: what
    /// `keyflip coordination import-journal` copies into the shared journal. A
    /// rotation recorded before origins were (schema 4) gets a manual origin.
    pub fn export(&self) -> Result<Vec<ImportedRotation>, JournalError> {
        let ids: Vec<String> = {
            let read = |e| sql(&self.path, "list rotations", e);
            let mut stmt = self
                .conn
                .prepare("SELECT id FROM rotations ORDER BY started_at, rowid")
                .map_err(read)?;
            let rows = stmt.query_map([], |r| r.get(0)).map_err(read)?;
            rows.collect::<Result<_, _>>().map_err(read)?
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(record) = self.rotation(&id)? else {
                continue;
            };
            let events = self.timed_events(&id)?;
            out.push(ImportedRotation {
                rotation: NewRotation {
                    id: record.id,
                    plan: record.plan,
                    account: record.account,
                    mode: record.mode,
                    options: record.options,
                    started_at: record.started_at,
                    origin: record.origin.unwrap_or_else(|| {
                        crate::rotation::Origin::new(crate::rotation::Trigger::Manual, None)
                    }),
                },
                steps: record.steps,
                events,
                finished: record.finished_at.zip(record.outcome),
            });
        }
        Ok(out)
    }

    /// Every write mark (consumer id, mark), for `import-journal`.
    pub fn export_marks(&self) -> Result<Vec<(String, super::WriteMark)>, JournalError> {
        let read = |e| sql(&self.path, "read write marks", e);
        let mut stmt = self
            .conn
            .prepare("SELECT consumer FROM write_marks ORDER BY consumer")
            .map_err(read)?;
        let consumers: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .map_err(read)?
            .collect::<Result<_, _>>()
            .map_err(read)?;
        let mut out = Vec::with_capacity(consumers.len());
        for text in consumers {
            let consumer: crate::consumer::ConsumerId = text.parse().map_err(|e| {
                super::corrupt(
                    &self.path,
                    "-",
                    &format!("write_marks, consumer {text}"),
                    format!("{e}"),
                )
            })?;
            if let Some(mark) = self.write_mark(&consumer)? {
                out.push((text, mark));
            }
        }
        Ok(out)
    }

    /// A rotation's events with the times they were recorded, in order.
    fn timed_events(&self, rotation_id: &str) -> Result<Vec<(Event, DateTime<Utc>)>, JournalError> {
        let read = |e| sql(&self.path, "read events", e);
        let mut stmt = self
            .conn
            .prepare("SELECT n, event, at FROM events WHERE rotation_id = ?1 ORDER BY n")
            .map_err(read)?;
        let rows = stmt
            .query_map([rotation_id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(read)?;
        let mut events = Vec::new();
        for row in rows {
            let (n, json, at) = row.map_err(read)?;
            let row_name = format!("events, #{n}");
            let event = super::record::decode(&json)
                .map_err(|d| super::corrupt(&self.path, rotation_id, &row_name, d))?;
            let at = super::record::parse_time(&at)
                .map_err(|d| super::corrupt(&self.path, rotation_id, &row_name, d))?;
            events.push((event, at));
        }
        Ok(events)
    }

    /// Takes the shared journal's write marks (consumer id, mark), each unless this
    /// journal has a later one of that consumer, without going through the mirror.
    pub fn import_marks(
        &mut self,
        marks: &[(String, super::WriteMark)],
    ) -> Result<(), JournalError> {
        if marks.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let tx = write(&mut self.conn, &path, "import write marks")?;
        for (consumer, mark) in marks {
            tx.execute(
                "INSERT INTO write_marks (consumer, rotation_id, fingerprint, mark, at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (consumer) DO UPDATE SET rotation_id = excluded.rotation_id,
                   fingerprint = excluded.fingerprint, mark = excluded.mark, at = excluded.at
                 WHERE excluded.at > write_marks.at",
                (
                    consumer,
                    &mark.rotation_id,
                    mark.fingerprint.to_hex(),
                    &mark.mark,
                    time_text(mark.at),
                ),
            )
            .map_err(|e| sql(&path, "import a write mark", e))?;
        }
        tx.commit().map_err(|e| sql(&path, "commit", e))
    }

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
