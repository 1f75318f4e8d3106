//! Consumer steps, whatever the kind: binding a consumer to a key (check first, write
//! only if needed), verifying it, and disabling versions that hold a given value. What
//! each kind reads and writes is its module's (`crate::consumer`); this is the part
//! every kind shares.
//!
//! A write whose outcome is unclear is followed by a read: if the consumer holds the
//! target now, the bind succeeded. A value is written only when the key still has the
//! fingerprint the machine asked for.

use chrono::{DateTime, Utc};

use super::engine::EngineError;
use super::step::{Ctx, Done, azure_failure};
use crate::azure::Error;
use crate::consumer::{Confirmation, Held, Target, resolve};
use crate::key::KeyName;
use crate::rotation::machine::{ConsumerRef, Failure, FailureKind, StepResult};
use crate::secret::Fingerprint;

impl Ctx<'_> {
    /// Whether the consumer holds `fingerprint` now; `None` when that cannot be read.
    async fn holds(&self, target: &Target<'_>, fingerprint: Fingerprint) -> Option<bool> {
        match target.held(self).await {
            Ok(Held::Key(fp)) => Some(fp == fingerprint),
            Ok(Held::NoKey(_)) => Some(false),
            Ok(Held::WriteOnly) | Err(_) => None,
        }
    }

    /// Reads ahead what the bind of `consumer` to `fingerprint` will read first, while
    /// other steps run (a bind held back until the rest of its batch answered). Only
    /// when this run's observation saw it hold another value, so the bind will write;
    /// reads only, and a failed read is simply made again by the bind.
    pub(crate) async fn prepare_bind(&self, consumer: &ConsumerRef, fingerprint: Fingerprint) {
        if !self.saw_without(&consumer.id, fingerprint) {
            return;
        }
        if let Ok(target) = resolve(self.plan, &consumer.id) {
            target.prepare_write(self).await;
        }
    }

    /// Makes the consumer hold `key`, whose value must have `fingerprint`.
    pub async fn bind(
        &self,
        consumer: &ConsumerRef,
        key: KeyName,
        fingerprint: Fingerprint,
    ) -> Result<Done, EngineError> {
        let target = resolve(self.plan, &consumer.id)?;
        // What an earlier write of it left for its verification is not this bind's.
        drop(self.take_put_settings(&consumer.id));
        let failed = |reason: Failure| Done::ok(StepResult::BindFailed { reason });
        // What it holds and the keys are independent reads: one round trip. When this
        // run's observation saw it hold something else, it is not read again.
        let (holds, keys) = if self.observed_without(&consumer.id, fingerprint) {
            (Some(false), self.keys().await)
        } else {
            tokio::join!(self.holds(&target, fingerprint), self.keys())
        };
        if holds == Some(true) {
            tracing::debug!(rotation = self.rotation_id, consumer = %consumer.id, "already holds the key; nothing to write");
            return Ok(Done::ok(StepResult::Bound));
        }
        let keys = match keys {
            Ok(keys) => keys,
            Err(e) => {
                return Ok(Done::failed(
                    StepResult::BindFailed {
                        reason: azure_failure("cannot read the keys: ", &e),
                    },
                    &e,
                ));
            }
        };
        let value = keys.value(key).clone();
        drop(keys);
        if self.fingerprint(&value) != fingerprint {
            return Ok(failed(Failure::new(
                FailureKind::KeyChanged,
                format!(
                    "{key} no longer has fingerprint {fingerprint} (it changed outside this rotation); nothing was written"
                ),
            )));
        }
        let written = target.write(self, key, &value).await;
        drop(value);
        match written {
            Ok(()) => Ok(Done::ok(StepResult::Bound)),
            Err(e) => {
                // The write may have landed before the error: ask.
                if self.holds(&target, fingerprint).await == Some(true) {
                    tracing::info!(rotation = self.rotation_id, consumer = %consumer.id, error = %e, "the write failed but the consumer holds the key");
                    return Ok(Done::ok(StepResult::Bound));
                }
                Ok(Done::failed(
                    StepResult::BindFailed {
                        reason: azure_failure("", &e),
                    },
                    &e,
                ))
            }
        }
    }

    /// Checks that the consumer holds `key` with `fingerprint`, and that `key` still
    /// has that fingerprint in Azure. A consumer whose value cannot be read back is
    /// checked by its kind against `bound_at`, when keyflip wrote it.
    pub async fn verify(
        &self,
        consumer: &ConsumerRef,
        key: KeyName,
        fingerprint: Fingerprint,
        bound_at: Option<DateTime<Utc>>,
    ) -> Result<Done, EngineError> {
        let target = resolve(self.plan, &consumer.id)?;
        let mismatch = |reason: Failure| Ok(Done::ok(StepResult::ConsumerMismatch { reason }));
        let wrong = |message: String| mismatch(Failure::new(FailureKind::WrongValue, message));
        let unreadable = |e: Error| {
            Ok(Done::failed(
                StepResult::ConsumerMismatch {
                    reason: azure_failure("cannot read it: ", &e),
                },
                &e,
            ))
        };
        // The key's fingerprint in Azure and what the consumer holds are read at once
        // (one round trip); the consumer's answer counts only if the key is unchanged.
        // What the kind confirms and what the consumer holds are read together too;
        // the holding counts only when the kind has nothing to confirm.
        let (keys, confirmed, held) = tokio::join!(
            self.keys(),
            target.confirm_write(self, bound_at),
            target.held(self)
        );
        let seen = match confirmed {
            Some(confirmation) => Err(confirmation),
            None => Ok(held),
        };
        match keys {
            Ok(keys) if self.fingerprint_of(&keys, key) == fingerprint => {}
            Ok(_) => {
                return mismatch(Failure::new(
                    FailureKind::KeyChanged,
                    format!(
                        "{key} no longer has fingerprint {fingerprint}; it changed outside this rotation"
                    ),
                ));
            }
            Err(e) => return unreadable(e),
        }
        let held = match seen {
            Err(Confirmation::Confirmed) => return Ok(Done::ok(StepResult::ConsumerVerified)),
            Err(Confirmation::Mismatch(reason)) => return mismatch(reason),
            Err(Confirmation::Unreadable(e)) => return unreadable(e),
            Ok(held) => held,
        };
        match held {
            Ok(Held::Key(fp)) if fp == fingerprint => Ok(Done::ok(StepResult::ConsumerVerified)),
            Ok(Held::Key(fp)) => {
                let which = match self.keys().await {
                    Ok(keys) => KeyName::BOTH
                        .into_iter()
                        .find(|k| self.fingerprint_of(&keys, *k) == fp)
                        .map_or("neither key".to_owned(), |k| k.to_string()),
                    Err(_) => "another value".to_owned(),
                };
                wrong(format!(
                    "it holds {which} ({fp}), not {key} ({fingerprint})"
                ))
            }
            Ok(Held::NoKey(why)) => wrong(why),
            Ok(Held::WriteOnly) => Ok(Done::ok(StepResult::ConsumerVerified)),
            Err(e) => unreadable(e),
        }
    }

    /// Disables every enabled version of the consumer whose value has one of
    /// `fingerprints`. Kinds that keep no versions have nothing to do.
    pub(crate) async fn disable_versions(
        &self,
        consumer: &ConsumerRef,
        fingerprints: &[Fingerprint],
    ) -> Result<Done, EngineError> {
        let target = resolve(self.plan, &consumer.id)?;
        match target.disable_versions(self, fingerprints).await {
            Ok(versions) => Ok(Done::ok(StepResult::VersionsDisabled { versions })),
            Err(e) => Ok(Done::failed(
                StepResult::DisableFailed {
                    reason: azure_failure("", &e),
                },
                &e,
            )),
        }
    }
}
