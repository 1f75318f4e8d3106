//! The executor's half of the usage gate: `CheckUsage` asks the plan's Log Analytics
//! workspace who signed with a key, and answers the machine with the callers.
//!
//! The key's value is read (`listKeys`, shared with the steps in flight) and checked
//! against the fingerprint the machine gave, so the logs are only ever asked about the
//! value the machine means; its SHA-256 is made and sent by `crate::azure::monitor`
//! and goes nowhere else. Rows come back per caller address *with its port*
//! (`CallerIpAddress` is `IP:port`): they are merged per IP, user agent, operation and
//! authentication type here, so one client over many connections is one caller.
//! A query that fails, or a plan that no longer has a gate, answers `UsageUnknown`,
//! which the machine never takes for quiet.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::engine::EngineError;
use super::step::{Ctx, Done, azure_failure};
use crate::azure::monitor::{UsageQuery, UsageRow};
use crate::key::KeyName;
use crate::rotation::machine::{Caller, Failure, FailureKind, GatePurpose, StepResult};
use crate::secret::Fingerprint;

/// How long one query may take; a timed-out query is usage unknown.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long an incident's query may take: it asks before the leaked key dies, and the
/// answer (callers to name) never changes what happens next, so a slow workspace
/// delays the regeneration by this much at most, and the report says the callers are
/// unknown.
pub const INCIDENT_QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The IP address of a `CallerIpAddress` value: `10.1.2.3:52314` → `10.1.2.3`,
/// `[2001:db8::1]:443` → `2001:db8::1`; a bare IPv6 address stays as it is.
pub fn without_port(caller: &str) -> &str {
    let caller = caller.trim();
    if let Some(rest) = caller.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match caller.rsplit_once(':') {
        Some((ip, port)) if !ip.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => ip,
        _ => caller,
    }
}

/// The rows merged per IP (port dropped), user agent, operation and authentication
/// type; most recent first.
pub fn callers(rows: &[UsageRow]) -> Vec<Caller> {
    let mut merged: BTreeMap<(String, String, String, String), Caller> = BTreeMap::new();
    for r in rows {
        let ip = without_port(&r.caller).to_owned();
        let key = (
            ip.clone(),
            r.user_agent.clone(),
            r.operation.clone(),
            r.authentication.clone(),
        );
        merged
            .entry(key)
            .and_modify(|c| {
                c.requests += r.requests;
                c.first_seen = c.first_seen.min(r.first_seen);
                c.last_seen = c.last_seen.max(r.last_seen);
            })
            .or_insert_with(|| Caller {
                ip,
                user_agent: r.user_agent.clone(),
                operation: r.operation.clone(),
                authentication: r.authentication.clone(),
                requests: r.requests,
                first_seen: r.first_seen,
                last_seen: r.last_seen,
            });
    }
    let mut out: Vec<Caller> = merged.into_values().collect();
    out.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then(a.ip.cmp(&b.ip)));
    out
}

impl Ctx<'_> {
    /// Who signed with `key` (which must still be `fingerprint`) since `since`.
    pub(crate) async fn check_usage(
        &self,
        key: KeyName,
        fingerprint: Fingerprint,
        since: DateTime<Utc>,
        purpose: GatePurpose,
    ) -> Result<Done, EngineError> {
        let timeout = match purpose {
            GatePurpose::Incident => INCIDENT_QUERY_TIMEOUT,
            GatePurpose::Stage | GatePurpose::Retire => QUERY_TIMEOUT,
        };
        let unknown = |kind: FailureKind, message: String| {
            Ok(Done::ok(StepResult::UsageUnknown {
                reason: Failure::new(kind, message),
            }))
        };
        let Some(gate) = &self.plan.usage_gate else {
            return unknown(
                FailureKind::Config,
                "the plan no longer has a [usage_gate]; put it back until this rotation has finished, or `keyflip rotate resume PLAN --force-retire`".into(),
            );
        };
        let keys = match self.keys().await {
            Ok(keys) => keys,
            Err(e) => {
                return Ok(Done::failed(
                    StepResult::UsageUnknown {
                        reason: azure_failure("cannot read the key to ask about: ", &e),
                    },
                    &e,
                ));
            }
        };
        // After a revoke first the leaked value is gone from Azure: asked about from
        // the copy this run kept of it.
        let keys = if self.fingerprint_of(&keys, key) == fingerprint {
            keys
        } else if let Some(kept) = self.take_revoked(key, fingerprint) {
            kept
        } else {
            return unknown(
                FailureKind::KeyChanged,
                format!(
                    "{key} no longer has fingerprint {fingerprint} (it was regenerated, by this rotation's revoke before a restart or outside it), so the logs cannot be asked about that value"
                ),
            );
        };
        let until = self.now();
        let query = UsageQuery {
            workspace_id: &gate.workspace_id,
            services: &gate.services,
            account: self.plan.storage_account.name(),
            since,
            until,
        };
        let asked =
            tokio::time::timeout(timeout, self.azure().key_usage(&query, keys.value(key))).await;
        drop(keys);
        match asked {
            Ok(Ok(rows)) => {
                let callers = callers(&rows);
                tracing::info!(
                    plan = %self.plan.name,
                    key = %key,
                    callers = callers.len(),
                    since = %since,
                    "resource logs asked who signs with the key"
                );
                Ok(Done::ok(StepResult::UsageChecked { until, callers }))
            }
            Ok(Err(e)) => Ok(Done::failed(
                StepResult::UsageUnknown {
                    reason: azure_failure("the resource logs could not be asked: ", &e),
                },
                &e,
            )),
            Err(_) => unknown(
                FailureKind::Transient,
                format!(
                    "the Log Analytics query did not answer within {}s",
                    timeout.as_secs()
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(caller: &str, requests: u64, last: i64) -> UsageRow {
        UsageRow {
            caller: caller.into(),
            user_agent: "ua".into(),
            operation: "ListContainers".into(),
            authentication: "AccountKey".into(),
            requests,
            first_seen: DateTime::from_timestamp(last - 60, 0).unwrap(),
            last_seen: DateTime::from_timestamp(last, 0).unwrap(),
        }
    }

    #[test]
    fn ports_are_dropped_and_connections_of_one_client_merge() {
        assert_eq!(without_port("10.42.7.19:52314"), "10.42.7.19");
        assert_eq!(without_port("[2001:db8::1]:443"), "2001:db8::1");
        assert_eq!(without_port("2001:db8::1"), "2001:db8::1");
        assert_eq!(without_port("10.0.0.1"), "10.0.0.1");
        let merged = callers(&[
            row("10.42.7.19:52314", 3, 1_000),
            row("10.42.7.19:52999", 2, 2_000),
            row("10.9.9.9:1", 1, 1_500),
        ]);
        assert_eq!(merged.len(), 2, "{merged:?}");
        assert_eq!(merged[0].ip, "10.42.7.19");
        assert_eq!(merged[0].requests, 5);
        assert_eq!(merged[0].first_seen.timestamp(), 940);
        assert_eq!(merged[0].last_seen.timestamp(), 2_000);
        assert_eq!(merged[1].ip, "10.9.9.9");
    }
}
