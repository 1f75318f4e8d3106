//! The secret operations: set (a new version), get (latest or by version), list the
//! vault's secrets and a secret's versions (both paged, `maxresults` 1–25, absolute
//! `nextLink`), update attributes and tags of a version. Version ids are 32 hex digits, times are unix seconds.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use serde_json::{Map, Value, json};

use super::{Action, error, error_inner};
use crate::auth::Caller;
use crate::server::Shared;
use crate::state::{SecretVersion, Vault, VaultSecret};
use crate::throttle::Budget;
use crate::wire::{self, Req, Resp, with_header};

const MAX_VALUE: usize = 25 * 1024;

fn data_action(a: &Action) -> &'static str {
    match a {
        Action::Set => "Microsoft.KeyVault/vaults/secrets/setSecret/action",
        Action::Get(_) => "Microsoft.KeyVault/vaults/secrets/getSecret/action",
        Action::Versions | Action::List => "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
        Action::Update(_) => "Microsoft.KeyVault/vaults/secrets/update/action",
    }
}

fn not_found(name: &str) -> Resp {
    error(
        404,
        "SecretNotFound",
        &format!(
            "A secret with (name/id) {name} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
        ),
    )
}

pub(super) fn run(
    sh: &Shared,
    req: &Req,
    caller: &Caller,
    vault: &str,
    name: &str,
    action: &Action,
) -> Resp {
    let now = sh.clock.now();
    let mut core = sh.core();
    let budget = if matches!(action, Action::Set) {
        Budget::VaultWrite
    } else {
        Budget::VaultRead
    };
    let settings = core.settings.clone();
    if let Err(t) = core.throttles.take(budget, vault, &settings, now) {
        return with_header(
            error(
                429,
                "Throttled",
                "Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached",
            ),
            "retry-after",
            &t.retry_after.to_string(),
        );
    }
    let Some(v) = core.vaults.get_mut(vault) else {
        return error(
            404,
            "VaultNotFound",
            &format!("Vault '{vault}' is not served by keyflip-twin."),
        );
    };
    // Listing is authorized at the vault (no secret is named), like Key Vault does.
    let resource = match action {
        Action::List => v.id.clone(),
        _ => format!("{}/secrets/{name}", v.id),
    };
    let act = data_action(action);
    if !sh.rbac.allowed(
        &caller.object_id,
        act,
        &crate::rbac::scope_key(&resource),
        true,
    ) {
        let tid = &sh.topology.tenant_id;
        let message = format!(
            "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: appid={};oid={};iss=https://sts.windows.net/{tid}/\r\nAction: '{act}'\r\nResource: '{}'\r\nAssignment: (not found)\r\nDenyAssignmentId: null\r\nDecisionReason: 'DeniedWithNoValidRBAC' \r\nVault: {};location={}\r\n",
            caller.client_id,
            caller.object_id,
            resource.to_ascii_lowercase(),
            v.name,
            v.location
        );
        return error_inner(403, "Forbidden", &message, "ForbiddenByRbac");
    }
    let base = sh.base_url.clone();
    match action {
        Action::Set => set(&base, v, req, name, now.timestamp()),
        Action::Get(version) => {
            let Some(s) = v.secrets.get(&name.to_ascii_lowercase()) else {
                return not_found(name);
            };
            let found = match version {
                Some(ver) => s
                    .versions
                    .iter()
                    .find(|x| x.version.eq_ignore_ascii_case(ver)),
                None => s.versions.last(),
            };
            match found {
                Some(x) if !x.enabled => error_inner(
                    403,
                    "Forbidden",
                    "Operation get is not allowed on a disabled secret.",
                    "SecretDisabled",
                ),
                Some(x) => wire::json(200, &bundle(&base, &s.name, x, true)),
                None => not_found(&format!("{name}/{}", version.as_deref().unwrap_or(""))),
            }
        }
        Action::Versions => versions(&base, v, req, name),
        Action::List => list(&base, v, req),
        Action::Update(version) => update(&base, v, req, name, version.as_deref(), now.timestamp()),
    }
}

/// A `SecretBundle` (with the value) or `SecretItem`-like body (without).
fn bundle(base: &str, name: &str, x: &SecretVersion, with_value: bool) -> Value {
    let mut attributes = json!({
        "enabled": x.enabled,
        "created": x.created,
        "updated": x.updated,
        "recoveryLevel": "Recoverable+Purgeable",
        "recoverableDays": 90,
    });
    if let Some(a) = attributes.as_object_mut() {
        if let Some(nbf) = x.nbf {
            a.insert("nbf".into(), json!(nbf));
        }
        if let Some(exp) = x.exp {
            a.insert("exp".into(), json!(exp));
        }
    }
    let mut out = Map::new();
    if with_value {
        out.insert("value".into(), json!(x.value));
    }
    out.insert(
        "id".into(),
        json!(format!("{base}/secrets/{name}/{}", x.version)),
    );
    if let Some(ct) = &x.content_type {
        out.insert("contentType".into(), json!(ct));
    }
    out.insert("attributes".into(), attributes);
    if !x.tags.is_empty() {
        out.insert("tags".into(), json!(x.tags));
    }
    Value::Object(out)
}

fn body_object(req: &Req) -> Result<Map<String, Value>, Resp> {
    if !req.is_json() {
        let found = req.header("content-type").unwrap_or("(none)");
        return Err(error(
            415,
            "UnsupportedMediaType",
            &format!("The content type '{found}' is not supported; send application/json."),
        ));
    }
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(error(
            400,
            "BadParameter",
            "The request body must be a JSON object.",
        )),
        Err(e) => Err(error(
            400,
            "BadParameter",
            &format!("The request body is not valid JSON: {e}."),
        )),
    }
}

/// Reads `tags`, `contentType` and `attributes` shared by set and update.
struct Common {
    tags: Option<BTreeMap<String, String>>,
    content_type: Option<Option<String>>,
    enabled: Option<bool>,
    nbf: Option<Option<i64>>,
    exp: Option<Option<i64>>,
}

fn common(b: &Map<String, Value>) -> Result<Common, Resp> {
    let bad = |m: &str| error(400, "BadParameter", m);
    let tags = match b.get("tags") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => {
            let mut out = BTreeMap::new();
            for (k, v) in m {
                let Some(s) = v.as_str() else {
                    return Err(bad("Tag values must be strings."));
                };
                out.insert(k.clone(), s.to_string());
            }
            Some(out)
        }
        Some(_) => return Err(bad("'tags' must be an object of strings.")),
    };
    // Key Vault refuses a 16th tag with this body (recorded from the service,
    // hashicorp/terraform-provider-azurerm#16780 and #16947).
    if tags
        .as_ref()
        .is_some_and(|t| t.len() > super::MAX_SECRET_TAGS)
    {
        return Err(bad("Property has invalid value\r\n"));
    }
    let content_type = match b.get("contentType") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(Value::String(s)) => Some(Some(s.clone())),
        Some(_) => return Err(bad("'contentType' must be a string.")),
    };
    let attrs = match b.get("attributes") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(bad("'attributes' must be an object.")),
    };
    let enabled = match attrs.get("enabled") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(e)) => Some(*e),
        Some(_) => return Err(bad("'attributes.enabled' must be a boolean.")),
    };
    let time = |k: &str| -> Result<Option<Option<i64>>, Resp> {
        match attrs.get(k) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(Value::Number(n)) if n.as_i64().is_some() => Ok(Some(n.as_i64())),
            Some(_) => Err(bad(&format!("'attributes.{k}' must be unix seconds."))),
        }
    };
    Ok(Common {
        tags,
        content_type,
        enabled,
        nbf: time("nbf")?,
        exp: time("exp")?,
    })
}

fn set(base: &str, v: &mut Vault, req: &Req, name: &str, now: i64) -> Resp {
    let name_ok = !name.is_empty()
        && name.len() <= 127
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !name_ok {
        return error(
            400,
            "BadParameter",
            &format!("The request URI contains an invalid name: {name}"),
        );
    }
    let b = match body_object(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let value = match b.get("value") {
        Some(Value::String(s)) => s.clone(),
        _ => {
            return error(
                400,
                "BadParameter",
                "Property 'value' is required and must be a string.",
            );
        }
    };
    if value.len() > MAX_VALUE {
        return error(
            400,
            "BadParameter",
            &format!(
                "The secret value is {} bytes; the maximum is {MAX_VALUE}.",
                value.len()
            ),
        );
    }
    let c = match common(&b) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let version = SecretVersion {
        version: crate::entropy::hex32(),
        value,
        enabled: c.enabled.unwrap_or(true),
        content_type: c.content_type.flatten(),
        tags: c.tags.unwrap_or_default(),
        created: now,
        updated: now,
        nbf: c.nbf.flatten(),
        exp: c.exp.flatten(),
    };
    let entry = v
        .secrets
        .entry(name.to_ascii_lowercase())
        .or_insert_with(|| VaultSecret {
            name: name.to_string(),
            versions: Vec::new(),
        });
    // Key Vault names are case-insensitive; ids keep the first spelling.
    let out = bundle(base, &entry.name, &version, true);
    entry.versions.push(version);
    wire::json(200, &out)
}

/// `maxresults` (1–25, default 25) and `$skiptoken` of a list request.
fn page_of(req: &Req) -> Result<(usize, usize), Resp> {
    let max = match req.param("maxresults") {
        None => 25,
        Some(m) => match m.parse::<usize>() {
            Ok(n) if (1..=25).contains(&n) => n,
            _ => {
                return Err(error(
                    400,
                    "BadParameter",
                    &format!(
                        "The value of maxresults is invalid ({m}): it must be between 1 and 25."
                    ),
                ));
            }
        },
    };
    let skip = match req.param("$skiptoken") {
        None => 0,
        Some(t) => match B64URL
            .decode(t)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.parse::<usize>().ok())
        {
            Some(n) => n,
            None => return Err(error(400, "BadParameter", "The $skiptoken is not valid.")),
        },
    };
    Ok((max, skip))
}

/// `GET {vault}/secrets`: a `SecretListResult` of `SecretItem`s (id without a
/// version, attributes of the current version, content type, tags; never a value),
/// in name order. A secret whose versions are all gone is not listed.
fn list(base: &str, v: &Vault, req: &Req) -> Resp {
    let (max, skip) = match page_of(req) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let live: Vec<&VaultSecret> = v
        .secrets
        .values()
        .filter(|s| !s.versions.is_empty())
        .collect();
    let page: Vec<Value> = live
        .iter()
        .skip(skip)
        .take(max)
        .filter_map(|s| {
            let current = s.versions.last()?;
            let mut item = bundle(base, &s.name, current, false);
            if let Some(o) = item.as_object_mut() {
                o.insert("id".into(), json!(format!("{base}/secrets/{}", s.name)));
            }
            Some(item)
        })
        .collect();
    let next = if skip + max < live.len() {
        let api = req.param("api-version").unwrap_or("7.5");
        let token = B64URL.encode((skip + max).to_string());
        json!(format!(
            "{base}/keyvault/{}/secrets?api-version={api}&$skiptoken={token}&maxresults={max}",
            v.name
        ))
    } else {
        Value::Null
    };
    wire::json(200, &json!({"value": page, "nextLink": next}))
}

fn versions(base: &str, v: &Vault, req: &Req, name: &str) -> Resp {
    let Some(s) = v.secrets.get(&name.to_ascii_lowercase()) else {
        return not_found(name);
    };
    let (max, skip) = match page_of(req) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let page: Vec<Value> = s
        .versions
        .iter()
        .skip(skip)
        .take(max)
        .map(|x| bundle(base, &s.name, x, false))
        .collect();
    let next = if skip + max < s.versions.len() {
        let api = req.param("api-version").unwrap_or("7.5");
        let token = B64URL.encode((skip + max).to_string());
        json!(format!(
            "{base}/keyvault/{}/secrets/{}/versions?api-version={api}&$skiptoken={token}&maxresults={max}",
            v.name, s.name
        ))
    } else {
        Value::Null
    };
    wire::json(200, &json!({"value": page, "nextLink": next}))
}

fn update(
    base: &str,
    v: &mut Vault,
    req: &Req,
    name: &str,
    version: Option<&str>,
    now: i64,
) -> Resp {
    let b = match body_object(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let c = match common(&b) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Some(s) = v.secrets.get_mut(&name.to_ascii_lowercase()) else {
        return not_found(name);
    };
    let display = s.name.clone();
    let found = match version {
        Some(ver) => s
            .versions
            .iter_mut()
            .find(|x| x.version.eq_ignore_ascii_case(ver)),
        None => s.versions.last_mut(),
    };
    let Some(x) = found else {
        return not_found(&format!("{name}/{}", version.unwrap_or("")));
    };
    if let Some(t) = c.tags {
        x.tags = t;
    }
    if let Some(ct) = c.content_type {
        x.content_type = ct;
    }
    if let Some(e) = c.enabled {
        x.enabled = e;
    }
    if let Some(n) = c.nbf {
        x.nbf = n;
    }
    if let Some(e) = c.exp {
        x.exp = e;
    }
    x.updated = now;
    wire::json(200, &bundle(base, &display, x, false))
}
