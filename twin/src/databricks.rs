//! The Databricks Secrets API 2.0 of each workspace, at
//! `{base_url}/databricks/{workspace}/api/2.0/secrets/...`: `scopes/list`, `put`
//! and `list`.
//!
//! Callers present an Entra token for the AzureDatabricks application and must be a
//! user of the workspace (the SP-management-token auto-provisioning headers are not
//! modelled). `put` needs WRITE or MANAGE on the scope and fails with `BAD_REQUEST`
//! on an AZURE_KEYVAULT-backed scope, as Azure Databricks does; `list` needs READ and
//! on a Key Vault-backed scope lists the vault's secrets.

use std::sync::Arc;

use axum::http::Method;
use base64::Engine as _;
use serde_json::{Value, json};

use crate::auth::{self, AuthFailure, Caller};
use crate::ops::Op;
use crate::server::Shared;
use crate::server::dispatch::Handled;
use crate::state::{ScopeSecret, ScopeValue};
use crate::token::{Audience, TokenProblem};
use crate::wire::{self, Req, Resp};
use crate::world::{ScopeBackend, ScopePermission};

const MAX_VALUE: usize = 128 * 1024;
const MAX_SECRETS: usize = 1000;

/// A Databricks error body.
pub(crate) fn error(status: u16, code: &str, message: &str) -> Resp {
    wire::json(status, &json!({"error_code": code, "message": message}))
}

pub(crate) fn handle(shared: &Arc<Shared>, req: &Arc<Req>) -> Handled {
    let segs = req.segments();
    let ws = segs
        .get(1)
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_default();
    let known = shared.core().databricks.contains_key(&ws);
    let tail: Vec<String> = segs
        .iter()
        .skip(2)
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let tail: Vec<&str> = tail.iter().map(String::as_str).collect();
    let op = match (tail.as_slice(), &req.method) {
        (["api", "2.0", "secrets", "scopes", "list"], &Method::GET) => Op::DatabricksScopes,
        (["api", "2.0", "secrets", "put"], &Method::POST) => Op::DatabricksPut,
        (["api", "2.0", "secrets", "list"], &Method::GET) => Op::DatabricksList,
        _ => {
            return Handled::reply(
                None,
                None,
                error(
                    404,
                    "ENDPOINT_NOT_FOUND",
                    &format!("No API found for '{} {}'", req.method, req.path),
                ),
            );
        }
    };
    if !known {
        return Handled::reply(
            Some(op),
            None,
            error(
                404,
                "ENDPOINT_NOT_FOUND",
                &format!("No Databricks workspace is served at '{}'.", req.path),
            ),
        );
    }
    let caller = match auth::authenticate(shared, req, Audience::Databricks) {
        Ok(c) => c,
        Err(f) => {
            let message = match f {
                AuthFailure::Missing => {
                    "Credential was not sent or was of an unsupported type for this API."
                        .to_string()
                }
                AuthFailure::Problem(TokenProblem::Expired { .. }) => {
                    "Token is expired.".to_string()
                }
                AuthFailure::Problem(TokenProblem::WrongAudience { found }) => {
                    format!(
                        "Invalid access token: the audience '{found}' is not the AzureDatabricks application."
                    )
                }
                AuthFailure::Problem(_) => "Invalid access token.".to_string(),
            };
            return Handled::reply(Some(op), None, error(401, "UNAUTHENTICATED", &message));
        }
    };
    let principal = Some(caller.name.clone());
    let req = req.clone();
    Handled::run(op, principal, move |sh, _| {
        let mut core = sh.core();
        let Some(w) = core.databricks.get(&ws) else {
            return error(404, "ENDPOINT_NOT_FOUND", "The workspace is gone.");
        };
        if !w.users.contains(&caller.name) {
            return error(
                403,
                "PERMISSION_DENIED",
                &format!(
                    "Principal {} ({}) is not a user of workspace {}.",
                    caller.client_id, caller.name, w.name
                ),
            );
        }
        match op {
            Op::DatabricksScopes => {
                let scopes: Vec<Value> = w
                    .scopes
                    .iter()
                    .map(|s| match (&s.backend, &s.vault) {
                        (ScopeBackend::AzureKeyVault, Some(v)) => {
                            let (id, name) = core.vaults.get(v).map(|v| (v.id.clone(), v.name.clone())).unwrap_or_default();
                            json!({"name": s.name, "backend_type": "AZURE_KEYVAULT", "keyvault_metadata": {
                                "resource_id": id, "dns_name": format!("{}/keyvault/{name}/", sh.base_url)}})
                        }
                        _ => json!({"name": s.name, "backend_type": "DATABRICKS"}),
                    })
                    .collect();
                wire::json(200, &json!({"scopes": scopes}))
            }
            Op::DatabricksList => {
                let Some(scope_name) = req.param("scope").map(str::to_string) else {
                    return error(
                        400,
                        "INVALID_PARAMETER_VALUE",
                        "Missing required field: scope",
                    );
                };
                let Some(scope) = w.scopes.iter().find(|s| s.name == scope_name) else {
                    return error(
                        404,
                        "RESOURCE_DOES_NOT_EXIST",
                        &format!("Scope {scope_name} does not exist!"),
                    );
                };
                if !permitted(scope.acl.get(&caller.name), ScopePermission::Read) {
                    return denied(&caller, "READ", &scope_name);
                }
                let secrets: Vec<Value> = match (&scope.backend, &scope.vault) {
                    (ScopeBackend::AzureKeyVault, Some(v)) => core
                        .vaults
                        .get(v)
                        .map(|v| {
                            v.secrets
                                .values()
                                .filter_map(|s| s.versions.last().filter(|x| x.enabled).map(|x| (s, x)))
                                .map(|(s, x)| json!({"key": s.name, "last_updated_timestamp": x.updated * 1000}))
                                .collect()
                        })
                        .unwrap_or_default(),
                    _ => scope
                        .secrets
                        .iter()
                        .map(|(k, s)| json!({"key": k, "last_updated_timestamp": s.last_updated_ms}))
                        .collect(),
                };
                wire::json(200, &json!({"secrets": secrets}))
            }
            _ => {
                let now_ms = sh.clock.now().timestamp_millis();
                let Some(w) = core.databricks.get_mut(&ws) else {
                    return error(404, "ENDPOINT_NOT_FOUND", "The workspace is gone.");
                };
                put(&mut w.scopes, &caller, &req, now_ms)
            }
        }
    })
}

fn permitted(have: Option<&ScopePermission>, need: ScopePermission) -> bool {
    have.is_some_and(|h| *h >= need)
}

fn denied(caller: &Caller, what: &str, scope: &str) -> Resp {
    error(
        403,
        "PERMISSION_DENIED",
        &format!(
            "User {} does not have {what} permission on scope {scope}",
            caller.client_id
        ),
    )
}

fn put(scopes: &mut [crate::state::SecretScope], caller: &Caller, req: &Req, now_ms: i64) -> Resp {
    let body: Value = match serde_json::from_slice(&req.body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            return error(
                400,
                "MALFORMED_REQUEST",
                "Invalid JSON given in the body of the request - expected a map",
            );
        }
        Err(e) => {
            return error(
                400,
                "MALFORMED_REQUEST",
                &format!("Invalid JSON given in the body of the request - {e}"),
            );
        }
    };
    let field = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
    let Some(scope_name) = field("scope") else {
        return error(
            400,
            "INVALID_PARAMETER_VALUE",
            "Missing required field: scope",
        );
    };
    let Some(key) = field("key") else {
        return error(
            400,
            "INVALID_PARAMETER_VALUE",
            "Missing required field: key",
        );
    };
    let value = match (field("string_value"), field("bytes_value")) {
        (Some(s), None) => ScopeValue::String(s),
        (None, Some(b)) => {
            if base64::engine::general_purpose::STANDARD
                .decode(&b)
                .is_err()
            {
                return error(
                    400,
                    "INVALID_PARAMETER_VALUE",
                    "bytes_value must be base64.",
                );
            }
            ScopeValue::Bytes(b)
        }
        _ => {
            return error(
                400,
                "INVALID_PARAMETER_VALUE",
                "Exactly one of string_value and bytes_value must be set.",
            );
        }
    };
    let Some(scope) = scopes.iter_mut().find(|s| s.name == scope_name) else {
        return error(
            404,
            "RESOURCE_DOES_NOT_EXIST",
            &format!("Scope {scope_name} does not exist!"),
        );
    };
    if !permitted(scope.acl.get(&caller.name), ScopePermission::Write) {
        return denied(caller, "WRITE", &scope_name);
    }
    if scope.backend == ScopeBackend::AzureKeyVault {
        return error(
            400,
            "BAD_REQUEST",
            &format!(
                "Scope {scope_name} is an Azure Key Vault-backed scope; secrets in it are read-only through the Databricks API. Use the Azure Key Vault Set Secret REST API or the Azure portal."
            ),
        );
    }
    let key_ok = !key.is_empty()
        && key.len() <= 128
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !key_ok {
        return error(
            400,
            "INVALID_PARAMETER_VALUE",
            &format!(
                "Invalid key name '{key}': it must consist of alphanumeric characters, dashes, underscores and periods, and be at most 128 characters."
            ),
        );
    }
    let size = match &value {
        ScopeValue::String(s) => s.len(),
        ScopeValue::Bytes(b) => b.len() / 4 * 3,
    };
    if size > MAX_VALUE {
        return error(
            400,
            "INVALID_PARAMETER_VALUE",
            &format!("The secret value is {size} bytes; the maximum is {MAX_VALUE}."),
        );
    }
    if !scope.secrets.contains_key(&key) && scope.secrets.len() >= MAX_SECRETS {
        return error(
            400,
            "RESOURCE_LIMIT_EXCEEDED",
            &format!("Scope {scope_name} already holds {MAX_SECRETS} secrets."),
        );
    }
    scope.secrets.insert(
        key,
        ScopeSecret {
            value,
            last_updated_ms: now_ms,
        },
    );
    wire::json(200, &json!({}))
}
