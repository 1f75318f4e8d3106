//! The admin API under `/_admin/`, for tests: fault injection, the request log, a
//! state snapshot, regenerating a key behind a client's back, run-time settings,
//! federated (workload identity) tokens, and the twin clock.
//!
//! It has its own random bearer token (`admin.token` in `endpoints.json`). An Azure
//! token is refused here, and the admin token is refused everywhere else (it is not
//! a JWT the twin signed).

use std::sync::Arc;

use axum::http::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::faults::FaultRequest;
use crate::server::Shared;
use crate::state::{StorageAccount, snapshot};
use crate::token::FEDERATED_AUDIENCE;
use crate::wire::{self, Req, Resp};
use crate::world::{Settings, validate_settings};

fn error(status: u16, code: &str, message: &str) -> Resp {
    wire::json(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
}

fn bad(message: &str) -> Resp {
    error(400, "BadRequest", message)
}

fn parse<T: for<'de> Deserialize<'de>>(req: &Req) -> Result<T, Resp> {
    serde_json::from_slice(&req.body).map_err(|e| bad(&format!("invalid request body: {e}")))
}

pub(crate) fn handle(sh: &Arc<Shared>, req: &Arc<Req>) -> Resp {
    let ok = req
        .bearer()
        .is_some_and(|t| same(t.as_bytes(), sh.admin_token.as_bytes()));
    if !ok {
        return error(
            401,
            "AdminUnauthorized",
            "The admin API needs 'Authorization: Bearer <admin.token from endpoints.json>'; Azure tokens are not accepted here.",
        );
    }
    let segs = req.segments();
    let rest: Vec<&str> = segs.iter().skip(1).copied().collect();
    let m = &req.method;
    match (rest.as_slice(), m) {
        (["faults"], &Method::POST) => match parse::<FaultRequest>(req).map(|f| sh.faults.add(f)) {
            Ok(Ok(id)) => wire::json(200, &json!({"id": id})),
            Ok(Err(e)) => bad(&e),
            Err(r) => r,
        },
        (["faults"], &Method::GET) => wire::json(200, &json!(sh.faults.list())),
        (["faults"], &Method::DELETE) => {
            sh.faults.clear();
            wire::json(200, &json!({"cleared": true}))
        }
        (["requests"], &Method::GET) => {
            let since = match req.param("since").map(str::parse::<u64>) {
                None => 0,
                Some(Ok(n)) => n,
                Some(Err(_)) => return bad("since must be a sequence number"),
            };
            wire::json(200, &json!(sh.log.since(since)))
        }
        (["state"], &Method::GET) => {
            let mut core = sh.core();
            core.settle(sh.clock.now());
            wire::json(200, &snapshot::snapshot(&core, &sh.base_url))
        }
        (["storage", account, "regenerate", key], &Method::POST) => {
            let Some(index) = StorageAccount::key_index(key) else {
                return bad(&format!("key must be key1 or key2, found {key}"));
            };
            let mut core = sh.core();
            if !core.regenerate(account, index, sh.clock.now()) {
                return error(
                    404,
                    "NotFound",
                    &format!("no storage account named {account}"),
                );
            }
            match core.accounts.get(*account) {
                Some(a) => wire::json(
                    200,
                    &json!({"keyName": key.to_ascii_lowercase(), "value": a.keys[index].value}),
                ),
                None => error(
                    404,
                    "NotFound",
                    &format!("no storage account named {account}"),
                ),
            }
        }
        (["settings"], &Method::GET) => wire::json(200, &json!(sh.core().settings)),
        (["settings"], &Method::PATCH) => settings(sh, req),
        (["federated-token"], &Method::POST) => federated_token(sh, req),
        (["clients"], &Method::GET) => {
            wire::json(200, &crate::monitor::clients::admin_list(&sh.core()))
        }
        (["clients", name], &Method::PATCH) => {
            let mut core = sh.core();
            let result =
                crate::monitor::clients::admin_patch(&mut core, name, &req.body, sh.clock.now());
            sh.clients_due.set(&core);
            match result {
                Ok(v) => wire::json(200, &v),
                Err((404, m)) => error(404, "NotFound", &m),
                Err((_, m)) => bad(&m),
            }
        }
        (["clock"], &Method::GET) => clock(sh),
        (["clock"], &Method::POST) => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Advance {
                advance_secs: f64,
            }
            match parse::<Advance>(req) {
                Ok(a) if a.advance_secs.is_finite() && a.advance_secs >= 0.0 => {
                    sh.clock
                        .advance_ms((a.advance_secs * 1000.0).round() as i64);
                    clock(sh)
                }
                Ok(_) => {
                    bad("advance_secs must be a finite number >= 0 (the clock never goes back)")
                }
                Err(r) => r,
            }
        }
        _ => error(
            404,
            "NotFound",
            &format!(
                "no admin endpoint '{} {}'; see twin/README.md",
                req.method, req.path
            ),
        ),
    }
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn clock(sh: &Shared) -> Resp {
    wire::json(
        200,
        &json!({
            "now": sh.clock.now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "offset_ms": sh.clock.offset_ms(),
        }),
    )
}

fn settings(sh: &Shared, req: &Req) -> Resp {
    let patch = match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(p)) => p,
        Ok(_) => return bad("the body must be a JSON object of settings to change"),
        Err(e) => return bad(&format!("invalid request body: {e}")),
    };
    let mut core = sh.core();
    let mut merged = match serde_json::to_value(&core.settings) {
        Ok(Value::Object(m)) => m,
        _ => return error(500, "InternalError", "cannot read the current settings"),
    };
    for (k, v) in patch {
        // One key at a time, so a refusal names the setting at fault.
        let mut one = merged.clone();
        one.insert(k.clone(), v.clone());
        if let Err(e) = serde_json::from_value::<Settings>(Value::Object(one)) {
            return bad(&format!("invalid settings: {k}: {e}"));
        }
        merged.insert(k, v);
    }
    let new: Settings = match serde_json::from_value(Value::Object(merged)) {
        Ok(s) => s,
        Err(e) => return bad(&format!("invalid settings: {e}")),
    };
    if let Err(e) = validate_settings(&new) {
        return bad(&e);
    }
    core.settings = new;
    core.throttles.reset();
    wire::json(200, &json!(core.settings))
}

fn federated_token(sh: &Shared, req: &Req) -> Resp {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Ask {
        principal: String,
        #[serde(default)]
        issuer: Option<String>,
        #[serde(default)]
        lifetime_secs: Option<u32>,
    }
    let ask: Ask = match parse(req) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let Some(p) = sh.directory.by_name(&ask.principal) else {
        return error(
            404,
            "NotFound",
            &format!("no principal named {}", ask.principal),
        );
    };
    let cred = p
        .federated
        .iter()
        .find(|(iss, _)| ask.issuer.as_deref().is_none_or(|want| want == iss));
    let Some((iss, sub)) = cred else {
        return bad(&format!(
            "principal {} has no matching federated credential in the world",
            p.name
        ));
    };
    let now = sh.clock.now().timestamp();
    let claims = json!({
        "iss": iss,
        "sub": sub,
        "aud": FEDERATED_AUDIENCE,
        "iat": now,
        "nbf": now,
        "exp": now + i64::from(ask.lifetime_secs.unwrap_or(3600)),
        "jti": crate::entropy::hex32(),
    });
    match sh.signer.sign(&claims) {
        Ok(token) => wire::json(200, &json!({"token": token})),
        Err(e) => error(500, "InternalError", &e),
    }
}
