//! Performing one command against Azure: the account-level steps (regenerate, verify
//! a key on the data plane, commit, wait). Consumer steps are in `consumer`.
//!
//! Every step answers with a definite [`StepResult`]: ambiguity is reconciled here
//! (reading back what Azure holds) before a failure is reported. The one exception is
//! a `regenerateKey` whose outcome stays unknown even after reading back: that stops
//! the run with [`EngineError::InDoubt`], because reporting it either way could make
//! keyflip regenerate a key twice or trust a key that died.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::{Mutex, OnceCell};

use super::engine::{EngineError, Inner};
use crate::azure::datafactory::LinkedService;
use crate::azure::datastore::Datastore;
use crate::azure::storage::{AccountKeys, KeyBefore, RegenerateOutcome, StorageAccount};
use crate::azure::web::{Listed, PutSettings};
use crate::azure::{self, Azure, probe::ProbeOutcome};
use crate::consumer::{AccountAddress, ConsumerId};
use crate::journal::{JournalError, WriteMark};
use crate::key::KeyName;
use crate::plan::Plan;
use crate::rotation::machine::{Failure, FailureKind, KeyState, StepResult};
use crate::secret::{Fingerprint, StorageKey};

/// A step's result, the Azure request id behind a failure, and what progress output
/// should say about it beyond the result (not journaled).
#[derive(Debug)]
pub(crate) struct Done {
    pub result: StepResult,
    pub request_id: Option<String>,
    /// The step stopped because keyflip is being interrupted, not because Azure
    /// refused: its result is not recorded (the step stays in doubt and a resume
    /// reconciles it).
    pub interrupted: bool,
    pub note: Option<String>,
}

impl Done {
    pub fn ok(result: StepResult) -> Done {
        Done {
            result,
            request_id: None,
            interrupted: false,
            note: None,
        }
    }

    pub fn failed(result: StepResult, error: &azure::Error) -> Done {
        Done {
            result,
            request_id: error.call().and_then(|c| c.request_id.clone()),
            interrupted: error.is_interrupted(),
            note: None,
        }
    }

    /// With a note for progress output (a probe's attempt count).
    pub(crate) fn noted(mut self, note: String) -> Done {
        self.note = Some(note);
        self
    }
}

/// A failure from an Azure error: the kind its variant stands for, its text as the
/// message (after `context`, when given).
pub(super) fn azure_failure(context: &str, e: &azure::Error) -> Failure {
    let kind = match e {
        azure::Error::Credential {
            transient: true, ..
        }
        | azure::Error::Throttled { .. }
        | azure::Error::Network { .. }
        | azure::Error::Server { .. }
        | azure::Error::Deadline { .. }
        | azure::Error::Deferred { .. }
        // Stopped waiting for a signal: the same call may succeed when resumed.
        | azure::Error::Interrupted { .. } => FailureKind::Transient,
        azure::Error::Credential { .. }
        | azure::Error::Unauthorized { .. }
        | azure::Error::Forbidden { .. } => FailureKind::Denied,
        azure::Error::NotFound { .. } => FailureKind::NotFound,
        azure::Error::Rejected { .. } | azure::Error::OperationFailed { .. } => {
            FailureKind::Rejected
        }
        // An answer pointing keyflip's token or signature at another origin.
        azure::Error::BadResponse { .. } | azure::Error::ForeignOrigin { .. } => {
            FailureKind::BadReply
        }
        // An untrusted certificate: the trust (`[cloud] ca_bundle`) must be fixed.
        azure::Error::Config(_) | azure::Error::Invalid(_) | azure::Error::Certificate { .. } => {
            FailureKind::Config
        }
    };
    Failure::new(kind, format!("{context}{e}"))
}

/// What every step of one rotation shares. The consumer kinds (`crate::consumer`)
/// reach Azure, the clock and the journal through its methods.
pub(crate) struct Ctx<'a> {
    pub(super) inner: &'a Inner,
    pub plan: &'a Plan,
    pub rotation_id: &'a str,
    account: OnceCell<StorageAccount>,
    /// Both keys as Azure last answered them, shared by the steps in flight together:
    /// a batch of binds or verifications reads the same two keys, and `listKeys`
    /// counts against the subscription's ARM write budget. The executor calls
    /// [`Ctx::forget_keys`] at every batch boundary (a batch that was only a `Commit`,
    /// which neither reads nor changes Azure, is none). Keys a step read survive into the
    /// next batch; keys an observation or a `regenerateKey` answered with survive two
    /// (into the data-plane check of the key consumers move to, where the probe, not
    /// the cache, proves the value works, and into the binds that write that verified
    /// value). A batch of consumer verifications always reads `listKeys` afresh, so a
    /// key changed behind keyflip's back is caught before anything is committed or
    /// retired. A regeneration never runs beside other steps nor reads the cache, and
    /// replaces it with its own answer, so no step sees keys from before a
    /// regeneration.
    keys: Mutex<Option<Carried>>,
    /// Datastore bodies the observation's discovery listed, by `workspace/name`, so
    /// the first bind of each PUTs without a GET; taken once (a rollback or a later
    /// bind GETs afresh), and never kept across runs.
    datastores: std::sync::Mutex<HashMap<String, Datastore>>,
    /// What this run's observation saw each readable consumer hold (`None`: neither
    /// key), so a bind whose target it did not hold writes without reading it again;
    /// taken once (a retried or rolled-back bind reads first, as a resumed run does
    /// after its own observation).
    observed: std::sync::Mutex<HashMap<ConsumerId, Option<Fingerprint>>>,
    /// Data Factory linked services as this run last read them, so a bind writes from
    /// the read (the etag guards the PUT); taken once.
    linked_services: std::sync::Mutex<HashMap<ConsumerId, LinkedService>>,
    /// The keys as they were before a revoke, when the plan has a usage gate: a
    /// revoke first asks the logs who signed with the leaked value after it died, and
    /// Azure no longer has it. Taken by that one query (or dropped with the run); a
    /// restarted run does not have it, and its query answers usage unknown.
    revoked: std::sync::Mutex<Option<(KeyName, Arc<AccountKeys>)>>,
    /// App Service settings listed while the other consumers were being bound, for the
    /// bind that comes after them (the first of its two listings); taken once.
    settings_listed: std::sync::Mutex<HashMap<ConsumerId, Listed>>,
    /// App Service settings as this run's bind PUT them, for the verification that
    /// follows (whose listing is the check that keyflip's value stayed); taken once.
    settings_put: std::sync::Mutex<HashMap<ConsumerId, PutSettings>>,
}

/// Keys in [`Ctx`]'s cache, and over how many more batch boundaries they survive.
struct Carried {
    keys: Arc<AccountKeys>,
    boundaries: u8,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(inner: &'a Inner, plan: &'a Plan, rotation_id: &'a str) -> Ctx<'a> {
        Ctx {
            inner,
            plan,
            rotation_id,
            account: OnceCell::new(),
            keys: Mutex::new(None),
            datastores: std::sync::Mutex::default(),
            observed: std::sync::Mutex::default(),
            linked_services: std::sync::Mutex::default(),
            revoked: std::sync::Mutex::default(),
            settings_listed: std::sync::Mutex::default(),
            settings_put: std::sync::Mutex::default(),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    pub fn azure(&self) -> &'a Azure {
        &self.inner.azure
    }

    /// The fingerprint of a value under the installation's fingerprint key.
    pub fn fingerprint(&self, key: &StorageKey) -> Fingerprint {
        self.inner.fingerprinter.fingerprint(key)
    }

    /// How long a workspace `resyncKeys` may run before the bind counts as failed.
    pub fn resync_deadline(&self) -> std::time::Duration {
        self.inner.options.resync_deadline
    }

    /// The clock skew tolerated when a service's update time is compared with when
    /// keyflip wrote (consumers whose value cannot be read back).
    pub fn update_skew(&self) -> TimeDelta {
        TimeDelta::from_std(self.inner.options.update_skew).unwrap_or_default()
    }

    /// The key keyflip last bound `consumer` to, and when, from the journal: how
    /// keyflip knows what a consumer whose value cannot be read back holds.
    pub(crate) fn last_bound(
        &self,
        consumer: &ConsumerId,
    ) -> Result<Option<(KeyName, Fingerprint, DateTime<Utc>)>, EngineError> {
        Ok(self.inner.journal().last_bound(consumer)?)
    }

    /// keyflip's latest write of `consumer` and the change marker Azure gave it: how
    /// keyflip knows what a consumer whose value cannot be read back, but which has an
    /// etag, holds (a Data Factory linked service).
    pub(crate) fn write_mark(
        &self,
        consumer: &ConsumerId,
    ) -> Result<Option<WriteMark>, EngineError> {
        Ok(self.inner.journal().write_mark(consumer)?)
    }

    /// Records that this rotation wrote the key with `fingerprint` to `consumer` and
    /// Azure marked the result `mark`. Called by the kind right after its write.
    pub(crate) fn record_write_mark(
        &self,
        consumer: &ConsumerId,
        fingerprint: Fingerprint,
        mark: String,
    ) -> Result<(), JournalError> {
        self.inner.journal().record_write_mark(
            consumer,
            &WriteMark {
                rotation_id: self.rotation_id.to_owned(),
                fingerprint,
                mark,
                at: self.now(),
            },
        )
    }

    pub(crate) fn fingerprint_of(&self, keys: &AccountKeys, key: KeyName) -> Fingerprint {
        self.inner.fingerprinter.fingerprint(keys.value(key))
    }

    /// The storage account (read once per run: its endpoints do not change).
    pub async fn account(&self) -> Result<&StorageAccount, azure::Error> {
        self.account
            .get_or_try_init(|| self.inner.azure.storage_account(&self.plan.storage_account))
            .await
    }

    pub async fn address(&self) -> Result<AccountAddress, azure::Error> {
        let account = self.account().await?;
        Ok(AccountAddress {
            name: account.name().to_owned(),
            blob_endpoint: account.blob_endpoint.clone(),
        })
    }

    /// Both keys, read once for the steps in flight (see `keys` above).
    pub async fn keys(&self) -> Result<Arc<AccountKeys>, azure::Error> {
        let mut cached = self.keys.lock().await;
        if let Some(carried) = cached.as_ref() {
            return Ok(carried.keys.clone());
        }
        let keys = Arc::new(
            self.inner
                .azure
                .storage_keys(&self.plan.storage_account)
                .await?,
        );
        *cached = Some(Carried {
            keys: keys.clone(),
            boundaries: 1,
        });
        Ok(keys)
    }

    /// Keeps `keys`, which Azure just answered with (an observation's `listKeys`, a
    /// `regenerateKey`), for the next two batches (see `keys` above).
    pub(super) async fn carry_keys(&self, keys: Arc<AccountKeys>) {
        *self.keys.lock().await = Some(Carried {
            keys,
            boundaries: 2,
        });
    }

    /// A batch boundary: carried keys survive it while they have boundaries left,
    /// unless the next batch verifies consumers (`fresh`); the next `keys()` after
    /// they are gone reads Azure again.
    pub(crate) fn forget_keys(&self, fresh: bool) {
        if let Ok(mut cached) = self.keys.try_lock() {
            match cached.as_mut() {
                Some(carried) if carried.boundaries > 0 && !fresh => carried.boundaries -= 1,
                _ => *cached = None,
            }
        }
    }

    /// Before revoking `key` (whose value is `fingerprint`), with a usage gate: keeps
    /// the keys this run already holds (never read for it) for the incident's usage
    /// query after the revoke (see `revoked` above).
    pub(super) async fn keep_revoked(&self, key: KeyName, fingerprint: Fingerprint) {
        if self.plan.usage_gate.is_none() {
            return;
        }
        let carried = self.keys.lock().await.as_ref().map(|c| c.keys.clone());
        if let Some(keys) = carried.filter(|k| self.fingerprint_of(k, key) == fingerprint)
            && let Ok(mut kept) = self.revoked.lock()
        {
            *kept = Some((key, keys));
        }
    }

    /// The revoked value of `key` with `fingerprint`, once (see `revoked` above).
    pub(crate) fn take_revoked(
        &self,
        key: KeyName,
        fingerprint: Fingerprint,
    ) -> Option<Arc<AccountKeys>> {
        let (k, keys) = self.revoked.lock().ok()?.take()?;
        (k == key && self.fingerprint_of(&keys, key) == fingerprint).then_some(keys)
    }

    /// Remembers what the observation saw `consumer` hold (see `observed` above).
    pub(super) fn observed_holding(&self, consumer: &ConsumerId, held: Option<Fingerprint>) {
        if let Ok(mut observed) = self.observed.lock() {
            observed.insert(consumer.clone(), held);
        }
    }

    /// Whether this run's observation showed that `consumer` did not hold
    /// `fingerprint` (once per consumer; `false` when it does not know).
    pub(super) fn observed_without(&self, consumer: &ConsumerId, fingerprint: Fingerprint) -> bool {
        self.observed
            .lock()
            .ok()
            .and_then(|mut observed| observed.remove(consumer))
            .is_some_and(|held| held != Some(fingerprint))
    }

    /// Remembers a linked service as just read (see `linked_services` above).
    pub(crate) fn read_linked_service(&self, consumer: &ConsumerId, read: LinkedService) {
        if let Ok(mut cache) = self.linked_services.lock() {
            cache.insert(consumer.clone(), read);
        }
    }

    /// The linked service as this run last read it, once.
    pub(crate) fn take_read_linked_service(&self, consumer: &ConsumerId) -> Option<LinkedService> {
        self.linked_services.lock().ok()?.remove(consumer)
    }

    /// Remembers a settings listing made ahead of `consumer`'s bind.
    pub(crate) fn listed_settings(&self, consumer: &ConsumerId, listed: Listed) {
        if let Ok(mut cache) = self.settings_listed.lock() {
            cache.insert(consumer.clone(), listed);
        }
    }

    /// The settings listing made ahead of `consumer`'s bind, once.
    pub(crate) fn take_listed_settings(&self, consumer: &ConsumerId) -> Option<Listed> {
        self.settings_listed.lock().ok()?.remove(consumer)
    }

    /// Remembers the settings `consumer`'s bind PUT, for its verification.
    pub(crate) fn put_settings(&self, consumer: &ConsumerId, put: PutSettings) {
        if let Ok(mut cache) = self.settings_put.lock() {
            cache.insert(consumer.clone(), put);
        }
    }

    /// The settings this run's bind of `consumer` PUT, once.
    pub(crate) fn take_put_settings(&self, consumer: &ConsumerId) -> Option<PutSettings> {
        self.settings_put.lock().ok()?.remove(consumer)
    }

    /// Whether this run's observation showed that `consumer` did not hold
    /// `fingerprint`, without using that up (see [`Ctx::observed_without`]).
    pub(super) fn saw_without(&self, consumer: &ConsumerId, fingerprint: Fingerprint) -> bool {
        self.observed
            .lock()
            .ok()
            .and_then(|observed| observed.get(consumer).copied())
            .is_some_and(|held| held != Some(fingerprint))
    }

    /// Remembers a datastore body the observation listed (see `datastores` above).
    pub(crate) fn listed_datastore(&self, key: String, body: Datastore) {
        if let Ok(mut listed) = self.datastores.lock() {
            listed.insert(key, body);
        }
    }

    /// The body the observation listed for a datastore, once.
    pub(crate) fn take_listed_datastore(&self, key: &str) -> Option<Datastore> {
        self.datastores.lock().ok()?.remove(key)
    }

    /// `regenerateKey`, sent once. With `in_doubt` (an intent without a result from a
    /// crashed run), Azure is asked first whether it happened: a fingerprint or
    /// creation time different from `before` means it did, and it is not sent again.
    pub async fn regenerate(
        &self,
        key: KeyName,
        before: KeyState,
        in_doubt: bool,
    ) -> Result<Done, EngineError> {
        let azure = &self.inner.azure;
        let id = &self.plan.storage_account;
        if in_doubt {
            // Read Azure itself, never the shared answer: this decides whether a
            // regeneration happened.
            let (keys, account) =
                tokio::try_join!(azure.storage_keys(id), azure.storage_account(id))?;
            let fingerprint = self.fingerprint_of(&keys, key);
            let created = account.key_created(key);
            let created_changed = crate::azure::storage::creation_changed(before.created, created);
            if fingerprint != before.fingerprint {
                self.carry_keys(Arc::new(keys)).await;
            }
            match (fingerprint != before.fingerprint, created_changed) {
                (true, _) => {
                    tracing::info!(rotation = self.rotation_id, key = %key, "an in-doubt regenerateKey had happened; not sending it again");
                    return Ok(Done::ok(StepResult::Regenerated {
                        fingerprint,
                        created,
                    }));
                }
                (false, false) => {
                    tracing::info!(rotation = self.rotation_id, key = %key, "an in-doubt regenerateKey had not happened; sending it now");
                }
                (false, true) => {
                    return Err(EngineError::InDoubt {
                        rotation_id: self.rotation_id.to_owned(),
                        step: format!("regenerating {key}"),
                        detail: format!(
                            "keyCreationTime.{key} changed but the key's value did not; Azure's view is inconsistent"
                        ),
                    });
                }
            }
        }
        let outcome = azure
            .regenerate_storage_key(
                id,
                key,
                KeyBefore {
                    fingerprint: before.fingerprint,
                    created: before.created,
                },
            )
            .await;
        match outcome {
            RegenerateOutcome::Happened(keys) => {
                let fingerprint = self.fingerprint_of(&keys, key);
                // The answer's `creationTime` is the account's `keyCreationTime` (Azure
                // sets both when it regenerates; comparisons allow a second's rounding,
                // see `creation_changed`). An answer without it costs an account GET.
                let created = match keys.get(key).created {
                    Some(created) => Some(created),
                    None => match azure.storage_account(id).await {
                        Ok(account) => account.key_created(key),
                        Err(e) => {
                            tracing::warn!(rotation = self.rotation_id, error = %e, "cannot read keyCreationTime after regenerateKey");
                            None
                        }
                    },
                };
                // The next steps (the new key's probe, the binds) use these keys, not
                // another listKeys.
                self.carry_keys(Arc::new(keys)).await;
                Ok(Done::ok(StepResult::Regenerated {
                    fingerprint,
                    created,
                }))
            }
            RegenerateOutcome::DidNotHappen(error) => Ok(Done::failed(
                StepResult::RegenerateFailed {
                    error: azure_failure("", &error),
                },
                &error,
            )),
            RegenerateOutcome::Unknown {
                cause,
                reconciliation,
            } => Err(EngineError::InDoubt {
                rotation_id: self.rotation_id.to_owned(),
                step: format!("regenerating {key}"),
                detail: format!("{cause}; reading the keys back failed too: {reconciliation}"),
            }),
        }
    }

    /// Probes `key` on the blob data plane until the service accepts it or `budget`
    /// runs out (a new key takes up to about 30 s to be accepted), backing off between
    /// probes through the injected clock.
    pub async fn verify_key(
        &self,
        key: KeyName,
        fingerprint: Fingerprint,
        budget: std::time::Duration,
    ) -> Result<Done, EngineError> {
        let rejected = |reason: Failure| Ok(Done::ok(StepResult::KeyRejected { reason }));
        let keys = match self.keys().await {
            Ok(keys) => keys,
            Err(e) => {
                return Ok(Done::failed(
                    StepResult::KeyRejected {
                        reason: azure_failure("cannot read the keys: ", &e),
                    },
                    &e,
                ));
            }
        };
        if self.fingerprint_of(&keys, key) != fingerprint {
            return rejected(Failure::new(
                FailureKind::KeyChanged,
                format!(
                    "{key} no longer has fingerprint {fingerprint}; it was regenerated outside this rotation"
                ),
            ));
        }
        let account = match self.account().await {
            Ok(account) => account,
            Err(e) => {
                return Ok(Done::failed(
                    StepResult::KeyRejected {
                        reason: azure_failure("cannot read the account: ", &e),
                    },
                    &e,
                ));
            }
        };
        let clock = &self.inner.clock;
        let deadline = clock.now() + TimeDelta::from_std(budget).unwrap_or(TimeDelta::MAX);
        let mut backoff = self.inner.options.probe_backoff;
        let mut probes = 0u32;
        loop {
            probes += 1;
            let probe = match self
                .inner
                .azure
                .probe_account_key(account, keys.value(key))
                .await
            {
                Ok(probe) => probe,
                Err(e) => return rejected(azure_failure("", &e)),
            };
            match probe.outcome {
                ProbeOutcome::Works => {
                    tracing::info!(rotation = self.rotation_id, key = %key, probes, "key accepted on the data plane");
                    return Ok(Done::ok(StepResult::KeyVerified).noted(format!(
                        "accepted after {probes} probe{}",
                        if probes == 1 { "" } else { "s" }
                    )));
                }
                ProbeOutcome::SharedKeysDisabled => {
                    return Ok(Done {
                        result: StepResult::KeyRejected {
                            reason: Failure::new(
                                FailureKind::SharedKeyAccessDisabled,
                                format!(
                                    "shared-key access is disabled on the account: {}",
                                    probe.detail
                                ),
                            ),
                        },
                        request_id: probe.request_id,
                        interrupted: false,
                        note: None,
                    });
                }
                _ => {}
            }
            let next = clock.now() + TimeDelta::from_std(backoff).unwrap_or(TimeDelta::MAX);
            if next > deadline {
                return Ok(Done {
                    result: StepResult::KeyRejected {
                        reason: Failure::new(
                            FailureKind::KeyNotAccepted,
                            format!(
                                "the blob service did not accept {key} within the verification budget of {} ({probes} probes; last: {} {}{})",
                                crate::plan::duration::format(budget),
                                probe.outcome,
                                probe
                                    .status
                                    .map(|s| format!("HTTP {s} "))
                                    .unwrap_or_default(),
                                probe.detail
                            ),
                        ),
                    },
                    request_id: probe.request_id,
                    interrupted: false,
                    note: None,
                });
            }
            clock.sleep_until(next).await;
            backoff = (backoff * 2).min(self.inner.options.probe_max_backoff);
        }
    }
}
