//! Turning back before commit: drain what is in flight, bind every consumer that may
//! have moved back to the old key, verify it there (disabling Key Vault versions of
//! the new value), and only then discard the standby value that may have leaked. A
//! staged value is discarded even when no consumer had moved yet (a key that failed
//! verification).

use chrono::{DateTime, Utc};

use super::failure::Failure;
use super::outcome::*;
use super::types::*;
use super::view::{ConsumerStatus, Note};
use super::{Decided, Kind, Machine, Rollback, Stage};
use crate::key::KeyName;
use crate::secret::Fingerprint;

impl Machine {
    /// Starts the rollback. `moved_to` is the value consumers were being bound to, once
    /// a forward `Bind` may have been issued.
    pub(super) fn roll_back(
        &mut self,
        d: &Decided,
        cause: Cause,
        moved_to: Option<Fingerprint>,
        at: DateTime<Utc>,
        out: &mut Vec<Command>,
    ) -> Stage {
        self.note(
            at,
            Note::RollbackStarted {
                cause: cause.clone(),
            },
        );
        self.rollback_continue(d, cause, Rollback::Draining { moved_to }, at, out)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn rollback_answer(
        &mut self,
        d: &Decided,
        cause: Cause,
        step: Rollback,
        kind: Kind,
        result: &StepResult,
        at: DateTime<Utc>,
        out: &mut Vec<Command>,
    ) -> Stage {
        match (step, kind, result) {
            (Rollback::Discarding { .. }, _, StepResult::Regenerated { .. }) => {
                self.rolled_back(d, cause, Some(d.standby), at, out)
            }
            (
                Rollback::Discarding { failures },
                Kind::Regenerate { key, purpose },
                StepResult::RegenerateFailed { error },
            ) => self
                .regeneration_failed(failures + 1, key, purpose, error, at, out)
                .unwrap_or(Stage::RollingBack {
                    cause,
                    step: Rollback::Discarding {
                        failures: failures + 1,
                    },
                }),
            (Rollback::Discarding { failures }, Kind::Wait, StepResult::Waited) => {
                self.regenerate(d, at, d.standby, Purpose::Discard, out);
                Stage::RollingBack {
                    cause,
                    step: Rollback::Discarding { failures },
                }
            }
            (Rollback::Discarding { .. }, _, _) => self.impossible(
                at,
                format!("`{}` answered while discarding the standby", result.name()),
                out,
            ),
            _ => self.rollback_continue(d, cause, step, at, out),
        }
    }

    /// Moves the rollback on once nothing is in flight.
    pub(super) fn rollback_continue(
        &mut self,
        d: &Decided,
        cause: Cause,
        step: Rollback,
        at: DateTime<Utc>,
        out: &mut Vec<Command>,
    ) -> Stage {
        if self.in_flight > 0 {
            return Stage::RollingBack { cause, step };
        }
        let (active, standby) = (d.active, d.standby);
        let old = d.last(active).fingerprint;
        let back: Vec<usize> = (0..self.consumers.len())
            .filter(|&c| self.consumers[c].bound_forward)
            .collect();
        match step {
            Rollback::Draining { moved_to } => {
                if back.is_empty() {
                    // No consumer moved, but a staged value exists (it failed to verify,
                    // or Azure drifted): it dies too, as after any failure before commit.
                    if self.staged(standby) {
                        self.regenerate(d, at, standby, Purpose::Discard, out);
                        return Stage::RollingBack {
                            cause,
                            step: Rollback::Discarding { failures: 0 },
                        };
                    }
                    return self.rolled_back(d, cause, None, at, out);
                }
                let Some(moved_to) = moved_to else {
                    return self.impossible(
                        at,
                        "consumers were bound forward but the rollback does not know to which value"
                            .to_owned(),
                        out,
                    );
                };
                for c in back {
                    self.bind(at, c, active, old, out);
                }
                Stage::RollingBack {
                    cause,
                    step: Rollback::BindingBack { moved_to },
                }
            }
            Rollback::BindingBack { moved_to } => {
                match self.not_back(&back, active) {
                    Ok(not_back) if not_back.is_empty() => {}
                    Ok(not_back) => return self.rollback_incomplete(d, cause, not_back, at, out),
                    Err(what) => return self.impossible(at, what, out),
                }
                for c in back {
                    self.verify_consumer(at, c, active, old, out);
                    if self.consumers[c].consumer.capabilities.keeps_old_versions {
                        let consumer = self.consumers[c].consumer.clone();
                        self.issue(
                            Some(at),
                            Action::DisableVersions {
                                consumer,
                                fingerprints: vec![moved_to],
                            },
                            Some(c),
                            out,
                        );
                    }
                }
                Stage::RollingBack {
                    cause,
                    step: Rollback::VerifyingBack,
                }
            }
            Rollback::VerifyingBack => {
                match self.not_back(&back, active) {
                    Ok(not_back) if not_back.is_empty() => {}
                    Ok(not_back) => return self.rollback_incomplete(d, cause, not_back, at, out),
                    Err(what) => return self.impossible(at, what, out),
                }
                self.regenerate(d, at, standby, Purpose::Discard, out);
                Stage::RollingBack {
                    cause,
                    step: Rollback::Discarding { failures: 0 },
                }
            }
            // Discarding moves on only through `rollback_answer`.
            Rollback::Discarding { .. } => self.impossible(
                at,
                "the discard of the standby is not in flight while discarding".to_owned(),
                out,
            ),
        }
    }

    /// Whether this rotation regenerated `key` to stage it.
    pub(super) fn staged(&self, key: KeyName) -> bool {
        self.regenerations
            .iter()
            .any(|r| r.key == key && r.purpose == Purpose::Stage)
    }

    /// Consumers of `back` whose last bind or verification toward `key` failed; an
    /// error names one whose state no answer can explain.
    pub(super) fn not_back(
        &self,
        back: &[usize],
        key: KeyName,
    ) -> Result<Vec<(ConsumerId, Failure)>, String> {
        let mut not_back = Vec::new();
        for &c in back {
            let t = &self.consumers[c];
            match &t.status {
                ConsumerStatus::Bound { key: k } | ConsumerStatus::Verified { key: k }
                    if *k == key => {}
                ConsumerStatus::BindFailed { reason, .. }
                | ConsumerStatus::Mismatch { reason, .. } => {
                    not_back.push((t.consumer.id.clone(), reason.clone()));
                }
                other => {
                    return Err(format!(
                        "{} is {other:?} after every command of the rollback answered",
                        t.consumer
                    ));
                }
            }
        }
        Ok(not_back)
    }

    pub(super) fn rollback_incomplete(
        &mut self,
        d: &Decided,
        cause: Cause,
        not_back: Vec<(ConsumerId, Failure)>,
        at: DateTime<Utc>,
        out: &mut Vec<Command>,
    ) -> Stage {
        let reason = Attention::RollbackIncomplete {
            cause,
            key: d.active,
            not_back,
        };
        self.park(at, reason, out)
    }

    pub(super) fn rolled_back(
        &mut self,
        d: &Decided,
        cause: Cause,
        discarded: Option<KeyName>,
        at: DateTime<Utc>,
        out: &mut Vec<Command>,
    ) -> Stage {
        if self.mode.is_incident() {
            let reason = Attention::LeakedKeyInUse {
                key: d.active,
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
