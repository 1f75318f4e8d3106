//! Azure Resource Manager as the twin serves it at the root of its URL space.
//!
//! Every request goes through the same front door, in ARM's order: authenticate the
//! bearer token (401 with ARM's codes and a `WWW-Authenticate` challenge), route
//! (paths match case-insensitively, empty segments are ignored), check the
//! api-version (a range per resource provider, so newer clients work), then, inside
//! the operation: throttle (per-subscription read/write buckets), authorize (the
//! operation's RBAC action at the resource's scope, refused with Azure's exact
//! `AuthorizationFailed` body), find the resource (404 with ARM's codes), act.

mod authz;
mod datafactory;
mod datastore;
mod diagnostics;
mod inventory;
mod meta;
mod route;
mod storage;
mod web;
mod workspace;

use std::sync::Arc;

use serde_json::{Value, json};

use crate::auth::{self, AuthFailure, Caller};
use crate::server::Shared;
use crate::server::dispatch::Handled;
use crate::state::Core;
use crate::throttle::Budget;
use crate::token::{Audience, TokenProblem};
use crate::wire::{self, Req, Resp, with_header};

pub(crate) use route::Route;

/// An ARM error body.
pub(crate) fn error(status: u16, code: &str, message: &str) -> Resp {
    wire::json(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
}

pub(crate) fn handle(shared: &Arc<Shared>, req: &Arc<Req>) -> Handled {
    let route = route::parse(req);
    let op = route.as_ref().ok().map(Route::op);
    if let Ok(Route::Metadata) = route {
        return Handled::run(crate::ops::Op::ArmMetadata, None, |sh, _| {
            meta::endpoints(sh)
        });
    }
    let caller = match auth::authenticate(shared, req, Audience::Arm) {
        Ok(c) => c,
        Err(f) => return Handled::reply(op, None, unauthorized(shared, &f)),
    };
    let principal = Some(caller.name.clone());
    let route = match route {
        Ok(r) => r,
        Err(resp) => return Handled::reply(None, principal, resp),
    };
    if let Err(resp) = route::check_api_version(req, &route) {
        return Handled::reply(op, principal, resp);
    }
    let req = req.clone();
    Handled::run(route.op(), principal, move |sh, flags| {
        route.run(sh, &req, &caller, flags)
    })
}

fn unauthorized(shared: &Shared, f: &AuthFailure) -> Resp {
    let tid = &shared.topology.tenant_id;
    let (code, message) = match f {
        AuthFailure::Missing => (
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.".to_string(),
        ),
        AuthFailure::Problem(TokenProblem::Expired { exp }) => {
            let fmt = |t: i64| {
                chrono::DateTime::from_timestamp(t, 0)
                    .map(|d| d.format("%-m/%-d/%Y %-I:%M:%S %p").to_string())
                    .unwrap_or_default()
            };
            (
                "ExpiredAuthenticationToken",
                format!(
                    "The access token expiry UTC time '{}' is earlier than current UTC time '{}'.",
                    fmt(*exp),
                    fmt(shared.clock.now().timestamp())
                ),
            )
        }
        AuthFailure::Problem(TokenProblem::WrongAudience { found }) => (
            "InvalidAuthenticationTokenAudience",
            format!(
                "The access token has been obtained for wrong audience or resource '{found}'. It should exactly match with one of the allowed audiences 'https://management.core.windows.net/','https://management.core.windows.net','https://management.azure.com/','https://management.azure.com'."
            ),
        ),
        AuthFailure::Problem(TokenProblem::WrongIssuer { found }) => (
            "InvalidAuthenticationTokenTenant",
            format!(
                "The access token is from the wrong issuer '{found}'. It must match the tenant 'https://sts.windows.net/{tid}/' associated with this subscription. Please use the authority (URL) '{}/{tid}' to get the token.",
                shared.base_url
            ),
        ),
        AuthFailure::Problem(TokenProblem::NotYetValid) => (
            "InvalidAuthenticationToken",
            "The access token is not yet valid.".to_string(),
        ),
        AuthFailure::Problem(_) => (
            "InvalidAuthenticationToken",
            "The access token is invalid.".to_string(),
        ),
    };
    let challenge = format!(
        "Bearer authorization_uri=\"{}/{tid}\", error=\"invalid_token\", error_description=\"{}\"",
        shared.base_url,
        message.replace('"', "'")
    );
    with_header(error(401, code, &message), "www-authenticate", &challenge)
}

/// 403 `AuthorizationFailed` unless `caller` may perform `action` at `scope`.
pub(crate) fn authorize(
    sh: &Shared,
    caller: &Caller,
    action: &str,
    scope: &str,
) -> Result<(), Resp> {
    if sh.rbac.allowed(
        &caller.object_id,
        action,
        &crate::rbac::scope_key(scope),
        false,
    ) {
        return Ok(());
    }
    let oid = &caller.object_id;
    Err(error(
        403,
        "AuthorizationFailed",
        &format!(
            "The client '{oid}' with object id '{oid}' does not have authorization to perform action '{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please refresh your credentials."
        ),
    ))
}

/// Takes a token from the subscription's read or write bucket, or answers 429.
pub(crate) fn throttle(
    sh: &Shared,
    core: &mut Core,
    sub: &str,
    write: bool,
    caller: &Caller,
) -> Result<(), Resp> {
    // Buckets exist only for real subscriptions (the request then fails with 404).
    if sh.topology.subscription(sub).is_none() {
        return Ok(());
    }
    let budget = if write {
        Budget::ArmWrite
    } else {
        Budget::ArmRead
    };
    let settings = core.settings.clone();
    match core.throttles.take(budget, sub, &settings, sh.clock.now()) {
        Ok(_) => Ok(()),
        Err(t) => {
            let kind = if write { "write" } else { "read" };
            let header = format!("x-ms-ratelimit-remaining-subscription-{kind}s");
            let r = error(
                429,
                "SubscriptionRequestsThrottled",
                &format!(
                    "Number of '{kind}' requests for subscription '{sub}' actor '{}' exceeded. Please try again after '{}' seconds after the last request for the subscription.",
                    caller.object_id, t.retry_after
                ),
            );
            Err(with_header(
                with_header(r, "retry-after", &t.retry_after.to_string()),
                &header,
                "0",
            ))
        }
    }
}

/// 404 unless the subscription exists.
pub(crate) fn check_subscription(sh: &Shared, sub: &str) -> Result<(), Resp> {
    if sh.topology.subscription(sub).is_none() {
        return Err(error(
            404,
            "SubscriptionNotFound",
            &format!("The subscription '{sub}' could not be found."),
        ));
    }
    Ok(())
}

/// 404 unless the subscription and resource group exist.
pub(crate) fn check_group(sh: &Shared, sub: &str, rg: &str) -> Result<(), Resp> {
    check_subscription(sh, sub)?;
    if sh.topology.group(sub, rg).is_none() {
        return Err(error(
            404,
            "ResourceGroupNotFound",
            &format!("Resource group '{rg}' could not be found."),
        ));
    }
    Ok(())
}

pub(crate) fn resource_not_found(kind: &str, name: &str, rg: &str) -> Resp {
    error(
        404,
        "ResourceNotFound",
        &format!(
            "The Resource '{kind}/{name}' under resource group '{rg}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
        ),
    )
}

/// The request body as a JSON object: 415 for a non-JSON content type, 400 for
/// malformed JSON or a body that is not an object.
pub(crate) fn json_body(req: &Req) -> Result<serde_json::Map<String, Value>, Resp> {
    if req.body.is_empty() {
        return Err(error(
            400,
            "InvalidRequestContent",
            "The request content was invalid and could not be deserialized: 'the request body is empty; a JSON object was expected'.",
        ));
    }
    if !req.is_json() {
        let found = req.header("content-type").unwrap_or("(none)");
        return Err(error(
            415,
            "UnsupportedMediaType",
            &format!(
                "The content media type '{found}' is not supported. Only 'application/json' is supported."
            ),
        ));
    }
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(error(
            400,
            "InvalidRequestContent",
            &format!(
                "The request content was invalid and could not be deserialized: 'expected a JSON object, found {}'.",
                kind_of(&other)
            ),
        )),
        Err(e) => Err(error(
            400,
            "InvalidRequestContent",
            &format!("The request content was invalid and could not be deserialized: '{e}'."),
        )),
    }
}

pub(crate) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
