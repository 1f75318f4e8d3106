//! keyflip-twin: a local Azure-compatible HTTPS service for building, demonstrating
//! and testing keyflip without Azure.
//!
//! One HTTPS listener on 127.0.0.1 serves Entra ID (token endpoint, discovery, JWKS,
//! App Service managed identity), Azure Resource Manager (storage accounts and their
//! diagnostic settings, ML workspaces and datastores, App Service settings, Data Factory
//! linked services, permissions, role definitions), Key Vault secrets, the Blob data
//! plane with SharedKey (which writes `StorageBlobLogs`), the Log Analytics query API,
//! and the Databricks Secrets API, routed by the first path segment. It checks tokens
//! and RBAC like Azure, throttles like Azure, and its
//! admin API injects the faults Azure produces. `twin/README.md` documents the wire.
//!
//! The library API is deliberately small:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use keyflip_twin::{Twin, TwinOptions, World};
//! let twin = Twin::start(World::demo(), TwinOptions::default()).await?;
//! let base = &twin.endpoints().base_url; // https://127.0.0.1:PORT
//! let ca = twin.ca_pem();                // trust this CA
//! # let _ = (base, ca);
//! twin.shutdown().await;
//! # Ok(()) }
//! ```

// Handlers return early with a finished HTTP response as their error value: one per
// request, moved once, so boxing it would only add noise.
#![allow(clippy::result_large_err)]

mod admin;
mod arm;
mod auth;
mod blob;
mod certificate;
mod clock;
mod databricks;
mod endpoints;
mod entra;
mod entropy;
mod faults;
mod keyvault;
mod monitor;
mod msi;
mod ops;
mod rbac;
mod requestlog;
mod server;
mod state;
mod throttle;
mod tls;
mod token;
mod wire;
mod world;

pub use endpoints::{
    AdminEndpoint, DataFactoryEndpoint, DatabricksWorkspaceEndpoint, Endpoints, KeyVaultEndpoint,
    LogAnalyticsEndpoint, LogAnalyticsWorkspaceEndpoint, ManagedIdentityEndpoint,
    MlWorkspaceEndpoint, PrincipalEndpoint, StorageAccountEndpoint, SubscriptionEndpoint,
    WebAppEndpoint,
};
pub use server::{Twin, TwinError, TwinHandle, TwinOptions};
pub use world::{Settings, World, WorldError};
