//! World-file sections for Azure Data Factory (`[[data_factory]]` with
//! `[[data_factory.linked_service]]`) and their checks.
//!
//! A storage linked service holds its secret in one type property (`connectionString`,
//! or `accountKey` for `AzureBlobFS`), either as a `SecureString` (`value` or
//! `value_from`) or as an `AzureKeyVaultSecret` reference to a secret through an
//! `AzureKeyVault` linked service of the same factory (`key_vault_secret`).

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::Deserialize;
use toml::Spanned;

use super::ValueFrom;
use super::checks::{Failure, check_name, fail};

/// Linked service types a world can define.
pub(crate) const LINKED_SERVICE_TYPES: &[&str] = &[
    "AzureBlobStorage",
    "AzureBlobFS",
    "AzureFileStorage",
    "AzureTableStorage",
    "AzureStorage",
    "AzureKeyVault",
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DataFactorySpec {
    pub name: Spanned<String>,
    pub resource_group: Spanned<String>,
    #[serde(default, rename = "linked_service")]
    pub linked_services: Vec<LinkedServiceSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LinkedServiceSpec {
    pub name: Spanned<String>,
    #[serde(rename = "type")]
    pub service_type: Spanned<String>,
    /// `AzureKeyVault` only: the vault behind it (`baseUrl` is its URL).
    pub key_vault: Option<Spanned<String>>,
    /// `AzureBlobFS` only: the account whose `url` it names.
    pub account: Option<Spanned<String>>,
    /// The secret as a `SecureString`.
    pub value: Option<String>,
    pub value_from: Option<ValueFrom>,
    /// The secret as an `AzureKeyVaultSecret` reference.
    pub key_vault_secret: Option<KeyVaultSecretSpec>,
    pub description: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyVaultSecretSpec {
    /// An `AzureKeyVault` linked service of the same factory.
    pub linked_service: Spanned<String>,
    pub secret: String,
    pub version: Option<String>,
}

impl LinkedServiceSpec {
    /// The type property that holds the secret.
    pub fn secret_property(&self) -> &'static str {
        if self.service_type.get_ref() == "AzureBlobFS" {
            "accountKey"
        } else {
            "connectionString"
        }
    }
}

pub(super) fn check(
    factories: &[DataFactorySpec],
    groups: &HashSet<String>,
    accounts: &BTreeSet<String>,
    vaults: &BTreeSet<String>,
) -> Result<(), Failure> {
    let mut names = HashSet::new();
    for f in factories {
        check_name(&f.name, "data factory", 3, 63, |c| {
            c.is_ascii_alphanumeric() || c == '-'
        })?;
        if !names.insert(f.name.get_ref().to_ascii_lowercase()) {
            return fail(
                &f.name,
                format!("data factory {} is defined twice", f.name.get_ref()),
            );
        }
        if !groups.contains(&f.resource_group.get_ref().to_ascii_lowercase()) {
            return fail(
                &f.resource_group,
                format!(
                    "no [[resource_group]] is named {}",
                    f.resource_group.get_ref()
                ),
            );
        }
        // Linked service name → type, for references between them.
        let mut types: HashMap<String, &str> = HashMap::new();
        for ls in &f.linked_services {
            check_name(&ls.name, "linked service", 1, 260, |c| {
                !"<>*#.%&:\\+?/".contains(c) && !c.is_control()
            })?;
            if types
                .insert(
                    ls.name.get_ref().to_ascii_lowercase(),
                    ls.service_type.get_ref().as_str(),
                )
                .is_some()
            {
                return fail(
                    &ls.name,
                    format!("linked service {} is defined twice", ls.name.get_ref()),
                );
            }
        }
        for ls in &f.linked_services {
            check_linked_service(ls, &types, accounts, vaults)?;
        }
    }
    Ok(())
}

fn check_linked_service(
    ls: &LinkedServiceSpec,
    types: &HashMap<String, &str>,
    accounts: &BTreeSet<String>,
    vaults: &BTreeSet<String>,
) -> Result<(), Failure> {
    let ty = ls.service_type.get_ref().as_str();
    if !LINKED_SERVICE_TYPES.contains(&ty) {
        return fail(
            &ls.service_type,
            format!(
                "linked service type {ty:?} is not one the twin models ({})",
                LINKED_SERVICE_TYPES.join(", ")
            ),
        );
    }
    let known_account = |a: &Spanned<String>| {
        if accounts.contains(a.get_ref()) {
            Ok(())
        } else {
            fail(
                a,
                format!("no [[storage_account]] is named {}", a.get_ref()),
            )
        }
    };
    if ty == "AzureKeyVault" {
        let Some(v) = &ls.key_vault else {
            return fail(
                &ls.name,
                "an AzureKeyVault linked service needs `key_vault = \"...\"`".into(),
            );
        };
        if !vaults.contains(&v.get_ref().to_ascii_lowercase()) {
            return fail(v, format!("no [[key_vault]] is named {}", v.get_ref()));
        }
        if ls.value.is_some() || ls.value_from.is_some() || ls.key_vault_secret.is_some() {
            return fail(
                &ls.name,
                "an AzureKeyVault linked service holds no secret of its own".into(),
            );
        }
        return Ok(());
    }
    if let Some(v) = &ls.key_vault {
        return fail(
            v,
            "only AzureKeyVault linked services take `key_vault`".into(),
        );
    }
    match (&ls.account, ty) {
        (Some(a), "AzureBlobFS") => known_account(a)?,
        (None, "AzureBlobFS") => {
            return fail(
                &ls.name,
                "an AzureBlobFS linked service needs `account = \"...\"` (its url)".into(),
            );
        }
        (Some(a), _) => return fail(a, "only AzureBlobFS linked services take `account`".into()),
        (None, _) => {}
    }
    let sources = usize::from(ls.value.is_some())
        + usize::from(ls.value_from.is_some())
        + usize::from(ls.key_vault_secret.is_some());
    if sources != 1 {
        return fail(
            &ls.name,
            format!(
                "{} needs exactly one of `value`, `value_from` and `key_vault_secret`",
                ls.name.get_ref()
            ),
        );
    }
    if let Some(f) = &ls.value_from {
        known_account(&f.account)?;
    }
    if let Some(r) = &ls.key_vault_secret {
        match types.get(&r.linked_service.get_ref().to_ascii_lowercase()) {
            Some(&"AzureKeyVault") => {}
            _ => {
                return fail(
                    &r.linked_service,
                    format!(
                        "{} is not an AzureKeyVault linked service of this factory",
                        r.linked_service.get_ref()
                    ),
                );
            }
        }
    }
    Ok(())
}
