//! Reading the journal back: unfinished rotations for resuming, history for
//! `keyflip history` and `status`, and what a write-only consumer was last bound to.
//! Every decoding failure names the rotation and the row.

use chrono::{DateTime, Utc};
use rusqlite::OptionalExtension;

use super::record::{decode, parse_time};
use super::{Journal, JournalError, RotationRecord, StepRecord, StoredRotation, corrupt, sql};
use crate::key::KeyName;
use crate::resource_id::ResourceId;
use crate::rotation::machine::{Action, Command, ConsumerId, Event};

/// A consumer's last successful bind: the key, its fingerprint and when.
pub type LastBind = (ConsumerId, KeyName, Fingerprint, DateTime<Utc>);
use crate::secret::Fingerprint;

/// The columns of a `rotations` row, still encoded.
struct RotationRow {
    id: String,
    plan: String,
    account: String,
    mode: String,
    options: String,
    started_at: String,
    finished_at: Option<String>,
    outcome: Option<String>,
    origin: Option<String>,
}

const ROTATION_COLUMNS: &str =
    "id, plan, account, mode, options, started_at, finished_at, outcome, origin";

fn rotation_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RotationRow> {
    Ok(RotationRow {
        id: r.get(0)?,
        plan: r.get(1)?,
        account: r.get(2)?,
        mode: r.get(3)?,
        options: r.get(4)?,
        started_at: r.get(5)?,
        finished_at: r.get(6)?,
        outcome: r.get(7)?,
        origin: r.get(8)?,
    })
}

impl Journal {
    /// Every unfinished rotation, oldest first, with its events and steps.
    pub fn unfinished(&self) -> Result<Vec<StoredRotation>, JournalError> {
        let rows = self.rotation_rows(
            &format!(
                "SELECT {ROTATION_COLUMNS} FROM rotations WHERE finished_at IS NULL
                 ORDER BY started_at, rowid"
            ),
            rusqlite::params![],
        )?;
        rows.into_iter()
            .map(|row| {
                let record = self.decode_rotation(row)?;
                let events = self.events(&record.id)?;
                Ok(StoredRotation {
                    id: record.id,
                    plan: record.plan,
                    account: record.account,
                    mode: record.mode,
                    options: record.options,
                    started_at: record.started_at,
                    origin: record.origin,
                    events,
                    steps: record.steps,
                })
            })
            .collect()
    }

    /// Rotations newest first, optionally of one plan, each with every step.
    pub fn history(
        &self,
        plan: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RotationRecord>, JournalError> {
        self.history_since(plan, None, limit)
    }

    /// [`Journal::history`] of rotations started at or after `since`.
    pub(crate) fn history_since(
        &self,
        plan: Option<&str>,
        since: Option<DateTime<Utc>>,
        limit: usize,
    ) -> Result<Vec<RotationRecord>, JournalError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // Times are stored in one fixed-width RFC 3339 form, so text order is time order.
        let since = since.map(super::record::time_text);
        let rows = self.rotation_rows(
            &format!(
                "SELECT {ROTATION_COLUMNS} FROM rotations WHERE (?1 IS NULL OR plan = ?1)
                 AND (?3 IS NULL OR started_at >= ?3)
                 ORDER BY started_at DESC, rowid DESC LIMIT ?2"
            ),
            rusqlite::params![plan, limit, since],
        )?;
        rows.into_iter()
            .map(|row| self.decode_rotation(row))
            .collect()
    }

    /// One rotation by id, with every step.
    pub fn rotation(&self, id: &str) -> Result<Option<RotationRecord>, JournalError> {
        let rows = self.rotation_rows(
            &format!("SELECT {ROTATION_COLUMNS} FROM rotations WHERE id = ?1"),
            rusqlite::params![id],
        )?;
        rows.into_iter()
            .next()
            .map(|row| self.decode_rotation(row))
            .transpose()
    }

    /// Every event of a rotation, finished or not, in the order the machine accepted
    /// them: what `StoredRotation::replay` feeds a machine, for reports of past rotations.
    pub(crate) fn events_of(&self, rotation_id: &str) -> Result<Vec<Event>, JournalError> {
        self.events(rotation_id)
    }

    /// The plan's most recently finished rotation.
    pub(crate) fn last_finished(&self, plan: &str) -> Result<Option<RotationRecord>, JournalError> {
        let rows = self.rotation_rows(
            &format!(
                "SELECT {ROTATION_COLUMNS} FROM rotations
                 WHERE plan = ?1 AND finished_at IS NOT NULL
                 ORDER BY finished_at DESC, rowid DESC LIMIT 1"
            ),
            rusqlite::params![plan],
        )?;
        rows.into_iter()
            .next()
            .map(|row| self.decode_rotation(row))
            .transpose()
    }

    /// When the plan's last completed rotation ended (drift repairs, whose first step
    /// is a bind rather than an observation, are not rotations): the daemon's
    /// last-success time survives a restart and counts rotations run without it.
    pub fn last_success(&self, plan: &str) -> Result<Option<DateTime<Utc>>, JournalError> {
        let text: Option<String> = self
            .conn
            .query_row(
                "SELECT r.finished_at FROM rotations r
                 WHERE r.plan = ?1 AND r.outcome_kind = 'completed'
                 AND EXISTS (SELECT 1 FROM steps s
                             WHERE s.rotation_id = r.id AND s.seq = 1 AND s.kind = 'observe')
                 ORDER BY r.finished_at DESC LIMIT 1",
                rusqlite::params![plan],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| sql(&self.path, "look up the last completed rotation", e))?;
        text.map(|t| {
            parse_time(&t).map_err(|d| {
                corrupt(
                    &self.path,
                    &format!("plan {plan}"),
                    "rotations, finished_at",
                    d,
                )
            })
        })
        .transpose()
    }

    /// The key keyflip last bound this consumer to, from the latest successful `Bind`:
    /// how keyflip knows what a consumer whose value cannot be read back holds.
    pub(crate) fn last_bound(
        &self,
        consumer: &ConsumerId,
    ) -> Result<Option<(KeyName, Fingerprint, DateTime<Utc>)>, JournalError> {
        let row: Option<(String, u32, String, String)> = self
            .conn
            .query_row(
                "SELECT rotation_id, seq, command, result_at FROM steps
                 WHERE consumer = ?1 AND kind = 'bind' AND result_kind = 'bound'
                 ORDER BY result_at DESC, rowid DESC LIMIT 1",
                [consumer.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .map_err(|e| sql(&self.path, "look up the last bind", e))?;
        let Some((rotation_id, seq, command, result_at)) = row else {
            return Ok(None);
        };
        let where_ = format!("steps, seq {seq}");
        let command: Command =
            decode(&command).map_err(|d| corrupt(&self.path, &rotation_id, &where_, d))?;
        let at =
            parse_time(&result_at).map_err(|d| corrupt(&self.path, &rotation_id, &where_, d))?;
        match command.action {
            Action::Bind {
                key, fingerprint, ..
            } => Ok(Some((key, fingerprint, at))),
            other => Err(corrupt(
                &self.path,
                &rotation_id,
                &where_,
                format!("kind is 'bind' but the command is `{}`", other.name()),
            )),
        }
    }

    /// For every consumer keyflip bound in a rotation of `account` whose id starts
    /// with `prefix` (a kind's, such as `keyvault:`), the last successful bind: the key, its
    /// fingerprint and when. What discovery knows of consumers it cannot read back.
    pub fn last_binds_of(
        &self,
        account: &ResourceId,
        prefix: &str,
    ) -> Result<Vec<LastBind>, JournalError> {
        let read = |e| sql(&self.path, "look up the binds of an account", e);
        let mut stmt = self
            .conn
            .prepare(
                "SELECT s.rotation_id, s.seq, s.command, s.result_at FROM steps s
                 JOIN rotations r ON r.id = s.rotation_id
                 WHERE r.account_lower = ?1 AND s.kind = 'bind' AND s.result_kind = 'bound'
                   AND s.consumer LIKE ?2
                 ORDER BY s.result_at, s.rowid",
            )
            .map_err(read)?;
        // `_` and `%` would be wildcards; the ids are checked again below.
        let like = format!("{prefix}%");
        let rows: Vec<(String, u32, String, String)> = stmt
            .query_map(
                rusqlite::params![account.as_str().to_ascii_lowercase(), like],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .map_err(read)?
            .collect::<Result<_, _>>()
            .map_err(read)?;
        let mut out: Vec<(ConsumerId, KeyName, Fingerprint, DateTime<Utc>)> = Vec::new();
        for (rotation_id, seq, command, result_at) in rows {
            let where_ = format!("steps, seq {seq}");
            let command: Command =
                decode(&command).map_err(|d| corrupt(&self.path, &rotation_id, &where_, d))?;
            let at = parse_time(&result_at)
                .map_err(|d| corrupt(&self.path, &rotation_id, &where_, d))?;
            if let Action::Bind {
                consumer,
                key,
                fingerprint,
            } = command.action
                && consumer.id.to_string().starts_with(prefix)
            {
                // Later rows are later binds: keep only each consumer's last.
                out.retain(|(id, ..)| *id != consumer.id);
                out.push((consumer.id, key, fingerprint, at));
            }
        }
        Ok(out)
    }

    fn rotation_rows(
        &self,
        query: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<RotationRow>, JournalError> {
        let read = |e| sql(&self.path, "read rotations", e);
        let mut stmt = self.conn.prepare(query).map_err(read)?;
        let rows = stmt.query_map(params, rotation_row).map_err(read)?;
        rows.collect::<Result<_, _>>().map_err(read)
    }

    fn decode_rotation(&self, row: RotationRow) -> Result<RotationRecord, JournalError> {
        let id = row.id;
        let bad = |column: &str, detail: String| {
            corrupt(&self.path, &id, &format!("rotations, {column}"), detail)
        };
        let account = row
            .account
            .parse::<ResourceId>()
            .map_err(|e| bad("account", e.to_string()))?;
        let mode = decode(&row.mode).map_err(|d| bad("mode", d))?;
        let options = decode(&row.options).map_err(|d| bad("options", d))?;
        let started_at = parse_time(&row.started_at).map_err(|d| bad("started_at", d))?;
        let finished_at = row
            .finished_at
            .as_deref()
            .map(parse_time)
            .transpose()
            .map_err(|d| bad("finished_at", d))?;
        let outcome = row
            .outcome
            .as_deref()
            .map(decode)
            .transpose()
            .map_err(|d| bad("outcome", d))?;
        let origin = row
            .origin
            .as_deref()
            .map(decode)
            .transpose()
            .map_err(|d| bad("origin", d))?;
        let steps = self.steps(&id)?;
        Ok(RotationRecord {
            id,
            plan: row.plan,
            account,
            mode,
            options,
            started_at,
            origin,
            finished_at,
            outcome,
            steps,
        })
    }

    fn steps(&self, rotation_id: &str) -> Result<Vec<StepRecord>, JournalError> {
        let read = |e| sql(&self.path, "read steps", e);
        let mut stmt = self
            .conn
            .prepare(
                "SELECT seq, command, intent_at, result, result_at FROM steps
                 WHERE rotation_id = ?1 ORDER BY seq",
            )
            .map_err(read)?;
        let rows = stmt
            .query_map([rotation_id], |r| {
                Ok((
                    r.get::<_, u32>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                ))
            })
            .map_err(read)?;
        let mut steps = Vec::new();
        for row in rows {
            let (seq, command, intent_at, result, result_at) = row.map_err(read)?;
            let bad = |column: &str, detail: String| {
                corrupt(
                    &self.path,
                    rotation_id,
                    &format!("steps, seq {seq}, {column}"),
                    detail,
                )
            };
            let command: Command = decode(&command).map_err(|d| bad("command", d))?;
            if command.seq != seq {
                return Err(bad(
                    "command",
                    format!("the stored command has seq {}", command.seq),
                ));
            }
            steps.push(StepRecord {
                command,
                intent_at: parse_time(&intent_at).map_err(|d| bad("intent_at", d))?,
                result: result
                    .as_deref()
                    .map(decode)
                    .transpose()
                    .map_err(|d| bad("result", d))?,
                result_at: result_at
                    .as_deref()
                    .map(parse_time)
                    .transpose()
                    .map_err(|d| bad("result_at", d))?,
            });
        }
        Ok(steps)
    }

    fn events(&self, rotation_id: &str) -> Result<Vec<Event>, JournalError> {
        let read = |e| sql(&self.path, "read events", e);
        let mut stmt = self
            .conn
            .prepare("SELECT n, event FROM events WHERE rotation_id = ?1 ORDER BY n")
            .map_err(read)?;
        let rows = stmt
            .query_map([rotation_id], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(read)?;
        let mut events = Vec::new();
        for row in rows {
            let (n, json) = row.map_err(read)?;
            events.push(
                decode(&json)
                    .map_err(|d| corrupt(&self.path, rotation_id, &format!("events, #{n}"), d))?,
            );
        }
        Ok(events)
    }
}
