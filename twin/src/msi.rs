//! The App Service form of the managed identity endpoint (`IDENTITY_ENDPOINT` +
//! `IDENTITY_HEADER`): `GET /msi/token?api-version=2019-08-01&resource=...` with the
//! `x-identity-header` the world sets. `client_id`, `object_id` or `mi_res_id` select
//! a principal (a resource id by its last segment), otherwise the world's default.
//! The answer's `expires_on` is a string, as App Service sends it.

use std::sync::Arc;

use serde_json::json;

use crate::auth::{self, Proof};
use crate::entra::oauth_error;
use crate::ops::Op;
use crate::server::Shared;
use crate::server::dispatch::Handled;
use crate::token::Audience;
use crate::wire::{self, Req};

/// `GET /msi/token`: the App Service managed identity endpoint.
pub(crate) fn handle(shared: &Arc<Shared>, req: &Arc<Req>) -> Handled {
    let segs = req.segments();
    if segs.len() != 2 || !segs[1].eq_ignore_ascii_case("token") {
        return Handled::reply(
            None,
            None,
            oauth_error(404, "invalid_request", 0, "Not found: use /msi/token."),
        );
    }
    let op = Some(Op::MsiToken);
    if req.method != axum::http::Method::GET {
        return Handled::reply(op, None, oauth_error(405, "invalid_request", 0, "Use GET."));
    }
    if req.header("x-identity-header") != Some(shared.identity_header.as_str()) {
        return Handled::reply(
            op,
            None,
            oauth_error(
                401,
                "invalid_request",
                0,
                "The x-identity-header header is missing or does not match IDENTITY_HEADER.",
            ),
        );
    }
    if req.param("api-version") != Some("2019-08-01") {
        return Handled::reply(
            op,
            None,
            oauth_error(
                400,
                "invalid_request",
                0,
                &format!(
                    "api-version {:?} is not supported here; use 2019-08-01.",
                    req.param("api-version").unwrap_or("")
                ),
            ),
        );
    }
    let selected = if let Some(id) = req.param("client_id") {
        shared.directory.by_client_id(id)
    } else if let Some(id) = req.param("object_id").or_else(|| req.param("principal_id")) {
        shared.directory.by_object_id(id)
    } else if let Some(id) = req.param("mi_res_id").or_else(|| req.param("msi_res_id")) {
        id.rsplit('/')
            .next()
            .and_then(|n| shared.directory.by_name(n))
    } else {
        shared
            .msi_default
            .as_deref()
            .and_then(|n| shared.directory.by_name(n))
    };
    let Some(p) = selected.cloned() else {
        return Handled::reply(
            op,
            None,
            oauth_error(400, "invalid_request", 0, "Identity not found"),
        );
    };
    let resource = req.param("resource").unwrap_or("").to_string();
    Handled::run(Op::MsiToken, Some(p.name.clone()), move |sh, _| {
        let Some(aud) = Audience::for_resource(&resource, &sh.base_url) else {
            return oauth_error(
                400,
                "invalid_resource",
                500011,
                &format!("The resource principal named {resource} was not found in the tenant."),
            );
        };
        match auth::mint(sh, &p, aud, Proof::Assertion) {
            Ok((token, _, exp)) => wire::json(
                200,
                &json!({"access_token": token, "expires_on": exp.to_string(), "resource": resource, "token_type": "Bearer", "client_id": p.client_id}),
            ),
            Err(e) => oauth_error(500, "server_error", 0, &e),
        }
    })
}
