//! Finding ML workspaces and datastores that hold an account's key: every workspace of
//! every subscription in the scan. A workspace whose own storage account is one being
//! discovered caches that account's key (its `listKeys` says which): a consumer, bound
//! by `resyncKeys`. Every datastore on a discovered account with account-key
//! credentials is a consumer wherever its workspace lives (`listSecrets` says which
//! key); one with a SAS cannot be rotated by keyflip and is reported as such.

use futures::future::join_all;

use super::{MlWorkspace, PROFILE, SECTION};
use crate::azure::datastore::DatastoreSecret;
use crate::azure::ml::Workspace;
use crate::consumer::datastore::{self, Datastores};
use crate::consumer::{ConsumerId, Entry};
use crate::discover::{Finding, Holds, Scan, Verdict, write::quote};

pub(crate) async fn discover(scan: &Scan<'_>) -> Vec<(Option<usize>, Finding)> {
    let (workspaces, mut out) = scan
        .in_every_subscription(SECTION.key, "ML workspaces", |s| scan.workspaces(s))
        .await;
    let found = join_all(workspaces.iter().map(|w| workspace(scan, w))).await;
    out.extend(found.into_iter().flatten());
    out
}

fn cannot(subject: String, consumer: Option<ConsumerId>, why: String) -> Finding {
    Finding::cannot(
        SECTION.key,
        subject,
        consumer,
        "found, but not usable as it is",
        why,
    )
}

fn table(ws: &Workspace, resync: bool, datastore: Option<&str>) -> Entry {
    Entry::MlWorkspace(MlWorkspace {
        workspace: ws.id.clone(),
        resync,
        datastores: match datastore {
            Some(name) => Datastores::Named(vec![name.to_owned()]),
            None => Datastores::Discover,
        },
    })
}

async fn workspace(scan: &Scan<'_>, ws: &Workspace) -> Vec<(Option<usize>, Finding)> {
    let mut out = Vec::new();
    let own = ws
        .storage_account
        .as_ref()
        .and_then(|a| scan.account_index(a));
    let name = ws.id.name();
    if let Some(account) = own {
        let keys = scan.accounts[account].keys;
        let cached = if scan.detail {
            Some(scan.call(scan.azure.ml_workspace_keys(&ws.id)).await)
        } else {
            None
        };
        let (holds, how) = match cached {
            None => (
                Holds::Unknown,
                "its own storage account (which key it caches was not read)".to_owned(),
            ),
            Some(cached) => match cached {
                Ok(k) => match k.user_storage_key {
                    Some(key) => {
                        let fp = scan.fingerprint(&key);
                        drop(key);
                        let holds = Holds::of(fp, keys);
                        (
                            holds,
                            format!("its own storage account; it has {holds} ({fp}) cached"),
                        )
                    }
                    None => (
                        Holds::Neither,
                        "its own storage account; it reports no cached key".to_owned(),
                    ),
                },
                Err(e) => (
                    Holds::Unknown,
                    format!("its own storage account; its cached key could not be read ({e})"),
                ),
            },
        };
        out.push((
            Some(account),
            Finding {
                section: SECTION.key,
                consumer: Some(ConsumerId::workspace(&ws.id)),
                subject: format!("{} {name}", PROFILE.label),
                holds,
                how,
                verdict: Verdict::Rotate,
                entry: Some(table(ws, true, None)),
            },
        ));
    }
    let stores = match scan.datastores(&ws.id).await {
        Ok(s) => s,
        Err(e) => {
            out.push((
                own,
                cannot(
                    format!("datastores of ML workspace {name}"),
                    None,
                    format!("cannot list them: {}", e.text),
                ),
            ));
            return out;
        }
    };
    let suffix = scan.azure.cloud().storage_suffix.clone();
    let mine: Vec<(usize, &crate::azure::datastore::Datastore)> = stores
        .iter()
        .filter_map(|d| {
            scan.accounts
                .iter()
                .position(|a| d.refers_to(&a.id, suffix.as_deref()))
                .map(|i| (i, d))
        })
        .collect();
    let secrets = join_all(mine.iter().map(|(_, d)| async {
        if !scan.detail {
            // Key-based and on the account: a consumer, whichever key it holds. (A
            // SAS one is no consumer a plan could list; its secret is not read.)
            return d.uses_account_key().then_some(Err(None));
        }
        if d.uses_account_key() || d.credentials_type.eq_ignore_ascii_case("Sas") {
            Some(
                scan.call(scan.azure.ml_datastore_secret(&ws.id, &d.name))
                    .await
                    .map_err(Some),
            )
        } else {
            None
        }
    }))
    .await;
    for ((account, d), secret) in mine.into_iter().zip(secrets) {
        let Some(secret) = secret else {
            // Entra ID or no credentials: the key does not matter to it.
            continue;
        };
        let id = ConsumerId::datastore(&ws.id, &d.name);
        let subject = format!("{} {name}/{}", datastore::PROFILE.label, d.name);
        let keys = scan.accounts[account].keys;
        let resync = own == Some(account);
        match secret {
            Ok(DatastoreSecret::AccountKey(key)) => {
                let fp = scan.fingerprint(&key);
                drop(key);
                let holds = Holds::of(fp, keys);
                out.push((
                    Some(account),
                    Finding {
                        section: SECTION.key,
                        consumer: Some(id),
                        subject,
                        holds,
                        how: format!(
                            "{} datastore with account-key credentials holding {holds} ({fp})",
                            d.datastore_type
                        ),
                        verdict: Verdict::Rotate,
                        entry: Some(table(ws, resync, Some(&d.name))),
                    },
                ));
            }
            Ok(DatastoreSecret::Sas(_)) => out.push((
                Some(account),
                cannot(
                    subject,
                    Some(id),
                    "it authenticates with a SAS token, which keyflip cannot re-issue; a SAS signed with a key dies when that key is regenerated, so give it a SAS from the key that stays (or Entra ID access)".into(),
                ),
            )),
            Ok(DatastoreSecret::Other { .. }) => {}
            Err(None) => out.push((
                Some(account),
                Finding {
                    section: SECTION.key,
                    consumer: Some(id),
                    subject,
                    holds: Holds::Unknown,
                    how: format!(
                        "{} datastore with account-key credentials (which key it holds was not read)",
                        d.datastore_type
                    ),
                    verdict: Verdict::Rotate,
                    entry: Some(table(ws, resync, Some(&d.name))),
                },
            )),
            Err(Some(e)) => out.push((
                Some(account),
                cannot(subject, Some(id), format!("cannot read its secret: {e}")),
            )),
        }
    }
    out
}

/// One `[[ml_workspace]]` table being written: the workspace, and its findings with
/// the datastore each names.
type WorkspaceTable<'a> = (MlWorkspace, Vec<(&'a Finding, Option<String>)>);

/// The `[[ml_workspace]]` tables for these findings: one per workspace, with the
/// workspace's own line and each datastore's on its own line.
pub(crate) fn render(findings: &[&Finding]) -> String {
    let mut order: Vec<String> = Vec::new();
    let mut tables: Vec<WorkspaceTable<'_>> = Vec::new();
    for f in findings {
        let Some(Entry::MlWorkspace(ws)) = &f.entry else {
            continue;
        };
        let key = ws.workspace.as_str().to_ascii_lowercase();
        let at = match order.iter().position(|k| *k == key) {
            Some(i) => i,
            None => {
                order.push(key);
                tables.push((
                    MlWorkspace {
                        workspace: ws.workspace.clone(),
                        resync: false,
                        datastores: Datastores::Named(Vec::new()),
                    },
                    Vec::new(),
                ));
                tables.len() - 1
            }
        };
        let (table, lines) = &mut tables[at];
        table.resync |= ws.resync;
        let name = match &ws.datastores {
            Datastores::Named(names) => names.first().cloned(),
            Datastores::Discover => None,
        };
        if let (Some(n), Datastores::Named(all)) = (&name, &mut table.datastores) {
            all.push(n.clone());
        }
        lines.push((f, name));
    }
    let mut out = String::new();
    for (table, lines) in tables {
        for (f, name) in &lines {
            if name.is_none() {
                out.push_str(&format!("# {}: {}.\n", f.subject, f.how));
            }
        }
        out.push_str("[[ml_workspace]]\n");
        out.push_str(&format!(
            "workspace = {}\n",
            quote(table.workspace.as_str())
        ));
        out.push_str(&format!("resync = {}\n", table.resync));
        let named: Vec<&(&Finding, Option<String>)> =
            lines.iter().filter(|(_, n)| n.is_some()).collect();
        // Plans name datastores with letters, digits and `_`; others are followed
        // with discover = true, which finds every key-based one on the account.
        let nameable = named.iter().all(|(_, n)| {
            n.as_deref()
                .is_some_and(|n| n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        });
        if named.is_empty() || !nameable {
            for (f, name) in &named {
                if let Some(n) = name {
                    out.push_str(&format!("# datastore {n}: {}.\n", f.how));
                }
            }
            out.push_str("discover = true\n\n");
            continue;
        }
        out.push_str("datastores = [\n");
        for (f, name) in &named {
            if let Some(n) = name {
                out.push_str(&format!("  {},  # {}\n", quote(n), f.how));
            }
        }
        out.push_str("]\n\n");
    }
    out
}
