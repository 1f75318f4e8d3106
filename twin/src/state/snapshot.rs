//! The admin state snapshot (`GET /_admin/state`): every value tests need to check
//! invariants (account keys and their creation times, every Key Vault secret version,
//! workspace and datastore keys, Databricks secrets, App Service settings and
//! restarts, Data Factory linked services). The values are the twin's own fake keys.

use serde_json::{Map, Value, json};

use super::{Core, DatastoreSecret, ScopeValue};
use crate::clock::azure_time;

pub(crate) fn snapshot(core: &Core, base_url: &str) -> Value {
    let accounts: Map<String, Value> = core
        .accounts
        .values()
        .map(|a| {
            (
                a.name.clone(),
                json!({
                    "id": a.id,
                    "key1": a.keys[0].value,
                    "key2": a.keys[1].value,
                    "keyCreationTime": {"key1": azure_time(a.keys[0].created), "key2": azure_time(a.keys[1].created)},
                    "allowSharedKeyAccess": a.allow_shared_key_access,
                    "keyPolicy": a.key_expiration_days.map(|d| json!({"keyExpirationPeriodInDays": d})),
                }),
            )
        })
        .collect();
    let vaults: Map<String, Value> = core
        .vaults
        .values()
        .map(|v| {
            let secrets: Map<String, Value> = v
                .secrets
                .values()
                .map(|s| {
                    let versions: Vec<Value> = s
                        .versions
                        .iter()
                        .map(|x| {
                            json!({
                                "id": format!("{base_url}/secrets/{}/{}", s.name, x.version),
                                "version": x.version,
                                "value": x.value,
                                "enabled": x.enabled,
                                "tags": x.tags,
                                "contentType": x.content_type,
                                "created": x.created,
                                "updated": x.updated,
                            })
                        })
                        .collect();
                    (s.name.clone(), Value::Array(versions))
                })
                .collect();
            (v.name.clone(), json!({"id": v.id, "secrets": secrets}))
        })
        .collect();
    let workspaces: Map<String, Value> = core
        .workspaces
        .values()
        .map(|w| {
            let datastores: Map<String, Value> = w
                .order
                .iter()
                .filter_map(|k| w.datastores.get(k))
                .map(|d| {
                    let (kind, key, sas) = match &d.secret {
                        DatastoreSecret::AccountKey(k) => ("AccountKey", Some(k.clone()), None),
                        DatastoreSecret::Sas(t) => ("Sas", None, Some(t.clone())),
                        DatastoreSecret::None => ("None", None, None),
                    };
                    let p = &d.properties;
                    (
                        d.name.clone(),
                        json!({
                            "datastoreType": p.get("datastoreType"),
                            "accountName": p.get("accountName"),
                            "isDefault": p.get("isDefault"),
                            "credentialsType": kind,
                            "key": key,
                            "sasToken": sas,
                        }),
                    )
                })
                .collect();
            (
                w.name.clone(),
                json!({
                    "id": w.id,
                    "storageAccount": w.storage_account,
                    "userStorageKey": w.user_storage_key,
                    "datastores": datastores,
                }),
            )
        })
        .collect();
    let databricks: Map<String, Value> = core
        .databricks
        .values()
        .map(|d| {
            let scopes: Map<String, Value> = d
                .scopes
                .iter()
                .map(|s| {
                    let secrets: Map<String, Value> = s
                        .secrets
                        .iter()
                        .map(|(k, v)| {
                            let (sv, bv) = match &v.value {
                                ScopeValue::String(x) => (Some(x.clone()), None),
                                ScopeValue::Bytes(x) => (None, Some(x.clone())),
                            };
                            (
                                k.clone(),
                                json!({"string_value": sv, "bytes_value": bv, "last_updated_timestamp": v.last_updated_ms}),
                            )
                        })
                        .collect();
                    (
                        s.name.clone(),
                        json!({"backend_type": s.backend, "key_vault": s.vault, "secrets": secrets}),
                    )
                })
                .collect();
            (d.name.clone(), json!({"id": d.id, "scopes": scopes}))
        })
        .collect();
    let web_apps: Map<String, Value> = core
        .web_apps
        .values()
        .map(|w| (w.name.clone(), super::web::snapshot(w)))
        .collect();
    let factories: Map<String, Value> = core
        .factories
        .values()
        .map(|f| (f.name.clone(), super::datafactory::snapshot(f)))
        .collect();
    // Configuration only: resource-log rows and simulated clients change with every
    // data-plane request, and a snapshot must stay equal across reads.
    let log_analytics: Map<String, Value> = core
        .monitor
        .workspaces
        .values()
        .map(|w| {
            (
                w.name.clone(),
                json!({"id": w.id, "workspaceId": w.customer_id}),
            )
        })
        .collect();
    let settings: Vec<Value> = core
        .monitor
        .settings
        .iter()
        .map(|d| {
            json!({
                "account": d.account,
                "service": d.service,
                "name": d.name,
                "workspace": d.workspace.as_ref().and_then(|w| core.monitor.workspaces.get(w)).map(|w| &w.name),
                "categories": d.categories,
            })
        })
        .collect();
    json!({
        "web_apps": web_apps,
        "data_factories": factories,
        "storage_accounts": accounts,
        "key_vaults": vaults,
        "ml_workspaces": workspaces,
        "databricks_workspaces": databricks,
        "log_analytics_workspaces": log_analytics,
        "diagnostic_settings": settings,
    })
}
