//! Finding Data Factory linked services that hold an account's key: every factory of
//! every subscription in the scan, every linked service of a storage type
//! ([`crate::azure::datafactory::STORAGE_TYPES`]), classified by the form of its
//! credential:
//!
//! - plain text: read and compared by fingerprint like any value;
//! - a `SecureString`: Data Factory returns it as `**********`, so it cannot be read.
//!   keyflip's journal ties it to an account when keyflip wrote it: while its etag is
//!   still that write's, it holds the key written. Otherwise its name (or an
//!   `AzureBlobFS` linked service's `url`) naming the account makes it a probable
//!   consumer, listed with the reason; one nothing ties to an account is reported to
//!   every account as a candidate keyflip cannot read;
//! - an `AzureKeyVaultSecret` reference (the recommended setup): covered by that Key
//!   Vault secret when it is one found holding a key, through the factory's
//!   `AzureKeyVault` linked service that names the vault.

use futures::future::join_all;

use super::{DataFactoryLinkedServices, Found, LinkedServiceId, PROFILE, SECTION, found};
use crate::azure::datafactory::{Credential, LinkedService, MASK};
use crate::consumer::{ConsumerId, Entry};
use crate::discover::{Finding, Holds, READ_FAILED, Scan, Verdict, write::quote};
use crate::resource_id::ResourceId;

pub(crate) async fn discover(scan: &Scan<'_>) -> Vec<(Option<usize>, Finding)> {
    let (factories, mut out) = scan
        .in_every_subscription(SECTION.key, "Data Factories", |s| scan.factories(s))
        .await;
    let found = join_all(factories.iter().map(|f| factory(scan, f))).await;
    out.extend(found.into_iter().flatten());
    out
}

fn cannot(subject: String, consumer: Option<ConsumerId>, why: String) -> Finding {
    Finding::cannot(SECTION.key, subject, consumer, READ_FAILED, why)
}

fn finding(
    factory: &ResourceId,
    name: &str,
    holds: Holds,
    how: String,
    verdict: Verdict,
) -> Finding {
    let id = LinkedServiceId::new(factory, name);
    let entry = verdict.listed().then(|| {
        Entry::DataFactory(DataFactoryLinkedServices {
            factory: factory.clone(),
            linked_services: vec![name.to_owned()],
        })
    });
    Finding {
        section: SECTION.key,
        subject: format!("{} {}", PROFILE.label, id.short()),
        consumer: Some(ConsumerId::DataFactory(Box::new(id))),
        holds,
        how,
        verdict,
        entry,
    }
}

async fn factory(scan: &Scan<'_>, factory: &ResourceId) -> Vec<(Option<usize>, Finding)> {
    let services = match scan.call(scan.azure.linked_services(factory)).await {
        Ok(s) => s,
        Err(e) => {
            return vec![(
                None,
                cannot(
                    format!("linked services of Data Factory {}", factory.name()),
                    None,
                    format!("cannot list them: {e}"),
                ),
            )];
        }
    };
    services
        .iter()
        .filter(|ls| ls.is_storage())
        .filter_map(|ls| linked_service(scan, factory, &services, ls))
        .collect()
}

fn linked_service(
    scan: &Scan<'_>,
    factory: &ResourceId,
    all: &[LinkedService],
    ls: &LinkedService,
) -> Option<(Option<usize>, Finding)> {
    let name = ls.name.as_str();
    match &ls.credential {
        Credential::KeyVault {
            store,
            secret,
            version,
        } => {
            // The vault is the `baseUrl` of the factory's AzureKeyVault linked service.
            let vault = all
                .iter()
                .find(|s| s.name.eq_ignore_ascii_case(store))
                .and_then(|s| s.text("baseUrl"))?;
            let kv = scan.vault_secret(vault, secret)?;
            let verdict = match version {
                Some(v) if !v.is_empty() => Verdict::Cannot {
                    why: format!(
                        "its AzureKeyVaultSecret reference is pinned to version {v} of {}, so it keeps the old key after a rotation: remove secretVersion so it reads the current version",
                        kv.subject
                    ),
                },
                _ => Verdict::Covered {
                    by: kv.subject.clone(),
                },
            };
            let mut f = finding(
                factory,
                name,
                Holds::Unknown,
                format!(
                    "an AzureKeyVaultSecret reference to {secret} through linked service {store} (the recommended setup)"
                ),
                verdict,
            );
            f.entry = None;
            Some((Some(kv.account), f))
        }
        Credential::Text(value) => {
            let key = crate::consumer::account_key(value)?;
            let fp = scan.fingerprint(&key);
            drop(key);
            let (account, key) = scan.owner(fp)?;
            let holds = Holds::key(key);
            Some((
                Some(account),
                match found(ls, scan.accounts[account].id.name(), None, |_| fp) {
                    Found::Key(_) => finding(
                        factory,
                        name,
                        holds,
                        format!(
                            "a {} linked service holding {key} ({fp}) in plain text",
                            ls.service_type
                        ),
                        Verdict::Rotate,
                    ),
                    Found::Unknown(why) | Found::Unusable(why) => finding(
                        factory,
                        name,
                        holds,
                        "it holds the key".into(),
                        Verdict::Cannot { why },
                    ),
                },
            ))
        }
        Credential::SecureString => secure_string(scan, factory, ls),
        Credential::Other(_) => None,
    }
}

/// A SecureString: tied by keyflip's own write, else by name, else a candidate for
/// every account.
fn secure_string(
    scan: &Scan<'_>,
    factory: &ResourceId,
    ls: &LinkedService,
) -> Option<(Option<usize>, Finding)> {
    let name = ls.name.as_str();
    let id = ConsumerId::DataFactory(Box::new(LinkedServiceId::new(factory, name)));
    let unreadable = format!(
        "Data Factory never returns a SecureString's value (it reads back as {MASK}), so keyflip cannot read which key it holds"
    );
    let usable = |account: usize| -> Option<String> {
        match found(ls, scan.accounts[account].id.name(), None, |_| {
            scan.accounts[account].keys[0]
        }) {
            Found::Unusable(why) => Some(why),
            _ => None,
        }
    };
    let wrote = scan
        .written
        .iter()
        .filter(|w| w.consumer.same_target_key() == id.same_target_key())
        .max_by_key(|w| w.at);
    if let Some(w) = wrote {
        if let Some(why) = usable(w.account) {
            let f = finding(
                factory,
                name,
                Holds::Unknown,
                unreadable,
                Verdict::Cannot { why },
            );
            return Some((Some(w.account), f));
        }
        let when = w.at.format("%Y-%m-%d %H:%M UTC");
        let unchanged = w.mark.is_some() && w.mark == ls.etag;
        let f = if unchanged {
            let holds = Holds::of(w.fingerprint, scan.accounts[w.account].keys);
            finding(
                factory,
                name,
                holds,
                format!(
                    "keyflip wrote {} ({}) to it at {when} and its etag is still that write's",
                    w.key, w.fingerprint
                ),
                Verdict::Rotate,
            )
        } else {
            finding(
                factory,
                name,
                Holds::Unknown,
                format!("keyflip wrote it at {when}, but its etag changed since"),
                Verdict::Probable {
                    why: format!(
                        "{unreadable}; check it, and remove it from this table if it no longer holds this account's key"
                    ),
                },
            )
        };
        return Some((Some(w.account), f));
    }
    let lower = name.to_ascii_lowercase();
    let url = ls.text("url").unwrap_or_default().to_ascii_lowercase();
    let named = scan.accounts.iter().position(|a| {
        let n = a.id.name().to_ascii_lowercase();
        lower.contains(&n) || url.contains(&format!("//{n}."))
    });
    let Some(account) = named else {
        return Some((
            None,
            cannot(
                format!(
                    "{} {}",
                    PROFILE.label,
                    LinkedServiceId::new(factory, name).short()
                ),
                Some(id),
                format!(
                    "a {} linked service with a SecureString credential: {unreadable}, and nothing ties it to an account (keyflip never wrote it; its name does not name one). If it holds this account's key, list it under [[data_factory]], or better move it to Key Vault",
                    ls.service_type
                ),
            ),
        ));
    };
    if let Some(why) = usable(account) {
        let f = finding(
            factory,
            name,
            Holds::Unknown,
            unreadable,
            Verdict::Cannot { why },
        );
        return Some((Some(account), f));
    }
    Some((
        Some(account),
        finding(
            factory,
            name,
            Holds::Unknown,
            format!(
                "a {} linked service with a SecureString credential whose {} names the account ({})",
                ls.service_type,
                if lower.contains(&scan.accounts[account].id.name().to_ascii_lowercase()) {
                    "name"
                } else {
                    "url"
                },
                scan.accounts[account].id.name()
            ),
            Verdict::Probable {
                why: format!(
                    "{unreadable}; check it, and remove it from this table if it does not hold this account's key"
                ),
            },
        ),
    ))
}

/// The `[[data_factory]]` tables for these findings: one per factory.
pub(crate) fn render(findings: &[&Finding]) -> String {
    let mut tables: Vec<(ResourceId, Vec<(&Finding, String)>)> = Vec::new();
    for f in findings {
        let Some(Entry::DataFactory(t)) = &f.entry else {
            continue;
        };
        let at = match tables
            .iter()
            .position(|(id, _)| id.as_str().eq_ignore_ascii_case(t.factory.as_str()))
        {
            Some(i) => i,
            None => {
                tables.push((t.factory.clone(), Vec::new()));
                tables.len() - 1
            }
        };
        for n in &t.linked_services {
            tables[at].1.push((f, n.clone()));
        }
    }
    let mut out = String::new();
    for (factory, lines) in tables {
        for (f, _) in &lines {
            out.push_str(&format!("# {}: {}.\n", f.subject, f.how));
            if let Verdict::Probable { why } = &f.verdict {
                out.push_str(&format!("# Probable only: {why}.\n"));
            }
        }
        out.push_str("[[data_factory]]\n");
        out.push_str(&format!("factory = {}\n", quote(factory.as_str())));
        let names: Vec<String> = lines.iter().map(|(_, n)| quote(n)).collect();
        out.push_str(&format!("linked_services = [{}]\n\n", names.join(", ")));
    }
    out
}
