//! What the engine hands back: a [`RotationReport`] per rotation (also what `history`
//! lists), a [`DryRun`], an [`Inventory`] of one plan and a [`PlanStatus`] per plan.
//! All are `Serialize` for `--output json`, and the ones a command prints are also
//! `Deserialize`: the daemon's control socket carries them as they are, so a command
//! prints the same whichever process did the work. They hold key names and
//! fingerprints only, never a key.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::exit::Exit;
use crate::journal::{RotationRecord, StepRecord};
use crate::key::KeyName;
use crate::rotation::machine::{
    Action, ConsumerRef, ConsumerView, Holding, KeyState, MissingPermission, Mode,
    ObservedConsumer, Outcome, Purpose, RefusalReason, Regeneration, Route, StepResult, View,
    Warning,
};

use super::origin::{Requester, Trigger};
use crate::rotation::machine::{Escalation, GraceShortening};

/// Where an incident report was written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentReportPaths {
    pub markdown: PathBuf,
    pub json: PathBuf,
}

/// The precheck's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionReport {
    pub route: Route,
    /// The key consumers held.
    pub active: KeyName,
    /// The other key.
    pub standby: KeyName,
}

/// Both keys at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPair {
    pub key1: KeyState,
    pub key2: KeyState,
}

/// One command of a rotation and what became of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    pub seq: u32,
    /// The command's kind (`observe`, `regenerate`, `bind`, ...).
    pub kind: String,
    /// The command in words.
    pub step: String,
    pub command: Action,
    pub(crate) intent_at: DateTime<Utc>,
    pub result: Option<StepResult>,
    pub result_at: Option<DateTime<Utc>>,
    /// From intent to result, when both are recorded.
    pub duration_ms: Option<i64>,
    /// `Some(false)` for a failure result, `None` while in doubt.
    pub ok: Option<bool>,
}

impl StepReport {
    /// A step of a rotation that finished at `finished_at`, if it has. `Finish` takes no
    /// result: once the rotation is finished, its `Finish` is done (it ended when the
    /// outcome was recorded), not in doubt.
    pub fn of(step: &StepRecord, finished_at: Option<DateTime<Utc>>) -> StepReport {
        let mut report = StepReport::from_record(step);
        if let (Action::Finish { .. }, Some(end)) = (&step.command.action, finished_at) {
            report.result_at = Some(end);
            report.duration_ms = Some((end - step.intent_at).num_milliseconds());
            report.ok = Some(true);
        }
        report
    }

    pub(crate) fn from_record(step: &StepRecord) -> StepReport {
        StepReport {
            seq: step.seq(),
            kind: step.command.action.name().to_owned(),
            step: step.command.action.to_string(),
            command: step.command.action.clone(),
            intent_at: step.intent_at,
            result: step.result.clone(),
            result_at: step.result_at,
            duration_ms: step
                .result_at
                .map(|end| (end - step.intent_at).num_milliseconds()),
            ok: step.result.as_ref().map(|r| r.failure().is_none()),
        }
    }
}

/// One rotation: what `rotate`, `resume` and `history` return.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RotationReport {
    pub rotation_id: String,
    pub plan: String,
    /// The storage account's ARM id.
    pub account: String,
    /// The mode it began in (an incident that took it over shows in `escalation`).
    pub mode: Mode,
    /// Why it ran (`None` for rotations journaled before keyflip recorded it).
    pub trigger: Option<Trigger>,
    /// Who asked for it (`None` for the daemon's own rotations).
    #[serde(default)]
    pub requested_by: Option<Requester>,
    /// The unfinished rotation the command that started this one finished first (an
    /// incident that took it over, or `--adopt`).
    #[serde(default)]
    pub follows: Option<String>,
    /// An incident that took this rotation over: when, which, who asked, and whether
    /// this rotation handled it or a follow-up did.
    #[serde(default)]
    pub escalation: Option<Escalation>,
    /// Each time a person shortened the grace period, and who.
    #[serde(default)]
    pub grace_shortened: Vec<GraceShortening>,
    /// This run picked up an unfinished rotation.
    pub resumed: bool,
    /// `None` while the rotation is unfinished.
    pub outcome: Option<Outcome>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub decision: Option<DecisionReport>,
    /// Both keys at the first observation.
    pub keys_before: Option<KeyPair>,
    /// Both keys as this rotation left them (the first observation plus every
    /// regeneration).
    pub keys_after: Option<KeyPair>,
    pub regenerated: Vec<Regeneration>,
    pub consumers: Vec<ConsumerView>,
    pub warnings: Vec<Warning>,
    pub steps: Vec<StepReport>,
    pub incident_report: Option<IncidentReportPaths>,
}

impl RotationReport {
    /// Completed → `Ok`, Refused → `Refused`, RolledBack → `RolledBack`,
    /// NeedsAttention → `NeedsAttention`; unfinished → `Failure`.
    pub fn exit(&self) -> Exit {
        match &self.outcome {
            Some(Outcome::Completed { .. }) => Exit::Ok,
            Some(Outcome::Refused { .. }) => Exit::Refused,
            Some(Outcome::RolledBack { .. }) => Exit::RolledBack,
            Some(Outcome::NeedsAttention { .. }) => Exit::NeedsAttention,
            None => Exit::Failure,
        }
    }

    /// Builds the report from the journal's record and the replayed machine's view
    /// (`None` when the rotation cannot be replayed; the steps still show).
    pub(crate) fn build(
        record: &RotationRecord,
        view: Option<&View>,
        resumed: bool,
        incident_report: Option<IncidentReportPaths>,
    ) -> RotationReport {
        let keys_before = record.steps.iter().find_map(|s| match &s.result {
            Some(StepResult::Observed(obs)) => Some(KeyPair {
                key1: obs.key1,
                key2: obs.key2,
            }),
            _ => None,
        });
        let regenerated = view.map(|v| v.regenerations.clone()).unwrap_or_default();
        let keys_after = keys_before.map(|mut keys| {
            for r in &regenerated {
                let after =
                    record
                        .steps
                        .iter()
                        .find_map(|s| match (&s.command.action, &s.result) {
                            (
                                Action::Regenerate { key, .. },
                                Some(StepResult::Regenerated {
                                    fingerprint,
                                    created,
                                }),
                            ) if *key == r.key && *fingerprint == r.after => Some(*created),
                            _ => None,
                        });
                let state = KeyState {
                    fingerprint: r.after,
                    created: after.flatten(),
                };
                match r.key {
                    KeyName::Key1 => keys.key1 = state,
                    KeyName::Key2 => keys.key2 = state,
                }
            }
            keys
        });
        RotationReport {
            rotation_id: record.id.clone(),
            plan: record.plan.clone(),
            account: record.account.to_string(),
            mode: record.mode,
            trigger: record.origin.as_ref().map(|o| o.trigger.clone()),
            requested_by: record.origin.as_ref().and_then(|o| o.by.clone()),
            follows: record.origin.as_ref().and_then(|o| o.follows.clone()),
            escalation: view.and_then(|v| v.escalation.clone()),
            grace_shortened: view.map(|v| v.grace_shortened.clone()).unwrap_or_default(),
            resumed,
            outcome: record.outcome.clone(),
            started_at: record.started_at,
            finished_at: record.finished_at,
            decision: view.and_then(|v| match (v.route, v.active, v.standby) {
                (Some(route), Some(active), Some(standby)) => Some(DecisionReport {
                    route,
                    active,
                    standby,
                }),
                _ => None,
            }),
            keys_before,
            keys_after,
            regenerated,
            consumers: view.map(|v| v.consumers.clone()).unwrap_or_default(),
            warnings: view.map(|v| v.warnings.clone()).unwrap_or_default(),
            steps: record
                .steps
                .iter()
                .map(|s| StepReport::of(s, record.finished_at))
                .collect(),
            incident_report,
        }
    }
}

/// One step a rotation would take, and the Azure calls it makes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedStep {
    pub seq: u32,
    /// The step in words (without fingerprints: a dry run's new values are made up).
    pub step: String,
    /// The command's kind (`observe`, `regenerate`, `bind`, ...).
    pub kind: String,
    /// The key the step regenerates, verifies or binds to.
    pub key: Option<KeyName>,
    /// Why a regeneration happens.
    pub purpose: Option<Purpose>,
    /// The consumer the step is about.
    pub consumer: Option<ConsumerRef>,
    /// Every HTTP call, in order, for steps that touch Azure.
    pub calls: Vec<PlannedCall>,
}

/// One HTTP call a step makes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedCall {
    pub method: String,
    pub service: CallService,
    /// An ARM resource path (`/subscriptions/…`) or a URL.
    pub target: String,
    /// The body or what the call is for, when it matters.
    pub note: Option<String>,
}

impl PlannedCall {
    /// An ARM call other than GET: what the subscription's write budget counts
    /// (POST actions such as `listKeys` count as writes).
    pub fn is_arm_write(&self) -> bool {
        self.service == CallService::Arm && self.method != "GET"
    }

    /// A call as the consumer kinds word it: `METHOD target` and anything after the
    /// target as its note (`PUT …/secrets/x (a new version: …)`). The service follows
    /// from the target ([`CallService::of_target`]).
    pub(crate) fn from_text(text: &str) -> PlannedCall {
        const METHODS: [&str; 6] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"];
        let (method, rest) = match text.split_once(' ') {
            Some((m, rest)) if METHODS.contains(&m) => (m.to_owned(), rest),
            _ => (String::new(), text),
        };
        let (target, note) = match rest.split_once(' ') {
            Some((t, n)) => (t.to_owned(), Some(n.trim())),
            None => (rest.to_owned(), None),
        };
        let note = note.filter(|n| !n.is_empty()).map(|n| {
            let inner = n.strip_prefix('(').and_then(|n| n.strip_suffix(')'));
            match inner {
                Some(inner) if !inner.contains(['(', ')']) => inner.to_owned(),
                _ => n.to_owned(),
            }
        });
        let service = CallService::of_target(&target);
        PlannedCall {
            method,
            service,
            target,
            note,
        }
    }
}

impl std::fmt::Display for PlannedCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.target)?;
        if let Some(note) = &self.note {
            write!(f, " ({note})")?;
        }
        Ok(())
    }
}

pub use crate::azure::CallService;

/// What a rotation would do, decided from live state; nothing was changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DryRun {
    pub plan: String,
    pub account: String,
    pub mode: Mode,
    /// The grace period this rotation would wait (zero for incidents).
    pub grace_ms: u64,
    pub decision: Option<DecisionReport>,
    /// Set when the precheck would refuse; then `steps` stop at the observation.
    pub refused: Option<Vec<RefusalReason>>,
    /// An unfinished rotation of the plan: `rotate now` finishes it instead of
    /// starting the one shown here.
    #[serde(default)]
    pub unfinished: Option<String>,
    pub consumers: Vec<ObservedConsumer>,
    pub warnings: Vec<Warning>,
    /// What the binds do besides moving the key (an App Service app restarts), each
    /// once with the number of binds that cause it.
    #[serde(default)]
    pub effects: Vec<PlannedEffect>,
    /// The steps in order, assuming every one succeeds.
    pub steps: Vec<PlannedStep>,
}

/// A side effect of some binds of a dry run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedEffect {
    /// In the consumer kind's words: `restarts func-datasci-ingest (...)`.
    pub effect: String,
    /// How many binds cause it (each a write, each an effect).
    pub writes: usize,
}

impl DryRun {
    pub fn exit(&self) -> Exit {
        if self.refused.is_some() {
            Exit::Refused
        } else {
            Exit::Ok
        }
    }
}

/// Live state of one plan (reads only).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    pub plan: String,
    pub account: String,
    pub(crate) observed_at: DateTime<Utc>,
    pub key1: KeyState,
    pub key2: KeyState,
    pub shared_key_access: bool,
    pub missing_permissions: Vec<MissingPermission>,
    /// Every consumer, discovered datastores included, with the key it holds.
    pub consumers: Vec<ObservedConsumer>,
    /// The key every consumer whose key is known holds; `None` when they are split
    /// or none is known.
    pub active: Option<KeyName>,
    /// Consumers not on `active` (or, without an active key, every known one).
    pub drift: Vec<ObservedConsumer>,
}

impl Inventory {
    pub fn key(&self, key: KeyName) -> &KeyState {
        match key {
            KeyName::Key1 => &self.key1,
            KeyName::Key2 => &self.key2,
        }
    }

    /// The active key, and the consumers not on it.
    pub(crate) fn decide_active(
        consumers: &[ObservedConsumer],
    ) -> (Option<KeyName>, Vec<ObservedConsumer>) {
        let on = |k: KeyName| {
            consumers
                .iter()
                .filter(|c| c.holding == Holding::Key(k))
                .count()
        };
        let active = match (on(KeyName::Key1), on(KeyName::Key2)) {
            (0, 0) => None,
            (_, 0) => Some(KeyName::Key1),
            (0, _) => Some(KeyName::Key2),
            _ => None,
        };
        let drift = consumers
            .iter()
            .filter(|c| match (&c.holding, active) {
                (Holding::Key(k), Some(a)) => *k != a,
                (Holding::Key(_), None) => true,
                (Holding::Neither, _) => true,
                _ => false,
            })
            .cloned()
            .collect();
        (active, drift)
    }
}

/// The last finished rotation of a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LastRotation {
    pub rotation_id: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// `completed`, `rolled_back`, `refused`, `needs_attention`.
    pub outcome: String,
    /// The outcome in words.
    pub summary: String,
}

/// One plan for `keyflip status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanStatus {
    pub plan: String,
    pub account: String,
    /// The plan's `description`.
    #[serde(default)]
    pub description: Option<String>,
    /// `None` when the account could not be read (see `error`) or consumers are split.
    pub active: Option<KeyName>,
    pub key1_created: Option<DateTime<Utc>>,
    pub key2_created: Option<DateTime<Utc>>,
    pub last_rotation: Option<LastRotation>,
    /// An unfinished rotation of this plan, if any.
    pub unfinished: Option<String>,
    /// When the schedule makes the plan due next (now, when due already); `None`
    /// without a schedule or when it never fires.
    pub next_due: Option<DateTime<Utc>>,
    /// `schedule::Decision::reason_code`, or `manual` for plans without a schedule.
    pub due_reason: String,
    /// Consumers not on the active key.
    pub drift: Vec<ObservedConsumer>,
    /// Why live state could not be read, when it could not.
    pub error: Option<String>,
    /// What the scheduler knows of the plan.
    #[serde(default)]
    pub schedule: ScheduleStatus,
    /// With `[coordination]`: the account's lease, as coordination storage shows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseStatus>,
}

/// Who holds an account's lease (replicas), read from the account's shared journal
/// blob: the lease state the service reports and the replica that last took it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseStatus {
    /// Whether a replica holds the lease now.
    pub held: bool,
    /// The replica that holds it (or held it last), when one ever did.
    pub replica: Option<String>,
    /// Since when that replica holds (or held) it.
    pub since: Option<DateTime<Utc>>,
}

impl PlanStatus {
    /// Whether the plan needs a person: the daemon parked it, or its last rotation
    /// ended parked (as a standalone run leaves it) with nothing completed since.
    pub fn needs_attention(&self) -> bool {
        self.schedule.parked.is_some()
            || self
                .last_rotation
                .as_ref()
                .is_some_and(|r| r.outcome == "needs_attention")
    }

    /// A plan whose live state and journal could not be read at all.
    #[cfg(test)]
    pub(crate) fn unreadable(plan: &str, account: &str, error: String) -> PlanStatus {
        PlanStatus {
            plan: plan.to_owned(),
            account: account.to_owned(),
            description: None,
            active: None,
            key1_created: None,
            key2_created: None,
            last_rotation: None,
            unfinished: None,
            next_due: None,
            due_reason: "unknown".to_owned(),
            drift: Vec::new(),
            error: Some(error),
            schedule: ScheduleStatus::default(),
            lease: None,
        }
    }
}

/// What the daemon's scheduler knows of a plan. Failures, the retry time and parking
/// are the journal's `plan_state`, so a standalone `status` shows them too (as the
/// daemon left them); what a job is running now and the drift watch's findings only a
/// running daemon knows, and they are empty otherwise.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleStatus {
    /// The job the daemon runs for the plan right now.
    pub running: Option<RunningJob>,
    /// Failed cycles in a row; reset by a completed rotation.
    pub failures: u32,
    /// When the daemon retries after a failure.
    pub retry_at: Option<DateTime<Utc>>,
    /// The daemon stopped rotating the plan until a rotation succeeds.
    pub parked: Option<ParkedStatus>,
    /// The drift watch's current findings, one line each.
    pub findings: Vec<String>,
}

/// A job the daemon runs for a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningJob {
    /// `rotation`, `resume` or `repair`.
    pub kind: String,
    /// Known once the engine has recorded the rotation.
    pub rotation_id: Option<String>,
    pub since: DateTime<Utc>,
}

/// Why and since when a plan is parked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedStatus {
    pub at: DateTime<Utc>,
    pub reason: String,
}
