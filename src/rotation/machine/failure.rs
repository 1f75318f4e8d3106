//! Why a step failed ([`Failure`]) and what a rotation warns about ([`Warning`]): a
//! closed kind that the machine and reports can match on, and a message for people.
//! Journal types, stored inside step results, causes, attention reasons and outcomes.
//!
//! Rows of record schema 1, journaled before kinds existed, hold a plain string where
//! these values now are. Such a string reads as kind `Unclassified` with the string
//! as its message, so old rotations still replay and old history still shows.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A step's failure: what kind, and what happened in words.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "FailureRepr")]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// What kind of failure a step met.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Azure (or a consumer's service) refused the caller: a missing permission or a token it
    /// does not accept. A person must grant or fix it.
    Denied,
    /// What the step addresses does not exist (HTTP 404).
    NotFound,
    /// Throttling, a network or server error, an operation past its deadline: the same
    /// call may succeed later without anyone changing anything.
    Transient,
    /// Azure refused the request as made (another 4xx, a failed long-running
    /// operation).
    Rejected,
    /// Azure answered something keyflip cannot read.
    BadReply,
    /// keyflip's configuration or plan stands in the way.
    Config,
    /// The data plane did not accept the key within the verification budget.
    KeyNotAccepted,
    /// Shared-key access is disabled on the account, so no key works on the data plane.
    SharedKeyAccessDisabled,
    /// A key no longer has the fingerprint the step was given: it changed outside this
    /// rotation, so nothing was written.
    KeyChanged,
    /// The consumer holds another value than the one it should, or its write cannot be
    /// confirmed.
    WrongValue,
    /// Not sent: the rotation was rolling back, so the consumer stays where it is.
    NotAttempted,
    /// Journaled before failures had kinds (record schema 1).
    Unclassified,
}

/// Something a rotation reports that changed nothing and did not stop it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "WarningRepr")]
pub struct Warning {
    pub kind: WarningKind,
    pub message: String,
}

impl Warning {
    pub fn new(kind: WarningKind, message: impl Into<String>) -> Warning {
        Warning {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// What a warning is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WarningKind {
    /// A consumer whose value cannot be read was not checked; it does not count toward
    /// which key is active.
    ConsumerNotChecked,
    /// An incident route leaves this consumer as it is (it holds neither key, or
    /// keyflip cannot rotate it as listed).
    ConsumerNotTouched,
    /// Shared-key access is disabled on the account.
    SharedKeyAccessDisabled,
    /// Consumers whose key is unknown may hold the leaked key.
    LeakedKeyMayBeInUse,
    /// Key Vault versions holding a value could not be disabled.
    VersionsNotDisabled,
    /// A drift repair moved a consumer.
    Repaired,
    /// A consumer of the account that the plan does not list: the rotation will break
    /// it.
    UnlistedConsumer,
    /// The usage gate holds the retire: callers still sign with the old key.
    UsageHeld,
    /// An incident does not wait for the usage gate: these callers break now.
    CallersWillBreak,
    /// The usage gate could not read the resource logs.
    UsageUnknown,
    /// An incident took over this rotation and changed what it does (its grace
    /// period, its route, or a flag it could not honour from where it stood).
    TakenOver,
    /// Journaled before warnings had kinds (record schema 1).
    Unclassified,
}

/// Either form a journal row may hold.
#[derive(Deserialize)]
#[serde(untagged)]
enum FailureRepr {
    Typed { kind: FailureKind, message: String },
    Text(String),
}

impl From<FailureRepr> for Failure {
    fn from(repr: FailureRepr) -> Failure {
        match repr {
            FailureRepr::Typed { kind, message } => Failure { kind, message },
            FailureRepr::Text(message) => Failure::new(FailureKind::Unclassified, message),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum WarningRepr {
    Typed { kind: WarningKind, message: String },
    Text(String),
}

impl From<WarningRepr> for Warning {
    fn from(repr: WarningRepr) -> Warning {
        match repr {
            WarningRepr::Typed { kind, message } => Warning { kind, message },
            WarningRepr::Text(message) => Warning::new(WarningKind::Unclassified, message),
        }
    }
}
