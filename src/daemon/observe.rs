//! The daemon's checks of a plan (at start-up and every drift interval), done with as
//! few ARM calls as Azure allows, and none that Azure counts as a write unless
//! something changed.
//!
//! A **quick check** reads the storage account (a GET, an ARM read) and the version
//! list of each Key Vault secret (Key Vault reads). It is enough when:
//! - both keys' `keyCreationTime` equal what the last full check (or a finished
//!   rotation) recorded: Azure offers no way to change a key but `regenerateKey`, and
//!   regenerating sets the key's `keyCreationTime` to the time of regeneration, so
//!   equal creation times mean the same keys, and the fingerprints recorded with them
//!   still hold; and
//! - no Key Vault secret has a newer version than the last full check saw, other than
//!   versions keyflip wrote (keyflip tags every version it writes).
//!
//! Otherwise, or when the account reports no creation time (accounts whose keys were
//! never regenerated), or after a job that ended without a full picture, a **full
//! check** reads everything as a rotation's first observation does (`listKeys`, a POST
//! Azure counts as a write, and every consumer), then assesses drift.
//!
//! Why this is safe: checks only report; a rotation never acts on them. Every rotation
//! makes its own full observation before it changes anything, and reconciles an
//! uncertain `regenerateKey` from fingerprints *and* `keyCreationTime`. What a quick
//! check cannot see is a consumer that changed without a new Key Vault version (an ML
//! datastore or workspace, a write-only secret written by someone else): the next full
//! check or rotation finds it, and a rotation's precheck refuses a consumer on neither
//! key or a split.

use chrono::{DateTime, Utc};

use super::drift::{KEYFLIP_TAG_PREFIX, Observation};
use super::scheduler::Context;
use crate::consumer;
use crate::journal::ObservedKeys;
use crate::plan::Plan;

/// What a check found.
#[derive(Debug)]
pub enum Checked {
    /// Keys and Key Vault secrets as last seen (`at`: when this check read them).
    Unchanged { at: DateTime<Utc> },
    /// Everything read afresh.
    Full(Box<Observation>),
}

/// What a check starts from.
#[derive(Clone, Debug, Default)]
pub(super) struct Baseline {
    pub keys: Option<ObservedKeys>,
    /// Per Key Vault consumer, the newest version the last full check saw
    /// ([`version_key`]).
    pub(crate) kv_seen: Box<[u64]>,
    /// Read everything regardless.
    pub full: bool,
}

/// Checks the plan: quickly when the baseline allows, fully otherwise.
pub(super) async fn check(ctx: &Context, plan: &Plan, base: Baseline) -> Result<Checked, String> {
    if !base.full
        && let Some(keys) = base.keys
        && let (Some(k1), Some(k2)) = (keys.key1.created, keys.key2.created)
    {
        let at = ctx.clock.now();
        let account = ctx
            .engine
            .azure()
            .storage_account(&plan.storage_account)
            .await
            .map_err(|e| e.to_string())?;
        let same_keys = account.key1_created == Some(k1) && account.key2_created == Some(k2);
        if same_keys && !kv_changed(ctx, plan, &base.kv_seen).await {
            return Ok(Checked::Unchanged { at });
        }
        tracing::debug!(plan = %plan.name, same_keys, "quick check saw a change; reading everything");
    }
    full(ctx, plan).await.map(|o| Checked::Full(Box::new(o)))
}

/// Whether a Key Vault secret has a version newer than the last full check saw that
/// keyflip did not write. A secret that cannot be listed counts as changed.
async fn kv_changed(ctx: &Context, plan: &Plan, seen: &[u64]) -> bool {
    for (id, found) in consumer::versions(ctx.engine.azure(), plan).await {
        let id = id.to_string();
        let versions = match found {
            Ok(v) => v,
            Err(_) => return true,
        };
        let Some(newest) = versions.iter().rev().find(|v| v.enabled) else {
            continue;
        };
        let ours = newest
            .tags
            .keys()
            .any(|t| t.to_ascii_lowercase().starts_with(KEYFLIP_TAG_PREFIX));
        let known = seen.contains(&version_key(&id, &newest.version));
        if !ours && !known {
            return true;
        }
    }
    false
}

/// Reads the plan's live state and its Key Vault versions.
async fn full(ctx: &Context, plan: &Plan) -> Result<Observation, String> {
    let inventory = ctx.engine.observe(plan).await.map_err(|e| e.to_string())?;
    let mut versions = Vec::new();
    for (id, found) in consumer::versions(ctx.engine.azure(), plan).await {
        match found {
            Ok(list) => versions.push((id.to_string(), list)),
            Err(e) => {
                tracing::warn!(plan = %plan.name, consumer = %id, error = %e, "cannot list the secret's versions; skipping it in this drift check");
            }
        }
    }
    Ok(Observation {
        inventory,
        versions,
    })
}

/// The newest enabled version of each Key Vault consumer in a full observation.
pub(super) fn newest_versions(observation: &Observation) -> Box<[u64]> {
    observation
        .versions
        .iter()
        .filter_map(|(id, versions)| {
            versions
                .iter()
                .rev()
                .find(|v| v.enabled)
                .map(|v| version_key(id, &v.version))
        })
        .collect()
}

/// A consumer's version as eight bytes (FNV-1a of both): only compared for equality,
/// and a collision would only skip one quick check's escalation.
pub(super) fn version_key(consumer: &str, version: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in consumer.bytes().chain([0]).chain(version.bytes()) {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}
