//! App Service sites and slots as the twin holds them: app settings, connection
//! strings, the app's slotConfigNames, and what a settings write does to the running
//! app (a restart, counted on the twin clock).
//!
//! Key Vault references (`@Microsoft.KeyVault(...)`) are resolved the way App Service
//! documents it: at every restart, and again when the cached value is 24 hours old
//! ("App Service caches the values of the Key Vault references and refetches them
//! every 24 hours. Any configuration change to the app causes an app restart and an
//! immediate refetch", Microsoft Learn, "Use Key Vault references as app settings").
//! The resolution is only recorded (for the state snapshot); the twin runs no code.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Map, Value, json};

use super::Vault;
use crate::clock::azure_time;
use crate::world::{SettingSpec, ValueFrom, WebAppSpec};

/// How long App Service caches a resolved Key Vault reference.
pub(crate) const KEY_VAULT_REFERENCE_CACHE: TimeDelta = TimeDelta::hours(24);

/// One connection string: value and database type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnString {
    pub value: String,
    pub conn_type: String,
}

/// What a Key Vault reference resolved to, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolution {
    pub reference: String,
    pub vault: Option<String>,
    pub secret: Option<String>,
    /// The version the app now holds (`None` unless resolved).
    pub version: Option<String>,
    /// `ApiKVReference.status` values: Resolved, InvalidSyntax, VaultNotFound,
    /// SecretNotFound, SecretVersionNotFound, OtherReasons.
    pub status: &'static str,
    pub resolved_at: DateTime<Utc>,
}

/// The configuration of the production slot or of one deployment slot.
#[derive(Debug, Clone)]
pub(crate) struct SiteConfig {
    pub app_settings: BTreeMap<String, String>,
    pub connection_strings: BTreeMap<String, ConnString>,
    pub restarts: u64,
    pub last_restart: Option<DateTime<Utc>>,
    pub last_modified: DateTime<Utc>,
    /// App setting name → its Key Vault reference's resolution.
    pub references: BTreeMap<String, Resolution>,
}

#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub name: String,
    pub config: SiteConfig,
}

/// The app's slotConfigNames (names sticky to their slot; one list for all slots).
#[derive(Debug, Clone, Default)]
pub(crate) struct SlotConfigNames {
    pub app_setting_names: Vec<String>,
    pub connection_string_names: Vec<String>,
    pub azure_storage_config_names: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct WebApp {
    pub name: String,
    pub id: String,
    pub subscription: String,
    pub group: String,
    pub location: String,
    pub kind: String,
    pub sku: String,
    pub production: SiteConfig,
    /// Lower-case slot name → slot.
    pub slots: BTreeMap<String, Slot>,
    pub slot_config_names: SlotConfigNames,
}

impl WebApp {
    /// The production slot (`None`) or a deployment slot.
    pub fn config(&self, slot: Option<&str>) -> Option<&SiteConfig> {
        match slot {
            None => Some(&self.production),
            Some(s) => self.slots.get(&s.to_ascii_lowercase()).map(|s| &s.config),
        }
    }

    pub fn config_mut(&mut self, slot: Option<&str>) -> Option<&mut SiteConfig> {
        match slot {
            None => Some(&mut self.production),
            Some(s) => self
                .slots
                .get_mut(&s.to_ascii_lowercase())
                .map(|s| &mut s.config),
        }
    }
}

impl SiteConfig {
    /// A settings write: the app restarts and refetches every Key Vault reference.
    pub fn restart(&mut self, now: DateTime<Utc>, vaults: &BTreeMap<String, Vault>, base: &str) {
        self.restarts += 1;
        self.last_restart = Some(now);
        self.last_modified = now;
        self.resolve_all(now, vaults, base);
    }

    fn resolve_all(&mut self, now: DateTime<Utc>, vaults: &BTreeMap<String, Vault>, base: &str) {
        self.references = self
            .app_settings
            .iter()
            .filter(|(_, v)| v.trim_start().starts_with("@Microsoft.KeyVault("))
            .map(|(k, v)| (k.clone(), resolve(v, vaults, base, now)))
            .collect();
    }

    /// Refetches references whose cached value is 24 hours old (as of `now`).
    pub fn refresh(&mut self, now: DateTime<Utc>, vaults: &BTreeMap<String, Vault>, base: &str) {
        for (name, r) in &mut self.references {
            let age = now - r.resolved_at;
            if age < KEY_VAULT_REFERENCE_CACHE {
                continue;
            }
            let periods = age.num_seconds() / KEY_VAULT_REFERENCE_CACHE.num_seconds();
            let at = r.resolved_at
                + TimeDelta::seconds(periods * KEY_VAULT_REFERENCE_CACHE.num_seconds());
            if let Some(value) = self.app_settings.get(name) {
                *r = resolve(value, vaults, base, at);
            }
        }
    }
}

/// The value a world's Key Vault reference becomes.
pub(crate) fn reference_value(vault_url: &str, secret: &str, version: Option<&str>) -> String {
    format!(
        "@Microsoft.KeyVault(SecretUri={vault_url}/secrets/{secret}/{})",
        version.unwrap_or("")
    )
}

/// Parses `@Microsoft.KeyVault(SecretUri=...)` or `@Microsoft.KeyVault(VaultName=...;
/// SecretName=...[;SecretVersion=...])` into (vault, secret, version). A SecretUri is
/// either the twin's vault URL form (`{base}/keyvault/{vault}/secrets/...`) or Azure's
/// (`https://{vault}.vault.azure.net/secrets/...`).
pub(crate) fn parse_reference(value: &str, base: &str) -> Option<(String, String, Option<String>)> {
    let inner = value
        .trim()
        .strip_prefix("@Microsoft.KeyVault(")?
        .strip_suffix(')')?;
    let mut parts: BTreeMap<String, String> = BTreeMap::new();
    for p in inner.split(';').filter(|p| !p.trim().is_empty()) {
        let (k, v) = p.split_once('=')?;
        parts.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let nonempty = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_string);
    if let Some(uri) = parts.get("secreturi") {
        let rest = if let Some(r) = uri.strip_prefix(&format!("{base}/keyvault/")) {
            r.to_string()
        } else {
            let u = url::Url::parse(uri).ok()?;
            let vault = u.host_str()?.split('.').next()?.to_string();
            format!("{vault}{}", u.path())
        };
        let segs: Vec<&str> = rest.split('/').collect();
        return match segs.as_slice() {
            [vault, "secrets", secret] | [vault, "secrets", secret, ""] => {
                Some((vault.to_string(), secret.to_string(), None))
            }
            [vault, "secrets", secret, version] | [vault, "secrets", secret, version, ""] => {
                Some((
                    vault.to_string(),
                    secret.to_string(),
                    nonempty(Some(version)),
                ))
            }
            _ => None,
        };
    }
    Some((
        nonempty(parts.get("vaultname").map(String::as_str))?,
        nonempty(parts.get("secretname").map(String::as_str))?,
        nonempty(parts.get("secretversion").map(String::as_str)),
    ))
}

fn resolve(
    value: &str,
    vaults: &BTreeMap<String, Vault>,
    base: &str,
    at: DateTime<Utc>,
) -> Resolution {
    let mut r = Resolution {
        reference: value.to_string(),
        vault: None,
        secret: None,
        version: None,
        status: "InvalidSyntax",
        resolved_at: at,
    };
    let Some((vault, secret, version)) = parse_reference(value, base) else {
        return r;
    };
    r.vault = Some(vault.clone());
    r.secret = Some(secret.clone());
    let Some(v) = vaults.get(&vault.to_ascii_lowercase()) else {
        r.status = "VaultNotFound";
        return r;
    };
    let Some(s) = v.secrets.get(&secret.to_ascii_lowercase()) else {
        r.status = "SecretNotFound";
        return r;
    };
    let found = match &version {
        Some(want) => s
            .versions
            .iter()
            .find(|x| x.version.eq_ignore_ascii_case(want)),
        None => s.versions.last(),
    };
    match found {
        None => r.status = "SecretVersionNotFound",
        Some(x) if !x.enabled => r.status = "OtherReasons",
        Some(x) => {
            r.status = "Resolved";
            r.version = Some(x.version.clone());
        }
    }
    r
}

/// What building world resources needs from the rest of the world.
pub(crate) struct BuildCtx<'a> {
    /// Resolves `value_from`.
    pub value_of: &'a dyn Fn(&ValueFrom) -> Result<String, String>,
    /// A vault name's URL (`{base}/keyvault/{name}`).
    pub vault_url: &'a dyn Fn(&str) -> String,
    pub vaults: &'a BTreeMap<String, Vault>,
    pub base: &'a str,
    pub now: DateTime<Utc>,
}

/// Where a resource lives.
pub(crate) struct Place {
    pub id: String,
    pub subscription: String,
    pub group: String,
    pub location: String,
}

/// Builds one of the world's sites.
pub(crate) fn build(spec: &WebAppSpec, place: Place, cx: &BuildCtx<'_>) -> Result<WebApp, String> {
    let (now, vaults, base) = (cx.now, cx.vaults, cx.base);
    let (value_of, vault_url) = (cx.value_of, cx.vault_url);
    let mut names = SlotConfigNames::default();
    let mut config = |app: &[SettingSpec], conn: &[SettingSpec]| -> Result<SiteConfig, String> {
        let value = |s: &SettingSpec| -> Result<String, String> {
            match (&s.value, &s.value_from, &s.key_vault_reference) {
                (Some(v), _, _) => Ok(v.clone()),
                (_, Some(f), _) => value_of(f),
                (_, _, Some(r)) => Ok(reference_value(
                    &vault_url(r.vault.get_ref()),
                    r.secret.get_ref(),
                    r.version.as_deref(),
                )),
                _ => Err(format!("setting {} has no value", s.name.get_ref())),
            }
        };
        let mut c = SiteConfig {
            app_settings: BTreeMap::new(),
            connection_strings: BTreeMap::new(),
            restarts: 0,
            last_restart: None,
            last_modified: now,
            references: BTreeMap::new(),
        };
        for s in app {
            c.app_settings.insert(s.name.get_ref().clone(), value(s)?);
            if s.slot_setting && !names.app_setting_names.contains(s.name.get_ref()) {
                names.app_setting_names.push(s.name.get_ref().clone());
            }
        }
        for s in conn {
            let conn_type = s
                .conn_type
                .as_ref()
                .map(|t| t.get_ref().clone())
                .unwrap_or_else(|| "Custom".into());
            c.connection_strings.insert(
                s.name.get_ref().clone(),
                ConnString {
                    value: value(s)?,
                    conn_type,
                },
            );
            if s.slot_setting && !names.connection_string_names.contains(s.name.get_ref()) {
                names.connection_string_names.push(s.name.get_ref().clone());
            }
        }
        // The app started with these settings: its references resolve now.
        c.resolve_all(now, vaults, base);
        Ok(c)
    };
    let production = config(&spec.app_settings, &spec.connection_strings)?;
    let mut slots = BTreeMap::new();
    for s in &spec.slots {
        slots.insert(
            s.name.get_ref().to_ascii_lowercase(),
            Slot {
                name: s.name.get_ref().clone(),
                config: config(&s.app_settings, &s.connection_strings)?,
            },
        );
    }
    Ok(WebApp {
        name: spec.name.get_ref().clone(),
        id: place.id,
        subscription: place.subscription,
        group: place.group,
        location: place.location,
        kind: spec.kind.get_ref().clone(),
        sku: spec.sku.clone(),
        production,
        slots,
        slot_config_names: names,
    })
}

fn config_json(c: &SiteConfig) -> Value {
    let conn: Map<String, Value> = c
        .connection_strings
        .iter()
        .map(|(k, v)| (k.clone(), json!({"value": v.value, "type": v.conn_type})))
        .collect();
    let refs: Map<String, Value> = c
        .references
        .iter()
        .map(|(k, r)| {
            (
                k.clone(),
                json!({
                    "reference": r.reference,
                    "vault": r.vault,
                    "secret": r.secret,
                    "version": r.version,
                    "status": r.status,
                    "resolvedAt": azure_time(r.resolved_at),
                }),
            )
        })
        .collect();
    json!({
        "appSettings": c.app_settings,
        "connectionStrings": conn,
        "restarts": c.restarts,
        "lastRestart": c.last_restart.map(azure_time),
        "lastModifiedTimeUtc": azure_time(c.last_modified),
        "keyVaultReferences": refs,
    })
}

/// The state snapshot of one site (values in full: these are the twin's fake keys).
pub(crate) fn snapshot(w: &WebApp) -> Value {
    let mut v = config_json(&w.production);
    let slots: Map<String, Value> = w
        .slots
        .values()
        .map(|s| {
            let mut c = config_json(&s.config);
            if let Some(o) = c.as_object_mut() {
                o.insert("id".into(), json!(format!("{}/slots/{}", w.id, s.name)));
            }
            (s.name.clone(), c)
        })
        .collect();
    if let Some(o) = v.as_object_mut() {
        o.insert("id".into(), json!(w.id));
        o.insert("kind".into(), json!(w.kind));
        o.insert(
            "slotConfigNames".into(),
            json!({
                "appSettingNames": w.slot_config_names.app_setting_names,
                "connectionStringNames": w.slot_config_names.connection_string_names,
            }),
        );
        o.insert("slots".into(), Value::Object(slots));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "https://127.0.0.1:4443";

    #[test]
    fn references_parse_in_every_documented_form() {
        let twin = reference_value(&format!("{BASE}/keyvault/kv-a"), "s1", None);
        assert_eq!(
            twin,
            format!("@Microsoft.KeyVault(SecretUri={BASE}/keyvault/kv-a/secrets/s1/)")
        );
        assert_eq!(
            parse_reference(&twin, BASE),
            Some(("kv-a".into(), "s1".into(), None))
        );
        assert_eq!(
            parse_reference(
                "@Microsoft.KeyVault(SecretUri=https://kv-b.vault.azure.net/secrets/s2/0123abcd)",
                BASE
            ),
            Some(("kv-b".into(), "s2".into(), Some("0123abcd".into())))
        );
        assert_eq!(
            parse_reference(
                "@Microsoft.KeyVault(VaultName=kv-c;SecretName=s3;SecretVersion=ff)",
                BASE
            ),
            Some(("kv-c".into(), "s3".into(), Some("ff".into())))
        );
        for bad in [
            "@Microsoft.KeyVault()",
            "@Microsoft.KeyVault(VaultName=kv)",
            "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/keys/k/)",
            "plain",
        ] {
            assert_eq!(parse_reference(bad, BASE), None, "{bad}");
        }
    }
}
