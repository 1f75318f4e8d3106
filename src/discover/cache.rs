//! What discovery reads that several accounts (and, in the daemon, several rotations)
//! share: the lists of a subscription (ML workspaces, key vaults), each vault's list
//! of secrets, each workspace's datastores, and the fingerprint of each secret's
//! current value. Lists are kept for a time to live; a fingerprint is kept for as long
//! as the secret's current version is the one it was taken from (its `updated` time),
//! so a warm cache reads no secret value again until someone writes a new version.
//!
//! App Service sites, slots and settings and Data Factories are kept for the same time
//! to live (a setting as its fingerprint and the account its connection string names).
//!
//! Promises: the cache holds ids, attributes and keyed fingerprints, never a value;
//! concurrent askers of one list share one request; a failed read is not kept (the
//! next scan asks again); its size is bounded by what the subscriptions hold.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::OnceCell;

use crate::azure::datastore::Datastore;
use crate::azure::inventory::VaultSummary;
use crate::azure::keyvault::SecretItem;
use crate::azure::ml::Workspace;
use crate::clock::Clock;
use crate::consumer::SecretFormat;
use crate::consumer::app_service::discover::SeenSetting;
use crate::resource_id::ResourceId;
use crate::secret::Fingerprint;

/// Why a read gave nothing: its text, and the permission a 403 names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ReadError {
    pub text: String,
    /// The refused action, when Azure refused with 403.
    pub denied: Option<String>,
}

impl ReadError {
    pub(crate) fn from_azure(e: &crate::azure::Error) -> ReadError {
        ReadError {
            text: e.to_string(),
            denied: e.denial().map(|d| {
                d.action
                    .as_ref()
                    .map_or_else(String::new, |a| a.to_string())
            }),
        }
    }
}

type Loaded<T> = Result<Arc<T>, ReadError>;

struct Slot<T> {
    at: DateTime<Utc>,
    cell: Arc<OnceCell<Loaded<T>>>,
}

/// One kind of list, by key.
struct Lists<T> {
    slots: Mutex<HashMap<String, Slot<T>>>,
}

impl<T> Default for Lists<T> {
    fn default() -> Self {
        Lists {
            slots: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> Lists<T> {
    /// The list under `key`, loaded by `load` unless a fresh one is cached.
    async fn get<F, Fut>(&self, key: &str, now: DateTime<Utc>, ttl: TimeDelta, load: F) -> Loaded<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Loaded<T>>,
    {
        let cell = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            let key = key.to_ascii_lowercase();
            let stale = slots
                .get(&key)
                .is_none_or(|s| s.at + ttl <= now || matches!(s.cell.get(), Some(Err(_))));
            if stale {
                slots.insert(
                    key.clone(),
                    Slot {
                        at: now,
                        cell: Arc::new(OnceCell::new()),
                    },
                );
            }
            slots
                .get(&key)
                .map(|s| s.cell.clone())
                .unwrap_or_else(|| Arc::new(OnceCell::new()))
        };
        cell.get_or_init(load).await.clone()
    }
}

/// Discovery's shared reads; one per process (the engine owns it), so every rotation
/// and `doctor` run of a daemon shares it.
pub struct DiscoveryCache {
    clock: Arc<dyn Clock>,
    ttl: TimeDelta,
    pub(crate) workspaces: ListsOf<Vec<Workspace>>,
    pub(crate) vaults: ListsOf<Vec<VaultSummary>>,
    pub(crate) secrets: ListsOf<Vec<SecretItem>>,
    pub(crate) datastores: ListsOf<Vec<Datastore>>,
    /// App Service sites and Data Factories by subscription, a site's slots.
    pub(crate) sites: ListsOf<Vec<ResourceId>>,
    pub(crate) factories: ListsOf<Vec<ResourceId>>,
    pub(crate) slots: ListsOf<Vec<String>>,
    /// A site's (or slot's) settings collection, by `{id}|{collection}`: each
    /// setting's name and what it holds by fingerprint, never its value. Listing one
    /// is a POST, an ARM write: kept, the daemon's rotations spend none on it.
    pub(crate) settings: ListsOf<Vec<(String, SeenSetting)>>,
    /// (vault URL, secret name) → the current version's `updated` time and the
    /// fingerprint of its value.
    fingerprints: Mutex<HashMap<(String, String), SeenValue>>,
}

/// A secret's current version as last read: its `updated` time, the fingerprint of
/// its value and the value's format.
type SeenValue = (DateTime<Utc>, Fingerprint, SecretFormat);

/// A [`Lists`] the scan reaches through the cache's clock and time to live.
pub(crate) struct ListsOf<T>(Lists<T>);

impl<T> Default for ListsOf<T> {
    fn default() -> Self {
        ListsOf(Lists::default())
    }
}

impl std::fmt::Debug for DiscoveryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiscoveryCache")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// How long lists are kept: long enough that a fleet's rotations share them, short
/// enough that a consumer added this morning is seen by this afternoon's rotation.
pub const LIST_TTL: TimeDelta = TimeDelta::minutes(15);

impl DiscoveryCache {
    pub fn new(clock: Arc<dyn Clock>, ttl: TimeDelta) -> DiscoveryCache {
        DiscoveryCache {
            clock,
            ttl,
            workspaces: ListsOf::default(),
            vaults: ListsOf::default(),
            secrets: ListsOf::default(),
            datastores: ListsOf::default(),
            sites: ListsOf::default(),
            factories: ListsOf::default(),
            slots: ListsOf::default(),
            settings: ListsOf::default(),
            fingerprints: Mutex::new(HashMap::new()),
        }
    }

    /// A cache that keeps nothing between scans (a one-off command).
    pub fn one_off(clock: Arc<dyn Clock>) -> DiscoveryCache {
        DiscoveryCache::new(clock, TimeDelta::zero())
    }

    pub(crate) async fn list<T, F, Fut>(&self, lists: &ListsOf<T>, key: &str, load: F) -> Loaded<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Loaded<T>>,
    {
        // A zero time to live still shares one read among the askers of one scan: the
        // slot is replaced only once its read is older than the scan's start.
        let ttl = if self.ttl.is_zero() {
            TimeDelta::seconds(60)
        } else {
            self.ttl
        };
        lists.0.get(key, self.clock.now(), ttl, load).await
    }

    pub(crate) fn fingerprint(
        &self,
        vault: &str,
        name: &str,
        updated: Option<DateTime<Utc>>,
    ) -> Option<(Fingerprint, SecretFormat)> {
        // Without an update time, a version cannot be told from the next: read again.
        let updated = updated?;
        self.fingerprints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(vault.to_ascii_lowercase(), name.to_ascii_lowercase()))
            .filter(|(at, _, _)| *at == updated)
            .map(|(_, fp, format)| (*fp, *format))
    }

    pub(crate) fn remember(
        &self,
        vault: &str,
        name: &str,
        updated: Option<DateTime<Utc>>,
        fingerprint: Fingerprint,
        format: SecretFormat,
    ) {
        let Some(updated) = updated else { return };
        self.fingerprints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                (vault.to_ascii_lowercase(), name.to_ascii_lowercase()),
                (updated, fingerprint, format),
            );
    }
}
