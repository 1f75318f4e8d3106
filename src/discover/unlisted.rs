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
//! cache keeps what it found.) In the daemon's rotations of plans that only warn its
//! calls are deferrable (see `crate::azure::budget::deferrable` and
//! `crate::rotation::EngineOptions::defer_unlisted_check`): those never wait for them.
//! Every read it did not make (put off, refused, failed) is returned with what it
//! found, for the observation: the check says where it did not look.

use super::cache::DiscoveryCache;
use super::report::{AccountDiscovery, scan, written_for};
use super::scan::Account;
use super::{Finding, READ_FAILED, Verdict};
use crate::azure::Azure;
use crate::config::DiscoveryConfig;
use crate::consumer;
use crate::plan::Plan;
use crate::rotation::machine::{Unchecked, UncheckedRead};
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

/// What the precheck's check found: the consumers the plan leaves out, the reads it
/// could not make (so `unlisted` is complete only when `unchecked` is empty), and the
/// calls it sent.
#[derive(Debug, Default)]
pub struct Checked {
    pub unlisted: Vec<Unlisted>,
    pub unchecked: Vec<UncheckedRead>,
    pub calls: u64,
}

/// The precheck's unlisted-consumer check of `plan`, whose keys have `keys`
/// (key1, key2): discovery in the account's own subscription, through `cache`.
pub async fn check(
    azure: &Azure,
    fingerprinter: &Fingerprinter,
    cache: &DiscoveryCache,
    sources: &DiscoveryConfig,
    written: &Writes,
    plan: &Plan,
    keys: [Fingerprint; 2],
) -> Checked {
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
    let unchecked = unchecked(&other);
    let deferred = unchecked
        .iter()
        .filter(|u| u.why == Unchecked::PutOff)
        .count();
    if !unchecked.is_empty() {
        // The daemon's own rotations never wait for the budget (`budget::deferrable`):
        // what they could not read now, the next check reads through the warm cache.
        // The report says so too (the machine's `UnlistedCheckIncomplete`).
        tracing::warn!(plan = %plan.name, deferred, failed = unchecked.len() - deferred, "unlisted-consumer check incomplete: reads were put off or failed; `keyflip doctor --strict` lists every consumer");
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
    Checked {
        unlisted: unlisted(plan, &found),
        unchecked,
        calls,
    }
}

/// The reads behind `other`'s findings that a read refused, failed or put off made:
/// where consumers were not looked for. (A consumer found but not rotatable, or one
/// covered by another, was looked at: it is not one.)
fn unchecked(other: &[Finding]) -> Vec<UncheckedRead> {
    other
        .iter()
        .filter(|f| f.how == READ_FAILED)
        .filter_map(|f| match &f.verdict {
            Verdict::Cannot { why } => Some(UncheckedRead {
                subject: f.subject.clone(),
                why: if why.contains(crate::azure::budget::DEFERRED) {
                    Unchecked::PutOff
                } else {
                    Unchecked::Failed
                },
                detail: why.clone(),
            }),
            _ => None,
        })
        .collect()
}
