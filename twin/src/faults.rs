//! Fault injection: rules that replace or disturb the answer to matching requests.
//!
//! A rule selects an operation, optionally a substring of the request path and a
//! principal, and fires `count` times (0 = until cleared). Rules are tried in the
//! order they were added; the first match fires. Faults apply to requests that reached
//! an operation: after authentication and routing, before authorization, throttling
//! and the operation itself (so `after` runs all of those, then lies about it).

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

use crate::ops::Op;

/// What a fault does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum FaultAction {
    /// Answer with this status and an Azure-shaped error body; nothing happens.
    Status {
        status: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after: Option<u64>,
    },
    /// Wait, then serve normally.
    Latency { ms: u64 },
    /// Drop the connection without an answer.
    Reset,
    /// Never answer (until the twin shuts down).
    Hang,
    /// Perform the operation, then answer with this error.
    After {
        status: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after: Option<u64>,
    },
    /// The long-running operation started by this request ends Failed.
    LroFail {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
    },
    /// 200 with a body that is not valid JSON or XML.
    Malformed,
    /// Perform the operation, then point every URL its answer hands back at the
    /// origin `to` (path and query kept): a JSON body's `nextLink` (one is added to a
    /// list whose `nextLink` is null, repeating the request) and
    /// `properties.primaryEndpoints`, and the `Location` and `Azure-AsyncOperation`
    /// headers. With `async_operation`, a 202 also gets its relinked `Location` as
    /// `Azure-AsyncOperation`. Clients must refuse to follow: this is an answer that
    /// tries to send their token or signature elsewhere.
    Relink {
        to: String,
        #[serde(default)]
        async_operation: bool,
    },
}

/// `POST /_admin/faults` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FaultRequest {
    pub operation: String,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub principal: Option<String>,
    #[serde(default = "one")]
    pub count: u32,
    pub action: FaultAction,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Fault {
    pub id: String,
    pub operation: &'static str,
    pub target: Option<String>,
    pub principal: Option<String>,
    /// Firings left; 0 means unlimited.
    pub count: u32,
    pub fired: u32,
    pub action: FaultAction,
    #[serde(skip)]
    op: Op,
}

#[derive(Debug, Default)]
pub(crate) struct Faults {
    rules: Mutex<Vec<Fault>>,
    /// Number of rules, read without the lock on every request.
    len: AtomicUsize,
}

/// The default error code for a status, when a rule gives none.
pub(crate) fn default_code(status: u16) -> &'static str {
    match status {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        429 => "TooManyRequests",
        500 => "InternalServerError",
        502 => "BadGateway",
        503 => "ServerBusy",
        504 => "GatewayTimeout",
        _ => "Error",
    }
}

impl Faults {
    /// Adds a rule; returns its id, or says what is wrong with the request.
    pub fn add(&self, req: FaultRequest) -> Result<String, String> {
        let op = Op::parse(&req.operation).ok_or_else(|| {
            let names: Vec<&str> = Op::ALL.iter().map(|o| o.as_str()).collect();
            format!(
                "unknown operation {:?}; expected one of {}",
                req.operation,
                names.join(", ")
            )
        })?;
        match &req.action {
            FaultAction::Status { status, .. } | FaultAction::After { status, .. }
                if !(400..=599).contains(status) =>
            {
                return Err(format!(
                    "status must be an HTTP error status (400-599), found {status}"
                ));
            }
            FaultAction::LroFail {
                status: Some(s), ..
            } if !(400..=599).contains(s) => {
                return Err(format!(
                    "status must be an HTTP error status (400-599), found {s}"
                ));
            }
            FaultAction::Relink { to, .. } => {
                let ok = url::Url::parse(to).is_ok_and(|u| {
                    matches!(u.scheme(), "http" | "https")
                        && u.host().is_some()
                        && u.path() == "/"
                        && u.query().is_none()
                });
                if !ok {
                    return Err(format!(
                        "relink needs an origin such as \"https://localhost:8443\", found {to:?}"
                    ));
                }
            }
            _ => {}
        }
        let id = uuid::Uuid::new_v4().to_string();
        let mut rules = self
            .rules
            .lock()
            .map_err(|_| "fault table poisoned".to_string())?;
        rules.push(Fault {
            id: id.clone(),
            operation: op.as_str(),
            target: req.target,
            principal: req.principal,
            count: req.count,
            fired: 0,
            action: req.action,
            op,
        });
        self.len.store(rules.len(), Ordering::Relaxed);
        Ok(id)
    }

    pub fn clear(&self) {
        if let Ok(mut rules) = self.rules.lock() {
            rules.clear();
            self.len.store(0, Ordering::Relaxed);
        }
    }

    pub fn list(&self) -> Vec<Fault> {
        self.rules.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Fires the first rule that matches this request, if any.
    pub fn take(&self, op: Op, path: &str, principal: Option<&str>) -> Option<FaultAction> {
        self.fire(op, path, principal, |_| true)
    }

    /// Fires the first *latency* rule that matches, for answers given before an
    /// operation runs (a Key Vault challenge): they cost a round trip like any other
    /// answer, but nothing else a rule does applies to them.
    pub fn take_latency(&self, op: Op, path: &str, principal: Option<&str>) -> Option<u64> {
        match self.fire(op, path, principal, |a| {
            matches!(a, FaultAction::Latency { .. })
        })? {
            FaultAction::Latency { ms } => Some(ms),
            _ => None,
        }
    }

    fn fire(
        &self,
        op: Op,
        path: &str,
        principal: Option<&str>,
        kind: impl Fn(&FaultAction) -> bool,
    ) -> Option<FaultAction> {
        if self.len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut rules = self.rules.lock().ok()?;
        let i = rules.iter().position(|f| {
            f.op == op
                && kind(&f.action)
                && f.target.as_deref().is_none_or(|t| path.contains(t))
                && f.principal.as_deref().is_none_or(|p| Some(p) == principal)
        })?;
        let rule = rules.get_mut(i)?;
        rule.fired += 1;
        let action = rule.action.clone();
        if rule.count == 1 {
            rules.remove(i);
        } else if rule.count > 1 {
            rule.count -= 1;
        }
        self.len.store(rules.len(), Ordering::Relaxed);
        Some(action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(f: &Faults, json: &str) -> Result<String, String> {
        f.add(serde_json::from_str(json).map_err(|e| e.to_string())?)
    }

    #[test]
    fn rules_fire_count_times_and_match_target_and_principal() {
        let f = Faults::default();
        add(&f, r#"{"operation":"storage.listKeys","target":"st1","principal":"op","count":2,"action":{"kind":"reset"}}"#)
            .expect("valid");
        assert_eq!(f.take(Op::StorageListKeys, "/x/st2", Some("op")), None);
        assert_eq!(f.take(Op::StorageListKeys, "/x/st1", Some("reader")), None);
        assert_eq!(f.take(Op::StorageGet, "/x/st1", Some("op")), None);
        assert_eq!(
            f.take(Op::StorageListKeys, "/x/st1", Some("op")),
            Some(FaultAction::Reset)
        );
        assert_eq!(
            f.take(Op::StorageListKeys, "/x/st1", Some("op")),
            Some(FaultAction::Reset)
        );
        assert_eq!(f.take(Op::StorageListKeys, "/x/st1", Some("op")), None);
    }

    #[test]
    fn count_zero_fires_until_cleared() {
        let f = Faults::default();
        add(
            &f,
            r#"{"operation":"keyvault.get","count":0,"action":{"kind":"latency","ms":5}}"#,
        )
        .expect("valid");
        for _ in 0..5 {
            assert_eq!(
                f.take(Op::KeyVaultGet, "/", None),
                Some(FaultAction::Latency { ms: 5 })
            );
        }
        f.clear();
        assert_eq!(f.take(Op::KeyVaultGet, "/", None), None);
    }

    #[test]
    fn latency_only_lookups_skip_other_actions_and_count_as_firings() {
        let f = Faults::default();
        add(
            &f,
            r#"{"operation":"keyvault.get","count":1,"action":{"kind":"status","status":503}}"#,
        )
        .expect("valid");
        add(
            &f,
            r#"{"operation":"keyvault.get","count":2,"action":{"kind":"latency","ms":7}}"#,
        )
        .expect("valid");
        assert_eq!(f.take_latency(Op::KeyVaultSet, "/", None), None);
        assert_eq!(f.take_latency(Op::KeyVaultGet, "/", None), Some(7));
        // The status rule is still there for the authenticated request.
        assert_eq!(
            f.take(Op::KeyVaultGet, "/", None),
            Some(FaultAction::Status {
                status: 503,
                code: None,
                retry_after: None
            })
        );
        assert_eq!(f.take_latency(Op::KeyVaultGet, "/", None), Some(7));
        assert_eq!(f.take_latency(Op::KeyVaultGet, "/", None), None);
    }

    #[test]
    fn bad_rules_are_refused_with_a_reason() {
        let f = Faults::default();
        let e = add(
            &f,
            r#"{"operation":"storage.nope","action":{"kind":"reset"}}"#,
        )
        .expect_err("unknown op");
        assert!(e.contains("storage.listKeys"), "{e}");
        let e = add(
            &f,
            r#"{"operation":"storage.get","action":{"kind":"status","status":200}}"#,
        )
        .expect_err("200");
        assert!(e.contains("400-599"), "{e}");
        assert!(
            add(
                &f,
                r#"{"operation":"storage.get","action":{"kind":"explode"}}"#
            )
            .is_err()
        );
        assert!(
            add(
                &f,
                r#"{"operation":"storage.get","action":{"kind":"latency","ms":1,"x":1}}"#
            )
            .is_err()
        );
        let e = add(
            &f,
            r#"{"operation":"storage.get","action":{"kind":"relink","to":"https://x/y"}}"#,
        )
        .expect_err("a path");
        assert!(e.contains("origin"), "{e}");
        add(
            &f,
            r#"{"operation":"storage.get","action":{"kind":"relink","to":"http://localhost:1"}}"#,
        )
        .expect("an origin");
    }
}
