//! What `doctor` reads about a workspace's datastores (every one, and the key each
//! key-based one on the plan's account stores) and the row it makes of them: which
//! key-based datastores use the account, whether the plan covers each, and which named
//! ones a rotation could not update.

use futures::StreamExt as _;
use serde::Serialize;

use super::Datastores;
use crate::azure::Azure;
use crate::azure::datastore::DatastoreSecret;
use crate::consumer::workspace::{MlWorkspace, WorkspaceSeen};
use crate::consumer::{ConsumerId, Facts};
use crate::doctor::assess::{Ctx, Verdict, not_done};
use crate::doctor::collect::{CONCURRENCY, Got};
use crate::doctor::render::fp;
use crate::doctor::report::{Check, Holding, Holds, Status};
use crate::plan::Plan;
use crate::secret::Fingerprint;

/// What `doctor` needs of a datastore (never a secret).
#[derive(Debug)]
pub struct DatastoreSeen {
    pub name: String,
    pub(crate) datastore_type: String,
    pub(crate) credentials_type: String,
    pub(crate) account_name: Option<String>,
    pub(crate) uses_account_key: bool,
    /// Whether it is a key-based datastore on the plan's account.
    pub(crate) on_account: bool,
    /// The fingerprint of its stored account key (read for key-based datastores on
    /// the account and for named ones).
    pub key: Got<Fingerprint>,
}

/// The datastores row's facts.
#[derive(Clone, Debug, Serialize)]
pub struct DatastoresFacts {
    pub workspace: String,
    pub selection: Selection,
    /// Key-based datastores on this account (and named ones that are not).
    pub datastores: Vec<DatastoreFacts>,
    /// Key-based datastores on this account that a named list leaves out.
    pub missed: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// `datastores = [...]`.
    Named,
    /// `discover = true`.
    Discover,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DatastoreFacts {
    pub name: String,
    /// `AzureBlob`, `AzureFile`, ...; `null` for a named datastore that does not exist.
    pub(crate) datastore_type: Option<String>,
    pub(crate) credentials_type: Option<String>,
    pub account: Option<String>,
    /// A rotation updates it (named in the plan, or discovered).
    pub covered: bool,
    /// The plan names it but a rotation could not update it: the reason.
    pub unusable: Option<String>,
    pub holds: Holds,
    pub fingerprint: Option<Fingerprint>,
}

/// Every datastore of `ws`, with the key of each key-based one on the plan's account
/// (and of named ones) fingerprinted.
pub(crate) async fn read(azure: &Azure, plan: &Plan, ws: &MlWorkspace) -> Got<Vec<DatastoreSeen>> {
    let id = &ws.workspace;
    let all = match azure.ml_datastores(id).await {
        Ok(all) => all,
        Err(e) => return Got::Failed(e),
    };
    let suffix = azure.cloud().storage_suffix.clone();
    let named = match &ws.datastores {
        Datastores::Named(names) => names.clone(),
        Datastores::Discover => Vec::new(),
    };
    let seen = futures::stream::iter(all.into_iter().map(|datastore| {
        let on_account = datastore.uses_account_key()
            && datastore.refers_to(&plan.storage_account, suffix.as_deref());
        let is_named = named
            .iter()
            .any(|n| n.eq_ignore_ascii_case(&datastore.name));
        async move {
            let key = if on_account || (is_named && datastore.uses_account_key()) {
                match azure.ml_datastore_secret(id, &datastore.name).await {
                    Ok(DatastoreSecret::AccountKey(k)) => Got::Done(azure.fingerprint(&k)),
                    Ok(DatastoreSecret::Sas(_)) => Got::NotTried("it stores a SAS token".into()),
                    Ok(DatastoreSecret::Other { secrets_type }) => {
                        Got::NotTried(format!("it stores a {secrets_type} secret"))
                    }
                    Err(e) => Got::Failed(e),
                }
            } else {
                Got::NotTried("not a key-based datastore on this account".into())
            };
            DatastoreSeen {
                uses_account_key: datastore.uses_account_key(),
                name: datastore.name,
                datastore_type: datastore.datastore_type,
                credentials_type: datastore.credentials_type,
                account_name: datastore.account_name,
                on_account,
                key,
            }
        }
    }))
    .buffered(CONCURRENCY)
    .collect::<Vec<_>>()
    .await;
    Got::Done(seen)
}

/// The workspace's key-based datastores on this account, and whether the plan covers
/// each.
pub(crate) fn check(ctx: &Ctx<'_>, ws: &WorkspaceSeen, holdings: &mut Vec<Holding>) -> Check {
    let id = &ws.plan.workspace;
    let account = ctx.plan.storage_account.name();
    let (selection, named) = match &ws.plan.datastores {
        Datastores::Named(names) => (Selection::Named, Some(names)),
        Datastores::Discover => (Selection::Discover, None),
    };
    let subject = format!("datastores of {}", id.name());
    let mut all: Vec<&DatastoreSeen> = match &ws.datastores {
        Got::Done(all) => all.iter().collect(),
        other => {
            let verdict = not_done(other, &ctx.missing).unwrap_or_else(|| Verdict::ok("listed"));
            return verdict.check(
                subject,
                Facts::Datastores(DatastoresFacts {
                    workspace: id.to_string(),
                    selection,
                    datastores: Vec::new(),
                    missed: Vec::new(),
                }),
            );
        }
    };
    // Azure lists datastores in no documented order; the report sorts them.
    all.sort_by(|a, b| a.name.cmp(&b.name));
    let is_named =
        |name: &str| named.is_some_and(|n| n.iter().any(|x| x.eq_ignore_ascii_case(name)));
    let mut facts = Vec::new();
    let mut missed = Vec::new();
    let mut unusable = Vec::new();
    let mut neither = Vec::new();
    let mut skipped: Option<Verdict> = None;
    for &d in &all {
        let reason = if !is_named(&d.name) || d.on_account {
            None
        } else if !d.uses_account_key {
            Some(format!(
                "it uses {} credentials, not an account key",
                d.credentials_type
            ))
        } else {
            Some(format!(
                "it reads account {}, not {account}",
                d.account_name.as_deref().unwrap_or("(none)")
            ))
        };
        if !d.on_account && reason.is_none() {
            continue;
        }
        let covered = d.on_account && (named.is_none() || is_named(&d.name));
        if d.on_account && !covered {
            missed.push(d.name.clone());
        }
        let fingerprint = d.key.done().copied();
        let holds = ctx.holds(fingerprint);
        if covered {
            holdings.push(Holding {
                consumer: ConsumerId::datastore(id, &d.name).to_string(),
                holds,
            });
            if holds == Holds::Neither {
                neither.push(d.name.clone());
            }
            if let Some(v) = not_done(&d.key, &ctx.missing)
                && skipped.as_ref().is_none_or(|s| v.status > s.status)
            {
                skipped = Some(v);
            }
        }
        if let Some(r) = &reason {
            unusable.push(format!("{} ({r})", d.name));
        }
        facts.push(DatastoreFacts {
            name: d.name.clone(),
            datastore_type: Some(d.datastore_type.clone()),
            credentials_type: Some(d.credentials_type.clone()),
            account: d.account_name.clone(),
            covered,
            unusable: reason,
            holds,
            fingerprint,
        });
    }
    for name in named.into_iter().flatten() {
        if !all.iter().any(|d| d.name.eq_ignore_ascii_case(name)) {
            unusable.push(format!("{name} (no such datastore in the workspace)"));
            facts.push(DatastoreFacts {
                name: name.clone(),
                datastore_type: None,
                credentials_type: None,
                account: None,
                covered: false,
                unusable: Some("no such datastore in the workspace".into()),
                holds: Holds::Unknown,
                fingerprint: None,
            });
        }
    }
    let keyed = facts.iter().filter(|f| f.unusable.is_none()).count();
    let how = match selection {
        Selection::Discover => "discovered",
        Selection::Named => "named in the plan",
    };
    let mut verdict = match (keyed, missed.is_empty()) {
        (0, _) => Verdict::described(format!("no key-based datastore on {account}")),
        (n, true) => Verdict::described(format!(
            "{n} key-based datastore{} on {account}, all {how}",
            if n == 1 { "" } else { "s" }
        )),
        (n, false) => Verdict::described(format!(
            "{n} key-based datastore{} on {account}",
            if n == 1 { "" } else { "s" }
        )),
    };
    if !missed.is_empty() {
        verdict.add(
            Status::Error,
            format!(
                "{} use{} {account}'s key but the plan does not name {}: retiring the old key would break {}",
                missed.join(", "),
                if missed.len() == 1 { "s" } else { "" },
                if missed.len() == 1 { "it" } else { "them" },
                if missed.len() == 1 { "it" } else { "them" },
            ),
            Some(format!(
                "add {} to datastores for {} in {}, or set discover = true.",
                missed.join(", "),
                id.name(),
                ctx.file()
            )),
        );
    }
    if !unusable.is_empty() {
        verdict.add(
            Status::Error,
            format!(
                "the plan names datastores a rotation cannot update: {}",
                unusable.join(", ")
            ),
            Some(format!(
                "fix the datastores list for {} in {}.",
                id.name(),
                ctx.file()
            )),
        );
    }
    if !neither.is_empty() {
        verdict.add(
            Status::Error,
            format!("{} hold{} neither of {account}'s keys", neither.join(", "), if neither.len() == 1 { "s" } else { "" }),
            Some("update them to the key the other consumers use (az ml datastore update), then run keyflip doctor again.".into()),
        );
    }
    if let Some(v) = skipped {
        verdict.add(v.status, v.finding.join("; "), v.fix.into_iter().next());
    }
    verdict.check(
        subject,
        Facts::Datastores(DatastoresFacts {
            workspace: id.to_string(),
            selection,
            datastores: facts,
            missed,
        }),
    )
}

impl DatastoresFacts {
    /// One line per datastore: name, type, coverage, key, fingerprint.
    pub(crate) fn details(&self) -> Vec<String> {
        let datastores = &self.datastores;
        let coverage = |d: &DatastoreFacts| match (&d.unusable, d.covered) {
            (Some(_), _) => "cannot be updated",
            (None, true) => "covered",
            (None, false) => "NOT COVERED",
        };
        let kind = |d: &DatastoreFacts| d.datastore_type.clone().unwrap_or_else(|| "-".to_owned());
        let name_w = datastores.iter().map(|d| d.name.len()).max().unwrap_or(0);
        let kind_w = datastores.iter().map(|d| kind(d).len()).max().unwrap_or(0);
        let cover_w = datastores
            .iter()
            .map(|d| coverage(d).len())
            .max()
            .unwrap_or(0);
        datastores
            .iter()
            .map(|d| {
                format!(
                    "{:<name_w$}  {:<kind_w$}  {:<cover_w$}  {:<7}  {}",
                    d.name,
                    kind(d),
                    coverage(d),
                    d.holds.as_str(),
                    fp(d.fingerprint.as_ref())
                )
            })
            .collect()
    }
}
