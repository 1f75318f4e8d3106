//! An App Service or Azure Functions setting that holds the key (`[[app_service]]`):
//! an app setting (a Function app's `AzureWebJobsStorage`) or a connection string of a
//! site, and, when the plan lists deployment slots, the same setting of each slot.
//!
//! What it holds is the account key in its value: the value itself (a raw key) or the
//! `AccountKey=` of a connection string naming the plan's account. A bind changes that
//! key only, keeping the value's form and every other part of a connection string (its
//! endpoints), through the read-modify-write of [`crate::azure::web`]: Azure replaces
//! settings only as a whole collection and offers no concurrency control, so keyflip
//! detects other writers and starts over or refuses. Each write restarts the site or
//! slot, so its bind goes last in its batch ([`Capabilities::bind_last`]); settings of
//! one collection are written one after another. A setting that is a Key Vault
//! reference (`@Microsoft.KeyVault(...)`) is no consumer of the key: it reads that
//! secret, which is the consumer; listed, it cannot be rotated as listed. Verified by
//! reading the value back (its fingerprint) and, for a connection string, by checking
//! it names the account and its key works on the account's blob endpoint. Id:
//! `appservice:{site_arm_id}[/slots/{slot}]/config/{appsettings|connectionstrings}/{name}`.

pub(crate) mod discover;
mod doctor;

use std::fmt;
use std::ops::Range;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use toml::Spanned;
use toml::de::DeValue;

pub use doctor::{AppServiceFacts, AppServiceSeen, SettingFacts};

use super::value::account_key;
use super::{
    Capabilities, Confirmation, ConsumerId, Entry, Held, Kind, ONE_PLAN, Permission, Profile,
    Section, Seen, Table, entries, listed_twice, names,
};
use crate::azure::probe::ProbeOutcome;
use crate::azure::roles::{Action, actions};
use crate::azure::web::{Collection, KeyVaultReference, PutSettings, Settings, SiteRef};
use crate::azure::{self, Azure, Cloud};
use crate::doctor::report::{Resource, Service};
use crate::key::KeyName;
use crate::plan::Plan;
use crate::plan::fragment::{Diagnostics, Text, arm_id, required};
use crate::resource_id::ResourceId;
use crate::rotation::EngineError;
use crate::rotation::machine::{Failure, FailureKind, MissingPermission};
use crate::rotation::observe::Lacking;
use crate::rotation::step::Ctx;
use crate::secret::StorageKey;

pub(super) const PROFILE: Profile = Profile {
    prefix: "appservice",
    form: "appservice:{site_arm_id}[/slots/{slot}]/config/{appsettings|connectionstrings}/{name}",
    label: "App Service setting",
    word: "app service",
    capabilities: Capabilities {
        bind_last: true,
        ..Capabilities::NONE
    },
    case_sensitive: false,
    parse: |rest| SettingId::parse(rest).map(|id| ConsumerId::AppService(Box::new(id))),
    listed_twice,
    in_two_plans: ONE_PLAN,
    confirmed_by: None,
};

pub(super) const SECTION: Section = Section {
    key: "app_service",
    parse: parse_tables,
    summarize,
    render: discover::render,
    report_order: 3,
};

/// `doctor`'s name for a site as a permission scope.
pub(crate) const RESOURCE: Resource = Resource {
    name: "app_service",
    label: "app service",
};

/// How long App Service may keep using a Key Vault reference's old value: it caches
/// referenced values and refetches them every 24 hours (Microsoft Learn, "Use Key Vault
/// references as app settings", "Understand rotation").
pub(crate) const REFERENCE_CACHE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The id of a setting: the site (or slot), the collection and the name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SettingId {
    site: SiteRef,
    collection: Collection,
    name: String,
}

impl SettingId {
    pub fn new(site: &SiteRef, collection: Collection, name: &str) -> SettingId {
        SettingId {
            site: site.clone(),
            collection,
            name: name.to_owned(),
        }
    }

    fn parse(rest: &str) -> Option<SettingId> {
        // ARM ids have no `/config/` segment, so the first one starts the setting.
        let (at, collection) = [Collection::AppSettings, Collection::ConnectionStrings]
            .into_iter()
            .find_map(|c| {
                let marker = format!("/config/{}/", c.segment());
                rest.find(&marker).map(|at| ((at, marker.len()), c))
            })?;
        let (site, name) = (&rest[..at.0], &rest[at.0 + at.1..]);
        let site = site_ref(site.parse().ok()?)?;
        (!name.is_empty()).then(|| SettingId::new(&site, collection, name))
    }

    pub fn site(&self) -> &SiteRef {
        &self.site
    }

    pub fn collection(&self) -> Collection {
        self.collection
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub(super) fn short(&self) -> String {
        match self.collection {
            Collection::AppSettings => format!("{} {}", self.site.short(), self.name),
            Collection::ConnectionStrings => {
                format!("{} connection string {}", self.site.short(), self.name)
            }
        }
    }
}

/// A `Microsoft.Web/sites/{site}` or `.../sites/{site}/slots/{slot}` id as a site and
/// slot.
fn site_ref(id: ResourceId) -> Option<SiteRef> {
    if id.is_type("Microsoft.Web/sites") {
        return Some(SiteRef::new(&id, None));
    }
    if !id.is_type("Microsoft.Web/sites/slots") {
        return None;
    }
    let text = id.to_string();
    let (site, slot) = text.rsplit_once('/')?;
    let (site, segment) = site.rsplit_once('/')?;
    segment.eq_ignore_ascii_case("slots").then_some(())?;
    Some(SiteRef::new(&site.parse().ok()?, Some(slot)))
}

impl fmt::Display for SettingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/config/{}/{}",
            self.site,
            self.collection.segment(),
            self.name
        )
    }
}

/// An `[[app_service]]` table: settings of one site (and of the slots it names) that
/// hold the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppServiceSettings {
    pub site: ResourceId,
    /// App settings that hold the key (`AzureWebJobsStorage`, ...).
    pub app_settings: Vec<String>,
    /// Connection strings that hold the key.
    pub(crate) connection_strings: Vec<String>,
    /// Deployment slots whose settings of the same names hold it too; empty: the
    /// production site only.
    pub slots: Vec<String>,
}

impl AppServiceSettings {
    /// The site and each listed slot, production first.
    pub(crate) fn places(&self) -> Vec<SiteRef> {
        std::iter::once(None)
            .chain(self.slots.iter().map(|s| Some(s.as_str())))
            .map(|slot| SiteRef::new(&self.site, slot))
            .collect()
    }

    /// The listed settings of one place.
    pub fn settings(&self) -> Vec<(Collection, &str)> {
        let app = self
            .app_settings
            .iter()
            .map(|n| (Collection::AppSettings, n.as_str()));
        let conn = self
            .connection_strings
            .iter()
            .map(|n| (Collection::ConnectionStrings, n.as_str()));
        app.chain(conn).collect()
    }

    /// Every consumer of the table, place by place.
    pub fn ids(&self) -> Vec<ConsumerId> {
        self.places()
            .iter()
            .flat_map(|place| {
                self.settings().into_iter().map(move |(c, n)| {
                    ConsumerId::AppService(Box::new(SettingId::new(place, c, n)))
                })
            })
            .collect()
    }
}

/// The table as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAppService {
    site: Option<Text>,
    app_settings: Option<Spanned<Vec<Text>>>,
    connection_strings: Option<Spanned<Vec<Text>>>,
    slots: Option<Spanned<Vec<Text>>>,
}

fn parse_tables(
    value: Spanned<DeValue<'_>>,
    d: &mut Diagnostics<'_>,
) -> Vec<(Entry, Range<usize>)> {
    entries::<RawAppService>(value, SECTION.key, d, |raw, d| {
        table(raw, d).map(Entry::AppService)
    })
}

fn table(raw: &Spanned<RawAppService>, d: &mut Diagnostics<'_>) -> Option<AppServiceSettings> {
    let (span, r) = (raw.span(), raw.get_ref());
    let site = required(
        &r.site,
        "site",
        "[[app_service]]",
        &span,
        "\"/subscriptions/…/providers/Microsoft.Web/sites/<name>\"",
        d,
    )
    .and_then(|v| arm_id(v, "site", "Microsoft.Web/sites", d));
    // App Service names settings with letters, digits, `_`, `.`, `-` and `:`.
    let setting = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | ':');
    let rule = "letters, digits, `_`, `.`, `-` and `:`";
    let app_settings = names(
        r.app_settings.as_ref(),
        "app_settings",
        setting,
        256,
        rule,
        d,
    );
    let connection_strings = names(
        r.connection_strings.as_ref(),
        "connection_strings",
        setting,
        256,
        rule,
        d,
    );
    let slots = names(
        r.slots.as_ref(),
        "slots",
        |c| c.is_ascii_alphanumeric() || c == '-',
        59,
        "letters, digits and `-`",
        d,
    );
    let (app_settings, connection_strings) = (app_settings?, connection_strings?);
    if app_settings.is_empty() && connection_strings.is_empty() {
        d.error(
            span,
            "[[app_service]] names no settings",
            "add app_settings = [\"AzureWebJobsStorage\"] (or connection_strings = [...]): the settings that hold the key",
        );
        return None;
    }
    Some(AppServiceSettings {
        site: site?,
        app_settings,
        connection_strings,
        slots: slots?,
    })
}

fn summarize(entries: &[&Entry]) -> String {
    let n: usize = entries
        .iter()
        .map(|e| match e {
            Entry::AppService(t) => t.ids().len(),
            _ => 0,
        })
        .sum();
    format!("{n} App Service setting{}", if n == 1 { "" } else { "s" })
}

impl Table for AppServiceSettings {
    fn claims(&self) -> Vec<(ConsumerId, bool)> {
        self.ids().into_iter().map(|id| (id, true)).collect()
    }

    fn permissions(&self) -> Vec<Permission> {
        let mut needed = vec![actions::WEB_CONFIG_LIST, actions::WEB_CONFIG_WRITE];
        if !self.slots.is_empty() {
            needed.extend([
                actions::WEB_SLOT_CONFIG_LIST,
                actions::WEB_SLOT_CONFIG_WRITE,
            ]);
        }
        vec![Permission {
            scope: self.site.to_string(),
            resource: RESOURCE,
            actions: needed,
        }]
    }

    async fn consumers(
        &self,
        _ctx: &Ctx<'_>,
        _lacking: &Lacking,
        _missing: &mut Vec<MissingPermission>,
    ) -> Result<Vec<ConsumerId>, EngineError> {
        Ok(self.ids())
    }

    fn covers(&self, id: &ConsumerId) -> bool {
        self.ids().contains(id)
    }

    fn token(&self, cloud: &Cloud) -> (Service, Result<String, String>) {
        (Service::ARM, Ok(cloud.arm_audience.clone()))
    }

    async fn examine(&self, azure: &Azure, plan: &Plan, token: Result<(), String>) -> Seen {
        Seen::AppService(doctor::read(azure, plan, self, token).await)
    }
}

/// What a setting's value stores, as far as the account goes. Holds no value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stored {
    /// The account's key: the value itself, or a connection string's `AccountKey`.
    Key { connection_string: bool },
    /// A Key Vault reference: that secret is the consumer.
    Reference(KeyVaultReference),
    /// No key of this account; the words say what instead.
    NoKey(String),
}

/// What `value` stores, for the account named `account`. Reusable by discovery: it is
/// how a setting of any site is told to hold the account's key.
pub fn stored(value: &StorageKey, account: &str) -> (Stored, Option<StorageKey>) {
    let text = value.expose().trim();
    if let Some(reference) = KeyVaultReference::parse(text) {
        return (Stored::Reference(reference), None);
    }
    if text.is_empty() {
        return (Stored::NoKey("it is empty".into()), None);
    }
    let connection_string = text.contains(';') || text.contains("AccountKey=");
    if connection_string {
        let named = text.split(';').find_map(|part| {
            let (k, v) = part.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("AccountName")
                .then(|| v.trim().to_owned())
        });
        if let Some(other) = named.filter(|n| !n.eq_ignore_ascii_case(account)) {
            return (
                Stored::NoKey(format!(
                    "its connection string is for account {other}, not {account}"
                )),
                None,
            );
        }
    }
    match account_key(value) {
        Some(key) => (Stored::Key { connection_string }, Some(key)),
        None => (
            Stored::NoKey(
                "its connection string holds no account key (a SAS or an identity-based connection)"
                    .into(),
            ),
            None,
        ),
    }
}

/// `current` with its key replaced by `key`: a raw key becomes `key`, a connection
/// string keeps every part but `AccountKey`. Refuses a value that stores no key of
/// `account`.
fn with_key(
    current: &StorageKey,
    key: &StorageKey,
    account: &str,
) -> Result<StorageKey, azure::Error> {
    match stored(current, account).0 {
        Stored::Reference(r) => Err(azure::Error::Invalid(format!(
            "it is a Key Vault reference to {r}, which keyflip does not overwrite: that secret is the consumer"
        ))),
        Stored::NoKey(why) => Err(azure::Error::Invalid(format!(
            "{why}; keyflip does not overwrite it"
        ))),
        Stored::Key {
            connection_string: false,
        } => Ok(key.clone()),
        Stored::Key {
            connection_string: true,
        } => {
            let text = current.expose();
            let mut out = String::with_capacity(text.len() + key.expose().len());
            for (i, part) in text.split(';').enumerate() {
                if i > 0 {
                    out.push(';');
                }
                match part.split_once('=') {
                    Some((name, _)) if name.trim().eq_ignore_ascii_case("AccountKey") => {
                        out.push_str(name);
                        out.push('=');
                        out.push_str(key.expose());
                    }
                    _ => out.push_str(part),
                }
            }
            Ok(StorageKey::new(out))
        }
    }
}

/// A setting of the plan.
#[derive(Clone, Debug)]
pub(crate) struct Target<'p> {
    table: &'p AppServiceSettings,
    id: SettingId,
}

pub(super) fn resolve<'p>(plan: &'p Plan, id: &SettingId) -> Option<Target<'p>> {
    let consumer = ConsumerId::AppService(Box::new(id.clone()));
    plan.consumers.iter().find_map(|e| match e {
        Entry::AppService(t) if t.covers(&consumer) => Some(Target {
            table: t,
            id: id.clone(),
        }),
        _ => None,
    })
}

/// Whether `key`, a connection string's, works on the account's blob endpoint (`None`:
/// it does).
async fn probe(ctx: &Ctx<'_>, key: &StorageKey) -> Option<Confirmation> {
    let account = match ctx.account().await {
        Ok(account) => account,
        Err(e) => return Some(Confirmation::Unreadable(e)),
    };
    match ctx.azure().probe_account_key(account, key).await {
        Ok(probe) if probe.outcome == ProbeOutcome::Works => None,
        Ok(probe) => Some(Confirmation::Mismatch(Failure::new(
            FailureKind::WrongValue,
            format!(
                "the key in its connection string does not work on the blob data plane: {} ({})",
                probe.outcome, probe.detail
            ),
        ))),
        Err(e) => Some(Confirmation::Unreadable(e)),
    }
}

impl Target<'_> {
    fn consumer(&self) -> ConsumerId {
        ConsumerId::AppService(Box::new(self.id.clone()))
    }

    /// The verification after this run's PUT: the listing (is keyflip's value still
    /// there, exactly?) and, for a connection string, the written key on the data
    /// plane, at once.
    async fn confirm_put(&self, ctx: &Ctx<'_>, put: &PutSettings) -> Option<Confirmation> {
        let written_key = put
            .value()
            .map(|v| stored(v, ctx.plan.storage_account.name()))
            .and_then(|found| match found {
                (
                    Stored::Key {
                        connection_string: true,
                    },
                    Some(key),
                ) => Some(key),
                _ => None,
            });
        let (listed, probed) = tokio::join!(
            ctx.azure().web_settings(&self.id.site, self.id.collection),
            async {
                match &written_key {
                    Some(key) => probe(ctx, key).await,
                    None => None,
                }
            }
        );
        drop(written_key);
        let listed = match listed {
            Ok(listed) => listed,
            Err(e) => return Some(Confirmation::Unreadable(e)),
        };
        let (stayed, changed_after) = put.stayed(&listed);
        drop(listed);
        if !stayed {
            tracing::warn!(rotation = ctx.rotation_id, site = %self.id.site, setting = %self.id.name, "keyflip's value was overwritten right after its write");
            return Some(Confirmation::Mismatch(Failure::new(
                FailureKind::WrongValue,
                format!(
                    "another writer replaced the {}s of {} right after keyflip's PUT without keyflip's value of '{}' (App Service settings have no concurrency control: a deployment or a person writing them at the same time?)",
                    self.id.collection.noun(),
                    self.id.site.short(),
                    put.name
                ),
            )));
        }
        if !changed_after.is_empty() {
            // Whoever wrote these kept keyflip's value, so they read after keyflip's
            // PUT: nothing of theirs was lost.
            tracing::warn!(rotation = ctx.rotation_id, site = %self.id.site, setting = %self.id.name, changed = ?changed_after, "other settings changed right after keyflip's write; keyflip's value stayed");
        }
        probed
    }

    /// The site or slot a write restarts, in words.
    fn place(&self) -> String {
        match &self.id.site.slot {
            Some(slot) => format!("slot {slot} of {}", self.id.site.site.name()),
            None => self.id.site.site.name().to_owned(),
        }
    }

    fn base(&self) -> String {
        format!(
            "{}/config/{}",
            self.id.site.id(),
            self.id.collection.segment()
        )
    }

    /// The setting's value now, or why it has none.
    async fn value(&self, ctx: &Ctx<'_>) -> Result<Result<StorageKey, String>, azure::Error> {
        let settings: Settings = ctx
            .azure()
            .web_settings(&self.id.site, self.id.collection)
            .await?;
        Ok(match settings.find(&self.id.name) {
            Some((_, s)) => Ok(s.value.clone()),
            None => Err(format!(
                "{} has no {} '{}' (check the name in the plan)",
                self.id.site.short(),
                self.id.collection.noun(),
                self.id.name
            )),
        })
    }
}

impl Kind for Target<'_> {
    fn read_permission(&self) -> (String, Action) {
        let action = match self.id.site.slot {
            Some(_) => actions::WEB_SLOT_CONFIG_LIST,
            None => actions::WEB_CONFIG_LIST,
        };
        (self.table.site.to_string(), action)
    }

    async fn held(&self, ctx: &Ctx<'_>) -> Result<Held, azure::Error> {
        let value = match self.value(ctx).await? {
            Ok(v) => v,
            Err(why) => return Ok(Held::NoKey(why)),
        };
        Ok(match stored(&value, ctx.plan.storage_account.name()) {
            (Stored::Key { .. }, Some(key)) => Held::Key(ctx.fingerprint(&key)),
            (Stored::Reference(r), _) => Held::NoKey(format!(
                "it is a Key Vault reference to {r}: that secret is the consumer (list it under [[key_vault]]), not the setting"
            )),
            (Stored::NoKey(why), _) => Held::NoKey(why),
            (Stored::Key { .. }, None) => Held::NoKey("it holds no account key".into()),
        })
    }

    /// The first listing of the read-modify-write, made while the other consumers are
    /// bound (the setting binds last): the listing right before the PUT is compared
    /// with it, as in [`crate::azure::web`].
    async fn prepare_write(&self, ctx: &Ctx<'_>) {
        match ctx
            .azure()
            .web_settings_before_write(&self.id.site, self.id.collection)
            .await
        {
            Ok(Some(listed)) => ctx.listed_settings(&self.consumer(), listed),
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(rotation = ctx.rotation_id, site = %self.id.site, error = %e, "listing the settings ahead failed; the bind lists them itself");
            }
        }
    }

    /// The read-modify-write of [`crate::azure::web`], from the listing made ahead
    /// when there is one; the listing after the PUT is left to the verification that
    /// follows every bind ([`Kind::confirm_write`]), which fails when keyflip's value
    /// did not stay.
    async fn write(
        &self,
        ctx: &Ctx<'_>,
        _key: KeyName,
        value: &StorageKey,
    ) -> Result<(), azure::Error> {
        let account = ctx.plan.storage_account.name();
        let consumer = self.consumer();
        let written = ctx
            .azure()
            .write_web_setting(
                &self.id.site,
                self.id.collection,
                &self.id.name,
                ctx.take_listed_settings(&consumer),
                false,
                |current| with_key(current, value, account),
            )
            .await?;
        tracing::info!(
            rotation = ctx.rotation_id,
            site = %self.id.site,
            setting = %self.id.name,
            written = written.written,
            attempts = written.attempts,
            "App Service setting updated; the app restarts"
        );
        if let Some(put) = written.put {
            ctx.put_settings(&consumer, put);
        }
        Ok(())
    }

    /// For a connection string, also what the app does with it: it must name the
    /// plan's account, and its key must work on the account's blob endpoint. Then the
    /// fingerprint is compared as for every kind (`None`). After this run's own PUT,
    /// the listing must hold exactly the value keyflip wrote (else another writer
    /// replaced the collection right after keyflip: the lost update the
    /// read-modify-write checks for), and that written value's key is probed in the
    /// same round trip.
    async fn confirm_write(
        &self,
        ctx: &Ctx<'_>,
        _bound_at: Option<DateTime<Utc>>,
    ) -> Option<Confirmation> {
        if let Some(put) = ctx.take_put_settings(&self.consumer()) {
            return self.confirm_put(ctx, &put).await;
        }
        let value = match self.value(ctx).await {
            Ok(Ok(v)) => v,
            Ok(Err(why)) => {
                return Some(Confirmation::Mismatch(Failure::new(
                    FailureKind::WrongValue,
                    why,
                )));
            }
            Err(e) => return Some(Confirmation::Unreadable(e)),
        };
        let (
            Stored::Key {
                connection_string: true,
            },
            Some(key),
        ) = stored(&value, ctx.plan.storage_account.name())
        else {
            return None;
        };
        drop(value);
        probe(ctx, &key).await
    }

    fn write_effect(&self) -> Option<String> {
        Some(format!(
            "restarts {} (App Service restarts an app whenever its settings are written, and again if a rollback writes them back)",
            self.place()
        ))
    }

    fn read_call(&self) -> String {
        format!("POST {}/list", self.base())
    }

    fn write_calls(&self, key: KeyName) -> Vec<String> {
        let base = self.base();
        let place = self.place();
        vec![
            format!(
                "POST {base}/list, twice: beside the other binds and right before the PUT (a change between the two starts over)"
            ),
            format!(
                "PUT {base} (the whole collection, only {} set to {key}: RESTARTS {place})",
                self.id.name
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "a2V5ZmxpcCB0ZXN0IGtleSBvbmUga2V5ZmxpcCB0ZXN0IGtleSBvbmUgMTIzNDU2Nzg5MA==";
    const NEW: &str = "bmV3IGtleSBuZXcga2V5IG5ldyBrZXkgbmV3IGtleSBuZXcga2V5IG5ldyBrZXkgMTIzNA==";

    fn k(s: &str) -> StorageKey {
        StorageKey::new(s.to_owned())
    }

    #[test]
    fn a_connection_string_keeps_everything_but_its_key() {
        let cs = format!(
            "DefaultEndpointsProtocol=https;AccountName=stdatasci001;AccountKey={KEY};BlobEndpoint=https://127.0.0.1:1/stdatasci001/;"
        );
        let out = with_key(&k(&cs), &k(NEW), "stdatasci001").unwrap();
        assert_eq!(out.expose(), cs.replace(KEY, NEW));
        assert_eq!(with_key(&k(KEY), &k(NEW), "stdatasci001").unwrap(), k(NEW));
        // Another account's connection string, a SAS, a reference: never overwritten.
        let other = cs.replace("AccountName=stdatasci001", "AccountName=stother");
        let err = with_key(&k(&other), &k(NEW), "stdatasci001").unwrap_err();
        assert!(err.to_string().contains("for account stother"), "{err}");
        let sas = "BlobEndpoint=https://a.blob.core.windows.net/;SharedAccessSignature=sv=1&sig=x";
        assert!(with_key(&k(sas), &k(NEW), "a").is_err());
        let reference = "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/s/)";
        let err = with_key(&k(reference), &k(NEW), "a")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Key Vault reference") && !err.contains(NEW),
            "{err}"
        );
    }

    #[test]
    fn what_a_value_stores() {
        let cs =
            format!("DefaultEndpointsProtocol=https;AccountName=StDataSci001;AccountKey={KEY}");
        let (s, key) = stored(&k(&cs), "stdatasci001");
        assert_eq!(
            s,
            Stored::Key {
                connection_string: true
            }
        );
        assert_eq!(key, Some(k(KEY)));
        assert_eq!(
            stored(&k(KEY), "x").0,
            Stored::Key {
                connection_string: false
            }
        );
        assert!(matches!(stored(&k(""), "x").0, Stored::NoKey(_)));
        let (s, _) = stored(&k("@Microsoft.KeyVault(VaultName=kv;SecretName=conn)"), "x");
        assert!(matches!(s, Stored::Reference(r) if r.secret == "conn"));
    }

    #[test]
    fn ids_name_the_site_or_slot_the_collection_and_the_setting() {
        let site = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Web/sites/func-x";
        for text in [
            format!("{site}/config/appsettings/AzureWebJobsStorage"),
            format!("{site}/slots/staging/config/connectionstrings/Storage:Main"),
        ] {
            let id = SettingId::parse(&text).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(id.to_string(), text);
        }
        let id = SettingId::parse(&format!("{site}/slots/staging/config/appsettings/A")).unwrap();
        assert_eq!(id.site().slot.as_deref(), Some("staging"));
        assert_eq!(id.short(), "func-x/staging A");
        for bad in [
            format!("{site}/config/appsettings/"),
            format!("{site}/config/web/x"),
            "/subscriptions/s/resourceGroups/g/providers/Microsoft.Storage/storageAccounts/a/config/appsettings/x".to_owned(),
        ] {
            assert_eq!(SettingId::parse(&bad), None, "{bad}");
        }
    }
}
