//! Microsoft.Storage storage accounts: GET, PATCH (`keyPolicy`,
//! `allowSharedKeyAccess`, `tags`), `listKeys` and `regenerateKey`.
//!
//! `regenerateKey` changes only the named key, sets its `keyCreationTime` to now, and
//! starts the propagation delay for the new value on the data plane. Both POST
//! actions answer with every key, `permissions` in the live service's upper case.

use serde_json::{Map, Value, json};

use super::route::StorageAction;
use super::{authorize, check_group, error, json_body, kind_of, resource_not_found, throttle};
use crate::auth::Caller;
use crate::clock::azure_time;
use crate::server::Shared;
use crate::state::StorageAccount;
use crate::wire::{self, Req, Resp};

const TYPE: &str = "Microsoft.Storage/storageAccounts";

pub(super) fn run(
    sh: &Shared,
    req: &Req,
    caller: &Caller,
    sub: &str,
    rg: &str,
    name: &str,
    action: StorageAction,
) -> Resp {
    let write = !matches!(action, StorageAction::Get);
    let scope = format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/{TYPE}/{name}");
    let verb = match action {
        StorageAction::Get => "read",
        StorageAction::Patch => "write",
        StorageAction::ListKeys => "listKeys/action",
        StorageAction::Regenerate => "regenerateKey/action",
    };
    let mut core = sh.core();
    if let Err(r) = throttle(sh, &mut core, sub, write, caller) {
        return r;
    }
    if let Err(r) = authorize(sh, caller, &format!("{TYPE}/{verb}"), &scope) {
        return r;
    }
    if let Err(r) = check_group(sh, sub, rg) {
        return r;
    }
    let found = core
        .accounts
        .get(name)
        .filter(|a| a.subscription.eq_ignore_ascii_case(sub) && a.group.eq_ignore_ascii_case(rg));
    let Some(account) = found else {
        return resource_not_found(TYPE, name, rg);
    };
    match action {
        StorageAction::Get => {
            let geo_stats = req
                .param("$expand")
                .is_some_and(|e| e.eq_ignore_ascii_case("geoReplicationStats"));
            wire::json(200, &account_json(&sh.base_url, account, geo_stats))
        }
        StorageAction::ListKeys => wire::json(200, &keys_json(account)),
        StorageAction::Patch => {
            let body = match json_body(req) {
                Ok(b) => b,
                Err(r) => return r,
            };
            let mut updated = account.clone();
            if let Err(r) = apply_patch(&mut updated, &body) {
                return r;
            }
            let out = account_json(&sh.base_url, &updated, false);
            core.accounts.insert(updated.name.clone(), updated);
            wire::json(200, &out)
        }
        StorageAction::Regenerate => {
            let body = match json_body(req) {
                Ok(b) => b,
                Err(r) => return r,
            };
            let key_name = body.get("keyName").and_then(Value::as_str).unwrap_or("");
            let Some(index) = StorageAccount::key_index(key_name) else {
                return error(
                    400,
                    "InvalidValuesForRequestParameters",
                    &format!(
                        "Values for request parameters are invalid: keyName. Expected 'key1' or 'key2' (kerb keys are not modelled by keyflip-twin), found '{key_name}'."
                    ),
                );
            };
            let account_name = account.name.clone();
            let now = sh.clock.now();
            core.regenerate(&account_name, index, now);
            match core.accounts.get(&account_name) {
                Some(a) => wire::json(200, &keys_json(a)),
                None => resource_not_found(TYPE, name, rg),
            }
        }
    }
}

fn apply_patch(a: &mut StorageAccount, body: &Map<String, Value>) -> Result<(), Resp> {
    let bad = |field: &str, expected: &str, found: &Value| {
        error(
            400,
            "InvalidRequestPropertyValue",
            &format!(
                "The value of property '{field}' is invalid: expected {expected}, found {}.",
                kind_of(found)
            ),
        )
    };
    if let Some(tags) = body.get("tags") {
        match tags {
            Value::Object(m) if m.values().all(Value::is_string) => a.tags = m.clone(),
            other => return Err(bad("tags", "an object of strings", other)),
        }
    }
    let Some(props) = body.get("properties") else {
        return Ok(());
    };
    let Value::Object(props) = props else {
        return Err(bad("properties", "an object", props));
    };
    match props.get("allowSharedKeyAccess") {
        None => {}
        Some(Value::Null) => a.allow_shared_key_access = true,
        Some(Value::Bool(b)) => a.allow_shared_key_access = *b,
        Some(other) => return Err(bad("properties.allowSharedKeyAccess", "a boolean", other)),
    }
    match props.get("keyPolicy") {
        None => {}
        Some(Value::Null) => a.key_expiration_days = None,
        Some(Value::Object(p)) => match p.get("keyExpirationPeriodInDays") {
            Some(Value::Number(n))
                if n.as_u64()
                    .is_some_and(|d| (1..=u64::from(u32::MAX)).contains(&d)) =>
            {
                a.key_expiration_days = n.as_u64().and_then(|d| u32::try_from(d).ok());
            }
            Some(other) => {
                return Err(bad(
                    "properties.keyPolicy.keyExpirationPeriodInDays",
                    "a positive integer",
                    other,
                ));
            }
            None => {
                return Err(error(
                    400,
                    "InvalidRequestPropertyValue",
                    "The property 'properties.keyPolicy.keyExpirationPeriodInDays' is required when keyPolicy is set.",
                ));
            }
        },
        Some(other) => return Err(bad("properties.keyPolicy", "an object", other)),
    }
    Ok(())
}

pub(super) fn keys_json(a: &StorageAccount) -> Value {
    let keys: Vec<Value> = a
        .keys
        .iter()
        .zip(["key1", "key2"])
        .map(|(k, name)| {
            json!({"creationTime": azure_time(k.created), "keyName": name, "value": k.value, "permissions": "FULL"})
        })
        .collect();
    json!({"keys": keys})
}

/// Azure's paired region of a region, for the secondary of geo-redundant accounts.
fn paired_region(location: &str) -> Option<&'static str> {
    const PAIRS: &[(&str, &str)] = &[
        ("westeurope", "northeurope"),
        ("eastus", "westus"),
        ("eastus2", "centralus"),
        ("westus2", "westcentralus"),
        ("northcentralus", "southcentralus"),
        ("uksouth", "ukwest"),
        ("francecentral", "francesouth"),
        ("germanywestcentral", "germanynorth"),
        ("swedencentral", "swedensouth"),
        ("switzerlandnorth", "switzerlandwest"),
        ("norwayeast", "norwaywest"),
        ("japaneast", "japanwest"),
        ("australiaeast", "australiasoutheast"),
        ("southeastasia", "eastasia"),
        ("canadacentral", "canadaeast"),
        ("centralindia", "southindia"),
        ("koreacentral", "koreasouth"),
    ];
    let l = location.to_ascii_lowercase();
    PAIRS.iter().find_map(|&(a, b)| {
        if a == l {
            Some(b)
        } else if b == l {
            Some(a)
        } else {
            None
        }
    })
}

/// The StorageAccount model. Secondary-region fields appear only for geo-redundant
/// SKUs, as in Azure; `geoReplicationStats` only when `$expand` asked for it.
pub(super) fn account_json(base_url: &str, a: &StorageAccount, geo_stats: bool) -> Value {
    let n = &a.name;
    let azure = |svc: &str, suffix: &str| format!("https://{n}{suffix}.{svc}.core.windows.net/");
    let tier = if a.sku.starts_with("Premium") {
        "Premium"
    } else {
        "Standard"
    };
    let created = azure_time(a.created);
    let mut props = json!({
        "keyCreationTime": {"key1": azure_time(a.keys[0].created), "key2": azure_time(a.keys[1].created)},
        "allowSharedKeyAccess": a.allow_shared_key_access,
        "isHnsEnabled": false,
        "creationTime": created,
        "networkAcls": {"bypass": "AzureServices", "defaultAction": "Allow", "ipRules": [], "virtualNetworkRules": [], "resourceAccessRules": []},
        "primaryEndpoints": {
            "web": azure("web", ""), "dfs": azure("dfs", ""),
            "blob": format!("{base_url}/{n}/"),
            "file": azure("file", ""), "queue": azure("queue", ""), "table": azure("table", ""),
            "microsoftEndpoints": {
                "web": azure("web", "-microsoftrouting"), "dfs": azure("dfs", "-microsoftrouting"),
                "blob": azure("blob", "-microsoftrouting"), "file": azure("file", "-microsoftrouting"),
                "queue": azure("queue", "-microsoftrouting"), "table": azure("table", "-microsoftrouting"),
            },
            "internetEndpoints": {
                "web": azure("web", "-internetrouting"), "dfs": azure("dfs", "-internetrouting"),
                "blob": azure("blob", "-internetrouting"), "file": azure("file", "-internetrouting"),
            },
        },
        "primaryLocation": a.location,
        "provisioningState": "Succeeded",
        "routingPreference": {"routingChoice": "MicrosoftRouting", "publishMicrosoftEndpoints": false, "publishInternetEndpoints": false},
        "encryption": {
            "services": {
                "file": {"keyType": "Account", "enabled": true, "lastEnabledTime": created},
                "blob": {"keyType": "Account", "enabled": true, "lastEnabledTime": created},
            },
            "keySource": "Microsoft.Storage",
            "requireInfrastructureEncryption": false,
        },
        "isSftpEnabled": false,
        "statusOfPrimary": "available",
        "supportsHttpsTrafficOnly": true,
        "isSkuConversionBlocked": false,
        "accountMigrationInProgress": false,
        "minimumTlsVersion": "TLS1_2",
        "allowBlobPublicAccess": false,
    });
    if let Some(obj) = props.as_object_mut() {
        if let Some(days) = a.key_expiration_days {
            obj.insert(
                "keyPolicy".into(),
                json!({"keyExpirationPeriodInDays": days}),
            );
        }
        let geo_redundant = ["GRS", "RAGRS", "GZRS", "RAGZRS"]
            .iter()
            .any(|r| a.sku.rsplit('_').next() == Some(*r));
        if geo_redundant {
            if let Some(pair) = paired_region(&a.location) {
                obj.insert("secondaryLocation".into(), json!(pair));
            }
            obj.insert("statusOfSecondary".into(), json!("available"));
            if geo_stats {
                obj.insert(
                    "geoReplicationStats".into(),
                    json!({"status": "Live", "lastSyncTime": created, "canFailover": true}),
                );
            }
        }
    }
    json!({
        "id": a.id,
        "kind": a.kind,
        "location": a.location,
        "name": a.name,
        "properties": props,
        "sku": {"name": a.sku, "tier": tier},
        "tags": a.tags,
        "type": TYPE,
    })
}
