//! Microsoft Entra ID as the twin serves it: OpenID discovery, the JWKS, the v2
//! token endpoint (client credentials with a client secret, in the body or HTTP
//! Basic, or with a client assertion minted by the twin for a federated credential).
//! The managed identity endpoint is in [`crate::msi`].
//!
//! Errors use Entra's OAuth shape (`error`, `error_description` starting with the
//! AADSTS code, `error_codes`, ...), with the AADSTS codes real clients key on.

use std::sync::Arc;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::auth::{self, Proof};
use crate::ops::Op;
use crate::server::Shared;
use crate::server::dispatch::Handled;
use crate::state::Principal;
use crate::token::{Audience, FEDERATED_AUDIENCE};
use crate::wire::{self, Req, Resp};

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// An OAuth error body. `aadsts` 0 means "no AADSTS code".
pub(crate) fn oauth_error(status: u16, error: &str, aadsts: u32, description: &str) -> Resp {
    let now = chrono::Utc::now();
    let trace = uuid::Uuid::new_v4();
    let correlation = uuid::Uuid::new_v4();
    let stamp = now.format("%Y-%m-%d %H:%M:%SZ").to_string();
    let prefix = if aadsts > 0 {
        format!("AADSTS{aadsts}: ")
    } else {
        String::new()
    };
    wire::json(
        status,
        &json!({
            "error": error,
            "error_description": format!("{prefix}{description} Trace ID: {trace} Correlation ID: {correlation} Timestamp: {stamp}"),
            "error_codes": if aadsts > 0 { vec![aadsts] } else { vec![] },
            "timestamp": stamp,
            "trace_id": trace.to_string(),
            "correlation_id": correlation.to_string(),
            "error_uri": format!("https://login.microsoftonline.com/error?code={aadsts}"),
        }),
    )
}

fn missing(name: &str) -> Resp {
    oauth_error(
        400,
        "invalid_request",
        900144,
        &format!("The request body must contain the following parameter: '{name}'."),
    )
}

/// `/{tenant}/...`
pub(crate) fn handle(shared: &Arc<Shared>, req: &Arc<Req>) -> Handled {
    let segs = req.segments();
    let lower: Vec<String> = segs.iter().map(|s| s.to_ascii_lowercase()).collect();
    let tail: Vec<&str> = lower.iter().skip(1).map(String::as_str).collect();
    let op = match tail.as_slice() {
        ["oauth2", "v2.0", "token"] => Op::EntraToken,
        ["v2.0", ".well-known", "openid-configuration"]
        | ["discovery", "v2.0", "keys"]
        | ["discovery", "keys"] => Op::EntraDiscovery,
        _ => {
            return Handled::reply(
                None,
                None,
                oauth_error(
                    404,
                    "invalid_request",
                    90002,
                    "The endpoint is not served by keyflip-twin.",
                ),
            );
        }
    };
    let tenant = segs.first().copied().unwrap_or("");
    if !tenant.eq_ignore_ascii_case(&shared.topology.tenant_id) {
        return Handled::reply(
            Some(op),
            None,
            oauth_error(
                400,
                "invalid_request",
                90002,
                &format!(
                    "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
                ),
            ),
        );
    }
    if op == Op::EntraDiscovery {
        let keys = tail.first() == Some(&"discovery");
        return Handled::run(op, None, move |sh, _| {
            if keys {
                wire::json(200, &sh.signer.jwks())
            } else {
                wire::json(200, &openid_configuration(sh))
            }
        });
    }
    token_request(shared, req)
}

fn openid_configuration(sh: &Shared) -> Value {
    let (base, tid) = (&sh.base_url, &sh.topology.tenant_id);
    json!({
        "token_endpoint": format!("{base}/{tid}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{base}/{tid}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": format!("{base}/{tid}/v2.0"),
        "request_uri_parameter_supported": false,
        "userinfo_endpoint": format!("{base}/oidc/userinfo"),
        "authorization_endpoint": format!("{base}/{tid}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{base}/{tid}/oauth2/v2.0/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{base}/{tid}/oauth2/v2.0/logout"),
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "oid", "appid"],
        "kerberos_endpoint": format!("{base}/{tid}/kerberos"),
        "tenant_region_scope": "EU",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    })
}

/// The client credentials a token request carries.
struct Credentials {
    client_id: Option<String>,
    secret: Option<String>,
    assertion: Option<(String, String)>,
    scope: Option<String>,
    grant_type: Option<String>,
    /// The URLs of this token endpoint a client assertion may name as `aud`.
    endpoints: Vec<String>,
}

fn credentials(req: &Req, base_url: &str) -> Credentials {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&req.body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let get = |n: &str| form.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    // client_secret_basic: Authorization: Basic base64(client_id:client_secret).
    let basic = req
        .header("authorization")
        .and_then(|h| h.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            s.split_once(':')
                .map(|(a, b)| (a.to_string(), b.to_string()))
        });
    let assertion = match (get("client_assertion_type"), get("client_assertion")) {
        (Some(t), Some(a)) => Some((t, a)),
        (None, Some(a)) => Some((String::new(), a)),
        _ => None,
    };
    // The endpoint as this twin names itself, and as the client addressed it (a
    // national cloud's login host routed here).
    let path = req.path.trim_end_matches('/').to_owned();
    let mut endpoints = vec![format!("{base_url}{path}")];
    if let Some(host) = &req.authority {
        endpoints.push(format!("https://{host}{path}"));
    }
    Credentials {
        endpoints,
        client_id: get("client_id").or_else(|| basic.as_ref().map(|b| b.0.clone())),
        secret: get("client_secret").or_else(|| basic.map(|b| b.1)),
        assertion,
        scope: get("scope"),
        grant_type: get("grant_type"),
    }
}

fn token_request(shared: &Arc<Shared>, req: &Arc<Req>) -> Handled {
    let op = Some(Op::EntraToken);
    if req.method != axum::http::Method::POST {
        return Handled::reply(
            op,
            None,
            oauth_error(
                400,
                "invalid_request",
                900561,
                "The endpoint only accepts POST requests.",
            ),
        );
    }
    let form_ok = req.header("content-type").is_some_and(|c| {
        c.to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    });
    if !form_ok {
        return Handled::reply(op, None, missing("grant_type"));
    }
    let c = credentials(req, &shared.base_url);
    let Some(grant) = c.grant_type.clone() else {
        return Handled::reply(op, None, missing("grant_type"));
    };
    if grant != "client_credentials" {
        return Handled::reply(
            op,
            None,
            oauth_error(
                400,
                "unsupported_grant_type",
                70003,
                &format!("The app requested an unsupported grant type '{grant}'."),
            ),
        );
    }
    let Some(client_id) = c.client_id.clone() else {
        return Handled::reply(op, None, missing("client_id"));
    };
    let Some(p) = shared.directory.by_client_id(&client_id).cloned() else {
        let tid = &shared.topology.tenant_id;
        return Handled::reply(
            op,
            None,
            oauth_error(
                400,
                "unauthorized_client",
                700016,
                &format!(
                    "Application with identifier '{client_id}' was not found in the directory '{tid}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant."
                ),
            ),
        );
    };
    let name = p.name.clone();
    Handled::run(Op::EntraToken, Some(name), move |sh, _| issue(sh, &p, &c))
}

fn issue(sh: &Shared, p: &Principal, c: &Credentials) -> Resp {
    let Some(scope) = &c.scope else {
        return missing("scope");
    };
    // Ignore the OpenID scopes some clients add; exactly one resource must remain.
    let resources: Vec<&str> = scope
        .split_whitespace()
        .filter(|s| !matches!(*s, "openid" | "profile" | "offline_access"))
        .collect();
    let aud = match resources.as_slice() {
        [one] => Audience::for_scope(one, &sh.base_url),
        _ => None,
    };
    let Some(aud) = aud else {
        if resources.len() == 1 && !scope.ends_with(".default") {
            return oauth_error(
                400,
                "invalid_scope",
                1002012,
                &format!(
                    "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
                ),
            );
        }
        return oauth_error(
            400,
            "invalid_resource",
            500011,
            &format!(
                "The resource principal named {scope} was not found in the tenant named {}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.",
                sh.topology.tenant_name
            ),
        );
    };
    let proof = match (&c.secret, &c.assertion) {
        (Some(secret), _) => {
            if secret != &p.client_secret {
                return oauth_error(
                    401,
                    "invalid_client",
                    7000215,
                    &format!(
                        "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                        p.client_id
                    ),
                );
            }
            Proof::Secret
        }
        (None, Some((kind, assertion)))
            if crate::certificate::is_certificate_assertion(assertion) =>
        {
            if kind != ASSERTION_TYPE {
                return oauth_error(
                    400,
                    "invalid_request",
                    50027,
                    &format!("client_assertion_type must be '{ASSERTION_TYPE}'."),
                );
            }
            if let Err(r) =
                crate::certificate::check(p, assertion, &c.endpoints, sh.clock.now().timestamp())
            {
                return r;
            }
            Proof::Assertion
        }
        (None, Some((kind, assertion))) => {
            if let Err(r) = check_assertion(sh, p, kind, assertion) {
                return r;
            }
            Proof::Assertion
        }
        (None, None) => {
            return oauth_error(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            );
        }
    };
    match auth::mint(sh, p, aud, proof) {
        Ok((token, lifetime, _)) => wire::json(
            200,
            &json!({"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token}),
        ),
        Err(e) => oauth_error(500, "server_error", 0, &e),
    }
}

fn check_assertion(sh: &Shared, p: &Principal, kind: &str, assertion: &str) -> Result<(), Resp> {
    if kind != ASSERTION_TYPE {
        return Err(oauth_error(
            400,
            "invalid_request",
            50027,
            &format!("client_assertion_type must be '{ASSERTION_TYPE}'."),
        ));
    }
    let claims = sh.signer.decode(assertion).map_err(|_| {
        oauth_error(
            401,
            "invalid_client",
            700027,
            "Client assertion failed signature validation.",
        )
    })?;
    let now = sh.clock.now().timestamp();
    if claims.exp <= now || claims.nbf.is_some_and(|n| n > now) {
        return Err(oauth_error(
            400,
            "invalid_client",
            700024,
            "Client assertion is not within its valid time range.",
        ));
    }
    let sub = claims.sub.clone().unwrap_or_default();
    let matches = claims.aud == FEDERATED_AUDIENCE
        && p.federated
            .iter()
            .any(|(iss, s)| iss == &claims.iss && s == &sub);
    if !matches {
        return Err(oauth_error(
            400,
            "invalid_client",
            70021,
            &format!(
                "No matching federated identity record found for presented assertion. Assertion Issuer: '{}'. Assertion Subject: '{sub}'. Assertion Audience: '{}'.",
                claims.iss, claims.aud
            ),
        ));
    }
    Ok(())
}
