//! Azure Monitor, for the usage gate: the diagnostic settings of a storage account's
//! services (ARM `Microsoft.Insights/diagnosticSettings`, api-version
//! 2021-05-01-preview) and the Log Analytics query API (`POST
//! {log_analytics}/v1/workspaces/{workspace_id}/query`, token audience
//! `https://api.loganalytics.io`), asked who still signs requests with a key.
//!
//! Storage resource logs record, for every request authorized with an account key,
//! `AuthenticationHash` = `key1(<SHA-256 of the key>)` (for a SAS, the signing key's
//! hash followed by `,SasSignature(<hash>)`): Microsoft Learn, "Azure Blob Storage
//! monitoring data reference", resource log properties ("When the authentication type
//! is Account Key, the format is key1 | key2 (SHA256 hash of the key)"); the hash is
//! over the key's base64-decoded bytes, in hex.
//!
//! Promises: the SHA-256 of a key is key-derived material. It is computed here, from
//! the [`StorageKey`] the caller holds, at query time; it lives only in the query text
//! (a zeroized buffer) and leaves keyflip only in the body of the POST to the
//! configured Log Analytics origin. It is never logged (the query is never logged,
//! only its account, tables and window), never returned, and scrubbed from any error
//! text the service sends back (a syntax error may quote the query). Callers come back
//! as [`UsageRow`]s: who, from where, how often; no hash.

use std::fmt::Write as _;

use azure_core::http::{Method, Request};
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::Value;
use url::Url;
use zeroize::Zeroizing;

use super::error::Call;
use super::http::{Answer, Operation, json};
use super::roles::{Action, actions};
use super::{Azure, Error};
use crate::resource_id::ResourceId;
use crate::secret::StorageKey;

const DIAGNOSTICS_API: &str = "2021-05-01-preview";

const LIST_DIAGNOSTICS: Operation = Operation::read(
    "monitor.diagnosticSettings.list",
    actions::DIAGNOSTIC_SETTINGS_READ,
);

/// A storage service whose requests a resource-log table records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StorageService {
    Blob,
    File,
    Queue,
    Table,
}

impl StorageService {
    pub const ALL: [StorageService; 4] = [
        StorageService::Blob,
        StorageService::File,
        StorageService::Queue,
        StorageService::Table,
    ];

    /// `blob`, as plans spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            StorageService::Blob => "blob",
            StorageService::File => "file",
            StorageService::Queue => "queue",
            StorageService::Table => "table",
        }
    }

    /// The Log Analytics table of its resource logs.
    pub fn table(self) -> &'static str {
        match self {
            StorageService::Blob => "StorageBlobLogs",
            StorageService::File => "StorageFileLogs",
            StorageService::Queue => "StorageQueueLogs",
            StorageService::Table => "StorageTableLogs",
        }
    }

    /// The action that lets a principal query that table.
    pub fn query_action(self) -> Action {
        match self {
            StorageService::Blob => actions::LOG_QUERY_BLOB,
            StorageService::File => actions::LOG_QUERY_FILE,
            StorageService::Queue => actions::LOG_QUERY_QUEUE,
            StorageService::Table => actions::LOG_QUERY_TABLE,
        }
    }

    /// The service's ARM child of the account: `blobServices/default`.
    fn arm_child(self) -> &'static str {
        match self {
            StorageService::Blob => "blobServices/default",
            StorageService::File => "fileServices/default",
            StorageService::Queue => "queueServices/default",
            StorageService::Table => "tableServices/default",
        }
    }
}

/// The categories of storage resource logs that record requests.
pub const REQUEST_CATEGORIES: [&str; 3] = ["StorageRead", "StorageWrite", "StorageDelete"];

/// One diagnostic setting of a storage service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiagnosticSetting {
    pub name: String,
    /// The Log Analytics workspace it sends to (ARM id), if any.
    pub workspace: Option<String>,
    /// Enabled log categories (category groups expanded: `allLogs` is every request
    /// category, `audit` Write and Delete).
    pub categories: Vec<String>,
}

/// One caller that signed requests with the key in the window, as Log Analytics
/// groups them (one row per caller address with its port, user agent, operation and
/// authentication type).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageRow {
    /// `IP:port` as the log records it.
    pub caller: String,
    pub user_agent: String,
    pub operation: String,
    /// `AccountKey` or `SAS` (a SAS signed with the key).
    pub authentication: String,
    pub requests: u64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

/// What to ask the query API.
#[derive(Debug)]
pub struct UsageQuery<'a> {
    /// The workspace's id (GUID, Azure's `customerId`).
    pub workspace_id: &'a str,
    pub services: &'a [StorageService],
    /// The storage account's name.
    pub account: &'a str,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

/// The query keyflip sends (documented in `twin/README.md`, "The usage-gate query"):
/// requests in the window, to the account, authorized with the key or a SAS it
/// signed, grouped by caller, user agent, operation and authentication type.
const USAGE_QUERY: &str = "{source}
| where TimeGenerated between (datetime({since}) .. datetime({until}))
| where AccountName == \"{account}\"
| where AuthenticationType in (\"AccountKey\", \"SAS\")
| where AuthenticationHash has \"{key_sha256}\"
| summarize Requests = count(), FirstSeen = min(TimeGenerated), LastSeen = max(TimeGenerated)
    by CallerIpAddress, UserAgentHeader, OperationName, AuthenticationType
| top 50 by LastSeen desc";

/// The query's first line: one table, or a union of several.
fn source(services: &[StorageService]) -> String {
    let tables: Vec<&str> = services.iter().map(|s| s.table()).collect();
    match tables.as_slice() {
        [one] => (*one).to_owned(),
        many => format!("union {}", many.join(", ")),
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The SHA-256 of the key's base64-decoded bytes, as 64 upper-case hex digits (as
/// Azure writes it; `has` ignores case).
fn key_sha256(key: &StorageKey) -> Result<Zeroizing<String>, Error> {
    let bytes = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(key.expose().trim())
            .map_err(|_| {
                Error::Invalid(
                    "the storage key is not base64, so its SHA-256 cannot be matched against the resource logs"
                        .into(),
                )
            })?,
    );
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
    let mut hex = Zeroizing::new(String::with_capacity(64));
    for b in digest.as_ref() {
        let _ = write!(hex, "{b:02X}");
    }
    Ok(hex)
}

/// The query text for `key`: holds the key's hash, so it is zeroized when dropped.
fn usage_query(q: &UsageQuery<'_>, hash: &str) -> Zeroizing<String> {
    Zeroizing::new(
        USAGE_QUERY
            .replace("{source}", &source(q.services))
            .replace("{since}", &rfc3339(q.since))
            .replace("{until}", &rfc3339(q.until))
            .replace("{account}", q.account)
            .replace("{key_sha256}", hash),
    )
}

/// `text` with every occurrence of `hash` (any case) replaced.
fn scrub_text(text: &str, hash: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let needle = hash.to_ascii_lowercase();
    if needle.is_empty() || !lower.contains(&needle) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = 0;
    while let Some(at) = lower[rest..].find(&needle) {
        out.push_str(&text[rest..rest + at]);
        out.push_str("<sha256 of the key>");
        rest += at + needle.len();
    }
    out.push_str(&text[rest..]);
    out
}

/// The error with the hash taken out of every text the service supplied.
fn scrub(error: Error, hash: &str) -> Error {
    let s = |m: Option<String>| m.map(|m| scrub_text(&m, hash));
    match error {
        Error::Unauthorized {
            call,
            audience,
            code,
            message,
        } => Error::Unauthorized {
            call,
            audience,
            code,
            message: s(message),
        },
        Error::Forbidden { call, mut denial } => {
            denial.message = s(denial.message.take());
            Error::Forbidden { call, denial }
        }
        Error::NotFound {
            call,
            code,
            message,
        } => Error::NotFound {
            call,
            code,
            message: s(message),
        },
        Error::Server {
            call,
            status,
            code,
            message,
            attempts,
        } => Error::Server {
            call,
            status,
            code,
            message: s(message),
            attempts,
        },
        Error::Rejected {
            call,
            status,
            code,
            message,
        } => Error::Rejected {
            call,
            status,
            code,
            message: s(message),
        },
        Error::BadResponse {
            call,
            status,
            detail,
        } => Error::BadResponse {
            call,
            status,
            detail: scrub_text(&detail, hash),
        },
        Error::Network { call, sent, detail } => Error::Network {
            call,
            sent,
            detail: scrub_text(&detail, hash),
        },
        Error::Invalid(text) => Error::Invalid(scrub_text(&text, hash)),
        other => other,
    }
}

const QUERY: Operation = Operation::read("loganalytics.query", actions::LOG_QUERY_BLOB);
const WORKSPACE_GET: Operation = Operation::read(
    "loganalytics.workspace.get",
    Action::control("Microsoft.OperationalInsights/workspaces/read"),
);
const WORKSPACE_API: &str = "2022-10-01";

impl Azure {
    /// The diagnostic settings of one service of the account.
    pub async fn diagnostic_settings(
        &self,
        account: &ResourceId,
        service: StorageService,
    ) -> Result<Vec<DiagnosticSetting>, Error> {
        #[derive(Deserialize)]
        struct Wire {
            name: String,
            #[serde(default)]
            properties: Props,
        }
        #[derive(Deserialize, Default)]
        #[serde(rename_all = "camelCase")]
        struct Props {
            workspace_id: Option<String>,
            #[serde(default)]
            logs: Vec<Log>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Log {
            category: Option<String>,
            category_group: Option<String>,
            #[serde(default)]
            enabled: bool,
        }
        let target = format!(
            "{account}/{}/providers/Microsoft.Insights/diagnosticSettings",
            service.arm_child()
        );
        let url = self.arm.url(&target, "", DIAGNOSTICS_API)?;
        let items: Vec<Wire> = self
            .arm
            .list(&LIST_DIAGNOSTICS, &target, url, "diagnostic settings")
            .await?;
        Ok(items
            .into_iter()
            .map(|w| {
                let mut categories: Vec<String> = Vec::new();
                for log in w.properties.logs.iter().filter(|l| l.enabled) {
                    let expanded: Vec<&str> = match (&log.category, &log.category_group) {
                        (Some(c), _) => vec![c.as_str()],
                        (None, Some(g)) if g.eq_ignore_ascii_case("allLogs") => {
                            REQUEST_CATEGORIES.to_vec()
                        }
                        (None, Some(g)) if g.eq_ignore_ascii_case("audit") => {
                            vec!["StorageWrite", "StorageDelete"]
                        }
                        _ => Vec::new(),
                    };
                    for c in expanded {
                        if !categories.iter().any(|k| k.eq_ignore_ascii_case(c)) {
                            categories.push(c.to_owned());
                        }
                    }
                }
                DiagnosticSetting {
                    name: w.name,
                    workspace: w.properties.workspace_id.filter(|w| !w.is_empty()),
                    categories,
                }
            })
            .collect())
    }

    /// A Log Analytics workspace's id (GUID, `properties.customerId`): what the query
    /// API takes, where diagnostic settings name the workspace's ARM id.
    pub async fn log_analytics_workspace_id(&self, workspace: &str) -> Result<String, Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire {
            #[serde(default)]
            properties: Props,
        }
        #[derive(Deserialize, Default)]
        #[serde(rename_all = "camelCase")]
        struct Props {
            customer_id: Option<String>,
        }
        let url = self.arm.url(workspace, "", WORKSPACE_API)?;
        let answer = self
            .arm
            .call(
                &WORKSPACE_GET,
                workspace,
                Method::Get,
                &url,
                super::arm::Body::None,
            )
            .await?;
        let wire: Wire = json(&answer, "a Log Analytics workspace")?;
        wire.properties
            .customer_id
            .ok_or_else(|| Error::BadResponse {
                call: answer.call.clone().into(),
                status: answer.status,
                detail: "the workspace has no properties.customerId".into(),
            })
    }

    /// Who signed requests to `q.account` with `key` (or a SAS it signed) between
    /// `q.since` and `q.until`, per the resource logs in the workspace. The key's hash
    /// is made here and goes nowhere but into the request body.
    pub async fn key_usage(
        &self,
        q: &UsageQuery<'_>,
        key: &StorageKey,
    ) -> Result<Vec<UsageRow>, Error> {
        let base = self.cloud.log_analytics_url.clone().ok_or_else(|| {
            Error::Invalid(
                "the cloud has no Log Analytics query API: set log_analytics_url in [cloud] of keyflip.toml"
                    .into(),
            )
        })?;
        if q.workspace_id.is_empty()
            || !q
                .workspace_id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b'-')
        {
            return Err(Error::Invalid(format!(
                "'{}' is not a Log Analytics workspace id (a GUID)",
                q.workspace_id
            )));
        }
        let url = Url::parse(&format!(
            "{}/v1/workspaces/{}/query",
            base.as_str().trim_end_matches('/'),
            q.workspace_id
        ))
        .map_err(|e| Error::Invalid(format!("cannot build the Log Analytics URL: {e}")))?;
        let hash = key_sha256(key)?;
        let query = usage_query(q, &hash);
        let body = Zeroizing::new(
            serde_json::json!({
                "query": query.as_str(),
                "timespan": format!("{}/{}", rfc3339(q.since), rfc3339(q.until)),
            })
            .to_string(),
        );
        let target = format!("workspace {} account {}", q.workspace_id, q.account);
        tracing::debug!(
            operation = QUERY.name,
            workspace = q.workspace_id,
            account = q.account,
            tables = %source(q.services),
            since = %rfc3339(q.since),
            until = %rfc3339(q.until),
            "asking Log Analytics who still signs with the key"
        );
        let Some(logs) = self.logs.as_ref() else {
            return Err(Error::Invalid(
                "the cloud has no Log Analytics query API: set log_analytics_url in [cloud] of keyflip.toml"
                    .into(),
            ));
        };
        let answer = logs
            .send(&QUERY, &target, || {
                let mut request = Request::new(url.clone(), Method::Post);
                request.insert_header("accept", "application/json");
                request.insert_header("content-type", "application/json");
                request.set_body(body.as_str().to_owned());
                request
            })
            .await
            .map_err(|e| scrub(e, &hash))?;
        drop(body);
        drop(query);
        parse_rows(&answer).map_err(|e| scrub(e, &hash))
    }
}

/// The rows of the `PrimaryResult` table, by column name.
fn parse_rows(answer: &Answer) -> Result<Vec<UsageRow>, Error> {
    #[derive(Deserialize)]
    struct Wire {
        tables: Vec<Table>,
    }
    #[derive(Deserialize)]
    struct Table {
        columns: Vec<Column>,
        rows: Vec<Vec<Value>>,
    }
    #[derive(Deserialize)]
    struct Column {
        name: String,
    }
    let bad = |detail: String| Error::BadResponse {
        call: Box::new(Call {
            operation: QUERY.name,
            target: answer.call.target.clone(),
            request_id: answer.call.request_id.clone(),
        }),
        status: answer.status,
        detail,
    };
    let wire: Wire = json(answer, "a Log Analytics query result")?;
    let Some(table) = wire.tables.into_iter().next() else {
        return Err(bad("the answer has no table".into()));
    };
    let column = |name: &str| {
        table
            .columns
            .iter()
            .position(|c| c.name == name)
            .ok_or_else(|| bad(format!("the result has no column {name}")))
    };
    let (caller, agent, operation, auth, requests, first, last) = (
        column("CallerIpAddress")?,
        column("UserAgentHeader")?,
        column("OperationName")?,
        column("AuthenticationType")?,
        column("Requests")?,
        column("FirstSeen")?,
        column("LastSeen")?,
    );
    let text = |row: &[Value], i: usize| -> String {
        row.get(i)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let time = |row: &[Value], i: usize, name: &str| -> Result<DateTime<Utc>, Error> {
        let raw = row.get(i).and_then(Value::as_str).unwrap_or_default();
        DateTime::parse_from_rfc3339(raw)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| bad(format!("{name} '{raw}' is not a time: {e}")))
    };
    table
        .rows
        .iter()
        .map(|row| {
            let count = row.get(requests).and_then(|v| {
                v.as_u64()
                    .or_else(|| v.as_f64().map(|f| f as u64))
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            });
            Ok(UsageRow {
                caller: text(row, caller),
                user_agent: text(row, agent),
                operation: text(row, operation),
                authentication: text(row, auth),
                requests: count.ok_or_else(|| bad("Requests is not a count".into()))?,
                first_seen: time(row, first, "FirstSeen")?,
                last_seen: time(row, last, "LastSeen")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_the_sha256_of_the_decoded_key_in_upper_case_hex() {
        // SHA-256 of the three bytes "abc" (base64 "YWJj"), FIPS 180-2's example.
        let key = StorageKey::new("YWJj".to_owned());
        assert_eq!(
            key_sha256(&key).unwrap().as_str(),
            "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD"
        );
        assert!(key_sha256(&StorageKey::new("not base64!".to_owned())).is_err());
    }

    #[test]
    fn the_query_is_the_documented_one() {
        // twin/README.md documents the query keyflip sends and the twin evaluates; the
        // single-table form must be exactly that text with its placeholders filled.
        let readme = include_str!("../../twin/README.md");
        let start = readme
            .find("<!-- usage-gate-query -->\n```kusto\n")
            .expect("the README documents the usage-gate query")
            + "<!-- usage-gate-query -->\n```kusto\n".len();
        let end = start + readme[start..].find("\n```").expect("the block ends");
        let documented = &readme[start..end];
        let template = USAGE_QUERY.replace("{source}", "StorageBlobLogs");
        assert_eq!(template, documented);
        let q = UsageQuery {
            workspace_id: "4e1d2c3b-5a6f-4b7c-8d9e-0f1a2b3c4d5e",
            services: &[StorageService::Blob, StorageService::Queue],
            account: "stdatasci001",
            since: DateTime::from_timestamp(1_780_000_000, 0).unwrap(),
            until: DateTime::from_timestamp(1_780_000_600, 0).unwrap(),
        };
        let text = usage_query(&q, "ABC");
        assert!(text.starts_with("union StorageBlobLogs, StorageQueueLogs\n| where"));
        assert!(
            text.contains(
                "between (datetime(2026-05-28T20:26:40Z) .. datetime(2026-05-28T20:36:40Z))"
            ),
            "{}",
            text.as_str()
        );
        assert!(text.contains("AuthenticationHash has \"ABC\""));
    }

    #[test]
    fn errors_lose_the_hash_whatever_its_case() {
        let hash = "ABCDEF0123";
        let e = Error::Rejected {
            call: Box::new(Call {
                operation: "loganalytics.query",
                target: "w".into(),
                request_id: None,
            }),
            status: 400,
            code: Some("BadArgumentError".into()),
            message: Some("Query could not be parsed at 'abcdef0123' and ABCDEF0123".into()),
        };
        let text = scrub(e, hash).to_string();
        assert!(!text.to_ascii_lowercase().contains("abcdef0123"), "{text}");
        assert!(text.contains("<sha256 of the key>"), "{text}");
    }
}
