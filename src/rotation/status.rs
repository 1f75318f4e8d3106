//! `status` and `history`: live state per plan joined with the journal (its rotations
//! and the daemon's `plan_state`), and past rotations rebuilt by replaying their
//! events (so a report of last month's rotation says exactly what the run itself
//! said).
//!
//! With `[coordination]` both read the shared journal in coordination storage, not
//! this process's local journal: every replica, and the CLI on any machine, prints
//! the same rotations (see [`SharedView`]), and the plans' shared schedule state
//! (parked, failures, retry time) where the account's document has it.

use futures::future::join_all;

use super::engine::{EngineError, Inner};
use super::observe::inventory;
use super::report::{
    IncidentReportPaths, LastRotation, LeaseStatus, ParkedStatus, PlanStatus, RotationReport,
    ScheduleStatus,
};
use crate::coordination::{SharedAccount, blob_name};
use crate::journal::{Journal, RotationRecord};
use crate::plan::Plan;
use crate::resource_id::ResourceId;
use crate::rotation::machine::{Machine, Outcome};
use crate::schedule::{self, Decision, Known};

fn outcome_kind(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Completed { .. } => "completed",
        Outcome::RolledBack { .. } => "rolled_back",
        Outcome::Refused { .. } => "refused",
        Outcome::NeedsAttention { .. } => "needs_attention",
    }
}

/// The shared journal of some accounts, loaded into a journal in memory so that
/// `history` and `status` query it exactly as they query the local one.
pub(super) struct SharedView {
    journal: Journal,
    /// Each account's document by its blob name, so a status of many plans looks
    /// each up once, not by a scan of every account.
    accounts: std::collections::HashMap<String, SharedAccount>,
}

impl SharedView {
    /// `None` without `[coordination]`. `accounts: None` reads every account.
    pub(super) async fn read(
        inner: &Inner,
        accounts: Option<Vec<ResourceId>>,
    ) -> Result<Option<SharedView>, EngineError> {
        let Some(coordinator) = &inner.coordination else {
            return Ok(None);
        };
        let accounts = coordinator.read_shared(accounts).await?;
        let mut journal = Journal::in_memory(&inner.fingerprinter)?;
        for account in &accounts {
            for rotation in &account.rotations {
                journal.import(rotation)?;
            }
        }
        let accounts = accounts.into_iter().map(|a| (a.blob.clone(), a)).collect();
        Ok(Some(SharedView { journal, accounts }))
    }

    /// `account`'s document, when coordination storage has one.
    fn account(&self, account: &ResourceId) -> Option<&SharedAccount> {
        self.accounts.get(&blob_name(account))
    }

    /// The shared state of `plan` (of `account`), if its document has one.
    fn plan_state(
        &self,
        account: &ResourceId,
        plan: &str,
    ) -> Option<crate::coordination::document::PlanDoc> {
        self.account(account)
            .and_then(|a| a.plans.get(plan).cloned())
    }

    /// The lease of `account`, as coordination storage shows it.
    fn lease(&self, account: &ResourceId) -> LeaseStatus {
        match self.account(account) {
            Some(a) => LeaseStatus {
                held: a.leased,
                replica: a.holder.as_ref().map(|h| h.replica.clone()),
                since: a.holder.as_ref().map(|h| h.since),
            },
            None => LeaseStatus {
                held: false,
                replica: None,
                since: None,
            },
        }
    }
}

pub(super) async fn status(inner: &Inner, plans: &[Plan]) -> Result<Vec<PlanStatus>, EngineError> {
    let accounts = plans.iter().map(|p| p.storage_account.clone()).collect();
    let (inventories, view) = futures::join!(
        join_all(plans.iter().map(|p| {
            tracing::Instrument::instrument(inventory(inner, p), crate::logging::plan_span(&p.name))
        })),
        SharedView::read(inner, Some(accounts))
    );
    // Storage unreachable: the local journal, said so on every plan (an operator in
    // an outage still needs keys and consumers).
    let (view, shared_error) = match view {
        Ok(view) => (view, None),
        Err(e) => (
            None,
            Some(format!(
                "cannot read the shared journal in coordination storage ({e}); rotations shown are this replica's own"
            )),
        ),
    };
    let now = inner.clock.now();
    let mut out = Vec::with_capacity(plans.len());
    for (plan, inventory) in plans.iter().zip(inventories) {
        let (history, last, state) = {
            let local = inner.journal();
            let journal = view.as_ref().map_or(&*local, |v| &v.journal);
            (
                journal.history(Some(&plan.name), 1)?,
                journal.last_finished(&plan.name)?,
                local.plan_state(&plan.name)?,
            )
        };
        let last_started = history.first().map(|r| r.started_at);
        let unfinished = history
            .first()
            .filter(|r| r.finished_at.is_none())
            .map(|r| r.id.clone());
        let (inventory, error) = match inventory {
            Ok(i) => (Some(i), shared_error.clone()),
            Err(e) => (
                None,
                Some(match &shared_error {
                    Some(shared) => format!("{e}; {shared}"),
                    None => e.to_string(),
                }),
            ),
        };
        let active = inventory.as_ref().and_then(|i| i.active);
        let active_key_created = match (&inventory, active) {
            (Some(i), Some(a)) => i.key(a).created,
            _ => None,
        };
        // The daemon's memory of the plan decides as the scheduler does: parked plans
        // wait for a person, a failed cycle for its retry time, and cron counts from
        // the last start (or from when the daemon first saw the plan). With
        // `[coordination]` that memory is the plan's shared state (the same on every
        // replica and machine), else the local `plan_state`.
        let shared = view
            .as_ref()
            .and_then(|v| v.plan_state(&plan.storage_account, &plan.name));
        let (failures, retry_at, parked, shared_started) = match shared {
            Some(s) => (
                s.failures,
                s.retry_at,
                s.parked.map(|p| ParkedStatus {
                    at: p.at,
                    reason: p.reason,
                }),
                s.last_started,
            ),
            None => (
                state.as_ref().map_or(0, |s| s.failures),
                state.as_ref().and_then(|s| s.retry_at),
                state
                    .as_ref()
                    .and_then(|s| s.parked.as_ref())
                    .map(|p| ParkedStatus {
                        at: p.at,
                        reason: p.reason.clone(),
                    }),
                None,
            ),
        };
        let retry_at = retry_at.filter(|_| failures > 0);
        let (next_due, due_reason) = match &plan.schedule {
            None => (None, "manual".to_owned()),
            Some(_) if parked.is_some() => (None, "parked".to_owned()),
            Some(_) if retry_at.is_some() => (retry_at.map(|at| at.max(now)), "retry".to_owned()),
            Some(schedule) => {
                let decision = schedule::decide(
                    &plan.name,
                    schedule,
                    &Known {
                        last_started: last_started
                            .max(state.as_ref().and_then(|s| s.last_started))
                            .max(shared_started),
                        active_key_created,
                        baseline: state.as_ref().map_or(now, |s| s.first_seen),
                    },
                    now,
                );
                let at = match decision {
                    // When it became due, as the daemon's scheduler shows it: any
                    // time not after the status's own `at` reads "now".
                    Decision::Due { since, .. } => Some(since.min(now)),
                    Decision::Wait { until, .. } => Some(until),
                    Decision::Never => None,
                };
                (at, decision.reason_code().to_owned())
            }
        };
        out.push(PlanStatus {
            plan: plan.name.clone(),
            account: plan.storage_account.to_string(),
            description: plan.description.clone(),
            active,
            key1_created: inventory.as_ref().and_then(|i| i.key1.created),
            key2_created: inventory.as_ref().and_then(|i| i.key2.created),
            last_rotation: last.map(|r| LastRotation {
                rotation_id: r.id.clone(),
                started_at: r.started_at,
                finished_at: r.finished_at,
                outcome: r
                    .outcome
                    .as_ref()
                    .map_or("unfinished", outcome_kind)
                    .to_owned(),
                summary: r
                    .outcome
                    .as_ref()
                    .map_or_else(|| "unfinished".to_owned(), ToString::to_string),
            }),
            unfinished,
            next_due,
            due_reason,
            drift: inventory.map(|i| i.drift).unwrap_or_default(),
            error,
            schedule: ScheduleStatus {
                running: None,
                failures,
                retry_at,
                parked,
                findings: Vec::new(),
            },
            lease: view.as_ref().map(|v| v.lease(&plan.storage_account)),
        });
    }
    Ok(out)
}

/// A report of a stored rotation, its machine rebuilt from the journal's events.
pub(super) fn report_of(
    inner: &Inner,
    record: &RotationRecord,
) -> Result<RotationReport, EngineError> {
    let events = inner.journal().events_of(&record.id)?;
    Ok(report_from(inner, record, events))
}

fn report_from(
    inner: &Inner,
    record: &RotationRecord,
    events: Vec<crate::rotation::machine::Event>,
) -> RotationReport {
    let view = Machine::replay(record.mode, record.options, &events)
        .ok()
        .map(|m| m.view());
    let dir = inner.reports_dir();
    let paths = IncidentReportPaths {
        markdown: dir.join(format!("{}.md", record.id)),
        json: dir.join(format!("{}.json", record.id)),
    };
    let written = paths.markdown.is_file().then_some(paths);
    RotationReport::build(record, view.as_ref(), false, written)
}

/// Newest first; with `[coordination]` from the shared journal of every account in
/// coordination storage.
pub(super) async fn history(
    inner: &Inner,
    plan: Option<&str>,
    since: Option<chrono::DateTime<chrono::Utc>>,
    limit: usize,
) -> Result<Vec<RotationReport>, EngineError> {
    if let Some(view) = SharedView::read(inner, None).await? {
        let records = view.journal.history_since(plan, since, limit)?;
        return records
            .iter()
            .map(|r| Ok(report_from(inner, r, view.journal.events_of(&r.id)?)))
            .collect();
    }
    local_history(inner, plan, since, limit)
}

/// [`history`] from this process's own journal (the daemon's bookkeeping of its runs).
pub(super) fn local_history(
    inner: &Inner,
    plan: Option<&str>,
    since: Option<chrono::DateTime<chrono::Utc>>,
    limit: usize,
) -> Result<Vec<RotationReport>, EngineError> {
    let records = inner.journal().history_since(plan, since, limit)?;
    records.iter().map(|r| report_of(inner, r)).collect()
}
