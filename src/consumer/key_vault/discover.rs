//! Finding Key Vault secrets that hold an account's key: every vault of every
//! subscription in the scan, every enabled secret's current value compared by
//! fingerprint with the accounts' keys (a raw key, or the `AccountKey` of a connection
//! string). Secrets that back certificates (`managed`) and disabled ones are skipped;
//! a value read once is not read again while its version stays the current one.

use futures::future::join_all;

use super::{KeyVaultSecret, PROFILE, SECTION};
use crate::azure::inventory::VaultSummary;
use crate::consumer::{ConsumerId, Entry, SecretFormat};
use crate::discover::{
    Finding, Holds, READ_FAILED, Scan, Verdict, scan::VaultSecret, write::quote,
};

/// What the Key Vault kind found: per account (`None`: every account, for reads that
/// failed), in vault and secret order.
pub(crate) async fn discover(scan: &Scan<'_>) -> Vec<(Option<usize>, Finding)> {
    let (vaults, mut out) = scan
        .in_every_subscription(SECTION.key, "key vaults", |s| scan.vaults(s))
        .await;
    let found = join_all(vaults.iter().map(|v| vault(scan, v))).await;
    out.extend(found.into_iter().flatten());
    out
}

fn unreadable(subject: String, why: String) -> Finding {
    Finding::cannot(SECTION.key, subject, None, READ_FAILED, why)
}

async fn vault(scan: &Scan<'_>, vault: &VaultSummary) -> Vec<(Option<usize>, Finding)> {
    let name = vault.id.name();
    let items = match scan.secrets(&vault.url).await {
        Ok(items) => items,
        Err(e) => {
            return vec![(
                None,
                unreadable(
                    format!("secrets of key vault {name}"),
                    format!("cannot list them: {}", e.text),
                ),
            )];
        }
    };
    let candidates: Vec<_> = items.iter().filter(|i| i.enabled && !i.managed).collect();
    let values = join_all(
        candidates
            .iter()
            .map(|item| scan.secret_fingerprint(&vault.url, item)),
    )
    .await;
    let mut out = Vec::new();
    for (item, value) in candidates.into_iter().zip(values) {
        let subject = format!("{} {name}/{}", PROFILE.label, item.name);
        let (fingerprint, format) = match value {
            Ok(Some(found)) => found,
            Ok(None) => continue,
            Err(e) => {
                out.push((
                    None,
                    unreadable(subject, format!("cannot read its value: {e}")),
                ));
                continue;
            }
        };
        let Some((account, key)) = scan.owner(fingerprint) else {
            continue;
        };
        let vault_url = vault.url.as_str().trim_end_matches('/').to_owned();
        scan.found_vault_secret(VaultSecret {
            account,
            vault: vault.url.clone(),
            vault_id: vault.id.clone(),
            secret: item.name.clone(),
            subject: subject.clone(),
        });
        let entry = KeyVaultSecret {
            vault: vault_url.clone(),
            secret: item.name.clone(),
            format,
            content_type: item
                .content_type
                .clone()
                .unwrap_or_else(|| format.default_content_type().to_owned()),
            expires_after_days: None,
            tags: Default::default(),
            vault_id: Some(vault.id.clone()),
        };
        out.push((
            Some(account),
            Finding {
                section: SECTION.key,
                consumer: Some(ConsumerId::key_vault(&vault_url, &item.name)),
                subject,
                holds: Holds::key(key),
                how: format!(
                    "its current version holds {key} ({fingerprint}) as a {}",
                    match format {
                        SecretFormat::RawKey => "raw key",
                        SecretFormat::ConnectionString => "connection string",
                    }
                ),
                verdict: Verdict::Rotate,
                entry: Some(Entry::KeyVault(entry)),
            },
        ));
    }
    out
}

/// The `[[key_vault]]` tables for these findings, each with its comment.
pub(crate) fn render(findings: &[&Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        let Some(Entry::KeyVault(kv)) = &f.entry else {
            continue;
        };
        out.push_str(&format!("# {}: {}.\n", f.subject, f.how));
        out.push_str("[[key_vault]]\n");
        out.push_str(&format!("vault = {}\n", quote(&kv.vault)));
        out.push_str(&format!("secret = {}\n", quote(&kv.secret)));
        out.push_str(&format!("format = {}\n", quote(kv.format.as_str())));
        if kv.content_type != kv.format.default_content_type() {
            out.push_str(&format!("content_type = {}\n", quote(&kv.content_type)));
        }
        if let Some(id) = &kv.vault_id {
            out.push_str(&format!("vault_id = {}\n", quote(id.as_str())));
        }
        out.push('\n');
    }
    out
}
