//! The sections of a world file, as serde reads them. Unknown keys are errors
//! everywhere; names that other sections refer to keep their span so that
//! validation can point at them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use toml::Spanned;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TenantSpec {
    pub id: Spanned<String>,
    #[serde(default = "default_tenant_name")]
    pub display_name: String,
}

fn default_tenant_name() -> String {
    "keyflip-twin".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubscriptionSpec {
    pub id: Spanned<String>,
    pub display_name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResourceGroupSpec {
    pub name: Spanned<String>,
    /// Optional when the world has exactly one subscription.
    pub subscription: Option<Spanned<String>>,
    pub location: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StorageAccountSpec {
    pub name: Spanned<String>,
    pub resource_group: Spanned<String>,
    #[serde(default = "default_sku")]
    pub sku: Spanned<String>,
    #[serde(default = "default_kind")]
    pub kind: Spanned<String>,
    #[serde(default = "yes")]
    pub allow_shared_key_access: bool,
    pub key1: Option<Spanned<String>>,
    pub key2: Option<Spanned<String>>,
    /// RFC 3339; defaults to the time the twin starts.
    pub key1_created: Option<Spanned<String>>,
    pub key2_created: Option<Spanned<String>>,
    pub key_expiration_days: Option<u32>,
    #[serde(default)]
    pub containers: Vec<String>,
}

fn default_sku() -> Spanned<String> {
    Spanned::new(0..0, "Standard_LRS".into())
}
fn default_kind() -> Spanned<String> {
    Spanned::new(0..0, "StorageV2".into())
}
fn yes() -> bool {
    true
}

/// Which storage key a value is taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum KeyName {
    Key1,
    Key2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum ValueFormat {
    RawKey,
    ConnectionString,
}

/// A value computed from a storage account key when the twin starts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ValueFrom {
    pub account: Spanned<String>,
    pub key: KeyName,
    #[serde(default = "raw_key")]
    pub format: ValueFormat,
}

fn raw_key() -> ValueFormat {
    ValueFormat::RawKey
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyVaultSpec {
    pub name: Spanned<String>,
    pub resource_group: Spanned<String>,
    #[serde(default, rename = "secret")]
    pub secrets: Vec<VaultSecretSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VaultSecretSpec {
    pub name: Spanned<String>,
    pub value: Option<String>,
    pub value_from: Option<ValueFrom>,
    pub content_type: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MlWorkspaceSpec {
    pub name: Spanned<String>,
    pub resource_group: Spanned<String>,
    pub storage_account: Spanned<String>,
    pub user_storage_key: KeyName,
    pub key_vault: Option<Spanned<String>>,
    #[serde(default, rename = "datastore")]
    pub datastores: Vec<DatastoreSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(crate) enum DatastoreType {
    AzureBlob,
    AzureFile,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum CredentialKind {
    AccountKey,
    Sas,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DatastoreSpec {
    pub name: Spanned<String>,
    #[serde(rename = "type")]
    pub datastore_type: DatastoreType,
    pub account: Spanned<String>,
    /// AzureBlob only.
    pub container: Option<String>,
    /// AzureFile only.
    pub file_share: Option<String>,
    pub credential: CredentialKind,
    /// For `account-key` credentials: which key of `account` the datastore holds.
    pub key: Option<KeyName>,
    /// For `sas` credentials.
    pub sas_token: Option<String>,
    #[serde(default)]
    pub default: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DatabricksWorkspaceSpec {
    pub name: Spanned<String>,
    pub resource_group: Spanned<String>,
    /// Principals that are users of the workspace.
    #[serde(default)]
    pub users: Vec<Spanned<String>>,
    #[serde(default, rename = "scope")]
    pub scopes: Vec<SecretScopeSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub(crate) enum ScopeBackend {
    #[serde(rename = "DATABRICKS")]
    Databricks,
    #[serde(rename = "AZURE_KEYVAULT")]
    AzureKeyVault,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub(crate) enum ScopePermission {
    Read,
    Write,
    Manage,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SecretScopeSpec {
    pub name: Spanned<String>,
    pub backend: ScopeBackend,
    /// AZURE_KEYVAULT scopes: the vault behind the scope.
    pub key_vault: Option<Spanned<String>>,
    /// Principal name → permission on this scope.
    #[serde(default)]
    pub acl: BTreeMap<String, ScopePermission>,
    #[serde(default, rename = "secret")]
    pub secrets: Vec<ScopeSecretSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScopeSecretSpec {
    pub key: Spanned<String>,
    pub value: Option<String>,
    pub value_from: Option<ValueFrom>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PrincipalSpec {
    pub name: Spanned<String>,
    pub client_id: Spanned<String>,
    pub object_id: Spanned<String>,
    /// Generated at start when absent.
    pub client_secret: Option<String>,
    #[serde(default)]
    pub federated_credentials: Vec<FederatedCredentialSpec>,
    /// Certificates (PEM, public part) a client assertion may be signed with, as an
    /// app registration's `keyCredentials`.
    #[serde(default)]
    pub certificates: Vec<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FederatedCredentialSpec {
    pub issuer: String,
    pub subject: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CustomRoleSpec {
    pub name: Spanned<String>,
    pub id: Spanned<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub actions: Vec<String>,
    #[serde(default)]
    pub not_actions: Vec<String>,
    #[serde(default)]
    pub data_actions: Vec<String>,
    #[serde(default)]
    pub not_data_actions: Vec<String>,
    #[serde(default)]
    pub assignable_scopes: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RoleAssignmentSpec {
    pub principal: Spanned<String>,
    /// A built-in or custom role name, or a role definition GUID.
    pub role: Spanned<String>,
    /// A full ARM scope: a subscription, resource group or resource id.
    pub scope: Spanned<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ManagedIdentitySpec {
    /// The value clients must send in `x-identity-header` (`IDENTITY_HEADER`).
    pub header: String,
    /// The principal a request without `client_id`/`object_id` gets a token for.
    pub default_principal: Spanned<String>,
}
