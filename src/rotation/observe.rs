//! Observation: what Azure holds right now, as the machine's [`Observation`]. Reads
//! only.
//!
//! The ARM token first (the tokens of the consumers' services are requested
//! beside it), then two waves of concurrent reads (each a round trip on the
//! incident's critical path): first keyflip's own permissions at every scope it will write (the storage account;
//! each ML workspace; each vault with a `vault_id`), the account (shared key access,
//! `keyCreationTime`), both keys (`listKeys`) and the consumers (datastores discovered
//! when the plan says `discover = true`), all at once; then what each consumer holds.
//! A read that Azure refuses with 403 becomes a [`MissingPermission`] (so the precheck
//! refuses with what to grant) and is never an error; a first-wave read whose
//! permission the check finds missing is treated as unread, and a consumer read whose
//! permission is known to be missing is not even sent. Other failures (an account or
//! a secret that does not exist, Azure unreachable) are errors: nothing can be decided.
//!
//! What each consumer holds is its kind's to say (`crate::consumer`); most read it
//! ([`by_reading`]), a kind whose value cannot be read back answers from the journal.

use std::collections::HashSet;

use futures::future::join_all;

use super::engine::{EngineError, Inner};
use super::report::Inventory;
use super::step::Ctx;
use crate::azure::Error;
use crate::azure::roles::{Action, actions};
use crate::consumer::{self, Held, Kind};
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
    let account_scope = plan.storage_account.to_string();
    let mut missing: Vec<MissingPermission> = Vec::new();

    // One wave: the permission check, the account, both keys and the consumers (a
    // discovery lists datastores) are independent reads, so they go out together. A
    // read whose permission the check finds missing is answered as if it had not been
    // sent (its 403, if any, adds nothing the check did not already say).
    let checks = required_permissions(plan);
    let nothing_known = Lacking(HashSet::new());
    let mut found_missing = Vec::new();
    // The consumers' services' tokens (a vault's, a workspace's) are requested beside
    // ARM's, so reading the consumers does not wait for them.
    // ARM's token comes first (and fails once, not once per queued read).
    let audiences: Vec<String> = consumer::tokens(plan, azure.cloud())
        .into_iter()
        .filter_map(|(_, audience)| audience.ok())
        .collect();
    azure.acquire_tokens(&audiences).await?;
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
        for m in answer? {
            lacking.insert((
                scope.to_ascii_lowercase(),
                m.action.name().to_ascii_lowercase(),
            ));
            missing.push(MissingPermission {
                action: m.action.name().to_owned(),
                scope: scope.clone(),
                role_hint: m.role.map(|r| r.name.to_owned()),
            });
        }
    }
    let lacking = Lacking(lacking);
    missing.extend(
        found_missing
            .into_iter()
            .filter(|m| !lacking.has_named(&m.scope, &m.action)),
    );

    let account = if lacking.has(&account_scope, &actions::STORAGE_READ) {
        None
    } else {
        match account {
            Ok(account) => Some(account.clone()),
            Err(e) => match denied(&e, &actions::STORAGE_READ, &account_scope) {
                Some(m) => {
                    missing.push(m);
                    None
                }
                None => return Err(e.into()),
            },
        }
    };
    let created = |key| account.as_ref().and_then(|a| a.key_created(key));
    let (key1, key2) = if lacking.has(&account_scope, &actions::STORAGE_LIST_KEYS) {
        (
            unreadable_key(ctx, KeyName::Key1),
            unreadable_key(ctx, KeyName::Key2),
        )
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
                // The key check and binds that may follow use these, not another
                // listKeys (see `Ctx::keys`).
                ctx.carry_keys(keys).await;
                states
            }
            Err(e) => match denied(&e, &actions::STORAGE_LIST_KEYS, &account_scope) {
                Some(m) => {
                    missing.push(m);
                    (
                        unreadable_key(ctx, KeyName::Key1),
                        unreadable_key(ctx, KeyName::Key2),
                    )
                }
                None => return Err(e.into()),
            },
        }
    };

    let consumers = consumers?;
    let mut against = [key1.fingerprint, key2.fingerprint];
    if let Some((key, leaked)) = revoked {
        against[usize::from(key == KeyName::Key2)] = leaked;
    }
    let holdings = join_all(consumers.iter().map(|c| holding(ctx, c, against, &lacking))).await;
    let mut observed = Vec::with_capacity(consumers.len());
    for (consumer, answer) in consumers.into_iter().zip(holdings) {
        let (holding, denial) = answer?;
        missing.extend(denial);
        match &holding {
            Holding::Key(k) => ctx.observed_holding(
                &consumer.id,
                Some(against[usize::from(*k == KeyName::Key2)]),
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
    for m in answer? {
        lacking.insert((
            scope.to_ascii_lowercase(),
            m.action.name().to_ascii_lowercase(),
        ));
        missing.push(MissingPermission {
            action: m.action.name().to_owned(),
            scope: scope.clone(),
            role_hint: m.role.map(|r| r.name.to_owned()),
        });
    }
    let lacking = Lacking(lacking);
    let account = if lacking.has(&scope, &actions::STORAGE_READ) {
        None
    } else {
        match account {
            Ok(account) => Some(account.clone()),
            Err(e) => match denied(&e, &actions::STORAGE_READ, &scope) {
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
    let (key1, key2) = if lacking.has(&scope, &actions::STORAGE_LIST_KEYS) {
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
            Err(e) => match denied(&e, &actions::STORAGE_LIST_KEYS, &scope) {
                Some(m) => {
                    missing.push(m);
                    unreadable()
                }
                None => return Err(e.into()),
            },
        }
    };
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

pub(crate) fn unknown(why: impl Into<String>) -> Holding {
    Holding::Unknown { why: why.into() }
}

/// What one consumer holds, and the permission its read lacked, if any.
async fn holding(
    ctx: &Ctx<'_>,
    consumer: &ConsumerRef,
    keys: [Fingerprint; 2],
    lacking: &Lacking,
) -> Result<(Holding, Option<MissingPermission>), EngineError> {
    let target = consumer::resolve(ctx.plan, &consumer.id)?;
    target.observe(ctx, &consumer.id, keys, lacking).await
}

/// What a consumer whose value can be read holds: not read when its permission is
/// known to be missing; a refused read is a missing permission, not an error.
pub(crate) async fn by_reading<K: Kind + ?Sized>(
    target: &K,
    ctx: &Ctx<'_>,
    keys: [Fingerprint; 2],
    lacking: &Lacking,
) -> Result<(Holding, Option<MissingPermission>), EngineError> {
    let (scope, action) = target.read_permission();
    if lacking.has(&scope, &action) {
        return Ok((
            unknown(format!("keyflip may not read it: it lacks {action}")),
            None,
        ));
    }
    match target.held(ctx).await {
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
