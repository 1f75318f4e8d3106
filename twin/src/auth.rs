//! Issuing and checking access tokens for principals: the bridge between the token
//! format ([`crate::token`]) and the directory of principals.

use serde_json::json;

use crate::server::Shared;
use crate::state::Principal;
use crate::token::{Audience, TokenProblem, check_claims};
use crate::wire::Req;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub name: String,
    pub object_id: String,
    pub client_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AuthFailure {
    /// No `Authorization: Bearer` header.
    Missing,
    Problem(TokenProblem),
}

/// Checks the bearer token of a request for the given resource.
pub(crate) fn authenticate(
    shared: &Shared,
    req: &Req,
    want: Audience,
) -> Result<Caller, AuthFailure> {
    let token = req.bearer().ok_or(AuthFailure::Missing)?;
    let claims = shared
        .tokens
        .decode(&shared.signer, token)
        .map_err(AuthFailure::Problem)?;
    check_claims(
        &claims,
        want,
        &shared.topology.tenant_id,
        shared.clock.now().timestamp(),
    )
    .map_err(AuthFailure::Problem)?;
    let p = claims
        .oid
        .as_deref()
        .and_then(|oid| shared.directory.by_object_id(oid))
        .ok_or(AuthFailure::Problem(TokenProblem::UnknownPrincipal))?;
    Ok(Caller {
        name: p.name.clone(),
        object_id: p.object_id.clone(),
        client_id: p.client_id.clone(),
    })
}

/// How the principal proved who it is (the `appidacr` claim).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Proof {
    Secret,
    Assertion,
}

/// Mints an access token; returns it with its lifetime and expiry (unix seconds).
pub(crate) fn mint(
    shared: &Shared,
    p: &Principal,
    aud: Audience,
    proof: Proof,
) -> Result<(String, u32, i64), String> {
    let now = shared.clock.now().timestamp();
    let lifetime = shared.core().settings.token_lifetime_secs.max(1);
    let exp = now + i64::from(lifetime);
    let tid = &shared.topology.tenant_id;
    let claims = json!({
        "aud": aud.claim(),
        "iss": format!("https://sts.windows.net/{tid}/"),
        "iat": now,
        "nbf": now,
        "exp": exp,
        "tid": tid,
        "oid": p.object_id,
        "sub": p.object_id,
        "appid": p.client_id,
        "appidacr": match proof { Proof::Secret => "1", Proof::Assertion => "2" },
        "idtyp": "app",
        "ver": "1.0",
        "uti": crate::entropy::hex32(),
    });
    let token = shared.signer.sign(&claims)?;
    Ok((token, lifetime, exp))
}
