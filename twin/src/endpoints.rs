//! `endpoints.json`: where everything in a running twin is, for clients to configure
//! themselves from. Field names are a contract (documented in `twin/README.md`); new
//! fields may be added, existing ones are never renamed. `version` changes only if a
//! field changes meaning.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::state::{Core, Directory, Topology};
use crate::token::{ARM_AUDIENCE, LOG_ANALYTICS_AUDIENCE};

/// The contents of `endpoints.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoints {
    /// Format version, currently 1.
    pub version: u32,
    /// `https://127.0.0.1:PORT`, no trailing slash.
    pub base_url: String,
    /// Where `ca.pem` was written; `null` without a state directory.
    pub ca_pem_path: Option<PathBuf>,
    pub tenant_id: String,
    /// The Entra authority host (= `base_url`).
    pub authority_host: String,
    /// The ARM endpoint (= `base_url` + `/`).
    pub arm_url: String,
    /// The audience of ARM tokens the twin issues.
    pub arm_audience: String,
    pub managed_identity: ManagedIdentityEndpoint,
    /// Subscription id → display name (added after the first draft; optional when read).
    #[serde(default)]
    pub subscriptions: BTreeMap<String, SubscriptionEndpoint>,
    pub storage_accounts: BTreeMap<String, StorageAccountEndpoint>,
    pub key_vaults: BTreeMap<String, KeyVaultEndpoint>,
    pub ml_workspaces: BTreeMap<String, MlWorkspaceEndpoint>,
    pub databricks_workspaces: BTreeMap<String, DatabricksWorkspaceEndpoint>,
    /// App Service sites (added later; optional when read).
    #[serde(default)]
    pub web_apps: BTreeMap<String, WebAppEndpoint>,
    /// Data Factories (added later; optional when read).
    #[serde(default)]
    pub data_factories: BTreeMap<String, DataFactoryEndpoint>,
    pub principals: BTreeMap<String, PrincipalEndpoint>,
    pub admin: AdminEndpoint,
    /// The Log Analytics query API on this port (added with issue 10; optional when
    /// read).
    #[serde(default)]
    pub log_analytics: Option<LogAnalyticsEndpoint>,
    /// Workspace name → ARM `id` and the `workspace_id` the query API takes.
    #[serde(default)]
    pub log_analytics_workspaces: BTreeMap<String, LogAnalyticsWorkspaceEndpoint>,
}

/// Where the Log Analytics query API is: `POST {url}/v1/workspaces/{workspace_id}/query`
/// with a token for `audience`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogAnalyticsEndpoint {
    /// The endpoint a client is configured with (= `base_url`; Microsoft's
    /// `LogsQueryClient(endpoint=...)` adds `/v1`).
    pub url: String,
    /// The token audience (`https://api.loganalytics.io`; scope `{audience}/.default`).
    pub audience: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogAnalyticsWorkspaceEndpoint {
    /// ARM id (what a diagnostic setting's `workspaceId` names).
    pub id: String,
    /// The workspace ID (`customerId`) the query API takes.
    pub workspace_id: String,
}

/// The App Service managed identity endpoint (`IDENTITY_ENDPOINT`, `IDENTITY_HEADER`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManagedIdentityEndpoint {
    pub endpoint: String,
    pub header: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionEndpoint {
    pub display_name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StorageAccountEndpoint {
    /// ARM resource id.
    pub id: String,
    /// `base_url/{name}/` (path-style, like Azurite).
    pub blob_endpoint: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyVaultEndpoint {
    pub id: String,
    /// The vault URL: `base_url/keyvault/{name}`.
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlWorkspaceEndpoint {
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatabricksWorkspaceEndpoint {
    pub id: String,
    /// The workspace URL: `base_url/databricks/{name}`.
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebAppEndpoint {
    /// ARM resource id of the site.
    pub id: String,
    /// The site's `kind` (`functionapp`, `app`, `app,linux`, ...).
    pub kind: String,
    /// Deployment slot names (the production slot is the site itself).
    pub slots: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataFactoryEndpoint {
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrincipalEndpoint {
    pub client_id: String,
    pub object_id: String,
    pub client_secret: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdminEndpoint {
    /// `base_url/_admin`.
    pub url: String,
    /// Bearer token for the admin API (and only for it).
    pub token: String,
}

pub(crate) struct Inputs<'a> {
    pub base_url: &'a str,
    pub ca_pem_path: Option<PathBuf>,
    pub topology: &'a Topology,
    pub directory: &'a Directory,
    pub core: &'a Core,
    pub identity_header: &'a str,
    pub admin_token: &'a str,
}

pub(crate) fn build(i: Inputs<'_>) -> Endpoints {
    let base = i.base_url;
    Endpoints {
        version: 1,
        base_url: base.to_string(),
        ca_pem_path: i.ca_pem_path,
        tenant_id: i.topology.tenant_id.clone(),
        authority_host: base.to_string(),
        arm_url: format!("{base}/"),
        arm_audience: ARM_AUDIENCE.to_string(),
        managed_identity: ManagedIdentityEndpoint {
            endpoint: format!("{base}/msi/token"),
            header: i.identity_header.to_string(),
        },
        subscriptions: i
            .topology
            .subscriptions
            .iter()
            .map(|s| {
                (
                    s.id.clone(),
                    SubscriptionEndpoint {
                        display_name: s.display_name.clone(),
                    },
                )
            })
            .collect(),
        storage_accounts: i
            .core
            .accounts
            .values()
            .map(|a| {
                (
                    a.name.clone(),
                    StorageAccountEndpoint {
                        id: a.id.clone(),
                        blob_endpoint: format!("{base}/{}/", a.name),
                    },
                )
            })
            .collect(),
        key_vaults: i
            .core
            .vaults
            .values()
            .map(|v| {
                (
                    v.name.clone(),
                    KeyVaultEndpoint {
                        id: v.id.clone(),
                        url: format!("{base}/keyvault/{}", v.name),
                    },
                )
            })
            .collect(),
        ml_workspaces: i
            .core
            .workspaces
            .values()
            .map(|w| (w.name.clone(), MlWorkspaceEndpoint { id: w.id.clone() }))
            .collect(),
        databricks_workspaces: i
            .core
            .databricks
            .values()
            .map(|d| {
                (
                    d.name.clone(),
                    DatabricksWorkspaceEndpoint {
                        id: d.id.clone(),
                        url: format!("{base}/databricks/{}", d.name),
                    },
                )
            })
            .collect(),
        web_apps: i
            .core
            .web_apps
            .values()
            .map(|w| {
                (
                    w.name.clone(),
                    WebAppEndpoint {
                        id: w.id.clone(),
                        kind: w.kind.clone(),
                        slots: w.slots.values().map(|s| s.name.clone()).collect(),
                    },
                )
            })
            .collect(),
        data_factories: i
            .core
            .factories
            .values()
            .map(|f| (f.name.clone(), DataFactoryEndpoint { id: f.id.clone() }))
            .collect(),
        principals: i
            .directory
            .principals
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    PrincipalEndpoint {
                        client_id: p.client_id.clone(),
                        object_id: p.object_id.clone(),
                        client_secret: p.client_secret.clone(),
                    },
                )
            })
            .collect(),
        admin: AdminEndpoint {
            url: format!("{base}/_admin"),
            token: i.admin_token.to_string(),
        },
        log_analytics: Some(LogAnalyticsEndpoint {
            url: base.to_string(),
            audience: LOG_ANALYTICS_AUDIENCE.to_string(),
        }),
        log_analytics_workspaces: i
            .core
            .monitor
            .workspaces
            .values()
            .map(|w| {
                (
                    w.name.clone(),
                    LogAnalyticsWorkspaceEndpoint {
                        id: w.id.clone(),
                        workspace_id: w.customer_id.clone(),
                    },
                )
            })
            .collect(),
    }
}
