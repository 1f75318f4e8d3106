//! Finding App Service and Functions settings that hold an account's key: every site
//! of every subscription in the scan and each of its deployment slots, every app
//! setting and connection string read (`config/{appsettings|connectionstrings}/list`)
//! and compared by fingerprint with the accounts' keys (a raw key, or the `AccountKey`
//! of a connection string naming the account). Values are dropped once fingerprinted.
//!
//! A setting that is a Key Vault reference (`@Microsoft.KeyVault(...)`) to a secret
//! found holding a key is covered by that secret; App Service caches referenced values
//! for up to 24 hours ([`super::REFERENCE_CACHE`]) unless the app restarts, so a plan
//! whose rotation restarts no setting of that site or slot needs a grace that long
//! ([`grace`]). A reference pinned to a version never follows a new one: it cannot be
//! rotated. An `[[app_service]]` table lists settings of the production site and,
//! with `slots`, the same settings of those slots: a slot setting outside that shape
//! is reported as not rotatable, so the plan written lists exactly what it can rotate.

use futures::future::join_all;

use super::{AppServiceSettings, PROFILE, SECTION, SettingId, Stored, stored};
use crate::azure::web::{Collection, KeyVaultReference, SiteRef};
use crate::consumer::{ConsumerId, Entry, account_key};
use crate::discover::{Finding, Holds, READ_FAILED, Scan, Verdict, write::quote};
use crate::resource_id::ResourceId;
use crate::secret::{Fingerprint, StorageKey};

pub(crate) async fn discover(scan: &Scan<'_>) -> Vec<(Option<usize>, Finding)> {
    let (sites, mut out) = scan
        .in_every_subscription(SECTION.key, "App Service sites", |s| scan.sites(s))
        .await;
    let found = join_all(sites.iter().map(|s| site(scan, s))).await;
    out.extend(found.into_iter().flatten());
    out
}

fn cannot(subject: String, consumer: Option<ConsumerId>, why: String) -> Finding {
    Finding::cannot(SECTION.key, subject, consumer, READ_FAILED, why)
}

/// A setting found holding an account's key.
struct Holding {
    account: usize,
    place: SiteRef,
    collection: Collection,
    name: String,
    holds: Holds,
    how: String,
}

async fn site(scan: &Scan<'_>, site: &ResourceId) -> Vec<(Option<usize>, Finding)> {
    let mut out = Vec::new();
    let slots: Vec<String> = match scan.slots(site).await {
        Ok(slots) => slots.to_vec(),
        Err(e) => {
            out.push((
                None,
                cannot(
                    format!("deployment slots of site {}", site.name()),
                    None,
                    format!("cannot list them: {}", e.text),
                ),
            ));
            Vec::new()
        }
    };
    let places: Vec<SiteRef> = std::iter::once(None)
        .chain(slots.iter().map(|s| Some(s.as_str())))
        .map(|slot| SiteRef::new(site, slot))
        .collect();
    let reads = join_all(places.iter().flat_map(|place| {
        [Collection::AppSettings, Collection::ConnectionStrings]
            .into_iter()
            .map(move |c| async move { (place, c, scan.settings(place, c).await) })
    }))
    .await;
    let mut holdings: Vec<Holding> = Vec::new();
    for (place, collection, settings) in reads {
        let settings = match settings {
            Ok(s) => s,
            Err(e) => {
                out.push((
                    None,
                    cannot(
                        format!("{}s of {}", collection.noun(), place.short()),
                        None,
                        format!("cannot read them: {}", e.text),
                    ),
                ));
                continue;
            }
        };
        for (name, setting) in settings.iter() {
            let id = ConsumerId::AppService(Box::new(SettingId::new(place, collection, name)));
            let subject = format!("{} {}", PROFILE.label, id.short());
            let (fp, named, connection_string) = match setting {
                SeenSetting::Reference(reference) => {
                    if let Some(found) = referenced(scan, reference, id, subject) {
                        out.push(found);
                    }
                    continue;
                }
                SeenSetting::Key {
                    fingerprint,
                    named,
                    connection_string,
                } => (*fingerprint, named, *connection_string),
            };
            // The account: the one whose key it holds, else the one its connection
            // string names (a stale key: broken already, still this account's).
            let (account, holds) = match scan.owner(fp) {
                Some((i, k)) => (i, Holds::key(k)),
                None => match named.as_ref().and_then(|n| {
                    scan.accounts
                        .iter()
                        .position(|a| a.id.name().eq_ignore_ascii_case(n))
                }) {
                    Some(i) => (i, Holds::Neither),
                    None => continue,
                },
            };
            // A connection string naming another account with this key in it.
            if connection_string
                && named
                    .as_ref()
                    .is_some_and(|n| !n.eq_ignore_ascii_case(scan.accounts[account].id.name()))
            {
                continue;
            }
            holdings.push(Holding {
                account,
                place: place.clone(),
                collection,
                name: name.clone(),
                holds,
                how: format!(
                    "its {} holds {holds} ({fp}) {}",
                    collection.noun(),
                    if connection_string {
                        "in a connection string"
                    } else {
                        "as a raw key"
                    }
                ),
            });
        }
    }
    out.extend(tables(site, &slots, holdings));
    out
}

/// A setting as discovery keeps it (in the [`crate::discover::DiscoveryCache`]):
/// what it refers to or the fingerprint of the key it holds, never its value.
#[derive(Clone, Debug)]
pub(crate) enum SeenSetting {
    /// A Key Vault reference: covered by that secret, if it holds a key.
    Reference(KeyVaultReference),
    /// An account key, raw or in a connection string.
    Key {
        fingerprint: Fingerprint,
        /// The `AccountName` its connection string names.
        named: Option<String>,
        connection_string: bool,
    },
}

impl SeenSetting {
    /// What `value` is to discovery; `None` when it holds no account key.
    pub(crate) fn of(scan: &Scan<'_>, value: &StorageKey) -> Option<SeenSetting> {
        if let Some(reference) = KeyVaultReference::parse(value.expose()) {
            return Some(SeenSetting::Reference(reference));
        }
        let key = account_key(value)?;
        let fingerprint = scan.fingerprint(&key);
        drop(key);
        // As `stored` tells a connection string from a raw key.
        let named = account_named(value.expose());
        let connection_string = match stored(value, named.as_deref().unwrap_or_default()).0 {
            Stored::Key { connection_string } => connection_string,
            _ => true,
        };
        Some(SeenSetting::Key {
            fingerprint,
            named,
            connection_string,
        })
    }
}

/// The `AccountName` a connection string names.
fn account_named(text: &str) -> Option<String> {
    text.split(';').find_map(|part| {
        let (k, v) = part.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("AccountName")
            .then(|| v.trim().to_owned())
    })
}

/// A Key Vault reference to a secret found holding an account's key: covered by it,
/// unless it is pinned to a version.
fn referenced(
    scan: &Scan<'_>,
    reference: &KeyVaultReference,
    id: ConsumerId,
    subject: String,
) -> Option<(Option<usize>, Finding)> {
    let kv = scan.vault_secret(&reference.vault, &reference.secret)?;
    let verdict = match &reference.version {
        Some(v) => Verdict::Cannot {
            why: format!(
                "it is a Key Vault reference pinned to version {v} of {}, so it keeps the old key after a rotation: remove SecretVersion so it follows the secret's current version",
                kv.subject
            ),
        },
        None => Verdict::Covered { by: kv.subject },
    };
    Some((
        Some(kv.account),
        Finding {
            section: SECTION.key,
            consumer: Some(id),
            subject,
            holds: Holds::Unknown,
            how: format!(
                "a Key Vault reference to {reference}; App Service caches referenced values for up to 24 h and refetches them when the app restarts"
            ),
            verdict,
            entry: None,
        },
    ))
}

/// The findings of one site's holdings: per account, the settings of the production
/// site, and the slots whose same settings hold that account's key too, are rotatable
/// (one `[[app_service]]` table); any other slot setting is reported as not rotatable.
fn tables(
    site: &ResourceId,
    slots: &[String],
    holdings: Vec<Holding>,
) -> Vec<(Option<usize>, Finding)> {
    let mut accounts: Vec<usize> = holdings.iter().map(|h| h.account).collect();
    accounts.sort_unstable();
    accounts.dedup();
    let mut out = Vec::new();
    for account in accounts {
        let mine: Vec<&Holding> = holdings.iter().filter(|h| h.account == account).collect();
        let production: Vec<(Collection, &str)> = mine
            .iter()
            .filter(|h| h.place.slot.is_none())
            .map(|h| (h.collection, h.name.as_str()))
            .collect();
        let has = |slot: &str, (c, n): (Collection, &str)| {
            mine.iter().any(|h| {
                h.place.slot.as_deref() == Some(slot)
                    && h.collection == c
                    && h.name.eq_ignore_ascii_case(n)
            })
        };
        let with: Vec<String> = slots
            .iter()
            .filter(|s| !production.is_empty() && production.iter().all(|p| has(s, *p)))
            .cloned()
            .collect();
        for h in mine {
            let id =
                ConsumerId::AppService(Box::new(SettingId::new(&h.place, h.collection, &h.name)));
            let subject = format!("{} {}", PROFILE.label, id.short());
            let rotatable = match &h.place.slot {
                None => true,
                Some(slot) => {
                    with.contains(slot)
                        && production
                            .iter()
                            .any(|(c, n)| *c == h.collection && n.eq_ignore_ascii_case(&h.name))
                }
            };
            if !rotatable {
                out.push((
                    Some(account),
                    Finding {
                        section: SECTION.key,
                        consumer: Some(id),
                        subject,
                        holds: h.holds,
                        how: h.how.clone(),
                        verdict: Verdict::Cannot {
                            why: format!(
                                "{}; an [[app_service]] table lists a slot's settings only together with the same settings of the production site, which do not all hold this key: update it by hand, or make the production site's settings match",
                                h.how
                            ),
                        },
                        entry: None,
                    },
                ));
                continue;
            }
            let (app_settings, connection_strings) = match h.collection {
                Collection::AppSettings => (vec![h.name.clone()], Vec::new()),
                Collection::ConnectionStrings => (Vec::new(), vec![h.name.clone()]),
            };
            out.push((
                Some(account),
                Finding {
                    section: SECTION.key,
                    consumer: Some(id),
                    subject,
                    holds: h.holds,
                    how: h.how.clone(),
                    verdict: Verdict::Rotate,
                    entry: Some(Entry::AppService(AppServiceSettings {
                        site: site.clone(),
                        app_settings,
                        connection_strings,
                        slots: match &h.place.slot {
                            None => with.clone(),
                            Some(s) => vec![s.clone()],
                        },
                    })),
                },
            ));
        }
    }
    out
}

/// The grace a plan of these findings needs, and why: 24 hours when a Key Vault
/// reference covered by a listed secret lives in a site or slot that no listed
/// setting's write restarts (App Service refetches references every 24 hours, or on a
/// restart).
pub(crate) fn grace(consumers: &[Finding], other: &[Finding]) -> Option<String> {
    let restarted: Vec<String> = consumers
        .iter()
        .filter_map(|f| match &f.consumer {
            Some(ConsumerId::AppService(id)) => Some(id.site().id().to_ascii_lowercase()),
            _ => None,
        })
        .collect();
    let waiting: Vec<String> = other
        .iter()
        .filter(|f| matches!(f.verdict, Verdict::Covered { .. }))
        .filter_map(|f| match &f.consumer {
            Some(ConsumerId::AppService(id))
                if !restarted.contains(&id.site().id().to_ascii_lowercase()) =>
            {
                Some(id.site().short())
            }
            _ => None,
        })
        .collect();
    (!waiting.is_empty()).then(|| {
        format!(
            "App Service caches Key Vault references for up to 24 h and no write of this plan restarts {}, so the old key must stay valid that long",
            waiting.join(", ")
        )
    })
}

/// The `[[app_service]]` tables for these findings: one per site, its settings and
/// slots merged, each setting's finding as a comment.
pub(crate) fn render(findings: &[&Finding]) -> String {
    let mut tables: Vec<(AppServiceSettings, Vec<&Finding>)> = Vec::new();
    for f in findings {
        let Some(Entry::AppService(t)) = &f.entry else {
            continue;
        };
        let at = match tables
            .iter()
            .position(|(x, _)| x.site.as_str().eq_ignore_ascii_case(t.site.as_str()))
        {
            Some(i) => i,
            None => {
                tables.push((
                    AppServiceSettings {
                        site: t.site.clone(),
                        app_settings: Vec::new(),
                        connection_strings: Vec::new(),
                        slots: Vec::new(),
                    },
                    Vec::new(),
                ));
                tables.len() - 1
            }
        };
        let (table, lines) = &mut tables[at];
        for (from, to) in [
            (&t.app_settings, &mut table.app_settings),
            (&t.connection_strings, &mut table.connection_strings),
            (&t.slots, &mut table.slots),
        ] {
            for n in from {
                if !to.iter().any(|x| x.eq_ignore_ascii_case(n)) {
                    to.push(n.clone());
                }
            }
        }
        lines.push(f);
    }
    let list = |names: &[String]| {
        names
            .iter()
            .map(|n| quote(n))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = String::new();
    for (table, lines) in tables {
        for f in lines {
            out.push_str(&format!("# {}: {}.\n", f.subject, f.how));
        }
        out.push_str(&format!(
            "# A write restarts {} (App Service restarts an app whenever its settings change).\n",
            match table.slots.len() {
                0 => "the app".to_owned(),
                _ => format!("the app and slot(s) {}", table.slots.join(", ")),
            }
        ));
        out.push_str("[[app_service]]\n");
        out.push_str(&format!("site = {}\n", quote(table.site.as_str())));
        if !table.app_settings.is_empty() {
            out.push_str(&format!("app_settings = [{}]\n", list(&table.app_settings)));
        }
        if !table.connection_strings.is_empty() {
            out.push_str(&format!(
                "connection_strings = [{}]\n",
                list(&table.connection_strings)
            ));
        }
        if !table.slots.is_empty() {
            out.push_str(&format!("slots = [{}]\n", list(&table.slots)));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SITE: &str = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Web/sites/func-x";

    fn holding(slot: Option<&str>, name: &str) -> Holding {
        let site: ResourceId = SITE.parse().unwrap();
        Holding {
            account: 0,
            place: SiteRef::new(&site, slot),
            collection: Collection::AppSettings,
            name: name.into(),
            holds: Holds::Key1,
            how: "its app setting holds key1 (fp:0) in a connection string".into(),
        }
    }

    #[test]
    fn a_table_lists_production_settings_and_the_slots_that_match_them() {
        let site: ResourceId = SITE.parse().unwrap();
        let slots = vec!["staging".to_owned(), "dev".to_owned()];
        let found = tables(
            &site,
            &slots,
            vec![
                holding(None, "AzureWebJobsStorage"),
                holding(Some("staging"), "AzureWebJobsStorage"),
                holding(Some("staging"), "Extra"),
                holding(Some("dev"), "Other"),
            ],
        );
        let verdicts: Vec<(String, bool)> = found
            .iter()
            .map(|(_, f)| (f.subject.clone(), f.verdict.listed()))
            .collect();
        assert_eq!(
            verdicts,
            [
                (
                    "App Service setting func-x AzureWebJobsStorage".to_owned(),
                    true
                ),
                (
                    "App Service setting func-x/staging AzureWebJobsStorage".to_owned(),
                    true
                ),
                ("App Service setting func-x/staging Extra".to_owned(), false),
                ("App Service setting func-x/dev Other".to_owned(), false),
            ]
        );
        // The plan text is one table: the production setting and the staging slot, and
        // it lists exactly the findings marked listed.
        let listed: Vec<&Finding> = found
            .iter()
            .map(|(_, f)| f)
            .filter(|f| f.verdict.listed())
            .collect();
        let text = format!(
            "storage_account = \"/subscriptions/s/resourceGroups/g/providers/Microsoft.Storage/storageAccounts/stabc001\"\n{}",
            render(&listed)
        );
        assert!(text.contains("slots = [\"staging\"]"), "{text}");
        let plan = crate::plan::parse(&text, "p.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
        let ids: Vec<String> = plan.consumer_ids().iter().map(|i| i.to_string()).collect();
        let want: Vec<String> = listed
            .iter()
            .map(|f| f.consumer.as_ref().unwrap().to_string())
            .collect();
        assert_eq!(ids, want);
    }

    #[test]
    fn a_reference_in_a_site_no_write_restarts_needs_a_day_of_grace() {
        let site: ResourceId = SITE.parse().unwrap();
        let found = tables(&site, &[], vec![holding(None, "AzureWebJobsStorage")]);
        let consumers: Vec<Finding> = found.into_iter().map(|(_, f)| f).collect();
        let reference = |slot: Option<&str>| Finding {
            section: SECTION.key,
            consumer: Some(ConsumerId::AppService(Box::new(SettingId::new(
                &SiteRef::new(&site, slot),
                Collection::AppSettings,
                "Ref",
            )))),
            subject: "ref".into(),
            holds: Holds::Unknown,
            how: "a Key Vault reference".into(),
            verdict: Verdict::Covered {
                by: "Key Vault secret kv/s".into(),
            },
            entry: None,
        };
        // The production site is restarted by the write of its own setting.
        assert_eq!(grace(&consumers, &[reference(None)]), None);
        let why = grace(&consumers, &[reference(Some("staging"))]).expect("24 h");
        assert!(why.contains("func-x/staging"), "{why}");
        assert!(grace(&[], &[reference(None)]).is_some());
    }
}
