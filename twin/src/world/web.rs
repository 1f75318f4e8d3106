//! World-file sections for App Service (`[[web_app]]`, with `[[web_app.slot]]`) and
//! their checks: a site or slot holds app settings and connection strings, each a
//! literal value, a value computed from a storage key (`value_from`), or a Key Vault
//! reference (`key_vault_reference`, written as `@Microsoft.KeyVault(SecretUri=...)`).
//! `slot_setting = true` puts the name into the app's slotConfigNames (sticky).

use std::collections::{BTreeSet, HashSet};

use serde::Deserialize;
use toml::Spanned;

use super::ValueFrom;
use super::checks::{Failure, check_name, fail};

/// Connection string types App Service accepts (`ConnectionStringType` in the
/// Microsoft.Web REST spec).
pub(crate) const CONNECTION_STRING_TYPES: &[&str] = &[
    "MySql",
    "SQLServer",
    "SQLAzure",
    "Custom",
    "NotificationHub",
    "ServiceBus",
    "EventHub",
    "ApiHub",
    "DocDb",
    "RedisCache",
    "PostgreSQL",
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebAppSpec {
    pub name: Spanned<String>,
    pub resource_group: Spanned<String>,
    /// The site's `kind`: `app`, `functionapp`, `app,linux`, `functionapp,linux`, ...
    #[serde(default = "default_kind")]
    pub kind: Spanned<String>,
    /// The plan's SKU as the site reports it (`properties.sku`); `Standard` by default.
    #[serde(default = "default_sku")]
    pub sku: String,
    #[serde(default, rename = "app_setting")]
    pub app_settings: Vec<SettingSpec>,
    #[serde(default, rename = "connection_string")]
    pub connection_strings: Vec<SettingSpec>,
    #[serde(default, rename = "slot")]
    pub slots: Vec<WebSlotSpec>,
}

fn default_kind() -> Spanned<String> {
    Spanned::new(0..0, "app".to_string())
}

fn default_sku() -> String {
    "Standard".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebSlotSpec {
    pub name: Spanned<String>,
    #[serde(default, rename = "app_setting")]
    pub app_settings: Vec<SettingSpec>,
    #[serde(default, rename = "connection_string")]
    pub connection_strings: Vec<SettingSpec>,
}

/// An app setting or a connection string.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SettingSpec {
    pub name: Spanned<String>,
    pub value: Option<String>,
    pub value_from: Option<ValueFrom>,
    pub key_vault_reference: Option<KeyVaultReferenceSpec>,
    /// Connection strings only: the database type (`Custom` by default).
    #[serde(rename = "type")]
    pub conn_type: Option<Spanned<String>>,
    /// Sticky to its slot: the name is listed in the app's slotConfigNames.
    #[serde(default)]
    pub slot_setting: bool,
}

/// `@Microsoft.KeyVault(SecretUri={vault url}/secrets/{secret}/{version})`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyVaultReferenceSpec {
    pub vault: Spanned<String>,
    pub secret: Spanned<String>,
    /// Omitted: the reference follows the latest version.
    pub version: Option<String>,
}

/// Checks every `[[web_app]]`; `groups`, `accounts`, `vaults` are the names the world
/// defines (groups and vaults lower case).
pub(super) fn check(
    apps: &[WebAppSpec],
    groups: &HashSet<String>,
    accounts: &BTreeSet<String>,
    vaults: &BTreeSet<String>,
) -> Result<(), Failure> {
    let mut names = HashSet::new();
    for app in apps {
        check_name(&app.name, "web app", 2, 60, |c| {
            c.is_ascii_alphanumeric() || c == '-'
        })?;
        if !names.insert(app.name.get_ref().to_ascii_lowercase()) {
            return fail(
                &app.name,
                format!("web app {} is defined twice", app.name.get_ref()),
            );
        }
        if !groups.contains(&app.resource_group.get_ref().to_ascii_lowercase()) {
            return fail(
                &app.resource_group,
                format!(
                    "no [[resource_group]] is named {}",
                    app.resource_group.get_ref()
                ),
            );
        }
        let kind = app.kind.get_ref();
        if !kind.split(',').any(|k| k == "app" || k == "functionapp") {
            return fail(
                &app.kind,
                format!(
                    "kind {kind:?} is not a site kind the twin models: it must contain app or functionapp (for example \"functionapp\" or \"app,linux\")"
                ),
            );
        }
        check_settings(&app.app_settings, &app.connection_strings, accounts, vaults)?;
        let mut slots = HashSet::new();
        for slot in &app.slots {
            check_name(&slot.name, "slot", 1, 59, |c| {
                c.is_ascii_alphanumeric() || c == '-'
            })?;
            if slot.name.get_ref().eq_ignore_ascii_case("production")
                || !slots.insert(slot.name.get_ref().to_ascii_lowercase())
            {
                return fail(
                    &slot.name,
                    format!(
                        "slot {} is defined twice (the production slot is the site itself)",
                        slot.name.get_ref()
                    ),
                );
            }
            check_settings(
                &slot.app_settings,
                &slot.connection_strings,
                accounts,
                vaults,
            )?;
        }
    }
    Ok(())
}

fn check_settings(
    app_settings: &[SettingSpec],
    connection_strings: &[SettingSpec],
    accounts: &BTreeSet<String>,
    vaults: &BTreeSet<String>,
) -> Result<(), Failure> {
    for (list, what) in [
        (app_settings, "app setting"),
        (connection_strings, "connection string"),
    ] {
        let mut seen = HashSet::new();
        for s in list {
            check_name(&s.name, what, 1, 512, |c| !c.is_control())?;
            // App Service keys are case-insensitive (they become environment variables).
            if !seen.insert(s.name.get_ref().to_ascii_lowercase()) {
                return fail(
                    &s.name,
                    format!("{what} {} is defined twice", s.name.get_ref()),
                );
            }
            let sources = usize::from(s.value.is_some())
                + usize::from(s.value_from.is_some())
                + usize::from(s.key_vault_reference.is_some());
            if sources != 1 {
                return fail(
                    &s.name,
                    format!(
                        "{} needs exactly one of `value`, `value_from` and `key_vault_reference`",
                        s.name.get_ref()
                    ),
                );
            }
            if let Some(f) = &s.value_from
                && !accounts.contains(f.account.get_ref())
            {
                return fail(
                    &f.account,
                    format!("no [[storage_account]] is named {}", f.account.get_ref()),
                );
            }
            if let Some(r) = &s.key_vault_reference
                && !vaults.contains(&r.vault.get_ref().to_ascii_lowercase())
            {
                return fail(
                    &r.vault,
                    format!("no [[key_vault]] is named {}", r.vault.get_ref()),
                );
            }
            match (&s.conn_type, what) {
                (Some(t), "app setting") => {
                    return fail(t, "only connection strings have a `type`".into());
                }
                (Some(t), _) if !CONNECTION_STRING_TYPES.contains(&t.get_ref().as_str()) => {
                    return fail(
                        t,
                        format!(
                            "connection string type {:?} is not one of {}",
                            t.get_ref(),
                            CONNECTION_STRING_TYPES.join(", ")
                        ),
                    );
                }
                _ => {}
            }
        }
    }
    Ok(())
}
