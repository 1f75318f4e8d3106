//! Observation: what Azure holds right now, as the machine's [`Observation`]. Reads
//! only.
//!
//! In order: keyflip's own permissions at every scope it will write (the storage
//! account; each ML workspace; each vault with a `vault_id`), then the account (shared
//! key access, `keyCreationTime`) and both keys' fingerprints, then the consumers
//! (datastores discovered when the plan says `discover = true`) and what each holds.
//! A read that Azure refuses with 403 becomes a [`MissingPermission`] (so the precheck
//! refuses with what to grant) and is never an error; a read whose permission is
//! already known to be missing is not even sent. Other failures (an account or a
//! secret that does not exist, Azure unreachable) are errors: nothing can be decided.
//!
//! A Databricks secret cannot be read back: what it holds comes from the journal (the
//! key keyflip last bound it to), unless its `last_updated_timestamp` says someone
//! wrote it after keyflip did, which makes it unknown. A Key Vault-backed Databricks
//! scope is not a Databricks consumer at all (Databricks reads the vault), which the
//! precheck refuses with the fix.

use std::collections::HashSet;

use futures::future::join_all;

mod databricks;

use super::consumer::Held;
use super::engine::{EngineError, Inner};
use super::report::Inventory;
use super::step::Ctx;
use super::target::{Target, consumer_ref, resolve};
use crate::azure::Error;
use crate::azure::roles::{Action, actions};
use crate::key::KeyName;
use crate::plan::{self, Datastores, Plan};
use crate::rotation::machine::{
    ConsumerKind, ConsumerRef, Holding, KeyState, MissingPermission, Observation, ObservedConsumer,
};
use crate::secret::{Fingerprint, StorageKey};

/// The permission checks a plan needs: (scope, actions).
fn permission_checks(plan: &Plan) -> Vec<(String, Vec<Action>)> {
    let mut checks = vec![(
        plan.storage_account.to_string(),
        vec![
            actions::STORAGE_READ,
            actions::STORAGE_LIST_KEYS,
            actions::STORAGE_REGENERATE_KEY,
        ],
    )];
    for ws in &plan.ml_workspaces {
        let mut needed = Vec::new();
        if ws.resync {
            needed.extend([
                actions::ML_WORKSPACE_LIST_KEYS,
                actions::ML_WORKSPACE_RESYNC_KEYS,
            ]);
        }
        let has_datastores = match &ws.datastores {
            Datastores::Named(names) => !names.is_empty(),
            Datastores::Discover => true,
        };
        if has_datastores {
            needed.extend([
                actions::ML_DATASTORE_READ,
                actions::ML_DATASTORE_WRITE,
                actions::ML_DATASTORE_LIST_SECRETS,
            ]);
        }
        if !needed.is_empty() {
            checks.push((ws.workspace.to_string(), needed));
        }
    }
    let mut vaults = HashSet::new();
    for kv in &plan.key_vault {
        if let Some(id) = &kv.vault_id
            && vaults.insert(id.as_str().to_ascii_lowercase())
        {
            checks.push((
                id.to_string(),
                vec![
                    actions::KV_SECRET_GET,
                    actions::KV_SECRET_SET,
                    actions::KV_SECRET_READ_METADATA,
                    actions::KV_SECRET_UPDATE,
                ],
            ));
        }
    }
    checks
}

/// The missing permission behind a 403, or `None` for any other error.
pub(super) fn denied(error: &Error, action: &Action, scope: &str) -> Option<MissingPermission> {
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
struct Lacking(HashSet<(String, String)>);

impl Lacking {
    fn has(&self, scope: &str, action: &Action) -> bool {
        self.0.contains(&(
            scope.to_ascii_lowercase(),
            action.name().to_ascii_lowercase(),
        ))
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
    let plan = ctx.plan;
    let azure = &ctx.inner.azure;
    let account_scope = plan.storage_account.to_string();
    let mut missing: Vec<MissingPermission> = Vec::new();

    let checks = permission_checks(plan);
    let answers = join_all(
        checks
            .iter()
            .map(|(scope, needed)| azure.missing_permissions(scope, needed)),
    )
    .await;
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

    let account = if lacking.has(&account_scope, &actions::STORAGE_READ) {
        None
    } else {
        match ctx.account().await {
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
        match ctx.keys().await {
            Ok(keys) => (
                KeyState {
                    fingerprint: ctx.fingerprint_of(&keys, KeyName::Key1),
                    created: created(KeyName::Key1),
                },
                KeyState {
                    fingerprint: ctx.fingerprint_of(&keys, KeyName::Key2),
                    created: created(KeyName::Key2),
                },
            ),
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

    let consumers = consumers(ctx, &lacking, &mut missing).await?;
    let holdings = join_all(
        consumers
            .iter()
            .map(|c| holding(ctx, c, [key1.fingerprint, key2.fingerprint], &lacking)),
    )
    .await;
    let mut observed = Vec::with_capacity(consumers.len());
    for (consumer, answer) in consumers.into_iter().zip(holdings) {
        let (holding, denial) = answer?;
        missing.extend(denial);
        observed.push(ObservedConsumer { consumer, holding });
    }
    Ok(Observation {
        key1,
        key2,
        shared_key_access: account.as_ref().is_none_or(|a| a.shared_key_allowed()),
        missing_permissions: missing,
        consumers: observed,
    })
}

/// Every consumer in plan order: Key Vault secrets, then per workspace the workspace
/// itself (when resynced) and its datastores (named, or discovered and sorted by
/// name), then Databricks secrets.
async fn consumers(
    ctx: &Ctx<'_>,
    lacking: &Lacking,
    missing: &mut Vec<MissingPermission>,
) -> Result<Vec<ConsumerRef>, EngineError> {
    let plan = ctx.plan;
    let mut out: Vec<ConsumerRef> = plan
        .key_vault
        .iter()
        .map(|kv| consumer_ref(&kv.id(), ConsumerKind::KeyVaultSecret))
        .collect();
    for ws in &plan.ml_workspaces {
        if let Some(id) = ws.id() {
            out.push(consumer_ref(&id, ConsumerKind::Workspace));
        }
        let names = match &ws.datastores {
            Datastores::Named(names) => names.clone(),
            Datastores::Discover => {
                let scope = ws.workspace.to_string();
                if lacking.has(&scope, &actions::ML_DATASTORE_READ) {
                    Vec::new()
                } else {
                    match ctx
                        .inner
                        .azure
                        .ml_account_key_datastores(&ws.workspace, &plan.storage_account)
                        .await
                    {
                        Ok(found) => {
                            let mut names: Vec<String> =
                                found.into_iter().map(|d| d.name).collect();
                            names.sort();
                            names
                        }
                        Err(e) => match denied(&e, &actions::ML_DATASTORE_READ, &scope) {
                            Some(m) => {
                                missing.push(m);
                                Vec::new()
                            }
                            None => return Err(e.into()),
                        },
                    }
                }
            }
        };
        out.extend(names.iter().map(|name| {
            consumer_ref(
                &plan::ConsumerId::datastore(&ws.workspace, name),
                ConsumerKind::Datastore,
            )
        }));
    }
    out.extend(
        plan.databricks
            .iter()
            .map(|d| consumer_ref(&d.id(), ConsumerKind::Databricks)),
    );
    Ok(out)
}

pub(super) fn unknown(why: impl Into<String>) -> Holding {
    Holding::Unknown { why: why.into() }
}

/// What one consumer holds, and the permission its read lacked, if any.
async fn holding(
    ctx: &Ctx<'_>,
    consumer: &ConsumerRef,
    keys: [Fingerprint; 2],
    lacking: &Lacking,
) -> Result<(Holding, Option<MissingPermission>), EngineError> {
    let target = resolve(ctx.plan, consumer)?;
    let (scope, action) = match &target {
        Target::KeyVault { secret, vault } => (
            secret
                .vault_id
                .as_ref()
                .map_or_else(|| vault.to_string(), ToString::to_string),
            actions::KV_SECRET_GET,
        ),
        Target::Datastore { workspace, .. } => {
            (workspace.to_string(), actions::ML_DATASTORE_LIST_SECRETS)
        }
        Target::Workspace { workspace } => (workspace.to_string(), actions::ML_WORKSPACE_LIST_KEYS),
        Target::Databricks { secret, .. } => {
            return databricks::holding(ctx, consumer, secret, keys).await;
        }
    };
    if lacking.has(&scope, &action) {
        return Ok((
            unknown(format!("keyflip may not read it: it lacks {action}")),
            None,
        ));
    }
    match ctx.held(&target).await {
        Ok(Held::Key(fp)) => Ok((of(fp, keys), None)),
        Ok(Held::NoKey(why)) => Ok((
            match target {
                Target::Workspace { .. } => Holding::Neither,
                _ => Holding::Unusable {
                    fix: format!(
                        "{why}; keyflip rotates only consumers that store the account key: remove it from the plan"
                    ),
                },
            },
            None,
        )),
        Ok(Held::WriteOnly) => Ok((unknown("its value cannot be read back"), None)),
        Err(e) => match denied(&e, &action, &scope) {
            Some(m) => Ok((unknown(format!("keyflip may not read it: {e}")), Some(m))),
            None => Err(e.into()),
        },
    }
}

pub(super) fn of(fp: Fingerprint, keys: [Fingerprint; 2]) -> Holding {
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
