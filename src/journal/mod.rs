//! The durable record of every rotation: an intent before each effect, a result after.
//!
//! One SQLite file in WAL mode with `synchronous=FULL`, so every call that records
//! something has been fsynced when it returns: an executor that records an intent and
//! then crashes mid-effect finds the intent on restart. Tables: `rotations` (one row
//! per rotation; unfinished ones have no `finished_at`), `steps` (one row per command:
//! intent, then result), `events` (every event the machine accepted, in order: the
//! replay log), `plan_state` (the daemon's memory of each plan: schedule position,
//! failures, parked state, last observed keys), `write_marks` (the etag of keyflip's
//! latest write of a consumer whose value cannot be read back) and `meta` (schema
//! version, fingerprint-key check value).
//!
//! Promises:
//! - Key values never enter the journal: only the machine's types, which hold
//!   [`crate::secret::Fingerprint`]s and never a [`crate::secret::StorageKey`].
//! - At most one unfinished rotation per storage account ([`Journal::begin`] refuses
//!   with [`JournalError::Busy`]; a partial unique index backs it). Together with
//!   [`lock::AccountLock`] this keeps two processes from rotating one account.
//! - Every JSON column carries the schema it was written with, so old rows stay
//!   readable; a journal from a newer keyflip is refused rather than misread.
//! - A journal written under another fingerprint key is refused on open, because its
//!   fingerprints would silently never match.
//! - A row that cannot be decoded is an error naming the rotation and the row.
//!
//! How the executor uses it: `begin`; then for each command `record_intent` before
//! performing it; for each event, `record_event` after the machine accepted it (a
//! rejected event is never stored, so replay never meets one); `finish` when the
//! machine issues `Finish`. On start, [`Journal::unfinished`] and
//! [`StoredRotation::replay`] rebuild each interrupted machine.

mod error;
pub mod lock;
mod marks;
pub mod owner;
mod plan_state;
mod read;
mod record;
mod schema;
mod shared;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};

pub use error::JournalError;
pub use marks::WriteMark;
pub use plan_state::{ObservedKeys, Parked, PlanState};
pub use record::{NewRotation, ResumeError, RotationRecord, StepRecord, StoredRotation};
#[cfg(test)]
pub(crate) use schema::VERSION as SCHEMA_VERSION;
pub use shared::{ImportedRotation, Mirror, SharedWrite};

use crate::rotation::machine::{Command, Event, Outcome};
use crate::secret::Fingerprinter;
use record::{encode, parse_time, time_text};

/// How long a call waits for another connection's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// An open journal. Writes take `&mut self` (each is one fsynced transaction); share
/// it between tasks behind a mutex.
#[derive(Debug)]
pub struct Journal {
    conn: Connection,
    path: String,
    /// The shared journal every write goes to first (replicas), when configured.
    mirror: Option<std::sync::Arc<dyn Mirror>>,
}

fn outcome_kind(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Completed { .. } => "completed",
        Outcome::RolledBack { .. } => "rolled_back",
        Outcome::Refused { .. } => "refused",
        Outcome::NeedsAttention { .. } => "needs_attention",
    }
}

impl Journal {
    /// Opens (creating if needed) the journal at `path`, switches it to WAL with full
    /// sync, creates or migrates the schema, and checks it was written under the same
    /// fingerprint key.
    pub fn open(path: &Path, fingerprinter: &Fingerprinter) -> Result<Self, JournalError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let display = path.display().to_string();
        // Created private up front: SQLite gives its -wal and -shm files the same mode.
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            // The state directory's owner keeps owning its journal (see `owner`).
            Ok(_) => owner::hand_over(path).map_err(|source| JournalError::Create {
                path: display.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(JournalError::Create {
                    path: display,
                    source,
                });
            }
        }
        // A journal another user owns fails deep inside SQLite; say why up front.
        if let Err(e) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            && let Some(why) = owner::explain(path, path.parent().unwrap_or(path), &e)
        {
            return Err(JournalError::Foreign { why });
        }
        let sql = |action| {
            let path = display.clone();
            move |source| JournalError::Sqlite {
                path,
                action,
                source,
            }
        };
        let mut conn = Connection::open(path).map_err(sql("open it"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(sql("set the busy timeout"))?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(sql("switch to WAL"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(JournalError::NotWal {
                path: display,
                mode,
            });
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql("set synchronous=FULL"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(sql("enable foreign keys"))?;
        schema::prepare(&mut conn, &display, fingerprinter)?;
        Ok(Self {
            conn,
            path: display,
            mirror: None,
        })
    }

    /// A journal in memory, for commands that only read and must create nothing
    /// (`status` and `history` with no journal file yet): the same schema, empty.
    pub fn in_memory(fingerprinter: &Fingerprinter) -> Result<Self, JournalError> {
        let path = ":memory:".to_owned();
        let mut conn = Connection::open_in_memory().map_err(|source| JournalError::Sqlite {
            path: path.clone(),
            action: "open it",
            source,
        })?;
        schema::prepare(&mut conn, &path, fingerprinter)?;
        Ok(Self {
            conn,
            path,
            mirror: None,
        })
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// Records a new rotation, refusing when the account has an unfinished one.
    pub fn begin(&mut self, new: &NewRotation) -> Result<(), JournalError> {
        let tx = write(&mut self.conn, &self.path, "begin a rotation")?;
        let busy = tx
            .query_row(
                "SELECT id, plan, started_at FROM rotations
                 WHERE account_lower = ?1 AND finished_at IS NULL",
                [new.account.as_str().to_lowercase()],
                |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get::<_, String>(2)?)),
            )
            .optional()
            .map_err(|e| sql(&self.path, "look for unfinished rotations", e))?;
        if let Some((rotation_id, plan, started)) = busy {
            let started_at = parse_time(&started)
                .map_err(|d| corrupt(&self.path, &rotation_id, "rotations, started_at", d))?;
            return Err(JournalError::Busy {
                rotation_id,
                plan,
                started_at,
            });
        }
        tx.execute(
            "INSERT INTO rotations (id, plan, account, account_lower, mode, options, started_at, origin)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            (
                &new.id,
                &new.plan,
                new.account.as_str(),
                new.account.as_str().to_lowercase(),
                encode(&new.mode),
                encode(&new.options),
                time_text(new.started_at),
                encode(&new.origin),
            ),
        )
        .map_err(|e| sql(&self.path, "record the rotation", e))?;
        shared::mirror(&self.mirror, &new.id, SharedWrite::Begin(new))?;
        tx.commit().map_err(|e| sql(&self.path, "commit", e))
    }

    /// Records that `command` is about to be performed. Durable when it returns.
    /// Recording the same command again (a restarted executor) is a no-op.
    pub(crate) fn record_intent(
        &mut self,
        rotation_id: &str,
        command: &Command,
        at: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        self.record_intents(rotation_id, &[command], at)
    }

    /// Records the intents of commands about to be performed together, in one
    /// transaction (one fsync for a batch of concurrent steps). Durable when it
    /// returns; all or none. With a [`Mirror`] (replicas), one transaction each, so a
    /// refused mirror write never leaves intents shared that the local journal lacks.
    pub(crate) fn record_intents(
        &mut self,
        rotation_id: &str,
        commands: &[&Command],
        at: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        if self.mirror.is_some() && commands.len() > 1 {
            for command in commands {
                self.record_intents(rotation_id, &[command], at)?;
            }
            return Ok(());
        }
        let tx = write(&mut self.conn, &self.path, "record an intent")?;
        running(&tx, &self.path, rotation_id)?;
        for command in commands {
            intent(&tx, &self.path, &self.mirror, rotation_id, command, at)?;
        }
        tx.commit().map_err(|e| sql(&self.path, "commit", e))
    }

    /// Appends an event the machine accepted (the replay log) and, for a result, fills
    /// in its step. `at` is when it was recorded.
    pub(crate) fn record_event(
        &mut self,
        rotation_id: &str,
        event: &Event,
        at: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        self.record_events(rotation_id, &[(event, at)])
    }

    /// Appends events the machine accepted one after another, in that order, in one
    /// transaction (results of concurrent steps that answered together); all or none.
    /// With a [`Mirror`] (replicas), one transaction each, as for intents.
    pub(crate) fn record_events(
        &mut self,
        rotation_id: &str,
        events: &[(&Event, DateTime<Utc>)],
    ) -> Result<(), JournalError> {
        if self.mirror.is_some() && events.len() > 1 {
            for one in events {
                self.record_events(rotation_id, std::slice::from_ref(one))?;
            }
            return Ok(());
        }
        let tx = write(&mut self.conn, &self.path, "record an event")?;
        running(&tx, &self.path, rotation_id)?;
        for (event, at) in events {
            record(&tx, &self.path, &self.mirror, rotation_id, event, *at)?;
        }
        tx.commit().map_err(|e| sql(&self.path, "commit", e))
    }

    /// Marks the rotation finished with its outcome.
    pub fn finish(
        &mut self,
        rotation_id: &str,
        outcome: &Outcome,
        at: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        let tx = write(&mut self.conn, &self.path, "finish a rotation")?;
        running(&tx, &self.path, rotation_id)?;
        tx.execute(
            "UPDATE rotations SET finished_at = ?2, outcome = ?3, outcome_kind = ?4 WHERE id = ?1",
            (
                rotation_id,
                time_text(at),
                encode(outcome),
                outcome_kind(outcome),
            ),
        )
        .map_err(|e| sql(&self.path, "record the outcome", e))?;
        let write = SharedWrite::Finish { outcome, at };
        shared::mirror(&self.mirror, rotation_id, write)?;
        tx.commit().map_err(|e| sql(&self.path, "commit", e))
    }
}

/// Starts a write. IMMEDIATE takes the write lock up front, so a check and the write
/// that depends on it cannot be split by another process.
fn write<'c>(
    conn: &'c mut Connection,
    path: &str,
    action: &'static str,
) -> Result<Transaction<'c>, JournalError> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| sql(path, action, e))
}

/// One event, inside the caller's transaction.
fn record(
    tx: &Transaction<'_>,
    path: &str,
    mirror: &Option<std::sync::Arc<dyn Mirror>>,
    rotation_id: &str,
    event: &Event,
    at: DateTime<Utc>,
) -> Result<(), JournalError> {
    if let Event::Answer { seq, result, .. } = event {
        let updated = tx
            .execute(
                "UPDATE steps SET result_kind = ?3, result = ?4, result_at = ?5
                 WHERE rotation_id = ?1 AND seq = ?2 AND result IS NULL",
                (
                    rotation_id,
                    seq,
                    result.name(),
                    encode(result),
                    time_text(at),
                ),
            )
            .map_err(|e| sql(path, "record the result", e))?;
        if updated == 0 {
            let exists = tx
                .query_row(
                    "SELECT 1 FROM steps WHERE rotation_id = ?1 AND seq = ?2",
                    (rotation_id, seq),
                    |_| Ok(()),
                )
                .optional()
                .map_err(|e| sql(path, "read the step", e))?;
            let rotation_id = rotation_id.to_owned();
            return Err(match exists {
                Some(()) => JournalError::AlreadyAnswered {
                    rotation_id,
                    seq: *seq,
                },
                None => JournalError::NoIntent {
                    rotation_id,
                    seq: *seq,
                },
            });
        }
    }
    tx.execute(
        "INSERT INTO events (rotation_id, n, event, at)
         VALUES (?1, (SELECT COALESCE(MAX(n), 0) + 1 FROM events WHERE rotation_id = ?1), ?2, ?3)",
        (rotation_id, encode(event), time_text(at)),
    )
    .map_err(|e| sql(path, "record the event", e))?;
    shared::mirror(mirror, rotation_id, SharedWrite::Event { event, at })
}

/// One intent, inside the caller's transaction (a repeated identical one is a no-op).
fn intent(
    tx: &Transaction<'_>,
    path: &str,
    mirror: &Option<std::sync::Arc<dyn Mirror>>,
    rotation_id: &str,
    command: &Command,
    at: DateTime<Utc>,
) -> Result<(), JournalError> {
    let json = encode(command);
    let stored: Option<String> = tx
        .query_row(
            "SELECT command FROM steps WHERE rotation_id = ?1 AND seq = ?2",
            (rotation_id, command.seq),
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| sql(path, "read the step", e))?;
    match stored {
        Some(stored) if stored == json => return Ok(()),
        Some(_) => {
            return Err(JournalError::IntentConflict {
                rotation_id: rotation_id.to_owned(),
                seq: command.seq,
            });
        }
        None => {}
    }
    tx.execute(
        "INSERT INTO steps (rotation_id, seq, kind, consumer, command, intent_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        (
            rotation_id,
            command.seq,
            command.action.name(),
            command.action.consumer().map(|c| c.id.to_string()),
            json,
            time_text(at),
        ),
    )
    .map_err(|e| sql(path, "record the intent", e))?;
    let write = SharedWrite::Intent { command, at };
    shared::mirror(mirror, rotation_id, write)
}

/// Fails unless the rotation exists and is unfinished.
fn running(tx: &Transaction<'_>, path: &str, rotation_id: &str) -> Result<(), JournalError> {
    let finished: Option<Option<String>> = tx
        .query_row(
            "SELECT finished_at FROM rotations WHERE id = ?1",
            [rotation_id],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| sql(path, "read the rotation", e))?;
    let rotation_id = rotation_id.to_owned();
    match finished {
        None => Err(JournalError::UnknownRotation { rotation_id }),
        Some(Some(_)) => Err(JournalError::Finished { rotation_id }),
        Some(None) => Ok(()),
    }
}

fn sql(path: &str, action: &'static str, source: rusqlite::Error) -> JournalError {
    JournalError::Sqlite {
        path: path.to_owned(),
        action,
        source,
    }
}

fn corrupt(path: &str, rotation_id: &str, row: &str, detail: String) -> JournalError {
    JournalError::Corrupt {
        path: path.to_owned(),
        rotation_id: rotation_id.to_owned(),
        row: row.to_owned(),
        detail,
    }
}
