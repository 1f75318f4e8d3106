//! One request, start to finish: read it, route it by its first path segment to a
//! service, apply any matching fault, run the operation, add the headers the service
//! always sends, and log it.
//!
//! Services answer with a [`Handled`]: the operation (once known), the principal (once
//! authenticated) and either a final reply (for requests refused before reaching an
//! operation) or the operation itself as a closure, which runs synchronously on the
//! shared state. Keeping the operation a value lets the dispatcher delay it, skip it,
//! run it and then lie about the result, or drop the connection instead.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use hyper::body::Incoming;
use serde_json::json;

use super::{Dropped, Shared};
use crate::faults::{FaultAction, default_code};
use crate::ops::{Op, Service};
use crate::requestlog::Entry;
use crate::throttle::Budget;
use crate::wire::{self, Req, Resp, set_header};
use crate::{admin, arm, blob, databricks, entra, keyvault, monitor, msi};

/// Requests larger than this are refused (Databricks values are at most 128 KB).
const BODY_LIMIT: usize = 4 * 1024 * 1024;

/// What fault injection tells an operation.
#[derive(Debug, Default)]
pub(crate) struct Flags {
    /// Make the long-running operation this request starts fail: (code, status).
    pub lro_fail: Option<(String, u16)>,
}

pub(crate) type Run = Box<dyn FnOnce(&Shared, &Flags) -> Resp + Send>;

pub(crate) enum Next {
    Reply(Resp),
    Run(Run),
}

/// A service's answer to a request.
pub(crate) struct Handled {
    pub op: Option<Op>,
    pub principal: Option<String>,
    pub next: Next,
}

impl Handled {
    pub fn reply(op: Option<Op>, principal: Option<String>, resp: Resp) -> Self {
        Self {
            op,
            principal,
            next: Next::Reply(resp),
        }
    }

    pub fn run(
        op: Op,
        principal: Option<String>,
        run: impl FnOnce(&Shared, &Flags) -> Resp + Send + 'static,
    ) -> Self {
        Self {
            op: Some(op),
            principal,
            next: Next::Run(Box::new(run)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prefix {
    Admin,
    Msi,
    Entra,
    Arm,
    KeyVault,
    Databricks,
    Blob,
    LogAnalytics,
    Unknown,
}

fn classify(shared: &Shared, first: Option<&str>) -> Prefix {
    let Some(first) = first else {
        return Prefix::Arm;
    };
    match first.to_ascii_lowercase().as_str() {
        "_admin" => Prefix::Admin,
        "msi" => Prefix::Msi,
        "keyvault" | "secrets" => Prefix::KeyVault,
        "databricks" => Prefix::Databricks,
        // The Log Analytics query API (`/v1/workspaces/{id}/query`); no storage
        // account can be called `v1` (names have 3 to 24 characters).
        "v1" => Prefix::LogAnalytics,
        "subscriptions" | "providers" | "metadata" | "tenants" => Prefix::Arm,
        "common" | "organizations" | "consumers" => Prefix::Entra,
        s if wire::is_guid(s) || s == shared.topology.tenant_id => Prefix::Entra,
        _ if shared.core().accounts.contains_key(first) => Prefix::Blob,
        _ => Prefix::Unknown,
    }
}

pub(crate) async fn serve(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Resp, Dropped> {
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(Body::new(body), BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => {
            return Ok(wire::json(
                413,
                &json!({"error": {"code": "RequestEntityTooLarge", "message": format!("The request body is larger than {BODY_LIMIT} bytes, or was cut off.")}}),
            ));
        }
    };
    let req = Arc::new(Req::new(parts, bytes));
    // Simulated clients' requests that came due happen before this one (admin calls
    // included: a regeneration must not reach back into the past).
    monitor::tick(&shared);
    let prefix = classify(&shared, req.segments().first().copied());
    let handled = match prefix {
        Prefix::Admin => return Ok(admin::handle(&shared, &req)),
        Prefix::Msi => msi::handle(&shared, &req),
        Prefix::Entra => entra::handle(&shared, &req),
        Prefix::Arm => arm::handle(&shared, &req),
        Prefix::KeyVault => keyvault::handle(&shared, &req),
        Prefix::Databricks => databricks::handle(&shared, &req),
        Prefix::Blob => blob::handle(&shared, &req),
        Prefix::LogAnalytics => monitor::query::handle(&shared, &req),
        Prefix::Unknown => Handled::reply(
            None,
            None,
            wire::json(
                404,
                &json!({"error": {"code": "NotFound", "message": format!("keyflip-twin serves nothing at '{}'. Services live under /{{tenant}}/, /msi/, /subscriptions/, /providers/, /metadata/, /keyvault/{{vault}}/, /databricks/{{workspace}}/, /v1/ (Log Analytics), /{{storage-account}}/ and /_admin/.", req.path)}}),
            ),
        ),
    };
    let service = match (handled.op, prefix) {
        (Some(op), _) => op.service(),
        (None, Prefix::Msi) => Service::Msi,
        (None, Prefix::Entra) => Service::Entra,
        (None, Prefix::KeyVault) => Service::KeyVault,
        (None, Prefix::Databricks) => Service::Databricks,
        (None, Prefix::Blob) => Service::Blob,
        (None, Prefix::LogAnalytics) => Service::LogAnalytics,
        (None, _) => Service::Arm,
    };
    let Handled {
        op,
        principal,
        next,
    } = handled;
    let outcome = match next {
        Next::Reply(r) => {
            // A Key Vault challenge answers the operation the request named, so a
            // latency rule on it costs this round trip too (issue 9).
            if let (Some(o), Service::KeyVault, 401) = (op, service, r.status().as_u16())
                && let Some(ms) = shared.faults.take_latency(o, &req.path, None)
            {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            Some(r)
        }
        Next::Run(run) => {
            let fault = op.and_then(|o| shared.faults.take(o, &req.path, principal.as_deref()));
            match fault {
                None => Some(run(&shared, &Flags::default())),
                Some(FaultAction::Latency { ms }) => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Some(run(&shared, &Flags::default()))
                }
                Some(FaultAction::Status {
                    status,
                    code,
                    retry_after,
                }) => Some(service_error(
                    &shared,
                    service,
                    status,
                    code.as_deref(),
                    retry_after,
                )),
                Some(FaultAction::After {
                    status,
                    code,
                    retry_after,
                }) => {
                    let _ = run(&shared, &Flags::default());
                    Some(service_error(
                        &shared,
                        service,
                        status,
                        code.as_deref(),
                        retry_after,
                    ))
                }
                Some(FaultAction::LroFail { code, status }) => {
                    let flags = Flags {
                        lro_fail: Some((
                            code.unwrap_or_else(|| "InternalServerError".into()),
                            status.unwrap_or(500),
                        )),
                    };
                    Some(run(&shared, &flags))
                }
                Some(FaultAction::Malformed) => Some(malformed(run(&shared, &Flags::default()))),
                Some(FaultAction::Relink {
                    to,
                    async_operation,
                }) => {
                    let resp = run(&shared, &Flags::default());
                    Some(relink(resp, &req, &to, async_operation).await)
                }
                Some(FaultAction::Reset) => None,
                Some(FaultAction::Hang) => {
                    log(&shared, &req, op, principal, None);
                    let mut stop = shared.shutdown.clone();
                    let _ = stop.wait_for(|s| *s).await;
                    return Err(Dropped);
                }
            }
        }
    };
    match outcome {
        Some(mut resp) => {
            decorate(&shared, service, &req, &mut resp);
            log(&shared, &req, op, principal, Some(resp.status().as_u16()));
            Ok(resp)
        }
        None => {
            log(&shared, &req, op, principal, None);
            Err(Dropped)
        }
    }
}

fn log(shared: &Shared, req: &Req, op: Option<Op>, principal: Option<String>, status: Option<u16>) {
    shared.log.push(Entry {
        seq: 0,
        operation: op.map(Op::as_str),
        method: req.method.to_string(),
        path: req.path.clone(),
        principal,
        status,
        at: shared
            .clock
            .now()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
}

/// The error a fault answers with, shaped like the service's own errors.
fn service_error(
    shared: &Shared,
    service: Service,
    status: u16,
    code: Option<&str>,
    retry_after: Option<u64>,
) -> Resp {
    let message = format!("Injected fault: the service answered {status}.");
    let mut r = match service {
        Service::Arm => arm::error(status, code.unwrap_or(default_code(status)), &message),
        Service::KeyVault => {
            keyvault::error(status, code.unwrap_or(default_code(status)), &message)
        }
        Service::Entra | Service::Msi => {
            let code = code.unwrap_or(if status >= 500 {
                "temporarily_unavailable"
            } else {
                "invalid_request"
            });
            entra::oauth_error(status, code, 0, &message)
        }
        Service::Blob => blob::error(
            status,
            code.unwrap_or(default_code(status)),
            &message,
            None,
            shared.clock.now(),
        ),
        Service::Databricks => {
            let fallback = match status {
                429 => "REQUEST_LIMIT_EXCEEDED",
                500..=599 => "TEMPORARILY_UNAVAILABLE",
                _ => "BAD_REQUEST",
            };
            databricks::error(status, code.unwrap_or(fallback), &message)
        }
        Service::LogAnalytics => {
            monitor::query::error(status, code.unwrap_or(default_code(status)), &message, None)
        }
    };
    if let Some(secs) = retry_after {
        set_header(&mut r, "retry-after", &secs.to_string());
    }
    r
}

/// Keeps the status line and content type but replaces the body with text that no
/// JSON or XML parser accepts.
fn malformed(resp: Resp) -> Resp {
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json; charset=utf-8")
        .to_string();
    let body = if ct.contains("xml") {
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><EnumerationResults><Containers><Container"
    } else {
        "{\"keyflip-twin\": \"malformed response\", \"value\": [{\"id\": "
    };
    wire::body(200, &ct, body)
}

/// The `relink` fault: every URL the answer hands back now points at origin `to`.
async fn relink(resp: Resp, req: &Req, to: &str, async_operation: bool) -> Resp {
    let moved = |link: &str| match url::Url::parse(link) {
        Ok(u) => format!(
            "{}{}{}",
            to.trim_end_matches('/'),
            u.path(),
            u.query().map(|q| format!("?{q}")).unwrap_or_default()
        ),
        // A relative link: keep it relative to the new origin.
        Err(_) => format!(
            "{}/{}",
            to.trim_end_matches('/'),
            link.trim_start_matches('/')
        ),
    };
    let (mut parts, body) = resp.into_parts();
    for name in ["location", "azure-asyncoperation"] {
        let link = parts.headers.get(name).and_then(|v| v.to_str().ok());
        if let Some(Ok(v)) = link.map(|l| axum::http::HeaderValue::from_str(&moved(l))) {
            parts.headers.insert(name, v);
        }
    }
    if async_operation
        && parts.status.as_u16() == 202
        && let Some(v) = parts.headers.get("location").cloned()
    {
        parts.headers.insert("azure-asyncoperation", v);
    }
    let bytes = axum::body::to_bytes(body, BODY_LIMIT)
        .await
        .unwrap_or_default();
    let mut value = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        _ => return axum::http::Response::from_parts(parts, Body::from(bytes)),
    };
    match value.get("nextLink") {
        Some(serde_json::Value::String(link)) => value["nextLink"] = json!(moved(link)),
        Some(serde_json::Value::Null) => {
            let again = if req.query_raw.is_empty() {
                req.path.clone()
            } else {
                format!("{}?{}", req.path, req.query_raw)
            };
            value["nextLink"] = json!(moved(&again));
        }
        _ => {}
    }
    if let Some(endpoints) = value
        .pointer_mut("/properties/primaryEndpoints")
        .and_then(serde_json::Value::as_object_mut)
    {
        for link in endpoints.values_mut() {
            if let Some(s) = link.as_str() {
                *link = json!(moved(s));
            }
        }
    }
    parts.headers.remove("content-length");
    axum::http::Response::from_parts(parts, Body::from(value.to_string()))
}

/// Headers each service puts on every response.
fn decorate(shared: &Shared, service: Service, req: &Req, r: &mut Resp) {
    // The twin clock's date, like every time the twin shows (hyper would add the
    // system clock's, which disagrees once a test has moved the twin clock).
    let date = httpdate::fmt_http_date(std::time::SystemTime::from(shared.clock.now()));
    set_header(r, "date", &date);
    let request_id = uuid::Uuid::new_v4().to_string();
    if !r.headers().contains_key("x-ms-request-id") {
        set_header(r, "x-ms-request-id", &request_id);
    }
    match service {
        Service::Arm => {
            let correlation = req
                .header("x-ms-correlation-request-id")
                .map(str::to_string)
                .unwrap_or_else(|| request_id.clone());
            set_header(r, "x-ms-correlation-request-id", &correlation);
            let now = shared.clock.now();
            set_header(
                r,
                "x-ms-routing-request-id",
                &format!("WESTEUROPE:{}:{request_id}", now.format("%Y%m%dT%H%M%SZ")),
            );
            set_header(r, "cache-control", "no-cache");
            set_header(r, "pragma", "no-cache");
            set_header(r, "expires", "-1");
            let read =
                req.method == axum::http::Method::GET || req.method == axum::http::Method::HEAD;
            let (header, budget) = if read {
                (
                    "x-ms-ratelimit-remaining-subscription-reads",
                    Budget::ArmRead,
                )
            } else {
                (
                    "x-ms-ratelimit-remaining-subscription-writes",
                    Budget::ArmWrite,
                )
            };
            if !r.headers().contains_key(header) {
                let segs = req.segments();
                let sub = match (segs.first(), segs.get(1)) {
                    (Some(s), Some(id))
                        if s.eq_ignore_ascii_case("subscriptions")
                            && shared.topology.subscription(id).is_some() =>
                    {
                        Some(*id)
                    }
                    _ => None,
                };
                let mut core = shared.core();
                let settings = core.settings.clone();
                let left = match sub {
                    Some(sub) => core.throttles.remaining(budget, sub, &settings, now),
                    None if read => u64::from(settings.arm_read_burst),
                    None => u64::from(settings.arm_write_burst),
                };
                drop(core);
                set_header(r, header, &left.to_string());
            }
        }
        Service::KeyVault => {
            set_header(r, "x-ms-keyvault-region", "westeurope");
            set_header(r, "x-ms-keyvault-service-version", "1.9.2115.1");
            set_header(
                r,
                "x-ms-keyvault-network-info",
                "conn_type=Ipv4;addr=127.0.0.1;act_addr_fam=InterNetwork;",
            );
        }
        Service::Blob => {
            let version = req
                .header("x-ms-version")
                .unwrap_or("2023-11-03")
                .to_string();
            set_header(r, "x-ms-version", &version);
            set_header(r, "server", "Windows-Azure-Blob/1.0 Microsoft-HTTPAPI/2.0");
            if let Some(id) = req.header("x-ms-client-request-id").map(str::to_string) {
                set_header(r, "x-ms-client-request-id", &id);
            }
        }
        Service::Entra | Service::Msi => {
            if let Some(id) = req.header("client-request-id").map(str::to_string) {
                set_header(r, "client-request-id", &id);
            }
        }
        Service::Databricks | Service::LogAnalytics => {}
    }
}
