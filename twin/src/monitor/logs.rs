//! Resource-log rows: what a served Blob request (or a simulated client's) leaves in
//! the workspaces its account's diagnostic settings send `StorageBlobLogs` to.
//!
//! Column values follow Microsoft's storage monitoring reference ("Azure Blob Storage
//! monitoring data reference", the resource-log properties includes in
//! MicrosoftDocs/azure-docs) and recorded rows: `AuthenticationType` is `AccountKey`
//! for SharedKey (`SAS`, `OAuth`, `Anonymous` otherwise); `AuthenticationHash` is
//! `key1(<SHA-256>)` or `key2(<SHA-256>)` ("the format is key1 | key2 (SHA256 hash
//! of the key)"), the hash taken over the key's bytes (its base64 decoded) and written
//! as 64 upper-case hex digits, as recorded rows show; `CallerIpAddress` includes the
//! port; `StatusCode` is a string.

use chrono::{DateTime, Utc};

use super::LaWorkspace;
use super::kql::Value;
use super::schema::{Table, Type};
use crate::state::{Core, StorageAccount};

/// The newest rows a workspace keeps; older ones are dropped. A row costs about
/// 2 KB, so this bounds a workspace near 40 MB even when a test moves the clock by
/// a week with a simulated client sending every 30 s.
pub(crate) const MAX_ROWS_PER_WORKSPACE: usize = 20_000;

/// One row of a workspace table.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub table: Table,
    pub time: DateTime<Utc>,
    /// When the row becomes visible to queries.
    pub ingested: DateTime<Utc>,
    /// Cells in the table's column order.
    pub cells: Vec<Value>,
}

/// How a Blob request was authorized, as the log records it.
#[derive(Debug, Clone)]
pub(crate) enum Auth {
    /// SharedKey with this key (index 0 = key1) and value.
    AccountKey { index: usize, value: String },
    /// A SharedKey request no key authorized (wrong signature, stale date, shared
    /// keys disabled): logged without a hash.
    AccountKeyRefused,
}

/// What the log needs to know about one served Blob request.
#[derive(Debug, Clone)]
pub(crate) struct BlobRequest {
    pub time: DateTime<Utc>,
    /// Azure's operation name (`GetAccountInformation`, `ListContainers`).
    pub operation: &'static str,
    /// `StorageRead`, `StorageWrite` or `StorageDelete`.
    pub category: &'static str,
    pub auth: Auth,
    pub status: u16,
    /// `Success`, `AuthenticationError`, ... (the status text and the metric
    /// response type of the row).
    pub status_text: &'static str,
    pub caller: String,
    pub user_agent: String,
    pub uri: String,
    pub client_request_id: String,
    pub request_id: String,
    pub version: String,
    pub object_key: String,
    pub duration_ms: f64,
    pub request_header_size: i64,
    pub response_body_size: i64,
}

/// The SHA-256 of a storage key's bytes, upper-case hex (the value inside
/// `key1(...)`). A key that is not base64 is hashed as its text.
pub(crate) fn key_sha256(key_b64: &str) -> String {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(key_b64)
        .unwrap_or_else(|_| key_b64.as_bytes().to_vec());
    let d = ring::digest::digest(&ring::digest::SHA256, &bytes);
    d.as_ref().iter().map(|b| format!("{b:02X}")).collect()
}

fn blob_row(account: &StorageAccount, ws: &LaWorkspace, r: &BlobRequest) -> Vec<Value> {
    let table = Table::StorageBlobLogs;
    let mut cells: Vec<Value> = table
        .columns()
        .iter()
        .map(|(_, ty)| match ty {
            Type::String => Value::Str(String::new()),
            _ => Value::Null,
        })
        .collect();
    let mut set = |name: &str, v: Value| {
        if let Some(i) = table.column(name) {
            cells[i] = v;
        }
    };
    let s = |v: &str| Value::Str(v.to_string());
    let (auth_type, hash) = match &r.auth {
        Auth::AccountKey { index, value } => (
            "AccountKey",
            format!("key{}({})", index + 1, key_sha256(value)),
        ),
        Auth::AccountKeyRefused => ("AccountKey", String::new()),
    };
    set("TimeGenerated", Value::DateTime(r.time));
    set("AccountName", s(&account.name));
    set("Location", s(&account.location));
    set("Protocol", s("HTTPS"));
    set("OperationName", s(r.operation));
    set("AuthenticationType", s(auth_type));
    set("AuthenticationHash", Value::Str(hash));
    set("StatusCode", Value::Str(r.status.to_string()));
    set("StatusText", s(r.status_text));
    set("MetricResponseType", s(r.status_text));
    set("DurationMs", Value::Real(r.duration_ms));
    set("ServerLatencyMs", Value::Real(r.duration_ms));
    set("Uri", s(&r.uri));
    set("CallerIpAddress", s(&r.caller));
    set("CorrelationId", s(&r.request_id));
    set("SchemaVersion", s("1.0"));
    set("OperationVersion", s(&r.version));
    set("UserAgentHeader", s(&r.user_agent));
    set("ClientRequestId", s(&r.client_request_id));
    set("ServiceType", s("blob"));
    set("ObjectKey", s(&r.object_key));
    set("OperationCount", Value::Long(0));
    set("RequestHeaderSize", Value::Long(r.request_header_size));
    set("RequestBodySize", Value::Long(0));
    set("ResponseBodySize", Value::Long(r.response_body_size));
    set("Category", s(r.category));
    set("SourceSystem", s("Azure"));
    set("Type", s(table.name()));
    set("TenantId", s(&ws.customer_id));
    set(
        "_ResourceId",
        Value::Str(format!("{}/blobservices/default", account.id).to_ascii_lowercase()),
    );
    set("_SubscriptionId", s(&account.subscription));
    set("_IsBillable", s("true"));
    cells
}

/// Writes a Blob request to every workspace a diagnostic setting of its account's
/// blob service sends its category to.
pub(crate) fn record_blob(core: &mut Core, account: &str, r: &BlobRequest) {
    let Some(acct) = core.accounts.get(account) else {
        return;
    };
    let mut targets: Vec<String> = core
        .monitor
        .settings
        .iter()
        .filter(|s| s.account == acct.name && s.service == "blob" && s.sends(r.category))
        .filter_map(|s| s.workspace.clone())
        .collect();
    if targets.is_empty() {
        return;
    }
    targets.sort();
    targets.dedup();
    let delay = crate::clock::secs(core.settings.log_ingestion_delay_secs);
    let acct = acct.clone();
    for key in targets {
        let Some(ws) = core.monitor.workspaces.get_mut(&key) else {
            continue;
        };
        let cells = blob_row(&acct, ws, r);
        push(ws, Table::StorageBlobLogs, r.time, r.time + delay, cells);
    }
}

fn push(
    ws: &mut LaWorkspace,
    table: Table,
    time: DateTime<Utc>,
    ingested: DateTime<Utc>,
    cells: Vec<Value>,
) {
    if ws.rows.len() >= MAX_ROWS_PER_WORKSPACE {
        ws.rows.pop_front();
    }
    ws.rows.push_back(Row {
        table,
        time,
        ingested,
        cells,
    });
}

/// The rows of `table` a query at `now` sees: ingested, and inside `window`.
pub(crate) fn visible(
    ws: &LaWorkspace,
    table: Table,
    now: DateTime<Utc>,
    window: Option<(DateTime<Utc>, DateTime<Utc>)>,
) -> Vec<&[Value]> {
    ws.rows
        .iter()
        .filter(|r| r.table == table && r.ingested <= now)
        .filter(|r| window.is_none_or(|(from, to)| from <= r.time && r.time <= to))
        .map(|r| r.cells.as_slice())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_the_sha256_of_the_key_bytes_in_upper_case_hex() {
        // Azurite's well-known development key; the digest computed independently
        // (Python: hashlib.sha256(base64.b64decode(key)).hexdigest().upper()).
        let key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
        assert_eq!(
            key_sha256(key),
            "CB4DE97F405A7E4686710DB86F345AC95ACB27C33192E82CAAFA9C197F2019E5"
        );
    }
}
