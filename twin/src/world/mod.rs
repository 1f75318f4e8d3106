//! The world file: everything a twin starts with, as TOML.
//!
//! A world names one tenant, its subscriptions and resource groups, the resources in
//! them (storage accounts, Key Vaults, Azure ML workspaces with datastores, Databricks
//! workspaces with secret scopes, App Service sites with slots, Data Factories with
//! linked services), the principals that may sign in, custom roles and
//! role assignments, and the run-time settings (propagation delay, throttling, LRO
//! timing). [`World::from_toml_str`] parses *and* validates: a `World` value always
//! refers only to things it defines, so the twin never meets a dangling reference at
//! run time. Every error names the file, line and column. Unknown keys are errors.
//!
//! Key values are not part of the world unless it fixes them: the twin generates
//! random 64-byte keys at start. Values derived from a key (`value_from`) are resolved
//! then too.

mod checks;
mod datafactory;
mod monitor;
mod spec;
mod validate;
mod web;

pub(crate) use datafactory::{DataFactorySpec, LinkedServiceSpec};
pub(crate) use monitor::{
    ClientOperation, ClientSpec, DiagnosticSettingSpec, LogAnalyticsWorkspaceSpec, parse_caller,
};
pub(crate) use spec::*;
pub(crate) use web::{CONNECTION_STRING_TYPES, SettingSpec, WebAppSpec};

pub(crate) use checks::check_runtime_settings as validate_settings;

use std::path::Path;

use serde::{Deserialize, Serialize};

/// A parsed and validated world. See `twin/README.md` for the format and
/// `twin/worlds/demo.toml` for a complete example.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct World {
    pub(crate) tenant: TenantSpec,
    #[serde(default)]
    pub(crate) settings: Settings,
    #[serde(default, rename = "subscription")]
    pub(crate) subscriptions: Vec<SubscriptionSpec>,
    #[serde(default, rename = "resource_group")]
    pub(crate) resource_groups: Vec<ResourceGroupSpec>,
    #[serde(default, rename = "storage_account")]
    pub(crate) storage_accounts: Vec<StorageAccountSpec>,
    #[serde(default, rename = "key_vault")]
    pub(crate) key_vaults: Vec<KeyVaultSpec>,
    #[serde(default, rename = "ml_workspace")]
    pub(crate) ml_workspaces: Vec<MlWorkspaceSpec>,
    #[serde(default, rename = "databricks_workspace")]
    pub(crate) databricks_workspaces: Vec<DatabricksWorkspaceSpec>,
    #[serde(default, rename = "web_app")]
    pub(crate) web_apps: Vec<WebAppSpec>,
    #[serde(default, rename = "data_factory")]
    pub(crate) data_factories: Vec<DataFactorySpec>,
    #[serde(default, rename = "principal")]
    pub(crate) principals: Vec<PrincipalSpec>,
    #[serde(default, rename = "custom_role")]
    pub(crate) custom_roles: Vec<CustomRoleSpec>,
    #[serde(default, rename = "role_assignment")]
    pub(crate) role_assignments: Vec<RoleAssignmentSpec>,
    #[serde(default)]
    pub(crate) managed_identity: Option<ManagedIdentitySpec>,
    #[serde(default, rename = "log_analytics_workspace")]
    pub(crate) log_analytics_workspaces: Vec<LogAnalyticsWorkspaceSpec>,
    #[serde(default, rename = "diagnostic_setting")]
    pub(crate) diagnostic_settings: Vec<DiagnosticSettingSpec>,
    #[serde(default, rename = "client")]
    pub(crate) clients: Vec<ClientSpec>,
}

/// Run-time settings; all can be changed later through `PATCH /_admin/settings`.
/// Durations are seconds (fractions allowed), rates are tokens per second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// How long after `regenerateKey` the new value of that key is still refused.
    pub propagation_delay_secs: f64,
    /// `Retry-After` on ML long-running operations (Azure's documented minimum is 10).
    pub lro_retry_after_secs: u32,
    /// How long a workspace `resyncKeys` runs before it completes.
    pub resync_duration_secs: f64,
    /// Lifetime of issued access tokens.
    pub token_lifetime_secs: u32,
    pub arm_write_burst: u32,
    pub arm_write_refill_per_sec: f64,
    pub arm_read_burst: u32,
    pub arm_read_refill_per_sec: f64,
    /// Key Vault secret creates (`PUT`), per vault.
    pub keyvault_write_burst: u32,
    pub keyvault_write_refill_per_sec: f64,
    /// Every other Key Vault transaction, per vault.
    pub keyvault_read_burst: u32,
    pub keyvault_read_refill_per_sec: f64,
    /// How long after a request its resource-log row becomes visible to queries
    /// (Azure Monitor's ingestion latency).
    pub log_ingestion_delay_secs: f64,
}

impl Default for Settings {
    fn default() -> Self {
        // Azure's published limits: ARM writes 10/s per subscription (bucket 200),
        // reads 25/s (bucket 250); Key Vault 300 creates and 4,000 other transactions
        // per 10 s per vault.
        Self {
            propagation_delay_secs: 0.0,
            lro_retry_after_secs: 10,
            resync_duration_secs: 10.0,
            token_lifetime_secs: 3600,
            arm_write_burst: 200,
            arm_write_refill_per_sec: 10.0,
            arm_read_burst: 250,
            arm_read_refill_per_sec: 25.0,
            keyvault_write_burst: 300,
            keyvault_write_refill_per_sec: 30.0,
            keyvault_read_burst: 4000,
            keyvault_read_refill_per_sec: 400.0,
            log_ingestion_delay_secs: 0.0,
        }
    }
}

/// Why a world file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    #[error("cannot read world file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}:{line}:{column}: {message}")]
    Invalid {
        origin: String,
        line: usize,
        column: usize,
        message: String,
    },
}

impl World {
    /// Reads, parses and validates a world file.
    pub fn from_toml_file(path: &Path) -> Result<World, WorldError> {
        let src = std::fs::read_to_string(path).map_err(|source| WorldError::Read {
            path: path.display().to_string(),
            source,
        })?;
        World::from_toml_str(&src, &path.display().to_string())
    }

    /// Parses and validates a world; `origin` names the source in error messages.
    pub fn from_toml_str(src: &str, origin: &str) -> Result<World, WorldError> {
        let world: World = toml::from_str(src).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|s| line_column(src, s.start))
                .unwrap_or((1, 1));
            WorldError::Invalid {
                origin: origin.to_string(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })?;
        checks::check_settings(&world.settings).map_err(|e| {
            let (line, column) = settings_key_offset(src, e.field)
                .map(|o| line_column(src, o))
                .unwrap_or((1, 1));
            WorldError::Invalid {
                origin: origin.to_string(),
                line,
                column,
                message: e.message,
            }
        })?;
        validate::check(&world).map_err(|(span, message)| {
            let (line, column) = line_column(src, span.start);
            WorldError::Invalid {
                origin: origin.to_string(),
                line,
                column,
                message,
            }
        })?;
        Ok(world)
    }

    /// The demo world (`twin/worlds/demo.toml`), which keyflip's demo and tests use.
    pub fn demo() -> World {
        // The embedded file is checked by `tests::demo_world_is_valid`; failing here
        // would be a build defect, not bad input.
        #[allow(clippy::expect_used)]
        World::from_toml_str(DEMO_TOML, "twin/worlds/demo.toml")
            .expect("the embedded demo world is valid (checked by world::tests)")
    }

    /// The tenant id.
    pub fn tenant_id(&self) -> &str {
        self.tenant.id.get_ref()
    }

    /// The run-time settings the twin starts with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Replaces the settings the twin starts with.
    pub fn set_settings(&mut self, settings: Settings) {
        self.settings = settings;
    }
}

pub(crate) const DEMO_TOML: &str = include_str!("../../worlds/demo.toml");

/// Where `key` is set in the world's `[settings]` table (the start of its value),
/// for errors about a setting: `Settings` is a plain struct (the admin API patches
/// it), so it carries no spans of its own.
fn settings_key_offset(src: &str, key: &str) -> Option<usize> {
    let mut in_settings = false;
    let mut offset = 0;
    for line in src.split_inclusive('\n') {
        let t = line.trim_start();
        if t.starts_with('[') {
            in_settings = t.starts_with("[settings]");
        } else if in_settings
            && let Some(rest) = t.strip_prefix(key)
            && rest.trim_start().starts_with('=')
        {
            let eq = line.len() - rest.trim_start().len();
            let value = line[eq + 1..].len() - line[eq + 1..].trim_start().len();
            return Some(offset + eq + 1 + value);
        }
        offset += line.len();
    }
    None
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = src.get(..offset).unwrap_or(src);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before
        .get(line_start..)
        .map(|s| s.chars().count())
        .unwrap_or(0)
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests;
