//! The shared journal of one storage account: one JSON blob per account in the
//! coordination container, holding its unfinished rotation (if any) and the last few
//! finished ones, each with every intent, result and event exactly as the local
//! journal records them. Pure: applying a journal write to a document is a function,
//! unit-tested here; the blob IO is in `shared`.
//!
//! Promises: a write is applied only to the rotation it names, in the order the
//! journal rules demand (an intent once, a result only after its intent, nothing
//! after the finish, one unfinished rotation per account), so a document never holds
//! what the local journal would have refused. Key values never enter it: only the
//! machine's types, which hold fingerprints.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::journal::{ImportedRotation, NewRotation, SharedWrite, StepRecord, WriteMark};
use crate::resource_id::ResourceId;
use crate::rotation::machine::{Command, Event, Mode, Options, Outcome, SCHEMA, StepResult};
use crate::rotation::origin::Origin;

/// This document format's version.
pub(crate) const FORMAT: u32 = 1;
/// Finished rotations kept in a document (the local journals keep all of theirs).
pub(crate) const KEEP_FINISHED: usize = 5;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AccountDoc {
    pub format: u32,
    /// The machine's record schema the bodies were written with.
    pub schema: u32,
    /// The storage account (ARM id), once a rotation was recorded.
    pub account: Option<String>,
    /// The replica that last wrote, and since when it holds the lease.
    pub holder: Option<Holder>,
    /// The fingerprint of a fixed text under the writers' fingerprint key: replicas
    /// must share one key, or their fingerprints would never match.
    #[serde(default)]
    pub(crate) fingerprint_check: Option<String>,
    /// Oldest first; at most one unfinished, and it is the last.
    pub rotations: Vec<RotationDoc>,
    /// keyflip's latest write of each consumer whose value cannot be read back (Data
    /// Factory linked services), by the consumer's id: how a replica that takes over
    /// knows what such a consumer holds.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub marks: std::collections::BTreeMap<String, MarkDoc>,
    /// The daemon's state of each plan of this account, by plan name: what every
    /// replica's schedule decides from (see [`PlanDoc`]).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub plans: std::collections::BTreeMap<String, PlanDoc>,
}

/// One plan's schedule state shared by the replicas. `last_started` and
/// `last_success` move with the journal writes themselves (a rotation's begin and its
/// completed finish), so they cost no write of their own; failures, the retry time and
/// parking are written by the daemon that concluded a cycle, under the lease too.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanDoc {
    /// Start of the plan's last rotation, on any replica (or the CLI).
    pub last_started: Option<DateTime<Utc>>,
    /// End of its last completed rotation.
    pub last_success: Option<DateTime<Utc>>,
    /// Failed cycles in a row, as the daemon that concluded the last one counted.
    #[serde(default)]
    pub failures: u32,
    pub retry_at: Option<DateTime<Utc>>,
    /// Parked until a rotation of the plan completes (`rotate now`, `rotate resume`).
    pub parked: Option<ParkedDoc>,
    /// The replica that last changed it, and when.
    pub by: Option<String>,
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedDoc {
    pub at: DateTime<Utc>,
    pub reason: String,
}

impl PlanDoc {
    /// Folds a daemon's view of a concluded cycle in: the start and success times only
    /// move forward (the journal's own writes may already hold newer ones); the
    /// failure count, retry time and parking are the writer's, unless a success was
    /// recorded after the writer decided. Returns whether anything changed.
    pub fn merge(&mut self, theirs: &PlanDoc) -> bool {
        let before = self.clone();
        self.last_started = self.last_started.max(theirs.last_started);
        self.last_success = self.last_success.max(theirs.last_success);
        // A success recorded after the writer's view (another replica's rotation
        // completed meanwhile) wins over a failure or a park decided before it.
        let stale = match (self.last_success, theirs.updated_at) {
            (Some(success), Some(at)) => success > at,
            _ => false,
        };
        if !stale {
            self.failures = theirs.failures;
            self.retry_at = theirs.retry_at;
            self.parked = theirs.parked.clone();
        }
        let changed = *self != before;
        if changed {
            self.by = theirs.by.clone();
            self.updated_at = theirs.updated_at;
        }
        changed
    }
}

/// A write mark (see `crate::journal::WriteMark`): a fingerprint, never a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkDoc {
    pub rotation_id: String,
    /// The fingerprint of the key written, in hex.
    pub fingerprint: String,
    /// The service's change marker right after the write (an etag).
    pub mark: String,
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub replica: String,
    pub since: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RotationDoc {
    pub id: String,
    pub plan: String,
    pub account: String,
    pub mode: Mode,
    pub options: Options,
    pub started_at: DateTime<Utc>,
    /// Why it ran and who asked (the local journal's `origin`).
    pub origin: Origin,
    pub steps: Vec<StepDoc>,
    pub events: Vec<EventDoc>,
    pub finished: Option<FinishDoc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepDoc {
    pub command: Command,
    pub(crate) intent_at: DateTime<Utc>,
    pub result: Option<StepResult>,
    pub(crate) result_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventDoc {
    pub event: Event,
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FinishDoc {
    pub at: DateTime<Utc>,
    pub outcome: Outcome,
}

/// Why a write does not apply.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error(
        "the shared journal has rotation {other} of this account unfinished; it must finish (or be resumed) first"
    )]
    Busy { other: String },
    #[error("the shared journal has no rotation {0}")]
    Unknown(String),
    #[error("rotation {0} has already finished in the shared journal")]
    Finished(String),
    #[error("rotation {rotation_id}: the shared journal holds a different command {seq}")]
    Conflict { rotation_id: String, seq: u32 },
    #[error("rotation {rotation_id}: a result for command {seq} without its intent, or twice")]
    NoIntent { rotation_id: String, seq: u32 },
}

impl AccountDoc {
    pub fn empty() -> AccountDoc {
        AccountDoc {
            format: FORMAT,
            schema: SCHEMA,
            ..AccountDoc::default()
        }
    }

    /// Reads a document; an empty blob is an empty document.
    pub fn parse(bytes: &[u8]) -> Result<AccountDoc, String> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(AccountDoc::empty());
        }
        let doc: AccountDoc =
            serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
        if doc.format != FORMAT || doc.schema > SCHEMA {
            return Err(format!(
                "written in format {} with record schema {} by a newer keyflip (this one reads format {FORMAT}, schema up to {SCHEMA}); upgrade every replica",
                doc.format, doc.schema
            ));
        }
        Ok(doc)
    }

    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        // These types always serialize (no non-string map keys, no fallible impls).
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn unfinished(&self) -> Option<&RotationDoc> {
        self.rotations.iter().find(|r| r.finished.is_none())
    }

    fn rotation_mut(&mut self, id: &str) -> Result<&mut RotationDoc, ApplyError> {
        let r = self
            .rotations
            .iter_mut()
            .find(|r| r.id == id)
            .ok_or_else(|| ApplyError::Unknown(id.to_owned()))?;
        if r.finished.is_some() {
            return Err(ApplyError::Finished(id.to_owned()));
        }
        Ok(r)
    }

    /// Applies one journal write. `Ok(false)` when it was already applied (an
    /// intent recorded again by a resumed executor), so nothing needs writing.
    pub fn apply(&mut self, rotation_id: &str, write: SharedWrite<'_>) -> Result<bool, ApplyError> {
        match write {
            SharedWrite::Begin(new) => {
                if let Some(other) = self.unfinished() {
                    if other.id == new.id {
                        return Ok(false);
                    }
                    return Err(ApplyError::Busy {
                        other: other.id.clone(),
                    });
                }
                self.account = Some(new.account.as_str().to_owned());
                let plan = self.plans.entry(new.plan.clone()).or_default();
                plan.last_started = plan.last_started.max(Some(new.started_at));
                self.rotations.push(RotationDoc {
                    id: new.id.clone(),
                    plan: new.plan.clone(),
                    account: new.account.as_str().to_owned(),
                    mode: new.mode,
                    options: new.options,
                    started_at: new.started_at,
                    origin: new.origin.clone(),
                    steps: Vec::new(),
                    events: Vec::new(),
                    finished: None,
                });
                let finished = self.rotations.len() - 1;
                if finished > KEEP_FINISHED {
                    self.rotations.drain(..finished - KEEP_FINISHED);
                }
                Ok(true)
            }
            SharedWrite::Intent { command, at } => {
                let r = self.rotation_mut(rotation_id)?;
                if let Some(s) = r.steps.iter().find(|s| s.command.seq == command.seq) {
                    return if s.command == *command {
                        Ok(false)
                    } else {
                        Err(ApplyError::Conflict {
                            rotation_id: rotation_id.to_owned(),
                            seq: command.seq,
                        })
                    };
                }
                r.steps.push(StepDoc {
                    command: command.clone(),
                    intent_at: at,
                    result: None,
                    result_at: None,
                });
                Ok(true)
            }
            SharedWrite::Event { event, at } => {
                let r = self.rotation_mut(rotation_id)?;
                if let Event::Answer { seq, result, .. } = event {
                    let step = r
                        .steps
                        .iter_mut()
                        .find(|s| s.command.seq == *seq && s.result.is_none())
                        .ok_or_else(|| ApplyError::NoIntent {
                            rotation_id: rotation_id.to_owned(),
                            seq: *seq,
                        })?;
                    step.result = Some(result.clone());
                    step.result_at = Some(at);
                }
                r.events.push(EventDoc {
                    event: event.clone(),
                    at,
                });
                Ok(true)
            }
            SharedWrite::Mark { consumer, mark } => {
                let new = MarkDoc {
                    rotation_id: mark.rotation_id.clone(),
                    fingerprint: mark.fingerprint.to_hex(),
                    mark: mark.mark.clone(),
                    at: mark.at,
                };
                if self.marks.get(consumer) == Some(&new) {
                    return Ok(false);
                }
                self.marks.insert(consumer.to_owned(), new);
                Ok(true)
            }
            SharedWrite::Finish { outcome, at } => {
                let r = self.rotation_mut(rotation_id)?;
                r.finished = Some(FinishDoc {
                    at,
                    outcome: outcome.clone(),
                });
                // A completed rotation, whoever ran it, is the plan's success: it
                // clears the failures and unparks it on every replica.
                if matches!(outcome, Outcome::Completed { .. }) {
                    let plan = r.plan.clone();
                    let state = self.plans.entry(plan).or_default();
                    state.last_success = state.last_success.max(Some(at));
                    state.failures = 0;
                    state.retry_at = None;
                    state.parked = None;
                    state.updated_at = Some(at);
                }
                Ok(true)
            }
        }
    }
}

/// The blob metadata entry (`x-ms-meta-keyflipsummary`) that carries a document's
/// [`Summary`].
pub const SUMMARY_METADATA: &str = "keyflipsummary";
/// The [`Summary`] format's version.
pub(crate) const SUMMARY_FORMAT: u32 = 1;
/// The largest summary written, in bytes of its metadata value. Azure allows 8 KB of
/// metadata per blob, names and values together (Microsoft Learn, "Setting and
/// retrieving properties and metadata for Blob service resources"); the rest is left
/// for the name and whatever else an operator sets. A larger summary is not written,
/// and readers read the body instead.
pub(crate) const SUMMARY_MAX: usize = 6 * 1024;

/// What `status` and `history` need of a document without reading it: written as blob
/// metadata in the same Put Blob as the document (so both change together: Put Blob
/// replaces a block blob's metadata with the request's, Microsoft Learn, "Put Blob"),
/// and returned for 5,000 blobs per List Blobs page (`include=metadata`).
///
/// Promise: `status` rendered from the summary prints exactly what it prints from
/// the body. A blob without a summary (written by an older keyflip, whose Put Blob
/// cleared it), with one of another format, or whose length does not match its
/// `len` is read in full.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub v: u32,
    /// The byte length of the body it was made from (checked against the listing's
    /// `Content-Length`).
    pub len: u64,
    /// The document as `status` reads it: account, holder, plans' shared state, and per
    /// plan its latest rotation and its last finished one, without their steps and
    /// events.
    pub doc: AccountDoc,
    /// Every rotation's plan and start, oldest first: `history` reads the body only of
    /// accounts whose rotations it prints.
    pub starts: Vec<(String, DateTime<Utc>)>,
}

impl Summary {
    /// Reads a summary from its metadata value; `None` when it is not one this keyflip
    /// can trust for a body of `len` bytes (then the body is read).
    pub fn decode(value: &str, len: u64) -> Option<Summary> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .ok()?;
        let summary: Summary = serde_json::from_slice(&bytes).ok()?;
        (summary.v == SUMMARY_FORMAT
            && summary.len == len
            && summary.doc.format == FORMAT
            && summary.doc.schema <= SCHEMA)
            .then_some(summary)
    }
}

impl AccountDoc {
    /// The document's bytes and, when it fits in [`SUMMARY_MAX`], the metadata value
    /// of its [`Summary`]: what every write of a document sends, together.
    pub fn encode(&self) -> (Vec<u8>, Option<String>) {
        use base64::Engine as _;
        let bytes = self.to_bytes();
        let summary = Summary {
            v: SUMMARY_FORMAT,
            len: bytes.len() as u64,
            doc: self.reduced(),
            starts: self
                .rotations
                .iter()
                .map(|r| (r.plan.clone(), r.started_at))
                .collect(),
        };
        let value = serde_json::to_vec(&summary)
            .ok()
            .map(|json| base64::engine::general_purpose::STANDARD.encode(json))
            .filter(|v| v.len() <= SUMMARY_MAX);
        (bytes, value)
    }

    /// This document as `status` reads it (see [`Summary::doc`]): per plan, the latest
    /// rotation (the journal's `history(plan, 1)`) and the last finished one
    /// (`last_finished`), in document order, without steps, events or write marks.
    fn reduced(&self) -> AccountDoc {
        let mut keep = vec![false; self.rotations.len()];
        let plans: std::collections::BTreeSet<&str> =
            self.rotations.iter().map(|r| r.plan.as_str()).collect();
        for plan in plans {
            // Oldest first, so the last of equal times is the later one, as the
            // journal's `rowid DESC` tie-break picks it.
            let of_plan = || {
                self.rotations
                    .iter()
                    .enumerate()
                    .filter(move |(_, r)| r.plan == plan)
            };
            if let Some((i, _)) = of_plan().max_by_key(|(i, r)| (r.started_at, *i)) {
                keep[i] = true;
            }
            if let Some((i, _)) = of_plan()
                .filter_map(|(i, r)| r.finished.as_ref().map(|f| (i, f.at)))
                .max_by_key(|(i, at)| (*at, *i))
            {
                keep[i] = true;
            }
        }
        AccountDoc {
            format: self.format,
            schema: self.schema,
            account: self.account.clone(),
            holder: self.holder.clone(),
            fingerprint_check: None,
            rotations: self
                .rotations
                .iter()
                .zip(keep)
                .filter(|(_, k)| *k)
                .map(|(r, _)| RotationDoc {
                    steps: Vec::new(),
                    events: Vec::new(),
                    ..r.clone()
                })
                .collect(),
            marks: Default::default(),
            plans: self.plans.clone(),
        }
    }
}

impl AccountDoc {
    /// The write marks as the local journal imports them (consumer id, mark).
    pub fn marks_imported(&self) -> Result<Vec<(String, WriteMark)>, String> {
        self.marks
            .iter()
            .map(|(consumer, m)| {
                let fingerprint = crate::secret::Fingerprint::from_hex(&m.fingerprint)
                    .ok_or_else(|| format!("write mark of {consumer}: not a fingerprint"))?;
                Ok((
                    consumer.clone(),
                    WriteMark {
                        rotation_id: m.rotation_id.clone(),
                        fingerprint,
                        mark: m.mark.clone(),
                        at: m.at,
                    },
                ))
            })
            .collect()
    }

    /// Adds `local` (rotations of this document's account from a single-node
    /// journal, `keyflip coordination import-journal`) to what the document holds.
    /// A rotation the document already has is left as the document has it (a replica
    /// may have moved it on). Refused, changing nothing, when both hold a different
    /// unfinished rotation. Keeps the unfinished one last and the newest
    /// [`KEEP_FINISHED`] finished ones. Returns the ids added.
    pub fn adopt(&mut self, local: &[ImportedRotation]) -> Result<Vec<String>, ApplyError> {
        let new: Vec<&ImportedRotation> = local
            .iter()
            .filter(|r| !self.rotations.iter().any(|d| d.id == r.rotation.id))
            .collect();
        if let (Some(ours), Some(theirs)) =
            (self.unfinished(), new.iter().find(|r| r.finished.is_none()))
        {
            return Err(ApplyError::Busy {
                other: format!(
                    "{} (this journal's unfinished one is {})",
                    ours.id, theirs.rotation.id
                ),
            });
        }
        let added: Vec<String> = new.iter().map(|r| r.rotation.id.clone()).collect();
        for r in new {
            if self.account.is_none() {
                self.account = Some(r.rotation.account.as_str().to_owned());
            }
            self.rotations.push(RotationDoc::from_imported(r));
        }
        // Finished ones oldest first, then the unfinished one.
        self.rotations
            .sort_by_key(|r| (r.finished.is_none(), r.started_at));
        let finished = self
            .rotations
            .iter()
            .filter(|r| r.finished.is_some())
            .count();
        if finished > KEEP_FINISHED {
            self.rotations.drain(..finished - KEEP_FINISHED);
        }
        Ok(added
            .into_iter()
            .filter(|id| self.rotations.iter().any(|r| r.id == *id))
            .collect())
    }
}

impl RotationDoc {
    /// A rotation of the local journal as the document holds it.
    pub fn from_imported(r: &ImportedRotation) -> RotationDoc {
        let n = &r.rotation;
        RotationDoc {
            id: n.id.clone(),
            plan: n.plan.clone(),
            account: n.account.as_str().to_owned(),
            mode: n.mode,
            options: n.options,
            started_at: n.started_at,
            origin: n.origin.clone(),
            steps: r
                .steps
                .iter()
                .map(|s| StepDoc {
                    command: s.command.clone(),
                    intent_at: s.intent_at,
                    result: s.result.clone(),
                    result_at: s.result_at,
                })
                .collect(),
            events: r
                .events
                .iter()
                .map(|(event, at)| EventDoc {
                    event: event.clone(),
                    at: *at,
                })
                .collect(),
            finished: r.finished.as_ref().map(|(at, outcome)| FinishDoc {
                at: *at,
                outcome: outcome.clone(),
            }),
        }
    }

    /// The rotation as the local journal imports it.
    pub(crate) fn to_imported(&self) -> Result<ImportedRotation, String> {
        let account: ResourceId = self
            .account
            .parse()
            .map_err(|e| format!("rotation {}: bad account id: {e}", self.id))?;
        let mut steps: Vec<StepRecord> = self
            .steps
            .iter()
            .map(|s| StepRecord {
                command: s.command.clone(),
                intent_at: s.intent_at,
                result: s.result.clone(),
                result_at: s.result_at,
            })
            .collect();
        steps.sort_by_key(StepRecord::seq);
        Ok(ImportedRotation {
            rotation: NewRotation {
                id: self.id.clone(),
                plan: self.plan.clone(),
                account,
                mode: self.mode,
                options: self.options,
                started_at: self.started_at,
                origin: self.origin.clone(),
            },
            steps,
            events: self
                .events
                .iter()
                .map(|e| (e.event.clone(), e.at))
                .collect(),
            finished: self.finished.as_ref().map(|f| (f.at, f.outcome.clone())),
        })
    }
}

#[cfg(test)]
mod tests;
