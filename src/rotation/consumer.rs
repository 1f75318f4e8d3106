//! Consumer steps: what a consumer holds, binding it to a key (check first, write only
//! if needed), verifying it, and disabling Key Vault versions that hold a given value.
//!
//! Per kind: a Key Vault secret gets a new version (value in the plan's format, content
//! type, expiry, the plan's tags plus `keyflip-key`, `keyflip-rotation` and Microsoft's
//! `CredentialId`); an ML datastore is updated in place (GET, replace the key, PUT,
//! which the service validates); an ML workspace is told to `resyncKeys` (it takes a
//! key of Azure's choosing, which the verification checks); a Databricks secret is
//! written with `secrets/put` (its value cannot be read back, so it is verified by its
//! `last_updated_timestamp`). A write whose outcome is unclear is followed by a read:
//! if the consumer holds the target now, the bind succeeded.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};

use super::engine::EngineError;
use super::step::{Ctx, Done, azure_failure};
use super::target::{Target, resolve};
use super::value;
use crate::azure::Error;
use crate::azure::datastore::DatastoreSecret;
use crate::azure::keyvault::NewSecretVersion;
use crate::key::KeyName;
use crate::rotation::machine::{ConsumerRef, Failure, FailureKind, StepResult};
use crate::secret::{Fingerprint, StorageKey};

/// What a consumer holds, as far as Azure tells.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Held {
    /// The fingerprint of the account key in it.
    Key(Fingerprint),
    /// It holds no account key (a SAS, another credential type); the reason says which.
    NoKey(String),
    /// Its value cannot be read back (Databricks).
    WriteOnly,
}

impl Ctx<'_> {
    fn fp(&self, key: &StorageKey) -> Fingerprint {
        self.inner.fingerprinter.fingerprint(key)
    }

    fn held_value(&self, value: &StorageKey, what: &str) -> Held {
        match value::account_key(value) {
            Some(key) => Held::Key(self.fp(&key)),
            None => Held::NoKey(format!("{what} holds no account key")),
        }
    }

    /// What the consumer holds now.
    pub async fn held(&self, target: &Target<'_>) -> Result<Held, Error> {
        let azure = &self.inner.azure;
        match target {
            Target::KeyVault { secret, vault } => {
                let latest = azure.get_secret(vault, &secret.secret, None).await?;
                Ok(self.held_value(&latest.value, "its latest version"))
            }
            Target::Datastore { workspace, name } => {
                match azure.ml_datastore_secret(workspace, name).await? {
                    DatastoreSecret::AccountKey(key) => Ok(Held::Key(self.fp(&key))),
                    DatastoreSecret::Sas(_) => Ok(Held::NoKey(
                        "it uses a SAS token, not an account key".into(),
                    )),
                    DatastoreSecret::Other { secrets_type } => Ok(Held::NoKey(format!(
                        "it uses {secrets_type} credentials, not an account key"
                    ))),
                }
            }
            Target::Workspace { workspace } => {
                let keys = azure.ml_workspace_keys(workspace).await?;
                Ok(match keys.user_storage_key {
                    Some(key) => Held::Key(self.fp(&key)),
                    None => Held::NoKey("the workspace reports no cached storage key".into()),
                })
            }
            Target::Databricks { .. } => Ok(Held::WriteOnly),
        }
    }

    /// Whether the consumer holds `fingerprint` now; `None` when that cannot be read.
    async fn holds(&self, target: &Target<'_>, fingerprint: Fingerprint) -> Option<bool> {
        match self.held(target).await {
            Ok(Held::Key(fp)) => Some(fp == fingerprint),
            Ok(Held::NoKey(_)) => Some(false),
            Ok(Held::WriteOnly) | Err(_) => None,
        }
    }

    /// Makes the consumer hold `key`, whose value must have `fingerprint`.
    pub async fn bind(
        &self,
        consumer: &ConsumerRef,
        key: KeyName,
        fingerprint: Fingerprint,
    ) -> Result<Done, EngineError> {
        let target = resolve(self.plan, consumer)?;
        let failed = |reason: Failure| Done::ok(StepResult::BindFailed { reason });
        if self.holds(&target, fingerprint).await == Some(true) {
            tracing::debug!(rotation = self.rotation_id, consumer = %consumer.id, "already holds the key; nothing to write");
            return Ok(Done::ok(StepResult::Bound));
        }
        let keys = match self.keys().await {
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
        if self.fp(&value) != fingerprint {
            return Ok(failed(Failure::new(
                FailureKind::KeyChanged,
                format!(
                    "{key} no longer has fingerprint {fingerprint} (it changed outside this rotation); nothing was written"
                ),
            )));
        }
        let written = self.write(&target, key, &value).await;
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

    async fn write(
        &self,
        target: &Target<'_>,
        key: KeyName,
        value: &StorageKey,
    ) -> Result<(), Error> {
        let azure = &self.inner.azure;
        match target {
            Target::KeyVault { secret, vault } => {
                let address = self.address().await?;
                let stored = value::format(secret.format, &address, value);
                let mut tags: BTreeMap<String, String> = secret.tags.clone();
                tags.insert("keyflip-key".into(), key.as_str().into());
                tags.insert("keyflip-rotation".into(), self.rotation_id.into());
                // Microsoft's dual-key rotation sample records the key here.
                tags.insert("CredentialId".into(), key.as_str().into());
                let expires = secret.expires_after_days.and_then(|days| {
                    self.now()
                        .checked_add_signed(TimeDelta::days(i64::from(days)))
                });
                azure
                    .set_secret(
                        vault,
                        &secret.secret,
                        NewSecretVersion {
                            value: &stored,
                            content_type: Some(secret.content_type.clone()),
                            tags,
                            expires,
                        },
                    )
                    .await?;
                Ok(())
            }
            Target::Datastore { workspace, name } => {
                azure.set_ml_datastore_key(workspace, name, value).await?;
                Ok(())
            }
            Target::Workspace { workspace } => {
                azure
                    .resync_ml_workspace_keys(workspace, self.inner.options.resync_deadline)
                    .await?;
                Ok(())
            }
            Target::Databricks { secret, workspace } => {
                let address = self.address().await?;
                let stored = value::format(secret.format, &address, value);
                azure
                    .databricks_put_secret(workspace, &secret.scope, &secret.key, &stored)
                    .await?;
                Ok(())
            }
        }
    }

    /// Checks that the consumer holds `key` with `fingerprint`, and that `key` still
    /// has that fingerprint in Azure. A Databricks secret is checked by its update time:
    /// at or after `bound_at`, when keyflip wrote it.
    pub async fn verify(
        &self,
        consumer: &ConsumerRef,
        key: KeyName,
        fingerprint: Fingerprint,
        bound_at: Option<DateTime<Utc>>,
    ) -> Result<Done, EngineError> {
        let target = resolve(self.plan, consumer)?;
        let mismatch = |kind: FailureKind, message: String| {
            Ok(Done::ok(StepResult::ConsumerMismatch {
                reason: Failure::new(kind, message),
            }))
        };
        let unreadable = |e: Error| {
            Ok(Done::failed(
                StepResult::ConsumerMismatch {
                    reason: azure_failure("cannot read it: ", &e),
                },
                &e,
            ))
        };
        match self.keys().await {
            Ok(keys) if self.fingerprint_of(&keys, key) == fingerprint => {}
            Ok(_) => {
                return mismatch(
                    FailureKind::KeyChanged,
                    format!(
                        "{key} no longer has fingerprint {fingerprint}; it changed outside this rotation"
                    ),
                );
            }
            Err(e) => return unreadable(e),
        }
        if let Target::Databricks { secret, workspace } = &target {
            let secrets = match self
                .inner
                .azure
                .databricks_secrets(workspace, &secret.scope)
                .await
            {
                Ok(s) => s,
                Err(e) => return unreadable(e),
            };
            let Some(found) = secrets.iter().find(|s| s.key == secret.key) else {
                return mismatch(
                    FailureKind::WrongValue,
                    format!("scope {} has no secret {}", secret.scope, secret.key),
                );
            };
            let skew = TimeDelta::from_std(self.inner.options.databricks_skew).unwrap_or_default();
            return match (found.last_updated, bound_at) {
                (Some(updated), Some(bound)) if updated + skew >= bound => {
                    Ok(Done::ok(StepResult::ConsumerVerified))
                }
                (updated, bound) => mismatch(
                    FailureKind::WrongValue,
                    format!(
                        "its last update ({}) is not after keyflip wrote it ({}); Databricks values cannot be read back, so the write is not confirmed",
                        updated.map_or("unknown".into(), |t| t.to_rfc3339()),
                        bound.map_or("never".into(), |t| t.to_rfc3339()),
                    ),
                ),
            };
        }
        match self.held(&target).await {
            Ok(Held::Key(fp)) if fp == fingerprint => Ok(Done::ok(StepResult::ConsumerVerified)),
            Ok(Held::Key(fp)) => {
                let which = match self.keys().await {
                    Ok(keys) => KeyName::BOTH
                        .into_iter()
                        .find(|k| self.fingerprint_of(&keys, *k) == fp)
                        .map_or("neither key".to_owned(), |k| k.to_string()),
                    Err(_) => "another value".to_owned(),
                };
                mismatch(
                    FailureKind::WrongValue,
                    format!("it holds {which} ({fp}), not {key} ({fingerprint})"),
                )
            }
            Ok(Held::NoKey(why)) => mismatch(FailureKind::WrongValue, why),
            Ok(Held::WriteOnly) => Ok(Done::ok(StepResult::ConsumerVerified)),
            Err(e) => unreadable(e),
        }
    }

    /// Disables every enabled version of a Key Vault secret whose value has one of
    /// `fingerprints`. Other consumers have no versions: nothing to do.
    pub async fn disable_versions(
        &self,
        consumer: &ConsumerRef,
        fingerprints: &[Fingerprint],
    ) -> Result<Done, EngineError> {
        let Target::KeyVault { secret, vault } = resolve(self.plan, consumer)? else {
            return Ok(Done::ok(StepResult::VersionsDisabled { versions: vec![] }));
        };
        let azure = &self.inner.azure;
        let failed = |e: Error| {
            Ok(Done::failed(
                StepResult::DisableFailed {
                    reason: azure_failure("", &e),
                },
                &e,
            ))
        };
        let versions = match azure.secret_versions(&vault, &secret.secret).await {
            Ok(v) => v,
            Err(e) => return failed(e),
        };
        let mut disabled = Vec::new();
        for version in versions.iter().filter(|v| v.enabled) {
            let value = match azure
                .get_secret(&vault, &secret.secret, Some(&version.version))
                .await
            {
                Ok(v) => v.value,
                Err(e) => return failed(e),
            };
            let held = value::account_key(&value).map(|k| self.fp(&k));
            drop(value);
            if held.is_some_and(|fp| fingerprints.contains(&fp)) {
                if let Err(e) = azure
                    .disable_secret_version(&vault, &secret.secret, &version.version)
                    .await
                {
                    return failed(e);
                }
                disabled.push(version.version.clone());
            }
        }
        Ok(Done::ok(StepResult::VersionsDisabled {
            versions: disabled,
        }))
    }
}
