//! What a plan leaves out: the consumers discovery found for its account that the
//! plan does not list (nor find at rotation time, like `discover = true` datastores).
//! `doctor` reports them and a rotation's precheck warns about them (or refuses, with
//! `unlisted = "refuse"`).
//!
//! The precheck's check ([`check`]) is bounded so that it does not grow with the
//! fleet: it looks only in the account's own subscription, through the process's
//! [`DiscoveryCache`] (a daemon's rotations share the subscription's lists for
//! [`super::LIST_TTL`], and a secret's value is read again only once it has a new
//! version), reuses the keys the observation just read, and sends no ARM write it can
//! do without: which key an unlisted workspace or datastore holds is not needed to
//! know it is unlisted. (Listing App Service settings is a POST, so an ARM write; the
//! cache keeps what it found.) In the daemon its calls are deferrable (see
//! `crate::azure::budget::deferrable`): a rotation never waits for them.

use super::cache::DiscoveryCache;
use super::report::{AccountDiscovery, scan, written_for};
use super::scan::Account;
use super::{Finding, Verdict};
use crate::azure::Azure;
use crate::config::DiscoveryConfig;
use crate::consumer;
use crate::plan::Plan;
use crate::secret::{Fingerprint, Fingerprinter};

/// A consumer of the plan's account that the plan does not list.
pub type Unlisted = crate::rotation::machine::UnlistedConsumer;

/// The consumers in `found` that `plan` does not cover, in discovery's order.
pub fn unlisted(plan: &Plan, found: &AccountDiscovery) -> Vec<Unlisted> {
    let listed = plan.consumer_ids();
    found
        .consumers
        .iter()
        .filter(|f| {
            let Some(id) = &f.consumer else { return false };
            let key = id.same_target_key();
            consumer::listed(plan, &id.to_string()).is_none()
                && !listed.iter().any(|l| l.same_target_key() == key)
        })
        .map(of)
        .collect()
}

fn of(f: &Finding) -> Unlisted {
    Unlisted {
        consumer: f
            .consumer
            .as_ref()
            .map_or_else(String::new, ToString::to_string),
        subject: f.subject.clone(),
        holds: f.holds.to_string(),
        how: f.how.clone(),
        probable: matches!(f.verdict, Verdict::Probable { .. }),
    }
}

/// keyflip's last writes to consumers it cannot read back, as the journal has them.
pub type Writes = Vec<super::Write>;

/// The precheck's unlisted-consumer check of `plan`, whose keys have `keys`
/// (key1, key2): discovery in the account's own subscription, through `cache`.
/// Returns what the plan leaves out and the calls sent.
pub async fn check(
    azure: &Azure,
    fingerprinter: &Fingerprinter,
    cache: &DiscoveryCache,
    sources: &DiscoveryConfig,
    written: &Writes,
    plan: &Plan,
    keys: [Fingerprint; 2],
) -> (Vec<Unlisted>, u64) {
    let accounts = vec![Account {
        id: plan.storage_account.clone(),
        keys,
    }];
    let written = written_for(written, &accounts);
    let (calls, mut found) = scan(
        azure,
        fingerprinter,
        cache,
        accounts,
        vec![plan.storage_account.subscription().to_owned()],
        sources.clone(),
        written,
        false,
    )
    .await;
    let (consumers, other) = found.pop().unwrap_or_default();
    let deferred = other
        .iter()
        .filter(|f| matches!(&f.verdict, Verdict::Cannot { why } if why.contains(crate::azure::budget::DEFERRED)))
        .count();
    if deferred > 0 {
        // The daemon's check never waits for the budget (`budget::deferrable`): what it
        // could not read now, the next rotation's check reads through the warm cache.
        tracing::warn!(plan = %plan.name, deferred, "unlisted-consumer check incomplete: reads were deferred to leave the call budget to rotations; `keyflip doctor` lists every consumer");
    }
    for f in &other {
        if let Verdict::Cannot { why } = &f.verdict {
            tracing::debug!(plan = %plan.name, subject = %f.subject, why = %why, "unlisted-consumer check: not readable or not rotatable");
        }
    }
    let found = AccountDiscovery {
        account: plan.storage_account.to_string(),
        key1: Some(keys[0]),
        key2: Some(keys[1]),
        consumers,
        other,
        error: None,
    };
    (unlisted(plan, &found), calls)
}
