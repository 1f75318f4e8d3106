//! Changes a person makes to an unfinished rotation, as journaled events: an incident
//! that takes it over ([`Event::Escalated`]) and a shorter grace period
//! ([`Event::GraceShortened`]). Both arrive through the executor when a command finds
//! the rotation unfinished (after a crash, a Ctrl-C, or a daemon job it pre-empted),
//! are journaled like any event, and replay to the same state. See the module docs,
//! "Escalation".

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::failure::{Warning, WarningKind};
use super::outcome::Cause;
use super::precheck::Route;
use super::types::*;
use super::view::Note;
use super::{HandleError, Machine, Round, Stage, State};

/// An incident that took over this rotation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escalation {
    pub at: DateTime<Utc>,
    /// The incident asked for.
    pub mode: Mode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<Requester>,
    /// This rotation finishes the incident itself (its mode became the incident's).
    /// Otherwise it winds down the quickest safe way and a follow-up rotation in
    /// `mode` does ([`Machine::follow_up`]).
    pub handled_here: bool,
}

impl Machine {
    /// T42-T45: an incident takes over. The grace period is gone whatever happens. A
    /// scheduled swap whose old key (the one being retired) leaked finishes the
    /// incident itself: the route becomes the leaked-active one, so the old key is
    /// retired as soon as the swap is committed and its leaked value's Key Vault
    /// versions are disabled. Anything else winds down: a swap still in its first round
    /// (before any resync and before commit) rolls back, since consumers must not end
    /// on a value that may have leaked; from a resync or commit on it goes forward
    /// without grace; the executor then starts the follow-up incident rotation.
    pub(super) fn escalate(
        &mut self,
        state: State,
        at: DateTime<Utc>,
        mode: Mode,
        by: Option<Requester>,
        out: &mut Vec<Command>,
    ) -> State {
        let covered = self.mode.covers(mode);
        self.options.grace = TimeDelta::zero();
        let (state, handled_here) = match state {
            _ if covered => (state, true),
            State::Prechecking => {
                self.mode = mode;
                (State::Prechecking, true)
            }
            State::Decided { mut decided, stage } => {
                let here = self.mode == Mode::Scheduled
                    && decided.route == Route::Scheduled
                    && !matches!(stage, Stage::RollingBack { .. } | Stage::Finished)
                    && matches!(mode, Mode::Leaked { key, .. } if key == decided.active);
                if here {
                    self.mode = Mode::Leaked {
                        key: decided.active,
                        revoke_first: false,
                    };
                    decided.route = Route::LeakedActive {
                        revoke_first: false,
                        stage_standby: true,
                    };
                    decided.leaked = vec![decided.last(decided.active).fingerprint];
                    if matches!(
                        mode,
                        Mode::Leaked {
                            revoke_first: true,
                            ..
                        }
                    ) {
                        self.warn(
                            at,
                            Warning::new(
                                WarningKind::TakenOver,
                                format!(
                                    "--revoke-first was not applied: consumers were already moving off {} to {}, so keyflip finished that swap and retired {} at once, with no grace period",
                                    decided.active, decided.standby, decided.active
                                ),
                            ),
                        );
                    }
                    (State::Decided { decided, stage }, true)
                } else {
                    let first_round = matches!(
                        stage,
                        Stage::Staging
                            | Stage::VerifyingKey {
                                check: super::KeyCheck::Target,
                                ..
                            }
                            | Stage::Binding {
                                round: Round::Steerable,
                                ..
                            }
                            | Stage::VerifyingConsumers {
                                round: Round::Steerable,
                                ..
                            }
                    ) && !decided.forward_only(Round::Steerable);
                    let stage = if first_round {
                        let moved_to = stage.moved_to();
                        self.roll_back(&decided, Cause::Superseded { mode }, moved_to, at, out)
                    } else {
                        stage
                    };
                    (State::Decided { decided, stage }, false)
                }
            }
            // A revoke first, before its route is decided: the revoke is issued and
            // nothing rolls back; it goes on to the end, then the follow-up.
            State::Revoking(early) => (State::Revoking(early), false),
            State::Ended => (State::Ended, true),
        };
        self.note(
            at,
            Note::Escalated {
                mode,
                by: by.clone(),
                handled_here,
            },
        );
        if !covered {
            self.escalation = Some(Escalation {
                at,
                mode,
                by,
                handled_here,
            });
        }
        state
    }

    /// Whether `event` can amend this rotation now: an incident only takes over, and
    /// a grace period can only be shortened while there is one ahead or running. The
    /// executor asks before journaling anything (a rejected event is never stored).
    pub(super) fn check_amendment(&self, event: &Event) -> Result<(), HandleError> {
        let refuse = |reason: String| Err(HandleError::Amendment { reason });
        match event {
            Event::Escalated { mode, .. } if !mode.is_incident() => refuse(format!(
                "only an incident takes over a rotation, not {mode}"
            )),
            Event::Escalated { .. } => Ok(()),
            Event::GraceShortened { grace, .. } => {
                if self.mode != Mode::Scheduled {
                    return refuse(format!("this rotation ({}) has no grace period", self.mode));
                }
                if *grace > self.options.grace {
                    return refuse(format!(
                        "its grace period is {}s and --grace can only shorten it",
                        self.options.grace.num_seconds()
                    ));
                }
                match &self.state {
                    State::Prechecking => Ok(()),
                    State::Decided { stage, .. } => match stage {
                        Stage::Staging
                        | Stage::VerifyingKey { .. }
                        | Stage::Binding { .. }
                        | Stage::VerifyingConsumers { .. }
                        | Stage::Committing { .. }
                        | Stage::Grace { .. } => Ok(()),
                        Stage::RollingBack { .. } => {
                            refuse("it is rolling back, so no grace period follows".to_owned())
                        }
                        _ => refuse(
                            "its grace period is over: the old key is being retired, or was"
                                .to_owned(),
                        ),
                    },
                    State::Revoking(_) => {
                        refuse("it is an incident, with no grace period".to_owned())
                    }
                    State::Ended => refuse("it has finished".to_owned()),
                }
            }
            Event::Answer { .. } | Event::Reobserved { .. } => Ok(()),
        }
    }

    /// T46: a shorter grace: the grace a commit waits, and the end of a grace already
    /// running ([`Machine::deadline`]).
    pub(super) fn shorten_grace(
        &mut self,
        at: DateTime<Utc>,
        grace: TimeDelta,
        by: Option<Requester>,
    ) {
        self.options.grace = self.options.grace.min(grace);
        self.note(
            at,
            Note::GraceShortened {
                grace_ms: grace.num_milliseconds(),
                by,
            },
        );
    }

    /// When a `WaitUntil` should end: its `at`, except for the grace wait, which ends
    /// at commit + the grace as shortened since (an incident makes it zero), but not
    /// before the usage gate's first check can see the logs (when the gate applies).
    /// The executor waits until this; the machine's state does not depend on it.
    pub fn deadline(&self, command: &Command) -> Option<DateTime<Utc>> {
        let Action::WaitUntil { at } = command.action else {
            return None;
        };
        let grace_running = matches!(
            self.state,
            State::Decided {
                stage: Stage::Grace { .. },
                ..
            }
        );
        match self.committed_at() {
            Some(committed) if grace_running => Some(
                committed
                    .checked_add_signed(self.options.grace.max(self.first_gate_check()))
                    .map_or(at, |end| end.min(at)),
            ),
            _ => Some(at),
        }
    }

    /// The incident a follow-up rotation must run once this one has finished: the one
    /// that took it over and that it did not handle itself.
    pub fn follow_up(&self) -> Option<Mode> {
        self.escalation
            .as_ref()
            .filter(|e| !e.handled_here)
            .map(|e| e.mode)
    }

    /// The incident that took this rotation over, if one did.
    #[cfg(test)]
    pub fn escalation(&self) -> Option<&Escalation> {
        self.escalation.as_ref()
    }
}
