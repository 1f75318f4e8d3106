//! The Azure Monitor Logs tables the twin holds, with the columns and types of
//! Microsoft's table reference (MicrosoftDocs/azure-reference-other,
//! `azure-monitor-ref/tables/includes/storage{blob,file,queue,table}logs-include.md`,
//! 2024-07-30; published as "Azure Monitor Logs reference - StorageBlobLogs" and
//! siblings on Microsoft Learn). Results list a table's columns in that order.
//!
//! Only `StorageBlobLogs` ever has rows: the twin serves no File, Queue or Table
//! data plane. The other three exist so that queries naming them (or a `union` of
//! all four) answer with Azure's columns and no rows, rather than an error.

/// A Kusto scalar type, as the query API names it in `columns[].type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Type {
    String,
    Long,
    Int,
    Real,
    DateTime,
    Timespan,
    Bool,
    Dynamic,
}

impl Type {
    pub fn name(self) -> &'static str {
        match self {
            Type::String => "string",
            Type::Long => "long",
            Type::Int => "int",
            Type::Real => "real",
            Type::DateTime => "datetime",
            Type::Timespan => "timespan",
            Type::Bool => "bool",
            Type::Dynamic => "dynamic",
        }
    }

    pub fn is_numeric(self) -> bool {
        matches!(self, Type::Long | Type::Int | Type::Real)
    }
}

/// A table of a Log Analytics workspace (named as Azure names them).
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Table {
    StorageBlobLogs,
    StorageFileLogs,
    StorageQueueLogs,
    StorageTableLogs,
}

impl Table {
    pub const ALL: [Table; 4] = [
        Table::StorageBlobLogs,
        Table::StorageFileLogs,
        Table::StorageQueueLogs,
        Table::StorageTableLogs,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::StorageBlobLogs => "StorageBlobLogs",
            Table::StorageFileLogs => "StorageFileLogs",
            Table::StorageQueueLogs => "StorageQueueLogs",
            Table::StorageTableLogs => "StorageTableLogs",
        }
    }

    /// Table names are case-sensitive in KQL.
    pub fn parse(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    pub fn columns(self) -> &'static [(&'static str, Type)] {
        match self {
            Table::StorageBlobLogs => STORAGE_BLOB_LOGS,
            Table::StorageFileLogs => STORAGE_FILE_LOGS,
            Table::StorageQueueLogs => STORAGE_QUEUE_LOGS,
            Table::StorageTableLogs => STORAGE_TABLE_LOGS,
        }
    }

    /// The index of a column (names are case-sensitive).
    pub fn column(self, name: &str) -> Option<usize> {
        self.columns().iter().position(|(n, _)| *n == name)
    }
}

const STORAGE_BLOB_LOGS: &[(&str, Type)] = &[
    ("AccessTier", Type::String),
    ("AccountName", Type::String),
    ("AuthenticationHash", Type::String),
    ("AuthenticationType", Type::String),
    ("AuthorizationDetails", Type::Dynamic),
    ("_BilledSize", Type::Real),
    ("CallerIpAddress", Type::String),
    ("Category", Type::String),
    ("ClientRequestId", Type::String),
    ("ConditionsUsed", Type::String),
    ("ContentLengthHeader", Type::Long),
    ("CorrelationId", Type::String),
    ("DestinationUri", Type::String),
    ("DurationMs", Type::Real),
    ("Etag", Type::String),
    ("_IsBillable", Type::String),
    ("LastModifiedTime", Type::DateTime),
    ("Location", Type::String),
    ("MetricResponseType", Type::String),
    ("ObjectKey", Type::String),
    ("OperationCount", Type::Int),
    ("OperationName", Type::String),
    ("OperationVersion", Type::String),
    ("Protocol", Type::String),
    ("ReferrerHeader", Type::String),
    ("RehydratePriority", Type::String),
    ("RequestBodySize", Type::Long),
    ("RequesterAppId", Type::String),
    ("RequesterAudience", Type::String),
    ("RequesterObjectId", Type::String),
    ("RequesterTenantId", Type::String),
    ("RequesterTokenIssuer", Type::String),
    ("RequesterUpn", Type::String),
    ("RequestHeaderSize", Type::Long),
    ("RequestMd5", Type::String),
    ("_ResourceId", Type::String),
    ("ResponseBodySize", Type::Long),
    ("ResponseHeaderSize", Type::Long),
    ("ResponseMd5", Type::String),
    ("SasExpiryStatus", Type::String),
    ("SchemaVersion", Type::String),
    ("ServerLatencyMs", Type::Real),
    ("ServiceType", Type::String),
    ("SourceAccessTier", Type::String),
    ("SourceSystem", Type::String),
    ("SourceUri", Type::String),
    ("StatusCode", Type::String),
    ("StatusText", Type::String),
    ("_SubscriptionId", Type::String),
    ("TenantId", Type::String),
    ("TimeGenerated", Type::DateTime),
    ("TlsVersion", Type::String),
    ("Type", Type::String),
    ("Uri", Type::String),
    ("UserAgentHeader", Type::String),
];

const STORAGE_FILE_LOGS: &[(&str, Type)] = &[
    ("AccountName", Type::String),
    ("AuthenticationHash", Type::String),
    ("AuthenticationType", Type::String),
    ("AuthorizationDetails", Type::Dynamic),
    ("_BilledSize", Type::Real),
    ("CallerIpAddress", Type::String),
    ("Category", Type::String),
    ("ClientRequestId", Type::String),
    ("ConditionsUsed", Type::String),
    ("ContentLengthHeader", Type::Long),
    ("CorrelationId", Type::String),
    ("DurationMs", Type::Real),
    ("Etag", Type::String),
    ("_IsBillable", Type::String),
    ("LastModifiedTime", Type::DateTime),
    ("Location", Type::String),
    ("MetricResponseType", Type::String),
    ("ObjectKey", Type::String),
    ("OperationCount", Type::Int),
    ("OperationName", Type::String),
    ("OperationVersion", Type::String),
    ("Protocol", Type::String),
    ("ReferrerHeader", Type::String),
    ("RequestBodySize", Type::Long),
    ("RequesterAppId", Type::String),
    ("RequesterAudience", Type::String),
    ("RequesterObjectId", Type::String),
    ("RequesterTenantId", Type::String),
    ("RequesterTokenIssuer", Type::String),
    ("RequesterUpn", Type::String),
    ("RequesterUserName", Type::String),
    ("RequestHeaderSize", Type::Long),
    ("RequestMd5", Type::String),
    ("_ResourceId", Type::String),
    ("ResponseBodySize", Type::Long),
    ("ResponseHeaderSize", Type::Long),
    ("ResponseMd5", Type::String),
    ("SasExpiryStatus", Type::String),
    ("SchemaVersion", Type::String),
    ("ServerLatencyMs", Type::Real),
    ("ServiceType", Type::String),
    ("SmbCommandDetail", Type::String),
    ("SmbCommandMajor", Type::Int),
    ("SmbCommandMinor", Type::String),
    ("SmbCreditsConsumed", Type::Int),
    ("SmbFileId", Type::String),
    ("SmbMessageID", Type::String),
    ("SmbPersistentHandleID", Type::String),
    ("SmbPrimarySID", Type::String),
    ("SmbSessionID", Type::String),
    ("SmbStatusCode", Type::String),
    ("SmbTreeConnectID", Type::String),
    ("SmbVolatileHandleID", Type::String),
    ("SourceSystem", Type::String),
    ("StatusCode", Type::String),
    ("StatusText", Type::String),
    ("_SubscriptionId", Type::String),
    ("TenantId", Type::String),
    ("TimeGenerated", Type::DateTime),
    ("TlsVersion", Type::String),
    ("Type", Type::String),
    ("Uri", Type::String),
    ("UserAgentHeader", Type::String),
];

const STORAGE_QUEUE_LOGS: &[(&str, Type)] = &[
    ("AccountName", Type::String),
    ("AuthenticationHash", Type::String),
    ("AuthenticationType", Type::String),
    ("AuthorizationDetails", Type::Dynamic),
    ("_BilledSize", Type::Real),
    ("CallerIpAddress", Type::String),
    ("Category", Type::String),
    ("ClientRequestId", Type::String),
    ("ConditionsUsed", Type::String),
    ("ContentLengthHeader", Type::Long),
    ("CorrelationId", Type::String),
    ("DurationMs", Type::Real),
    ("Etag", Type::String),
    ("_IsBillable", Type::String),
    ("LastModifiedTime", Type::DateTime),
    ("Location", Type::String),
    ("MetricResponseType", Type::String),
    ("ObjectKey", Type::String),
    ("OperationCount", Type::Int),
    ("OperationName", Type::String),
    ("OperationVersion", Type::String),
    ("Protocol", Type::String),
    ("ReferrerHeader", Type::String),
    ("RequestBodySize", Type::Long),
    ("RequesterAppId", Type::String),
    ("RequesterAudience", Type::String),
    ("RequesterObjectId", Type::String),
    ("RequesterTenantId", Type::String),
    ("RequesterTokenIssuer", Type::String),
    ("RequesterUpn", Type::String),
    ("RequestHeaderSize", Type::Long),
    ("RequestMd5", Type::String),
    ("_ResourceId", Type::String),
    ("ResponseBodySize", Type::Long),
    ("ResponseHeaderSize", Type::Long),
    ("ResponseMd5", Type::String),
    ("SasExpiryStatus", Type::String),
    ("SchemaVersion", Type::String),
    ("ServerLatencyMs", Type::Real),
    ("ServiceType", Type::String),
    ("SourceSystem", Type::String),
    ("StatusCode", Type::String),
    ("StatusText", Type::String),
    ("_SubscriptionId", Type::String),
    ("TenantId", Type::String),
    ("TimeGenerated", Type::DateTime),
    ("TlsVersion", Type::String),
    ("Type", Type::String),
    ("Uri", Type::String),
    ("UserAgentHeader", Type::String),
];

const STORAGE_TABLE_LOGS: &[(&str, Type)] = &[
    ("AccountName", Type::String),
    ("AuthenticationHash", Type::String),
    ("AuthenticationType", Type::String),
    ("AuthorizationDetails", Type::Dynamic),
    ("_BilledSize", Type::Real),
    ("CallerIpAddress", Type::String),
    ("Category", Type::String),
    ("ClientRequestId", Type::String),
    ("ConditionsUsed", Type::String),
    ("ContentLengthHeader", Type::Long),
    ("CorrelationId", Type::String),
    ("DurationMs", Type::Real),
    ("Etag", Type::String),
    ("_IsBillable", Type::String),
    ("LastModifiedTime", Type::DateTime),
    ("Location", Type::String),
    ("MetricResponseType", Type::String),
    ("ObjectKey", Type::String),
    ("OperationCount", Type::Int),
    ("OperationName", Type::String),
    ("OperationVersion", Type::String),
    ("Protocol", Type::String),
    ("ReferrerHeader", Type::String),
    ("RequestBodySize", Type::Long),
    ("RequesterAppId", Type::String),
    ("RequesterAudience", Type::String),
    ("RequesterObjectId", Type::String),
    ("RequesterTenantId", Type::String),
    ("RequesterTokenIssuer", Type::String),
    ("RequesterUpn", Type::String),
    ("RequestHeaderSize", Type::Long),
    ("RequestMd5", Type::String),
    ("_ResourceId", Type::String),
    ("ResponseBodySize", Type::Long),
    ("ResponseHeaderSize", Type::Long),
    ("ResponseMd5", Type::String),
    ("SasExpiryStatus", Type::String),
    ("SchemaVersion", Type::String),
    ("ServerLatencyMs", Type::Real),
    ("ServiceType", Type::String),
    ("SourceSystem", Type::String),
    ("StatusCode", Type::String),
    ("StatusText", Type::String),
    ("_SubscriptionId", Type::String),
    ("TenantId", Type::String),
    ("TimeGenerated", Type::DateTime),
    ("TlsVersion", Type::String),
    ("Type", Type::String),
    ("Uri", Type::String),
    ("UserAgentHeader", Type::String),
];
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_blob_table_has_the_columns_keyflip_queries() {
        let t = Table::StorageBlobLogs;
        assert_eq!(t.columns().len(), 55);
        for (name, ty) in [
            ("TimeGenerated", Type::DateTime),
            ("AccountName", Type::String),
            ("OperationName", Type::String),
            ("AuthenticationType", Type::String),
            ("AuthenticationHash", Type::String),
            ("CallerIpAddress", Type::String),
            ("UserAgentHeader", Type::String),
            ("StatusCode", Type::String),
            ("Uri", Type::String),
            ("DurationMs", Type::Real),
            ("OperationCount", Type::Int),
            ("AuthorizationDetails", Type::Dynamic),
        ] {
            let i = t.column(name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(t.columns()[i].1, ty, "{name}");
        }
        assert_eq!(t.column("timegenerated"), None, "case-sensitive");
        assert_eq!(Table::parse("StorageBlobLogs"), Some(t));
        assert_eq!(Table::parse("storagebloblogs"), None);
        assert!(Table::StorageFileLogs.column("SmbFileId").is_some());
        assert!(Table::StorageQueueLogs.column("AccessTier").is_none());
    }
}
