//! The Log Analytics query API, `POST /v1/workspaces/{workspaceId}/query` (and the
//! spec's `GET` form with `?query=`), on the twin's one port: the first path segment
//! `v1` routes here, so a client's endpoint is the twin's `base_url`
//! (specification/operationalinsights/data-plane/Microsoft.OperationalInsights/
//! stable/v1/OperationalInsights.json).
//!
//! Tokens must be for `https://api.loganalytics.io`. Reading a table needs
//! `Microsoft.OperationalInsights/workspaces/query/{table}/read` on the workspace
//! ("Manage access to Log Analytics workspaces"; `*/read`, as in Reader, grants
//! it). Errors have the service's shape, `{"error": {"message", "code",
//! "correlationId", "innererror"?}}`, with the codes recorded from it:
//! `AuthorizationRequiredError` (401, no token), `InvalidTokenError` (403, a token
//! for another resource, expired or forged), `InsufficientAccessError` (403),
//! `PathNotFoundError` (404, an unknown path or workspace), `BadArgumentError` (400,
//! the query: `SyntaxError`/`SemanticError` inside).

use std::sync::Arc;

use axum::http::Method;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};

use super::kql::{self, QueryError, Source};
use super::logs;
use crate::auth::{self, AuthFailure, Caller};
use crate::ops::Op;
use crate::server::Shared;
use crate::server::dispatch::Handled;
use crate::token::{Audience, LOG_ANALYTICS_AUDIENCE, TokenProblem};
use crate::wire::{self, Req, Resp};

/// An error in the query API's shape.
pub(crate) fn error(status: u16, code: &str, message: &str, inner: Option<Value>) -> Resp {
    let mut e = json!({
        "message": message,
        "code": code,
        "correlationId": uuid::Uuid::new_v4().to_string(),
    });
    if let (Some(i), Some(obj)) = (inner, e.as_object_mut()) {
        obj.insert("innererror".into(), i);
    }
    wire::json(status, &json!({"error": e}))
}

fn bad_argument(inner: Value) -> Resp {
    error(
        400,
        "BadArgumentError",
        "The request had some invalid properties",
        Some(inner),
    )
}

fn path_not_found() -> Resp {
    error(
        404,
        "PathNotFoundError",
        "The requested path does not exist",
        None,
    )
}

pub(crate) fn handle(shared: &Arc<Shared>, req: &Arc<Req>) -> Handled {
    let segs = req.segments();
    let workspace = match segs.as_slice() {
        ["v1", w, id, q]
            if w.eq_ignore_ascii_case("workspaces") && q.eq_ignore_ascii_case("query") =>
        {
            id.to_string()
        }
        _ => return Handled::reply(None, None, path_not_found()),
    };
    if req.method != Method::POST && req.method != Method::GET {
        return Handled::reply(
            Some(Op::LogAnalyticsQuery),
            None,
            error(
                405,
                "MethodNotAllowed",
                &format!("The HTTP method '{}' is not supported here.", req.method),
                None,
            ),
        );
    }
    let caller = match auth::authenticate(shared, req, Audience::LogAnalytics) {
        Ok(c) => c,
        Err(AuthFailure::Missing) => {
            return Handled::reply(
                Some(Op::LogAnalyticsQuery),
                None,
                error(
                    401,
                    "AuthorizationRequiredError",
                    "Valid authentication was not provided",
                    None,
                ),
            );
        }
        Err(AuthFailure::Problem(p)) => {
            let why = match p {
                TokenProblem::Expired { .. } => "The token has expired.".to_string(),
                TokenProblem::NotYetValid => "The token is not valid yet.".to_string(),
                TokenProblem::WrongAudience { found } => format!(
                    "The token is for '{found}'; the query API takes tokens for '{LOG_ANALYTICS_AUDIENCE}'."
                ),
                TokenProblem::WrongIssuer { found } => {
                    format!("The token's issuer '{found}' is not this tenant.")
                }
                _ => "The token was not issued by this tenant's authority.".to_string(),
            };
            return Handled::reply(
                Some(Op::LogAnalyticsQuery),
                None,
                error(
                    403,
                    "InvalidTokenError",
                    "The provided authentication is not valid for this resource",
                    Some(json!({"code": "InvalidTokenError", "message": why})),
                ),
            );
        }
    };
    let principal = Some(caller.name.clone());
    let req = req.clone();
    Handled::run(Op::LogAnalyticsQuery, principal, move |sh, _| {
        run(sh, &req, &caller, &workspace)
    })
}

/// The query, its `timespan` and `workspaces` from a POST body or GET parameters.
struct Ask {
    query: String,
    timespan: Option<String>,
    workspaces: Vec<String>,
}

fn ask(req: &Req) -> Result<Ask, Resp> {
    let invalid =
        |message: String| bad_argument(json!({"code": "InvalidRequestError", "message": message}));
    if req.method == Method::GET {
        let query = req
            .param("query")
            .ok_or_else(|| invalid("The 'query' parameter is required.".into()))?;
        return Ok(Ask {
            query: query.to_string(),
            timespan: req.param("timespan").map(str::to_string),
            workspaces: req
                .param("workspaces")
                .map(|w| w.split(',').map(|s| s.trim().to_string()).collect())
                .unwrap_or_default(),
        });
    }
    let body: Value = serde_json::from_slice(&req.body)
        .map_err(|e| invalid(format!("The request body is not valid JSON: {e}")))?;
    let Value::Object(b) = body else {
        return Err(invalid("The request body must be a JSON object.".into()));
    };
    let query = match b.get("query") {
        Some(Value::String(q)) => q.clone(),
        _ => return Err(invalid("The request body needs 'query' (a string).".into())),
    };
    let timespan = match b.get("timespan") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => Some(t.clone()),
        Some(_) => {
            return Err(invalid(
                "'timespan' must be an ISO 8601 interval or duration.".into(),
            ));
        }
    };
    let workspaces = match b.get("workspaces") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid("'workspaces' must be an array of strings.".into()))?,
        Some(_) => return Err(invalid("'workspaces' must be an array of strings.".into())),
    };
    Ok(Ask {
        query,
        timespan,
        workspaces,
    })
}

fn run(sh: &Shared, req: &Req, caller: &Caller, workspace: &str) -> Resp {
    let now = sh.clock.now();
    let ask = match ask(req) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let core = sh.core();
    // Simulated clients are already caught up (every request does that first).
    let Some(ws) = core.monitor.workspace_by_customer_id(workspace) else {
        return path_not_found();
    };
    if ask
        .workspaces
        .iter()
        .any(|w| !w.eq_ignore_ascii_case(&ws.customer_id) && !w.eq_ignore_ascii_case(&ws.name))
    {
        return bad_argument(
            QueryError::unsupported("cross-workspace queries ('workspaces')").inner_json(),
        );
    }
    let window = match ask.timespan.as_deref().map(|t| timespan(t, now)) {
        None => None,
        Some(Ok(w)) => Some(w),
        Some(Err(m)) => {
            return bad_argument(json!({"code": "InvalidTimespanError", "message": m}));
        }
    };
    let query = match kql::parse(&ask.query) {
        Ok(q) => q,
        Err(e) => return bad_argument(e.inner_json()),
    };
    let tables = match kql::tables(&query) {
        Ok(t) => t,
        Err(e) => return bad_argument(e.inner_json()),
    };
    for t in &tables {
        let action = format!(
            "Microsoft.OperationalInsights/workspaces/query/{}/read",
            t.name()
        );
        if !sh.rbac.allowed(
            &caller.object_id,
            &action,
            &crate::rbac::scope_key(&ws.id),
            false,
        ) {
            return error(
                403,
                "InsufficientAccessError",
                "The provided credentials have insufficient access to perform the requested operation",
                None,
            );
        }
    }
    let sources = tables
        .iter()
        .map(|&table| Source {
            table,
            rows: logs::visible(ws, table, now, window),
        })
        .collect();
    let out = match kql::run(&query, sources, now) {
        Ok(o) => o,
        Err(e) => return bad_argument(e.inner_json()),
    };
    let columns: Vec<Value> = out
        .columns
        .iter()
        .map(|(n, t)| json!({"name": n, "type": t.name()}))
        .collect();
    let rows: Vec<Value> = out
        .rows
        .iter()
        .map(|r| Value::Array(r.iter().map(kql::Value::to_json).collect()))
        .collect();
    wire::json(
        200,
        &json!({"tables": [{"name": "PrimaryResult", "columns": columns, "rows": rows}]}),
    )
}

/// The request's `timespan`: an ISO 8601 duration ending now (`PT1H`, `P1D`,
/// `PT3600.0S`), or an interval `start/end`, `start/duration` or `duration/end`.
fn timespan(t: &str, now: DateTime<Utc>) -> Result<(DateTime<Utc>, DateTime<Utc>), String> {
    let bad = || {
        format!(
            "The timespan '{t}' is not an ISO 8601 duration or interval (for example PT1H, or 2026-05-01T00:00:00Z/2026-05-01T01:00:00Z)."
        )
    };
    let instant = |s: &str| {
        DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&Utc))
            .ok()
    };
    match t.split_once('/') {
        None => {
            let d = duration(t).ok_or_else(bad)?;
            Ok((now - d, now))
        }
        Some((a, b)) => match (instant(a), instant(b), duration(a), duration(b)) {
            (Some(s), Some(e), _, _) => Ok((s, e)),
            (Some(s), None, _, Some(d)) => Ok((s, s + d)),
            (None, Some(e), Some(d), _) => Ok((e - d, e)),
            _ => Err(bad()),
        },
    }
}

/// An ISO 8601 duration with days, weeks, hours, minutes and (fractional) seconds.
fn duration(s: &str) -> Option<TimeDelta> {
    let rest = s.strip_prefix('P')?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (rest, None),
    };
    let mut total = 0f64;
    let mut parse = |part: &str, units: &[(char, f64)]| -> Option<()> {
        let mut num = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' {
                num.push(c);
            } else {
                let (_, secs) = units.iter().find(|(u, _)| *u == c)?;
                total += num.parse::<f64>().ok()? * secs;
                num.clear();
            }
        }
        num.is_empty().then_some(())
    };
    parse(date, &[('D', 86_400.0), ('W', 604_800.0)])?;
    if let Some(t) = time {
        if t.is_empty() {
            return None;
        }
        parse(t, &[('H', 3600.0), ('M', 60.0), ('S', 1.0)])?;
    }
    if !total.is_finite() || total > 1.0e10 || (date.is_empty() && time.is_none()) {
        return None;
    }
    Some(TimeDelta::milliseconds((total * 1000.0).round() as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timespans_are_iso_8601_durations_or_intervals() {
        let now = DateTime::parse_from_rfc3339("2026-05-01T12:00:00Z")
            .expect("t")
            .with_timezone(&Utc);
        let h = TimeDelta::hours(1);
        assert_eq!(timespan("PT1H", now), Ok((now - h, now)));
        assert_eq!(timespan("PT3600.0S", now), Ok((now - h, now)));
        assert_eq!(timespan("P1D", now), Ok((now - TimeDelta::days(1), now)));
        assert_eq!(
            timespan("P1DT1H30M", now),
            Ok((now - TimeDelta::minutes(1530), now))
        );
        assert_eq!(
            timespan("2026-05-01T10:00:00Z/2026-05-01T11:00:00Z", now),
            Ok((now - h * 2, now - h))
        );
        assert_eq!(
            timespan("2026-05-01T10:00:00Z/PT30M", now),
            Ok((now - h * 2, now - h * 2 + TimeDelta::minutes(30)))
        );
        for bad in [
            "",
            "P",
            "PT",
            "1H",
            "PT1X",
            "P1Y",
            "yesterday/today",
            "PT1e400S",
        ] {
            assert!(timespan(bad, now).is_err(), "{bad}");
        }
    }
}
