//! The [`Coordinator`]: the leases this replica holds and the shared journal writes
//! made under them.
//!
//! Each rotated account has one blob, `accounts/<hash of the lower-cased ARM id>.json`
//! (ARM ids are case-insensitive), holding an [`AccountDoc`]. The lease is on that
//! blob, so "holding the account" and "may write its journal" are one thing.
//!
//! A journal write arrives through [`Mirror::record`], which the local journal calls
//! inside its transaction. It checks the lease has at least half its length left,
//! applies the write to a copy of the document, and writes it with the lease id and
//! `If-Match` of the version last read or written. Only a write the service accepted
//! counts; an unclear one (the connection broke after sending) is settled by reading
//! the blob back: it landed if the blob holds exactly what was sent.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ring::digest;
use tokio_util::sync::CancellationToken;

use super::blob::{BlobClient, Conditions, ETag, Listed};
use super::document::{AccountDoc, Holder, PlanDoc, SUMMARY_METADATA, Summary};
use super::error::CoordError;
use super::lease::Lease;
use crate::azure::Azure;
use crate::config::CoordinationConfig;
use crate::journal::{ImportedRotation, Mirror, SharedWrite};
use crate::resource_id::ResourceId;

/// Upper bounds of the renewal-latency histogram, in seconds (a renewal must finish
/// well inside a third of a lease: 5 s at the shortest).
pub const RENEWAL_BUCKETS: [f64; 10] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Counters for metrics and status.
#[derive(Debug, Default)]
pub struct Stats {
    pub acquisitions: AtomicU64,
    /// Acquisitions refused because another replica held the lease.
    pub refused: AtomicU64,
    /// Leases lost while held (renewal refused or too late, a write refused), once
    /// per lease.
    pub losses: AtomicU64,
    pub renewals: AtomicU64,
    /// Latency of the last successful renewal, in microseconds.
    pub last_renewal_us: AtomicU64,
    /// Sum of every successful renewal's latency, in microseconds.
    pub renewal_us_total: AtomicU64,
    /// Renewals at or under each of [`RENEWAL_BUCKETS`] (cumulative, as Prometheus).
    pub renewal_buckets: [AtomicU64; RENEWAL_BUCKETS.len()],
    pub writes: AtomicU64,
}

impl Stats {
    fn renewed(&self, latency: Duration) {
        self.renewals.fetch_add(1, Ordering::Relaxed);
        let us = latency.as_micros() as u64;
        self.last_renewal_us.store(us, Ordering::Relaxed);
        self.renewal_us_total.fetch_add(us, Ordering::Relaxed);
        for (bound, count) in RENEWAL_BUCKETS.iter().zip(&self.renewal_buckets) {
            if latency.as_secs_f64() <= *bound {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Where the accounts' blobs live in the container.
pub const ACCOUNTS_PREFIX: &str = "accounts/";
/// Blobs `history` and `status` read at once.
pub const READ_CONCURRENCY: usize = 16;

/// One account's shared journal as read for `history` and `status`.
#[derive(Clone, Debug)]
pub struct SharedAccount {
    pub blob: String,
    /// The account's ARM id, once a rotation of it was recorded.
    pub account: Option<String>,
    /// Whether a replica holds its lease now.
    pub leased: bool,
    /// The replica that took the lease last, and when.
    pub holder: Option<Holder>,
    pub rotations: Vec<ImportedRotation>,
    /// The daemon state of the account's plans, by plan name.
    pub plans: std::collections::BTreeMap<String, PlanDoc>,
}

/// What [`Coordinator::read_shared`] reads.
#[derive(Clone, Debug)]
pub enum SharedRead {
    /// What `status` shows of these accounts (every account when `None`): their
    /// summaries from the listing, a body only where no summary can be trusted.
    Status(Option<Vec<ResourceId>>),
    /// What `history` prints: the bodies of the accounts holding the newest `limit`
    /// rotations of `plan` (any plan when `None`) started at or after `since`.
    History {
        plan: Option<String>,
        since: Option<DateTime<Utc>>,
        limit: usize,
    },
}

/// Up to this many accounts, `status` lists each account's blob by its own name (one
/// small answer each) instead of the whole container.
pub const FEW_ACCOUNTS: usize = 8;

/// A document's rotations as the journal imports them; one that does not read is a
/// format error naming the blob.
fn imported_rotations(doc: &AccountDoc, blob: &str) -> Result<Vec<ImportedRotation>, CoordError> {
    doc.rotations
        .iter()
        .map(|r| {
            r.to_imported().map_err(|detail| CoordError::Format {
                blob: blob.to_owned(),
                detail,
            })
        })
        .collect()
}

/// An account's shared journal as `history` and `status` read it, from a document (a
/// body, or a summary's reduced one).
fn shared_account(
    blob: String,
    leased: bool,
    doc: AccountDoc,
) -> Result<SharedAccount, CoordError> {
    let rotations = imported_rotations(&doc, &blob)?;
    Ok(SharedAccount {
        blob,
        account: doc.account,
        leased,
        holder: doc.holder,
        rotations,
        plans: doc.plans,
    })
}

/// An account's lease just taken, with what its shared journal holds for the local
/// journal to import.
#[derive(Debug)]
pub struct Taken {
    pub lease: AccountLease,
    /// Every rotation, oldest first.
    pub rotations: Vec<ImportedRotation>,
    /// Write marks by consumer id.
    pub marks: Vec<(String, crate::journal::WriteMark)>,
    /// The daemon state of the account's plans, by plan name, as read under the lease.
    pub plans: std::collections::BTreeMap<String, PlanDoc>,
}

/// What `keyflip coordination import-journal` did for one account.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AccountImport {
    pub account: String,
    /// Rotations copied into the shared journal (none when it had them all).
    pub added: Vec<String>,
    /// The shared journal's unfinished rotation afterwards, which the first replica
    /// to take the account's lease resumes.
    pub unfinished: Option<String>,
}

/// A lease this replica holds, for status.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LeaseInfo {
    pub account: String,
    pub replica: String,
    pub since: DateTime<Utc>,
}

struct Held {
    account: String,
    lease: Lease,
    /// The document as last read or written, with that version's ETag.
    doc: Mutex<(AccountDoc, ETag)>,
    stop: CancellationToken,
    /// Set once its loss was counted (a renewal and a write may both see it).
    loss_counted: std::sync::atomic::AtomicBool,
}

impl Held {
    fn count_loss(&self, stats: &Stats) {
        if !self.loss_counted.swap(true, Ordering::Relaxed) {
            stats.losses.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The replica's side of coordination. Shared behind an `Arc`.
pub struct Coordinator {
    client: BlobClient,
    config: CoordinationConfig,
    held: Mutex<HashMap<String, Arc<Held>>>,
    /// Which held blob each rotation's journal lives in.
    rotations: Mutex<HashMap<String, String>>,
    /// This replica's fingerprint-key check value (see [`AccountDoc`]).
    fingerprint_check: String,
    /// Where every coordination request runs (see [`Background`]).
    background: Background,
    pub(crate) stats: Arc<Stats>,
}

/// A runtime of the coordinator's own (one thread). Its requests, and the renewals,
/// run there, so neither waits for the engine's runtime: a journal write blocks its
/// caller (it runs inside the journal's mutex) while the blob write runs here, which
/// other tasks blocked on that mutex could otherwise starve.
struct Background(Option<tokio::runtime::Runtime>);

impl Background {
    fn start() -> Result<Background, String> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("keyflip-coordination")
            .enable_all()
            .build()
            .map(|rt| Background(Some(rt)))
            .map_err(|e| format!("cannot start the coordination thread: {e}"))
    }

    fn handle(&self) -> Option<&tokio::runtime::Handle> {
        self.0.as_ref().map(tokio::runtime::Runtime::handle)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // Dropping a runtime inside another's task would panic; this never does.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Fingerprinted to make the check value. Not a secret.
const CHECK_INPUT: &str = "keyflip coordination fingerprint-key check v1";

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("container", &self.client.container_url().as_str())
            .field("replica", &self.config.replica)
            .finish_non_exhaustive()
    }
}

/// The blob of one account's lease and journal.
pub fn blob_name(account: &ResourceId) -> String {
    let hash = digest::digest(&digest::SHA256, account.as_str().to_lowercase().as_bytes());
    let hex: String = hash.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{ACCOUNTS_PREFIX}{hex}.json")
}

/// Writes a document's bytes and its summary (see [`super::document::Summary`]) in one
/// Put Blob: every write of an account document goes through here, so the summary
/// never describes another version of the body. Without a summary (too large) the
/// blob is left with none, and readers read the body.
async fn put_doc(
    client: &BlobClient,
    blob: &str,
    bytes: &[u8],
    summary: Option<&str>,
    conditions: &Conditions<'_>,
) -> Result<ETag, CoordError> {
    match summary {
        Some(summary) => {
            client
                .put_with(blob, bytes, &[(SUMMARY_METADATA, summary)], conditions)
                .await
        }
        None => client.put(blob, bytes, conditions).await,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a plan may not be rotated under this coordination, if it may not.
pub fn refuses(config: &CoordinationConfig, account: &ResourceId) -> Option<String> {
    account.name().eq_ignore_ascii_case(&config.account_name).then(|| {
        format!(
            "storage account {} is the coordination account of [coordination] ({}): rotating its keys while replicas coordinate through it is refused (keyflip reaches it with Entra ID only, so it needs no key rotation by keyflip). Move coordination to another account, or rotate this one from a keyflip without [coordination]",
            account.name(),
            config.blob_endpoint
        )
    })
}

impl Coordinator {
    /// A coordinator reaching the configured container with `azure`'s credential and
    /// transport. Sends nothing.
    /// `azure` should be a facade of its own (its own connections and token cache):
    /// its requests run on the coordinator's thread.
    pub fn new(azure: &Azure, config: &CoordinationConfig) -> Coordinator {
        Coordinator {
            client: BlobClient::for_audience(azure, super::blob::STORAGE_AUDIENCE, config),
            config: config.clone(),
            held: Mutex::new(HashMap::new()),
            rotations: Mutex::new(HashMap::new()),
            fingerprint_check: azure
                .fingerprint(&crate::secret::StorageKey::new(CHECK_INPUT.to_owned()))
                .to_hex(),
            background: Background::start().unwrap_or_else(|e| {
                tracing::error!(error = %e, "coordination cannot run");
                Background(None)
            }),
            stats: Arc::new(Stats::default()),
        }
    }

    /// Runs `work` on the coordinator's thread and awaits it from any runtime.
    async fn run<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = Result<T, CoordError>> + Send + 'static,
    ) -> Result<T, CoordError> {
        let handle = self.background.handle().ok_or(CoordError::Runtime)?;
        handle.spawn(work).await.map_err(|_| CoordError::Runtime)?
    }

    /// Runs `work` on the coordinator's thread and blocks this thread until it ends
    /// (the journal's synchronous writes).
    fn wait<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = Result<T, CoordError>> + Send + 'static,
    ) -> Result<T, CoordError> {
        let handle = self.background.handle().ok_or(CoordError::Runtime)?;
        let (tx, rx) = std::sync::mpsc::channel();
        handle.spawn(async move {
            let _ = tx.send(work.await);
        });
        rx.recv().map_err(|_| CoordError::Runtime)?
    }

    pub fn client(&self) -> &BlobClient {
        &self.client
    }

    pub fn config(&self) -> &CoordinationConfig {
        &self.config
    }

    /// Leases held now.
    pub fn held(&self) -> Vec<LeaseInfo> {
        let mut list: Vec<LeaseInfo> = lock(&self.held)
            .values()
            .map(|h| LeaseInfo {
                account: h.account.clone(),
                replica: self.config.replica.clone(),
                since: h.lease.since,
            })
            .collect();
        list.sort_by(|a, b| a.account.cmp(&b.account));
        list
    }

    /// Creates the account's blob when it does not exist yet (and the container on
    /// first use). A blob that exists, leased or not, is left as it is.
    async fn ensure_blob(&self, blob: &str) -> Result<(), CoordError> {
        let (empty, summary) = AccountDoc::empty().encode();
        let create = Conditions {
            if_none: true,
            ..Conditions::default()
        };
        for attempt in 0..2 {
            match put_doc(&self.client, blob, &empty, summary.as_deref(), &create).await {
                Ok(_) | Err(CoordError::Changed { .. } | CoordError::Lost { .. }) => return Ok(()),
                Err(CoordError::Azure(crate::azure::Error::NotFound { .. })) if attempt == 0 => {
                    self.client.ensure_container().await?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Acquires the lease of `account` (refusing the coordination account itself),
    /// starts renewing it, and returns it with every rotation its shared journal
    /// holds, for the local journal to import. [`CoordError::Held`] when another
    /// replica holds it.
    pub async fn hold(self: &Arc<Self>, account: &ResourceId) -> Result<Taken, CoordError> {
        if let Some(why) = refuses(&self.config, account) {
            return Err(CoordError::CoordinationAccount(why));
        }
        let this = self.clone();
        let account = account.clone();
        self.run(async move { this.hold_here(&account).await })
            .await
    }

    /// The account blob whose lease this replica just acquired: its document and ETag,
    /// refused when the journal there was written with another fingerprint key.
    async fn read_leased(&self, blob: &str) -> Result<(AccountDoc, ETag), CoordError> {
        let (bytes, etag) = self
            .client
            .get(blob)
            .await?
            .ok_or_else(|| CoordError::Lost {
                blob: blob.to_owned(),
                why: "the blob was deleted after its lease was acquired".into(),
            })?;
        let doc = AccountDoc::parse(&bytes).map_err(|detail| CoordError::Format {
            blob: blob.to_owned(),
            detail,
        })?;
        if doc
            .fingerprint_check
            .as_ref()
            .is_some_and(|c| *c != self.fingerprint_check)
        {
            return Err(CoordError::FingerprintKey {
                blob: blob.to_owned(),
            });
        }
        Ok((doc, etag))
    }

    /// [`Coordinator::hold`], on the coordinator's thread.
    async fn hold_here(self: &Arc<Self>, account: &ResourceId) -> Result<Taken, CoordError> {
        let blob = blob_name(account);
        self.ensure_blob(&blob).await?;
        let lease = match Lease::acquire(&self.client, &blob, self.config.lease).await {
            Ok(lease) => lease,
            Err(e) => {
                if matches!(e, CoordError::Held { .. }) {
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                }
                return Err(e);
            }
        };
        self.stats.acquisitions.fetch_add(1, Ordering::Relaxed);
        let read = async {
            let (doc, etag) = self.read_leased(&blob).await?;
            let imported = imported_rotations(&doc, &blob)?;
            let marks = doc.marks_imported().map_err(|detail| CoordError::Format {
                blob: blob.clone(),
                detail,
            })?;
            // Name the holder now, so `status` on any machine shows who holds the
            // lease from its first moment (a fenced write like every other).
            let mut doc = doc;
            let holder = Holder {
                replica: self.config.replica.clone(),
                since: lease.since,
            };
            let etag = if doc.holder.as_ref() == Some(&holder) {
                etag
            } else {
                doc.holder = Some(holder);
                doc.account
                    .get_or_insert_with(|| account.as_str().to_owned());
                let (bytes, summary) = doc.encode();
                put_doc(
                    &self.client,
                    &blob,
                    &bytes,
                    summary.as_deref(),
                    &Conditions {
                        lease: Some(lease.id()),
                        if_match: Some(&etag),
                        if_none: false,
                    },
                )
                .await?
            };
            Ok::<_, CoordError>((doc, etag, imported, marks))
        };
        let (doc, etag, imported, marks) = match read.await {
            Ok(read) => read,
            Err(e) => {
                lease.release().await;
                return Err(e);
            }
        };
        tracing::info!(account = %account, replica = %self.config.replica, lease_s = lease.length().as_secs(), unfinished = doc.unfinished().map(|r| r.id.as_str()), "account lease acquired");
        {
            let mut rotations = lock(&self.rotations);
            for r in &doc.rotations {
                rotations.insert(r.id.clone(), blob.clone());
            }
        }
        let plans = doc.plans.clone();
        let held = Arc::new(Held {
            account: account.as_str().to_owned(),
            lease,
            doc: Mutex::new((doc, etag)),
            stop: CancellationToken::new(),
            loss_counted: std::sync::atomic::AtomicBool::new(false),
        });
        lock(&self.held).insert(blob.clone(), held.clone());
        let keeper = held.clone();
        let stats = self.stats.clone();
        tokio::spawn(async move {
            let renewed = stats.clone();
            let on_renew = move |latency: Duration| renewed.renewed(latency);
            keeper.lease.keep(keeper.stop.clone(), &on_renew).await;
            if !keeper.stop.is_cancelled() && keeper.lease.is_lost() {
                keeper.count_loss(&stats);
            }
        });
        Ok(Taken {
            lease: AccountLease {
                coordinator: self.clone(),
                blob,
                held,
            },
            rotations: imported,
            marks,
            plans,
        })
    }

    /// Fails unless this replica holds `account`'s lease with time left to send an
    /// effect ([`super::lease::sending`]); the executor's check right before sending.
    pub(crate) fn ensure_sending(&self, account: &ResourceId) -> Result<(), CoordError> {
        let blob = blob_name(account);
        let held = lock(&self.held).get(&blob).cloned();
        match held {
            Some(held) => held
                .lease
                .ensure_at_least(super::lease::sending(held.lease.length())),
            None => Err(CoordError::Lost {
                blob,
                why: "this replica does not hold the account's lease".into(),
            }),
        }
    }

    /// Every rotation the account's shared journal holds, read without the lease.
    pub async fn peek(&self, account: &ResourceId) -> Result<Vec<ImportedRotation>, CoordError> {
        let blob = blob_name(account);
        let client = self.client.clone();
        let name = blob.clone();
        let read = self.run(async move { client.get(&name).await }).await?;
        let Some((bytes, _)) = read else {
            return Ok(Vec::new());
        };
        let doc = AccountDoc::parse(&bytes).map_err(|detail| CoordError::Format {
            blob: blob.clone(),
            detail,
        })?;
        doc.rotations
            .iter()
            .map(|r| {
                r.to_imported().map_err(|detail| CoordError::Format {
                    blob: blob.clone(),
                    detail,
                })
            })
            .collect()
    }

    /// The shared journal as `status` and `history` print it on every replica, read
    /// without leases (see [`SharedRead`]). An account without a blob is absent.
    ///
    /// Cost: one List Blobs (`include=metadata`) page per 5,000 accounts (or, for at
    /// most [`FEW_ACCOUNTS`] accounts, one listing of each blob's own name), plus one
    /// Get Blob for each account whose summary is missing or untrusted (written by an
    /// older keyflip) and, for `history`, for each account holding a rotation it prints;
    /// [`READ_CONCURRENCY`] Get Blobs at a time.
    pub async fn read_shared(&self, what: SharedRead) -> Result<Vec<SharedAccount>, CoordError> {
        let client = self.client.clone();
        self.run(async move {
            use futures::{StreamExt as _, TryStreamExt as _};
            let wanted: Option<std::collections::BTreeSet<String>> = match &what {
                SharedRead::Status(Some(accounts)) => {
                    Some(accounts.iter().map(blob_name).collect())
                }
                _ => None,
            };
            let listed = match &wanted {
                Some(blobs) if blobs.len() <= FEW_ACCOUNTS => {
                    let mut listed = Vec::with_capacity(blobs.len());
                    for blob in blobs {
                        listed.extend(client.list_with_metadata(blob).await?);
                    }
                    listed
                }
                _ => client.list_with_metadata(ACCOUNTS_PREFIX).await?,
            };
            let listed: Vec<(Listed, Option<Summary>)> = listed
                .into_iter()
                .filter(|l| wanted.as_ref().is_none_or(|w| w.contains(&l.name)))
                .map(|l| {
                    let summary = l
                        .metadata
                        .iter()
                        .find(|(name, _)| name == SUMMARY_METADATA)
                        .and_then(|(_, value)| Summary::decode(value, l.len));
                    (l, summary)
                })
                .collect();
            let mut accounts = Vec::new();
            let mut bodies = Vec::new();
            match &what {
                SharedRead::Status(_) => {
                    for (l, summary) in listed {
                        match summary {
                            Some(summary) => {
                                accounts.push(shared_account(l.name, l.leased, summary.doc)?)
                            }
                            None => bodies.push(l.name),
                        }
                    }
                }
                SharedRead::History { plan, since, limit } => {
                    // The starts `history` may print, newest first; every account with
                    // a start at or after the `limit`-th is read (ties included), so
                    // the query over what is read picks exactly what it would over
                    // every account.
                    let mut starts: Vec<(DateTime<Utc>, usize)> = Vec::new();
                    for (i, (l, summary)) in listed.iter().enumerate() {
                        let Some(summary) = summary else {
                            bodies.push(l.name.clone());
                            continue;
                        };
                        starts.extend(
                            summary
                                .starts
                                .iter()
                                .filter(|(p, at)| {
                                    plan.as_ref().is_none_or(|plan| plan == p)
                                        && since.is_none_or(|since| *at >= since)
                                })
                                .map(|(_, at)| (*at, i)),
                        );
                    }
                    starts.sort_by_key(|s| std::cmp::Reverse(s.0));
                    // None: print nothing; Some(None): fewer than `limit`, read all.
                    let cutoff = limit
                        .checked_sub(1)
                        .map(|last| starts.get(last).map(|s| s.0));
                    let mut read: Vec<usize> = match cutoff {
                        None => Vec::new(),
                        Some(None) => starts.iter().map(|s| s.1).collect(),
                        Some(Some(cutoff)) => starts
                            .iter()
                            .take_while(|s| s.0 >= cutoff)
                            .map(|s| s.1)
                            .collect(),
                    };
                    read.sort_unstable();
                    read.dedup();
                    bodies.extend(read.into_iter().map(|i| listed[i].0.name.clone()));
                }
            }
            let reads = futures::stream::iter(bodies)
                .map(|blob| {
                    let client = client.clone();
                    async move {
                        let Some(read) = client.read(&blob).await? else {
                            return Ok(None);
                        };
                        let doc =
                            AccountDoc::parse(&read.body).map_err(|detail| CoordError::Format {
                                blob: blob.clone(),
                                detail,
                            })?;
                        shared_account(blob, read.leased, doc).map(Some)
                    }
                })
                .buffer_unordered(READ_CONCURRENCY)
                .try_collect::<Vec<_>>()
                .await?;
            accounts.extend(reads.into_iter().flatten());
            accounts.sort_by(|a, b| a.blob.cmp(&b.blob));
            Ok(accounts)
        })
        .await
    }

    /// `keyflip coordination import-journal`: copies the rotations of a single-node
    /// journal into each account's shared journal, under that account's lease (so no
    /// replica rotates the account meanwhile) and with `If-Match`. An account whose
    /// lease a replica holds is [`CoordError::Held`]: nothing of it is copied.
    /// Idempotent: a rotation the shared journal already has is left as it is.
    pub async fn import_journal(
        self: &Arc<Self>,
        rotations: Vec<ImportedRotation>,
        marks: Vec<(String, crate::journal::WriteMark)>,
    ) -> Result<Vec<AccountImport>, CoordError> {
        let marks = Arc::new(marks);
        let mut by_account: Vec<(ResourceId, Vec<ImportedRotation>)> = Vec::new();
        for r in rotations {
            let key = r.rotation.account.as_str().to_lowercase();
            match by_account
                .iter_mut()
                .find(|(a, _)| a.as_str().to_lowercase() == key)
            {
                Some((_, list)) => list.push(r),
                None => by_account.push((r.rotation.account.clone(), vec![r])),
            }
        }
        let mut out = Vec::with_capacity(by_account.len());
        for (account, list) in by_account {
            let (this, marks) = (self.clone(), marks.clone());
            out.push(
                self.run(async move { this.import_account(&account, &list, &marks).await })
                    .await?,
            );
        }
        Ok(out)
    }

    async fn import_account(
        &self,
        account: &ResourceId,
        local: &[ImportedRotation],
        marks: &[(String, crate::journal::WriteMark)],
    ) -> Result<AccountImport, CoordError> {
        let blob = blob_name(account);
        self.ensure_blob(&blob).await?;
        let lease = Lease::acquire(&self.client, &blob, self.config.lease).await?;
        let result = async {
            let (mut doc, etag) = self.read_leased(&blob).await?;
            let added = doc.adopt(local).map_err(|e| CoordError::Import {
                account: account.as_str().to_owned(),
                detail: e.to_string(),
            })?;
            // The marks written by this account's rotations, unless the shared
            // journal has a later one of that consumer.
            let mut marked = false;
            for (consumer, mark) in marks {
                if !local.iter().any(|r| r.rotation.id == mark.rotation_id)
                    || doc.marks.get(consumer).is_some_and(|m| m.at >= mark.at)
                {
                    continue;
                }
                let write = SharedWrite::Mark { consumer, mark };
                marked |= doc.apply(&mark.rotation_id, write).unwrap_or(false);
            }
            let unfinished = doc.unfinished().map(|r| r.id.clone());
            if !added.is_empty() || marked {
                self.write_leased(&blob, &mut doc, &lease, &etag).await?;
            }
            Ok(AccountImport {
                account: account.as_str().to_owned(),
                added,
                unfinished,
            })
        }
        .await;
        lease.release().await;
        result
    }

    /// The plans' state in the account's shared journal, read without the lease (a
    /// replica's view of a plan it has not rotated; decisions re-read it under the
    /// lease). Empty when the account has no blob.
    pub async fn peek_plans(
        &self,
        account: &ResourceId,
    ) -> Result<std::collections::BTreeMap<String, PlanDoc>, CoordError> {
        let blob = blob_name(account);
        let client = self.client.clone();
        let name = blob.clone();
        let read = self.run(async move { client.get(&name).await }).await?;
        let Some((bytes, _)) = read else {
            return Ok(Default::default());
        };
        AccountDoc::parse(&bytes)
            .map(|doc| doc.plans)
            .map_err(|detail| CoordError::Format { blob, detail })
    }

    /// Merges the daemon's state of `plan` after a concluded cycle (a failure, a park)
    /// into the account's shared journal, under the account's lease: the one this
    /// replica holds, else one taken for this write and released after it. While
    /// another replica holds the lease the write is retried for one lease length (that
    /// replica is rotating the account, so it starts nothing of this plan meanwhile
    /// without first reading what is recorded), then given up with an error.
    pub async fn record_plan(
        self: &Arc<Self>,
        account: &ResourceId,
        plan: &str,
        state: PlanDoc,
    ) -> Result<(), CoordError> {
        let blob = blob_name(account);
        let held = lock(&self.held).get(&blob).cloned();
        let this = self.clone();
        let plan = plan.to_owned();
        if let Some(held) = held {
            // `write` blocks until the blob write ends, as the journal's writes do.
            return tokio::task::spawn_blocking(move || {
                this.write(&held, |doc| {
                    Ok(doc.plans.entry(plan).or_default().merge(&state))
                })
            })
            .await
            .map_err(|_| CoordError::Runtime)?;
        }
        let account = account.clone();
        self.run(async move { this.record_plan_here(&account, &plan, &state).await })
            .await
    }

    async fn record_plan_here(
        &self,
        account: &ResourceId,
        plan: &str,
        state: &PlanDoc,
    ) -> Result<(), CoordError> {
        let blob = blob_name(account);
        self.ensure_blob(&blob).await?;
        let until = std::time::Instant::now() + self.config.lease;
        let lease = loop {
            match Lease::acquire(&self.client, &blob, self.config.lease).await {
                Ok(lease) => break lease,
                Err(CoordError::Held { .. }) if std::time::Instant::now() < until => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let result = async {
            let (mut doc, etag) = self.read_leased(&blob).await?;
            if !doc.plans.entry(plan.to_owned()).or_default().merge(state) {
                return Ok(());
            }
            doc.account
                .get_or_insert_with(|| account.as_str().to_owned());
            self.write_leased(&blob, &mut doc, &lease, &etag).await
        }
        .await;
        lease.release().await;
        result
    }

    /// Writes `doc` (marked with this replica's fingerprint-key check) under a lease
    /// taken for one operation, with `If-Match` of the version read under it.
    async fn write_leased(
        &self,
        blob: &str,
        doc: &mut AccountDoc,
        lease: &Lease,
        etag: &ETag,
    ) -> Result<(), CoordError> {
        doc.fingerprint_check = Some(self.fingerprint_check.clone());
        lease.ensure()?;
        let (bytes, summary) = doc.encode();
        put_doc(
            &self.client,
            blob,
            &bytes,
            summary.as_deref(),
            &Conditions {
                lease: Some(lease.id()),
                if_match: Some(etag),
                if_none: false,
            },
        )
        .await?;
        self.stats.writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn find(&self, rotation_id: &str, write: &SharedWrite<'_>) -> Result<Arc<Held>, CoordError> {
        let blob = match write {
            SharedWrite::Begin(new) => {
                let blob = blob_name(&new.account);
                lock(&self.rotations).insert(rotation_id.to_owned(), blob.clone());
                blob
            }
            _ => lock(&self.rotations)
                .get(rotation_id)
                .cloned()
                .unwrap_or_default(),
        };
        lock(&self.held)
            .get(&blob)
            .cloned()
            .ok_or_else(|| CoordError::Lost {
                blob: if blob.is_empty() {
                    rotation_id.to_owned()
                } else {
                    blob
                },
                why: "this replica does not hold the account's lease".into(),
            })
    }

    /// One journal write to the held account's blob: applied to the document, written
    /// with the lease id and `If-Match`, the document kept only once the service
    /// accepted it. Blocks until then (the journal's writes are synchronous).
    fn write(
        &self,
        held: &Held,
        change: impl FnOnce(&mut AccountDoc) -> Result<bool, String>,
    ) -> Result<(), CoordError> {
        let blob = held.lease.blob().to_owned();
        held.lease.ensure()?;
        let mut current = lock(&held.doc);
        let mut doc = current.0.clone();
        let changed = change(&mut doc).map_err(|detail| CoordError::Format {
            blob: blob.clone(),
            detail,
        })?;
        if !changed {
            return Ok(());
        }
        doc.holder = Some(Holder {
            replica: self.config.replica.clone(),
            since: held.lease.since,
        });
        doc.fingerprint_check = Some(self.fingerprint_check.clone());
        let (bytes, summary) = doc.encode();
        let client = self.client.clone();
        let (lease, if_match) = (held.lease.id().clone(), current.1.clone());
        let result = self.wait(async move {
            let conditions = Conditions {
                lease: Some(&lease),
                if_match: Some(&if_match),
                if_none: false,
            };
            match put_doc(&client, &blob, &bytes, summary.as_deref(), &conditions).await {
                Ok(etag) => Ok(etag),
                Err(CoordError::Azure(e)) if e.is_transient() => {
                    // Sent once; learn whether it landed.
                    match client.get(&blob).await? {
                        Some((stored, etag)) if stored == bytes => Ok(etag),
                        _ => Err(CoordError::Azure(e)),
                    }
                }
                Err(e) => Err(e),
            }
        });
        let etag = match result {
            Ok(etag) => etag,
            Err(e) => {
                if e.is_lease_loss() || matches!(e, CoordError::Changed { .. }) {
                    held.count_loss(&self.stats);
                }
                return Err(e);
            }
        };
        self.stats.writes.fetch_add(1, Ordering::Relaxed);
        *current = (doc, etag);
        Ok(())
    }
}

impl Mirror for Coordinator {
    fn record(
        &self,
        rotation_id: &str,
        write: SharedWrite<'_>,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let held = self.find(rotation_id, &write)?;
        self.write(&held, |doc| {
            doc.apply(rotation_id, write).map_err(|e| e.to_string())
        })
        .map_err(Into::into)
    }
}

/// The lease of one account, held (and renewed) until dropped; dropping releases it.
pub struct AccountLease {
    coordinator: Arc<Coordinator>,
    blob: String,
    held: Arc<Held>,
}

impl std::fmt::Debug for AccountLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountLease")
            .field("blob", &self.blob)
            .finish()
    }
}

impl AccountLease {
    /// Fails unless the lease is still held with enough time left for a step.
    pub(crate) fn ensure(&self) -> Result<(), CoordError> {
        self.held.lease.ensure()
    }

    pub fn blob(&self) -> &str {
        &self.blob
    }
}

impl Drop for AccountLease {
    fn drop(&mut self) {
        self.held.stop.cancel();
        lock(&self.coordinator.held).remove(&self.blob);
        let held = self.held.clone();
        if let Some(handle) = self.coordinator.background.handle() {
            handle.spawn(async move { held.lease.release().await });
        }
    }
}
