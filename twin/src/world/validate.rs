//! Semantic checks on a parsed world: names are well formed and unique, and every
//! reference (resource group, account, vault, principal, role, scope) points at
//! something the world defines. Errors carry the span of the offending value so the
//! caller can report file, line and column.

use std::collections::{BTreeSet, HashSet};

use toml::Spanned;

use super::checks::{
    Failure, STORAGE_KINDS, STORAGE_SKUS, check_base64, check_guid, check_name, check_one_of,
    check_one_value, fail, world_scopes,
};
use super::{CredentialKind, DatastoreType, ScopeBackend, World};
use crate::rbac::{builtin, scope_key};

/// Names that are the first path segment of another service, so a storage account
/// with one of them could not be reached path-style.
const RESERVED_ACCOUNT_NAMES: &[&str] = &[
    "msi",
    "keyvault",
    "databricks",
    "subscriptions",
    "providers",
    "metadata",
    "tenants",
    "secrets",
    "common",
    "organizations",
    "consumers",
];

pub(super) fn check(w: &World) -> Result<(), Failure> {
    // Settings are checked by the caller, which can point at the key in the source.
    check_guid(&w.tenant.id, "tenant.id")?;
    if w.subscriptions.is_empty() {
        return Err((0..0, "the world needs at least one [[subscription]]".into()));
    }
    let mut subs = HashSet::new();
    for s in &w.subscriptions {
        check_guid(&s.id, "subscription.id")?;
        if !subs.insert(s.id.get_ref().to_ascii_lowercase()) {
            return fail(
                &s.id,
                format!("subscription {} is defined twice", s.id.get_ref()),
            );
        }
    }
    let mut groups = HashSet::new();
    for g in &w.resource_groups {
        check_name(&g.name, "resource group", 1, 90, |c| {
            c.is_ascii_alphanumeric() || "-_.()".contains(c)
        })?;
        if !groups.insert(g.name.get_ref().to_ascii_lowercase()) {
            return fail(
                &g.name,
                format!(
                    "resource group {} is defined twice (names are unique across the world)",
                    g.name.get_ref()
                ),
            );
        }
        match &g.subscription {
            Some(s) if !subs.contains(&s.get_ref().to_ascii_lowercase()) => {
                return fail(s, format!("no [[subscription]] has id {}", s.get_ref()));
            }
            None if w.subscriptions.len() > 1 => {
                return fail(
                    &g.name,
                    "the world has several subscriptions: say which one with `subscription = \"...\"`"
                        .into(),
                );
            }
            _ => {}
        }
    }
    let known_group = |r: &Spanned<String>| -> Result<(), Failure> {
        if groups.contains(&r.get_ref().to_ascii_lowercase()) {
            Ok(())
        } else {
            fail(r, format!("no [[resource_group]] is named {}", r.get_ref()))
        }
    };

    let mut accounts = BTreeSet::new();
    for a in &w.storage_accounts {
        check_name(&a.name, "storage account", 3, 24, |c| {
            c.is_ascii_lowercase() || c.is_ascii_digit()
        })?;
        if RESERVED_ACCOUNT_NAMES.contains(&a.name.get_ref().as_str()) {
            return fail(
                &a.name,
                format!(
                    "storage account name {} is the path prefix of another twin service; pick another name",
                    a.name.get_ref()
                ),
            );
        }
        if !accounts.insert(a.name.get_ref().clone()) {
            return fail(
                &a.name,
                format!("storage account {} is defined twice", a.name.get_ref()),
            );
        }
        known_group(&a.resource_group)?;
        check_one_of(&a.sku, "sku", STORAGE_SKUS)?;
        check_one_of(&a.kind, "kind", STORAGE_KINDS)?;
        if a.key_expiration_days == Some(0) {
            return fail(
                &a.name,
                "key_expiration_days must be at least 1 (Azure's keyPolicy takes 1 or more days)"
                    .into(),
            );
        }
        for key in [&a.key1, &a.key2].into_iter().flatten() {
            check_base64(key)?;
        }
        for t in [&a.key1_created, &a.key2_created].into_iter().flatten() {
            if chrono::DateTime::parse_from_rfc3339(t.get_ref()).is_err() {
                return fail(
                    t,
                    format!(
                        "expected an RFC 3339 time such as 2026-01-31T12:00:00Z, found {:?}",
                        t.get_ref()
                    ),
                );
            }
        }
    }
    let known_account = |r: &Spanned<String>| -> Result<(), Failure> {
        if accounts.contains(r.get_ref()) {
            Ok(())
        } else {
            fail(
                r,
                format!("no [[storage_account]] is named {}", r.get_ref()),
            )
        }
    };

    let mut vaults = BTreeSet::new();
    for v in &w.key_vaults {
        check_name(&v.name, "key vault", 3, 24, |c| {
            c.is_ascii_alphanumeric() || c == '-'
        })?;
        if !vaults.insert(v.name.get_ref().to_ascii_lowercase()) {
            return fail(
                &v.name,
                format!("key vault {} is defined twice", v.name.get_ref()),
            );
        }
        known_group(&v.resource_group)?;
        let mut names = HashSet::new();
        for s in &v.secrets {
            check_name(&s.name, "secret", 1, 127, |c| {
                c.is_ascii_alphanumeric() || c == '-'
            })?;
            if !names.insert(s.name.get_ref().to_ascii_lowercase()) {
                return fail(
                    &s.name,
                    format!("secret {} is defined twice", s.name.get_ref()),
                );
            }
            check_one_value(
                &s.name,
                s.value.is_some(),
                s.value_from.as_ref().map(|f| &f.account),
            )?;
            if let Some(f) = &s.value_from {
                known_account(&f.account)?;
            }
            if s.tags.len() > crate::keyvault::MAX_SECRET_TAGS {
                return fail(
                    &s.name,
                    format!(
                        "secret {} has {} tags; Key Vault allows at most {} on a secret",
                        s.name.get_ref(),
                        s.tags.len(),
                        crate::keyvault::MAX_SECRET_TAGS
                    ),
                );
            }
        }
    }
    let known_vault = |r: &Spanned<String>| -> Result<(), Failure> {
        if vaults.contains(&r.get_ref().to_ascii_lowercase()) {
            Ok(())
        } else {
            fail(r, format!("no [[key_vault]] is named {}", r.get_ref()))
        }
    };

    let mut principals = BTreeSet::new();
    let mut client_ids = HashSet::new();
    for p in &w.principals {
        check_name(&p.name, "principal", 1, 64, |c| {
            c.is_ascii_alphanumeric() || "-_.".contains(c)
        })?;
        check_guid(&p.client_id, "client_id")?;
        check_guid(&p.object_id, "object_id")?;
        for cert in &p.certificates {
            if let Err(why) = crate::certificate::RegisteredCert::from_pem(cert.get_ref()) {
                return fail(
                    cert,
                    format!(
                        "a certificate of principal {} is unusable: {why}",
                        p.name.get_ref()
                    ),
                );
            }
        }
        if !principals.insert(p.name.get_ref().clone()) {
            return fail(
                &p.name,
                format!("principal {} is defined twice", p.name.get_ref()),
            );
        }
        if !client_ids.insert(p.client_id.get_ref().to_ascii_lowercase())
            || !client_ids.insert(p.object_id.get_ref().to_ascii_lowercase())
        {
            return fail(
                &p.client_id,
                "client and object ids must be unique across principals".into(),
            );
        }
    }
    let known_principal = |r: &Spanned<String>| -> Result<(), Failure> {
        if principals.contains(r.get_ref()) {
            Ok(())
        } else {
            fail(r, format!("no [[principal]] is named {}", r.get_ref()))
        }
    };

    let mut workspaces = HashSet::new();
    for m in &w.ml_workspaces {
        check_name(&m.name, "ML workspace", 3, 33, |c| {
            c.is_ascii_alphanumeric() || "-_".contains(c)
        })?;
        if !workspaces.insert(m.name.get_ref().to_ascii_lowercase()) {
            return fail(
                &m.name,
                format!("ML workspace {} is defined twice", m.name.get_ref()),
            );
        }
        known_group(&m.resource_group)?;
        known_account(&m.storage_account)?;
        if let Some(v) = &m.key_vault {
            known_vault(v)?;
        }
        let mut names = HashSet::new();
        let mut defaults = 0;
        for d in &m.datastores {
            check_name(&d.name, "datastore", 1, 255, |c| {
                c.is_ascii_alphanumeric() || "-_".contains(c)
            })?;
            if !names.insert(d.name.get_ref().to_ascii_lowercase()) {
                return fail(
                    &d.name,
                    format!("datastore {} is defined twice", d.name.get_ref()),
                );
            }
            defaults += usize::from(d.default);
            match (d.datastore_type, &d.container, &d.file_share) {
                (DatastoreType::AzureBlob, Some(_), None)
                | (DatastoreType::AzureFile, None, Some(_)) => {}
                (DatastoreType::AzureBlob, _, _) => {
                    return fail(
                        &d.name,
                        "an AzureBlob datastore needs `container` (and no `file_share`)".into(),
                    );
                }
                (DatastoreType::AzureFile, _, _) => {
                    return fail(
                        &d.name,
                        "an AzureFile datastore needs `file_share` (and no `container`)".into(),
                    );
                }
            }
            match (d.credential, d.key, &d.sas_token) {
                (CredentialKind::AccountKey, Some(_), None) => known_account(&d.account)?,
                (CredentialKind::Sas, None, Some(_)) => {}
                (CredentialKind::AccountKey, _, _) => {
                    return fail(&d.name, "credential = \"account-key\" needs `key = \"key1\"|\"key2\"` and no `sas_token`".into());
                }
                (CredentialKind::Sas, _, _) => {
                    return fail(
                        &d.name,
                        "credential = \"sas\" needs `sas_token` and no `key`".into(),
                    );
                }
            }
        }
        if defaults > 1 {
            return fail(
                &m.name,
                "at most one datastore of a workspace can be `default = true`".into(),
            );
        }
    }

    let mut dbws = HashSet::new();
    for d in &w.databricks_workspaces {
        check_name(&d.name, "Databricks workspace", 3, 64, |c| {
            c.is_ascii_alphanumeric() || "-_".contains(c)
        })?;
        if !dbws.insert(d.name.get_ref().to_ascii_lowercase()) {
            return fail(
                &d.name,
                format!("Databricks workspace {} is defined twice", d.name.get_ref()),
            );
        }
        known_group(&d.resource_group)?;
        for u in &d.users {
            known_principal(u)?;
        }
        let mut scopes = HashSet::new();
        for s in &d.scopes {
            check_name(&s.name, "secret scope", 1, 128, |c| {
                c.is_ascii_alphanumeric() || "-_.".contains(c)
            })?;
            if !scopes.insert(s.name.get_ref().clone()) {
                return fail(
                    &s.name,
                    format!("secret scope {} is defined twice", s.name.get_ref()),
                );
            }
            for who in s.acl.keys() {
                if !principals.contains(who) {
                    return fail(
                        &s.name,
                        format!(
                            "the acl of scope {} names {who}, which is not a [[principal]]",
                            s.name.get_ref()
                        ),
                    );
                }
            }
            match (s.backend, &s.key_vault) {
                (ScopeBackend::AzureKeyVault, Some(v)) => {
                    known_vault(v)?;
                    if !s.secrets.is_empty() {
                        return fail(&s.name, "an AZURE_KEYVAULT scope holds no secrets of its own; put them in the vault".into());
                    }
                }
                (ScopeBackend::AzureKeyVault, None) => {
                    return fail(
                        &s.name,
                        "an AZURE_KEYVAULT scope needs `key_vault = \"...\"`".into(),
                    );
                }
                (ScopeBackend::Databricks, Some(v)) => {
                    return fail(v, "only AZURE_KEYVAULT scopes take `key_vault`".into());
                }
                (ScopeBackend::Databricks, None) => {}
            }
            let mut keys = HashSet::new();
            for k in &s.secrets {
                check_name(&k.key, "secret key", 1, 128, |c| {
                    c.is_ascii_alphanumeric() || "-_.".contains(c)
                })?;
                if !keys.insert(k.key.get_ref().clone()) {
                    return fail(
                        &k.key,
                        format!("secret {} is defined twice", k.key.get_ref()),
                    );
                }
                check_one_value(
                    &k.key,
                    k.value.is_some(),
                    k.value_from.as_ref().map(|f| &f.account),
                )?;
                if let Some(f) = &k.value_from {
                    known_account(&f.account)?;
                }
            }
        }
    }

    super::web::check(&w.web_apps, &groups, &accounts, &vaults)?;
    super::datafactory::check(&w.data_factories, &groups, &accounts, &vaults)?;

    let mut role_names: HashSet<String> = builtin::roles()
        .iter()
        .map(|r| r.name.to_ascii_lowercase())
        .collect();
    let mut role_ids: HashSet<String> = builtin::roles().iter().map(|r| r.id.to_string()).collect();
    for r in &w.custom_roles {
        check_guid(&r.id, "custom_role.id")?;
        if !role_names.insert(r.name.get_ref().to_ascii_lowercase()) {
            return fail(
                &r.name,
                format!("a role named {} already exists", r.name.get_ref()),
            );
        }
        if !role_ids.insert(r.id.get_ref().to_ascii_lowercase()) {
            return fail(
                &r.id,
                format!("a role with id {} already exists", r.id.get_ref()),
            );
        }
    }

    let resource_ids = world_scopes(w);
    for a in &w.role_assignments {
        known_principal(&a.principal)?;
        let role = a.role.get_ref().to_ascii_lowercase();
        if !role_names.contains(&role) && !role_ids.contains(&role) {
            return fail(
                &a.role,
                format!(
                    "no built-in or custom role is named {} (or has that id)",
                    a.role.get_ref()
                ),
            );
        }
        if !resource_ids.contains(&scope_key(a.scope.get_ref())) {
            return fail(
                &a.scope,
                format!(
                    "scope {} is not a subscription, resource group or resource of this world (expected a full id such as /subscriptions/<id>/resourceGroups/<name>)",
                    a.scope.get_ref()
                ),
            );
        }
    }
    if let Some(mi) = &w.managed_identity {
        known_principal(&mi.default_principal)?;
    }
    super::monitor::check(w, &accounts, &groups)?;
    Ok(())
}
