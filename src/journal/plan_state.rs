//! What the daemon remembers about each plan between runs (schema version 2): where
//! its schedule stands, how many cycles in a row failed, whether it is parked, and the
//! keys as last observed (so a key regenerated while keyflip was down is still noticed
//! as drift).
//!
//! Promises: one row per plan name, written whole ([`Journal::save_plan_state`] is an
//! upsert in one fsynced transaction); fingerprints only, never a key; a row that
//! cannot be decoded is [`JournalError::Corrupt`] naming the plan and the column.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rusqlite::OptionalExtension;

use super::record::{parse_time, time_text};
use super::{Journal, JournalError, corrupt, sql, write};
use crate::rotation::machine::KeyState;
use crate::secret::Fingerprint;

/// The daemon's memory of one plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanState {
    pub plan: String,
    /// When the daemon first saw the plan: where cron counting starts before the
    /// plan's first rotation, so an occurrence missed during downtime still runs.
    pub first_seen: DateTime<Utc>,
    /// Start of the last rotation the daemon started (or tried to) for the plan.
    pub last_started: Option<DateTime<Utc>>,
    /// End of the last rotation that completed.
    pub last_success: Option<DateTime<Utc>>,
    /// Failed cycles in a row; reset by a completed rotation.
    pub failures: u32,
    /// When the next retry after a failure may start.
    pub retry_at: Option<DateTime<Utc>>,
    pub parked: Option<Parked>,
    /// Both keys as last observed by the daemon.
    pub observed: Option<ObservedKeys>,
}

impl PlanState {
    /// A plan seen for the first time at `now`.
    pub fn new(plan: &str, now: DateTime<Utc>) -> PlanState {
        PlanState {
            plan: plan.to_owned(),
            first_seen: now,
            last_started: None,
            last_success: None,
            failures: 0,
            retry_at: None,
            parked: None,
            observed: None,
        }
    }
}

/// A plan the daemon stopped rotating until a human looks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parked {
    pub at: DateTime<Utc>,
    /// One line: why (the outcome, or "3 failed cycles in a row: ...").
    pub reason: String,
}

/// Both keys' fingerprints and creation times at one observation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObservedKeys {
    pub at: DateTime<Utc>,
    pub key1: KeyState,
    pub key2: KeyState,
}

const COLUMNS: &str = "plan, first_seen, last_started, last_success, failures, retry_at, parked_at, parked_reason, observed_at, key1_fp, key1_created, key2_fp, key2_created";

/// A `plan_state` row, still encoded.
struct Row {
    plan: String,
    first_seen: String,
    last_started: Option<String>,
    last_success: Option<String>,
    failures: i64,
    retry_at: Option<String>,
    parked_at: Option<String>,
    parked_reason: Option<String>,
    observed_at: Option<String>,
    key1_fp: Option<String>,
    key1_created: Option<String>,
    key2_fp: Option<String>,
    key2_created: Option<String>,
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        plan: r.get(0)?,
        first_seen: r.get(1)?,
        last_started: r.get(2)?,
        last_success: r.get(3)?,
        failures: r.get(4)?,
        retry_at: r.get(5)?,
        parked_at: r.get(6)?,
        parked_reason: r.get(7)?,
        observed_at: r.get(8)?,
        key1_fp: r.get(9)?,
        key1_created: r.get(10)?,
        key2_fp: r.get(11)?,
        key2_created: r.get(12)?,
    })
}

impl Journal {
    /// Every plan the daemon has state for, by name.
    pub fn plan_states(&self) -> Result<Vec<PlanState>, JournalError> {
        let read = |e| sql(&self.path, "read plan states", e);
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {COLUMNS} FROM plan_state ORDER BY plan"))
            .map_err(read)?;
        let rows = stmt.query_map([], row).map_err(read)?;
        let rows: Vec<Row> = rows.collect::<Result<_, _>>().map_err(read)?;
        rows.into_iter().map(|r| self.decode_state(r)).collect()
    }

    pub fn plan_state(&self, plan: &str) -> Result<Option<PlanState>, JournalError> {
        let found = self
            .conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM plan_state WHERE plan = ?1"),
                [plan],
                row,
            )
            .optional()
            .map_err(|e| sql(&self.path, "read the plan state", e))?;
        found.map(|r| self.decode_state(r)).transpose()
    }

    /// Stores the plan's state, replacing what was there.
    pub fn save_plan_state(&mut self, state: &PlanState) -> Result<(), JournalError> {
        self.save_plan_states(std::slice::from_ref(state))
    }

    /// Stores several plans' states in one transaction (one fsync, however many).
    pub fn save_plan_states(&mut self, states: &[PlanState]) -> Result<(), JournalError> {
        let tx = write(&mut self.conn, &self.path, "save the plan state")?;
        {
            let mut stmt = tx
                .prepare_cached(&format!(
                    "INSERT OR REPLACE INTO plan_state ({COLUMNS})
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
                ))
                .map_err(|e| sql(&self.path, "save the plan state", e))?;
            for state in states {
                let observed = state.observed.as_ref();
                let key = |k: Option<&KeyState>| {
                    (
                        k.map(|k| k.fingerprint.to_hex()),
                        k.and_then(|k| k.created).map(time_text),
                    )
                };
                let (key1_fp, key1_created) = key(observed.map(|o| &o.key1));
                let (key2_fp, key2_created) = key(observed.map(|o| &o.key2));
                stmt.execute(rusqlite::params![
                    state.plan,
                    time_text(state.first_seen),
                    state.last_started.map(time_text),
                    state.last_success.map(time_text),
                    i64::from(state.failures),
                    state.retry_at.map(time_text),
                    state.parked.as_ref().map(|p| time_text(p.at)),
                    state.parked.as_ref().map(|p| p.reason.as_str()),
                    observed.map(|o| time_text(o.at)),
                    key1_fp,
                    key1_created,
                    key2_fp,
                    key2_created,
                ])
                .map_err(|e| sql(&self.path, "save the plan state", e))?;
            }
        }
        tx.commit().map_err(|e| sql(&self.path, "commit", e))
    }

    /// Frees SQLite's page cache of this connection (the daemon reads every plan's
    /// state once at start, then single rows): it is refilled as needed.
    pub fn shrink_memory(&self) {
        if let Err(e) = self.conn.execute_batch("PRAGMA shrink_memory;") {
            tracing::debug!(error = %e, "cannot shrink the journal's page cache");
        }
    }

    /// When each plan's latest rotation started, in one query: where a plan the daemon
    /// has not seen before counts cron occurrences from.
    pub fn last_starts(&self) -> Result<HashMap<String, DateTime<Utc>>, JournalError> {
        self.time_per_plan(
            "SELECT plan, MAX(started_at) FROM rotations GROUP BY plan",
            "read the last rotation of each plan",
            "rotations, started_at",
        )
    }

    /// When each plan's last completed rotation ended, in one query (drift repairs,
    /// whose first step is a bind rather than an observation, are not rotations): as
    /// [`Journal::last_success`] for every plan, so the daemon's last-success times
    /// survive a restart and count rotations run without it.
    pub fn last_successes(&self) -> Result<HashMap<String, DateTime<Utc>>, JournalError> {
        self.time_per_plan(
            "SELECT r.plan, MAX(r.finished_at) FROM rotations r
             WHERE r.outcome_kind = 'completed' AND r.finished_at IS NOT NULL
             AND EXISTS (SELECT 1 FROM steps s
                         WHERE s.rotation_id = r.id AND s.seq = 1 AND s.kind = 'observe')
             GROUP BY r.plan",
            "read the last completed rotation of each plan",
            "rotations, finished_at",
        )
    }

    /// `query`'s rows of (plan, time), as a map; `what` names the read in an error and
    /// `column` the column a bad time came from.
    fn time_per_plan(
        &self,
        query: &str,
        what: &'static str,
        column: &str,
    ) -> Result<HashMap<String, DateTime<Utc>>, JournalError> {
        let read = |e| sql(&self.path, what, e);
        let mut stmt = self.conn.prepare(query).map_err(read)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(read)?;
        let mut out = HashMap::new();
        for row in rows {
            let (plan, at) = row.map_err(read)?;
            let at = parse_time(&at)
                .map_err(|d| corrupt(&self.path, &format!("(rotations of {plan})"), column, d))?;
            out.insert(plan, at);
        }
        Ok(out)
    }

    fn decode_state(&self, r: Row) -> Result<PlanState, JournalError> {
        let plan = r.plan;
        let bad = |column: &str, detail: String| {
            corrupt(
                &self.path,
                &format!("(plan state of {plan})"),
                &format!("plan_state, {column}"),
                detail,
            )
        };
        let time = |column: &str, v: &Option<String>| {
            v.as_deref()
                .map(parse_time)
                .transpose()
                .map_err(|d| bad(column, d))
        };
        let first_seen = parse_time(&r.first_seen).map_err(|d| bad("first_seen", d))?;
        let failures = u32::try_from(r.failures)
            .map_err(|_| bad("failures", format!("{} is not a count", r.failures)))?;
        let parked = match (time("parked_at", &r.parked_at)?, r.parked_reason) {
            (Some(at), reason) => Some(Parked {
                at,
                reason: reason.unwrap_or_default(),
            }),
            (None, _) => None,
        };
        let fingerprint = |column: &str, v: &str| {
            Fingerprint::from_hex(v)
                .ok_or_else(|| bad(column, format!("'{v}' is not a fingerprint")))
        };
        let observed = match (time("observed_at", &r.observed_at)?, &r.key1_fp, &r.key2_fp) {
            (Some(at), Some(k1), Some(k2)) => Some(ObservedKeys {
                at,
                key1: KeyState {
                    fingerprint: fingerprint("key1_fp", k1)?,
                    created: time("key1_created", &r.key1_created)?,
                },
                key2: KeyState {
                    fingerprint: fingerprint("key2_fp", k2)?,
                    created: time("key2_created", &r.key2_created)?,
                },
            }),
            _ => None,
        };
        Ok(PlanState {
            first_seen,
            last_started: time("last_started", &r.last_started)?,
            last_success: time("last_success", &r.last_success)?,
            failures,
            retry_at: time("retry_at", &r.retry_at)?,
            parked,
            observed,
            plan,
        })
    }
}
