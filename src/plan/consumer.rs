//! Consumers of a storage key: Key Vault secrets, Azure ML workspaces and their
//! datastores, Databricks-backed secret scopes. Each has a stable [`ConsumerId`] that
//! the rotation machine, the executor and the journal use to name it.

use std::collections::BTreeMap;
use std::fmt;

use super::parse::Diagnostics;
use super::raw::{RawDatabricks, RawKeyVault, RawMlWorkspace, Text};
use super::values::{arm_id, https_url, integer_in, name, optional, required};
use crate::resource_id::ResourceId;

/// A consumer's identity, stable across runs:
///
/// | consumer | id |
/// |---|---|
/// | Key Vault secret | `keyvault:{vault_url}/secrets/{name}` |
/// | ML workspace (resync) | `workspace:{workspace_arm_id}` |
/// | ML datastore | `datastore:{workspace_arm_id}/datastores/{name}` |
/// | Databricks secret | `databricks:{workspace_url}#{scope}/{key}` |
///
/// URLs carry no trailing slash; ARM ids are as written in the plan.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConsumerId(String);

impl ConsumerId {
    pub fn key_vault(vault_url: &str, secret: &str) -> ConsumerId {
        ConsumerId(format!(
            "keyvault:{}/secrets/{secret}",
            vault_url.trim_end_matches('/')
        ))
    }

    pub fn workspace(workspace: &ResourceId) -> ConsumerId {
        ConsumerId(format!("workspace:{workspace}"))
    }

    pub fn datastore(workspace: &ResourceId, datastore: &str) -> ConsumerId {
        ConsumerId(format!("datastore:{workspace}/datastores/{datastore}"))
    }

    pub fn databricks(workspace_url: &str, scope: &str, key: &str) -> ConsumerId {
        ConsumerId(format!(
            "databricks:{}#{scope}/{key}",
            workspace_url.trim_end_matches('/')
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form under which two ids name the same thing. Azure treats vault, secret,
    /// workspace and datastore names case-insensitively; Databricks scope and key names
    /// are case-sensitive.
    pub(super) fn same_target_key(&self) -> String {
        if self.0.starts_with("databricks:") {
            self.0.clone()
        } else {
            self.0.to_ascii_lowercase()
        }
    }
}

impl fmt::Display for ConsumerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a consumer stores the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretFormat {
    /// The base64 key alone.
    RawKey,
    /// `DefaultEndpointsProtocol=https;AccountName=…;AccountKey=…;EndpointSuffix=…`.
    ConnectionString,
}

impl SecretFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            SecretFormat::RawKey => "raw-key",
            SecretFormat::ConnectionString => "connection-string",
        }
    }

    /// The Key Vault content type used when the plan sets none.
    pub fn default_content_type(self) -> &'static str {
        match self {
            SecretFormat::RawKey => "text/plain",
            SecretFormat::ConnectionString => "application/x-azure-storage-connection-string",
        }
    }
}

/// A Key Vault secret that holds the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyVaultSecret {
    /// Vault URL without a trailing slash, e.g. `https://kv-datasci.vault.azure.net`.
    pub vault: String,
    pub secret: String,
    pub format: SecretFormat,
    pub content_type: String,
    /// Each new version expires this many days after it is written.
    pub expires_after_days: Option<u32>,
    /// Tags written on each new version, besides keyflip's own `keyflip-*` tags.
    pub tags: BTreeMap<String, String>,
    /// The vault's ARM id, which lets `doctor` check role assignments.
    pub vault_id: Option<ResourceId>,
}

impl KeyVaultSecret {
    pub fn id(&self) -> ConsumerId {
        ConsumerId::key_vault(&self.vault, &self.secret)
    }
}

/// An Azure ML workspace that uses the account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MlWorkspace {
    pub workspace: ResourceId,
    /// Call `resyncKeys` after the datastores are updated, so the workspace's cached
    /// copy follows. Set on the plan for the workspace's own storage account.
    pub resync: bool,
    pub datastores: Datastores,
}

/// Which datastores of a workspace follow the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Datastores {
    Named(Vec<String>),
    /// Every datastore of the workspace on this account with account-key credentials,
    /// found at rotation time.
    Discover,
}

impl MlWorkspace {
    /// The workspace's own id as a consumer: present when it is resynced.
    pub fn id(&self) -> Option<ConsumerId> {
        self.resync.then(|| ConsumerId::workspace(&self.workspace))
    }

    /// Ids of the named datastores (discovered ones get theirs at rotation time).
    pub fn datastore_ids(&self) -> Vec<ConsumerId> {
        match &self.datastores {
            Datastores::Named(names) => names
                .iter()
                .map(|n| ConsumerId::datastore(&self.workspace, n))
                .collect(),
            Datastores::Discover => Vec::new(),
        }
    }
}

/// A secret in a Databricks-backed scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabricksSecret {
    /// Workspace URL without a trailing slash.
    pub workspace_url: String,
    pub workspace_id: Option<ResourceId>,
    pub scope: String,
    pub key: String,
    pub format: SecretFormat,
}

impl DatabricksSecret {
    pub fn id(&self) -> ConsumerId {
        ConsumerId::databricks(&self.workspace_url, &self.scope, &self.key)
    }
}

const KV_EXAMPLE: &str = "https://kv-datasci.vault.azure.net";
const DBX_EXAMPLE: &str = "https://adb-1234567890123456.7.azuredatabricks.net";

pub(super) fn key_vault(
    raw: &toml::Spanned<RawKeyVault>,
    d: &mut Diagnostics<'_>,
) -> Option<KeyVaultSecret> {
    let (span, r) = (raw.span(), raw.get_ref());
    let section = "[[key_vault]]";
    let vault = required(
        &r.vault,
        "vault",
        section,
        &span,
        &format!("\"{KV_EXAMPLE}\""),
        d,
    )
    .and_then(|v| https_url(v, "vault", KV_EXAMPLE, d));
    let secret = required(
        &r.secret,
        "secret",
        section,
        &span,
        "\"stdatasci001-key\"",
        d,
    )
    .and_then(|v| {
        name(
            v,
            "secret",
            |c| c.is_ascii_alphanumeric() || c == '-',
            (1, 127),
            "letters, digits and `-`",
            d,
        )
    });
    let format = required(&r.format, "format", section, &span, "\"raw-key\"", d)
        .and_then(|v| secret_format(v, d));
    let expires_after_days = optional(&r.expires_after_days, |v| {
        integer_in(v, "expires_after_days", 1, 36_500, d)
    });
    let vault_id = optional(&r.vault_id, |v| {
        arm_id(v, "vault_id", "Microsoft.KeyVault/vaults", d)
    });
    let tags = tags(r.tags.as_ref(), d);
    let (vault, secret, format, tags) = (vault?, secret?, format?, tags?);
    let (expires_after_days, vault_id) = (expires_after_days.ok()?, vault_id.ok()?);
    let content_type = r.content_type.as_ref().map_or_else(
        || format.default_content_type().to_owned(),
        |c| c.get_ref().clone(),
    );
    Some(KeyVaultSecret {
        vault,
        secret,
        format,
        content_type,
        expires_after_days,
        tags,
        vault_id,
    })
}

fn tags(
    raw: Option<&BTreeMap<Text, Text>>,
    d: &mut Diagnostics<'_>,
) -> Option<BTreeMap<String, String>> {
    let mut ok = true;
    let mut tags = BTreeMap::new();
    for (key, value) in raw.into_iter().flatten() {
        if key.get_ref().to_ascii_lowercase().starts_with("keyflip-") {
            d.error(
                key.span(),
                format!(
                    "tag `{}` uses the reserved prefix `keyflip-`",
                    key.get_ref()
                ),
                "keyflip writes its own keyflip-* tags on each version; choose another name",
            );
            ok = false;
        }
        tags.insert(key.get_ref().clone(), value.get_ref().clone());
    }
    ok.then_some(tags)
}

pub(super) fn ml_workspace(
    raw: &toml::Spanned<RawMlWorkspace>,
    d: &mut Diagnostics<'_>,
) -> Option<MlWorkspace> {
    let (span, r) = (raw.span(), raw.get_ref());
    let workspace = required(
        &r.workspace,
        "workspace",
        "[[ml_workspace]]",
        &span,
        "\"/subscriptions/…/providers/Microsoft.MachineLearningServices/workspaces/<name>\"",
        d,
    )
    .and_then(|v| {
        arm_id(
            v,
            "workspace",
            "Microsoft.MachineLearningServices/workspaces",
            d,
        )
    });
    let discover = r.discover.as_ref().is_some_and(|v| *v.get_ref());
    let datastores = match (&r.datastores, discover) {
        (Some(_), true) => {
            let at = r.discover.as_ref().map_or(span.clone(), |v| v.span());
            d.error(
                at,
                "`datastores` and `discover = true` are both set",
                "name the datastores, or set discover = true to follow every key-based datastore on this account, not both",
            );
            None
        }
        (None, true) => Some(Datastores::Discover),
        (Some(list), false) => datastore_names(list, d).map(Datastores::Named),
        (None, false) => {
            d.error(
                span,
                "[[ml_workspace]] names no datastores",
                "add datastores = [\"training_data\"], or discover = true for every key-based datastore on this account",
            );
            None
        }
    };
    Some(MlWorkspace {
        workspace: workspace?,
        resync: r.resync.as_ref().is_none_or(|v| *v.get_ref()),
        datastores: datastores?,
    })
}

fn datastore_names(
    list: &toml::Spanned<Vec<Text>>,
    d: &mut Diagnostics<'_>,
) -> Option<Vec<String>> {
    if list.get_ref().is_empty() {
        d.error(
            list.span(),
            "`datastores` is empty",
            "name at least one datastore, or use discover = true",
        );
        return None;
    }
    let mut names: Vec<String> = Vec::new();
    let mut ok = true;
    for item in list.get_ref() {
        let Some(n) = name(
            item,
            "datastore",
            |c| c.is_ascii_alphanumeric() || c == '_',
            (1, 255),
            "letters, digits and `_`",
            d,
        ) else {
            ok = false;
            continue;
        };
        if names.iter().any(|seen| seen.eq_ignore_ascii_case(&n)) {
            d.error(
                item.span(),
                format!("datastore `{n}` is listed twice"),
                "remove the repeated name",
            );
            ok = false;
        }
        names.push(n);
    }
    ok.then_some(names)
}

pub(super) fn databricks(
    raw: &toml::Spanned<RawDatabricks>,
    d: &mut Diagnostics<'_>,
) -> Option<DatabricksSecret> {
    let (span, r) = (raw.span(), raw.get_ref());
    let section = "[[databricks]]";
    let scope_chars = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@');
    let rule = "letters, digits, `-`, `_`, `.` and `@`";
    let workspace_url = required(
        &r.workspace_url,
        "workspace_url",
        section,
        &span,
        &format!("\"{DBX_EXAMPLE}\""),
        d,
    )
    .and_then(|v| https_url(v, "workspace_url", DBX_EXAMPLE, d));
    let scope = required(&r.scope, "scope", section, &span, "\"datasci\"", d)
        .and_then(|v| name(v, "scope", scope_chars, (1, 128), rule, d));
    let key = required(&r.key, "key", section, &span, "\"stdatasci001-key\"", d)
        .and_then(|v| name(v, "key", scope_chars, (1, 128), rule, d));
    let format = required(&r.format, "format", section, &span, "\"raw-key\"", d)
        .and_then(|v| secret_format(v, d));
    let workspace_id = optional(&r.workspace_id, |v| {
        arm_id(v, "workspace_id", "Microsoft.Databricks/workspaces", d)
    });
    Some(DatabricksSecret {
        workspace_url: workspace_url?,
        workspace_id: workspace_id.ok()?,
        scope: scope?,
        key: key?,
        format: format?,
    })
}

fn secret_format(value: &Text, d: &mut Diagnostics<'_>) -> Option<SecretFormat> {
    match value.get_ref().as_str() {
        "raw-key" => Some(SecretFormat::RawKey),
        "connection-string" => Some(SecretFormat::ConnectionString),
        other => {
            d.error(
                value.span(),
                format!("unknown format `{other}`"),
                "format is \"raw-key\" (the key alone) or \"connection-string\"",
            );
            None
        }
    }
}
