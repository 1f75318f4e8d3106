//! After a restart: compare Azure with what the journal says, and decide whether the
//! rotation can go on, must roll back, or must park for a human.

use chrono::{DateTime, Utc};

use super::outcome::*;
use super::precheck::Route;
use super::types::*;
use super::view::Note;
use super::{Decided, DriftResponse, Machine, Round, Stage, State, Then, index};
use crate::key::KeyName;

impl Machine {
    pub(super) fn regenerate_in_flight(&self, key: KeyName) -> bool {
        self.steps.iter().any(|s| {
            s.answer.is_none()
                && matches!(s.command.action, Action::Regenerate { key: k, .. } if k == key)
        })
    }

    /// Whether a `Regenerate(revoke)` was issued, whatever became of it.
    pub(super) fn revoke_issued(&self) -> bool {
        self.steps.iter().any(|s| {
            matches!(
                s.command.action,
                Action::Regenerate {
                    purpose: Purpose::Revoke,
                    ..
                }
            )
        })
    }

    pub(super) fn killed_by_us(&self, key: KeyName) -> bool {
        self.regenerations.iter().any(|r| {
            r.key == key
                && matches!(
                    r.purpose,
                    Purpose::Retire | Purpose::Revoke | Purpose::Discard
                )
        })
    }

    /// The keys `obs` found changed from `expected` (a regeneration of keyflip's own in
    /// flight excepted), noted in the journal as a re-observation.
    pub(super) fn note_drifts(
        &mut self,
        at: DateTime<Utc>,
        expected: impl Fn(KeyName) -> crate::secret::Fingerprint,
        obs: &Observation,
    ) -> Vec<Drift> {
        let mut drifts = Vec::new();
        for key in KeyName::BOTH {
            let (expected, found) = (expected(key), obs.key(key).fingerprint);
            if found != expected && !self.regenerate_in_flight(key) {
                drifts.push(Drift {
                    key,
                    expected,
                    found,
                });
            }
        }
        self.note(
            at,
            Note::Reobserved {
                drifts: drifts.clone(),
            },
        );
        drifts
    }

    pub(super) fn reobserved(
        &mut self,
        state: State,
        at: DateTime<Utc>,
        obs: &Observation,
        out: &mut Vec<Command>,
    ) -> State {
        let state = match state {
            State::Revoking(early) => return self.early_reobserved(*early, at, obs, out),
            other => other,
        };
        let State::Decided { mut decided, stage } = state else {
            // Observe is still outstanding: there is nothing recorded to compare with.
            self.note(at, Note::Reobserved { drifts: vec![] });
            return state;
        };
        let drifts = self.note_drifts(at, |key| decided.last(key).fingerprint, obs);
        if drifts.is_empty() {
            return State::Decided { decided, stage };
        }
        let mut park = Vec::new();
        let mut roll_back = false;
        for d in &drifts {
            match self.drift_response(&decided, &stage, d.key) {
                DriftResponse::Park(why) => park.push(why),
                DriftResponse::RollBack => roll_back = true,
                DriftResponse::Continue => {}
            }
        }
        if !park.is_empty() {
            let reason = Attention::Drift {
                drifts,
                detail: park.join("; "),
            };
            let stage = self.park(at, reason, out);
            return State::Decided { decided, stage };
        }
        // Carry on from what Azure holds now, so a later regeneration's `before` is right.
        for d in &drifts {
            decided.last[index(d.key)] = *obs.key(d.key);
        }
        let stage = if roll_back {
            self.roll_back(&decided, Cause::Drift { drifts }, stage.moved_to(), at, out)
        } else {
            stage
        };
        State::Decided { decided, stage }
    }

    pub(super) fn drift_response(&self, d: &Decided, stage: &Stage, key: KeyName) -> DriftResponse {
        // The usage gate's hold, and an incident's report before its retire, come
        // after the commit too.
        let committed = matches!(
            stage,
            Stage::Committing { .. }
                | Stage::Grace { .. }
                | Stage::Gating { .. }
                | Stage::Reporting {
                    then: Then::Retire(_)
                }
                | Stage::Retiring { .. }
                | Stage::Cleanup
        );
        if d.route == Route::Adopt {
            // Consumers move to the key adopted; the other one nobody is moved to, and
            // those still on it are about to leave it.
            return if key == d.standby {
                DriftResponse::Park(format!(
                    "consumers are being moved to {key}, which changed outside keyflip, so they may be broken"
                ))
            } else {
                DriftResponse::Continue
            };
        }
        if d.route == Route::LeakedStandby {
            return if key == d.standby {
                DriftResponse::Continue
            } else {
                DriftResponse::Park(format!(
                    "consumers hold {key}, which changed outside keyflip, so they may be broken"
                ))
            };
        }
        if d.route.revoke_first() && self.revoke_issued() {
            // From the revoke on nothing rolls back, and consumers stay on the active
            // key: its leaked value, then its fresh one. The standby was only the
            // working key checked before the revoke; consumers never move to it.
            return if key == d.standby {
                DriftResponse::Continue
            } else if self.killed_by_us(key) {
                DriftResponse::Park(format!(
                    "consumers are being moved to the value {key} got when keyflip revoked the leaked one, and {key} changed again outside keyflip, so nothing can roll back and they may be broken"
                ))
            } else {
                DriftResponse::Park(format!(
                    "consumers hold the leaked {key}, which changed outside keyflip while keyflip was revoking it; find out who regenerated it, then bind the consumers to it by hand"
                ))
            };
        }
        if key == d.active {
            if self.killed_by_us(key) {
                DriftResponse::Continue
            } else if committed {
                DriftResponse::Park(format!(
                    "{key} was to be retired by this rotation but someone else regenerated it; find out who before retiring anything"
                ))
            } else {
                DriftResponse::Park(format!(
                    "consumers hold {key}, which changed outside keyflip before commit, so nothing can roll back to it"
                ))
            }
        } else if committed {
            DriftResponse::Park(format!(
                "consumers were moved to {key}, which changed outside keyflip after commit, so they may be broken"
            ))
        } else if matches!(
            stage,
            Stage::Binding {
                round: Round::Resync,
                ..
            } | Stage::VerifyingConsumers {
                round: Round::Resync,
                ..
            }
        ) {
            DriftResponse::Park(format!(
                "consumers were moved to {key} and an ML workspace resync was issued, which cannot be steered back, so nothing rolls back; {key} changed outside keyflip, so they may be broken"
            ))
        } else if matches!(stage, Stage::RollingBack { .. }) {
            DriftResponse::Continue
        } else {
            DriftResponse::RollBack
        }
    }
}
