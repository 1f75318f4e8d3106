//! The forward path: what each result leads to, stage by stage. The transition table
//! in the parent module's docs is the map. A result no stage expects, or a stage that
//! cannot act on what it holds, parks the rotation as an internal error: the machine
//! never picks a default it cannot justify.

use chrono::{DateTime, TimeDelta, Utc};

use super::failure::{Failure, Warning, WarningKind};
use super::outcome::*;
use super::precheck::{self, Route};
use super::proof::{AllVerified, Committed};
use super::types::*;
use super::view::{ConsumerStatus, Note};
use super::{Decided, KeyCheck, Kind, Machine, Round, Stage, State, Then, Track, index};

impl Machine {
    /// Bookkeeping that does not depend on the stage: key and consumer facts.
    pub(super) fn record(
        &mut self,
        d: &mut Decided,
        i: usize,
        at: DateTime<Utc>,
        result: &StepResult,
    ) -> Kind {
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
                    d.last[index(*key)] = KeyState {
                        fingerprint: *fingerprint,
                        created: *created,
                    };
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
                        warning = Some(Warning::new(
                            WarningKind::VersionsNotDisabled,
                            format!("could not disable versions of {c}: {reason}"),
                        ));
                    }
                    _ => {}
                }
                Kind::Other
            }
            Action::WaitUntil { .. } => Kind::Wait,
            _ => Kind::Other,
        };
        if let Some(warning) = warning {
            self.warn(at, warning);
        }
        kind
    }

    pub(super) fn attempts(&self) -> u32 {
        self.options.retire_attempts.max(1)
    }

    pub(super) fn cause(&self, i: usize, reason: &Failure) -> Cause {
        Cause::Failed {
            seq: self.steps[i].command.seq,
            action: self.steps[i].command.action.clone(),
            reason: reason.clone(),
        }
    }

    /// The stage-dependent reaction to command `i`'s result.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn advance(
        &mut self,
        d: &Decided,
        stage: Stage,
        i: usize,
        kind: Kind,
        at: DateTime<Utc>,
        result: &StepResult,
        out: &mut Vec<Command>,
    ) -> Stage {
        use StepResult as R;
        let revoke_first = d.route.revoke_first();
        match (stage, kind, result) {
            (Stage::Staging, _, R::Regenerated { fingerprint, .. }) => {
                self.verify_key(d, at, KeyCheck::Target, *fingerprint, 0, out)
            }
            (Stage::Staging, _, R::RegenerateFailed { error }) => {
                let cause = self.cause(i, error);
                self.roll_back(d, cause, None, at, out)
            }

            (
                Stage::VerifyingKey {
                    check: KeyCheck::Fresh,
                    value,
                    failures,
                },
                kind,
                _,
            ) => self.fresh_key_answer(d, value, failures, kind, result, at, out),
            (Stage::VerifyingKey { .. }, _, R::KeyRejected { reason }) => {
                let cause = self.cause(i, reason);
                self.roll_back(d, cause, None, at, out)
            }
            (
                Stage::VerifyingKey {
                    check: KeyCheck::BeforeRevoke,
                    ..
                },
                _,
                R::KeyVerified,
            ) => self.report_then(d, d.active, Then::Revoke(d.active), at, out),

            (Stage::CheckingStandby, _, result) => self.standby_answer(d, result, at, out),
            (
                Stage::Gating {
                    committed,
                    since,
                    deadline,
                },
                kind,
                result,
            ) => self.gate_answer(d, committed, since, deadline, kind, result, at, out),
            (Stage::Reporting { then }, _, result) => self.report_answer(d, then, result, at, out),
            (
                Stage::VerifyingKey {
                    check: KeyCheck::Target,
                    value,
                    ..
                },
                _,
                R::KeyVerified,
            ) => self.bind_round(d, value, Round::Steerable, at, out),

            (Stage::Revoking { .. }, _, R::Regenerated { fingerprint, .. }) => match d.route {
                Route::LeakedStandby => self.cleanup(d, at, out),
                // The leaked value is dead; consumers go to the key's fresh value once
                // the data plane accepts it.
                _ if revoke_first => self.verify_key(d, at, KeyCheck::Fresh, *fingerprint, 0, out),
                route => self.impossible(
                    at,
                    format!("a revoke answered in route {route:?}, which revokes nothing"),
                    out,
                ),
            },
            (
                Stage::Revoking { failures },
                Kind::Regenerate { key, purpose },
                R::RegenerateFailed { error },
            ) => self
                .regeneration_failed(failures + 1, key, purpose, error, at, out)
                .unwrap_or(Stage::Revoking {
                    failures: failures + 1,
                }),
            (Stage::Revoking { failures }, Kind::Wait, R::Waited) => {
                let key = if d.route == Route::LeakedStandby {
                    d.standby
                } else {
                    d.active
                };
                self.regenerate(d, at, key, Purpose::Revoke, out);
                Stage::Revoking { failures }
            }

            (
                Stage::Binding {
                    target,
                    round,
                    failures,
                },
                Kind::Wait,
                R::Waited,
            ) => {
                self.rebind_failed(d, target, at, out);
                Stage::Binding {
                    target,
                    round,
                    failures,
                }
            }
            (Stage::Binding { target, round, .. }, _, R::BindFailed { reason })
                if !d.forward_only(round) =>
            {
                let cause = self.cause(i, reason);
                self.roll_back(d, cause, Some(target), at, out)
            }
            (
                Stage::Binding {
                    target,
                    round,
                    failures,
                },
                _,
                R::Bound | R::BindFailed { .. },
            ) => {
                if self.in_flight > 0 {
                    Stage::Binding {
                        target,
                        round,
                        failures,
                    }
                } else {
                    self.binds_done(d, target, round, failures, at, out)
                }
            }

            (
                Stage::VerifyingConsumers { target, round, .. },
                _,
                R::ConsumerMismatch { reason },
            ) if !d.forward_only(round) => {
                let cause = self.cause(i, reason);
                self.roll_back(d, cause, Some(target), at, out)
            }
            (
                Stage::VerifyingConsumers {
                    target,
                    round,
                    failures,
                },
                _,
                R::ConsumerVerified | R::ConsumerMismatch { .. },
            ) => {
                if self.in_flight > 0 {
                    Stage::VerifyingConsumers {
                        target,
                        round,
                        failures,
                    }
                } else {
                    self.verifications_done(d, target, round, failures, at, out)
                }
            }

            (Stage::Committing { verified }, _, R::Committed) => {
                let committed = Committed::new(verified);
                match d.route {
                    Route::LeakedActive {
                        revoke_first: true, ..
                    } => self.cleanup(d, at, out),
                    Route::Scheduled => {
                        let grace = self.options.grace.max(TimeDelta::zero());
                        self.after_commit(d, committed, at, grace, out)
                    }
                    // A resumed retire: the grace passed in the parked swap.
                    Route::Retire => self.retire_or_gate(d, committed, at, out),
                    Route::LeakedBoth
                    | Route::LeakedActive {
                        revoke_first: false,
                        ..
                    } => self.report_then(d, d.active, Then::Retire(committed), at, out),
                    // Nothing to retire: the key adopted is the one that works.
                    Route::Adopt => self.complete(d, at, out),
                    Route::LeakedStandby => self.impossible(
                        at,
                        "the leaked-standby route committed a swap it never makes".to_owned(),
                        out,
                    ),
                }
            }
            (Stage::Grace { committed }, _, R::Waited) => {
                self.retire_or_gate(d, committed, at, out)
            }

            (Stage::Retiring { .. }, _, R::Regenerated { .. }) if self.mode.is_incident() => {
                self.cleanup(d, at, out)
            }
            (Stage::Retiring { .. }, _, R::Regenerated { .. }) => self.complete(d, at, out),
            (
                Stage::Retiring {
                    committed,
                    failures,
                },
                Kind::Regenerate { key, purpose },
                R::RegenerateFailed { error },
            ) => self
                .regeneration_failed(failures + 1, key, purpose, error, at, out)
                .unwrap_or(Stage::Retiring {
                    committed,
                    failures: failures + 1,
                }),
            (
                Stage::Retiring {
                    committed,
                    failures,
                },
                Kind::Wait,
                R::Waited,
            ) => {
                self.retire(d, at, &committed, out);
                Stage::Retiring {
                    committed,
                    failures,
                }
            }

            (Stage::Cleanup, _, R::VersionsDisabled { .. } | R::DisableFailed { .. }) => {
                if self.in_flight > 0 {
                    Stage::Cleanup
                } else {
                    self.complete(d, at, out)
                }
            }

            (Stage::RollingBack { cause, step }, kind, _) => {
                self.rollback_answer(d, cause, step, kind, result, at, out)
            }

            // Each stage has exactly the commands it issued in flight, so anything
            // else means the machine lost track: stop rather than guess.
            (stage, _, _) => {
                let command = &self.steps[i].command;
                let what = format!(
                    "`{}` answered step {} ({}) while {}",
                    result.name(),
                    command.seq,
                    command.action,
                    stage.describe()
                );
                self.impossible(at, what, out)
            }
        }
    }

    /// The consumers the machine tracks, as `obs` found them.
    pub(super) fn track(&mut self, obs: &Observation) {
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
    }

    /// Takes a precheck's decision: its warnings and a note in the journal, and what
    /// the rest of the rotation works from (`last`: the keys as `obs` read them).
    pub(super) fn take_decision(
        &mut self,
        at: DateTime<Utc>,
        decision: precheck::Decision,
        obs: &Observation,
    ) -> Decided {
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
        Decided {
            route: decision.route,
            active: decision.active,
            standby: decision.standby,
            leaked: decision.leaked,
            last: [obs.key1, obs.key2],
            resync: self.options.resync,
        }
    }

    pub(super) fn precheck(
        &mut self,
        at: DateTime<Utc>,
        obs: &Observation,
        out: &mut Vec<Command>,
    ) -> State {
        self.track(obs);
        let decision = match precheck::precheck(self.mode, obs, self.options.refuse_unlisted) {
            Ok(decision) => decision,
            Err(reasons) => {
                self.finish(at, Outcome::Refused { reasons }, out);
                return State::Ended;
            }
        };
        let d = self.take_decision(at, decision, obs);
        let existing = d.last(d.standby).fingerprint;
        let stage = match d.route {
            Route::Scheduled if self.options.usage_gate.is_some() => {
                self.check_standby(&d, at, out)
            }
            Route::Scheduled
            | Route::LeakedBoth
            | Route::LeakedActive {
                revoke_first: false,
                stage_standby: true,
            } => {
                self.regenerate(&d, at, d.standby, Purpose::Stage, out);
                Stage::Staging
            }
            Route::LeakedStandby => {
                self.report_then(&d, d.standby, Then::Revoke(d.standby), at, out)
            }
            // Consumers were moved in the parked swap; its observation here shows them
            // all on the key they were moved to, which is the proof the commit needs.
            Route::Retire => {
                match AllVerified::observed(&self.steps, &self.consumers, d.moves_to(), existing) {
                    Ok(verified) => {
                        self.issue(Some(at), Action::Commit, None, out);
                        Stage::Committing { verified }
                    }
                    Err(what) => {
                        self.impossible(at, format!("the retire cannot commit: {what}"), out)
                    }
                }
            }
            // The standby is only checked, so the one working key is never killed while
            // the other does not work; the target is known after the revoke.
            Route::LeakedActive {
                revoke_first: true, ..
            } => self.verify_key(&d, at, KeyCheck::BeforeRevoke, existing, 0, out),
            // Consumers move to the standby as it is (adopting: the key that works).
            Route::Adopt
            | Route::LeakedActive {
                revoke_first: false,
                stage_standby: false,
            } => self.verify_key(&d, at, KeyCheck::Target, existing, 0, out),
        };
        State::Decided {
            decided: Box::new(d),
            stage,
        }
    }
}

impl Stage {
    /// The stage in words, for an internal-error report.
    fn describe(&self) -> String {
        match self {
            Stage::Staging => "staging the standby".to_owned(),
            Stage::VerifyingKey { check, value, .. } => {
                format!("verifying {value} on the data plane ({check:?})")
            }
            Stage::Revoking { .. } => "revoking the leaked key".to_owned(),
            Stage::Binding { target, round, .. } => {
                format!("binding consumers to {target} ({round:?} round)")
            }
            Stage::VerifyingConsumers { target, round, .. } => {
                format!("verifying consumers on {target} ({round:?} round)")
            }
            Stage::Committing { .. } => "committing".to_owned(),
            Stage::Grace { .. } => "waiting out the grace period".to_owned(),
            Stage::CheckingStandby => "checking who signs with the standby".to_owned(),
            Stage::Gating { .. } => "holding the retire at the usage gate".to_owned(),
            Stage::Reporting { .. } => "asking who signs with the leaked key".to_owned(),
            Stage::Retiring { .. } => "retiring the old key".to_owned(),
            Stage::Cleanup => "disabling leaked Key Vault versions".to_owned(),
            Stage::RollingBack { step, .. } => format!("rolling back ({step:?})"),
            Stage::Finished => "finished".to_owned(),
        }
    }
}
