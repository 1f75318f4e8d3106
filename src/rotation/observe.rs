//! Observation: what Azure holds right now, as the machine's [`Observation`]. Reads
//! only.
//!
//! The ARM token first (the tokens of the consumers' services are requested
//! beside it), then concurrent reads: keyflip's own permissions at every scope it will
//! write (the storage account; each ML workspace; each vault with a `vault_id`), the
//! account (shared key access, `keyCreationTime`), both keys (`listKeys`), the
//! consumers (datastores discovered when the plan says `discover = true`) and what each
//! consumer the plan names holds, all at once. What a consumer holds is read without
//! the keys and compared with their fingerprints once both answered ([`Basis`]), so
//! only a consumer found by reading (a discovered datastore's `listSecrets`) waits for
//! the first wave; a Key Vault's 401 challenge (the SDK's first request to a vault
//! goes without a token) is answered while the first wave is still out.
//! A read that Azure refuses with 403 becomes a [`MissingPermission`] (so the precheck
//! refuses with what to grant) and is never an error; a read sent before the
//! permission check answered whose permission the check finds missing is treated as
//! unread, and a consumer read whose permission is known to be missing is not even
//! sent. Other failures (an account or a secret that does not exist, Azure
//! unreachable) are errors: nothing can be decided.
//!
//! What each consumer holds is its kind's to say (`crate::consumer`); most read it
//! ([`by_reading`]), a kind whose value cannot be read back answers from the journal.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::future::join_all;
use tokio::sync::watch;

use super::engine::{EngineError, Inner};
use super::report::Inventory;
use super::step::Ctx;
use crate::azure::Error;
use crate::azure::roles::{Action, actions};
use crate::consumer::{self, ConsumerId, Held, Kind};
use crate::key::KeyName;
use crate::plan::Plan;
use crate::rotation::machine::{
    ConsumerRef, Holding, KeyState, MissingPermission, Observation, ObservedConsumer,
};
use crate::secret::{Fingerprint, StorageKey};

/// Every action a rotation of `plan` needs, by the scope it is checked at: the
/// storage account's, then the consumers' (each scope once). `doctor` reports against
/// the same list, so "would block a rotation" means the same there.
pub(crate) fn required_permissions(plan: &Plan) -> Vec<(String, Vec<Action>)> {
    let mut checks = vec![(plan.storage_account.to_string(), account_actions())];
    checks.extend(
        consumer::permissions(plan)
            .into_iter()
            .map(|p| (p.scope, p.actions)),
    );
    checks
}

/// What a rotation needs on the storage account itself.
pub(crate) fn account_actions() -> Vec<Action> {
    vec![
        actions::STORAGE_READ,
        actions::STORAGE_LIST_KEYS,
        actions::STORAGE_REGENERATE_KEY,
    ]
}

/// The missing permission behind a 403, or `None` for any other error.
pub(crate) fn denied(error: &Error, action: &Action, scope: &str) -> Option<MissingPermission> {
    let denial = error.denial()?;
    Some(MissingPermission {
        action: denial
            .action
            .as_ref()
            .map_or_else(|| action.name().to_owned(), |a| a.name().to_owned()),
        scope: denial.scope.clone().unwrap_or_else(|| scope.to_owned()),
        role_hint: denial
            .role
            .map(|r| r.name.to_owned())
            .or_else(|| denial.advice.clone()),
    })
}

/// Known-missing permissions, so reads that would be refused are not sent.
#[derive(Clone, Debug, Default)]
pub(crate) struct Lacking(HashSet<(String, String)>);

impl Lacking {
    pub(crate) fn has(&self, scope: &str, action: &Action) -> bool {
        self.has_named(scope, action.name())
    }

    fn has_named(&self, scope: &str, action: &str) -> bool {
        self.0
            .contains(&(scope.to_ascii_lowercase(), action.to_ascii_lowercase()))
    }
}

/// What a consumer's holding is judged against: both keys' fingerprints and the
/// permissions the check found missing. The reads of the consumers the plan names go
/// out beside the first wave that learns these, and wait here only to be judged.
pub(crate) struct Basis {
    known: watch::Receiver<Option<Arc<Known>>>,
    rotation_id: String,
}

#[derive(Debug)]
struct Known {
    keys: [Fingerprint; 2],
    lacking: Lacking,
}

impl Basis {
    /// The keys and missing permissions once known; an error when the first wave
    /// failed (the observation then fails with that wave's error, not this one).
    async fn known(&self) -> Result<Arc<Known>, EngineError> {
        let mut known = self.known.clone();
        let seen = known
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|k| k.clone());
        seen.ok_or_else(|| EngineError::Stalled {
            rotation_id: self.rotation_id.clone(),
        })
    }

    /// Both keys' fingerprints (key1, key2).
    pub(crate) async fn keys(&self) -> Result<[Fingerprint; 2], EngineError> {
        Ok(self.known().await?.keys)
    }

    /// Whether the permission check found `action` missing at `scope`.
    pub(crate) async fn lacks(&self, scope: &str, action: &Action) -> Result<bool, EngineError> {
        Ok(self.known().await?.lacking.has(scope, action))
    }

    /// Whether `action` at `scope` is already known to be missing (a read is then
    /// not sent at all); `false` while the check has not answered.
    pub(crate) fn lacks_now(&self, scope: &str, action: &Action) -> bool {
        self.known
            .borrow()
            .as_ref()
            .is_some_and(|k| k.lacking.has(scope, action))
    }
}

/// Stands in for a key whose value keyflip may not read: the fingerprint of a fixed
/// text that is not a key, so it never matches a consumer. Only ever seen alongside
/// the missing permission that makes the precheck refuse.
fn unreadable_key(ctx: &Ctx<'_>, key: KeyName) -> KeyState {
    let marker = StorageKey::new(format!("keyflip: {key} could not be read"));
    KeyState {
        fingerprint: ctx.inner.fingerprinter.fingerprint(&marker),
        created: None,
    }
}

/// Observes the plan's account and consumers.
pub(super) async fn observe(ctx: &Ctx<'_>) -> Result<Observation, EngineError> {
    observe_against(ctx, None).await
}

/// Observes the plan's account and consumers; with `revoked` (a key and the leaked
/// value a `revoke_first` revoke just replaced), what each consumer holds is said
/// against the keys as they were before that revoke (`Action::ObserveAfterRevoke`):
/// a consumer still on the leaked value holds that key.
pub(super) async fn observe_against(
    ctx: &Ctx<'_>,
    revoked: Option<(KeyName, Fingerprint)>,
) -> Result<Observation, EngineError> {
    let plan = ctx.plan;
    let azure = &ctx.inner.azure;
    // The consumers' services' tokens (a vault's, a workspace's) are requested beside
    // ARM's, so reading the consumers does not wait for them.
    // ARM's token comes first (and fails once, not once per queued read).
    let audiences: Vec<String> = consumer::tokens(plan, azure.cloud())
        .into_iter()
        .filter_map(|(_, audience)| audience.ok())
        .collect();
    azure.acquire_tokens(&audiences).await?;

    // What the consumers the plan names hold is read beside the first wave (the
    // permissions, the account, the keys, the discoveries) and judged once that wave
    // has answered: reading a value does not need the keys, comparing it does.
    let (tell, known) = watch::channel(None);
    let basis = Basis {
        known,
        rotation_id: ctx.rotation_id.to_owned(),
    };
    let named = consumer::named(plan);
    let named_ids: HashSet<&ConsumerId> = named.iter().collect();
    // The rest (datastores a discovery found, and a consumer listed twice, which the
    // precheck refuses) are read as soon as the first wave is in. `tell` goes with
    // the first wave, so that a failed one ends every wait for it.
    let first_then_rest = async {
        let first = first_wave(ctx, tell, revoked).await?;
        let mut taken = HashSet::new();
        let read_early: Vec<bool> = first
            .consumers
            .iter()
            .map(|c| named_ids.contains(&c.id) && taken.insert(&c.id))
            .collect();
        let late = join_all(
            first
                .consumers
                .iter()
                .zip(&read_early)
                .filter(|(_, early)| !**early)
                .map(|(c, _)| holding(ctx, &c.id, &basis)),
        )
        .await;
        Ok::<_, EngineError>((first, read_early, late))
    };
    let (first, early) = tokio::join!(
        first_then_rest,
        join_all(named.iter().map(|id| holding(ctx, id, &basis)))
    );
    let (
        First {
            key1,
            key2,
            account,
            mut missing,
            consumers,
        },
        read_early,
        late,
    ) = first?;
    let mut early: HashMap<&ConsumerId, _> = named.iter().zip(early).collect();
    let mut late = late.into_iter();
    let mut observed = Vec::with_capacity(consumers.len());
    for (consumer, read_early) in consumers.into_iter().zip(read_early) {
        let answer = if read_early {
            early.remove(&consumer.id)
        } else {
            late.next()
        };
        let answer = answer.ok_or_else(|| EngineError::Stalled {
            rotation_id: ctx.rotation_id.to_owned(),
        })?;
        let (holding, denial) = answer?;
        missing.extend(denial);
        match &holding {
            Holding::Key(k) => ctx.observed_holding(
                &consumer.id,
                Some(match (*k, revoked) {
                    // The leaked value the consumer still holds, not the revoked key's
                    // fresh one.
                    (k, Some((key, leaked))) if k == key => leaked,
                    (KeyName::Key1, _) => key1.fingerprint,
                    (KeyName::Key2, _) => key2.fingerprint,
                }),
            ),
            // Unknown: a read the bind's own check could not make either (a value
            // that cannot be read back), so that check would write anyway.
            Holding::Neither | Holding::Unknown { .. } => {
                ctx.observed_holding(&consumer.id, None);
            }
            Holding::Unusable { .. } => {}
        }
        observed.push(ObservedConsumer { consumer, holding });
    }
    Ok(Observation {
        key1,
        key2,
        shared_key_access: account.as_ref().is_none_or(|a| a.shared_key_allowed()),
        missing_permissions: missing,
        consumers: observed,
        unlisted: Vec::new(),
        unlisted_unchecked: Vec::new(),
    })
}

/// What the first wave learned.
struct First {
    key1: KeyState,
    key2: KeyState,
    account: Option<crate::azure::storage::StorageAccount>,
    missing: Vec<MissingPermission>,
    consumers: Vec<ConsumerRef>,
}

/// The first wave: the permission check, the account, both keys and the consumers (a
/// discovery lists datastores) are independent reads, so they go out together. A read
/// whose permission the check finds missing is answered as if it had not been sent
/// (its 403, if any, adds nothing the check did not already say). What it learns about
/// the keys and permissions goes to `tell` as soon as it is known.
async fn first_wave(
    ctx: &Ctx<'_>,
    tell: watch::Sender<Option<Arc<Known>>>,
    revoked: Option<(KeyName, Fingerprint)>,
) -> Result<First, EngineError> {
    let plan = ctx.plan;
    let azure = &ctx.inner.azure;
    let account_scope = plan.storage_account.to_string();
    let mut missing: Vec<MissingPermission> = Vec::new();
    let checks = required_permissions(plan);
    let nothing_known = Lacking(HashSet::new());
    let mut found_missing = Vec::new();
    let (answers, account, keys, consumers) = tokio::join!(
        join_all(
            checks
                .iter()
                .map(|(scope, needed)| azure.missing_permissions(scope, needed)),
        ),
        ctx.account(),
        ctx.keys(),
        consumer::consumers(ctx, &nothing_known, &mut found_missing),
    );
    let mut lacking = HashSet::new();
    for ((scope, _), answer) in checks.iter().zip(answers) {
        tally(scope, answer?, &mut lacking, &mut missing);
    }
    let lacking = Lacking(lacking);
    missing.extend(
        found_missing
            .into_iter()
            .filter(|m| !lacking.has_named(&m.scope, &m.action)),
    );

    let (account, key1, key2) =
        account_and_keys(ctx, &account_scope, &lacking, account, keys, &mut missing).await?;
    let consumers = consumers?;
    // Kept by the channel after `tell` is dropped: later reads still see it.
    // After a revoke first, consumers are judged against the keys as they were
    // before it: one still on the leaked value holds the revoked key.
    let mut keys = [key1.fingerprint, key2.fingerprint];
    if let Some((key, leaked)) = revoked {
        keys[usize::from(key == KeyName::Key2)] = leaked;
    }
    tell.send_replace(Some(Arc::new(Known { keys, lacking })));
    Ok(First {
        key1,
        key2,
        account,
        missing,
        consumers,
    })
}

/// What a revoke needs and nothing more (`Action::ObserveKeys`, `revoke_first`): the
/// permissions on the storage account, the account and both keys, in one wave after
/// ARM's token (the consumers' services' tokens are requested in that wave, so the
/// reads after the revoke do not wait for them). No consumer is read.
pub(super) async fn observe_keys(ctx: &Ctx<'_>) -> Result<Observation, EngineError> {
    let plan = ctx.plan;
    let azure = &ctx.inner.azure;
    let scope = plan.storage_account.to_string();
    let audiences: Vec<String> = consumer::tokens(plan, azure.cloud())
        .into_iter()
        .filter_map(|(_, audience)| audience.ok())
        .collect();
    // ARM's token only: the consumers' tokens are fetched in the same wave as the
    // reads, for the observation after the revoke, and never delay the revoke.
    azure.acquire_tokens(&[]).await?;
    let needed = account_actions();
    let (answer, account, keys, _) = tokio::join!(
        azure.missing_permissions(&scope, &needed),
        ctx.account(),
        ctx.keys(),
        azure.acquire_tokens(&audiences),
    );
    let mut missing: Vec<MissingPermission> = Vec::new();
    let mut lacking = HashSet::new();
    tally(&scope, answer?, &mut lacking, &mut missing);
    let lacking = Lacking(lacking);
    let (account, key1, key2) =
        account_and_keys(ctx, &scope, &lacking, account, keys, &mut missing).await?;
    Ok(Observation {
        key1,
        key2,
        shared_key_access: account.as_ref().is_none_or(|a| a.shared_key_allowed()),
        missing_permissions: missing,
        consumers: Vec::new(),
        unlisted: Vec::new(),
        unlisted_unchecked: Vec::new(),
    })
}

/// The permission check's answer at `scope`: each missing action into `lacking` (by
/// lower-case scope and action, as [`Lacking`] looks them up) and `missing` (for the
/// precheck's refusal, with the role that grants it).
fn tally(
    scope: &str,
    answer: Vec<crate::azure::authorization::MissingAction>,
    lacking: &mut HashSet<(String, String)>,
    missing: &mut Vec<MissingPermission>,
) {
    for m in answer {
        lacking.insert((
            scope.to_ascii_lowercase(),
            m.action.name().to_ascii_lowercase(),
        ));
        missing.push(MissingPermission {
            action: m.action.name().to_owned(),
            scope: scope.to_owned(),
            role_hint: m.role.map(|r| r.name.to_owned()),
        });
    }
}

/// The account and both keys' states from their answers: a read the permission check
/// found missing, or one Azure refused (added to `missing`), leaves the account unknown
/// and the keys unreadable; any other failure is an error. The keys read are carried
/// for the steps that follow (see `Ctx::keys`), so the key check and binds need no
/// second `listKeys`.
async fn account_and_keys(
    ctx: &Ctx<'_>,
    scope: &str,
    lacking: &Lacking,
    account: Result<&crate::azure::storage::StorageAccount, Error>,
    keys: Result<Arc<crate::azure::storage::AccountKeys>, Error>,
    missing: &mut Vec<MissingPermission>,
) -> Result<
    (
        Option<crate::azure::storage::StorageAccount>,
        KeyState,
        KeyState,
    ),
    EngineError,
> {
    let account = if lacking.has(scope, &actions::STORAGE_READ) {
        None
    } else {
        match account {
            Ok(account) => Some(account.clone()),
            Err(e) => match denied(&e, &actions::STORAGE_READ, scope) {
                Some(m) => {
                    missing.push(m);
                    None
                }
                None => return Err(e.into()),
            },
        }
    };
    let created = |key| account.as_ref().and_then(|a| a.key_created(key));
    let unreadable = || {
        (
            unreadable_key(ctx, KeyName::Key1),
            unreadable_key(ctx, KeyName::Key2),
        )
    };
    let (key1, key2) = if lacking.has(scope, &actions::STORAGE_LIST_KEYS) {
        unreadable()
    } else {
        match keys {
            Ok(keys) => {
                let states = (
                    KeyState {
                        fingerprint: ctx.fingerprint_of(&keys, KeyName::Key1),
                        created: created(KeyName::Key1),
                    },
                    KeyState {
                        fingerprint: ctx.fingerprint_of(&keys, KeyName::Key2),
                        created: created(KeyName::Key2),
                    },
                );
                ctx.carry_keys(keys).await;
                states
            }
            Err(e) => match denied(&e, &actions::STORAGE_LIST_KEYS, scope) {
                Some(m) => {
                    missing.push(m);
                    unreadable()
                }
                None => return Err(e.into()),
            },
        }
    };
    Ok((account, key1, key2))
}

pub(crate) fn unknown(why: impl Into<String>) -> Holding {
    Holding::Unknown { why: why.into() }
}

/// What one consumer holds, and the permission its read lacked, if any.
async fn holding(
    ctx: &Ctx<'_>,
    id: &ConsumerId,
    basis: &Basis,
) -> Result<(Holding, Option<MissingPermission>), EngineError> {
    let target = consumer::resolve(ctx.plan, id)?;
    target.observe(ctx, id, basis).await
}

/// What a consumer whose value can be read holds: not read when its permission is
/// known to be missing; a refused read is a missing permission, not an error.
pub(crate) async fn by_reading<K: Kind + ?Sized>(
    target: &K,
    ctx: &Ctx<'_>,
    basis: &Basis,
) -> Result<(Holding, Option<MissingPermission>), EngineError> {
    let (scope, action) = target.read_permission();
    let unread = || unknown(format!("keyflip may not read it: it lacks {action}"));
    if basis.lacks_now(&scope, &action) {
        return Ok((unread(), None));
    }
    let read = target.held(ctx).await;
    // Sent before the permission check answered: unread if the check says it may not.
    if basis.lacks(&scope, &action).await? {
        return Ok((unread(), None));
    }
    let keys = basis.keys().await?;
    match read {
        Ok(Held::Key(fp)) => Ok((of(fp, keys), None)),
        Ok(Held::NoKey(why)) => Ok((target.holding_without_key(why), None)),
        Ok(Held::WriteOnly) => Ok((unknown("its value cannot be read back"), None)),
        Err(e) => match denied(&e, &action, &scope) {
            Some(m) => Ok((unknown(format!("keyflip may not read it: {e}")), Some(m))),
            None => Err(e.into()),
        },
    }
}

pub(crate) fn of(fp: Fingerprint, keys: [Fingerprint; 2]) -> Holding {
    if fp == keys[0] {
        Holding::Key(KeyName::Key1)
    } else if fp == keys[1] {
        Holding::Key(KeyName::Key2)
    } else {
        Holding::Neither
    }
}

/// The live inventory of a plan for `status`, drift watch and key-age scheduling.
pub(super) async fn inventory(inner: &Inner, plan: &Plan) -> Result<Inventory, EngineError> {
    let ctx = Ctx::new(inner, plan, "inventory");
    let observed_at = inner.clock.now();
    let obs = observe(&ctx).await?;
    let (active, drift) = Inventory::decide_active(&obs.consumers);
    Ok(Inventory {
        plan: plan.name.clone(),
        account: plan.storage_account.to_string(),
        observed_at,
        key1: obs.key1,
        key2: obs.key2,
        shared_key_access: obs.shared_key_access,
        missing_permissions: obs.missing_permissions,
        consumers: obs.consumers,
        active,
        drift,
    })
}
