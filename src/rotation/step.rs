//! Performing one command against Azure: the account-level steps (regenerate, verify
//! a key on the data plane, commit, wait). Consumer steps are in `consumer`.
//!
//! Every step answers with a definite [`StepResult`]: ambiguity is reconciled here
//! (reading back what Azure holds) before a failure is reported. The one exception is
//! a `regenerateKey` whose outcome stays unknown even after reading back: that stops
//! the run with [`EngineError::InDoubt`], because reporting it either way could make
//! keyflip regenerate a key twice or trust a key that died.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::{Mutex, OnceCell};

use super::engine::{EngineError, Inner};
use crate::azure::storage::{AccountKeys, KeyBefore, RegenerateOutcome, StorageAccount};
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
    /// The `listKeys` answer shared by the steps in flight together: a batch of binds
    /// or verifications reads the same two keys, and `listKeys` counts against the
    /// subscription's ARM write budget. The executor clears it whenever nothing is in
    /// flight, and a regeneration never runs beside other steps nor reads it, so no
    /// step sees keys from before a regeneration.
    keys: Mutex<Option<Arc<AccountKeys>>>,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(inner: &'a Inner, plan: &'a Plan, rotation_id: &'a str) -> Ctx<'a> {
        Ctx {
            inner,
            plan,
            rotation_id,
            account: OnceCell::new(),
            keys: Mutex::new(None),
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
        if let Some(keys) = cached.as_ref() {
            return Ok(keys.clone());
        }
        let keys = Arc::new(
            self.inner
                .azure
                .storage_keys(&self.plan.storage_account)
                .await?,
        );
        *cached = Some(keys.clone());
        Ok(keys)
    }

    /// Drops the shared `listKeys` answer; the next `keys()` reads Azure again.
    pub(crate) fn forget_keys(&self) {
        if let Ok(mut cached) = self.keys.try_lock() {
            *cached = None;
        }
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
            let keys = azure.storage_keys(id).await?;
            let account = azure.storage_account(id).await?;
            let fingerprint = self.fingerprint_of(&keys, key);
            drop(keys);
            let created = account.key_created(key);
            let created_changed = before.created.is_some() && created != before.created;
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
                drop(keys);
                // The creation time `before` is compared with comes from the account,
                // so read it from there rather than from listKeys.
                let created = match azure.storage_account(id).await {
                    Ok(account) => account.key_created(key),
                    Err(e) => {
                        tracing::warn!(rotation = self.rotation_id, error = %e, "cannot read keyCreationTime after regenerateKey");
                        None
                    }
                };
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
