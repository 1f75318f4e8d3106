//! What `doctor` reads about an `[[app_service]]` table (every app setting and
//! connection string of the site and of each listed slot, classified without keeping a
//! value) and the row it makes of each place: what each listed setting holds, the
//! settings that hold the account's key but the plan leaves out (retiring the old key
//! would break them), and Key Vault references to the plan's secrets, which App Service
//! caches for up to 24 hours: the plan's grace must cover that unless keyflip's own
//! write restarts the app.

use serde::Serialize;

use super::{AppServiceSettings, REFERENCE_CACHE, SettingId, Stored, stored};
use crate::azure::Azure;
use crate::azure::web::{Collection, KeyVaultReference, SiteRef};
use crate::consumer::{ConsumerId, Entry, Facts, resource_name};
use crate::doctor::assess::{Ctx, Verdict, not_done};
use crate::doctor::collect::Got;
use crate::doctor::render::fp;
use crate::doctor::report::{Check, Holding, Holds, Status};
use crate::plan::Plan;
use crate::secret::Fingerprint;

/// What `doctor` read about one `[[app_service]]` table.
#[derive(Debug)]
pub struct AppServiceSeen {
    pub plan: AppServiceSettings,
    /// The site, then each listed slot.
    pub places: Vec<PlaceSeen>,
}

/// The settings of one site or slot, classified.
#[derive(Debug)]
pub struct PlaceSeen {
    pub site: SiteRef,
    pub settings: Got<Vec<SettingSeen>>,
}

/// One setting, without its value.
#[derive(Debug)]
pub struct SettingSeen {
    pub collection: Collection,
    pub name: String,
    pub stored: Stored,
    /// The fingerprint of the account key in it.
    pub fingerprint: Option<Fingerprint>,
}

/// One place's row facts.
#[derive(Clone, Debug, Serialize)]
pub struct AppServiceFacts {
    pub site: String,
    pub slot: Option<String>,
    /// The listed settings, then unlisted ones that hold one of the account's keys.
    pub settings: Vec<SettingFacts>,
    /// Key Vault references to the plan's secrets.
    pub references: Vec<ReferenceFacts>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SettingFacts {
    pub name: String,
    /// `app_setting` or `connection_string`.
    pub collection: &'static str,
    pub listed: bool,
    /// `raw_key`, `connection_string`, `key_vault_reference`, `no_key` or `missing`.
    pub form: &'static str,
    pub holds: Holds,
    pub fingerprint: Option<Fingerprint>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReferenceFacts {
    pub setting: String,
    /// The plan's Key Vault secret it reads (`vault/secret`).
    pub secret: String,
    pub version: Option<String>,
    /// Whether keyflip's own write restarts this site or slot, which refetches it.
    pub refreshed_by_rotation: bool,
}

pub(super) async fn read(
    azure: &Azure,
    plan: &Plan,
    table: &AppServiceSettings,
    arm: Result<(), String>,
) -> AppServiceSeen {
    let account = plan.storage_account.name();
    let places = futures::future::join_all(table.places().into_iter().map(|site| {
        let arm = arm.clone();
        async move {
            if let Err(why) = arm {
                return PlaceSeen {
                    site,
                    settings: Got::NotTried(why),
                };
            }
            let (app, conn) = futures::join!(
                azure.web_settings(&site, Collection::AppSettings),
                azure.web_settings(&site, Collection::ConnectionStrings)
            );
            let settings = match (app, conn) {
                (Ok(app), Ok(conn)) => {
                    let all = [
                        (Collection::AppSettings, app),
                        (Collection::ConnectionStrings, conn),
                    ];
                    Got::Done(
                        all.into_iter()
                            .flat_map(|(collection, settings)| {
                                settings.0.into_iter().map(move |(name, s)| {
                                    let (stored, key) = stored(&s.value, account);
                                    SettingSeen {
                                        collection,
                                        name,
                                        stored,
                                        fingerprint: key.map(|k| azure.fingerprint(&k)),
                                    }
                                })
                            })
                            .collect(),
                    )
                }
                (Err(e), _) | (_, Err(e)) => Got::Failed(e),
            };
            PlaceSeen { site, settings }
        }
    }))
    .await;
    AppServiceSeen {
        plan: table.clone(),
        places,
    }
}

/// The plan's Key Vault secret a reference reads, as `vault/secret`.
fn plan_secret(plan: &Plan, r: &KeyVaultReference) -> Option<String> {
    plan.consumers.iter().find_map(|e| match e {
        Entry::KeyVault(kv) => {
            let name = resource_name(kv.vault_id.as_ref(), &kv.vault);
            let vault = r.vault.trim_end_matches('/');
            let same_vault =
                vault.eq_ignore_ascii_case(&kv.vault) || vault.eq_ignore_ascii_case(&name);
            (same_vault && r.secret.eq_ignore_ascii_case(&kv.secret))
                .then(|| format!("{name}/{}", kv.secret))
        }
        _ => None,
    })
}

fn collection_word(c: Collection) -> &'static str {
    match c {
        Collection::AppSettings => "app_setting",
        Collection::ConnectionStrings => "connection_string",
    }
}

impl AppServiceSeen {
    /// One row per place: the site, then each listed slot.
    pub(crate) fn checks(&self, ctx: &Ctx<'_>, holdings: &mut Vec<Holding>) -> Vec<Check> {
        self.places
            .iter()
            .map(|place| self.check(ctx, place, holdings))
            .collect()
    }

    fn check(&self, ctx: &Ctx<'_>, place: &PlaceSeen, holdings: &mut Vec<Holding>) -> Check {
        let t = &self.plan;
        let listed = t.settings();
        let is_listed = |c: Collection, name: &str| {
            listed
                .iter()
                .any(|(lc, ln)| *lc == c && ln.eq_ignore_ascii_case(name))
        };
        let id_of = |c: Collection, name: &str| {
            ConsumerId::AppService(Box::new(SettingId::new(&place.site, c, name))).to_string()
        };
        let subject = format!("app service {}", place.site.short());
        let mut facts = AppServiceFacts {
            site: place.site.site.to_string(),
            slot: place.site.slot.clone(),
            settings: Vec::new(),
            references: Vec::new(),
        };
        let all = match &place.settings {
            Got::Done(all) => all,
            other => {
                for (c, n) in &listed {
                    holdings.push(Holding {
                        consumer: id_of(*c, n),
                        holds: Holds::Unknown,
                    });
                }
                let verdict =
                    not_done(other, &ctx.missing).unwrap_or_else(|| Verdict::ok("listed"));
                return verdict.check(subject, Facts::AppService(facts));
            }
        };
        let mut problems: Vec<(Status, String, String)> = Vec::new();
        let mut summary: Vec<String> = Vec::new();
        let mut restarted = false;
        for &(c, name) in &listed {
            let found = all
                .iter()
                .find(|s| s.collection == c && s.name.eq_ignore_ascii_case(name));
            let (form, holds, fingerprint) = match found {
                None => {
                    problems.push((
                        Status::Error,
                        format!("it has no {} {name}", c.noun()),
                        format!(
                            "check the name in {} (or remove it if the app no longer uses it).",
                            ctx.file()
                        ),
                    ));
                    ("missing", Holds::Unknown, None)
                }
                Some(s) => match &s.stored {
                    Stored::Key { connection_string } => {
                        let holds = ctx.holds(s.fingerprint);
                        restarted = true;
                        summary.push(format!("{} holds {}", s.name, holds.as_str()));
                        if holds == Holds::Neither {
                            problems.push((
                                Status::Error,
                                format!("{} holds neither of the account's keys", s.name),
                                format!(
                                    "set it to the key the other consumers use (az webapp config appsettings set -n {}), then run keyflip doctor again.",
                                    place.site.site.name()
                                ),
                            ));
                        }
                        let form = if *connection_string {
                            "connection_string"
                        } else {
                            "raw_key"
                        };
                        (form, holds, s.fingerprint)
                    }
                    Stored::Reference(r) => {
                        problems.push((
                            Status::Error,
                            format!(
                                "{} is a Key Vault reference to {r}: that secret is the consumer, not the setting",
                                s.name
                            ),
                            format!(
                                "remove {} from [[app_service]] in {} and list the secret under [[key_vault]] (a rotation writes a new version of it).",
                                s.name,
                                ctx.file()
                            ),
                        ));
                        ("key_vault_reference", Holds::Unknown, None)
                    }
                    Stored::NoKey(why) => {
                        problems.push((
                            Status::Error,
                            format!("{}: {why}", s.name),
                            format!("remove {} from [[app_service]] in {}.", s.name, ctx.file()),
                        ));
                        ("no_key", Holds::Unknown, None)
                    }
                },
            };
            holdings.push(Holding {
                consumer: id_of(c, name),
                holds,
            });
            facts.settings.push(SettingFacts {
                name: found.map_or_else(|| name.to_owned(), |s| s.name.clone()),
                collection: collection_word(c),
                listed: true,
                form,
                holds,
                fingerprint,
            });
        }
        // Settings that hold the account's key but are not listed: retiring the old
        // key breaks them.
        let mut missed = Vec::new();
        for s in all {
            if is_listed(s.collection, &s.name) {
                continue;
            }
            let holds = ctx.holds(s.fingerprint);
            if let (Stored::Key { connection_string }, Some(_)) = (&s.stored, holds.key()) {
                missed.push(s.name.clone());
                facts.settings.push(SettingFacts {
                    name: s.name.clone(),
                    collection: collection_word(s.collection),
                    listed: false,
                    form: if *connection_string {
                        "connection_string"
                    } else {
                        "raw_key"
                    },
                    holds,
                    fingerprint: s.fingerprint,
                });
            }
        }
        if !missed.is_empty() {
            problems.push((
                Status::Error,
                format!(
                    "{} hold{} one of the account's keys but the plan does not list {}: retiring the old key would break {}",
                    missed.join(", "),
                    if missed.len() == 1 { "s" } else { "" },
                    if missed.len() == 1 { "it" } else { "them" },
                    if missed.len() == 1 { "it" } else { "them" },
                ),
                format!(
                    "add {} to the [[app_service]] table for {} in {}.",
                    missed.join(", "),
                    t.site.name(),
                    ctx.file()
                ),
            ));
        }
        // Key Vault references to the plan's secrets, and App Service's 24-hour cache.
        let grace = ctx.plan.rotation.grace;
        let mut references = Vec::new();
        for s in all {
            let Stored::Reference(r) = &s.stored else {
                continue;
            };
            let Some(secret) = plan_secret(ctx.plan, r) else {
                continue;
            };
            facts.references.push(ReferenceFacts {
                setting: s.name.clone(),
                secret: secret.clone(),
                version: r.version.clone(),
                refreshed_by_rotation: restarted,
            });
            if let Some(version) = &r.version {
                problems.push((
                    Status::Error,
                    format!(
                        "{} reads version {version} of {secret}, pinned: it never follows a rotation, and retiring the old key would break it",
                        s.name
                    ),
                    format!(
                        "drop the version from the reference (@Microsoft.KeyVault(SecretUri=…/secrets/{}/)) so the app follows the latest version.",
                        r.secret
                    ),
                ));
            } else if restarted {
                references.push(format!(
                    "{} reads {secret}, refetched at that restart",
                    s.name
                ));
            } else if grace >= REFERENCE_CACHE {
                references.push(format!(
                    "{} reads {secret}; App Service refetches it within 24 h, inside the plan's grace",
                    s.name
                ));
            } else {
                problems.push((
                    Status::Warning,
                    format!(
                        "{} reads {secret} through a Key Vault reference, which App Service caches for up to 24 h; the plan's grace ({}) is shorter, so the app may still use the old key when it is retired",
                        s.name,
                        crate::plan::duration::format(grace)
                    ),
                    format!(
                        "set grace = \"24h\" (or more) under [rotation] in {}, or refresh the references after the new version is written and before the grace ends (POST {}/config/configreferences/appsettings/refresh?api-version=2022-03-01, or restart the app).",
                        ctx.file(),
                        place.site.id()
                    ),
                ));
            }
        }
        if restarted {
            summary.push("a rotation's write restarts the app".into());
        }
        summary.extend(references);
        let verdict_text = if summary.is_empty() {
            "no listed setting holds a key".to_owned()
        } else {
            summary.join("; ")
        };
        let mut verdict = Verdict::described(verdict_text);
        for (status, finding, fix) in problems {
            verdict.add(status, finding, Some(fix));
        }
        verdict.check(subject, Facts::AppService(facts))
    }
}

impl AppServiceFacts {
    /// One line per setting: name, listed or not, form, key, fingerprint.
    pub(crate) fn details(&self) -> Vec<String> {
        let name_w = self
            .settings
            .iter()
            .map(|s| s.name.len())
            .chain(self.references.iter().map(|r| r.setting.len()))
            .max()
            .unwrap_or(0);
        let mut lines: Vec<String> = self
            .settings
            .iter()
            .map(|s| {
                format!(
                    "{:<name_w$}  {:<10}  {:<19}  {:<7}  {}",
                    s.name,
                    if s.listed { "listed" } else { "NOT LISTED" },
                    s.form,
                    s.holds.as_str(),
                    fp(s.fingerprint.as_ref())
                )
            })
            .collect();
        lines.extend(self.references.iter().map(|r| {
            format!(
                "{:<name_w$}  reads {}{}",
                r.setting,
                r.secret,
                r.version
                    .as_ref()
                    .map(|v| format!(" (pinned to {v})"))
                    .unwrap_or_default()
            )
        }));
        lines
    }
}
