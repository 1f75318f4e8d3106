//! Builds the live state from a validated [`World`]: generates the keys and secrets
//! the world leaves open, resolves `value_from` references, and canonicalises ids.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::*;
use crate::entropy;
use crate::rbac::{Rbac, RoleDef, builtin};
use crate::throttle::Throttles;
use crate::world::{CredentialKind, DatastoreType, KeyName, ValueFormat, ValueFrom, World};

/// Everything [`build`] produces.
pub(crate) struct Built {
    pub topology: Topology,
    pub directory: Directory,
    pub rbac: Rbac,
    pub core: Core,
    pub identity_header: String,
    /// Principal name that `/msi/token` serves when no identity is selected.
    pub msi_default: Option<String>,
}

pub(crate) fn arm_id(sub: &str, rg: &str, provider_type: &str, name: &str) -> String {
    format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/{provider_type}/{name}")
}

pub(crate) fn build(world: &World, base_url: &str, now: DateTime<Utc>) -> Result<Built, String> {
    let subscriptions: Vec<Subscription> = world
        .subscriptions
        .iter()
        .map(|s| Subscription {
            id: s.id.get_ref().to_ascii_lowercase(),
            display_name: s.display_name.clone(),
        })
        .collect();
    let first_sub = subscriptions
        .first()
        .map(|s| s.id.clone())
        .ok_or("the world has no subscription")?;
    let groups: Vec<ResourceGroup> = world
        .resource_groups
        .iter()
        .map(|g| ResourceGroup {
            name: g.name.get_ref().clone(),
            subscription: g
                .subscription
                .as_ref()
                .map(|s| s.get_ref().to_ascii_lowercase())
                .unwrap_or_else(|| first_sub.clone()),
            location: g.location.clone(),
        })
        .collect();
    let group = |name: &str| -> Result<&ResourceGroup, String> {
        groups
            .iter()
            .find(|g| g.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| format!("resource group {name} is not defined"))
    };

    let mut accounts = BTreeMap::new();
    for a in &world.storage_accounts {
        let g = group(a.resource_group.get_ref())?;
        let created = |t: &Option<toml::Spanned<String>>| -> DateTime<Utc> {
            t.as_ref()
                .and_then(|s| DateTime::parse_from_rfc3339(s.get_ref()).ok())
                .map(|d| d.with_timezone(&Utc))
                .unwrap_or(now)
        };
        let key = |v: &Option<toml::Spanned<String>>, t| AccountKey {
            value: v
                .as_ref()
                .map(|s| s.get_ref().clone())
                .unwrap_or_else(entropy::storage_key),
            created: created(t),
            accepted_from: DateTime::<Utc>::MIN_UTC,
        };
        let name = a.name.get_ref().clone();
        accounts.insert(
            name.clone(),
            StorageAccount {
                id: arm_id(
                    &g.subscription,
                    &g.name,
                    "Microsoft.Storage/storageAccounts",
                    &name,
                ),
                name,
                subscription: g.subscription.clone(),
                group: g.name.clone(),
                location: g.location.clone(),
                sku: a.sku.get_ref().clone(),
                kind: a.kind.get_ref().clone(),
                created: now,
                allow_shared_key_access: a.allow_shared_key_access,
                key_expiration_days: a.key_expiration_days,
                tags: Map::new(),
                keys: [key(&a.key1, &a.key1_created), key(&a.key2, &a.key2_created)],
                containers: a.containers.clone(),
            },
        );
    }
    let resolve = |f: &ValueFrom| -> Result<String, String> {
        let acct = accounts
            .get(f.account.get_ref())
            .ok_or_else(|| format!("storage account {} is not defined", f.account.get_ref()))?;
        let key = &acct.keys[key_index(f.key)].value;
        Ok(match f.format {
            ValueFormat::RawKey => key.clone(),
            ValueFormat::ConnectionString => format!(
                "DefaultEndpointsProtocol=https;AccountName={};AccountKey={key};BlobEndpoint={base_url}/{}/",
                acct.name, acct.name
            ),
        })
    };

    let mut vaults = BTreeMap::new();
    let created = now.timestamp();
    for v in &world.key_vaults {
        let g = group(v.resource_group.get_ref())?;
        let mut secrets = BTreeMap::new();
        for s in &v.secrets {
            let value = match (&s.value, &s.value_from) {
                (Some(v), _) => v.clone(),
                (None, Some(f)) => resolve(f)?,
                (None, None) => return Err(format!("secret {} has no value", s.name.get_ref())),
            };
            secrets.insert(
                s.name.get_ref().to_ascii_lowercase(),
                VaultSecret {
                    name: s.name.get_ref().clone(),
                    versions: vec![SecretVersion {
                        version: entropy::hex32(),
                        value,
                        enabled: true,
                        content_type: s.content_type.clone(),
                        tags: s.tags.clone(),
                        created,
                        updated: created,
                        nbf: None,
                        exp: None,
                    }],
                },
            );
        }
        vaults.insert(
            v.name.get_ref().to_ascii_lowercase(),
            Vault {
                name: v.name.get_ref().clone(),
                id: arm_id(
                    &g.subscription,
                    &g.name,
                    "Microsoft.KeyVault/vaults",
                    v.name.get_ref(),
                ),
                location: g.location.clone(),
                secrets,
            },
        );
    }

    let mut workspaces = BTreeMap::new();
    for m in &world.ml_workspaces {
        let g = group(m.resource_group.get_ref())?;
        let acct = accounts.get(m.storage_account.get_ref()).ok_or_else(|| {
            format!(
                "storage account {} is not defined",
                m.storage_account.get_ref()
            )
        })?;
        let id = arm_id(
            &g.subscription,
            &g.name,
            "Microsoft.MachineLearningServices/workspaces",
            m.name.get_ref(),
        );
        let mut datastores = BTreeMap::new();
        let mut order = Vec::new();
        for d in &m.datastores {
            let secret = match (d.credential, d.key, &d.sas_token) {
                (CredentialKind::AccountKey, Some(k), _) => {
                    let a = accounts.get(d.account.get_ref()).ok_or_else(|| {
                        format!("storage account {} is not defined", d.account.get_ref())
                    })?;
                    DatastoreSecret::AccountKey(a.keys[key_index(k)].value.clone())
                }
                (CredentialKind::Sas, _, Some(t)) => DatastoreSecret::Sas(t.clone()),
                _ => DatastoreSecret::None,
            };
            let (kind, secrets_type) = match d.credential {
                CredentialKind::AccountKey => ("AccountKey", "AccountKey"),
                CredentialKind::Sas => ("Sas", "Sas"),
            };
            let mut props = json!({
                "description": "",
                "tags": {},
                "properties": {},
                "isDefault": d.default,
                "credentials": {"credentialsType": kind, "secrets": {"secretsType": secrets_type}},
                "accountName": d.account.get_ref(),
                "endpoint": "core.windows.net",
                "protocol": "https",
                "serviceDataAccessAuthIdentity": "None",
                "subscriptionId": g.subscription,
                "resourceGroup": g.name,
            });
            if let Some(obj) = props.as_object_mut() {
                match d.datastore_type {
                    DatastoreType::AzureBlob => {
                        obj.insert("datastoreType".into(), json!("AzureBlob"));
                        obj.insert(
                            "containerName".into(),
                            json!(d.container.clone().unwrap_or_default()),
                        );
                    }
                    DatastoreType::AzureFile => {
                        obj.insert("datastoreType".into(), json!("AzureFile"));
                        obj.insert(
                            "fileShareName".into(),
                            json!(d.file_share.clone().unwrap_or_default()),
                        );
                    }
                }
            }
            let key = d.name.get_ref().to_ascii_lowercase();
            order.push(key.clone());
            datastores.insert(
                key,
                Datastore {
                    name: d.name.get_ref().clone(),
                    properties: match props {
                        Value::Object(m) => m,
                        _ => Map::new(),
                    },
                    secret,
                    created: now,
                    created_by: "keyflip-twin".into(),
                    modified: now,
                    modified_by: "keyflip-twin".into(),
                },
            );
        }
        let key_vault_id = match &m.key_vault {
            Some(v) => Some(
                vaults
                    .get(&v.get_ref().to_ascii_lowercase())
                    .map(|v: &Vault| v.id.clone())
                    .ok_or_else(|| format!("key vault {} is not defined", v.get_ref()))?,
            ),
            None => None,
        };
        workspaces.insert(
            m.name.get_ref().to_ascii_lowercase(),
            Workspace {
                name: m.name.get_ref().clone(),
                id,
                subscription: g.subscription.clone(),
                group: g.name.clone(),
                location: g.location.clone(),
                workspace_id: uuid::Uuid::new_v4().to_string(),
                storage_account: acct.name.clone(),
                storage_account_id: acct.id.clone(),
                key_vault_id,
                user_storage_key: acct.keys[key_index(m.user_storage_key)].value.clone(),
                datastores,
                order,
            },
        );
    }

    let mut databricks = BTreeMap::new();
    for d in &world.databricks_workspaces {
        let g = group(d.resource_group.get_ref())?;
        let mut scopes = Vec::new();
        for s in &d.scopes {
            let mut secrets = BTreeMap::new();
            for k in &s.secrets {
                let value = match (&k.value, &k.value_from) {
                    (Some(v), _) => v.clone(),
                    (None, Some(f)) => resolve(f)?,
                    (None, None) => return Err(format!("secret {} has no value", k.key.get_ref())),
                };
                secrets.insert(
                    k.key.get_ref().clone(),
                    ScopeSecret {
                        value: ScopeValue::String(value),
                        last_updated_ms: now.timestamp_millis(),
                    },
                );
            }
            scopes.push(SecretScope {
                name: s.name.get_ref().clone(),
                backend: s.backend,
                vault: s
                    .key_vault
                    .as_ref()
                    .map(|v| v.get_ref().to_ascii_lowercase()),
                acl: s.acl.clone(),
                secrets,
            });
        }
        databricks.insert(
            d.name.get_ref().to_ascii_lowercase(),
            DatabricksWorkspace {
                name: d.name.get_ref().clone(),
                id: arm_id(
                    &g.subscription,
                    &g.name,
                    "Microsoft.Databricks/workspaces",
                    d.name.get_ref(),
                ),
                users: d.users.iter().map(|u| u.get_ref().clone()).collect(),
                scopes,
            },
        );
    }

    let vault_url = |name: &str| {
        let shown = vaults
            .get(&name.to_ascii_lowercase())
            .map(|v: &Vault| v.name.clone())
            .unwrap_or_else(|| name.to_string());
        format!("{base_url}/keyvault/{shown}")
    };
    let cx = web::BuildCtx {
        value_of: &resolve,
        vault_url: &vault_url,
        vaults: &vaults,
        base: base_url,
        now,
    };
    let place = |rg: &str, provider_type: &str, name: &str| -> Result<web::Place, String> {
        let g = group(rg)?;
        Ok(web::Place {
            id: arm_id(&g.subscription, &g.name, provider_type, name),
            subscription: g.subscription.clone(),
            group: g.name.clone(),
            location: g.location.clone(),
        })
    };
    let mut web_apps = BTreeMap::new();
    for s in &world.web_apps {
        let at = place(
            s.resource_group.get_ref(),
            "Microsoft.Web/sites",
            s.name.get_ref(),
        )?;
        web_apps.insert(
            s.name.get_ref().to_ascii_lowercase(),
            web::build(s, at, &cx)?,
        );
    }
    let mut factories = BTreeMap::new();
    for f in &world.data_factories {
        let at = place(
            f.resource_group.get_ref(),
            "Microsoft.DataFactory/factories",
            f.name.get_ref(),
        )?;
        factories.insert(
            f.name.get_ref().to_ascii_lowercase(),
            datafactory::build(f, at, &cx)?,
        );
    }

    let principals: Vec<Principal> = world
        .principals
        .iter()
        .map(|p| Principal {
            name: p.name.get_ref().clone(),
            client_id: p.client_id.get_ref().to_ascii_lowercase(),
            object_id: p.object_id.get_ref().to_ascii_lowercase(),
            client_secret: p.client_secret.clone().unwrap_or_else(entropy::token),
            federated: p
                .federated_credentials
                .iter()
                .map(|f| (f.issuer.clone(), f.subject.clone()))
                .collect(),
            // Validated when the world was loaded.
            certificates: p
                .certificates
                .iter()
                .filter_map(|c| crate::certificate::RegisteredCert::from_pem(c.get_ref()).ok())
                .collect(),
        })
        .collect();

    let mut roles = builtin::all();
    for r in &world.custom_roles {
        let scopes = if r.assignable_scopes.is_empty() {
            world
                .subscriptions
                .iter()
                .map(|s| format!("/subscriptions/{}", s.id.get_ref()))
                .collect()
        } else {
            r.assignable_scopes.clone()
        };
        roles.push(RoleDef::new(
            r.id.get_ref(),
            r.name.get_ref(),
            &r.description,
            false,
            r.actions.clone(),
            r.not_actions.clone(),
            r.data_actions.clone(),
            r.not_data_actions.clone(),
            scopes,
        ));
    }
    let mut rbac = Rbac::new(roles);
    let oids: HashMap<&str, &str> = principals
        .iter()
        .map(|p| (p.name.as_str(), p.object_id.as_str()))
        .collect();
    for a in &world.role_assignments {
        let role = rbac
            .find(a.role.get_ref())
            .ok_or_else(|| format!("role {} is not defined", a.role.get_ref()))?;
        let oid = oids
            .get(a.principal.get_ref().as_str())
            .ok_or_else(|| format!("principal {} is not defined", a.principal.get_ref()))?;
        rbac.assign(oid, role, a.scope.get_ref());
    }

    let monitor = crate::monitor::build(
        world,
        &accounts,
        &|rg: &str| {
            groups
                .iter()
                .find(|g| g.name.eq_ignore_ascii_case(rg))
                .map(|g| (g.subscription.clone(), g.name.clone(), g.location.clone()))
        },
        now,
    )?;
    let (identity_header, msi_default) = match &world.managed_identity {
        Some(mi) => (
            mi.header.clone(),
            Some(mi.default_principal.get_ref().clone()),
        ),
        None => (entropy::token(), None),
    };
    Ok(Built {
        topology: Topology {
            tenant_id: world.tenant.id.get_ref().to_ascii_lowercase(),
            tenant_name: world.tenant.display_name.clone(),
            subscriptions,
            groups,
        },
        directory: Directory { principals },
        rbac,
        core: Core {
            settings: world.settings.clone(),
            accounts,
            vaults,
            workspaces,
            databricks,
            web_apps,
            factories,
            base_url: base_url.to_string(),
            lros: HashMap::new(),
            throttles: Throttles::default(),
            monitor,
        },
        identity_header,
        msi_default,
    })
}

fn key_index(k: KeyName) -> usize {
    match k {
        KeyName::Key1 => 0,
        KeyName::Key2 => 1,
    }
}
