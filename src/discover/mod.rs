//! Discovery: every consumer of a storage account's key that Azure shows, found with
//! reads only. `keyflip plan discover` writes a plan from it, `doctor` names what a
//! plan leaves out, and a rotation's precheck warns (or refuses) about the same.
//!
//! Each consumer kind knows how to find its own resources (`crate::consumer`'s
//! `discover`, one function per kind); this module gives them a [`Scan`]: the accounts
//! and their keys' fingerprints, the subscriptions to look in, the lists every kind
//! shares (read once per run, cached), a bound on concurrent calls and a count of the
//! calls made. Several accounts are discovered in one scan: every resource is read
//! once and its value compared with every account's keys, so the cost grows with the
//! resources in the subscriptions, not with accounts × resources.
//!
//! Promises: nothing here writes to Azure, the journal or the disk. Values (secrets,
//! datastore keys, workspace keys) are compared by keyed fingerprint and dropped at
//! once; a [`Finding`] holds ids, key names and words, never a value. A read Azure
//! refuses is a finding that says what could not be read and the permission missing,
//! not an error: discovery reports what it could not see instead of guessing.

mod cache;
mod report;
pub(crate) mod scan;
pub(crate) mod unlisted;
pub(crate) mod write;

use std::fmt;

use serde::Serialize;

pub use cache::{DiscoveryCache, LIST_TTL};
pub use report::{AccountDiscovery, Discovery, Request, Write, discover, journal_writes};
pub(crate) use scan::Scan;
pub use unlisted::{Unlisted, unlisted};
pub use write::plan_text;

use crate::consumer::{ConsumerId, Entry};
use crate::key::KeyName;
use crate::secret::Fingerprint;

/// Which key a found consumer holds, as `doctor` says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Holds {
    Key1,
    Key2,
    /// A value that is neither of the account's keys (stale: it is broken already).
    Neither,
    /// Not readable (write-only services, a read keyflip may not make).
    Unknown,
}

impl Holds {
    pub fn of(fingerprint: Fingerprint, keys: [Fingerprint; 2]) -> Holds {
        if fingerprint == keys[0] {
            Holds::Key1
        } else if fingerprint == keys[1] {
            Holds::Key2
        } else {
            Holds::Neither
        }
    }

    pub fn key(key: KeyName) -> Holds {
        match key {
            KeyName::Key1 => Holds::Key1,
            KeyName::Key2 => Holds::Key2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Holds::Key1 => "key1",
            Holds::Key2 => "key2",
            Holds::Neither => "neither",
            Holds::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Holds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What keyflip can do with a found consumer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Its value was read and holds the account's key (or, for an ML workspace, the
    /// account is its own): a plan lists it.
    Rotate,
    /// Its value cannot be read back (a write-only kind), but its name or a
    /// record of keyflip's own writes ties it to the account: a plan lists it, and
    /// the comment says why it is only probable.
    Probable { why: String },
    /// It uses the key but keyflip cannot rotate it (a SAS, a Key Vault-backed scope
    /// written through the vault, a read refused): a comment in the plan.
    Cannot { why: String },
    /// It reads the key through another consumer (a Key Vault reference, a Key
    /// Vault-backed scope): rotating that one rotates it.
    Covered { by: String },
}

impl Verdict {
    /// Whether a plan lists it as a consumer.
    pub fn listed(&self) -> bool {
        matches!(self, Verdict::Rotate | Verdict::Probable { .. })
    }
}

/// One consumer of an account's key, or something that uses it and cannot be
/// rotated, as discovery found it.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    /// The plan table it belongs in (`key_vault`, `ml_workspace`, …).
    pub section: &'static str,
    /// Its consumer id (`docs/plans.md`), when it has one.
    #[serde(serialize_with = "as_text")]
    pub consumer: Option<ConsumerId>,
    /// What it is, in words: `Key Vault secret kv-datasci/stdatasci001-key`.
    pub subject: String,
    pub holds: Holds,
    /// How it was found: `its latest version holds key1 (fp:…)`.
    pub how: String,
    #[serde(flatten)]
    pub verdict: Verdict,
    /// The plan table to write for it (for [`Verdict::listed`] findings).
    #[serde(skip)]
    pub entry: Option<Entry>,
}

impl Finding {
    /// Something discovery could not judge (`how` it got there, `why` not): a read
    /// refused or failed, or a consumer found but not usable as it is.
    pub(crate) fn cannot(
        section: &'static str,
        subject: String,
        consumer: Option<ConsumerId>,
        how: &str,
        why: String,
    ) -> Finding {
        Finding {
            section,
            consumer,
            subject,
            holds: Holds::Unknown,
            how: how.to_owned(),
            verdict: Verdict::Cannot { why },
            entry: None,
        }
    }
}

/// How a finding whose read was refused or failed got there.
pub(crate) const READ_FAILED: &str = "a read was refused or failed";

fn as_text<S: serde::Serializer>(id: &Option<ConsumerId>, s: S) -> Result<S::Ok, S::Error> {
    match id {
        Some(id) => s.collect_str(id),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests;
