//! A read-only picture of a rotation for `keyflip status`, progress output and reports:
//! the phase, the active/standby decision, each consumer's state and a timeline of
//! everything that happened. Built on demand by [`super::Machine::view`]; owned and
//! serializable so the daemon can send it over the control socket (it holds no key).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::amend::Escalation;
use super::failure::{Failure, Warning};
use super::outcome::{Cause, Drift, Outcome, Regeneration};
use super::precheck::Route;
use super::types::{Action, Caller, Command, ConsumerRef, Holding, Mode, Requester, StepResult};
use super::{Decided, Entry, Machine, Stage, State};
use crate::key::KeyName;
use crate::secret::Fingerprint;

/// Where a rotation is. The last four are ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Prechecking,
    Staging,
    VerifyingKey,
    Revoking,
    Binding,
    VerifyingConsumers,
    Committing,
    Grace,
    /// Asking the resource logs who signs with a key (before staging, or an
    /// incident's callers).
    CheckingUsage,
    /// The usage gate holds the retire while the old key is still in use.
    UsageGate,
    Retiring,
    Cleanup,
    RollingBack,
    Completed,
    RolledBack,
    Refused,
    NeedsAttention,
}

/// What the machine believes about one consumer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ConsumerStatus {
    /// No command has touched it.
    Untouched,
    /// A bind to `key` is in flight.
    Binding { key: KeyName },
    /// Bound to `key`, not yet verified.
    Bound { key: KeyName },
    /// A check that it holds `key` is in flight.
    Verifying { key: KeyName },
    /// Verified to hold `key`, and `key` works.
    Verified { key: KeyName },
    /// Binding to `key` failed.
    BindFailed { key: KeyName, reason: Failure },
    /// It does not hold `key` (or `key` does not work through it).
    Mismatch { key: KeyName, reason: Failure },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerView {
    pub consumer: ConsumerRef,
    /// What it held at observation.
    pub(crate) initially: Holding,
    pub status: ConsumerStatus,
    /// Key Vault versions disabled by this rotation.
    pub(crate) disabled_versions: Vec<String>,
}

/// A decision or finding worth a line in the timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "note", rename_all = "snake_case")]
pub enum Note {
    /// The precheck passed.
    Decided {
        route: Route,
        active: KeyName,
        standby: KeyName,
    },
    /// A failure before commit: consumers go back to the old key.
    RollbackStarted { cause: Cause },
    /// A restart's observation; `drifts` empty when Azure matched the journal.
    Reobserved { drifts: Vec<Drift> },
    /// Something the report should say that changed nothing.
    Warning { warning: Warning },
    /// The usage gate holds the retire of `key`: these callers still sign with it
    /// (or, with `unknown`, the logs could not be read); it asks again at `next` and
    /// parks at `deadline`.
    UsageHeld {
        key: KeyName,
        callers: Vec<Caller>,
        unknown: Option<Failure>,
        next: DateTime<Utc>,
        deadline: DateTime<Utc>,
    },
    /// An incident took this rotation over: finished here, or wound down for a
    /// follow-up rotation.
    Escalated {
        mode: Mode,
        by: Option<Requester>,
        handled_here: bool,
    },
    /// The grace period was shortened to `grace_ms`.
    GraceShortened {
        grace_ms: i64,
        by: Option<Requester>,
    },
}

/// A grace period shortened by a person (`rotate resume --grace`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraceShortening {
    pub at: DateTime<Utc>,
    /// The grace period from then on.
    pub grace_ms: i64,
    #[serde(default)]
    pub by: Option<Requester>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "what", rename_all = "snake_case")]
pub enum Happening {
    Issued { command: Command },
    Answered { seq: u32, result: StepResult },
    Noted { note: Note },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TimelineEntry {
    /// When it happened: the time of the event that caused it. The first `Observe` is
    /// issued before any event, so it has none.
    pub at: Option<DateTime<Utc>>,
    pub what: Happening,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct View {
    /// The mode the rotation runs in now (an incident that took it over and handles
    /// it here changes it).
    pub mode: Mode,
    /// The incident that took the rotation over, if one did.
    pub escalation: Option<Escalation>,
    /// Each time a person shortened the grace period.
    pub grace_shortened: Vec<GraceShortening>,
    pub(crate) phase: Phase,
    /// Decided at precheck.
    pub route: Option<Route>,
    /// The key consumers held at precheck. With `revoke_first` it is also the key they
    /// end on, with the value it got at its revoke.
    pub active: Option<KeyName>,
    /// The other key: moved to in a swap, revoked when it is the leaked standby, and
    /// with `revoke_first` only verified (the working key kept while the leaked one is
    /// revoked), never moved to.
    pub standby: Option<KeyName>,
    /// The fingerprint consumers are moved to: the staged standby's, the existing
    /// standby's on the leaked-active fast path, or with `revoke_first` the active
    /// key's fresh value (`None` until its revoke succeeded).
    pub target: Option<Fingerprint>,
    pub(crate) committed_at: Option<DateTime<Utc>>,
    pub consumers: Vec<ConsumerView>,
    pub regenerations: Vec<Regeneration>,
    pub warnings: Vec<Warning>,
    pub timeline: Vec<TimelineEntry>,
    pub outcome: Option<Outcome>,
}

impl Machine {
    pub(crate) fn phase(&self) -> Phase {
        let stage = match &self.state {
            State::Prechecking => return Phase::Prechecking,
            State::Revoking(early) => {
                return match early.stage {
                    super::revoke_first::EarlyStage::Revoking { .. } => Phase::Revoking,
                    // Reading the consumers after the revoke, to decide the route.
                    super::revoke_first::EarlyStage::Observing { .. } => Phase::Prechecking,
                };
            }
            State::Ended => return self.end_phase(),
            State::Decided { stage, .. } => stage,
        };
        match stage {
            Stage::Staging => Phase::Staging,
            Stage::VerifyingKey { .. } => Phase::VerifyingKey,
            Stage::Revoking { .. } => Phase::Revoking,
            Stage::Binding { .. } => Phase::Binding,
            Stage::VerifyingConsumers { .. } => Phase::VerifyingConsumers,
            Stage::Committing { .. } => Phase::Committing,
            Stage::Grace { .. } => Phase::Grace,
            Stage::CheckingStandby | Stage::Reporting { .. } => Phase::CheckingUsage,
            Stage::Gating { .. } => Phase::UsageGate,
            Stage::Retiring { .. } => Phase::Retiring,
            Stage::Cleanup => Phase::Cleanup,
            Stage::RollingBack { .. } => Phase::RollingBack,
            Stage::Finished => self.end_phase(),
        }
    }

    fn end_phase(&self) -> Phase {
        match self.outcome() {
            Some(Outcome::Completed { .. }) => Phase::Completed,
            Some(Outcome::RolledBack { .. }) => Phase::RolledBack,
            Some(Outcome::Refused { .. }) => Phase::Refused,
            Some(Outcome::NeedsAttention { .. }) | None => Phase::NeedsAttention,
        }
    }

    fn decided(&self) -> Option<&Decided> {
        match &self.state {
            State::Decided { decided, .. } => Some(decided),
            State::Prechecking | State::Revoking(_) | State::Ended => None,
        }
    }

    /// The value consumers move to, as last sent to the data plane for checking: the
    /// latest `VerifyKey` of the key they end on.
    fn target(&self) -> Option<Fingerprint> {
        let to = self.decided()?.moves_to();
        self.steps
            .iter()
            .rev()
            .find_map(|s| match s.command.action {
                Action::VerifyKey {
                    key, fingerprint, ..
                } if key == to => Some(fingerprint),
                _ => None,
            })
    }

    /// When `Commit` answered.
    pub(super) fn committed_at(&self) -> Option<DateTime<Utc>> {
        self.steps
            .iter()
            .find_map(|s| match (&s.command.action, &s.answer) {
                (Action::Commit, Some((at, _))) => Some(*at),
                _ => None,
            })
    }

    /// A snapshot for status and reports.
    pub(crate) fn view(&self) -> View {
        let timeline = self
            .timeline
            .iter()
            .filter_map(|entry| match entry {
                Entry::Issued(seq) => self.step_index(*seq).map(|i| TimelineEntry {
                    at: self.steps[i].issued_at,
                    what: Happening::Issued {
                        command: self.steps[i].command.clone(),
                    },
                }),
                Entry::Answered(seq) => self.step_index(*seq).and_then(|i| {
                    self.steps[i]
                        .answer
                        .as_ref()
                        .map(|(at, result)| TimelineEntry {
                            at: Some(*at),
                            what: Happening::Answered {
                                seq: *seq,
                                result: result.clone(),
                            },
                        })
                }),
                Entry::Noted(at, note) => Some(TimelineEntry {
                    at: Some(*at),
                    what: Happening::Noted { note: note.clone() },
                }),
            })
            .collect();
        View {
            mode: self.mode,
            escalation: self.escalation.clone(),
            grace_shortened: self
                .timeline
                .iter()
                .filter_map(|e| match e {
                    Entry::Noted(at, Note::GraceShortened { grace_ms, by }) => {
                        Some(GraceShortening {
                            at: *at,
                            grace_ms: *grace_ms,
                            by: by.clone(),
                        })
                    }
                    _ => None,
                })
                .collect(),
            phase: self.phase(),
            route: self.decided().map(|d| d.route),
            active: self.decided().map(|d| d.active),
            standby: self.decided().map(|d| d.standby),
            target: self.target(),
            committed_at: self.committed_at(),
            consumers: self
                .consumers
                .iter()
                .map(|t| ConsumerView {
                    consumer: t.consumer.clone(),
                    initially: t.initially.clone(),
                    status: t.status.clone(),
                    disabled_versions: t.disabled.clone(),
                })
                .collect(),
            regenerations: self.regenerations.clone(),
            warnings: self.warnings.clone(),
            timeline,
            outcome: self.outcome().cloned(),
        }
    }
}
