//! Write marks (schema version 3): for a consumer whose value Azure never returns (a
//! Data Factory linked service's SecureString), the change marker Azure gave keyflip's
//! latest write of it (the resource's `etag`) and the fingerprint of the key written.
//! While the resource still carries that marker, it holds that key; once the marker
//! changes, someone else wrote it and what it holds is unknown.
//!
//! Promises: one row per consumer, the latest write's, replaced whole in one fsynced
//! transaction (with `[coordination]`, written to the shared journal first, like every
//! record, so a replica taking over a rotation knows it); a fingerprint, never a key; a row that cannot be decoded is
//! [`JournalError::Corrupt`] naming the consumer.

use chrono::{DateTime, Utc};
use rusqlite::OptionalExtension;

use super::record::{parse_time, time_text};
use super::{Journal, JournalError, corrupt, sql, write};
use crate::consumer::ConsumerId;
use crate::secret::Fingerprint;

/// keyflip's latest write of one consumer, as the service marked it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteMark {
    /// The rotation (or repair) that wrote it.
    pub rotation_id: String,
    /// The fingerprint of the key written.
    pub fingerprint: Fingerprint,
    /// The service's change marker right after the write (an etag).
    pub mark: String,
    /// When keyflip recorded it, after the write.
    pub at: DateTime<Utc>,
}

impl Journal {
    /// Records keyflip's latest write of `consumer`, replacing the one before.
    pub fn record_write_mark(
        &mut self,
        consumer: &ConsumerId,
        mark: &WriteMark,
    ) -> Result<(), JournalError> {
        let tx = write(&mut self.conn, &self.path, "record a write mark")?;
        tx.execute(
            "INSERT OR REPLACE INTO write_marks (consumer, rotation_id, fingerprint, mark, at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            (
                consumer.to_string(),
                &mark.rotation_id,
                mark.fingerprint.to_hex(),
                &mark.mark,
                time_text(mark.at),
            ),
        )
        .map_err(|e| sql(&self.path, "record a write mark", e))?;
        let consumer = consumer.to_string();
        let write = super::SharedWrite::Mark {
            consumer: &consumer,
            mark,
        };
        super::shared::mirror(&self.mirror, &mark.rotation_id, write)?;
        tx.commit().map_err(|e| sql(&self.path, "commit", e))
    }

    /// keyflip's latest write of `consumer`, if it ever wrote one with a mark.
    pub fn write_mark(&self, consumer: &ConsumerId) -> Result<Option<WriteMark>, JournalError> {
        let row: Option<(String, String, String, String)> = self
            .conn
            .query_row(
                "SELECT rotation_id, fingerprint, mark, at FROM write_marks WHERE consumer = ?1",
                [consumer.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .map_err(|e| sql(&self.path, "read a write mark", e))?;
        let Some((rotation_id, fingerprint, mark, at)) = row else {
            return Ok(None);
        };
        let bad = |detail: String| {
            corrupt(
                &self.path,
                &rotation_id,
                &format!("write_marks, consumer {consumer}"),
                detail,
            )
        };
        let fingerprint = Fingerprint::from_hex(&fingerprint)
            .ok_or_else(|| bad(format!("'{fingerprint}' is not a fingerprint")))?;
        let at = parse_time(&at).map_err(bad)?;
        Ok(Some(WriteMark {
            rotation_id,
            fingerprint,
            mark,
            at,
        }))
    }
}
