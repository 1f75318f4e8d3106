//! App Service and Azure Functions settings through ARM (`Microsoft.Web/sites`,
//! api-version 2024-11-01; spec `specification/web/resource-manager/Microsoft.Web/AppService`
//! in Azure/azure-rest-api-specs): list a site's or slot's app settings or connection
//! strings (`POST .../config/{appsettings|connectionstrings}/list`), replace one
//! setting in them, and read Key Vault references.
//!
//! A settings collection is written only whole (`PUT .../config/appsettings` replaces
//! every setting), and Azure offers no concurrency control on it: the spec declares no
//! `If-Match` for `WebApps_UpdateApplicationSettings` and `_UpdateConnectionStrings`,
//! and the dictionaries carry no etag. [`Azure::update_web_setting`] is therefore a
//! read-modify-write that detects what it can: it lists, lists again right before the
//! PUT and starts over when the two differ (another writer is active), PUTs the second
//! listing with only its one setting changed, then lists once more and starts over when
//! its own value did not stay (a writer that read before the PUT overwrote it). What
//! no client can detect is a write that lands between the second listing and the PUT:
//! the PUT overwrites it and leaves no trace. Writes of one collection from this
//! process are serialized, so keyflip never races itself.
//!
//! A rotation splits that sequence over its waves ([`Azure::write_web_setting`]): the
//! first listing is made while the other consumers are being bound
//! ([`Azure::web_settings_before_write`]; stale, and not used, once this process PUT
//! the collection since), the second right before the PUT as always, and the listing
//! after the PUT is the consumer's verification (which fails the rotation, and rolls
//! it back, when keyflip's value did not stay) instead of a round trip of its own. Every PUT restarts the site
//! or slot ("Any configuration change to the app causes an app restart", Microsoft
//! Learn, "Use Key Vault references as app settings"), so it is sent once, never
//! retried blindly.
//!
//! Setting values are secrets (connection strings, API keys of other services): they
//! are held as [`StorageKey`]s (zeroized, redacted), never logged, and only names
//! appear in errors.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use azure_core::http::Method;
use serde_json::{Map, Value};

use super::arm::Body;
use super::http::{Answer, Operation, json};
use super::roles::actions;
use super::{Azure, Error};
use crate::resource_id::ResourceId;
use crate::secret::StorageKey;

pub(crate) const API: &str = "2024-11-01";

/// How many times a settings write starts over after detecting another writer.
const ATTEMPTS: u32 = 3;
/// The longest `Retry-After` a throttled settings write waits before starting over.
const THROTTLED_WAIT_CAP: std::time::Duration = std::time::Duration::from_secs(60);

/// A site, or one of its deployment slots.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SiteRef {
    pub site: ResourceId,
    pub slot: Option<String>,
}

impl SiteRef {
    pub fn new(site: &ResourceId, slot: Option<&str>) -> SiteRef {
        SiteRef {
            site: site.clone(),
            slot: slot.map(str::to_owned),
        }
    }

    /// The ARM id: `{site}` or `{site}/slots/{slot}`.
    pub fn id(&self) -> String {
        match &self.slot {
            Some(slot) => format!("{}/slots/{slot}", self.site),
            None => self.site.to_string(),
        }
    }

    /// `func-x` or `func-x/staging`.
    pub fn short(&self) -> String {
        match &self.slot {
            Some(slot) => format!("{}/{slot}", self.site.name()),
            None => self.site.name().to_owned(),
        }
    }
}

impl fmt::Display for SiteRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id())
    }
}

/// Which of a site's settings collections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Collection {
    AppSettings,
    ConnectionStrings,
}

impl Collection {
    /// The segment in `.../config/{segment}`.
    pub(crate) fn segment(self) -> &'static str {
        match self {
            Collection::AppSettings => "appsettings",
            Collection::ConnectionStrings => "connectionstrings",
        }
    }

    /// `app setting` or `connection string`.
    pub(crate) fn noun(self) -> &'static str {
        match self {
            Collection::AppSettings => "app setting",
            Collection::ConnectionStrings => "connection string",
        }
    }

    fn operations(self, slot: bool) -> (&'static Operation, &'static Operation) {
        match (self, slot) {
            (Collection::AppSettings, false) => (&LIST_APP, &PUT_APP),
            (Collection::AppSettings, true) => (&LIST_APP_SLOT, &PUT_APP_SLOT),
            (Collection::ConnectionStrings, false) => (&LIST_CONN, &PUT_CONN),
            (Collection::ConnectionStrings, true) => (&LIST_CONN_SLOT, &PUT_CONN_SLOT),
        }
    }
}

/// One setting: its value and, for a connection string, its type (`Custom`, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    pub value: StorageKey,
    pub conn_type: Option<String>,
}

/// A settings collection as listed, by name. Debug shows names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Settings(pub BTreeMap<String, Setting>);

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Settings {
    /// The setting called `name`: that exact name, else the one name that matches
    /// ignoring case (App Service on Windows treats names case-insensitively).
    pub fn find(&self, name: &str) -> Option<(&str, &Setting)> {
        if let Some((k, v)) = self.0.get_key_value(name) {
            return Some((k, v));
        }
        let mut matches = self.0.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name));
        match (matches.next(), matches.next()) {
            (Some((k, v)), None) => Some((k, v)),
            _ => None,
        }
    }

    /// Names whose value (or type) differs between `self` and `other`, or that only
    /// one of them has, leaving out `except`.
    pub fn changed(&self, other: &Settings, except: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .0
            .keys()
            .chain(other.0.keys())
            .filter(|k| k.as_str() != except && self.0.get(*k) != other.0.get(*k))
            .cloned()
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

/// A Key Vault reference, the value of a setting that App Service resolves from Key
/// Vault (`@Microsoft.KeyVault(SecretUri=…)` or `@Microsoft.KeyVault(VaultName=…;
/// SecretName=…[;SecretVersion=…])`, Microsoft Learn, "Use Key Vault references as app
/// settings").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyVaultReference {
    /// The vault URL (from `SecretUri`, without a trailing slash) or its name
    /// (`VaultName`).
    pub vault: String,
    pub secret: String,
    /// A pinned version: the reference never follows a new version.
    pub version: Option<String>,
}

impl KeyVaultReference {
    /// The reference in `value`, or `None` when it is not one.
    pub fn parse(value: &str) -> Option<KeyVaultReference> {
        let text = value.trim();
        let prefix = "@Microsoft.KeyVault(";
        let head = text.get(..prefix.len())?;
        if !head.eq_ignore_ascii_case(prefix) || !text.ends_with(')') {
            return None;
        }
        let inner = &text[prefix.len()..text.len() - 1];
        let mut parts = BTreeMap::new();
        for part in inner.split(';').filter(|p| !p.trim().is_empty()) {
            let (k, v) = part.split_once('=')?;
            parts.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
        if let Some(uri) = parts.get("secreturi") {
            let (vault, rest) = uri.split_once("/secrets/")?;
            let mut segments = rest.trim_end_matches('/').splitn(2, '/');
            let secret = segments.next().filter(|s| !s.is_empty())?.to_owned();
            let version = segments.next().filter(|v| !v.is_empty()).map(str::to_owned);
            return Some(KeyVaultReference {
                vault: vault.trim_end_matches('/').to_owned(),
                secret,
                version,
            });
        }
        Some(KeyVaultReference {
            vault: parts.get("vaultname")?.clone(),
            secret: parts.get("secretname")?.clone(),
            version: parts.get("secretversion").cloned(),
        })
    }
}

impl fmt::Display for KeyVaultReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/secrets/{}", self.vault, self.secret)?;
        if let Some(v) = &self.version {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// What [`Azure::update_web_setting`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettingWritten {
    /// The PUT sent, or `false` when the setting held the value already.
    pub written: bool,
    /// Attempts made (1 when nobody else wrote meanwhile).
    pub attempts: u32,
    /// Settings another writer changed right after keyflip's PUT, with keyflip's value
    /// kept (so that writer had read it).
    pub(crate) changed_after: Vec<String>,
    /// What was PUT, when the caller checks afterwards that it stayed
    /// ([`Azure::write_web_setting`] without its own check).
    pub(crate) put: Option<PutSettings>,
}

/// A collection as keyflip PUT it: every setting, and the name of the one it changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PutSettings {
    pub name: String,
    pub settings: Settings,
}

impl PutSettings {
    /// The value keyflip wrote.
    pub(crate) fn value(&self) -> Option<&StorageKey> {
        self.settings.0.get(&self.name).map(|s| &s.value)
    }

    /// Whether `listed` still holds keyflip's value exactly, and which other settings
    /// changed since (whoever changed them kept keyflip's value, so read after it).
    pub(crate) fn stayed(&self, listed: &Settings) -> (bool, Vec<String>) {
        let stayed = self.value().is_some_and(|written| {
            listed
                .0
                .get(&self.name)
                .is_some_and(|s| &s.value == written)
        });
        (stayed, listed.changed(&self.settings, &self.name))
    }
}

/// A collection listed before a write, with how many PUTs of it this process had sent
/// then ([`Azure::web_settings_before_write`]).
#[derive(Clone, Debug)]
pub(crate) struct Listed {
    settings: Settings,
    puts: u64,
}

static LIST_APP: Operation = Operation::read("web.appSettings.list", actions::WEB_CONFIG_LIST);
static LIST_APP_SLOT: Operation =
    Operation::read("web.appSettings.list", actions::WEB_SLOT_CONFIG_LIST);
static LIST_CONN: Operation =
    Operation::read("web.connectionStrings.list", actions::WEB_CONFIG_LIST);
static LIST_CONN_SLOT: Operation =
    Operation::read("web.connectionStrings.list", actions::WEB_SLOT_CONFIG_LIST);
/// A PUT replaces the whole collection and restarts the app: sent once, never
/// retried blindly (a retry could overwrite a write that came in between).
const fn put(name: &'static str, action: super::roles::Action) -> Operation {
    Operation {
        name,
        action: Some(action),
        idempotent: false,
        retry_on: &[],
    }
}
static PUT_APP: Operation = put("web.appSettings.put", actions::WEB_CONFIG_WRITE);
static PUT_APP_SLOT: Operation = put("web.appSettings.put", actions::WEB_SLOT_CONFIG_WRITE);
static PUT_CONN: Operation = put("web.connectionStrings.put", actions::WEB_CONFIG_WRITE);
static PUT_CONN_SLOT: Operation = put("web.connectionStrings.put", actions::WEB_SLOT_CONFIG_WRITE);

fn check_type(site: &ResourceId) -> Result<(), Error> {
    if site.is_type("Microsoft.Web/sites") {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{site} is a {}, not an App Service site (Microsoft.Web/sites)",
            site.resource_type()
        )))
    }
}

fn bad(answer: &Answer, detail: String) -> Error {
    Error::BadResponse {
        call: answer.call.clone().into(),
        status: answer.status,
        detail,
    }
}

/// The `properties` of a settings dictionary.
fn parse(answer: &Answer, collection: Collection) -> Result<Settings, Error> {
    let body: Value = json(answer, "a settings dictionary")?;
    let props = match body.get("properties") {
        Some(Value::Object(props)) => props,
        None | Some(Value::Null) => return Ok(Settings::default()),
        Some(_) => return Err(bad(answer, "properties is not an object".into())),
    };
    let mut out = BTreeMap::new();
    for (name, v) in props {
        let setting = match (collection, v) {
            (Collection::AppSettings, Value::String(s)) => Setting {
                value: StorageKey::new(s.clone()),
                conn_type: None,
            },
            (Collection::AppSettings, Value::Null) => Setting {
                value: StorageKey::new(String::new()),
                conn_type: None,
            },
            (Collection::ConnectionStrings, Value::Object(o)) => Setting {
                value: StorageKey::new(
                    o.get("value")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                ),
                conn_type: o.get("type").and_then(Value::as_str).map(str::to_owned),
            },
            _ => {
                return Err(bad(
                    answer,
                    format!("setting '{name}' is not a {}", collection.noun()),
                ));
            }
        };
        out.insert(name.clone(), setting);
    }
    Ok(Settings(out))
}

/// The PUT body: every setting, values in full. The caller drops it right after use.
fn body(settings: &Settings, collection: Collection) -> Value {
    let props: Map<String, Value> = settings
        .0
        .iter()
        .map(|(name, s)| {
            let v = match collection {
                Collection::AppSettings => Value::String(s.value.expose().to_owned()),
                Collection::ConnectionStrings => serde_json::json!({
                    "value": s.value.expose(),
                    "type": s.conn_type.as_deref().unwrap_or("Custom"),
                }),
            };
            (name.clone(), v)
        })
        .collect();
    serde_json::json!({ "properties": props })
}

impl Azure {
    /// The app settings or connection strings of a site or slot, values in full.
    pub async fn web_settings(
        &self,
        site: &SiteRef,
        collection: Collection,
    ) -> Result<Settings, Error> {
        check_type(&site.site)?;
        let (list, _) = collection.operations(site.slot.is_some());
        let id = site.id();
        let target = format!("{id}/config/{}", collection.segment());
        let url = self
            .arm
            .url(&id, &format!("/config/{}/list", collection.segment()), API)?;
        let answer = self
            .arm
            .call(list, &target, Method::Post, &url, Body::None)
            .await?;
        parse(&answer, collection)
    }

    /// Replaces the whole collection with `settings` (one PUT, which restarts the site
    /// or slot). Returns what Azure answered.
    pub async fn put_web_settings(
        &self,
        site: &SiteRef,
        collection: Collection,
        settings: &Settings,
    ) -> Result<Settings, Error> {
        check_type(&site.site)?;
        let (_, put) = collection.operations(site.slot.is_some());
        let id = site.id();
        let target = format!("{id}/config/{}", collection.segment());
        let url = self
            .arm
            .url(&id, &format!("/config/{}", collection.segment()), API)?;
        let body = body(settings, collection);
        let answer = self
            .arm
            .call(put, &target, Method::Put, &url, Body::Json(&body))
            .await;
        drop(body); // holds every setting's value
        let answer = answer?;
        tracing::info!(operation = put.name, target = %target, "settings replaced (the app restarts)");
        parse(&answer, collection)
    }

    /// The first listing of a write to come (the one the listing right before the PUT
    /// is compared with), made ahead of it; `None` while this process is writing the
    /// collection (it would be stale at once).
    pub(crate) async fn web_settings_before_write(
        &self,
        site: &SiteRef,
        collection: Collection,
    ) -> Result<Option<Listed>, Error> {
        let puts = match self.web_lock(site, collection).try_lock() {
            Ok(puts) => *puts,
            Err(_) => return Ok(None),
        };
        let settings = self.web_settings(site, collection).await?;
        Ok(Some(Listed { settings, puts }))
    }

    /// Sets the one setting `name` of a site or slot to `replace(current value)`,
    /// keeping every other setting as it is, by the read-modify-write the module docs
    /// describe. An absent setting is an error (keyflip changes settings, it does not
    /// add them); so is a collection that keeps changing under keyflip.
    pub async fn update_web_setting(
        &self,
        site: &SiteRef,
        collection: Collection,
        name: &str,
        replace: impl Fn(&StorageKey) -> Result<StorageKey, Error>,
    ) -> Result<SettingWritten, Error> {
        self.write_web_setting(site, collection, name, None, true, replace)
            .await
    }

    /// [`Azure::update_web_setting`], starting from `listed` (a first listing made
    /// ahead, used when this process has not PUT the collection since) and, without
    /// `check_after`, leaving the listing after the PUT to the caller: the answer's
    /// `put` is what it must find.
    pub(crate) async fn write_web_setting(
        &self,
        site: &SiteRef,
        collection: Collection,
        name: &str,
        mut listed: Option<Listed>,
        check_after: bool,
        replace: impl Fn(&StorageKey) -> Result<StorageKey, Error>,
    ) -> Result<SettingWritten, Error> {
        let lock = self.web_lock(site, collection);
        let mut puts = lock.lock().await;
        let what = format!("{} '{name}' of {}", collection.noun(), site.short());
        let mut last_conflict = String::new();
        for attempt in 1..=ATTEMPTS {
            if attempt > 1 {
                self.web_wait(site, collection, self.options.retry.backoff(attempt - 1))
                    .await?;
            }
            let first = match listed.take().filter(|l| l.puts == *puts) {
                Some(listed) => listed.settings,
                None => self.web_settings(site, collection).await?,
            };
            let Some((key, current)) = first.find(name) else {
                return Err(Error::Invalid(format!(
                    "{} has no {} '{name}'; keyflip changes existing settings and does not add them: check the name in the plan",
                    site.short(),
                    collection.noun()
                )));
            };
            let key = key.to_owned();
            let new = replace(&current.value)?;
            if current.value == new {
                return Ok(SettingWritten {
                    written: false,
                    attempts: attempt,
                    changed_after: Vec::new(),
                    put: None,
                });
            }
            let mut desired = first.clone();
            if let Some(s) = desired.0.get_mut(&key) {
                s.value = new.clone();
            }
            // Right before the PUT: anyone who wrote since the first listing is still
            // writing; start over from what they wrote instead of overwriting it.
            let again = self.web_settings(site, collection).await?;
            if again != first {
                last_conflict = format!(
                    "{} changed between two listings a moment apart",
                    again.changed(&first, "").join(", ")
                );
                tracing::warn!(target = %site, setting = name, attempt, changed = %last_conflict, "settings changed while keyflip was about to write; starting over");
                continue;
            }
            drop(again);
            let sent = self.put_web_settings(site, collection, &desired).await;
            if !matches!(sent, Err(Error::Throttled { .. })) {
                // Sent (or perhaps sent): listings from before are stale now.
                *puts += 1;
            }
            match sent {
                Ok(_) if !check_after => {
                    return Ok(SettingWritten {
                        written: true,
                        attempts: attempt,
                        changed_after: Vec::new(),
                        put: Some(PutSettings {
                            name: key,
                            settings: desired,
                        }),
                    });
                }
                Ok(_) => {}
                // A 429 is Azure refusing before doing anything: nothing was written, so
                // start over from a fresh listing once the wait Azure asked for is up
                // (the PUT itself is never resent blindly).
                Err(e @ Error::Throttled { .. }) if attempt < ATTEMPTS => {
                    let wait = e
                        .retry_after()
                        .unwrap_or_else(|| self.options.retry.backoff(attempt))
                        .min(THROTTLED_WAIT_CAP);
                    last_conflict = format!("the PUT was throttled: {e}");
                    tracing::warn!(target = %site, setting = name, attempt, wait_ms = wait.as_millis() as u64, "settings write throttled; starting over after the wait");
                    self.web_wait(site, collection, wait).await?;
                    continue;
                }
                Err(e) => return Err(e),
            }
            let after = self.web_settings(site, collection).await?;
            let stayed = after.0.get(&key).is_some_and(|s| s.value == new);
            if !stayed {
                last_conflict = format!(
                    "another writer replaced the settings right after keyflip's PUT without keyflip's value of '{key}'"
                );
                tracing::warn!(target = %site, setting = name, attempt, "keyflip's value was overwritten right after its write; starting over");
                continue;
            }
            let changed_after = after.changed(&desired, &key);
            if !changed_after.is_empty() {
                // Whoever wrote these kept keyflip's value, so they read after keyflip's
                // PUT: nothing of theirs was lost.
                tracing::warn!(target = %site, setting = name, changed = ?changed_after, "other settings changed right after keyflip's write; keyflip's value stayed");
            }
            return Ok(SettingWritten {
                written: true,
                attempts: attempt,
                changed_after,
                put: None,
            });
        }
        Err(Error::Invalid(format!(
            "{what}: the settings kept changing while keyflip wrote ({ATTEMPTS} attempts; last: {last_conflict}). App Service has no concurrency control on settings, so keyflip stops rather than overwrite another writer (a deployment or a person changing settings?); the collection holds what the last writer wrote. Retry when it is done"
        )))
    }

    /// Waits `wait` between attempts of a settings write, unless keyflip is
    /// interrupted first (a signal ends every wait of an Azure call).
    async fn web_wait(
        &self,
        site: &SiteRef,
        collection: Collection,
        wait: std::time::Duration,
    ) -> Result<(), Error> {
        let (_, put) = collection.operations(site.slot.is_some());
        tokio::select! {
            () = tokio::time::sleep(wait) => Ok(()),
            () = self.interrupt.cancelled() => Err(Error::Interrupted {
                call: Box::new(super::error::Call {
                    operation: put.name,
                    target: site.id().to_string(),
                    request_id: None,
                }),
                sent: false,
            }),
        }
    }

    /// The lock that serializes this process's writes of one collection.
    fn web_lock(&self, site: &SiteRef, collection: Collection) -> Arc<tokio::sync::Mutex<u64>> {
        let key = format!("{}/config/{}", site.id(), collection.segment()).to_ascii_lowercase();
        let mut locks = match self.web_writes.lock() {
            Ok(locks) => locks,
            Err(poisoned) => poisoned.into_inner(),
        };
        locks.entry(key).or_default().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_in_both_documented_forms() {
        let r = KeyVaultReference::parse(
            "@Microsoft.KeyVault(SecretUri=https://kv-datasci.vault.azure.net/secrets/conn/)",
        )
        .unwrap();
        assert_eq!(
            (r.vault.as_str(), r.secret.as_str(), r.version),
            ("https://kv-datasci.vault.azure.net", "conn", None)
        );
        let r = KeyVaultReference::parse(
            "@Microsoft.KeyVault(SecretUri=https://127.0.0.1:4/keyvault/kv/secrets/conn/0123abcd)",
        )
        .unwrap();
        assert_eq!(r.vault, "https://127.0.0.1:4/keyvault/kv");
        assert_eq!(r.version.as_deref(), Some("0123abcd"));
        let r = KeyVaultReference::parse(
            " @microsoft.keyvault(VaultName=kv-datasci;SecretName=conn;SecretVersion=v1) ",
        )
        .unwrap();
        assert_eq!(
            (r.vault.as_str(), r.secret.as_str(), r.version.as_deref()),
            ("kv-datasci", "conn", Some("v1"))
        );
        for not in [
            "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=k",
            "@Microsoft.KeyVault(SecretUri=https://kv/nope)",
            "@Microsoft.KeyVault(VaultName=kv)",
            "@Microsoft.KeyVault(SecretUri=https://kv/secrets/x",
        ] {
            assert_eq!(KeyVaultReference::parse(not), None, "{not}");
        }
    }

    #[test]
    fn settings_find_names_exactly_then_ignoring_case_when_unique() {
        let s = |v: &str| Setting {
            value: StorageKey::new(v.into()),
            conn_type: None,
        };
        let mut settings = Settings::default();
        settings.0.insert("AzureWebJobsStorage".into(), s("a"));
        settings.0.insert("Other".into(), s("b"));
        settings.0.insert("other".into(), s("c"));
        assert_eq!(
            settings.find("azurewebjobsstorage").map(|(k, _)| k),
            Some("AzureWebJobsStorage")
        );
        assert_eq!(settings.find("other").map(|(k, _)| k), Some("other"));
        assert_eq!(settings.find("OTHER"), None, "two match ignoring case");
        let mut changed = settings.clone();
        changed.0.insert("Other".into(), s("B"));
        changed.0.insert("New".into(), s("n"));
        changed.0.remove("other");
        assert_eq!(settings.changed(&changed, ""), ["New", "Other", "other"]);
        assert_eq!(settings.changed(&changed, "Other"), ["New", "other"]);
        // Names only, never values.
        assert_eq!(
            format!("{settings:?}"),
            r#"{"AzureWebJobsStorage", "Other", "other"}"#
        );
    }

    #[test]
    fn bodies_keep_connection_string_types() {
        let mut settings = Settings::default();
        settings.0.insert(
            "db".into(),
            Setting {
                value: StorageKey::new("x".into()),
                conn_type: Some("SQLAzure".into()),
            },
        );
        let b = body(&settings, Collection::ConnectionStrings);
        assert_eq!(
            b,
            serde_json::json!({"properties": {"db": {"value": "x", "type": "SQLAzure"}}})
        );
    }
}
