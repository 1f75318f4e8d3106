//! Finding Databricks secrets that hold an account's key, in the workspaces the
//! configuration lists (`[discovery] databricks`): Databricks has no API to read a
//! secret's value back, so a secret is tied to an account in one of two ways, and the
//! plan says which:
//!
//! - keyflip wrote it (the journal's last successful bind of that secret, in a
//!   rotation of the account) and Databricks reports no change since: it holds the
//!   key keyflip wrote;
//! - its key names the account (`stdatasci001-key`): probable, and the plan's comment
//!   says to check it.
//!
//! A Key Vault-backed scope reads its vault directly: its secrets that are a Key Vault
//! secret found holding the key are covered by that secret.

use chrono::TimeDelta;
use futures::future::join_all;
use url::Url;

use super::{DatabricksSecret, PROFILE, SECTION};
use crate::azure::databricks::ScopeBackend;
use crate::consumer::{ConsumerId, Entry, SecretFormat};
use crate::discover::{Finding, Holds, Scan, Verdict, write::quote};

/// Clock skew allowed between keyflip's record of a write and Databricks' own time.
const SKEW: TimeDelta = TimeDelta::seconds(2);

pub(crate) async fn discover(scan: &Scan<'_>) -> Vec<(Option<usize>, Finding)> {
    join_all(scan.sources.databricks.iter().map(|w| workspace(scan, w)))
        .await
        .into_iter()
        .flatten()
        .collect()
}

fn finding(
    url: &Url,
    scope: &str,
    key: &str,
    holds: Holds,
    how: String,
    verdict: Verdict,
) -> Finding {
    let workspace_url = url.as_str().trim_end_matches('/').to_owned();
    let id = ConsumerId::databricks(&workspace_url, scope, key);
    let entry = verdict.listed().then(|| {
        Entry::Databricks(DatabricksSecret {
            workspace_url: workspace_url.clone(),
            workspace_id: None,
            scope: scope.to_owned(),
            key: key.to_owned(),
            format: SecretFormat::RawKey,
        })
    });
    Finding {
        section: SECTION.key,
        subject: format!("{} {}", PROFILE.label, id.short()),
        consumer: Some(id),
        holds,
        how,
        verdict,
        entry,
    }
}

async fn workspace(scan: &Scan<'_>, url: &Url) -> Vec<(Option<usize>, Finding)> {
    let scopes = match scan.call(scan.azure.databricks_scopes(url)).await {
        Ok(s) => s,
        Err(e) => {
            return vec![(
                None,
                Finding {
                    section: SECTION.key,
                    consumer: None,
                    subject: format!("Databricks workspace {url}"),
                    holds: Holds::Unknown,
                    how: "listed in [discovery] databricks".into(),
                    verdict: Verdict::Cannot {
                        why: format!("cannot list its secret scopes: {e}"),
                    },
                    entry: None,
                },
            )];
        }
    };
    let listed = join_all(scopes.iter().map(|s| async move {
        (
            s,
            scan.call(scan.azure.databricks_secrets(url, &s.name)).await,
        )
    }))
    .await;
    let mut out = Vec::new();
    for (scope, secrets) in listed {
        let secrets = match secrets {
            Ok(s) => s,
            Err(e) => {
                out.push((
                    None,
                    Finding {
                        section: SECTION.key,
                        consumer: None,
                        subject: format!("Databricks secret scope {} of {url}", scope.name),
                        holds: Holds::Unknown,
                        how: "a scope of a configured workspace".into(),
                        verdict: Verdict::Cannot {
                            why: format!("cannot list its secrets: {e}"),
                        },
                        entry: None,
                    },
                ));
                continue;
            }
        };
        for secret in secrets {
            match &scope.backend {
                ScopeBackend::Databricks => {
                    if let Some(found) = databricks_backed(scan, url, &scope.name, &secret) {
                        out.push(found);
                    }
                }
                ScopeBackend::AzureKeyVault { dns_name, .. } => {
                    let Some(vault) = dns_name.as_deref() else {
                        continue;
                    };
                    if let Some(kv) = scan.vault_secret(vault, &secret.key) {
                        out.push((
                            Some(kv.account),
                            finding(
                                url,
                                &scope.name,
                                &secret.key,
                                Holds::Unknown,
                                format!("a Key Vault-backed scope reading {vault}"),
                                Verdict::Covered { by: kv.subject },
                            ),
                        ));
                    }
                }
                ScopeBackend::Other(_) => {}
            }
        }
    }
    out
}

/// A secret of a Databricks-backed scope, when something ties it to an account.
fn databricks_backed(
    scan: &Scan<'_>,
    url: &Url,
    scope: &str,
    secret: &crate::azure::databricks::DatabricksSecret,
) -> Option<(Option<usize>, Finding)> {
    let id = ConsumerId::databricks(url.as_str().trim_end_matches('/'), scope, &secret.key);
    let wrote = scan
        .written
        .iter()
        .filter(|w| w.consumer.same_target_key() == id.same_target_key())
        .max_by_key(|w| w.at);
    if let Some(w) = wrote {
        let unchanged = secret.last_updated.is_none_or(|t| t <= w.at + SKEW);
        let still_a_key = scan.accounts[w.account].keys.contains(&w.fingerprint);
        if unchanged && still_a_key {
            return Some((
                Some(w.account),
                finding(
                    url,
                    scope,
                    &secret.key,
                    Holds::key(w.key),
                    format!(
                        "keyflip wrote {} ({}) to it at {} and it has not changed since",
                        w.key,
                        w.fingerprint,
                        w.at.format("%Y-%m-%d %H:%M UTC")
                    ),
                    Verdict::Rotate,
                ),
            ));
        }
        return Some((
            Some(w.account),
            finding(
                url,
                scope,
                &secret.key,
                Holds::Unknown,
                format!(
                    "keyflip wrote it at {}, but it changed since",
                    w.at.format("%Y-%m-%d %H:%M UTC")
                ),
                Verdict::Probable {
                    why: "Databricks cannot read secret values back, so keyflip cannot tell which key the newer value is; check it, and remove this table if it is no longer this account's key".into(),
                },
            ),
        ));
    }
    let key = secret.key.to_ascii_lowercase();
    let account = scan
        .accounts
        .iter()
        .position(|a| key.contains(&a.id.name().to_ascii_lowercase()))?;
    Some((
        Some(account),
        finding(
            url,
            scope,
            &secret.key,
            Holds::Unknown,
            format!(
                "its key names the account ({})",
                scan.accounts[account].id.name()
            ),
            Verdict::Probable {
                why: "Databricks cannot read secret values back, so keyflip cannot confirm it holds this account's key (or which format); check it, and remove this table if it does not".into(),
            },
        ),
    ))
}

/// The `[[databricks]]` tables for these findings.
pub(crate) fn render(findings: &[&Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        let Some(Entry::Databricks(s)) = &f.entry else {
            continue;
        };
        out.push_str(&format!("# {}: {}.\n", f.subject, f.how));
        if let Verdict::Probable { why } = &f.verdict {
            out.push_str(&format!("# Probable only: {why}.\n"));
        }
        out.push_str("[[databricks]]\n");
        out.push_str(&format!("workspace_url = {}\n", quote(&s.workspace_url)));
        out.push_str(&format!("scope = {}\n", quote(&s.scope)));
        out.push_str(&format!("key = {}\n", quote(&s.key)));
        out.push_str(&format!("format = {}\n\n", quote(s.format.as_str())));
    }
    out
}
