//! Azure ML datastores: list, GET, PUT (create or update, with credential
//! validation), and `listSecrets`.
//!
//! The credential secret is write-only: GET and list return `credentials.secrets` as
//! `{"secretsType": ...}` only; `listSecrets` is the one way to read it. A PUT without
//! `skipValidation=true` checks an account key against the storage account the way
//! the data plane would (current value, past its propagation delay, shared keys
//! allowed) and answers 400 if it would not work, as Azure ML does.

use serde_json::{Map, Value, json};

use super::route::DatastoreAction;
use super::{authorize, check_group, json_body, resource_not_found, throttle};
use crate::auth::Caller;
use crate::clock::azure_time;
use crate::server::Shared;
use crate::state::{Datastore, DatastoreSecret, Workspace};
use crate::wire::{self, Req, Resp};

const WS_TYPE: &str = "Microsoft.MachineLearningServices/workspaces";
const TYPE: &str = "Microsoft.MachineLearningServices/workspaces/datastores";

/// Azure ML's error envelope.
fn ml_error(status: u16, message: &str, inner: &str) -> Resp {
    wire::json(
        status,
        &json!({"error": {"code": "UserError", "message": message, "details": [], "innerError": {"code": inner}}}),
    )
}

pub(super) fn run(
    sh: &Shared,
    req: &Req,
    caller: &Caller,
    sub: &str,
    rg: &str,
    ws_name: &str,
    action: &DatastoreAction,
) -> Resp {
    let ws_scope =
        format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/{WS_TYPE}/{ws_name}");
    let (verb, write, scope) = match action {
        DatastoreAction::List => ("read", false, ws_scope.clone()),
        DatastoreAction::Get(n) => ("read", false, format!("{ws_scope}/datastores/{n}")),
        DatastoreAction::Put(n) => ("write", true, format!("{ws_scope}/datastores/{n}")),
        DatastoreAction::ListSecrets(n) => (
            "listSecrets/action",
            true,
            format!("{ws_scope}/datastores/{n}"),
        ),
    };
    let now = sh.clock.now();
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
    let ws_key = ws_name.to_ascii_lowercase();
    let exists = core.workspaces.get(&ws_key).is_some_and(|w| {
        w.subscription.eq_ignore_ascii_case(sub) && w.group.eq_ignore_ascii_case(rg)
    });
    if !exists {
        return resource_not_found(WS_TYPE, ws_name, rg);
    }
    let not_found = |n: &str| {
        ml_error(
            404,
            &format!(
                "DatastoreNotFound: Datastore with name '{n}' was not found in workspace '{ws_name}'."
            ),
            "NotFoundError",
        )
    };
    match action {
        DatastoreAction::List => match core.workspaces.get(&ws_key) {
            Some(ws) => list(sh, req, ws),
            None => resource_not_found(WS_TYPE, ws_name, rg),
        },
        DatastoreAction::Get(n) => match core
            .workspaces
            .get(&ws_key)
            .and_then(|w| Some((w, w.datastores.get(&n.to_ascii_lowercase())?)))
        {
            Some((ws, ds)) => wire::json(200, &datastore_json(ws, ds)),
            None => not_found(n),
        },
        DatastoreAction::ListSecrets(n) => {
            let Some(ds) = core
                .workspaces
                .get(&ws_key)
                .and_then(|w| w.datastores.get(&n.to_ascii_lowercase()))
            else {
                return not_found(n);
            };
            match &ds.secret {
                DatastoreSecret::AccountKey(k) => {
                    wire::json(200, &json!({"secretsType": "AccountKey", "key": k}))
                }
                DatastoreSecret::Sas(t) => {
                    wire::json(200, &json!({"secretsType": "Sas", "sasToken": t}))
                }
                DatastoreSecret::None => wire::json(200, &json!({"secretsType": "None"})),
            }
        }
        DatastoreAction::Put(n) => {
            let body = match json_body(req) {
                Ok(b) => b,
                Err(r) => return r,
            };
            let (properties, secret) = match validate_put(n, &body) {
                Ok(v) => v,
                Err(r) => return r,
            };
            let skip = req
                .param("skipValidation")
                .is_some_and(|v| v.eq_ignore_ascii_case("true"));
            if !skip && let DatastoreSecret::AccountKey(key) = &secret {
                let account = properties
                    .get("accountName")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let works = core
                    .accounts
                    .get(account)
                    .is_some_and(|a| a.allow_shared_key_access && a.accepts_key(key, now));
                if !works {
                    return ml_error(
                        400,
                        &format!(
                            "The provided credentials are not valid for storage account '{account}': the account key was refused. Check the key, or pass skipValidation=true to store it without checking."
                        ),
                        "InvalidCredentials",
                    );
                }
            }
            let Some(ws) = core.workspaces.get_mut(&ws_key) else {
                return resource_not_found(WS_TYPE, ws_name, rg);
            };
            let key = n.to_ascii_lowercase();
            let (status, ds) = match ws.datastores.get(&key) {
                Some(old) => {
                    let mut properties = properties;
                    let was_default = old
                        .properties
                        .get("isDefault")
                        .cloned()
                        .unwrap_or(json!(false));
                    properties.insert("isDefault".into(), was_default);
                    let ds = Datastore {
                        name: old.name.clone(),
                        properties,
                        secret,
                        created: old.created,
                        created_by: old.created_by.clone(),
                        modified: now,
                        modified_by: caller.name.clone(),
                    };
                    (200, ds)
                }
                None => {
                    let mut properties = properties;
                    properties.insert("isDefault".into(), json!(false));
                    ws.order.push(key.clone());
                    let ds = Datastore {
                        name: n.clone(),
                        properties,
                        secret,
                        created: now,
                        created_by: caller.name.clone(),
                        modified: now,
                        modified_by: caller.name.clone(),
                    };
                    (201, ds)
                }
            };
            let out = datastore_json(ws, &ds);
            ws.datastores.insert(key, ds);
            wire::json(status, &out)
        }
    }
}

fn list(sh: &Shared, req: &Req, ws: &Workspace) -> Resp {
    let count = req
        .param("count")
        .and_then(|c| c.parse::<usize>().ok())
        .filter(|c| *c > 0)
        .unwrap_or(30);
    let skip = req
        .param("$skip")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(0);
    let default_only = req
        .param("isDefault")
        .map(|v| v.eq_ignore_ascii_case("true"));
    // `names`: the spec's array parameter; Microsoft's Python client sends it
    // comma-joined (`names=a,b`), others repeat it (`names=a&names=b`). Datastore
    // names are case-insensitive, as GET treats them.
    let names: Vec<String> = req
        .query
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("names"))
        .flat_map(|(_, v)| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    let all: Vec<&Datastore> = ws
        .order
        .iter()
        .filter(|k| names.is_empty() || names.contains(k))
        .filter_map(|k| ws.datastores.get(k))
        .filter(|d| match default_only {
            Some(want) => {
                d.properties
                    .get("isDefault")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
                    == want
            }
            None => true,
        })
        .collect();
    let page: Vec<Value> = all
        .iter()
        .skip(skip)
        .take(count)
        .map(|d| datastore_json(ws, d))
        .collect();
    let next = if skip + count < all.len() {
        // The next page keeps the filters of this one.
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair(
            "api-version",
            req.param("api-version").unwrap_or("2024-04-01"),
        );
        q.append_pair("$skip", &(skip + count).to_string());
        q.append_pair("count", &count.to_string());
        if let Some(d) = req.param("isDefault") {
            q.append_pair("isDefault", d);
        }
        if !names.is_empty() {
            q.append_pair("names", &names.join(","));
        }
        json!(format!("{}{}?{}", sh.base_url, req.path, q.finish()))
    } else {
        Value::Null
    };
    wire::json(200, &json!({"value": page, "nextLink": next}))
}

pub(crate) fn datastore_json(ws: &Workspace, ds: &Datastore) -> Value {
    json!({
        "id": format!("{}/datastores/{}", ws.id, ds.name),
        "name": ds.name,
        "type": TYPE,
        "properties": ds.properties,
        "systemData": {
            "createdAt": azure_time(ds.created),
            "createdBy": ds.created_by,
            "createdByType": "Application",
            "lastModifiedAt": azure_time(ds.modified),
            "lastModifiedBy": ds.modified_by,
            "lastModifiedByType": "Application",
        },
    })
}

/// Checks a PUT body; returns the properties to store (secret stripped) and the secret.
fn validate_put(
    name: &str,
    body: &Map<String, Value>,
) -> Result<(Map<String, Value>, DatastoreSecret), Resp> {
    let bad = |m: String| ml_error(400, &m, "BadArgument");
    let name_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !name_ok {
        return Err(bad(format!(
            "Invalid datastore name '{name}': it must match ^[a-zA-Z0-9][a-zA-Z0-9\\-_]{{0,254}}$."
        )));
    }
    let Some(Value::Object(props)) = body.get("properties") else {
        return Err(bad("The request body needs a 'properties' object.".into()));
    };
    let mut props = props.clone();
    let dtype = props
        .get("datastoreType")
        .and_then(Value::as_str)
        .unwrap_or("");
    let location_field = match dtype {
        "AzureBlob" => "containerName",
        "AzureFile" => "fileShareName",
        "" => return Err(bad("properties.datastoreType is required (AzureBlob, AzureFile, AzureDataLakeGen1, AzureDataLakeGen2 or OneLake).".into())),
        other => return Err(bad(format!("properties.datastoreType '{other}' is not modelled by keyflip-twin; it serves AzureBlob and AzureFile datastores."))),
    };
    for field in ["accountName", location_field] {
        if props
            .get(field)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(bad(format!(
                "properties.{field} is required for a {dtype} datastore."
            )));
        }
    }
    let Some(Value::Object(creds)) = props.get_mut("credentials") else {
        return Err(bad("properties.credentials is required.".into()));
    };
    let ctype = creds
        .get("credentialsType")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let secrets = creds.get("secrets").and_then(Value::as_object);
    let text = |k: &str| {
        secrets
            .and_then(|s| s.get(k))
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let secret = match ctype.as_str() {
        "AccountKey" => {
            match text("key") {
                Some(k) => DatastoreSecret::AccountKey(k),
                None => return Err(bad(
                    "credentials of type AccountKey need secrets.key (the storage account key)."
                        .into(),
                )),
            }
        }
        "Sas" => match text("sasToken") {
            Some(t) => DatastoreSecret::Sas(t),
            None => return Err(bad("credentials of type Sas need secrets.sasToken.".into())),
        },
        "None" => DatastoreSecret::None,
        "" => {
            return Err(bad(
                "properties.credentials.credentialsType is required.".into()
            ));
        }
        other => {
            return Err(bad(format!(
                "credentialsType '{other}' is not modelled by keyflip-twin (AccountKey, Sas and None are)."
            )));
        }
    };
    if ctype == "None" {
        creds.remove("secrets");
    } else {
        creds.insert("secrets".into(), json!({"secretsType": ctype}));
    }
    props.entry("endpoint").or_insert(json!("core.windows.net"));
    props.entry("protocol").or_insert(json!("https"));
    Ok((props, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn the_key_is_kept_out_of_stored_properties() {
        let b = body(
            json!({"properties": {"datastoreType": "AzureBlob", "accountName": "a", "containerName": "c",
            "credentials": {"credentialsType": "AccountKey", "secrets": {"secretsType": "AccountKey", "key": "SECRET"}}}}),
        );
        let (props, secret) = validate_put("ds", &b).expect("valid");
        assert_eq!(secret, DatastoreSecret::AccountKey("SECRET".into()));
        assert!(!Value::Object(props).to_string().contains("SECRET"));
    }

    #[test]
    fn incomplete_bodies_are_refused() {
        for v in [
            json!({}),
            json!({"properties": {"datastoreType": "AzureBlob", "accountName": "a", "containerName": "c"}}),
            json!({"properties": {"datastoreType": "AzureBlob", "accountName": "a", "containerName": "c",
                "credentials": {"credentialsType": "AccountKey", "secrets": {"secretsType": "AccountKey"}}}}),
            json!({"properties": {"datastoreType": "AzureFile", "accountName": "a", "containerName": "c",
                "credentials": {"credentialsType": "None"}}}),
        ] {
            assert!(validate_put("ds", &body(v.clone())).is_err(), "{v}");
        }
        let ok = json!({"properties": {"datastoreType": "AzureBlob", "accountName": "a", "containerName": "c", "credentials": {"credentialsType": "None"}}});
        assert!(validate_put("-bad", &body(ok)).is_err());
    }
}
