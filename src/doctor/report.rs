//! What `keyflip doctor` found: one [`Check`] per thing it looked at, grouped by plan.
//!
//! The same value is printed as a table ([`super::render`]) and serialized as JSON
//! (`--output json`), so both always say the same thing. Field names are part of the
//! interface, documented in `docs/operations.md` ("keyflip doctor"); they are added to,
//! never renamed. Nothing here can hold a key: values are [`Fingerprint`]s.

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};

pub use crate::consumer::Facts as ConsumerFacts;
use crate::exit::Exit;
use crate::key::KeyName;
use crate::secret::Fingerprint;

/// The JSON format version. Bumped only when a field changes meaning or disappears.
pub const FORMAT: u32 = 1;

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// [`FORMAT`].
    pub version: u32,
    /// Who doctor ran as, from its own token (`null` when no token could be had).
    pub identity: Option<crate::azure::Principal>,
    /// True when something in some plan would block a rotation.
    pub blocking: bool,
    pub fingerprints: Fingerprints,
    pub plans: Vec<PlanReport>,
    /// Plan files in the plans directory that are not valid plans.
    pub invalid_plans: Vec<InvalidPlan>,
}

impl Report {
    pub fn new(
        fingerprints: Fingerprints,
        plans: Vec<PlanReport>,
        invalid_plans: Vec<InvalidPlan>,
    ) -> Report {
        Report {
            version: FORMAT,
            identity: None,
            blocking: plans.iter().any(|p| p.blocking),
            fingerprints,
            plans,
            invalid_plans,
        }
    }

    /// 0 when nothing blocks a rotation; 2 when a plan file is invalid (as
    /// `plan check`); 3 when a check found something that would block a rotation.
    pub fn exit(&self) -> Exit {
        if !self.invalid_plans.is_empty() {
            Exit::Usage
        } else if self.blocking {
            Exit::Refused
        } else {
            Exit::Ok
        }
    }
}

/// Which fingerprint key the report's fingerprints were made with.
#[derive(Clone, Debug, Serialize)]
pub struct Fingerprints {
    pub source: FingerprintSource,
    /// The installation's fingerprint key file, when it was used.
    pub path: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FingerprintSource {
    /// `state_dir/fingerprint.key`: comparable with the journal, `status` and reports.
    Installation,
    /// A random key for this run only (no installation key yet, or it is unreadable):
    /// fingerprints compare within this report and nowhere else.
    ThisRun,
}

#[derive(Clone, Debug, Serialize)]
pub struct InvalidPlan {
    pub file: String,
    pub message: String,
}

/// Every check of one plan, in a fixed order: tokens, permissions, storage account and
/// keys, each consumer table's rows (in `crate::consumer`'s report order), and the
/// consumers' keys taken together.
#[derive(Clone, Debug, Serialize)]
pub struct PlanReport {
    pub plan: String,
    pub file: String,
    pub storage_account: String,
    pub blocking: bool,
    pub checks: Vec<Check>,
}

impl PlanReport {
    pub fn new(plan: String, file: String, storage_account: String, checks: Vec<Check>) -> Self {
        PlanReport {
            blocking: checks.iter().any(|c| c.status == Status::Error),
            plan,
            file,
            storage_account,
            checks,
        }
    }
}

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    /// Worth knowing; does not block a rotation.
    Warning,
    /// Could not be checked because of a problem reported by another check.
    Skipped,
    /// Would block a rotation (or make it break a consumer).
    Error,
}

impl Status {
    pub fn symbol(self) -> &'static str {
        match self {
            Status::Ok => "✓",
            Status::Warning => "!",
            Status::Skipped => "-",
            Status::Error => "✗",
        }
    }
}

/// One row of the report.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// What was looked at, for people: `storage account stdatasci001`.
    pub subject: String,
    pub status: Status,
    /// What was found, one line.
    pub finding: String,
    /// What to do about it; present on every warning and error.
    pub fix: Option<String>,
    /// The check's kind (`"check"` in JSON) and its structured findings.
    #[serde(flatten)]
    pub facts: Facts,
}

impl Check {
    pub fn kind(&self) -> &'static str {
        self.facts.kind()
    }
}

/// Which key a consumer (or a secret version) holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Holds {
    Key1,
    Key2,
    /// A value that is neither of the account's current keys.
    Neither,
    /// The value could not be read (a disabled version, a value that cannot be read
    /// back, a read that failed).
    Unknown,
}

impl Holds {
    pub fn key(self) -> Option<KeyName> {
        match self {
            Holds::Key1 => Some(KeyName::Key1),
            Holds::Key2 => Some(KeyName::Key2),
            Holds::Neither | Holds::Unknown => None,
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

impl From<KeyName> for Holds {
    fn from(k: KeyName) -> Holds {
        match k {
            KeyName::Key1 => Holds::Key1,
            KeyName::Key2 => Holds::Key2,
        }
    }
}

/// The structured part of a check, by kind.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "check", rename_all = "snake_case")]
pub enum Facts {
    /// Can keyflip get an Entra ID token for this audience?
    Token {
        service: Service,
        /// `null` when the cloud does not say (a custom cloud without `key_vault_suffix`).
        audience: Option<String>,
        /// The credential used, for people: "client secret of app …", or for the
        /// default chain the link it chose ("default chain: managed identity (…)").
        credential: String,
    },
    /// Does keyflip's identity hold every action it needs at this scope?
    Permissions {
        scope: String,
        resource: Resource,
        required: Vec<String>,
        /// `null` when the permissions could not be read.
        missing: Option<Vec<MissingAction>>,
        /// Ready-to-paste `az` commands that grant what is missing, for the identity
        /// doctor ran as.
        commands: Vec<String>,
        /// Where the narrowest built-in role is broader than needed: a custom role
        /// with exactly the missing actions (`az role definition create` JSON).
        custom_role: Option<serde_json::Value>,
    },
    /// The storage account, and whether it allows shared keys.
    StorageAccount {
        id: String,
        blob_endpoint: Option<String>,
        /// `null` when the account could not be read; `true` when Azure leaves it unset.
        shared_key_access: Option<bool>,
    },
    /// One account key and its data-plane probe.
    Key {
        key: KeyName,
        fingerprint: Option<Fingerprint>,
        created: Option<DateTime<Utc>>,
        probe: Option<ProbeFacts>,
    },
    /// Every consumer's key, taken together: one active key, or a split.
    Consumers {
        active: Option<KeyName>,
        holdings: Vec<Holding>,
    },
    /// Consumers of the account that discovery found and the plan does not list, and
    /// what uses the key but cannot be rotated by keyflip.
    Unlisted {
        consumers: Vec<crate::rotation::machine::UnlistedConsumer>,
        not_rotatable: Vec<NotRotatable>,
        /// Discovery could not run (the keys or the subscriptions could not be read).
        error: Option<String>,
    },
    /// Whether the account's resource logs reach the usage gate's workspace: per
    /// service the plan's gate reads, the diagnostic setting that sends its request
    /// categories there.
    UsageGateLogs {
        workspace: String,
        services: Vec<ServiceLogs>,
    },
    /// Whether keyflip may query the usage gate's workspace.
    UsageGateQuery {
        workspace: String,
        workspace_id: String,
        required: Vec<String>,
        /// `null` when the permissions could not be read.
        missing: Option<Vec<MissingAction>>,
    },
    /// One consumer's own row, by kind (its kind's module says what it holds).
    #[serde(untagged)]
    Consumer(ConsumerFacts),
}

/// Something that uses the key and that keyflip cannot rotate (or that reads it
/// through a listed consumer).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NotRotatable {
    pub subject: String,
    pub why: String,
}

/// One storage service's logs, for the usage gate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceLogs {
    /// `blob`, `file`, `queue`, `table`.
    pub service: &'static str,
    /// The diagnostic setting that sends every request category to the workspace.
    pub setting: Option<String>,
    /// `null` when the settings could not be read.
    pub read: bool,
}

impl From<ConsumerFacts> for Facts {
    fn from(f: ConsumerFacts) -> Facts {
        Facts::Consumer(f)
    }
}

impl Facts {
    pub fn kind(&self) -> &'static str {
        match self {
            Facts::Token { .. } => "token",
            Facts::Permissions { .. } => "permissions",
            Facts::StorageAccount { .. } => "storage_account",
            Facts::Key { .. } => "key",
            Facts::Consumers { .. } => "consumers",
            Facts::Unlisted { .. } => "unlisted",
            Facts::UsageGateLogs { .. } => "usage_gate_logs",
            Facts::UsageGateQuery { .. } => "usage_gate_query",
            Facts::Consumer(f) => f.kind(),
        }
    }
}

/// A service keyflip needs a token for, named in JSON by `name` (`arm`, `key_vault`,
/// ...). Consumer kinds name their own (`crate::consumer`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Service {
    pub name: &'static str,
    pub label: &'static str,
}

impl Service {
    pub const ARM: Service = Service {
        name: "arm",
        label: "Azure Resource Manager",
    };

    pub fn label(self) -> &'static str {
        self.label
    }
}

impl Serialize for Service {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name)
    }
}

/// What a permission scope is, named in JSON by `name` (`storage_account`,
/// `ml_workspace`, `key_vault`, ...). Consumer kinds name their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resource {
    pub name: &'static str,
    /// In a row's subject: `key vault kv-datasci`.
    pub label: &'static str,
}

impl Resource {
    pub const STORAGE_ACCOUNT: Resource = Resource {
        name: "storage_account",
        label: "storage account",
    };
}

impl Serialize for Resource {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MissingAction {
    pub action: String,
    /// A data action (Key Vault secrets) rather than a control-plane action.
    pub data_action: bool,
    /// The narrowest built-in role that grants it, if keyflip knows one.
    pub role: Option<String>,
    pub role_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProbeFacts {
    /// `works`, `rejected`, `shared_keys_disabled`, `refused`, `other`.
    pub outcome: &'static str,
    pub status: Option<u16>,
    pub code: Option<String>,
    pub request_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Holding {
    /// The consumer id (see `crate::consumer::ConsumerId`).
    pub consumer: String,
    pub holds: Holds,
}
