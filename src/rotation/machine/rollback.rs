//! Turning back before commit: drain what is in flight, bind every consumer that may
//! have moved back to the old key, verify it there (disabling Key Vault versions of
//! the new value), and only then discard the standby value that may have leaked. A
//! staged value is discarded even when no consumer had moved yet (a key that failed
//! verification).

use chrono::{DateTime, Utc};

use super::outcome::*;
use super::types::*;
use super::view::{ConsumerStatus, Note};
use super::{Kind, Machine, Rollback, State};
use crate::key::KeyName;

impl Machine {
    pub(super) fn roll_back(
        &mut self,
        cause: Cause,
        at: DateTime<Utc>,
        out: &mut Vec<Command>,
    ) -> State {
        self.note(
            at,
            Note::RollbackStarted {
                cause: cause.clone(),
            },
        );
        self.rollback_continue(cause, Rollback::Draining, at, out)
    }

    pub(super) fn rollback_answer(
        &mut self,
        cause: Cause,
        step: Rollback,
        kind: Kind,
        result: &StepResult,
        at: DateTime<Utc>,
        out: &mut Vec<Command>,
    ) -> State {
        let (_, standby) = self.keys();
        match (step, kind, result) {
            (Rollback::Discarding { .. }, _, StepResult::Regenerated { .. }) => {
                self.rolled_back(cause, Some(standby), at, out)
            }
            (
                Rollback::Discarding { failures },
                Kind::Regenerate { key, purpose },
                StepResult::RegenerateFailed { error },
            ) => self
                .regeneration_failed(failures + 1, key, purpose, error, at, out)
                .unwrap_or(State::RollingBack {
                    cause,
                    step: Rollback::Discarding {
                        failures: failures + 1,
                    },
                }),
            (Rollback::Discarding { failures }, Kind::Wait, _) => {
                self.regenerate(at, standby, Purpose::Discard, out);
                State::RollingBack {
                    cause,
                    step: Rollback::Discarding { failures },
                }
            }
            _ => self.rollback_continue(cause, step, at, out),
        }
    }

    /// Moves the rollback on once nothing is in flight.
    pub(super) fn rollback_continue(
        &mut self,
        cause: Cause,
        step: Rollback,
        at: DateTime<Utc>,
        out: &mut Vec<Command>,
    ) -> State {
        if self.in_flight > 0 {
            return State::RollingBack { cause, step };
        }
        let (active, standby) = self.keys();
        let Some(old) = self.last_state(active).map(|k| k.fingerprint) else {
            return self.rolled_back(cause, None, at, out);
        };
        let back: Vec<usize> = (0..self.consumers.len())
            .filter(|&c| self.consumers[c].bound_forward)
            .collect();
        match step {
            Rollback::Draining => {
                if back.is_empty() {
                    // No consumer moved, but a staged value exists (it failed to verify,
                    // or Azure drifted): it dies too, as after any failure before commit.
                    if self.staged(standby) {
                        self.regenerate(at, standby, Purpose::Discard, out);
                        return State::RollingBack {
                            cause,
                            step: Rollback::Discarding { failures: 0 },
                        };
                    }
                    return self.rolled_back(cause, None, at, out);
                }
                for c in back {
                    self.bind(at, c, active, old, out);
                }
                State::RollingBack {
                    cause,
                    step: Rollback::BindingBack,
                }
            }
            Rollback::BindingBack => {
                let not_back = self.not_back(&back, active);
                if !not_back.is_empty() {
                    return self.rollback_incomplete(cause, not_back, at, out);
                }
                let new = self.target;
                for c in back {
                    self.verify_consumer(at, c, active, old, out);
                    if let Some(new) = new
                        && self.consumers[c].consumer.capabilities.keeps_old_versions
                    {
                        let consumer = self.consumers[c].consumer.clone();
                        self.issue(
                            Some(at),
                            Action::DisableVersions {
                                consumer,
                                fingerprints: vec![new],
                            },
                            Some(c),
                            out,
                        );
                    }
                }
                State::RollingBack {
                    cause,
                    step: Rollback::VerifyingBack,
                }
            }
            Rollback::VerifyingBack => {
                let not_back = self.not_back(&back, active);
                if !not_back.is_empty() {
                    return self.rollback_incomplete(cause, not_back, at, out);
                }
                self.regenerate(at, standby, Purpose::Discard, out);
                State::RollingBack {
                    cause,
                    step: Rollback::Discarding { failures: 0 },
                }
            }
            // Discarding moves on only through `rollback_answer`.
            Rollback::Discarding { .. } => State::RollingBack { cause, step },
        }
    }

    /// Whether this rotation regenerated `key` to stage it.
    pub(super) fn staged(&self, key: KeyName) -> bool {
        self.regenerations
            .iter()
            .any(|r| r.key == key && r.purpose == Purpose::Stage)
    }

    /// Consumers of `back` whose last bind or verification toward `key` failed.
    pub(super) fn not_back(&self, back: &[usize], key: KeyName) -> Vec<(ConsumerId, String)> {
        back.iter()
            .filter_map(|&c| {
                let t = &self.consumers[c];
                match &t.status {
                    ConsumerStatus::Bound { key: k } | ConsumerStatus::Verified { key: k }
                        if *k == key =>
                    {
                        None
                    }
                    ConsumerStatus::BindFailed { reason, .. }
                    | ConsumerStatus::Mismatch { reason, .. } => {
                        Some((t.consumer.id.clone(), reason.clone()))
                    }
                    other => Some((t.consumer.id.clone(), format!("{other:?}"))),
                }
            })
            .collect()
    }

    pub(super) fn rollback_incomplete(
        &mut self,
        cause: Cause,
        not_back: Vec<(ConsumerId, String)>,
        at: DateTime<Utc>,
        out: &mut Vec<Command>,
    ) -> State {
        let (active, _) = self.keys();
        let reason = Attention::RollbackIncomplete {
            cause,
            key: active,
            not_back,
        };
        self.park(at, reason, out)
    }

    pub(super) fn rolled_back(
        &mut self,
        cause: Cause,
        discarded: Option<KeyName>,
        at: DateTime<Utc>,
        out: &mut Vec<Command>,
    ) -> State {
        let (active, _) = self.keys();
        if self.mode.is_incident() {
            let reason = Attention::LeakedKeyInUse {
                key: active,
                cause,
                discarded,
            };
            return self.park(at, reason, out);
        }
        let outcome = Outcome::RolledBack {
            cause,
            discarded,
            warnings: self.warnings.clone(),
        };
        self.finish(at, outcome, out)
    }
}
