//! Secret rows: a Key Vault secret (which key each version holds, newest first; the
//! current version decides, older enabled ones holding a still valid key only warn)
//! and a Databricks secret (its scope must exist and be Databricks-backed).

use super::Ctx;
use super::verdict::{Verdict, not_done};
use crate::azure::databricks::ScopeBackend;
use crate::doctor::collect::{DatabricksSeen, Got, SecretSeen};
use crate::doctor::report::{Check, Facts, Holding, Holds, Status, VersionFacts};

impl Ctx<'_> {
    /// A Key Vault secret: which key each version holds, newest first.
    pub(super) fn secret(&self, s: &SecretSeen, holdings: &mut Vec<Holding>) -> Check {
        let kv = &s.plan;
        let vault = kv
            .vault_id
            .as_ref()
            .map(|id| id.name().to_owned())
            .unwrap_or_else(|| url_name(&kv.vault));
        let subject = format!("{vault}/{}", kv.secret);
        let versions: Vec<VersionFacts> = match &s.versions {
            Got::Done(v) => v
                .iter()
                .map(|(version, key)| {
                    let fingerprint = key.done().copied().flatten();
                    let holds = match key {
                        Got::Done(None) => Holds::Neither,
                        _ => self.holds(fingerprint),
                    };
                    VersionFacts {
                        version: version.version.clone(),
                        enabled: version.enabled,
                        created: version.created,
                        holds,
                        fingerprint,
                    }
                })
                .collect(),
            _ => Vec::new(),
        };
        let current = versions.first();
        holdings.push(Holding {
            consumer: kv.id().to_string(),
            holds: current.map_or(Holds::Unknown, |v| v.holds),
        });
        let facts = Facts::KeyVaultSecret {
            vault: kv.vault.clone(),
            secret: kv.secret.clone(),
            format: kv.format.as_str(),
            versions: versions.clone(),
        };
        if let Some(v) = not_done(&s.versions, &self.missing) {
            return v.check(subject, facts);
        }
        let Some(current) = current else {
            return Verdict::problem(
                Status::Warning,
                "the secret has no versions",
                Some(format!("the first rotation writes one; if consumers read it already, check the name in {}.", self.file())),
            )
            .check(subject, facts);
        };
        let count = versions.len();
        if self.keys.is_none() {
            return Verdict::problem(
                Status::Skipped,
                format!(
                    "{count} version{} read; which key each holds is not known: the account's keys could not be read",
                    if count == 1 { "" } else { "s" }
                ),
                None,
            )
            .check(subject, facts);
        }
        let mut verdict = Verdict::described(format!(
            "current version holds {} ({count} version{})",
            current.holds.as_str(),
            if count == 1 { "" } else { "s" }
        ));
        let current_read = match &s.versions {
            Got::Done(v) => v.first().map(|(_, key)| key),
            _ => None,
        };
        match (current.enabled, current.holds, current_read) {
            (false, _, _) => verdict.add(
                Status::Error,
                "the current version is disabled, so everyone reading the secret gets an error",
                Some(format!("write a version holding the key consumers use (az keyvault secret set --vault-name {vault} --name {}).", kv.secret)),
            ),
            (true, Holds::Neither, _) => verdict.add(
                Status::Error,
                "the current version holds neither of the account's keys",
                Some(format!("write a version holding the key the other consumers use (az keyvault secret set --vault-name {vault} --name {}).", kv.secret)),
            ),
            (true, Holds::Unknown, Some(read)) => {
                if let Some(v) = not_done(read, &self.missing) {
                    verdict.add(v.status, v.finding.join("; "), v.fix.into_iter().next());
                }
            }
            _ => {}
        }
        // Older versions that still hold a working key other than the current one:
        // anything that reads them by version id keeps access, and breaks when that key
        // is regenerated.
        let stale: Vec<&VersionFacts> = versions[1..]
            .iter()
            .filter(|v| v.enabled && v.holds.key().is_some() && v.holds != current.holds)
            .collect();
        if !stale.is_empty() {
            let mut keys: Vec<&str> = stale.iter().map(|v| v.holds.as_str()).collect();
            keys.sort_unstable();
            keys.dedup();
            verdict.add(
                Status::Warning,
                format!(
                    "{} older enabled version{} still hold{} {}, which still works",
                    stale.len(),
                    if stale.len() == 1 { "" } else { "s" },
                    if stale.len() == 1 { "s" } else { "" },
                    keys.join(" and ")
                ),
                Some(format!(
                    "anything reading them by version id breaks when that key is regenerated; disable them if nothing needs them: {}",
                    stale
                        .iter()
                        .map(|v| format!(
                            "az keyvault secret set-attributes --vault-name {vault} --name {} --version {} --enabled false",
                            kv.secret, v.version
                        ))
                        .collect::<Vec<_>>()
                        .join("; ")
                )),
            );
        }
        verdict.check(subject, facts)
    }

    /// A Databricks secret: its scope must exist and be Databricks-backed.
    pub(super) fn databricks(&self, d: &DatabricksSeen, holdings: &mut Vec<Holding>) -> Check {
        let p = &d.plan;
        holdings.push(Holding {
            consumer: p.id().to_string(),
            holds: Holds::Unknown,
        });
        let workspace = p
            .workspace_id
            .as_ref()
            .map(|id| id.name().to_owned())
            .unwrap_or_else(|| url_name(&p.workspace_url));
        let subject = format!("scope {} in {workspace}", p.scope);
        let scope = d.scope.done().and_then(Option::as_ref);
        let secret = d
            .secrets
            .done()
            .and_then(|list| list.iter().find(|s| s.key == p.key));
        let facts = Facts::Databricks {
            workspace_url: p.workspace_url.clone(),
            scope: p.scope.clone(),
            key: p.key.clone(),
            backend: scope.map(|s| match &s.backend {
                ScopeBackend::Databricks => "databricks".to_owned(),
                ScopeBackend::AzureKeyVault { .. } => "azure_keyvault".to_owned(),
                ScopeBackend::Other(other) => other.to_ascii_lowercase(),
            }),
            secret_exists: d.secrets.done().map(|_| secret.is_some()),
            last_updated: secret.and_then(|s| s.last_updated),
        };
        if let Some(v) = not_done(&d.scope, &self.missing) {
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
                    self.file()
                )),
            ),
            Some(ScopeBackend::Other(backend)) => Verdict::problem(
                Status::Error,
                format!(
                    "the scope's backend is {backend}; keyflip writes only Databricks-backed scopes"
                ),
                Some(format!(
                    "remove this [[databricks]] entry from {}.",
                    self.file()
                )),
            ),
            Some(ScopeBackend::Databricks) => match (&d.secrets, secret) {
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
                        self.file()
                    )),
                ),
                (other, _) => {
                    not_done(other, &self.missing).unwrap_or_else(|| Verdict::ok("listed"))
                }
            },
        };
        verdict.check(subject, facts)
    }
}

/// A short name for a vault or workspace URL: the last path segment of a path-style
/// URL (`https://host/keyvault/kv-datasci`), else the host's first label
/// (`https://kv-datasci.vault.azure.net` → `kv-datasci`).
fn url_name(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => match u
            .path_segments()
            .and_then(|mut s| s.rfind(|p| !p.is_empty()))
        {
            Some(last) => last.to_owned(),
            None => u
                .host_str()
                .and_then(|h| h.split('.').next())
                .unwrap_or(url)
                .to_owned(),
        },
        Err(_) => url.to_owned(),
    }
}
