//! Microsoft.DataFactory: a factory (GET) and its linked services (list, GET, PUT).
//!
//! What a client reads never carries a secret: `SecureString` values come back as
//! `**********` (Microsoft's examples and SDK recordings), with an
//! `encryptedCredential` beside them; `AzureKeyVaultSecret` references come back as
//! written. Concurrency control is the resource's `etag`: `If-None-Match` on GET
//! answers 304 when it matches, `If-Match` on PUT refuses a stale write with 412
//! (`*` means "must exist"). A new etag on every write. Azure exposes no
//! last-modified time for a linked service.

use axum::http::Method;
use serde_json::{Map, Value, json};

use super::web::display_location;
use super::{authorize, check_group, json_body, resource_not_found, throttle};
use crate::auth::Caller;
use crate::clock::azure_time;
use crate::ops::Op;
use crate::server::Shared;
use crate::state::datafactory::{Factory, resource_json};
use crate::wire::{self, Req, Resp};

const FACTORIES: &str = "Microsoft.DataFactory/factories";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DfAction {
    GetFactory,
    List,
    Get(String),
    Put(String),
}

#[derive(Debug, Clone)]
pub(crate) struct DfRoute {
    pub sub: String,
    pub rg: String,
    pub factory: String,
    pub action: DfAction,
}

impl DfRoute {
    pub fn op(&self) -> Op {
        match self.action {
            DfAction::GetFactory => Op::DataFactoryGet,
            DfAction::List => Op::LinkedServiceList,
            DfAction::Get(_) => Op::LinkedServiceGet,
            DfAction::Put(_) => Op::LinkedServicePut,
        }
    }
}

/// Routes what follows `.../providers/Microsoft.DataFactory/factories/{factory}`.
pub(super) fn route(
    req: &Req,
    (sub, rg, factory): (String, String, String),
    rest: &[&str],
    low: &[&str],
) -> Option<Result<DfRoute, Resp>> {
    let m = &req.method;
    let action = match low {
        [] => (*m == Method::GET).then_some(DfAction::GetFactory),
        ["linkedservices"] => (*m == Method::GET).then_some(DfAction::List),
        ["linkedservices", _] => match *m {
            Method::GET => Some(DfAction::Get(rest[1].to_string())),
            Method::PUT => Some(DfAction::Put(rest[1].to_string())),
            _ => None,
        },
        _ => return None,
    };
    Some(match action {
        Some(action) => Ok(DfRoute {
            sub,
            rg,
            factory,
            action,
        }),
        None => Err(super::route::method_not_allowed(req)),
    })
}

fn df_error(status: u16, code: &str, message: &str, target: &str) -> Resp {
    wire::json(
        status,
        &json!({"error": {"code": code, "message": message, "target": target, "details": null}}),
    )
}

/// An entity tag as sent in `If-Match`/`If-None-Match`, without quotes or `W/`.
fn bare(tag: &str) -> &str {
    let t = tag.trim();
    let t = t.strip_prefix("W/").unwrap_or(t);
    t.trim_matches('"')
}

fn matches(header: &str, etag: &str) -> bool {
    header
        .split(',')
        .map(bare)
        .any(|t| t == "*" || t.eq_ignore_ascii_case(etag))
}

pub(super) fn run(sh: &Shared, req: &Req, caller: &Caller, r: &DfRoute) -> Resp {
    let factory_id = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/{FACTORIES}/{}",
        r.sub, r.rg, r.factory
    );
    let (action, write, scope) = match &r.action {
        DfAction::GetFactory => (format!("{FACTORIES}/read"), false, factory_id.clone()),
        DfAction::List => (
            format!("{FACTORIES}/linkedServices/read"),
            false,
            factory_id.clone(),
        ),
        DfAction::Get(n) => (
            format!("{FACTORIES}/linkedServices/read"),
            false,
            format!("{factory_id}/linkedservices/{n}"),
        ),
        DfAction::Put(n) => (
            format!("{FACTORIES}/linkedServices/write"),
            true,
            format!("{factory_id}/linkedservices/{n}"),
        ),
    };
    let now = sh.clock.now();
    let mut core = sh.core();
    if let Err(resp) = throttle(sh, &mut core, &r.sub, write, caller) {
        return resp;
    }
    if let Err(resp) = authorize(sh, caller, &action, &scope) {
        return resp;
    }
    if let Err(resp) = check_group(sh, &r.sub, &r.rg) {
        return resp;
    }
    let Some(f) = core
        .factories
        .get_mut(&r.factory.to_ascii_lowercase())
        .filter(|f| {
            f.subscription.eq_ignore_ascii_case(&r.sub) && f.group.eq_ignore_ascii_case(&r.rg)
        })
    else {
        return resource_not_found(FACTORIES, &r.factory, &r.rg);
    };
    let not_found = |n: &str| {
        df_error(
            404,
            "NotFound",
            &format!("Entity {n} not found in factory '{}'.", r.factory),
            n,
        )
    };
    match &r.action {
        DfAction::GetFactory => wire::json(200, &factory_json(f)),
        DfAction::List => {
            let value: Vec<Value> = f
                .linked_services
                .values()
                .map(|ls| resource_json(f, ls))
                .collect();
            wire::json(200, &json!({"value": value}))
        }
        DfAction::Get(n) => {
            let Some(ls) = f.linked_services.get(&n.to_ascii_lowercase()) else {
                return not_found(n);
            };
            if req
                .header("if-none-match")
                .is_some_and(|h| matches(h, &ls.etag))
            {
                return wire::empty(304);
            }
            wire::json(200, &resource_json(f, ls))
        }
        DfAction::Put(n) => {
            if let Err(resp) = check_name(n) {
                return resp;
            }
            let existing = f.linked_services.get(&n.to_ascii_lowercase());
            if let Some(h) = req.header("if-match") {
                let ok = existing.is_some_and(|ls| matches(h, &ls.etag));
                if !ok {
                    return df_error(
                        412,
                        "PreconditionFailed",
                        &format!(
                            "The ETag '{}' in the If-Match header does not match linked service {n} (current etag: {}).",
                            bare(h),
                            existing
                                .map(|ls| ls.etag.as_str())
                                .unwrap_or("none: it does not exist")
                        ),
                        n,
                    );
                }
            }
            if existing.is_some()
                && req
                    .header("if-none-match")
                    .is_some_and(|h| h.split(',').any(|t| bare(t) == "*"))
            {
                return df_error(
                    412,
                    "PreconditionFailed",
                    &format!("Linked service {n} already exists (If-None-Match: *)."),
                    n,
                );
            }
            let body = match json_body(req) {
                Ok(b) => b,
                Err(resp) => return resp,
            };
            let properties = match validate(n, &body, f) {
                Ok(p) => p,
                Err(resp) => return resp,
            };
            let name = existing
                .map(|ls| ls.name.clone())
                .unwrap_or_else(|| n.clone());
            f.write(&name, properties, now);
            match f.linked_services.get(&n.to_ascii_lowercase()) {
                Some(ls) => wire::json(200, &resource_json(f, ls)),
                None => not_found(n),
            }
        }
    }
}

/// The spec's pattern for linked service names: `^[A-Za-z0-9_][^<>*#.%&:\\+?/]*$`,
/// 1 to 260 characters.
fn check_name(n: &str) -> Result<(), Resp> {
    let ok = n.chars().count() <= 260
        && n.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && !n.chars().any(|c| "<>*#.%&:\\+?/".contains(c));
    if ok {
        Ok(())
    } else {
        Err(df_error(
            400,
            "InvalidResourceName",
            &format!(
                "The linked service name '{n}' is invalid: it must match ^[A-Za-z0-9_][^<>*#.%&:\\\\+?/]*$ and be at most 260 characters."
            ),
            n,
        ))
    }
}

/// Checks a PUT body and returns the `properties` to store: a `type`, a
/// `typeProperties` object, complete secrets, and Key Vault references to an
/// `AzureKeyVault` linked service of the same factory.
fn validate(n: &str, body: &Map<String, Value>, f: &Factory) -> Result<Map<String, Value>, Resp> {
    let bad = |m: String| df_error(400, "BadRequest", &m, n);
    let Some(Value::Object(props)) = body.get("properties") else {
        return Err(bad("The request body needs a 'properties' object.".into()));
    };
    if !props.get("type").is_some_and(Value::is_string) {
        return Err(bad(
            "properties.type is required (for example AzureBlobStorage).".into(),
        ));
    }
    let Some(Value::Object(tp)) = props.get("typeProperties") else {
        return Err(bad("properties.typeProperties is required.".into()));
    };
    let mut props = props.clone();
    for (field, v) in tp {
        let Some(kind) = v.get("type").and_then(Value::as_str) else {
            continue;
        };
        match kind {
            "SecureString" if !v.get("value").is_some_and(Value::is_string) => {
                return Err(bad(format!(
                    "typeProperties.{field}: a SecureString needs a string 'value'."
                )));
            }
            "AzureKeyVaultSecret" => {
                let store = v
                    .get("store")
                    .and_then(|s| s.get("referenceName"))
                    .and_then(Value::as_str);
                if v.get("secretName").is_none() {
                    return Err(bad(format!(
                        "typeProperties.{field}: an AzureKeyVaultSecret needs 'secretName'."
                    )));
                }
                let target = store.and_then(|s| f.linked_services.get(&s.to_ascii_lowercase()));
                let is_vault = target
                    .and_then(|t| t.properties.get("type"))
                    .and_then(Value::as_str)
                    == Some("AzureKeyVault");
                if !is_vault {
                    return Err(bad(format!(
                        "The document creation or update failed because of invalid reference '{}'.",
                        store.unwrap_or("(no store.referenceName)")
                    )));
                }
            }
            _ => {}
        }
    }
    // The service issues encryptedCredential itself.
    if let Some(Value::Object(tp)) = props.get_mut("typeProperties") {
        tp.remove("encryptedCredential");
    }
    Ok(props)
}

/// The Factory model (`Factories_Get`).
pub(super) fn factory_json(f: &Factory) -> Value {
    json!({
        "name": f.name,
        "id": f.id,
        "type": FACTORIES,
        "properties": {
            "provisioningState": "Succeeded",
            "createTime": azure_time(f.created),
            "version": "2018-06-01",
        },
        "eTag": format!("\"{}\"", f.etag),
        "location": display_location(&f.location),
        "tags": {},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_tags_compare_without_quotes() {
        let e = "0a0062d4-0000-0000-0000-5b245bcf0000";
        assert!(matches("\"0a0062d4-0000-0000-0000-5b245bcf0000\"", e));
        assert!(matches("W/\"0a0062d4-0000-0000-0000-5b245bcf0000\"", e));
        assert!(matches(e, e));
        assert!(matches("*", e));
        assert!(matches(
            "\"x\", \"0a0062d4-0000-0000-0000-5b245bcf0000\"",
            e
        ));
        assert!(!matches("\"0a0062d4-0000-0000-0000-5b245bcf0001\"", e));
    }

    #[test]
    fn names_follow_the_spec_pattern() {
        for ok in ["ls1", "_x", "Blob Storage 1", "a-b_c"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".x", "a.b", "a/b", "a?b", "-x", &"a".repeat(261)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
