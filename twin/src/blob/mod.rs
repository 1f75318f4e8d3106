//! The Blob service data plane, path-style (`{base_url}/{account}/...`): Get Account
//! Information (`?restype=account&comp=properties`, GET or HEAD, at the account,
//! container or blob path) and List Containers (`?comp=list` at the account root),
//! authorized with SharedKey only.
//!
//! A key authorizes a request when it is one of the account's current keys and its
//! propagation delay has passed; the old value of a regenerated key is refused at
//! once. Refusals are Azure's: 403 `AuthenticationFailed` XML naming the string the
//! server signed, 403 `KeyBasedAuthenticationNotPermitted` when shared keys are off,
//! 401 `NoAuthenticationInformation` without an `Authorization` header.

pub(crate) mod sharedkey;

use std::sync::Arc;

use axum::http::Method;
use chrono::{DateTime, Utc};

use crate::clock::azure_time;
use crate::monitor::{
    self,
    logs::{Auth, BlobRequest},
};
use crate::ops::Op;
use crate::server::Shared;
use crate::server::dispatch::Handled;
use crate::state::StorageAccount;
use crate::wire::{self, Req, Resp, set_header, xml_attr, xml_escape};
use sharedkey::HeaderOrder;

/// A Blob service error: XML body and `x-ms-error-code`. `now` is the twin clock's,
/// which the message's `Time:` line shows.
pub(crate) fn error(
    status: u16,
    code: &str,
    message: &str,
    detail: Option<&str>,
    now: DateTime<Utc>,
) -> Resp {
    let request_id = uuid::Uuid::new_v4();
    let time = azure_time(now);
    let detail = detail
        .map(|d| {
            format!(
                "<AuthenticationErrorDetail>{}</AuthenticationErrorDetail>",
                xml_escape(d)
            )
        })
        .unwrap_or_default();
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{}</Code><Message>{}\nRequestId:{request_id}\nTime:{time}</Message>{detail}</Error>",
        xml_escape(code),
        xml_escape(message)
    );
    let mut r = wire::body(status, "application/xml", body);
    set_header(&mut r, "x-ms-error-code", code);
    set_header(&mut r, "x-ms-request-id", &request_id.to_string());
    r
}

pub(crate) fn handle(shared: &Arc<Shared>, req: &Arc<Req>) -> Handled {
    let segs = req.segments();
    let account = segs.first().copied().unwrap_or("").to_string();
    let restype = req.param("restype").unwrap_or("");
    let comp = req.param("comp").unwrap_or("");
    let read = req.method == Method::GET || req.method == Method::HEAD;
    let op = if read && restype == "account" && comp == "properties" {
        Op::BlobAccountInfo
    } else if req.method == Method::GET && comp == "list" && restype.is_empty() && segs.len() == 1 {
        Op::BlobListContainers
    } else {
        return Handled::reply(
            None,
            None,
            error(
                400,
                "UnsupportedOperation",
                &format!(
                    "keyflip-twin models only Get Account Information (?restype=account&comp=properties) and List Containers (?comp=list); '{} {}' is not modelled.",
                    req.method, req.path
                ),
                None,
                shared.clock.now(),
            ),
        );
    };
    let req = req.clone();
    Handled::run(op, None, move |sh, _| {
        let started = std::time::Instant::now();
        let now = sh.clock.now();
        let mut core = sh.core();
        let Some(acct) = core.accounts.get(&account) else {
            return error(
                404,
                "ResourceNotFound",
                "The specified resource does not exist.",
                None,
                now,
            );
        };
        let (resp, auth) = match verify(sh, acct, &req, now) {
            Ok(index) => {
                let auth = Auth::AccountKey {
                    index,
                    value: acct.keys[index].value.clone(),
                };
                let mut r = match op {
                    Op::BlobAccountInfo => {
                        let mut r = wire::empty(200);
                        set_header(&mut r, "x-ms-sku-name", &acct.sku);
                        set_header(&mut r, "x-ms-account-kind", &acct.kind);
                        set_header(&mut r, "x-ms-is-hns-enabled", "false");
                        r
                    }
                    _ => list_containers(&sh.base_url, acct, &req, now),
                };
                // The request id the log's CorrelationId names.
                set_header(&mut r, "x-ms-request-id", &uuid::Uuid::new_v4().to_string());
                (r, Some(auth))
            }
            // A request without `Authorization` is anonymous, and Azure does not log
            // failed anonymous requests ("About Storage Analytics logging").
            Err((r, signed)) => (r, signed.then_some(Auth::AccountKeyRefused)),
        };
        if let Some(auth) = auth {
            let name = acct.name.clone();
            let record = request_record(sh, &req, op, &resp, auth, now, started.elapsed());
            monitor::logs::record_blob(&mut core, &name, &record);
        }
        resp
    })
}

/// The resource-log facts of a served Blob request.
fn request_record(
    sh: &Shared,
    req: &Req,
    op: Op,
    resp: &Resp,
    auth: Auth,
    now: DateTime<Utc>,
    took: std::time::Duration,
) -> BlobRequest {
    let status = resp.status().as_u16();
    let header = |n: &str| req.header(n).unwrap_or_default().to_string();
    let body_len = {
        use hyper::body::Body as _;
        resp.body()
            .size_hint()
            .exact()
            .and_then(|n| i64::try_from(n).ok())
            .unwrap_or(0)
    };
    let head: usize = req
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + req.method.as_str().len()
        + req.path.len()
        + req.query_raw.len()
        + 12;
    let account = req
        .segments()
        .first()
        .copied()
        .unwrap_or_default()
        .to_string();
    BlobRequest {
        time: now,
        operation: match op {
            Op::BlobAccountInfo => "GetAccountInformation",
            _ => "ListContainers",
        },
        category: "StorageRead",
        auth,
        status,
        status_text: if status < 400 {
            "Success"
        } else {
            "AuthenticationError"
        },
        caller: req.peer.map(|p| p.to_string()).unwrap_or_default(),
        user_agent: header("user-agent"),
        uri: if req.query_raw.is_empty() {
            format!("{}{}", sh.base_url, req.path)
        } else {
            format!("{}{}?{}", sh.base_url, req.path, req.query_raw)
        },
        client_request_id: header("x-ms-client-request-id"),
        request_id: resp
            .headers()
            .get("x-ms-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        version: header("x-ms-version"),
        object_key: format!("/{account}"),
        duration_ms: took.as_secs_f64() * 1000.0,
        request_header_size: i64::try_from(head).unwrap_or(i64::MAX),
        response_body_size: body_len,
    }
}

/// Which key authorized the request (its index), or the refusal and whether the
/// request was signed (an anonymous refusal is not logged).
fn verify(
    sh: &Shared,
    acct: &StorageAccount,
    req: &Req,
    now: DateTime<Utc>,
) -> Result<usize, (Resp, bool)> {
    let Some(auth) = req.header("authorization") else {
        // Azure's bearer challenge, which the message points to; clients that discover
        // the tenant read it from `authorization_uri`.
        let mut r = error(
            401,
            "NoAuthenticationInformation",
            "Server failed to authenticate the request. Please refer to the information in the www-authenticate header.",
            None,
            now,
        );
        set_header(
            &mut r,
            "www-authenticate",
            &format!(
                "Bearer authorization_uri={}/{}/oauth2/authorize resource_id=https://storage.azure.com",
                sh.base_url, sh.topology.tenant_id
            ),
        );
        return Err((r, false));
    };
    let failed = |detail: &str| {
        (
            error(
                403,
                "AuthenticationFailed",
                "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.",
                Some(detail),
                now,
            ),
            true,
        )
    };
    let Some(cred) = auth.strip_prefix("SharedKey ") else {
        return Err(failed(
            "keyflip-twin authorizes the Blob service with SharedKey only (Authorization: SharedKey account:signature).",
        ));
    };
    let Some((account, signature)) = cred.trim().split_once(':') else {
        return Err(failed(
            "The Authorization header is not of the form 'SharedKey account:signature'.",
        ));
    };
    if account != acct.name {
        return Err(failed(&format!(
            "The account being accessed ('{}') does not match the account in the Authorization header ('{account}').",
            acct.name
        )));
    }
    if !acct.allow_shared_key_access {
        return Err((
            error(
                403,
                "KeyBasedAuthenticationNotPermitted",
                "Key based authentication is not permitted on this storage account.",
                None,
                now,
            ),
            true,
        ));
    }
    // `x-ms-date` wins over `Date` when both are sent (Authorize with Shared Key).
    let Some(date) = req.header("x-ms-date").or_else(|| req.header("date")) else {
        return Err(failed("Request date header not specified."));
    };
    match httpdate::parse_http_date(date) {
        Err(_) => return Err(failed("The Date header in the request is incorrect.")),
        Ok(sent) if too_old(DateTime::<Utc>::from(sent), now) => {
            return Err(failed(&format!("Request date header too old: '{date}'")));
        }
        Ok(_) => {}
    }
    let method = req.method.as_str();
    let sts = |order| {
        sharedkey::string_to_sign(
            method,
            &req.headers,
            &acct.name,
            &req.path,
            &req.query_raw,
            order,
        )
    };
    let (bytewise, collated) = (sts(HeaderOrder::Bytewise), sts(HeaderOrder::Collated));
    let matched = acct.keys.iter().position(|k| {
        k.accepted_from <= now
            && (sharedkey::sign(&k.value, &bytewise).as_deref() == Some(signature)
                || (collated != bytewise
                    && sharedkey::sign(&k.value, &collated).as_deref() == Some(signature)))
    });
    if let Some(index) = matched {
        Ok(index)
    } else {
        Err(failed(&format!(
            "The MAC signature found in the HTTP request '{signature}' is not the same as any computed signature. Server used following string to sign: '{bytewise}'."
        )))
    }
}

/// How old a signed request may be: "The storage services ensure that a request is no
/// older than 15 minutes by the time it reaches the service" (Authorize with Shared
/// Key). Azure documents no bound on dates in the future, and accepts them
/// (observed in Azure/azure-sdk-for-java#34081), so neither does the twin.
const MAX_REQUEST_AGE_SECS: i64 = 15 * 60;

fn too_old(sent: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    now - sent > chrono::TimeDelta::seconds(MAX_REQUEST_AGE_SECS)
}

fn list_containers(base_url: &str, acct: &StorageAccount, req: &Req, now: DateTime<Utc>) -> Resp {
    let max = match req.param("maxresults") {
        None => 5000,
        Some(m) => match m.parse::<usize>() {
            Ok(n) if (1..=5000).contains(&n) => n,
            _ => {
                return error(
                    400,
                    "OutOfRangeQueryParameterValue",
                    &format!(
                        "One of the query parameters specified in the request URI is outside the permissible range: maxresults={m}."
                    ),
                    None,
                    now,
                );
            }
        },
    };
    let prefix = req.param("prefix").unwrap_or("");
    let marker = req.param("marker").unwrap_or("");
    let mut names: Vec<&String> = acct
        .containers
        .iter()
        .filter(|c| c.starts_with(prefix) && c.as_str() >= marker)
        .collect();
    names.sort();
    let next = names.get(max).map(|n| n.to_string()).unwrap_or_default();
    let modified = httpdate::fmt_http_date(std::time::SystemTime::from(acct.created));
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><EnumerationResults ServiceEndpoint=\"{}/{}/\">",
        xml_attr(base_url),
        xml_attr(&acct.name)
    );
    if !prefix.is_empty() {
        xml.push_str(&format!("<Prefix>{}</Prefix>", xml_escape(prefix)));
    }
    if !marker.is_empty() {
        xml.push_str(&format!("<Marker>{}</Marker>", xml_escape(marker)));
    }
    if req.param("maxresults").is_some() {
        xml.push_str(&format!("<MaxResults>{max}</MaxResults>"));
    }
    xml.push_str("<Containers>");
    for name in names.iter().take(max) {
        xml.push_str(&format!(
            "<Container><Name>{}</Name><Properties><Last-Modified>{modified}</Last-Modified><Etag>\"0x8DC0000000000000\"</Etag><LeaseStatus>unlocked</LeaseStatus><LeaseState>available</LeaseState><DefaultEncryptionScope>$account-encryption-key</DefaultEncryptionScope><DenyEncryptionScopeOverride>false</DenyEncryptionScopeOverride><HasImmutabilityPolicy>false</HasImmutabilityPolicy><HasLegalHold>false</HasLegalHold><ImmutableStorageWithVersioningEnabled>false</ImmutableStorageWithVersioningEnabled></Properties></Container>",
            xml_escape(name)
        ));
    }
    xml.push_str("</Containers>");
    if next.is_empty() {
        xml.push_str("<NextMarker />");
    } else {
        xml.push_str(&format!("<NextMarker>{}</NextMarker>", xml_escape(&next)));
    }
    xml.push_str("</EnumerationResults>");
    wire::body(200, "application/xml", xml)
}
