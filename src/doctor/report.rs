//! What `keyflip doctor` found: one [`Check`] per thing it looked at, grouped by plan.
//!
//! The same value is printed as a table ([`super::render`]) and serialized as JSON
//! (`--output json`), so both always say the same thing. Field names are part of the
//! interface, documented in `docs/operations.md` ("keyflip doctor"); they are added to,
//! never renamed. Nothing here can hold a key: values are [`Fingerprint`]s.

use chrono::{DateTime, Utc};
use serde::Serialize;

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
    pub identity: Option<crate::azure::Identity>,
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
/// keys, ML workspaces and datastores, Key Vault secrets, Databricks secrets, and the
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
    /// The value could not be read (a disabled version, a Databricks secret, a read
    /// that failed).
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
    /// An ML workspace that is resynced: its own storage account and cached key.
    Workspace {
        id: String,
        storage_account: Option<String>,
        holds: Option<Holds>,
        fingerprint: Option<Fingerprint>,
    },
    /// The key-based datastores of a workspace on this account.
    Datastores {
        workspace: String,
        selection: Selection,
        /// Key-based datastores on this account (and named ones that are not).
        datastores: Vec<DatastoreFacts>,
        /// Key-based datastores on this account that a named list leaves out.
        missed: Vec<String>,
    },
    /// A Key Vault secret and which key each version holds.
    KeyVaultSecret {
        vault: String,
        secret: String,
        format: &'static str,
        /// Newest first. Empty when the versions could not be listed.
        versions: Vec<VersionFacts>,
    },
    /// A Databricks secret: the scope exists and is Databricks-backed.
    Databricks {
        workspace_url: String,
        scope: String,
        key: String,
        /// `databricks`, `azure_keyvault`, another backend, or `null` (scope not found
        /// or not listed).
        backend: Option<String>,
        secret_exists: Option<bool>,
        last_updated: Option<DateTime<Utc>>,
    },
    /// Every consumer's key, taken together: one active key, or a split.
    Consumers {
        active: Option<KeyName>,
        holdings: Vec<Holding>,
    },
}

impl Facts {
    pub fn kind(&self) -> &'static str {
        match self {
            Facts::Token { .. } => "token",
            Facts::Permissions { .. } => "permissions",
            Facts::StorageAccount { .. } => "storage_account",
            Facts::Key { .. } => "key",
            Facts::Workspace { .. } => "workspace",
            Facts::Datastores { .. } => "datastores",
            Facts::KeyVaultSecret { .. } => "key_vault_secret",
            Facts::Databricks { .. } => "databricks",
            Facts::Consumers { .. } => "consumers",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Service {
    Arm,
    KeyVault,
    Databricks,
}

impl Service {
    pub fn label(self) -> &'static str {
        match self {
            Service::Arm => "Azure Resource Manager",
            Service::KeyVault => "Key Vault",
            Service::Databricks => "Azure Databricks",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    StorageAccount,
    MlWorkspace,
    KeyVault,
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// `datastores = [...]`.
    Named,
    /// `discover = true`.
    Discover,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DatastoreFacts {
    pub name: String,
    /// `AzureBlob`, `AzureFile`, ...; `null` for a named datastore that does not exist.
    pub datastore_type: Option<String>,
    pub credentials_type: Option<String>,
    pub account: Option<String>,
    /// A rotation updates it (named in the plan, or discovered).
    pub covered: bool,
    /// The plan names it but a rotation could not update it: the reason.
    pub unusable: Option<String>,
    pub holds: Holds,
    pub fingerprint: Option<Fingerprint>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VersionFacts {
    pub version: String,
    pub enabled: bool,
    pub created: Option<DateTime<Utc>>,
    pub holds: Holds,
    pub fingerprint: Option<Fingerprint>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Holding {
    /// The consumer id (`keyvault:…`, `workspace:…`, `datastore:…`, `databricks:…`).
    pub consumer: String,
    pub holds: Holds,
}
