//! The journal's tables and their migrations, and the `meta` checks made on every
//! open: the schema version, and a check value that proves the database was written
//! with this installation's fingerprint key.
//!
//! Versions: 1 holds rotations, steps and events; 2 adds `plan_state`, what the
//! daemon remembers about each plan between runs (schedule position, failures, parked
//! state, the keys last observed); 3 adds `write_marks`, the etag Azure gave keyflip's
//! latest write of a consumer whose value cannot be read back; 4 adds
//! `rotations.origin`, why each rotation ran and who asked (rows from before it have
//! none); 5 changes no table: it marks journals whose rows may hold the usage gate
//! (`Options::usage_gate`, `Mode::Retire`, `CheckUsage` steps, `UsageGateHeld`) and
//! unlisted consumers. A keyflip that predates them would drop the gate from an
//! unfinished rotation's options without a word (serde ignores unknown fields) and
//! retire while callers still use the old key, or call rows it cannot parse corrupt:
//! at 5 it refuses the file and says to upgrade instead. 6 changes no table either: it
//! marks journals whose rows may hold an unlisted-consumer check that could not read
//! everything (`Observation::unlisted_unchecked`, the `unlisted_check_incomplete`
//! warning and refusal), which a keyflip of 5 would call corrupt or, resuming a
//! rotation whose first observation was its last step, start on a partial check that
//! `unlisted = "refuse"` forbids. 7 changes no table: it marks journals whose rows may
//! hold a revoke first that revokes before reading any consumer (`observe_keys` and
//! `observe_after_revoke` steps, `Options::revoke_before_reads`, the
//! `not_moved_after_revoke` park), which a keyflip of 6 would replay in its old order
//! (every consumer read and the standby probed before the revoke) and call the rows
//! corrupt, stranding an unfinished incident. Old rows need nothing: every new field has a default
//! that means "as before". A new journal is created at 1 and
//! migrated like an old one, so the migration path is the one every file takes.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::JournalError;
use crate::secret::{Fingerprinter, StorageKey};

/// The schema this build writes. Older journals are migrated on open; a newer one is
/// refused (an older keyflip must not write rows it does not understand).
pub const VERSION: u32 = 7;

/// Fingerprinted to make the `meta` check value. Not a secret: the value only proves
/// which fingerprint key wrote the journal.
const CHECK_INPUT: &str = "keyflip journal fingerprint-key check v1";

const SCHEMA_V1: &str = "
CREATE TABLE rotations (
    id            TEXT PRIMARY KEY,
    plan          TEXT NOT NULL,
    account       TEXT NOT NULL,
    account_lower TEXT NOT NULL,
    mode          TEXT NOT NULL,
    options       TEXT NOT NULL,
    started_at    TEXT NOT NULL,
    finished_at   TEXT,
    outcome       TEXT,
    outcome_kind  TEXT
) STRICT;
-- The journal's half of 'at most one unfinished rotation per account'.
CREATE UNIQUE INDEX rotations_one_unfinished_per_account
    ON rotations (account_lower) WHERE finished_at IS NULL;
CREATE INDEX rotations_by_plan ON rotations (plan, started_at);

-- One row per command: the intent, and later its result (denormalized from `events`
-- so history and last_bound need no JSON scan).
CREATE TABLE steps (
    rotation_id TEXT NOT NULL REFERENCES rotations (id),
    seq         INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    consumer    TEXT,
    command     TEXT NOT NULL,
    intent_at   TEXT NOT NULL,
    result_kind TEXT,
    result      TEXT,
    result_at   TEXT,
    PRIMARY KEY (rotation_id, seq)
) STRICT;
CREATE INDEX steps_by_consumer ON steps (consumer, result_kind, result_at);

-- Every event the machine accepted, in the order it accepted them: the replay log.
CREATE TABLE events (
    rotation_id TEXT NOT NULL REFERENCES rotations (id),
    n           INTEGER NOT NULL,
    event       TEXT NOT NULL,
    at          TEXT NOT NULL,
    PRIMARY KEY (rotation_id, n)
) STRICT;
";

/// Version 2: the daemon's per-plan memory. Times are fixed-width RFC 3339 UTC text
/// like everywhere in the journal; fingerprints are hex.
const MIGRATION_V2: &str = "
CREATE TABLE plan_state (
    plan           TEXT PRIMARY KEY,
    first_seen     TEXT NOT NULL,
    last_started   TEXT,
    last_success   TEXT,
    failures       INTEGER NOT NULL DEFAULT 0,
    retry_at       TEXT,
    parked_at      TEXT,
    parked_reason  TEXT,
    observed_at    TEXT,
    key1_fp        TEXT,
    key1_created   TEXT,
    key2_fp        TEXT,
    key2_created   TEXT
) STRICT;
";

/// Version 3: keyflip's latest write of each consumer whose value Azure never returns,
/// and the change marker (etag) Azure gave it.
const MIGRATION_V3: &str = "
CREATE TABLE write_marks (
    consumer    TEXT PRIMARY KEY,
    rotation_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    mark        TEXT NOT NULL,
    at          TEXT NOT NULL
) STRICT;
";

/// Version 4: why a rotation ran, who asked, which rotation it followed
/// (`rotation::Origin` as a JSON envelope); NULL on rows written before.
const MIGRATION_V4: &str = "ALTER TABLE rotations ADD COLUMN origin TEXT;";

/// Creates or migrates the schema and checks the fingerprint key, in one transaction.
pub fn prepare(
    conn: &mut Connection,
    path: &str,
    fingerprinter: &Fingerprinter,
) -> Result<(), JournalError> {
    let sql = |source| JournalError::Sqlite {
        path: path.to_owned(),
        action: "prepare the schema",
        source,
    };
    let check = fingerprinter
        .fingerprint(&StorageKey::new(CHECK_INPUT.to_owned()))
        .to_hex();
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;",
    )
    .map_err(sql)?;
    let meta = |name: &str| -> Result<Option<String>, rusqlite::Error> {
        tx.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .optional()
    };
    match meta("schema_version").map_err(sql)? {
        None => {
            tx.execute_batch(SCHEMA_V1).map_err(sql)?;
            tx.execute(
                "INSERT INTO meta (name, value) VALUES ('schema_version', '1'), ('fingerprint_check', ?1)",
                [&check],
            )
            .map_err(sql)?;
            migrate(&tx, 1).map_err(sql)?;
        }
        Some(found) => {
            let found_version = found.parse::<u32>().unwrap_or(u32::MAX);
            if found_version > VERSION {
                return Err(JournalError::NewerSchema {
                    path: path.to_owned(),
                    found,
                    supported: VERSION,
                });
            }
            if meta("fingerprint_check").map_err(sql)?.as_deref() != Some(check.as_str()) {
                return Err(JournalError::FingerprintKeyMismatch {
                    path: path.to_owned(),
                });
            }
            migrate(&tx, found_version).map_err(sql)?;
        }
    }
    tx.commit().map_err(sql)
}

/// Brings a schema at version `from` up to [`VERSION`], one step per version, inside
/// the caller's transaction (a failed step leaves the file as it was).
fn migrate(tx: &rusqlite::Transaction<'_>, from: u32) -> Result<(), rusqlite::Error> {
    if from < 2 {
        tx.execute_batch(MIGRATION_V2)?;
    }
    if from < 3 {
        tx.execute_batch(MIGRATION_V3)?;
    }
    if from < 4 {
        tx.execute_batch(MIGRATION_V4)?;
    }
    // Versions 5, 6 and 7 change no table (see the module docs): only the version below.
    if from < VERSION {
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE name = 'schema_version'",
            [VERSION.to_string()],
        )?;
    }
    Ok(())
}
