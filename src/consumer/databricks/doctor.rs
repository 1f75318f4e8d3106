//! What `doctor` reads about a Databricks secret (its scope, and when the secret last
//! changed) and the row it makes of it: the scope must exist and be Databricks-backed.

use chrono::{DateTime, Utc};
use serde::Serialize;
use url::Url;

use super::DatabricksSecret;
use crate::azure::databricks::{DatabricksSecret as DbxSecret, ScopeBackend, SecretScope};
use crate::azure::{Azure, Error};
use crate::consumer::{Facts, resource_name};
use crate::doctor::assess::{Ctx, Verdict, not_done};
use crate::doctor::collect::Got;
use crate::doctor::report::{Check, Holding, Holds, Status};

/// What `doctor` read about one Databricks secret.
#[derive(Debug)]
pub struct DatabricksSeen {
    pub plan: DatabricksSecret,
    pub scope: Got<Option<SecretScope>>,
    pub secrets: Got<Vec<DbxSecret>>,
}

/// The row's facts.
#[derive(Clone, Debug, Serialize)]
pub struct SecretFacts {
    pub workspace_url: String,
    pub scope: String,
    pub key: String,
    /// `databricks`, `azure_keyvault`, another backend, or `null` (scope not found
    /// or not listed).
    pub backend: Option<String>,
    pub secret_exists: Option<bool>,
    pub last_updated: Option<DateTime<Utc>>,
}

pub(super) async fn read(
    azure: &Azure,
    d: &DatabricksSecret,
    dbx: Result<(), String>,
) -> DatabricksSeen {
    let seen = |scope, secrets| DatabricksSeen {
        plan: d.clone(),
        scope,
        secrets,
    };
    if let Err(why) = dbx {
        return seen(Got::NotTried(why.clone()), Got::NotTried(why));
    }
    let url = match Url::parse(&d.workspace_url) {
        Ok(url) => url,
        Err(e) => {
            let e = Error::Invalid(format!(
                "'{}' is not a Databricks workspace URL: {e}",
                d.workspace_url
            ));
            return seen(Got::Failed(e), Got::NotTried("see the scope".into()));
        }
    };
    let scope = match azure.databricks_scopes(&url).await {
        Ok(scopes) => scopes.into_iter().find(|s| s.name == d.scope),
        Err(e) => {
            return seen(
                Got::Failed(e),
                Got::NotTried("the scopes could not be listed".into()),
            );
        }
    };
    let secrets = match &scope {
        Some(SecretScope {
            backend: ScopeBackend::Databricks,
            ..
        }) => Got::from(azure.databricks_secrets(&url, &d.scope).await),
        Some(_) => Got::NotTried("the scope is not Databricks-backed".into()),
        None => Got::NotTried("the scope does not exist".into()),
    };
    seen(Got::Done(scope), secrets)
}

impl DatabricksSeen {
    /// The scope must exist and be Databricks-backed; the key is always unknown.
    pub(crate) fn checks(&self, ctx: &Ctx<'_>, holdings: &mut Vec<Holding>) -> Vec<Check> {
        vec![self.check(ctx, holdings)]
    }

    fn check(&self, ctx: &Ctx<'_>, holdings: &mut Vec<Holding>) -> Check {
        let p = &self.plan;
        holdings.push(Holding {
            consumer: p.id().to_string(),
            holds: Holds::Unknown,
        });
        let workspace = resource_name(p.workspace_id.as_ref(), &p.workspace_url);
        let subject = format!("scope {} in {workspace}", p.scope);
        let scope = self.scope.done().and_then(Option::as_ref);
        let secret = self
            .secrets
            .done()
            .and_then(|list| list.iter().find(|s| s.key == p.key));
        let facts = Facts::Databricks(SecretFacts {
            workspace_url: p.workspace_url.clone(),
            scope: p.scope.clone(),
            key: p.key.clone(),
            backend: scope.map(|s| match &s.backend {
                ScopeBackend::Databricks => "databricks".to_owned(),
                ScopeBackend::AzureKeyVault { .. } => "azure_keyvault".to_owned(),
                ScopeBackend::Other(other) => other.to_ascii_lowercase(),
            }),
            secret_exists: self.secrets.done().map(|_| secret.is_some()),
            last_updated: secret.and_then(|s| s.last_updated),
        });
        if let Some(v) = not_done(&self.scope, &ctx.missing) {
            return v.check(subject, facts);
        }
        let verdict = match scope.map(|s| &s.backend) {
            None => Verdict::problem(
                Status::Error,
                format!("the workspace has no secret scope {}", p.scope),
                Some(format!(
                    "create it as a Databricks-backed scope (databricks secrets create-scope {}) and give keyflip's service principal WRITE on it.",
                    p.scope
                )),
            ),
            Some(ScopeBackend::AzureKeyVault { dns_name, .. }) => Verdict::problem(
                Status::Error,
                format!(
                    "the scope is Key Vault-backed ({}): Databricks reads that vault directly and refuses writes",
                    dns_name.as_deref().unwrap_or("vault unknown")
                ),
                Some(format!(
                    "remove this [[databricks]] entry from {} and list the vault's secret under [[key_vault]] instead.",
                    ctx.file()
                )),
            ),
            Some(ScopeBackend::Other(backend)) => Verdict::problem(
                Status::Error,
                format!(
                    "the scope's backend is {backend}; keyflip writes only Databricks-backed scopes"
                ),
                Some(format!(
                    "remove this [[databricks]] entry from {}.",
                    ctx.file()
                )),
            ),
            Some(ScopeBackend::Databricks) => match (&self.secrets, secret) {
                (Got::Done(_), Some(s)) => Verdict::ok(format!(
                    "Databricks-backed; secret {} last updated {}; its value cannot be read back, so its key is unknown",
                    p.key,
                    s.last_updated.map_or("at an unknown time".to_owned(), |t| t
                        .format("%Y-%m-%d %H:%M UTC")
                        .to_string())
                )),
                (Got::Done(_), None) => Verdict::problem(
                    Status::Warning,
                    format!("Databricks-backed, but it has no secret {} yet", p.key),
                    Some(format!(
                        "the first rotation writes it; if something reads it already, check the key name in {}.",
                        ctx.file()
                    )),
                ),
                (other, _) => {
                    not_done(other, &ctx.missing).unwrap_or_else(|| Verdict::ok("listed"))
                }
            },
        };
        verdict.check(subject, facts)
    }
}

impl SecretFacts {
    /// Nothing to list under the row: the finding says it all.
    pub(crate) fn details(&self) -> Vec<String> {
        Vec::new()
    }
}
