//! One discovery run: the accounts and their keys' fingerprints, where to look, the
//! shared lists (through the [`DiscoveryCache`]), a bound on calls in flight and a
//! count of the calls made. The consumer kinds read Azure only through it.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use url::Url;

use super::cache::{DiscoveryCache, ReadError};
use crate::azure::datastore::Datastore;
use crate::azure::inventory::VaultSummary;
use crate::azure::keyvault::SecretItem;
use crate::azure::ml::Workspace;
use crate::azure::web::{Collection, SiteRef};
use crate::azure::{self, Azure};
use crate::config::DiscoveryConfig;
use crate::consumer::app_service::discover::SeenSetting;
use crate::consumer::{ConsumerId, SecretFormat};
use crate::key::KeyName;
use crate::resource_id::ResourceId;
use crate::secret::{Fingerprint, Fingerprinter, StorageKey};

/// An account being discovered.
#[derive(Clone, Debug)]
pub(crate) struct Account {
    pub id: ResourceId,
    /// Fingerprints of key1 and key2.
    pub keys: [Fingerprint; 2],
}

/// A consumer whose value cannot be read back, as keyflip last wrote it (the
/// journal's last successful bind).
#[derive(Clone, Debug)]
pub(crate) struct Written {
    pub consumer: ConsumerId,
    /// Index into [`Scan::accounts`].
    pub account: usize,
    pub key: KeyName,
    pub fingerprint: Fingerprint,
    pub at: DateTime<Utc>,
    /// The etag Azure gave the write, for a kind that has one (Data Factory).
    pub mark: Option<String>,
}

/// A Key Vault secret found holding an account's key: other kinds that read a key
/// through Key Vault (a Key Vault-backed secret scope, an App Service Key Vault
/// reference, a Data Factory `AzureKeyVaultSecret`) are covered by it.
#[derive(Clone, Debug)]
pub(crate) struct VaultSecret {
    pub account: usize,
    /// The vault's URL, without a trailing slash.
    pub vault: Url,
    pub vault_id: ResourceId,
    pub secret: String,
    /// How it is named in findings: `Key Vault secret kv-datasci/x`.
    pub subject: String,
}

/// Calls in flight at most, per scan: enough to hide latency, few enough that a scan
/// of a large subscription never bursts past ARM's or Key Vault's limits on its own
/// (the facade's budgets, when the daemon set them, space the calls further).
pub const CONCURRENCY: usize = 8;

pub(crate) struct Scan<'a> {
    pub azure: &'a Azure,
    fingerprinter: &'a Fingerprinter,
    pub accounts: Vec<Account>,
    pub subscriptions: Vec<String>,
    /// Where the kinds without an inventory API look (`[discovery]`).
    pub sources: DiscoveryConfig,
    pub written: Vec<Written>,
    /// Read which key each consumer holds (`plan discover`, `doctor`). Without it (a
    /// rotation's unlisted-consumer check, which only needs to know what the plan
    /// leaves out) kinds skip the reads that only say which key: an ML workspace's
    /// `listKeys` and a datastore's `listSecrets`, both ARM writes.
    pub detail: bool,
    /// Filled by the Key Vault kind, read by the kinds that go through Key Vault.
    vault_secrets: Mutex<Vec<VaultSecret>>,
    cache: &'a DiscoveryCache,
    limit: Semaphore,
    calls: AtomicU64,
}

impl<'a> Scan<'a> {
    pub(crate) fn new(
        azure: &'a Azure,
        fingerprinter: &'a Fingerprinter,
        cache: &'a DiscoveryCache,
        accounts: Vec<Account>,
        subscriptions: Vec<String>,
        sources: DiscoveryConfig,
        written: Vec<Written>,
    ) -> Scan<'a> {
        Scan {
            azure,
            fingerprinter,
            accounts,
            subscriptions,
            sources,
            written,
            detail: true,
            vault_secrets: Mutex::new(Vec::new()),
            cache,
            limit: Semaphore::new(CONCURRENCY),
            calls: AtomicU64::new(0),
        }
    }

    /// Calls sent so far (cached lists not counted).
    pub(crate) fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    pub(crate) fn fingerprint(&self, value: &StorageKey) -> Fingerprint {
        self.fingerprinter.fingerprint(value)
    }

    /// The account and key a fingerprint belongs to.
    pub(crate) fn owner(&self, fingerprint: Fingerprint) -> Option<(usize, KeyName)> {
        self.accounts.iter().enumerate().find_map(|(i, a)| {
            KeyName::BOTH
                .into_iter()
                .find(|k| a.keys[usize::from(*k == KeyName::Key2)] == fingerprint)
                .map(|k| (i, k))
        })
    }

    /// The scanned account whose id this is (case-insensitive), if any.
    pub(crate) fn account_index(&self, id: &ResourceId) -> Option<usize> {
        self.accounts
            .iter()
            .position(|a| a.id.as_str().eq_ignore_ascii_case(id.as_str()))
    }

    pub(crate) fn found_vault_secret(&self, found: VaultSecret) {
        self.vault_secrets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(found);
    }

    /// The Key Vault secret found holding an account's key, by vault (its URL, or its
    /// name) and secret name, both compared case-insensitively.
    pub(crate) fn vault_secret(&self, vault: &str, secret: &str) -> Option<VaultSecret> {
        let wanted = vault.trim_end_matches('/').to_ascii_lowercase();
        self.vault_secrets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|v| {
                v.secret.eq_ignore_ascii_case(secret)
                    && (v
                        .vault
                        .as_str()
                        .trim_end_matches('/')
                        .eq_ignore_ascii_case(&wanted)
                        || v.vault_id.name().eq_ignore_ascii_case(&wanted))
            })
            .cloned()
    }

    /// Runs one Azure call within the scan's bound, and counts it.
    pub(crate) async fn call<T>(&self, work: impl Future<Output = T>) -> T {
        // The semaphore is never closed, so acquiring only waits.
        let _permit = self.limit.acquire().await;
        self.calls.fetch_add(1, Ordering::Relaxed);
        work.await
    }

    /// One kind of resource (`what`: "Data Factories") in every subscription the
    /// principal sees, listed concurrently: the resources, and for each subscription
    /// whose list was refused or failed a finding in `section` that says so.
    pub(crate) async fn in_every_subscription<'s, T, F, Fut>(
        &'s self,
        section: &'static str,
        what: &str,
        list: F,
    ) -> (Vec<T>, Vec<(Option<usize>, super::Finding)>)
    where
        T: Clone,
        F: Fn(&'s str) -> Fut,
        Fut: Future<Output = Result<Arc<Vec<T>>, ReadError>>,
    {
        let lists =
            futures::future::join_all(self.subscriptions.iter().map(|s| list(s.as_str()))).await;
        let mut items = Vec::new();
        let mut out = Vec::new();
        for (sub, list) in self.subscriptions.iter().zip(lists) {
            match list {
                Ok(list) => items.extend(list.iter().cloned()),
                Err(e) => out.push((
                    None,
                    super::Finding::cannot(
                        section,
                        format!("{what} of subscription {sub}"),
                        None,
                        super::READ_FAILED,
                        format!("cannot list them: {}", e.text),
                    ),
                )),
            }
        }
        (items, out)
    }

    pub(crate) async fn workspaces(
        &self,
        subscription: &str,
    ) -> Result<Arc<Vec<Workspace>>, ReadError> {
        self.cache
            .list(&self.cache.workspaces, subscription, || async {
                self.call(self.azure.ml_workspaces_in(subscription))
                    .await
                    .map(Arc::new)
                    .map_err(|e| ReadError::from_azure(&e))
            })
            .await
    }

    pub(crate) async fn vaults(
        &self,
        subscription: &str,
    ) -> Result<Arc<Vec<VaultSummary>>, ReadError> {
        self.cache
            .list(&self.cache.vaults, subscription, || async {
                self.call(self.azure.key_vaults_in(subscription))
                    .await
                    .map(Arc::new)
                    .map_err(|e| ReadError::from_azure(&e))
            })
            .await
    }

    pub(crate) async fn secrets(&self, vault: &Url) -> Result<Arc<Vec<SecretItem>>, ReadError> {
        self.cache
            .list(&self.cache.secrets, vault.as_str(), || async {
                self.call(self.azure.list_secrets(vault))
                    .await
                    .map(Arc::new)
                    .map_err(|e| ReadError::from_azure(&e))
            })
            .await
    }

    pub(crate) async fn datastores(
        &self,
        workspace: &ResourceId,
    ) -> Result<Arc<Vec<Datastore>>, ReadError> {
        self.cache
            .list(&self.cache.datastores, workspace.as_str(), || async {
                self.call(self.azure.ml_datastores(workspace))
                    .await
                    .map(Arc::new)
                    .map_err(|e| ReadError::from_azure(&e))
            })
            .await
    }

    pub(crate) async fn sites(
        &self,
        subscription: &str,
    ) -> Result<Arc<Vec<ResourceId>>, ReadError> {
        self.cache
            .list(&self.cache.sites, subscription, || async {
                self.call(self.azure.web_sites_in(subscription))
                    .await
                    .map(Arc::new)
                    .map_err(|e| ReadError::from_azure(&e))
            })
            .await
    }

    pub(crate) async fn factories(
        &self,
        subscription: &str,
    ) -> Result<Arc<Vec<ResourceId>>, ReadError> {
        self.cache
            .list(&self.cache.factories, subscription, || async {
                self.call(self.azure.data_factories_in(subscription))
                    .await
                    .map(Arc::new)
                    .map_err(|e| ReadError::from_azure(&e))
            })
            .await
    }

    pub(crate) async fn slots(&self, site: &ResourceId) -> Result<Arc<Vec<String>>, ReadError> {
        self.cache
            .list(&self.cache.slots, site.as_str(), || async {
                self.call(self.azure.web_slots(site))
                    .await
                    .map(Arc::new)
                    .map_err(|e| ReadError::from_azure(&e))
            })
            .await
    }

    /// A site's (or slot's) settings collection as discovery needs it: names and
    /// fingerprints, the values dropped as they are read.
    pub(crate) async fn settings(
        &self,
        place: &SiteRef,
        collection: Collection,
    ) -> Result<Arc<Vec<(String, SeenSetting)>>, ReadError> {
        let key = format!("{}|{}", place.id(), collection.segment());
        self.cache
            .list(&self.cache.settings, &key, || async {
                self.call(self.azure.web_settings(place, collection))
                    .await
                    .map(|settings| {
                        Arc::new(
                            settings
                                .0
                                .iter()
                                .filter_map(|(name, setting)| {
                                    SeenSetting::of(self, &setting.value)
                                        .map(|seen| (name.clone(), seen))
                                })
                                .collect(),
                        )
                    })
                    .map_err(|e| ReadError::from_azure(&e))
            })
            .await
    }

    /// The fingerprint of the account key in a secret's current value: cached while
    /// the version is the same, else read (the value is dropped here).
    pub(crate) async fn secret_fingerprint(
        &self,
        vault: &Url,
        item: &SecretItem,
    ) -> Result<Option<(Fingerprint, SecretFormat)>, azure::Error> {
        if let Some(found) = self
            .cache
            .fingerprint(vault.as_str(), &item.name, item.updated)
        {
            return Ok(Some(found));
        }
        let secret = self
            .call(self.azure.get_secret(vault, &item.name, None))
            .await?;
        let format = if secret.value.expose().contains("AccountKey=") {
            SecretFormat::ConnectionString
        } else {
            SecretFormat::RawKey
        };
        let fp = crate::consumer::account_key(&secret.value).map(|k| self.fingerprint(&k));
        drop(secret);
        if let Some(fp) = fp {
            self.cache
                .remember(vault.as_str(), &item.name, item.updated, fp, format);
        }
        Ok(fp.map(|fp| (fp, format)))
    }
}
