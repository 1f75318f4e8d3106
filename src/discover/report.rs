//! Running a discovery over one or more accounts, and what it returns: per account,
//! the consumers a plan lists, the things that use the key but cannot be rotated or
//! are covered by another consumer, and what could not be read. Serializable for
//! `--output json`.

use std::time::Instant;

use chrono::{DateTime, Utc};
use futures::future::join_all;
use serde::Serialize;

use super::cache::DiscoveryCache;
use super::scan::{Account, Scan, Written};
use super::{Finding, Holds};
use crate::azure::Azure;
use crate::config::DiscoveryConfig;
use crate::consumer::{self, ConsumerId, ConsumerKind, SECTIONS};
use crate::journal::{Journal, JournalError};
use crate::key::KeyName;
use crate::resource_id::ResourceId;
use crate::secret::{Fingerprint, Fingerprinter};

/// What to discover and where.
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub accounts: Vec<ResourceId>,
    /// The subscriptions to look in; `None`: every subscription the principal sees.
    pub subscriptions: Option<Vec<String>>,
    /// Where the kinds without an inventory API look (`[discovery]`).
    pub sources: DiscoveryConfig,
    /// keyflip's last writes to consumers it cannot read back, per account (from the
    /// journal).
    pub written: Vec<Write>,
}

/// keyflip's last write of a consumer whose value cannot be read back, as the journal
/// has it: a fingerprint and the service's change marker, never a value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    /// The account whose rotation wrote it.
    pub account: ResourceId,
    pub consumer: ConsumerId,
    pub key: KeyName,
    pub fingerprint: Fingerprint,
    pub at: DateTime<Utc>,
    /// The etag Azure gave the write (a Data Factory linked service), when it has one.
    pub mark: Option<String>,
}

/// keyflip's last writes of `account`'s consumers that cannot be read back (the
/// [write-only](ConsumerKind::write_only) kinds, with the service's change marker
/// when it gave one), from the journal: discovery ties them to the account by these.
pub fn journal_writes(journal: &Journal, account: &ResourceId) -> Result<Vec<Write>, JournalError> {
    let mut out = Vec::new();
    let write_only = ConsumerKind::ALL.into_iter().filter(|k| k.write_only());
    for prefix in write_only.map(ConsumerKind::id_prefix) {
        for (consumer, key, fingerprint, at) in journal.last_binds_of(account, &prefix)? {
            let mark = journal.write_mark(&consumer)?;
            // A marked write is the latest write of it (a rollback's included).
            let (fingerprint, at, mark) = match mark {
                Some(m) => (m.fingerprint, m.at, Some(m.mark)),
                None => (fingerprint, at, None),
            };
            out.push(Write {
                account: account.clone(),
                consumer,
                key,
                fingerprint,
                at,
                mark,
            });
        }
    }
    Ok(out)
}

/// The whole run.
#[derive(Clone, Debug, Serialize)]
pub struct Discovery {
    /// Format version of this document.
    pub version: u32,
    /// The subscriptions looked in.
    pub subscriptions: Vec<String>,
    /// Azure calls sent (cached lists not counted).
    pub calls: u64,
    pub took_ms: u64,
    pub accounts: Vec<AccountDiscovery>,
    /// Subscriptions could not be listed: nothing was looked at (`accounts` carry it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One account's consumers.
#[derive(Clone, Debug, Serialize)]
pub struct AccountDiscovery {
    /// The account's ARM id.
    pub account: String,
    /// The keys' fingerprints (`null` when they could not be read).
    pub key1: Option<Fingerprint>,
    pub key2: Option<Fingerprint>,
    /// Consumers a plan lists, in plan order.
    pub consumers: Vec<Finding>,
    /// What uses the key but is not listed: it cannot be rotated by keyflip, it reads
    /// through a consumer above, or a read failed.
    pub other: Vec<Finding>,
    /// The account could not be discovered at all (its keys could not be read).
    pub error: Option<String>,
}

impl AccountDiscovery {
    /// The key every listed consumer whose key is known holds, when they agree.
    pub fn active(&self) -> Option<KeyName> {
        let mut keys = self.consumers.iter().filter_map(|f| match f.holds {
            Holds::Key1 => Some(KeyName::Key1),
            Holds::Key2 => Some(KeyName::Key2),
            _ => None,
        });
        let first = keys.next()?;
        keys.all(|k| k == first).then_some(first)
    }
}

/// Discovers every account of `request` in one scan.
pub async fn discover(
    azure: &Azure,
    fingerprinter: &Fingerprinter,
    cache: &DiscoveryCache,
    request: &Request,
) -> Discovery {
    let started = Instant::now();
    let keys = join_all(request.accounts.iter().map(|id| async move {
        let keys = azure.storage_keys(id).await?;
        Ok::<_, crate::azure::Error>([
            fingerprinter.fingerprint(keys.value(KeyName::Key1)),
            fingerprinter.fingerprint(keys.value(KeyName::Key2)),
        ])
    }))
    .await;
    let mut out: Vec<AccountDiscovery> = Vec::new();
    let mut accounts: Vec<Account> = Vec::new();
    let mut index: Vec<Option<usize>> = Vec::new();
    for (id, keys) in request.accounts.iter().zip(keys) {
        let mut a = AccountDiscovery {
            account: id.to_string(),
            key1: None,
            key2: None,
            consumers: Vec::new(),
            other: Vec::new(),
            error: None,
        };
        match keys {
            Ok(k) => {
                a.key1 = Some(k[0]);
                a.key2 = Some(k[1]);
                index.push(Some(accounts.len()));
                accounts.push(Account {
                    id: id.clone(),
                    keys: k,
                });
            }
            Err(e) => {
                a.error = Some(format!(
                    "its keys could not be read, so nothing can be compared with them: {e}"
                ));
                index.push(None);
            }
        }
        out.push(a);
    }
    let subscriptions = match &request.subscriptions {
        Some(s) => Ok(s.clone()),
        None => azure.subscriptions().await.map_err(|e| e.to_string()),
    };
    let subscriptions = match subscriptions {
        Ok(s) => s,
        Err(e) => {
            let error = format!("cannot list the subscriptions keyflip's identity can see: {e}");
            for a in &mut out {
                a.error.get_or_insert_with(|| error.clone());
            }
            return Discovery {
                version: 1,
                subscriptions: Vec::new(),
                calls: request.accounts.len() as u64 + 1,
                took_ms: started.elapsed().as_millis() as u64,
                accounts: out,
                error: Some(error),
            };
        }
    };
    let written = written_for(&request.written, &accounts);
    let (scan_calls, found) = scan(
        azure,
        fingerprinter,
        cache,
        accounts,
        subscriptions.clone(),
        request.sources.clone(),
        written,
        true,
    )
    .await;
    for (i, found) in found.into_iter().enumerate() {
        if let Some(t) = index.iter().position(|x| *x == Some(i)) {
            out[t].consumers = found.0;
            out[t].other = found.1;
        }
    }
    Discovery {
        version: 1,
        subscriptions,
        calls: scan_calls + request.accounts.len() as u64,
        took_ms: started.elapsed().as_millis() as u64,
        accounts: out,
        error: None,
    }
}

/// keyflip's own writes that concern the scanned accounts.
pub(crate) fn written_for(written: &[Write], accounts: &[Account]) -> Vec<Written> {
    written
        .iter()
        .filter_map(|w| {
            let i = accounts
                .iter()
                .position(|a| a.id.as_str().eq_ignore_ascii_case(w.account.as_str()))?;
            Some(Written {
                consumer: w.consumer.clone(),
                account: i,
                key: w.key,
                fingerprint: w.fingerprint,
                at: w.at,
                mark: w.mark.clone(),
            })
        })
        .collect()
}

/// One scan over accounts whose keys are known: per account, the consumers a plan
/// lists and the other findings, in plan order; and the calls it sent. `detail`: read
/// which key each consumer holds (see [`Scan::detail`]).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn scan(
    azure: &Azure,
    fingerprinter: &Fingerprinter,
    cache: &DiscoveryCache,
    accounts: Vec<Account>,
    subscriptions: Vec<String>,
    sources: DiscoveryConfig,
    written: Vec<Written>,
    detail: bool,
) -> (u64, Vec<(Vec<Finding>, Vec<Finding>)>) {
    let n = accounts.len();
    let mut scan = Scan::new(
        azure,
        fingerprinter,
        cache,
        accounts,
        subscriptions,
        sources,
        written,
    );
    scan.detail = detail;
    let mut out: Vec<(Vec<Finding>, Vec<Finding>)> = vec![(Vec::new(), Vec::new()); n];
    for (account, finding) in consumer::discover(&scan).await {
        let targets: Vec<usize> = match account {
            Some(i) => vec![i],
            None => (0..n).collect(),
        };
        for t in targets {
            if finding.verdict.listed() {
                out[t].0.push(finding.clone());
            } else {
                out[t].1.push(finding.clone());
            }
        }
    }
    let order = |f: &Finding| SECTIONS.iter().position(|s| s.key == f.section);
    for (listed, other) in &mut out {
        listed.sort_by_key(|f| order(f));
        other.sort_by_key(|f| order(f));
    }
    (scan.calls(), out)
}
