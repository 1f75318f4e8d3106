//! Azure Key Vault secrets, one vault per path prefix: the vault URL is
//! `{base_url}/keyvault/{vault}` and its secrets live under `.../secrets/...`.
//!
//! Every request without a bearer token gets the 401 challenge first
//! (`WWW-Authenticate: Bearer authorization="{base_url}/{tenant}",
//! resource="https://vault.azure.net"`), which is how every Key Vault SDK learns the
//! tenant and scope; clients must turn challenge-resource verification off, because
//! the vault host is not a subdomain of `vault.azure.net`. Then: api-version, per-vault
//! throttling, the RBAC data action at the secret's scope (403 `ForbiddenByRbac`), the
//! operation.
//!
//! Secret ids are `{base_url}/secrets/{name}/{version}`: the path holds no vault
//! prefix because Microsoft's SDKs parse ids as exactly `/secrets/{name}[/{version}]`
//! (the Rust `ResourceExt::resource_id` and Python `KeyVaultSecretIdentifier` refuse
//! anything longer). Such ids are still served: `/secrets/{name}/{version}` finds the
//! vault by the (globally unique) version, `/secrets/{name}` by the secret name when
//! only one vault has it.

mod secrets;

use std::sync::Arc;

use serde_json::json;

use crate::auth::{self, AuthFailure};
use crate::ops::Op;
use crate::server::Shared;
use crate::server::dispatch::Handled;
use crate::token::{Audience, TokenProblem, VAULT_AUDIENCE};
use crate::wire::{self, Req, Resp, with_header};

/// A Key Vault error body.
/// Key Vault's limit on tags per secret ("Secret tags: up to 15", Microsoft Learn,
/// About Azure Key Vault secrets).
pub(crate) const MAX_SECRET_TAGS: usize = 15;

pub(crate) fn error(status: u16, code: &str, message: &str) -> Resp {
    wire::json(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
}

pub(crate) fn error_inner(status: u16, code: &str, message: &str, inner: &str) -> Resp {
    wire::json(
        status,
        &json!({"error": {"code": code, "message": message, "innererror": {"code": inner}}}),
    )
}

/// What a request asks of a secret.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    Set,
    Get(Option<String>),
    Versions,
    Update(Option<String>),
    /// `GET {vault}/secrets`: every secret's current attributes, no values.
    List,
}

impl Action {
    fn op(&self) -> Op {
        match self {
            Action::Set => Op::KeyVaultSet,
            Action::Get(_) => Op::KeyVaultGet,
            Action::Versions => Op::KeyVaultVersions,
            Action::Update(_) => Op::KeyVaultUpdate,
            Action::List => Op::KeyVaultList,
        }
    }
}

fn challenge(shared: &Shared, status_body: Resp) -> Resp {
    let value = format!(
        "Bearer authorization=\"{}/{}\", resource=\"{VAULT_AUDIENCE}\"",
        shared.base_url, shared.topology.tenant_id
    );
    with_header(status_body, "www-authenticate", &value)
}

fn unauthorized(shared: &Shared, f: &AuthFailure) -> Resp {
    let message = match f {
        AuthFailure::Missing => "AKV10000: Request is missing a Bearer or PoP token.".to_string(),
        AuthFailure::Problem(TokenProblem::WrongAudience { found }) => {
            format!("AKV10022: Invalid audience. Expected {VAULT_AUDIENCE}, found: {found}.")
        }
        AuthFailure::Problem(TokenProblem::WrongIssuer { found }) => format!(
            "AKV10032: Invalid issuer. Expected one of https://sts.windows.net/{}/, found {found}.",
            shared.topology.tenant_id
        ),
        AuthFailure::Problem(TokenProblem::Expired { .. }) => {
            "AKV10012: Token has expired.".to_string()
        }
        AuthFailure::Problem(_) => {
            "AKV10005: Invalid token: the signature or format is not valid.".to_string()
        }
    };
    challenge(shared, error(401, "Unauthorized", &message))
}

/// Finds the vault (lower-case name) a request is for, and where the secrets part
/// of the path starts.
fn locate(shared: &Shared, segs: &[&str]) -> Option<(String, usize)> {
    let core = shared.core();
    if segs
        .first()
        .is_some_and(|s| s.eq_ignore_ascii_case("keyvault"))
    {
        let vault = segs.get(1)?.to_ascii_lowercase();
        return core.vaults.contains_key(&vault).then_some((vault, 2));
    }
    // An id-style path: /secrets/{name}[/{version}].
    let name = segs.get(1)?.to_ascii_lowercase();
    let version = segs.get(2).map(|v| v.to_ascii_lowercase());
    let mut hits = core.vaults.iter().filter(|(_, v)| {
        v.secrets.get(&name).is_some_and(|s| match &version {
            Some(ver) if ver != "versions" => s.versions.iter().any(|x| &x.version == ver),
            _ => true,
        })
    });
    let first = hits.next().map(|(k, _)| k.clone())?;
    hits.next().is_none().then_some((first, 0))
}

pub(crate) fn handle(shared: &Arc<Shared>, req: &Arc<Req>) -> Handled {
    let segs = req.segments();
    let Some((vault, start)) = locate(shared, &segs) else {
        let name = segs.get(1).copied().unwrap_or("");
        return Handled::reply(
            None,
            None,
            error(
                404,
                "VaultNotFound",
                &format!("No vault named '{name}' is served by keyflip-twin at this path."),
            ),
        );
    };
    let rest: Vec<&str> = segs[start..].to_vec();
    let m = &req.method;
    use axum::http::Method;
    let parsed = match rest.as_slice() {
        // Listing needs the vault prefix: an id-style `/secrets` names no vault.
        [s] if start > 0 && s.eq_ignore_ascii_case("secrets") => {
            (*m == Method::GET).then_some((Action::List, ""))
        }
        [s, name] if s.eq_ignore_ascii_case("secrets") => match *m {
            Method::PUT => Some((Action::Set, *name)),
            Method::GET => Some((Action::Get(None), *name)),
            Method::PATCH => Some((Action::Update(None), *name)),
            _ => None,
        },
        [s, name, v] if s.eq_ignore_ascii_case("secrets") && v.eq_ignore_ascii_case("versions") => {
            (*m == Method::GET).then_some((Action::Versions, *name))
        }
        [s, name, version] if s.eq_ignore_ascii_case("secrets") => match *m {
            Method::GET => Some((Action::Get(Some(version.to_string())), *name)),
            Method::PATCH => Some((Action::Update(Some(version.to_string())), *name)),
            _ => None,
        },
        _ => None,
    };
    let Some((action, name)) = parsed else {
        // Unknown paths still get the challenge first, as Key Vault does.
        if req.bearer().is_none() {
            return Handled::reply(None, None, unauthorized(shared, &AuthFailure::Missing));
        }
        return Handled::reply(
            None,
            None,
            error(
                400,
                "BadParameter",
                &format!(
                    "keyflip-twin does not serve '{} {}': it models secret set, get, list, list versions and update.",
                    req.method, req.path
                ),
            ),
        );
    };
    let op = action.op();
    let name = name.to_string();
    let caller = match auth::authenticate(shared, req, Audience::KeyVault) {
        Ok(c) => c,
        Err(f) => return Handled::reply(Some(op), None, unauthorized(shared, &f)),
    };
    if let Err(r) = check_api_version(req) {
        return Handled::reply(Some(op), Some(caller.name), r);
    }
    let req = req.clone();
    Handled::run(op, Some(caller.name.clone()), move |sh, _| {
        secrets::run(sh, &req, &caller, &vault, &name, &action)
    })
}

/// Accepts 7.0–7.6 and date versions from 2025-01-01 (optionally `-preview`).
fn check_api_version(req: &Req) -> Result<(), Resp> {
    let Some(v) = req.param("api-version") else {
        return Err(error(
            400,
            "BadParameter",
            "The api-version query parameter is required (for example api-version=7.5).",
        ));
    };
    let numeric = matches!(
        v,
        "7.0" | "7.1" | "7.2" | "7.3" | "7.4" | "7.5" | "7.6" | "7.6-preview.2"
    );
    let dated = v.get(..10).is_some_and(|d| {
        chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok()
            && ("2025-01-01"..="2026-12-31").contains(&d)
    }) && matches!(v.get(10..), Some("") | Some("-preview"));
    if numeric || dated {
        Ok(())
    } else {
        Err(error(
            400,
            "BadParameter",
            &format!(
                "The specified version ({v}) is not recognized. Consider using the latest supported version (7.5)."
            ),
        ))
    }
}
