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
use super::value::AccountAddress;
use crate::azure::storage::{AccountKeys, KeyBefore, RegenerateOutcome, StorageAccount};
use crate::azure::{self, probe::ProbeOutcome};
use crate::key::KeyName;
use crate::plan::Plan;
use crate::rotation::machine::{KeyState, StepResult};
use crate::secret::Fingerprint;

/// A step's result, and the Azure request id behind a failure.
#[derive(Debug)]
pub(super) struct Done {
    pub result: StepResult,
    pub request_id: Option<String>,
    /// The step stopped because keyflip is being interrupted, not because Azure
    /// refused: its result is not recorded (the step stays in doubt and a resume
    /// reconciles it).
    pub interrupted: bool,
}

impl Done {
    pub fn ok(result: StepResult) -> Done {
        Done {
            result,
            request_id: None,
            interrupted: false,
        }
    }

    pub fn failed(result: StepResult, error: &azure::Error) -> Done {
        Done {
            result,
            request_id: error.call().and_then(|c| c.request_id.clone()),
            interrupted: error.is_interrupted(),
        }
    }
}

/// What every step of one rotation shares.
pub(super) struct Ctx<'a> {
    pub inner: &'a Inner,
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
    pub fn new(inner: &'a Inner, plan: &'a Plan, rotation_id: &'a str) -> Ctx<'a> {
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

    pub fn fingerprint_of(&self, keys: &AccountKeys, key: KeyName) -> Fingerprint {
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
    pub fn forget_keys(&self) {
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
                    error: error.to_string(),
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
        let rejected = |reason: String| Ok(Done::ok(StepResult::KeyRejected { reason }));
        let keys = match self.keys().await {
            Ok(keys) => keys,
            Err(e) => {
                return Ok(Done::failed(
                    StepResult::KeyRejected {
                        reason: format!("cannot read the keys: {e}"),
                    },
                    &e,
                ));
            }
        };
        if self.fingerprint_of(&keys, key) != fingerprint {
            return rejected(format!(
                "{key} no longer has fingerprint {fingerprint}; it was regenerated outside this rotation"
            ));
        }
        let account = match self.account().await {
            Ok(account) => account,
            Err(e) => {
                return Ok(Done::failed(
                    StepResult::KeyRejected {
                        reason: format!("cannot read the account: {e}"),
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
                Err(e) => return rejected(e.to_string()),
            };
            match probe.outcome {
                ProbeOutcome::Works => {
                    tracing::info!(rotation = self.rotation_id, key = %key, probes, "key accepted on the data plane");
                    return Ok(Done::ok(StepResult::KeyVerified));
                }
                ProbeOutcome::SharedKeysDisabled => {
                    return Ok(Done {
                        result: StepResult::KeyRejected {
                            reason: format!(
                                "shared-key access is disabled on the account: {}",
                                probe.detail
                            ),
                        },
                        request_id: probe.request_id,
                        interrupted: false,
                    });
                }
                _ => {}
            }
            let next = clock.now() + TimeDelta::from_std(backoff).unwrap_or(TimeDelta::MAX);
            if next > deadline {
                return Ok(Done {
                    result: StepResult::KeyRejected {
                        reason: format!(
                            "the blob service did not accept {key} within the verification budget of {} ({probes} probes; last: {} {}{})",
                            crate::plan::duration::format(budget),
                            probe.outcome,
                            probe
                                .status
                                .map(|s| format!("HTTP {s} "))
                                .unwrap_or_default(),
                            probe.detail
                        ),
                    },
                    request_id: probe.request_id,
                    interrupted: false,
                });
            }
            clock.sleep_until(next).await;
            backoff = (backoff * 2).min(self.inner.options.probe_max_backoff);
        }
    }
}
