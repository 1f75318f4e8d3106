//! A secret in a Databricks-backed secret scope (`[[databricks]]`), written with
//! `secrets/put`.
//!
//! Its value cannot be read back outside a cluster, so what it holds comes from the
//! journal (the key keyflip last bound it to), checked against the secret's
//! `last_updated_timestamp`: a write after keyflip's makes it unknown. A bind is
//! confirmed by that timestamp being at or after keyflip's write (within the engine's
//! allowed clock skew). A scope backed by Key Vault is not written through Databricks
//! at all (Databricks reads the vault), which observation reports as unusable, with
//! the fix. Scope and key names are case-sensitive. Id:
//! `databricks:{workspace_url}#{scope}/{key}`.

pub(crate) mod discover;
mod doctor;

use std::fmt;
use std::ops::Range;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use toml::Spanned;
use toml::de::DeValue;
use url::Url;

pub use doctor::{DatabricksSeen, SecretFacts};

use super::value::{self, SecretFormat, secret_format};
use super::{
    Capabilities, Confirmation, ConsumerId, Entry, Held, Kind, ONE_PLAN, Permission, Profile,
    Section, Seen, Table, entries, last_segment, listed_twice, plan_url,
};
use crate::azure::databricks::ScopeBackend;
use crate::azure::roles::Action;
use crate::azure::{self, Azure, Cloud, DATABRICKS_AUDIENCE};
use crate::doctor::report::Service;
use crate::key::KeyName;
use crate::plan::Plan;
use crate::plan::fragment::{Diagnostics, Text, arm_id, https_url, name, optional, required};
use crate::resource_id::ResourceId;
use crate::rotation::EngineError;
use crate::rotation::machine::{Failure, FailureKind, Holding, MissingPermission};
use crate::rotation::observe::{Basis, Lacking, denied, of, unknown};
use crate::rotation::step::Ctx;
use crate::secret::StorageKey;

pub(super) const PROFILE: Profile = Profile {
    prefix: "databricks",
    form: "databricks:{workspace_url}#{scope}/{key}",
    label: "Databricks secret",
    word: "databricks",
    capabilities: Capabilities::NONE,
    case_sensitive: true,
    parse: |rest| SecretId::parse(rest).map(|id| ConsumerId::Databricks(Box::new(id))),
    listed_twice,
    in_two_plans: ONE_PLAN,
    confirmed_by: Some("by its timestamp (a Databricks secret cannot be read back)"),
};

pub(super) const SECTION: Section = Section {
    key: "databricks",
    parse: parse_tables,
    summarize,
    render: discover::render,
    report_order: 2,
};

/// `doctor`'s name for the Databricks REST API.
pub(crate) const SERVICE: Service = Service {
    name: "databricks",
    label: "Azure Databricks",
};

/// The id of a Databricks secret: the workspace URL (no trailing slash), the scope
/// and the key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SecretId {
    workspace_url: String,
    scope: String,
    key: String,
}

impl SecretId {
    pub fn new(workspace_url: &str, scope: &str, key: &str) -> SecretId {
        SecretId {
            workspace_url: workspace_url.trim_end_matches('/').to_owned(),
            scope: scope.to_owned(),
            key: key.to_owned(),
        }
    }

    fn parse(rest: &str) -> Option<SecretId> {
        // Scope and key names have no `#` or `/`; a URL may.
        let (url, secret) = rest.rsplit_once('#')?;
        let (scope, key) = secret.split_once('/')?;
        (!url.is_empty() && !scope.is_empty() && !key.is_empty())
            .then(|| SecretId::new(url, scope, key))
    }

    pub(super) fn short(&self) -> String {
        format!(
            "{} {}/{}",
            last_segment(&self.workspace_url),
            self.scope,
            self.key
        )
    }
}

impl fmt::Display for SecretId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}/{}", self.workspace_url, self.scope, self.key)
    }
}

/// A `[[databricks]]` table: a secret in a Databricks-backed scope.
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
        ConsumerId::Databricks(Box::new(self.secret_id()))
    }

    fn secret_id(&self) -> SecretId {
        SecretId::new(&self.workspace_url, &self.scope, &self.key)
    }
}

/// The table as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabricks {
    workspace_url: Option<Text>,
    workspace_id: Option<Text>,
    scope: Option<Text>,
    key: Option<Text>,
    format: Option<Text>,
}

const DBX_EXAMPLE: &str = "https://adb-1234567890123456.7.azuredatabricks.net";

fn parse_tables(
    value: Spanned<DeValue<'_>>,
    d: &mut Diagnostics<'_>,
) -> Vec<(Entry, Range<usize>)> {
    entries::<RawDatabricks>(value, SECTION.key, d, |raw, d| {
        table(raw, d).map(Entry::Databricks)
    })
}

fn table(raw: &Spanned<RawDatabricks>, d: &mut Diagnostics<'_>) -> Option<DatabricksSecret> {
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

fn summarize(entries: &[&Entry]) -> String {
    let n = entries.len();
    format!("{n} Databricks secret{}", if n == 1 { "" } else { "s" })
}

impl Table for DatabricksSecret {
    fn claims(&self) -> Vec<(ConsumerId, bool)> {
        vec![(self.id(), true)]
    }

    /// Databricks permissions are scope ACLs, not Azure RBAC: nothing to check ahead.
    fn permissions(&self) -> Vec<Permission> {
        Vec::new()
    }

    async fn consumers(
        &self,
        _ctx: &Ctx<'_>,
        _lacking: &Lacking,
        _missing: &mut Vec<MissingPermission>,
    ) -> Result<Vec<ConsumerId>, EngineError> {
        Ok(vec![self.id()])
    }

    fn covers(&self, id: &ConsumerId) -> bool {
        *id == self.id()
    }

    fn token(&self, _cloud: &Cloud) -> (Service, Result<String, String>) {
        (SERVICE, Ok(DATABRICKS_AUDIENCE.to_owned()))
    }

    async fn examine(&self, azure: &Azure, _plan: &Plan, token: Result<(), String>) -> Seen {
        Seen::Databricks(doctor::read(azure, self, token).await)
    }
}

/// A Databricks secret of the plan, with its workspace's URL.
#[derive(Clone, Debug)]
pub(crate) struct Target<'p> {
    secret: &'p DatabricksSecret,
    workspace: Url,
}

pub(super) fn resolve<'p>(
    plan: &'p Plan,
    id: &SecretId,
) -> Option<Result<Target<'p>, EngineError>> {
    plan.consumers
        .iter()
        .find_map(|e| match e {
            Entry::Databricks(d) if d.secret_id() == *id => Some(d),
            _ => None,
        })
        .map(|secret| {
            plan_url(plan, &secret.workspace_url).map(|workspace| Target { secret, workspace })
        })
}

impl Target<'_> {
    fn api(&self) -> &str {
        self.workspace.as_str().trim_end_matches('/')
    }
}

impl Kind for Target<'_> {
    fn read_permission(&self) -> (String, Action) {
        (
            self.secret.workspace_url.clone(),
            Action::control("Databricks secret scope READ/WRITE (scope ACL)"),
        )
    }

    async fn held(&self, _ctx: &Ctx<'_>) -> Result<Held, azure::Error> {
        Ok(Held::WriteOnly)
    }

    /// From the journal and `last_updated_timestamp`, as the module docs say.
    async fn observe(
        &self,
        ctx: &Ctx<'_>,
        id: &ConsumerId,
        basis: &Basis,
    ) -> Result<(Holding, Option<MissingPermission>), EngineError> {
        let azure = ctx.azure();
        let secret = self.secret;
        let (scope_scope, scope_action) = self.read_permission();
        let forbidden = |e: &azure::Error| {
            denied(e, &scope_action, &scope_scope).map(|m| {
                (
                    unknown(format!("keyflip may not read the scope: {e}")),
                    Some(m),
                )
            })
        };
        let scopes = match azure.databricks_scopes(&self.workspace).await {
            Ok(s) => s,
            Err(e) => return forbidden(&e).ok_or_else(|| e.into()),
        };
        let Some(scope) = scopes.iter().find(|s| s.name == secret.scope) else {
            return Err(EngineError::Plan {
                plan: ctx.plan.name.clone(),
                detail: format!(
                    "Databricks workspace {} has no secret scope '{}'; check the plan",
                    secret.workspace_url, secret.scope
                ),
            });
        };
        match &scope.backend {
            ScopeBackend::Databricks => {}
            ScopeBackend::AzureKeyVault { dns_name, .. } => {
                let vault = dns_name.as_deref().unwrap_or("its Key Vault");
                return Ok((
                    Holding::Unusable {
                        fix: format!(
                            "scope '{}' is backed by Key Vault ({vault}); Databricks reads that vault directly and refuses writes through its API, so list the vault's secret as a [[key_vault]] consumer and remove this [[databricks]] entry",
                            secret.scope
                        ),
                    },
                    None,
                ));
            }
            ScopeBackend::Other(kind) => {
                return Ok((
                    Holding::Unusable {
                        fix: format!(
                            "scope '{}' has backend {kind}, which keyflip cannot write",
                            secret.scope
                        ),
                    },
                    None,
                ));
            }
        }
        let Some((key, fingerprint, bound_at)) = ctx.last_bound(id)? else {
            return Ok((
                unknown(
                    "keyflip has not written it yet, and Databricks secret values cannot be read back",
                ),
                None,
            ));
        };
        let secrets = match azure
            .databricks_secrets(&self.workspace, &secret.scope)
            .await
        {
            Ok(s) => s,
            Err(e) => return forbidden(&e).ok_or_else(|| e.into()),
        };
        let Some(found) = secrets.iter().find(|s| s.key == secret.key) else {
            return Ok((Holding::Neither, None));
        };
        if let Some(updated) = found.last_updated
            && updated > bound_at + ctx.update_skew()
        {
            return Ok((
                unknown(format!(
                    "it was changed at {} by someone else, after keyflip wrote {key} to it at {}",
                    updated.to_rfc3339(),
                    bound_at.to_rfc3339()
                )),
                None,
            ));
        }
        Ok((of(fingerprint, basis.keys().await?), None))
    }

    async fn write(
        &self,
        ctx: &Ctx<'_>,
        _key: KeyName,
        value: &StorageKey,
    ) -> Result<(), azure::Error> {
        let secret = self.secret;
        let address = ctx.address().await?;
        let stored = value::format(secret.format, &address, value);
        ctx.azure()
            .databricks_put_secret(&self.workspace, &secret.scope, &secret.key, &stored)
            .await?;
        Ok(())
    }

    /// Confirmed when the secret's update time is at or after `bound_at`, when keyflip
    /// wrote it.
    async fn confirm_write(
        &self,
        ctx: &Ctx<'_>,
        bound_at: Option<DateTime<Utc>>,
    ) -> Option<Confirmation> {
        let secret = self.secret;
        let secrets = match ctx
            .azure()
            .databricks_secrets(&self.workspace, &secret.scope)
            .await
        {
            Ok(s) => s,
            Err(e) => return Some(Confirmation::Unreadable(e)),
        };
        let Some(found) = secrets.iter().find(|s| s.key == secret.key) else {
            return Some(Confirmation::Mismatch(Failure::new(
                FailureKind::WrongValue,
                format!("scope {} has no secret {}", secret.scope, secret.key),
            )));
        };
        Some(match (found.last_updated, bound_at) {
            (Some(updated), Some(bound)) if updated + ctx.update_skew() >= bound => {
                Confirmation::Confirmed
            }
            (updated, bound) => Confirmation::Mismatch(Failure::new(
                FailureKind::WrongValue,
                format!(
                    "its last update ({}) is not after keyflip wrote it ({}); Databricks values cannot be read back, so the write is not confirmed",
                    updated.map_or("unknown".into(), |t| t.to_rfc3339()),
                    bound.map_or("never".into(), |t| t.to_rfc3339()),
                ),
            )),
        })
    }

    fn read_call(&self) -> String {
        format!(
            "GET {}/api/2.0/secrets/list?scope={}",
            self.api(),
            self.secret.scope
        )
    }

    fn write_calls(&self, _key: KeyName) -> Vec<String> {
        vec![format!(
            "POST {}/api/2.0/secrets/put (scope {}, key {}, {})",
            self.api(),
            self.secret.scope,
            self.secret.key,
            self.secret.format.as_str()
        )]
    }
}
