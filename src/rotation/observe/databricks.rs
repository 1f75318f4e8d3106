//! What a Databricks secret holds. Its value cannot be read back outside a cluster,
//! so the answer comes from the journal (the key keyflip last bound it to), checked
//! against the secret's `last_updated_timestamp`: a write after keyflip's makes it
//! unknown. A scope backed by Key Vault is not written through Databricks at all, and
//! is refused with the fix.

use super::super::engine::EngineError;
use super::super::step::Ctx;
use super::{denied, of, unknown};
use crate::azure::databricks::ScopeBackend;
use crate::azure::{self, roles::Action};
use crate::plan;
use crate::rotation::machine::{ConsumerRef, Holding, MissingPermission};
use crate::secret::Fingerprint;

pub(super) async fn holding(
    ctx: &Ctx<'_>,
    consumer: &ConsumerRef,
    secret: &plan::DatabricksSecret,
    keys: [Fingerprint; 2],
) -> Result<(Holding, Option<MissingPermission>), EngineError> {
    let azure = &ctx.inner.azure;
    let workspace = url::Url::parse(&secret.workspace_url).map_err(|e| EngineError::Plan {
        plan: ctx.plan.name.clone(),
        detail: format!("'{}' is not a URL: {e}", secret.workspace_url),
    })?;
    let scope_action = Action::control("Databricks secret scope READ/WRITE (scope ACL)");
    let forbidden = |e: &azure::Error| {
        denied(e, &scope_action, &secret.workspace_url).map(|m| {
            (
                unknown(format!("keyflip may not read the scope: {e}")),
                Some(m),
            )
        })
    };
    let scopes = match azure.databricks_scopes(&workspace).await {
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
    let last = ctx.inner.journal().last_bound(&consumer.id)?;
    let Some((key, fingerprint, bound_at)) = last else {
        return Ok((
            unknown(
                "keyflip has not written it yet, and Databricks secret values cannot be read back",
            ),
            None,
        ));
    };
    let secrets = match azure.databricks_secrets(&workspace, &secret.scope).await {
        Ok(s) => s,
        Err(e) => return forbidden(&e).ok_or_else(|| e.into()),
    };
    let Some(found) = secrets.iter().find(|s| s.key == secret.key) else {
        return Ok((Holding::Neither, None));
    };
    let skew = chrono::TimeDelta::from_std(ctx.inner.options.databricks_skew).unwrap_or_default();
    if let Some(updated) = found.last_updated
        && updated > bound_at + skew
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
    Ok((of(fingerprint, keys), None))
}
