//! What `doctor` reads about a `[[data_factory]]` table (every linked service of the
//! factory, masked as Data Factory returns them) and the row it makes of it: whether
//! each listed linked service stores the account's key in a form keyflip can replace,
//! the linked services that plainly hold the account's key but the plan leaves out, and
//! those that read the plan's Key Vault secrets (covered by them). A SecureString's key
//! is unknown here: `doctor` reads no journal, and Data Factory never returns it.

use serde::Serialize;

use super::{DataFactoryLinkedServices, Found, found};
use crate::azure::Azure;
use crate::azure::datafactory::{Credential, LinkedService};
use crate::consumer::{Entry, Facts, resource_name};
use crate::doctor::assess::{Ctx, Verdict, not_done};
use crate::doctor::collect::Got;
use crate::doctor::render::fp;
use crate::doctor::report::{Check, Holding, Holds, Status};
use crate::plan::Plan;
use crate::secret::Fingerprint;

/// What `doctor` read about one `[[data_factory]]` table.
#[derive(Debug)]
pub struct DataFactorySeen {
    pub plan: DataFactoryLinkedServices,
    /// Every linked service of the factory, each with what it holds (a plain-text
    /// key's fingerprint; never a value).
    pub linked_services: Got<Vec<(LinkedService, Found)>>,
}

/// The row's facts.
#[derive(Clone, Debug, Serialize)]
pub struct DataFactoryFacts {
    pub factory: String,
    /// The listed linked services, then the others that matter to this account.
    pub linked_services: Vec<LinkedServiceFacts>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LinkedServiceFacts {
    pub name: String,
    /// `AzureBlobStorage`, ...; `null` when it does not exist.
    pub service_type: Option<String>,
    pub listed: bool,
    /// `secure_string`, `string`, `key_vault_secret`, `other` or `missing`.
    pub credential: &'static str,
    pub etag: Option<String>,
    pub holds: Holds,
    pub fingerprint: Option<Fingerprint>,
    /// For a Key Vault reference: the plan's secret it reads (`vault/secret`), or the
    /// secret's name when it is not in the plan.
    pub key_vault_secret: Option<String>,
}

pub(super) async fn read(
    azure: &Azure,
    plan: &Plan,
    table: &DataFactoryLinkedServices,
    arm: Result<(), String>,
) -> DataFactorySeen {
    let linked_services = match arm {
        Err(why) => Got::NotTried(why),
        Ok(()) => match azure.linked_services(&table.factory).await {
            Ok(all) => Got::Done(
                all.into_iter()
                    .map(|ls| {
                        let f = found(&ls, plan.storage_account.name(), None, |k| {
                            azure.fingerprint(k)
                        });
                        (ls, f)
                    })
                    .collect(),
            ),
            Err(e) => Got::Failed(e),
        },
    };
    DataFactorySeen {
        plan: table.clone(),
        linked_services,
    }
}

fn credential_word(c: &Credential) -> &'static str {
    match c {
        Credential::SecureString => "secure_string",
        Credential::Text(_) => "string",
        Credential::KeyVault { .. } => "key_vault_secret",
        Credential::Other(_) => "other",
    }
}

/// The plan's Key Vault secret a linked service reads through the `AzureKeyVault`
/// linked service `store`, as `vault/secret`.
fn plan_secret(
    plan: &Plan,
    all: &[(LinkedService, Found)],
    store: &str,
    secret: &str,
) -> Option<String> {
    let vault = all
        .iter()
        .find(|(ls, _)| ls.name.eq_ignore_ascii_case(store))
        .and_then(|(ls, _)| ls.text("baseUrl"))?
        .trim_end_matches('/');
    plan.consumers.iter().find_map(|e| match e {
        Entry::KeyVault(kv)
            if kv.vault.eq_ignore_ascii_case(vault) && kv.secret.eq_ignore_ascii_case(secret) =>
        {
            Some(format!(
                "{}/{}",
                resource_name(kv.vault_id.as_ref(), &kv.vault),
                kv.secret
            ))
        }
        _ => None,
    })
}

impl DataFactorySeen {
    pub(crate) fn checks(&self, ctx: &Ctx<'_>, holdings: &mut Vec<Holding>) -> Vec<Check> {
        vec![self.check(ctx, holdings)]
    }

    fn check(&self, ctx: &Ctx<'_>, holdings: &mut Vec<Holding>) -> Check {
        let t = &self.plan;
        let subject = format!("data factory {}", t.factory.name());
        let mut facts = DataFactoryFacts {
            factory: t.factory.to_string(),
            linked_services: Vec::new(),
        };
        let all = match &self.linked_services {
            Got::Done(all) => all,
            other => {
                for id in t.ids() {
                    holdings.push(Holding {
                        consumer: id.to_string(),
                        holds: Holds::Unknown,
                    });
                }
                let verdict =
                    not_done(other, &ctx.missing).unwrap_or_else(|| Verdict::ok("listed"));
                return verdict.check(subject, Facts::DataFactory(facts));
            }
        };
        let account = ctx.plan.storage_account.name();
        let mut summary = Vec::new();
        let mut problems: Vec<(Status, String, String)> = Vec::new();
        for (name, id) in t.linked_services.iter().zip(t.ids()) {
            let Some((ls, f)) = all
                .iter()
                .find(|(ls, _)| ls.name.eq_ignore_ascii_case(name))
            else {
                holdings.push(Holding {
                    consumer: id.to_string(),
                    holds: Holds::Unknown,
                });
                problems.push((
                    Status::Error,
                    format!("it has no linked service {name}"),
                    format!("check the name in {}.", ctx.file()),
                ));
                facts.linked_services.push(LinkedServiceFacts {
                    name: name.clone(),
                    service_type: None,
                    listed: true,
                    credential: "missing",
                    etag: None,
                    holds: Holds::Unknown,
                    fingerprint: None,
                    key_vault_secret: None,
                });
                continue;
            };
            let (holds, fingerprint) = match f {
                Found::Key(fp) => (ctx.holds(Some(*fp)), Some(*fp)),
                Found::Unknown(_) | Found::Unusable(_) => (Holds::Unknown, None),
            };
            match f {
                Found::Unusable(why) => problems.push((
                    Status::Error,
                    why.clone(),
                    format!("fix the [[data_factory]] table for {} in {}.", t.factory.name(), ctx.file()),
                )),
                Found::Key(_) if holds == Holds::Neither => problems.push((
                    Status::Error,
                    format!("{} holds neither of the account's keys", ls.name),
                    "update its connection string to the key the other consumers use, then run keyflip doctor again.".into(),
                )),
                Found::Key(_) => summary.push(format!("{} holds {}", ls.name, holds.as_str())),
                Found::Unknown(_) => summary.push(format!(
                    "{} holds a SecureString (etag {}), which Data Factory never returns: a rotation knows its key from keyflip's journal",
                    ls.name,
                    ls.etag.as_deref().unwrap_or("none")
                )),
            }
            holdings.push(Holding {
                consumer: id.to_string(),
                holds,
            });
            let key_vault_secret = match &ls.credential {
                Credential::KeyVault { store, secret, .. } => Some(
                    plan_secret(ctx.plan, all, store, secret).unwrap_or_else(|| secret.clone()),
                ),
                _ => None,
            };
            facts.linked_services.push(LinkedServiceFacts {
                name: ls.name.clone(),
                service_type: Some(ls.service_type.clone()),
                listed: true,
                credential: credential_word(&ls.credential),
                etag: ls.etag.clone(),
                holds,
                fingerprint,
                key_vault_secret,
            });
        }
        // The others: plain keys of this account the plan leaves out, Data Lake
        // linked services on this account, and readers of the plan's secrets.
        let listed = |n: &str| t.linked_services.iter().any(|l| l.eq_ignore_ascii_case(n));
        let mut missed = Vec::new();
        let mut masked = Vec::new();
        for (ls, f) in all
            .iter()
            .filter(|(ls, _)| !listed(&ls.name) && ls.is_storage())
        {
            let (holds, fingerprint) = match f {
                Found::Key(fp) => (ctx.holds(Some(*fp)), Some(*fp)),
                _ => (Holds::Unknown, None),
            };
            let on_account = ls.text("url").is_some_and(|u| {
                url::Url::parse(u).ok().and_then(|u| {
                    u.host_str().map(|h| {
                        h.split('.')
                            .next()
                            .unwrap_or(h)
                            .eq_ignore_ascii_case(account)
                    })
                }) == Some(true)
            });
            let key_vault_secret = match &ls.credential {
                Credential::KeyVault { store, secret, .. } => {
                    plan_secret(ctx.plan, all, store, secret)
                }
                _ => None,
            };
            let relevant = match &ls.credential {
                Credential::Text(_) => holds.key().is_some(),
                Credential::SecureString => true,
                Credential::KeyVault { .. } => key_vault_secret.is_some(),
                Credential::Other(_) => false,
            };
            if !relevant {
                continue;
            }
            match &ls.credential {
                Credential::Text(_) => missed.push(ls.name.clone()),
                Credential::SecureString if on_account => missed.push(ls.name.clone()),
                Credential::SecureString => masked.push(ls.name.clone()),
                Credential::KeyVault { .. } => summary.push(format!(
                    "{} reads {} (covered by that secret)",
                    ls.name,
                    key_vault_secret.clone().unwrap_or_default()
                )),
                Credential::Other(_) => {}
            }
            facts.linked_services.push(LinkedServiceFacts {
                name: ls.name.clone(),
                service_type: Some(ls.service_type.clone()),
                listed: false,
                credential: credential_word(&ls.credential),
                etag: ls.etag.clone(),
                holds,
                fingerprint,
                key_vault_secret,
            });
        }
        if !missed.is_empty() {
            problems.push((
                Status::Error,
                format!(
                    "{} use{} {account}'s key but the plan does not list {}: retiring the old key would break {}",
                    missed.join(", "),
                    if missed.len() == 1 { "s" } else { "" },
                    if missed.len() == 1 { "it" } else { "them" },
                    if missed.len() == 1 { "it" } else { "them" },
                ),
                format!(
                    "add {} to linked_services for {} in {}.",
                    missed.join(", "),
                    t.factory.name(),
                    ctx.file()
                ),
            ));
        }
        if !masked.is_empty() {
            summary.push(format!(
                "{} also hold{} a masked storage credential (which account, Data Factory does not say)",
                masked.join(", "),
                if masked.len() == 1 { "s" } else { "" }
            ));
        }
        let mut verdict = if summary.is_empty() {
            Verdict::described("no listed linked service holds a key keyflip can replace")
        } else {
            Verdict::described(summary.join("; "))
        };
        for (status, finding, fix) in problems {
            verdict.add(status, finding, Some(fix));
        }
        verdict.check(subject, Facts::DataFactory(facts))
    }
}

impl DataFactoryFacts {
    /// One line per linked service: name, listed, type, credential, key, etag.
    pub(crate) fn details(&self) -> Vec<String> {
        let name_w = self
            .linked_services
            .iter()
            .map(|l| l.name.len())
            .max()
            .unwrap_or(0);
        self.linked_services
            .iter()
            .map(|l| {
                let what = l
                    .key_vault_secret
                    .as_ref()
                    .map(|s| format!("reads {s}"))
                    .unwrap_or_else(|| fp(l.fingerprint.as_ref()));
                format!(
                    "{:<name_w$}  {:<10}  {:<17}  {:<16}  {:<7}  {}",
                    l.name,
                    match (l.listed, &l.key_vault_secret) {
                        (true, _) => "listed",
                        (false, Some(_)) => "covered",
                        (false, None) => "NOT LISTED",
                    },
                    l.service_type.as_deref().unwrap_or("-"),
                    l.credential,
                    l.holds.as_str(),
                    what
                )
            })
            .collect()
    }
}
