//! The machine's vocabulary: what goes in (modes, options, observations, results),
//! what comes out (commands, outcomes). These are journal types: they derive serde,
//! and their JSON shape is an API boundary. A row written by this version is read as
//! schema [`SCHEMA`]; a change to these types either stays backward compatible (new
//! optional fields, new variants) or bumps [`SCHEMA`] with a conversion in `journal`.
//!
//! Keys never appear here: only [`KeyName`]s and [`Fingerprint`]s.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::key::KeyName;
use crate::secret::Fingerprint;

/// The version of the JSON shape of [`Command`] and [`Event`] written by this build.
pub const SCHEMA: u32 = 1;

/// A consumer's identity, opaque to the machine: the plan gives each consumer a
/// stable id (a Key Vault secret URL, a datastore resource id, ...).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConsumerId(pub String);

impl fmt::Display for ConsumerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsumerKind {
    KeyVaultSecret,
    Datastore,
    Workspace,
    Databricks,
}

impl fmt::Display for ConsumerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConsumerKind::KeyVaultSecret => "Key Vault secret",
            ConsumerKind::Datastore => "ML datastore",
            ConsumerKind::Workspace => "ML workspace",
            ConsumerKind::Databricks => "Databricks secret",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConsumerRef {
    pub id: ConsumerId,
    pub kind: ConsumerKind,
}

impl fmt::Display for ConsumerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.id)
    }
}

/// Which key a consumer holds, as the executor found out at observation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Holding {
    Key(KeyName),
    /// Its value matches neither key's fingerprint: it is broken already.
    Neither,
    /// Its value cannot be read back (a Databricks secret keyflip never wrote). It does
    /// not count toward the active-key decision and does not block; it is reported.
    Unknown {
        why: String,
    },
}

/// One key as observed: its fingerprint and `keyCreationTime` (null on accounts
/// whose keys were never regenerated).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyState {
    pub fingerprint: Fingerprint,
    pub created: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingPermission {
    /// The ARM action, e.g. `Microsoft.Storage/storageAccounts/regeneratekey/action`.
    pub action: String,
    /// The scope it is needed on (a resource id or vault URL).
    pub scope: String,
    /// A built-in role that grants it, when one is known.
    pub role_hint: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedConsumer {
    pub consumer: ConsumerRef,
    pub holding: Holding,
}

/// What `Observe` found. The consumer list arrives here because datastore discovery
/// happens at observation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    pub key1: KeyState,
    pub key2: KeyState,
    pub shared_key_access: bool,
    pub missing_permissions: Vec<MissingPermission>,
    pub consumers: Vec<ObservedConsumer>,
}

impl Observation {
    pub fn key(&self, key: KeyName) -> &KeyState {
        match key {
            KeyName::Key1 => &self.key1,
            KeyName::Key2 => &self.key2,
        }
    }
}

/// Why the rotation runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Mode {
    /// A planned rotation (and plain `rotate now`).
    Scheduled,
    /// `--leaked key1|key2`: the machine decides after observing whether `key` is the
    /// standby or the active key.
    Leaked { key: KeyName, revoke_first: bool },
    /// `--leaked both|unknown`: both keys end up new, standby first, no grace.
    LeakedBoth,
}

impl Mode {
    pub fn is_incident(self) -> bool {
        !matches!(self, Mode::Scheduled)
    }
}

/// How the rotation behaves; fixed for its lifetime and journaled with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Options {
    /// Time between commit and retiring the old key. Ignored in incident modes.
    #[serde(rename = "grace_ms", with = "millis_delta")]
    pub grace: TimeDelta,
    /// How long the executor keeps probing a key on the data plane (carried in
    /// [`Action::VerifyKey`]).
    #[serde(rename = "verify_budget_ms", with = "millis_std")]
    pub verify_budget: Duration,
    /// Attempts at a regeneration that cannot roll back (retire, revoke, discard) and,
    /// with `revoke_first`, rounds of re-binding, before parking. Zero counts as one.
    pub retire_attempts: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            grace: TimeDelta::hours(1),
            verify_budget: Duration::from_secs(60),
            retire_attempts: 8,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// Make a fresh standby value to move consumers to.
    Stage,
    /// Kill the old key after commit.
    Retire,
    /// Kill a value that may have leaked in a failed rotation, after rollback.
    Discard,
    /// Kill a leaked key (the standby at once, or the active with `revoke_first`).
    Revoke,
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Purpose::Stage => "stage",
            Purpose::Retire => "retire",
            Purpose::Discard => "discard",
            Purpose::Revoke => "revoke",
        })
    }
}

/// A command for the executor. `seq` is assigned by the machine, in order from 1;
/// the result event names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub seq: u32,
    pub action: Action,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// Read both keys (fingerprints, `keyCreationTime`), what each consumer holds,
    /// shared-key access and permissions. Answered by [`StepResult::Observed`].
    Observe,
    /// `regenerateKey`. `before` is the key as last known, so an outcome lost in a
    /// crash is reconciled from Azure (a different fingerprint or creation time means
    /// it happened), never re-sent blindly.
    Regenerate {
        key: KeyName,
        purpose: Purpose,
        before: KeyState,
    },
    /// Probe the key on the data plane until accepted or `budget` runs out.
    VerifyKey {
        key: KeyName,
        fingerprint: Fingerprint,
        #[serde(rename = "budget_ms", with = "millis_std")]
        budget: Duration,
    },
    /// Make the consumer hold `key` (idempotent: check first, write if needed). The
    /// executor must refuse to write a value whose fingerprint is not `fingerprint`.
    Bind {
        consumer: ConsumerRef,
        key: KeyName,
        fingerprint: Fingerprint,
    },
    /// Check that the consumer holds `key` with `fingerprint` and that it works.
    VerifyConsumer {
        consumer: ConsumerRef,
        key: KeyName,
        fingerprint: Fingerprint,
    },
    /// Disable every Key Vault version of the secret whose value has one of these
    /// fingerprints.
    DisableVersions {
        consumer: ConsumerRef,
        fingerprints: Vec<Fingerprint>,
    },
    /// A journal marker: the swap is committed; from here there is no rollback.
    Commit,
    /// Wait until `at` (absolute, so a restart does not lengthen a wait).
    WaitUntil { at: DateTime<Utc> },
    /// The rotation is over: record the outcome, write the report. Takes no result.
    Finish { outcome: Box<Outcome> },
}

impl Action {
    /// The action's name in errors and reports.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Observe => "observe",
            Action::Regenerate { .. } => "regenerate",
            Action::VerifyKey { .. } => "verify_key",
            Action::Bind { .. } => "bind",
            Action::VerifyConsumer { .. } => "verify_consumer",
            Action::DisableVersions { .. } => "disable_versions",
            Action::Commit => "commit",
            Action::WaitUntil { .. } => "wait_until",
            Action::Finish { .. } => "finish",
        }
    }

    /// The consumer the action is about, if any.
    pub fn consumer(&self) -> Option<&ConsumerRef> {
        match self {
            Action::Bind { consumer, .. }
            | Action::VerifyConsumer { consumer, .. }
            | Action::DisableVersions { consumer, .. } => Some(consumer),
            _ => None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Observe => f.write_str("observe the account and its consumers"),
            Action::Regenerate { key, purpose, .. } => write!(f, "regenerate {key} ({purpose})"),
            Action::VerifyKey {
                key, fingerprint, ..
            } => write!(f, "verify {key} ({fingerprint}) on the data plane"),
            Action::Bind {
                consumer,
                key,
                fingerprint,
            } => write!(f, "bind {consumer} to {key} ({fingerprint})"),
            Action::VerifyConsumer { consumer, key, .. } => {
                write!(f, "verify {consumer} holds {key}")
            }
            Action::DisableVersions {
                consumer,
                fingerprints,
            } => {
                write!(f, "disable versions of {consumer} holding ")?;
                for (i, fp) in fingerprints.iter().enumerate() {
                    write!(f, "{}{fp}", if i == 0 { "" } else { ", " })?;
                }
                Ok(())
            }
            Action::Commit => f.write_str("commit the swap"),
            Action::WaitUntil { at } => write!(f, "wait until {}", at.to_rfc3339()),
            Action::Finish { outcome } => write!(f, "finish: {outcome}"),
        }
    }
}

/// What the machine is told.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The result of command `seq`, learned at `at`.
    Answer {
        seq: u32,
        at: DateTime<Utc>,
        result: StepResult,
    },
    /// After a restart, the executor observed Azure again so the machine can check it
    /// still matches what was recorded. Answers no command.
    Reobserved {
        at: DateTime<Utc>,
        observation: Observation,
    },
}

impl Event {
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            Event::Answer { at, .. } | Event::Reobserved { at, .. } => *at,
        }
    }
}

/// A command's result. Each answers exactly one kind of [`Action`]. Failures are
/// definite: the executor reconciles an ambiguous outcome before reporting one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum StepResult {
    Observed(Observation),
    Regenerated {
        fingerprint: Fingerprint,
        created: Option<DateTime<Utc>>,
    },
    RegenerateFailed {
        error: String,
    },
    KeyVerified,
    KeyRejected {
        reason: String,
    },
    Bound,
    BindFailed {
        reason: String,
    },
    ConsumerVerified,
    ConsumerMismatch {
        reason: String,
    },
    VersionsDisabled {
        versions: Vec<String>,
    },
    DisableFailed {
        reason: String,
    },
    Committed,
    Waited,
}

impl StepResult {
    pub fn name(&self) -> &'static str {
        match self {
            StepResult::Observed(_) => "observed",
            StepResult::Regenerated { .. } => "regenerated",
            StepResult::RegenerateFailed { .. } => "regenerate_failed",
            StepResult::KeyVerified => "key_verified",
            StepResult::KeyRejected { .. } => "key_rejected",
            StepResult::Bound => "bound",
            StepResult::BindFailed { .. } => "bind_failed",
            StepResult::ConsumerVerified => "consumer_verified",
            StepResult::ConsumerMismatch { .. } => "consumer_mismatch",
            StepResult::VersionsDisabled { .. } => "versions_disabled",
            StepResult::DisableFailed { .. } => "disable_failed",
            StepResult::Committed => "committed",
            StepResult::Waited => "waited",
        }
    }

    /// True when this result can answer `action`.
    pub fn answers(&self, action: &Action) -> bool {
        matches!(
            (action, self),
            (Action::Observe, StepResult::Observed(_))
                | (
                    Action::Regenerate { .. },
                    StepResult::Regenerated { .. } | StepResult::RegenerateFailed { .. }
                )
                | (
                    Action::VerifyKey { .. },
                    StepResult::KeyVerified | StepResult::KeyRejected { .. }
                )
                | (
                    Action::Bind { .. },
                    StepResult::Bound | StepResult::BindFailed { .. }
                )
                | (
                    Action::VerifyConsumer { .. },
                    StepResult::ConsumerVerified | StepResult::ConsumerMismatch { .. }
                )
                | (
                    Action::DisableVersions { .. },
                    StepResult::VersionsDisabled { .. } | StepResult::DisableFailed { .. }
                )
                | (Action::Commit, StepResult::Committed)
                | (Action::WaitUntil { .. }, StepResult::Waited)
        )
    }

    /// The failure's reason, for results that are failures.
    pub fn failure(&self) -> Option<&str> {
        match self {
            StepResult::RegenerateFailed { error: r }
            | StepResult::KeyRejected { reason: r }
            | StepResult::BindFailed { reason: r }
            | StepResult::ConsumerMismatch { reason: r }
            | StepResult::DisableFailed { reason: r } => Some(r),
            _ => None,
        }
    }
}

/// A key that is not what the machine recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    pub key: KeyName,
    pub expected: Fingerprint,
    pub found: Fingerprint,
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} changed outside this rotation: expected {}, found {}",
            self.key, self.expected, self.found
        )
    }
}

/// Why a rotation turned back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cause", rename_all = "snake_case")]
pub enum Cause {
    /// Command `seq` failed.
    Failed {
        seq: u32,
        action: Action,
        reason: String,
    },
    /// Azure no longer matched the journal after a restart.
    Drift { drifts: Vec<Drift> },
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Failed {
                seq,
                action,
                reason,
            } => write!(f, "step {seq} ({action}) failed: {reason}"),
            Cause::Drift { drifts } => write_list(f, drifts),
        }
    }
}

/// A key regenerated by this rotation: which key died when.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Regeneration {
    pub key: KeyName,
    pub purpose: Purpose,
    pub at: DateTime<Utc>,
    pub before: Fingerprint,
    pub after: Fingerprint,
}

/// How a rotation ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Every consumer holds `active`, verified; the keys in `regenerated` died.
    Completed {
        active: KeyName,
        regenerated: Vec<Regeneration>,
        warnings: Vec<String>,
    },
    /// A failure before commit; every consumer is back on the old key, verified, and
    /// `discarded` (when set) was regenerated so a value that may have leaked died.
    RolledBack {
        cause: Cause,
        discarded: Option<KeyName>,
        warnings: Vec<String>,
    },
    /// The precheck found reasons not to start; nothing was changed.
    Refused { reasons: Vec<RefusalReason> },
    /// Parked: a human has to look. `in_doubt` are commands issued whose outcome the
    /// machine never learned (only after a restart that found drift).
    NeedsAttention {
        reason: Attention,
        in_doubt: Vec<Command>,
    },
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Completed {
                active,
                regenerated,
                ..
            } => {
                write!(f, "completed: consumers on {active}")?;
                for r in regenerated {
                    write!(f, "; {} regenerated ({})", r.key, r.purpose)?;
                }
                Ok(())
            }
            Outcome::RolledBack {
                cause, discarded, ..
            } => {
                write!(f, "rolled back after {cause}; consumers are on the old key")?;
                if let Some(key) = discarded {
                    write!(f, ", {key} discarded")?;
                }
                Ok(())
            }
            Outcome::Refused { reasons } => {
                f.write_str("refused, nothing changed: ")?;
                write_list(f, reasons)
            }
            Outcome::NeedsAttention { reason, .. } => write!(f, "needs attention: {reason}"),
        }
    }
}

/// Why the precheck refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum RefusalReason {
    SharedKeyAccessDisabled,
    MissingPermissions {
        missing: Vec<MissingPermission>,
    },
    KeysIdentical,
    DuplicateConsumer {
        consumer: ConsumerId,
    },
    ConsumerHoldsNeither {
        consumer: ConsumerRef,
    },
    ConsumersSplit {
        on_key1: Vec<ConsumerId>,
        on_key2: Vec<ConsumerId>,
    },
    NoConsumerKeyKnown {
        unknown: Vec<ConsumerId>,
    },
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefusalReason::SharedKeyAccessDisabled => f.write_str(
                "shared-key access is disabled on the account (allowSharedKeyAccess=false), so no key works on the data plane; enable it or stop using keys",
            ),
            RefusalReason::MissingPermissions { missing } => {
                f.write_str("missing permissions: ")?;
                for (i, m) in missing.iter().enumerate() {
                    write!(f, "{}{} on {}", if i == 0 { "" } else { "; " }, m.action, m.scope)?;
                    if let Some(role) = &m.role_hint {
                        write!(f, " (granted by {role})")?;
                    }
                }
                Ok(())
            }
            RefusalReason::KeysIdentical => f.write_str(
                "key1 and key2 have the same fingerprint, so keyflip cannot tell which key a consumer holds",
            ),
            RefusalReason::DuplicateConsumer { consumer } => write!(
                f,
                "consumer {consumer} appears twice in the observation; fix the plan so each consumer is listed once"
            ),
            RefusalReason::ConsumerHoldsNeither { consumer } => write!(
                f,
                "{consumer} holds neither key (it is broken already); fix it by hand or with `keyflip rotate now --leaked`, then retry"
            ),
            RefusalReason::ConsumersSplit { on_key1, on_key2 } => {
                f.write_str("consumers are split across keys (key1: ")?;
                write_list(f, on_key1)?;
                f.write_str("; key2: ")?;
                write_list(f, on_key2)?;
                f.write_str("); move them all to one key first, no rotation is safe while split")
            }
            RefusalReason::NoConsumerKeyKnown { unknown } => {
                f.write_str("no consumer's key is known, so keyflip cannot tell the active key from the standby")?;
                if !unknown.is_empty() {
                    f.write_str(" (unknown: ")?;
                    write_list(f, unknown)?;
                    f.write_str(")")?;
                }
                Ok(())
            }
        }
    }
}

/// Why a rotation was parked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "attention", rename_all = "snake_case")]
pub enum Attention {
    /// A regeneration that cannot roll back failed `attempts` times.
    RetriesExhausted {
        key: KeyName,
        purpose: Purpose,
        attempts: u32,
        last_error: String,
    },
    /// With `revoke_first`: consumers could not be moved to `key` after `attempts`
    /// rounds; the leaked key is already dead, so they are down.
    ConsumersNotMoved {
        key: KeyName,
        consumers: Vec<(ConsumerId, String)>,
        attempts: u32,
    },
    /// The rollback could not bring every consumer back to `key`.
    RollbackIncomplete {
        cause: Cause,
        key: KeyName,
        not_back: Vec<(ConsumerId, String)>,
    },
    /// An incident rotation rolled back (or could not start the swap), so the leaked
    /// `key` is still in use.
    LeakedKeyInUse {
        key: KeyName,
        cause: Cause,
        discarded: Option<KeyName>,
    },
    /// After a restart Azure did not match the journal in a way keyflip cannot safely
    /// continue from.
    Drift { drifts: Vec<Drift>, detail: String },
}

impl fmt::Display for Attention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attention::RetriesExhausted {
                key,
                purpose,
                attempts,
                last_error,
            } => {
                write!(
                    f,
                    "regenerating {key} ({purpose}) failed {attempts} times (last: {last_error}); "
                )?;
                f.write_str(match purpose {
                    Purpose::Retire => "consumers are on the new key, the old key is still valid: regenerate it by hand once the cause is fixed",
                    Purpose::Discard => "consumers are back on the old key; the staged key may have leaked and is still valid: regenerate it by hand",
                    Purpose::Revoke => "the leaked key is still valid: regenerate it by hand now",
                    Purpose::Stage => "nothing was changed",
                })
            }
            Attention::ConsumersNotMoved {
                key,
                consumers,
                attempts,
            } => {
                write!(
                    f,
                    "after {attempts} rounds these consumers still do not hold {key} and the leaked key is already regenerated, so they are down: "
                )?;
                write_pairs(f, consumers)
            }
            Attention::RollbackIncomplete {
                cause,
                key,
                not_back,
            } => {
                write!(
                    f,
                    "rollback after {cause} could not bring these consumers back to {key}: "
                )?;
                write_pairs(f, not_back)?;
                f.write_str("; fix them by hand, then regenerate the staged key")
            }
            Attention::LeakedKeyInUse {
                key,
                cause,
                discarded,
            } => {
                write!(
                    f,
                    "the leaked {key} is still in use: the swap stopped after {cause}"
                )?;
                if let Some(d) = discarded {
                    write!(f, " and {d} was discarded")?;
                }
                f.write_str("; fix the cause and run the incident rotation again")
            }
            Attention::Drift { drifts, detail } => {
                write_list(f, drifts)?;
                write!(f, "; {detail}")
            }
        }
    }
}

fn write_list<T: fmt::Display>(f: &mut fmt::Formatter<'_>, items: &[T]) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        write!(f, "{}{item}", if i == 0 { "" } else { ", " })?;
    }
    Ok(())
}

fn write_pairs(f: &mut fmt::Formatter<'_>, items: &[(ConsumerId, String)]) -> fmt::Result {
    for (i, (id, why)) in items.iter().enumerate() {
        write!(f, "{}{id} ({why})", if i == 0 { "" } else { "; " })?;
    }
    Ok(())
}

/// Durations as whole milliseconds in JSON, so the journal format does not depend on
/// chrono's or serde's own encodings.
mod millis_delta {
    use chrono::TimeDelta;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &TimeDelta, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(d.num_milliseconds())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TimeDelta, D::Error> {
        let ms = i64::deserialize(d)?;
        TimeDelta::try_milliseconds(ms)
            .ok_or_else(|| serde::de::Error::custom("duration in milliseconds out of range"))
    }
}

mod millis_std {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}
