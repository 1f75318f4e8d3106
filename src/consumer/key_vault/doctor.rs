//! What `doctor` reads about a Key Vault secret (every version, the newest enabled
//! ones fingerprinted) and the row it makes of it: which key each version holds,
//! newest first. The current version decides; older enabled ones that hold a still
//! valid key only warn.

use futures::StreamExt as _;
use serde::Serialize;

use super::KeyVaultSecret;
use crate::azure::Azure;
use crate::azure::keyvault::SecretVersion;
use crate::consumer::{Facts, account_key, resource_name};
use crate::doctor::assess::{Ctx, Verdict, not_done};
use crate::doctor::collect::{CONCURRENCY, Got, VERSIONS_READ};
use crate::doctor::render::{fp, time};
use crate::doctor::report::{Check, Holding, Holds, Status};
use crate::secret::Fingerprint;

/// What `doctor` read about one Key Vault secret.
#[derive(Debug)]
pub struct SecretSeen {
    pub plan: KeyVaultSecret,
    /// Every version, newest first, each with the fingerprint of the account key its
    /// value holds (`None`: the value holds no account key).
    pub versions: Got<Vec<(SecretVersion, Got<Option<Fingerprint>>)>>,
}

/// The row's facts.
#[derive(Clone, Debug, Serialize)]
pub struct SecretFacts {
    pub vault: String,
    pub secret: String,
    pub format: &'static str,
    /// Newest first. Empty when the versions could not be listed.
    pub versions: Vec<VersionFacts>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VersionFacts {
    pub version: String,
    pub enabled: bool,
    pub created: Option<chrono::DateTime<chrono::Utc>>,
    pub holds: Holds,
    pub fingerprint: Option<Fingerprint>,
}

pub(super) async fn read(
    azure: &Azure,
    kv: &KeyVaultSecret,
    vault: Result<(), String>,
) -> SecretSeen {
    let seen = |versions| SecretSeen {
        plan: kv.clone(),
        versions,
    };
    if let Err(why) = vault {
        return seen(Got::NotTried(why));
    }
    let url = match kv.url() {
        Ok(url) => url,
        Err(e) => return seen(Got::Failed(e)),
    };
    let mut versions = match azure.secret_versions(&url, &kv.secret).await {
        Ok(v) => v,
        Err(e) => return seen(Got::Failed(e)),
    };
    versions.reverse(); // newest first
    let mut enabled_read = 0;
    let plan = versions.into_iter().map(|v| {
        let read = v.enabled && enabled_read < VERSIONS_READ;
        enabled_read += usize::from(read);
        (v, read)
    });
    let url = &url;
    let out = futures::stream::iter(plan.map(|(version, read)| async move {
        let key = if !version.enabled {
            Got::NotTried("disabled: its value cannot be read".into())
        } else if !read {
            Got::NotTried(format!(
                "older than the {VERSIONS_READ} newest enabled versions, not read"
            ))
        } else {
            match azure
                .get_secret(url, &kv.secret, Some(&version.version))
                .await
            {
                Ok(secret) => Got::Done(account_key(&secret.value).map(|k| azure.fingerprint(&k))),
                Err(e) => Got::Failed(e),
            }
        };
        (version, key)
    }))
    .buffered(CONCURRENCY)
    .collect::<Vec<_>>()
    .await;
    seen(Got::Done(out))
}

impl SecretSeen {
    /// Which key each version holds, newest first.
    pub(crate) fn checks(&self, ctx: &Ctx<'_>, holdings: &mut Vec<Holding>) -> Vec<Check> {
        vec![self.check(ctx, holdings)]
    }

    fn check(&self, ctx: &Ctx<'_>, holdings: &mut Vec<Holding>) -> Check {
        let kv = &self.plan;
        let vault = resource_name(kv.vault_id.as_ref(), &kv.vault);
        let subject = format!("{vault}/{}", kv.secret);
        let versions: Vec<VersionFacts> = match &self.versions {
            Got::Done(v) => v
                .iter()
                .map(|(version, key)| {
                    let fingerprint = key.done().copied().flatten();
                    let holds = match key {
                        Got::Done(None) => Holds::Neither,
                        _ => ctx.holds(fingerprint),
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
        let facts = Facts::KeyVaultSecret(SecretFacts {
            vault: kv.vault.clone(),
            secret: kv.secret.clone(),
            format: kv.format.as_str(),
            versions: versions.clone(),
        });
        if let Some(v) = not_done(&self.versions, &ctx.missing) {
            return v.check(subject, facts);
        }
        let Some(current) = current else {
            return Verdict::problem(
                Status::Warning,
                "the secret has no versions",
                Some(format!("the first rotation writes one; if consumers read it already, check the name in {}.", ctx.file())),
            )
            .check(subject, facts);
        };
        let count = versions.len();
        if ctx.keys.is_none() {
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
        let current_read = match &self.versions {
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
                if let Some(v) = not_done(read, &ctx.missing) {
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
}

impl SecretFacts {
    /// One line per version.
    pub(crate) fn details(&self) -> Vec<String> {
        self.versions
            .iter()
            .map(|v| {
                format!(
                    "{}  {:<8}  {:<7}  {:<15}  created {}",
                    v.version,
                    if v.enabled { "enabled" } else { "disabled" },
                    v.holds.as_str(),
                    fp(v.fingerprint.as_ref()),
                    time(v.created)
                )
            })
            .collect()
    }
}
