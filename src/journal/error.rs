//! Everything that can go wrong with the journal, each message saying what was found
//! and what to do.

use chrono::{DateTime, Utc};

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: cannot {action}: {source}")]
    Sqlite {
        path: String,
        action: &'static str,
        source: rusqlite::Error,
    },
    #[error("cannot create the journal {path}: {source}")]
    Create {
        path: String,
        source: std::io::Error,
    },
    /// The journal belongs to another user (see `journal::owner`).
    #[error("cannot open the journal: {why}")]
    Foreign { why: String },
    #[error(
        "the journal {path} is in '{mode}' mode and cannot be switched to WAL; keyflip needs WAL for crash safety. Check that the file system supports shared memory (not a network share)"
    )]
    NotWal { path: String, mode: String },
    #[error(
        "the journal {path} was written with a different fingerprint key, so its fingerprints cannot be compared with this one's. Put back the fingerprint.key that belongs to it (it lives beside the journal), or move the journal away to start a new one (its history is then lost)"
    )]
    FingerprintKeyMismatch { path: String },
    #[error(
        "the journal {path} has schema version {found}, newer than this keyflip understands ({supported}); upgrade keyflip"
    )]
    NewerSchema {
        path: String,
        found: String,
        supported: u32,
    },
    #[error(
        "the storage account is already being rotated by rotation {rotation_id} (plan {plan}, started {started_at}); wait for it to finish, or resume it with `keyflip rotate resume`"
    )]
    Busy {
        rotation_id: String,
        plan: String,
        started_at: DateTime<Utc>,
    },
    #[error("the journal has no rotation {rotation_id}")]
    UnknownRotation { rotation_id: String },
    #[error("rotation {rotation_id} has already finished; nothing more is recorded for it")]
    Finished { rotation_id: String },
    #[error(
        "rotation {rotation_id}: a result for command {seq} arrived but its intent was never recorded; the intent must be recorded before the effect"
    )]
    NoIntent { rotation_id: String, seq: u32 },
    #[error("rotation {rotation_id}: command {seq} already has a result")]
    AlreadyAnswered { rotation_id: String, seq: u32 },
    #[error(
        "rotation {rotation_id}: a different command {seq} is already recorded; the executor and the journal disagree"
    )]
    IntentConflict { rotation_id: String, seq: u32 },
    #[error(
        "the journal {path} has an unreadable row in rotation {rotation_id} ({row}): {detail}. Inspect it with sqlite3; keyflip will not guess what it meant"
    )]
    Corrupt {
        path: String,
        rotation_id: String,
        row: String,
        detail: String,
    },
    /// The shared journal (coordination storage) refused or failed the write, so it
    /// was not recorded here either: the message says why (a lost lease, most often).
    #[error("rotation {rotation_id}: not recorded: {source}")]
    Shared {
        rotation_id: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}
