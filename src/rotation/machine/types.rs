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

use super::failure::Failure;
use super::outcome::Outcome;
use crate::key::KeyName;
pub use crate::rotation::origin::Requester;
use crate::secret::Fingerprint;

/// The version of the JSON shape of [`Command`] and [`Event`] written by this build.
/// Schema 2 made failure reasons and warnings [`Failure`]s and `Warning`s (a kind and
/// a message) where schema 1 held plain strings; those strings still read, as kind
/// `Unclassified`.
pub(crate) const SCHEMA: u32 = 2;

pub use crate::consumer::{Capabilities, ConsumerId, ConsumerKind};

/// A consumer as the machine sees it: its id, which the machine only compares, prints
/// and journals, and its [`Capabilities`], which change what the machine issues for
/// it (never its kind). Journaled as `{"id", "kind", "capabilities"}`; a row written
/// before capabilities were journaled gets its kind's, which is what that keyflip
/// did, so old rotations replay as they ran.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "StoredConsumerRef", try_from = "StoredConsumerRef")]
pub struct ConsumerRef {
    pub id: ConsumerId,
    pub(crate) capabilities: Capabilities,
}

impl ConsumerRef {
    /// The consumer with its kind's capabilities.
    pub fn new(id: ConsumerId) -> ConsumerRef {
        ConsumerRef {
            capabilities: id.kind().capabilities(),
            id,
        }
    }

    pub fn kind(&self) -> ConsumerKind {
        self.id.kind()
    }
}

impl fmt::Display for ConsumerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind(), self.id)
    }
}

/// [`ConsumerRef`] as journaled.
#[derive(Serialize, Deserialize)]
struct StoredConsumerRef {
    id: ConsumerId,
    kind: ConsumerKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    capabilities: Option<Capabilities>,
}

impl From<ConsumerRef> for StoredConsumerRef {
    fn from(c: ConsumerRef) -> Self {
        StoredConsumerRef {
            kind: c.kind(),
            id: c.id,
            capabilities: Some(c.capabilities),
        }
    }
}

impl TryFrom<StoredConsumerRef> for ConsumerRef {
    type Error = String;

    fn try_from(c: StoredConsumerRef) -> Result<Self, Self::Error> {
        if c.kind != c.id.kind() {
            return Err(format!(
                "consumer {} is recorded as a {}, but its id is a {}'s",
                c.id,
                c.kind,
                c.id.kind()
            ));
        }
        Ok(ConsumerRef {
            capabilities: c.capabilities.unwrap_or_else(|| c.kind.capabilities()),
            id: c.id,
        })
    }
}

/// Which key a consumer holds, as the executor found out at observation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Holding {
    Key(KeyName),
    /// Its value matches neither key's fingerprint: it is broken already.
    Neither,
    /// Its value cannot be read (one that cannot be read back and keyflip never
    /// wrote, or a read keyflip may not make). It does not count toward the
    /// active-key decision and does not block; it is reported.
    Unknown {
        why: String,
    },
    /// keyflip cannot rotate this consumer the way the plan lists it (it stores no
    /// account key, or cannot be written where the plan says); `fix` says what to
    /// change. A swap refuses; an incident route that touches no consumer
    /// only warns.
    Unusable {
        fix: String,
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
    pub(crate) role_hint: Option<String>,
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
    /// Consumers of the account the plan does not list, as discovery found them (a
    /// new rotation's first observation only; rows written before it existed have
    /// none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unlisted: Vec<UnlistedConsumer>,
    /// What the unlisted-consumer check did not read, so consumers there were not
    /// looked for: `unlisted` is then incomplete. Rows written before it existed have
    /// none (their check's gaps were only logged).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unlisted_unchecked: Vec<UncheckedRead>,
}

/// A read the unlisted-consumer check needed and did not get: consumers behind it
/// (the settings of an App Service site, the secrets of a vault) were not looked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UncheckedRead {
    /// What was not read, in words: `settings of App Service site func-x`.
    pub subject: String,
    pub why: Unchecked,
    /// The error, in words (a put-off read says so).
    pub detail: String,
}

/// Why a read of the unlisted-consumer check was not made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unchecked {
    /// Put off to leave the call budget to rotations (the daemon's own rotations only;
    /// see `budget::deferrable`): the next check reads it.
    PutOff,
    /// Azure refused it (a permission keyflip's identity lacks) or it failed.
    Failed,
}

impl fmt::Display for UncheckedRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.why {
            Unchecked::PutOff => write!(
                f,
                "{} (put off: the call budget was left to rotations)",
                self.subject
            ),
            Unchecked::Failed => write!(f, "{} ({})", self.subject, self.detail),
        }
    }
}

/// A consumer of the account that the plan does not list (`crate::discover`). Ids,
/// key names and words only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnlistedConsumer {
    /// Its consumer id, as a plan would list it.
    pub consumer: String,
    /// What it is, in words.
    pub subject: String,
    /// Which key it holds: `key1`, `key2`, `neither`, `unknown`.
    pub holds: String,
    /// How discovery found it.
    pub how: String,
    /// Its value could not be read back: tied to the account by its name or by
    /// keyflip's own earlier write only. Never refuses a rotation, only warns.
    #[serde(default)]
    pub probable: bool,
}

impl fmt::Display for UnlistedConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (holds {}; {}", self.subject, self.holds, self.how)?;
        if self.probable {
            f.write_str("; probable only")?;
        }
        f.write_str(")")
    }
}

/// Someone who signed requests with a key, as the account's resource logs show it:
/// one caller address (its port dropped: one client over several connections is one
/// caller), user agent, operation and authentication type. No key material.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    /// The caller's IP address, without the port the log records.
    pub ip: String,
    pub user_agent: String,
    pub operation: String,
    /// `AccountKey` (the key itself) or `SAS` (a SAS token the key signed).
    pub authentication: String,
    pub requests: u64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}) {} with {}, {} request(s), last {}",
            self.ip,
            if self.user_agent.is_empty() {
                "no user agent"
            } else {
                &self.user_agent
            },
            self.operation,
            self.authentication,
            self.requests,
            self.last_seen.format("%Y-%m-%d %H:%M:%S UTC")
        )
    }
}

/// Why a rotation asks the resource logs who signs with a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GatePurpose {
    /// Before the standby is staged (regenerated): anyone signing with it would break.
    Stage,
    /// Before the retire: hold while anyone still signs with the old key.
    Retire,
    /// An incident never waits: the callers are reported as breaking now.
    Incident,
}

/// The usage gate's timing, from the plan's `[usage_gate]`; the executor takes the
/// workspace and services from the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateOptions {
    /// No request signed with the old key for this long lets the retire go.
    #[serde(rename = "quiet_ms", with = "millis_delta")]
    pub quiet: TimeDelta,
    /// How often a held retire checks again.
    #[serde(rename = "recheck_ms", with = "millis_delta")]
    pub recheck: TimeDelta,
    /// How long after the swap the gate may hold before the rotation parks.
    #[serde(rename = "deadline_ms", with = "millis_delta")]
    pub deadline: TimeDelta,
    /// Log rows younger than this may not have arrived yet.
    #[serde(rename = "latency_ms", with = "millis_delta")]
    pub latency: TimeDelta,
    /// How far back the pre-stage check and incidents look.
    #[serde(rename = "lookback_ms", with = "millis_delta")]
    pub lookback: TimeDelta,
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
    /// `keyflip rotate resume` of a swap parked at the usage gate: every consumer must
    /// still hold the other key and `key` still have the value `expect`; then `key` is
    /// retired, after the gate (usage counted from `since`, the swap) unless `force`.
    Retire {
        key: KeyName,
        expect: Fingerprint,
        since: DateTime<Utc>,
        force: bool,
    },
    /// `--adopt [KEY]`: move every consumer to a key that works now (`key`, or the one
    /// the precheck picks), regenerating nothing. For consumers split across keys or
    /// down after a key was regenerated outside keyflip.
    Adopt {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<KeyName>,
    },
}

impl Mode {
    /// `--leaked`: a leaked key must die.
    pub(crate) fn is_incident(self) -> bool {
        matches!(self, Mode::Leaked { .. } | Mode::LeakedBoth)
    }

    /// The keys this mode says leaked (none outside an incident).
    pub(crate) fn leaked_keys(self) -> Vec<KeyName> {
        match self {
            Mode::Leaked { key, .. } => vec![key],
            Mode::LeakedBoth => KeyName::BOTH.to_vec(),
            Mode::Scheduled | Mode::Adopt { .. } | Mode::Retire { .. } => Vec::new(),
        }
    }

    /// Whether an incident in this mode already kills every key `other` says leaked:
    /// nothing for `other` to take over.
    pub fn covers(self, other: Mode) -> bool {
        let mine = self.leaked_keys();
        other.leaked_keys().iter().all(|k| mine.contains(k))
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::Scheduled => f.write_str("safe swap"),
            Mode::Leaked {
                key,
                revoke_first: false,
            } => write!(f, "incident: {key} leaked"),
            Mode::Leaked {
                key,
                revoke_first: true,
            } => write!(f, "incident: {key} leaked, revoke first"),
            Mode::LeakedBoth => f.write_str("incident: both keys leaked"),
            Mode::Adopt { key: None } => f.write_str("adopt the key that works"),
            Mode::Adopt { key: Some(key) } => write!(f, "adopt {key}"),
            Mode::Retire { key, force, .. } => write!(
                f,
                "retire {key} after a swap held at the usage gate{}",
                if *force { ", forced" } else { "" }
            ),
        }
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
    /// When consumers Azure steers (an ML workspace's resync) are bound. A row without
    /// it was journaled by a keyflip that bound them with the rest, and replays so.
    #[serde(default = "ResyncOrder::with_the_rest")]
    pub resync: ResyncOrder,
    /// The usage gate, when the plan has one. Rows without it ran without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_gate: Option<GateOptions>,
    /// Unlisted consumers refuse the rotation (`unlisted = "refuse"`) rather than warn.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refuse_unlisted: bool,
    /// With `revoke_first`: the leaked key is revoked after a keys-only observation,
    /// before any consumer is read, and the route is decided from the consumers read
    /// after it (see the machine's module docs, "Revoke first"). A row without it was
    /// journaled by a keyflip that read every consumer and probed the standby before
    /// the revoke, and replays and resumes that way.
    #[serde(default)]
    pub revoke_before_reads: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            grace: TimeDelta::hours(1),
            verify_budget: Duration::from_secs(60),
            retire_attempts: 8,
            resync: ResyncOrder::Last,
            usage_gate: None,
            refuse_unlisted: false,
            revoke_before_reads: true,
        }
    }
}

/// When the swap binds the consumers Azure steers
/// ([`steered_by_azure`](super::steered_by_azure)): fixed for a rotation's lifetime,
/// so a rotation replays in the order it ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResyncOrder {
    /// Only once every other consumer was bound and verified; from that bind on
    /// nothing rolls back. Every new rotation.
    Last,
    /// In one round with every other consumer, which rolls back (resync included) on a
    /// failure: what keyflip did before record schema 2. Only rotations journaled then
    /// take it, so that they replay, and resume, as they began.
    WithTheRest,
}

impl ResyncOrder {
    fn with_the_rest() -> ResyncOrder {
        ResyncOrder::WithTheRest
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
    /// Read only what a revoke needs (`revoke_first`): the permissions on the storage
    /// account, the account (shared-key access, `keyCreationTime`) and both keys, in
    /// one round trip; no consumer. Answered by [`StepResult::Observed`] with no
    /// consumers.
    ObserveKeys,
    /// After a `revoke_first` revoke: read everything [`Action::Observe`] reads, but say
    /// what each consumer holds against the keys as they were before the revoke: a
    /// consumer whose value is `leaked` (the value `key` had until this rotation
    /// revoked it) is reported as holding `key`; one holding `key`'s fresh value as
    /// holding neither. The answer's keys are as they are now. Answered by
    /// [`StepResult::Observed`].
    ObserveAfterRevoke { key: KeyName, leaked: Fingerprint },
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
    /// Disable every version of the consumer whose value has one of these
    /// fingerprints (issued for consumers that keep old versions: Key Vault).
    DisableVersions {
        consumer: ConsumerRef,
        fingerprints: Vec<Fingerprint>,
    },
    /// Ask the account's resource logs who signed requests with `key` (whose value
    /// must still be `fingerprint`: the executor never asks about another value) from
    /// `since` to now. Answered by [`StepResult::UsageChecked`] or
    /// [`StepResult::UsageUnknown`].
    CheckUsage {
        key: KeyName,
        fingerprint: Fingerprint,
        since: DateTime<Utc>,
        purpose: GatePurpose,
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
            Action::ObserveKeys => "observe_keys",
            Action::ObserveAfterRevoke { .. } => "observe_after_revoke",
            Action::Regenerate { .. } => "regenerate",
            Action::VerifyKey { .. } => "verify_key",
            Action::Bind { .. } => "bind",
            Action::VerifyConsumer { .. } => "verify_consumer",
            Action::DisableVersions { .. } => "disable_versions",
            Action::CheckUsage { .. } => "check_usage",
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
            Action::ObserveKeys => f.write_str("read the account's keys"),
            Action::ObserveAfterRevoke { key, leaked } => write!(
                f,
                "observe the consumers: which held the leaked {key} ({leaked})"
            ),
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
            Action::CheckUsage {
                key,
                fingerprint,
                since,
                purpose,
            } => {
                write!(
                    f,
                    "check who still signs with {key} ({fingerprint}) since {}",
                    since.format("%Y-%m-%d %H:%M:%S UTC")
                )?;
                f.write_str(match purpose {
                    GatePurpose::Stage => " (before staging it)",
                    GatePurpose::Retire => " (usage gate)",
                    GatePurpose::Incident => " (callers that break now)",
                })
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
    /// An incident (`--leaked`, `mode`) takes over this unfinished rotation: it either
    /// finishes the incident itself or winds down for a follow-up rotation (see the
    /// module docs, "Escalation"). `by` is who asked; the machine only reports it.
    Escalated {
        at: DateTime<Utc>,
        mode: Mode,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<Requester>,
    },
    /// The grace period of this rotation is shortened to `grace` (a waiting grace ends
    /// at commit + `grace`, or now if that has passed).
    GraceShortened {
        at: DateTime<Utc>,
        #[serde(rename = "grace_ms", with = "millis_delta")]
        grace: TimeDelta,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<Requester>,
    },
}

impl Event {
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            Event::Answer { at, .. }
            | Event::Reobserved { at, .. }
            | Event::Escalated { at, .. }
            | Event::GraceShortened { at, .. } => *at,
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
        error: Failure,
    },
    KeyVerified,
    KeyRejected {
        reason: Failure,
    },
    Bound,
    BindFailed {
        reason: Failure,
    },
    ConsumerVerified,
    ConsumerMismatch {
        reason: Failure,
    },
    VersionsDisabled {
        versions: Vec<String>,
    },
    DisableFailed {
        reason: Failure,
    },
    Committed,
    Waited,
    /// Who signed with the key from the command's `since` to `until` (empty: nobody).
    UsageChecked {
        until: DateTime<Utc>,
        callers: Vec<Caller>,
    },
    /// The logs could not be asked (or answered something unreadable): usage is not
    /// known, which never counts as quiet.
    UsageUnknown {
        reason: Failure,
    },
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
            StepResult::UsageChecked { .. } => "usage_checked",
            StepResult::UsageUnknown { .. } => "usage_unknown",
        }
    }

    /// True when this result can answer `action`.
    pub fn answers(&self, action: &Action) -> bool {
        matches!(
            (action, self),
            (
                Action::Observe | Action::ObserveKeys | Action::ObserveAfterRevoke { .. },
                StepResult::Observed(_)
            ) | (
                Action::Regenerate { .. },
                StepResult::Regenerated { .. } | StepResult::RegenerateFailed { .. }
            ) | (
                Action::VerifyKey { .. },
                StepResult::KeyVerified | StepResult::KeyRejected { .. }
            ) | (
                Action::Bind { .. },
                StepResult::Bound | StepResult::BindFailed { .. }
            ) | (
                Action::VerifyConsumer { .. },
                StepResult::ConsumerVerified | StepResult::ConsumerMismatch { .. }
            ) | (
                Action::DisableVersions { .. },
                StepResult::VersionsDisabled { .. } | StepResult::DisableFailed { .. }
            ) | (
                Action::CheckUsage { .. },
                StepResult::UsageChecked { .. } | StepResult::UsageUnknown { .. }
            ) | (Action::Commit, StepResult::Committed)
                | (Action::WaitUntil { .. }, StepResult::Waited)
        )
    }

    /// The failure's reason, for results that are failures.
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            StepResult::RegenerateFailed { error: r }
            | StepResult::KeyRejected { reason: r }
            | StepResult::BindFailed { reason: r }
            | StepResult::ConsumerMismatch { reason: r }
            | StepResult::DisableFailed { reason: r }
            | StepResult::UsageUnknown { reason: r } => Some(r),
            _ => None,
        }
    }
}

/// Durations as whole milliseconds in JSON, so the journal format does not depend on
/// chrono's or serde's own encodings.
mod millis_delta {
    use chrono::TimeDelta;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &TimeDelta, s: S) -> Result<S::Ok, S::Error> {
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

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}
