//! The engine's side of replicas (`[coordination]`): holding an account means its OS
//! lock and its blob lease; taking the lease brings the account's shared journal into
//! the local one, so an unfinished rotation another replica left is resumed exactly
//! like one left by a local crash. Without `[coordination]` only the OS lock is taken.
//!
//! The lease is released when the [`AccountGuard`] drops (end of the rotation), or
//! expires on its own one lease length after the process stops renewing it.

use crate::coordination::document::PlanDoc;
use crate::coordination::{AccountLease, CoordError};
use crate::journal::StoredRotation;
use crate::journal::lock::AccountLock;
use crate::plan::Plan;
use crate::resource_id::ResourceId;

use super::engine::{EngineError, Inner};
use super::report::RotationReport;
use crate::rotation::machine::Outcome;
use crate::rotation::origin::Trigger;

/// Held while this process drives a rotation of one account.
#[derive(Debug)]
pub(super) struct AccountGuard {
    _local: AccountLock,
    lease: Option<AccountLease>,
    /// Rotations the shared journal showed finished that this replica's journal did
    /// not (another replica ran them), oldest first.
    learned: Vec<String>,
    /// The shared state of the account's plans, read under the lease.
    plans: std::collections::BTreeMap<String, PlanDoc>,
}

impl AccountGuard {
    /// Fails once the lease is lost or too short for another step (no-op alone).
    #[allow(dead_code)]
    pub(super) fn ensure(&self) -> Result<(), EngineError> {
        match &self.lease {
            Some(lease) => Ok(lease.ensure()?),
            None => Ok(()),
        }
    }
}

fn busy(account: &ResourceId, e: CoordError) -> EngineError {
    match e {
        CoordError::Held { .. } => EngineError::Busy {
            account: account.to_string(),
            holder: crate::coordination::HELD_ELSEWHERE.into(),
        },
        other => EngineError::Coordination(other),
    }
}

/// Takes the account's lease (with `[coordination]`) and imports its shared journal.
pub(super) async fn hold(
    inner: &Inner,
    account: &ResourceId,
    local: AccountLock,
) -> Result<AccountGuard, EngineError> {
    let Some(coordinator) = &inner.coordination else {
        return Ok(AccountGuard {
            _local: local,
            lease: None,
            learned: Vec::new(),
            plans: Default::default(),
        });
    };
    let crate::coordination::Taken {
        lease,
        rotations: imported,
        marks,
        plans,
    } = coordinator
        .hold(account)
        .await
        .map_err(|e| busy(account, e))?;
    let mut learned = Vec::new();
    {
        let mut journal = inner.journal();
        for rotation in &imported {
            let id = &rotation.rotation.id;
            let known_finished = journal
                .rotation(id)?
                .is_some_and(|r| r.finished_at.is_some());
            if rotation.finished.is_some() && !known_finished {
                learned.push(id.clone());
            }
            journal.import(rotation)?;
        }
        // What another replica wrote to consumers it cannot read back.
        journal.import_marks(&marks)?;
    }
    Ok(AccountGuard {
        _local: local,
        lease: Some(lease),
        learned,
        plans,
    })
}

/// What the daemon's schedule knew when it decided to start a rotation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Decided {
    /// The plan's last start it knew of (its own, or learned from the shared state).
    pub known_started: Option<chrono::DateTime<chrono::Utc>>,
}

/// With `[coordination]`, for a rotation the daemon's schedule asked for: refuses it
/// ([`EngineError::Superseded`], carrying the shared state) when the plan's shared
/// state, read under the lease just taken, shows another replica started a rotation
/// of the plan after the last start this replica knew of, or parked it. The decision
/// was made on stale facts; the daemon folds the shared state in and decides again,
/// so a plan is neither rotated twice for one occurrence nor rotated while parked
/// elsewhere.
pub(super) fn superseded(
    plan: &Plan,
    guard: &AccountGuard,
    trigger: &Trigger,
    decided: &Decided,
) -> Result<(), EngineError> {
    if !matches!(trigger, Trigger::Schedule { .. } | Trigger::KeyAge) {
        return Ok(());
    }
    let Some(shared) = guard.plans.get(&plan.name) else {
        return Ok(());
    };
    if shared.parked.is_some() || shared.last_started > decided.known_started {
        tracing::info!(plan = %plan.name, shared_last_started = ?shared.last_started, known_started = ?decided.known_started, parked = shared.parked.is_some(), "the shared plan state is newer than this replica's decision; not rotating");
        return Err(EngineError::Superseded {
            plan: plan.name.clone(),
            state: Box::new(shared.clone()),
        });
    }
    Ok(())
}

/// With `[coordination]`: the unfinished rotation of `plan`'s account that the shared
/// journal holds (now imported), if any, so `rotate` finishes it before anything new.
pub(super) fn unfinished_of(
    inner: &Inner,
    plan: &Plan,
) -> Result<Option<StoredRotation>, EngineError> {
    if inner.coordination.is_none() {
        return Ok(None);
    }
    Ok(inner.journal().unfinished()?.into_iter().find(|r| {
        r.account
            .as_str()
            .eq_ignore_ascii_case(plan.storage_account.as_str())
            && r.plan == plan.name
    }))
}

/// With `[coordination]`, for a rotation the schedule asked for (not `rotate now`,
/// not an incident): the report of a rotation of `plan` that another replica
/// completed and this one just learned of, so the schedule counts it instead of
/// rotating the account a second time. The daemon's per-plan memory is not shared
/// yet; this keeps two replicas from each running a due rotation.
pub(super) fn completed_elsewhere(
    inner: &Inner,
    plan: &Plan,
    guard: &AccountGuard,
    trigger: &Trigger,
) -> Result<Option<RotationReport>, EngineError> {
    if !matches!(trigger, Trigger::Schedule { .. } | Trigger::KeyAge) {
        return Ok(None);
    }
    for id in guard.learned.iter().rev() {
        let Some(record) = inner.journal().rotation(id)? else {
            continue;
        };
        if record.plan == plan.name && matches!(record.outcome, Some(Outcome::Completed { .. })) {
            tracing::info!(plan = %plan.name, rotation_id = %id, "another replica completed this plan's rotation; counting it instead of rotating again");
            return Ok(Some(super::status::report_of(inner, &record)?));
        }
    }
    Ok(None)
}

/// With `[coordination]`: brings every unfinished rotation the shared journal holds
/// for `plans`' accounts into the local journal (read without the lease: `resume`
/// takes each account's lease, which imports it again, before acting on it).
pub(super) async fn discover(inner: &Inner, plans: &[Plan]) -> Result<(), EngineError> {
    let Some(coordinator) = &inner.coordination else {
        return Ok(());
    };
    for plan in plans {
        for rotation in coordinator.peek(&plan.storage_account).await? {
            if rotation.finished.is_some() {
                continue;
            }
            if let Err(e) = inner.journal().import(&rotation) {
                tracing::warn!(plan = %plan.name, rotation_id = %rotation.rotation.id, error = %e, "cannot import an unfinished rotation from the shared journal");
            }
        }
    }
    Ok(())
}
