//! The twin's live state: the directory of principals, the resource topology, and
//! the mutable resources (storage keys, Key Vault secret versions, ML workspaces and
//! datastores, Databricks secrets, App Service settings, Data Factory linked services,
//! long-running operations, throttling buckets).
//!
//! Mutable state lives in one [`Core`] behind one mutex: every operation is a short
//! in-memory critical section, so a single lock keeps multi-resource invariants
//! (a resync reading an account's keys, a datastore PUT validating a key) trivially
//! consistent without measurable contention.

mod build;
pub(crate) mod datafactory;
pub(crate) mod snapshot;
pub(crate) mod web;

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::throttle::Throttles;
use crate::world::{ScopeBackend, ScopePermission, Settings};

pub(crate) use build::{arm_id, build};

/// One principal that can sign in.
#[derive(Debug, Clone)]
pub(crate) struct Principal {
    pub name: String,
    pub client_id: String,
    pub object_id: String,
    pub client_secret: String,
    /// (issuer, subject) pairs accepted as client assertions.
    pub federated: Vec<(String, String)>,
    /// Certificates accepted for client assertions (`private_key_jwt`).
    pub certificates: Vec<crate::certificate::RegisteredCert>,
}

/// Every principal; immutable.
#[derive(Debug, Default)]
pub(crate) struct Directory {
    pub principals: Vec<Principal>,
}

impl Directory {
    pub fn by_name(&self, name: &str) -> Option<&Principal> {
        self.principals.iter().find(|p| p.name == name)
    }
    pub fn by_client_id(&self, id: &str) -> Option<&Principal> {
        self.principals
            .iter()
            .find(|p| p.client_id.eq_ignore_ascii_case(id))
    }
    pub fn by_object_id(&self, id: &str) -> Option<&Principal> {
        self.principals
            .iter()
            .find(|p| p.object_id.eq_ignore_ascii_case(id))
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Subscription {
    pub id: String,
    pub display_name: String,
}

#[derive(Debug, Clone)]
pub(crate) struct ResourceGroup {
    pub name: String,
    pub subscription: String,
    pub location: String,
}

/// Tenant, subscriptions and resource groups; immutable.
#[derive(Debug, Clone)]
pub(crate) struct Topology {
    pub tenant_id: String,
    pub tenant_name: String,
    pub subscriptions: Vec<Subscription>,
    pub groups: Vec<ResourceGroup>,
}

impl Topology {
    pub fn subscription(&self, id: &str) -> Option<&Subscription> {
        self.subscriptions
            .iter()
            .find(|s| s.id.eq_ignore_ascii_case(id))
    }
    pub fn group(&self, sub: &str, name: &str) -> Option<&ResourceGroup> {
        self.groups
            .iter()
            .find(|g| g.subscription.eq_ignore_ascii_case(sub) && g.name.eq_ignore_ascii_case(name))
    }
}

/// A storage key as the account holds it.
#[derive(Debug, Clone)]
pub(crate) struct AccountKey {
    pub value: String,
    pub created: DateTime<Utc>,
    /// Before this instant the data plane still refuses the value (propagation).
    pub accepted_from: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub(crate) struct StorageAccount {
    pub name: String,
    pub id: String,
    pub subscription: String,
    pub group: String,
    pub location: String,
    pub sku: String,
    pub kind: String,
    pub created: DateTime<Utc>,
    pub allow_shared_key_access: bool,
    pub key_expiration_days: Option<u32>,
    pub tags: Map<String, Value>,
    /// key1, key2.
    pub keys: [AccountKey; 2],
    pub containers: Vec<String>,
}

impl StorageAccount {
    /// Index of a key name (`key1`/`key2`, case-insensitive).
    pub fn key_index(name: &str) -> Option<usize> {
        if name.eq_ignore_ascii_case("key1") {
            Some(0)
        } else if name.eq_ignore_ascii_case("key2") {
            Some(1)
        } else {
            None
        }
    }

    /// The index of the newest key by creation time (key1 on a tie).
    pub fn newest_key(&self) -> usize {
        if self.keys[1].created > self.keys[0].created {
            1
        } else {
            0
        }
    }

    /// Whether the data plane accepts `value` as one of the keys at `now`.
    pub fn accepts_key(&self, value: &str, now: DateTime<Utc>) -> bool {
        self.keys
            .iter()
            .any(|k| k.value == value && k.accepted_from <= now)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct SecretVersion {
    pub version: String,
    pub value: String,
    pub enabled: bool,
    pub content_type: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub created: i64,
    pub updated: i64,
    pub nbf: Option<i64>,
    pub exp: Option<i64>,
}

#[derive(Debug, Clone)]
pub(crate) struct VaultSecret {
    /// The name as first set (Key Vault names are case-insensitive).
    pub name: String,
    /// Oldest first; the last one is the current version.
    pub versions: Vec<SecretVersion>,
}

#[derive(Debug, Clone)]
pub(crate) struct Vault {
    pub name: String,
    pub id: String,
    pub location: String,
    /// Lower-case name → secret.
    pub secrets: BTreeMap<String, VaultSecret>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DatastoreSecret {
    AccountKey(String),
    Sas(String),
    None,
}

#[derive(Debug, Clone)]
pub(crate) struct Datastore {
    pub name: String,
    /// The resource's `properties` as last written, with `credentials.secrets`
    /// reduced to `{secretsType}` (the secret is write-only).
    pub properties: Map<String, Value>,
    pub secret: DatastoreSecret,
    pub created: DateTime<Utc>,
    pub created_by: String,
    pub modified: DateTime<Utc>,
    pub modified_by: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Workspace {
    pub name: String,
    pub id: String,
    pub subscription: String,
    pub group: String,
    pub location: String,
    pub workspace_id: String,
    pub storage_account: String,
    pub storage_account_id: String,
    pub key_vault_id: Option<String>,
    /// The storage key the workspace has cached.
    pub user_storage_key: String,
    /// Lower-case name → datastore; kept in creation order by `order`.
    pub datastores: BTreeMap<String, Datastore>,
    pub order: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) enum LroOutcome {
    /// Sets the workspace's cached key to this value at completion.
    Succeeds {
        key: Option<String>,
    },
    Fails {
        code: String,
        status: u16,
    },
}

/// A workspace `resyncKeys` in flight or finished.
#[derive(Debug, Clone)]
pub(crate) struct Lro {
    pub workspace: String,
    pub subscription: String,
    pub due: DateTime<Utc>,
    pub outcome: LroOutcome,
    pub settled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScopeValue {
    String(String),
    /// Base64, as sent in `bytes_value`.
    Bytes(String),
}

#[derive(Debug, Clone)]
pub(crate) struct ScopeSecret {
    pub value: ScopeValue,
    pub last_updated_ms: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct SecretScope {
    pub name: String,
    pub backend: ScopeBackend,
    /// AZURE_KEYVAULT: the vault name (lower case).
    pub vault: Option<String>,
    pub acl: BTreeMap<String, ScopePermission>,
    pub secrets: BTreeMap<String, ScopeSecret>,
}

#[derive(Debug, Clone)]
pub(crate) struct DatabricksWorkspace {
    pub name: String,
    pub id: String,
    pub users: Vec<String>,
    pub scopes: Vec<SecretScope>,
}

/// Everything that changes while the twin runs.
#[derive(Debug)]
pub(crate) struct Core {
    pub settings: Settings,
    pub accounts: BTreeMap<String, StorageAccount>,
    pub vaults: BTreeMap<String, Vault>,
    pub workspaces: BTreeMap<String, Workspace>,
    pub databricks: BTreeMap<String, DatabricksWorkspace>,
    /// Lower-case site name → App Service site.
    pub web_apps: BTreeMap<String, web::WebApp>,
    /// Lower-case factory name → Data Factory.
    pub factories: BTreeMap<String, datafactory::Factory>,
    /// The twin's base URL (Key Vault references name vaults by URL).
    pub base_url: String,
    pub lros: HashMap<String, Lro>,
    pub throttles: Throttles,
    /// Log Analytics workspaces, diagnostic settings, resource logs, simulated clients.
    pub monitor: crate::monitor::Monitor,
}

impl Core {
    /// Completes every long-running operation that is due (a succeeded resync sets
    /// the workspace's cached key) and refetches Key Vault references App Service has
    /// cached for 24 hours.
    pub fn settle(&mut self, now: DateTime<Utc>) {
        for app in self.web_apps.values_mut() {
            app.production.refresh(now, &self.vaults, &self.base_url);
            for slot in app.slots.values_mut() {
                slot.config.refresh(now, &self.vaults, &self.base_url);
            }
        }
        for lro in self.lros.values_mut() {
            if lro.settled || lro.due > now {
                continue;
            }
            lro.settled = true;
            if let LroOutcome::Succeeds { key: Some(key) } = &lro.outcome
                && let Some(ws) = self.workspaces.get_mut(&lro.workspace)
            {
                ws.user_storage_key = key.clone();
            }
        }
    }

    /// Regenerates `key1`/`key2` of an account: a new random value, a new creation
    /// time, accepted on the data plane after the propagation delay.
    pub fn regenerate(&mut self, account: &str, index: usize, now: DateTime<Utc>) -> bool {
        let delay = crate::clock::secs(self.settings.propagation_delay_secs);
        match self
            .accounts
            .get_mut(account)
            .and_then(|a| a.keys.get_mut(index))
        {
            Some(k) => {
                *k = AccountKey {
                    value: crate::entropy::storage_key(),
                    created: now,
                    accepted_from: now + delay,
                };
                true
            }
            None => false,
        }
    }
}
