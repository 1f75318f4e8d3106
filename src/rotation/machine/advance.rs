//! The forward path: what each result leads to, phase by phase, and the helpers that
//! issue commands. The transition table in the parent module's docs is the map.

use chrono::{DateTime, TimeDelta, Utc};

use super::outcome::*;
use super::precheck::{self, Route};
use super::types::*;
use super::view::{ConsumerStatus, Note};
use super::{Kind, Machine, State, Track, index};
use crate::key::KeyName;

impl Machine {
    /// Bookkeeping that does not depend on the phase: key and consumer facts.
    pub(super) fn record(&mut self, i: usize, at: DateTime<Utc>, result: &StepResult) -> Kind {
        let consumer = self.steps[i].consumer;
        let mut warning = None;
        let kind = match &self.steps[i].command.action {
            Action::Regenerate {
                key,
                purpose,
                before,
            } => {
                if let StepResult::Regenerated {
                    fingerprint,
                    created,
                } = result
                {
                    if let Some(last) = &mut self.last {
                        last[index(*key)] = KeyState {
                            fingerprint: *fingerprint,
                            created: *created,
                        };
                    }
                    self.regenerations.push(Regeneration {
                        key: *key,
                        purpose: *purpose,
                        at,
                        before: before.fingerprint,
                        after: *fingerprint,
                    });
                }
                Kind::Regenerate {
                    key: *key,
                    purpose: *purpose,
                }
            }
            Action::Bind { key, .. } => {
                let status = match result {
                    StepResult::BindFailed { reason } => ConsumerStatus::BindFailed {
                        key: *key,
                        reason: reason.clone(),
                    },
                    _ => ConsumerStatus::Bound { key: *key },
                };
                if let Some(t) = consumer.and_then(|c| self.consumers.get_mut(c)) {
                    t.status = status;
                }
                Kind::Other
            }
            Action::VerifyConsumer { key, .. } => {
                let status = match result {
                    StepResult::ConsumerMismatch { reason } => ConsumerStatus::Mismatch {
                        key: *key,
                        reason: reason.clone(),
                    },
                    _ => ConsumerStatus::Verified { key: *key },
                };
                if let Some(t) = consumer.and_then(|c| self.consumers.get_mut(c)) {
                    t.status = status;
                }
                Kind::Other
            }
            Action::DisableVersions { consumer: c, .. } => {
                match result {
                    StepResult::VersionsDisabled { versions } => {
                        if let Some(t) = consumer.and_then(|c| self.consumers.get_mut(c)) {
                            t.disabled.extend(versions.iter().cloned());
                        }
                    }
                    StepResult::DisableFailed { reason } => {
                        warning = Some(format!("could not disable versions of {c}: {reason}"));
                    }
                    _ => {}
                }
                Kind::Other
            }
            Action::WaitUntil { .. } => Kind::Wait,
            _ => Kind::Other,
        };
        if let Some(text) = warning {
            self.warn(at, text);
        }
        kind
    }

    pub(super) fn attempts(&self) -> u32 {
        self.options.retire_attempts.max(1)
    }

    pub(super) fn route(&self) -> Option<Route> {
        self.decision.as_ref().map(|d| d.route)
    }

    pub(super) fn revoke_first(&self) -> bool {
        self.route().is_some_and(Route::revoke_first)
    }

    /// With `revoke_first`, whether the leaked key's revoke succeeded: from then on
    /// nothing rolls back and consumers move to that key's fresh value.
    pub(super) fn revoked(&self) -> bool {
        let (active, _) = self.keys();
        self.revoke_first()
            && self
                .regenerations
                .iter()
                .any(|r| r.key == active && r.purpose == Purpose::Revoke)
    }

    /// The key consumers move to: the standby, or with `revoke_first` the active key
    /// (its fresh value, once revoked). With `LeakedStandby` no consumer moves; they
    /// stay on the active key.
    pub(super) fn moves_to(&self) -> KeyName {
        let (active, standby) = self.keys();
        match self.route() {
            Some(Route::LeakedStandby) => active,
            Some(route) if route.revoke_first() => active,
            _ => standby,
        }
    }

    pub(super) fn keys(&self) -> (KeyName, KeyName) {
        self.decision
            .as_ref()
            .map_or((KeyName::Key1, KeyName::Key2), |d| (d.active, d.standby))
    }

    pub(super) fn last_state(&self, key: KeyName) -> Option<KeyState> {
        self.last.map(|l| l[index(key)])
    }

    pub(super) fn cause(&self, i: usize, result: &StepResult) -> Cause {
        Cause::Failed {
            seq: self.steps[i].command.seq,
            action: self.steps[i].command.action.clone(),
            reason: result.failure().unwrap_or_default().to_owned(),
        }
    }

    /// The phase-dependent reaction to command `i`'s result.
    pub(super) fn advance(
        &mut self,
        state: State,
        i: usize,
        kind: Kind,
        at: DateTime<Utc>,
        result: &StepResult,
        out: &mut Vec<Command>,
    ) -> State {
        use StepResult as R;
        let (active, standby) = self.keys();
        match (state, result) {
            (State::Prechecking, R::Observed(obs)) => self.precheck(at, obs, out),

            (State::Staging, R::Regenerated { fingerprint, .. }) => {
                self.target = Some(*fingerprint);
                self.verify_key(at, standby, *fingerprint, 0, out)
            }
            (State::Staging, R::RegenerateFailed { .. }) => {
                let cause = self.cause(i, result);
                self.roll_back(cause, at, out)
            }
            (State::VerifyingKey { failures }, _) if self.revoked() => {
                self.fresh_key_answer(failures, kind, result, at, out)
            }
            (State::VerifyingKey { .. }, R::KeyRejected { .. }) => {
                let cause = self.cause(i, result);
                self.roll_back(cause, at, out)
            }
            (State::VerifyingKey { .. }, R::KeyVerified) => {
                if self.revoke_first() {
                    self.regenerate(at, active, Purpose::Revoke, out);
                    State::Revoking { failures: 0 }
                } else {
                    self.bind_forward(at, out)
                }
            }

            (State::Revoking { failures }, _) => match (kind, result) {
                (_, R::Regenerated { .. }) if self.route() == Some(Route::LeakedStandby) => {
                    self.cleanup(at, out)
                }
                // The leaked value is dead; consumers go to the key's fresh value once
                // the data plane accepts it.
                (_, R::Regenerated { fingerprint, .. }) => {
                    self.target = Some(*fingerprint);
                    self.verify_key(at, active, *fingerprint, 0, out)
                }
                (Kind::Regenerate { key, purpose }, R::RegenerateFailed { error }) => self
                    .regeneration_failed(failures + 1, key, purpose, error, at, out)
                    .unwrap_or(State::Revoking {
                        failures: failures + 1,
                    }),
                (Kind::Wait, _) => {
                    let key = if self.route() == Some(Route::LeakedStandby) {
                        standby
                    } else {
                        active
                    };
                    self.regenerate(at, key, Purpose::Revoke, out);
                    State::Revoking { failures }
                }
                _ => State::Revoking { failures },
            },

            (State::Binding { failures }, _) => match kind {
                Kind::Wait => {
                    self.rebind_failed(at, out);
                    State::Binding { failures }
                }
                _ if result.failure().is_some() && !self.revoke_first() => {
                    let cause = self.cause(i, result);
                    self.roll_back(cause, at, out)
                }
                _ if self.in_flight > 0 => State::Binding { failures },
                _ => self.binds_done(failures, at, out),
            },

            (State::VerifyingConsumers { failures }, _) => {
                if result.failure().is_some() && !self.revoke_first() {
                    let cause = self.cause(i, result);
                    self.roll_back(cause, at, out)
                } else if self.in_flight > 0 {
                    State::VerifyingConsumers { failures }
                } else if self.all_verified_on(self.moves_to()) {
                    self.issue(Some(at), Action::Commit, None, out);
                    State::Committing
                } else {
                    self.forward_retry(failures + 1, at, out)
                }
            }

            (State::Committing, R::Committed) => {
                self.committed_at = Some(at);
                match self.route() {
                    Some(route) if route.revoke_first() => self.cleanup(at, out),
                    Some(Route::Scheduled) if self.options.grace > TimeDelta::zero() => {
                        let until = at
                            .checked_add_signed(self.options.grace)
                            .unwrap_or(DateTime::<Utc>::MAX_UTC);
                        self.issue(Some(at), Action::WaitUntil { at: until }, None, out);
                        State::Grace
                    }
                    _ => {
                        self.regenerate(at, active, Purpose::Retire, out);
                        State::Retiring { failures: 0 }
                    }
                }
            }
            (State::Grace, R::Waited) => {
                self.regenerate(at, active, Purpose::Retire, out);
                State::Retiring { failures: 0 }
            }

            (State::Retiring { failures }, _) => match (kind, result) {
                (_, R::Regenerated { .. }) if self.mode.is_incident() => self.cleanup(at, out),
                (_, R::Regenerated { .. }) => self.complete(at, out),
                (Kind::Regenerate { key, purpose }, R::RegenerateFailed { error }) => self
                    .regeneration_failed(failures + 1, key, purpose, error, at, out)
                    .unwrap_or(State::Retiring {
                        failures: failures + 1,
                    }),
                (Kind::Wait, _) => {
                    self.regenerate(at, active, Purpose::Retire, out);
                    State::Retiring { failures }
                }
                _ => State::Retiring { failures },
            },

            (State::Cleanup, _) if self.in_flight == 0 => self.complete(at, out),

            (State::RollingBack { cause, step }, _) => {
                self.rollback_answer(cause, step, kind, result, at, out)
            }

            // A result this phase has no further use for; `record` kept its facts.
            (state, _) => state,
        }
    }

    pub(super) fn precheck(
        &mut self,
        at: DateTime<Utc>,
        obs: &Observation,
        out: &mut Vec<Command>,
    ) -> State {
        self.consumers = obs
            .consumers
            .iter()
            .map(|c| Track {
                consumer: c.consumer.clone(),
                initially: c.holding.clone(),
                status: ConsumerStatus::Untouched,
                bound_forward: false,
                disabled: Vec::new(),
            })
            .collect();
        self.last = Some([obs.key1, obs.key2]);
        let decision = match precheck::precheck(self.mode, obs) {
            Ok(decision) => decision,
            Err(reasons) => return self.finish(at, Outcome::Refused { reasons }, out),
        };
        for text in &decision.warnings {
            self.warn(at, text.clone());
        }
        self.note(
            at,
            Note::Decided {
                route: decision.route,
                active: decision.active,
                standby: decision.standby,
            },
        );
        let (route, standby) = (decision.route, decision.standby);
        self.decision = Some(decision);
        match route {
            _ if route.stages() => {
                self.regenerate(at, standby, Purpose::Stage, out);
                State::Staging
            }
            Route::LeakedStandby => {
                self.regenerate(at, standby, Purpose::Revoke, out);
                State::Revoking { failures: 0 }
            }
            // Consumers move to the standby as it is, except with `revoke_first`: then
            // it is only checked, so the one working key is never killed while the
            // other does not work, and the target is known after the revoke.
            _ => {
                let fingerprint = obs.key(standby).fingerprint;
                if !route.revoke_first() {
                    self.target = Some(fingerprint);
                }
                self.verify_key(at, standby, fingerprint, 0, out)
            }
        }
    }
}
