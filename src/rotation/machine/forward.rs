//! Issuing commands and entering the stages they start: the swap's forward steps,
//! the commit (only from an [`AllVerified`]) and the retire (only from a
//! [`Committed`]), forward-only retries with backoff (after a `revoke_first` revoke),
//! incident cleanup and the ends.

use chrono::{DateTime, Utc};

use super::failure::Failure;
use super::outcome::*;
use super::precheck::Route;
use super::proof::{AllVerified, Committed};
use super::types::*;
use super::view::ConsumerStatus;
use super::{Decided, KeyCheck, Kind, Machine, Round, Stage, Track, retry_backoff};
use crate::key::KeyName;
use crate::secret::Fingerprint;

impl Machine {
    pub(super) fn regenerate(
        &mut self,
        d: &Decided,
        at: DateTime<Utc>,
        key: KeyName,
        purpose: Purpose,
        out: &mut Vec<Command>,
    ) {
        let before = d.last(key);
        self.issue(
            Some(at),
            Action::Regenerate {
                key,
                purpose,
                before,
            },
            None,
            out,
        );
    }

    /// Regenerates the key consumers left. Needs the proof that the swap was committed,
    /// which only a check of every consumer leads to.
    pub(super) fn retire(
        &mut self,
        d: &Decided,
        at: DateTime<Utc>,
        _committed: &Committed,
        out: &mut Vec<Command>,
    ) {
        self.regenerate(d, at, d.active, Purpose::Retire, out);
    }

    /// Issues `VerifyKey` for `check`'s key with `value`; `failures` is what the stage
    /// has counted so far (only the fresh value after a revoke is retried).
    pub(super) fn verify_key(
        &mut self,
        d: &Decided,
        at: DateTime<Utc>,
        check: KeyCheck,
        value: Fingerprint,
        failures: u32,
        out: &mut Vec<Command>,
    ) -> Stage {
        let budget = self.options.verify_budget;
        self.issue(
            Some(at),
            Action::VerifyKey {
                key: check.key(d),
                fingerprint: value,
                budget,
            },
            None,
            out,
        );
        Stage::VerifyingKey {
            check,
            value,
            failures,
        }
    }

    /// With `revoke_first`, after the revoke: the fresh value of the revoked key is
    /// verified before any consumer is bound to it. Nothing can roll back, so a
    /// rejection is retried after a backoff, and parks after `retire_attempts`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn fresh_key_answer(
        &mut self,
        d: &Decided,
        value: Fingerprint,
        failures: u32,
        kind: Kind,
        result: &StepResult,
        at: DateTime<Utc>,
        out: &mut Vec<Command>,
    ) -> Stage {
        match (kind, result) {
            (_, StepResult::KeyVerified) => self.bind_round(d, value, Round::Steerable, at, out),
            (_, StepResult::KeyRejected { reason }) => {
                let failures = failures + 1;
                if failures >= self.attempts() {
                    let reason = Attention::KeyNotAccepted {
                        key: d.active,
                        fingerprint: value,
                        attempts: failures,
                        last_reason: reason.clone(),
                    };
                    return self.park(at, reason, out);
                }
                let until = at + retry_backoff(failures);
                self.issue(Some(at), Action::WaitUntil { at: until }, None, out);
                Stage::VerifyingKey {
                    check: KeyCheck::Fresh,
                    value,
                    failures,
                }
            }
            (Kind::Wait, StepResult::Waited) => {
                self.verify_key(d, at, KeyCheck::Fresh, value, failures, out)
            }
            _ => self.impossible(
                at,
                format!(
                    "`{}` answered while verifying the revoked key's fresh value",
                    result.name()
                ),
                out,
            ),
        }
    }

    pub(super) fn bind(
        &mut self,
        at: DateTime<Utc>,
        c: usize,
        key: KeyName,
        fp: Fingerprint,
        out: &mut Vec<Command>,
    ) {
        let consumer = self.consumers[c].consumer.clone();
        self.consumers[c].status = ConsumerStatus::Binding { key };
        self.issue(
            Some(at),
            Action::Bind {
                consumer,
                key,
                fingerprint: fp,
            },
            Some(c),
            out,
        );
    }

    pub(super) fn verify_consumer(
        &mut self,
        at: DateTime<Utc>,
        c: usize,
        key: KeyName,
        fp: Fingerprint,
        out: &mut Vec<Command>,
    ) {
        let consumer = self.consumers[c].consumer.clone();
        self.consumers[c].status = ConsumerStatus::Verifying { key };
        self.issue(
            Some(at),
            Action::VerifyConsumer {
                consumer,
                key,
                fingerprint: fp,
            },
            Some(c),
            out,
        );
    }

    /// Binds `round`'s consumers to `target`, a value the data plane accepted: the
    /// standby's, or with `revoke_first` the revoked key's fresh value. A round with
    /// no consumer is done at once.
    pub(super) fn bind_round(
        &mut self,
        d: &Decided,
        target: Fingerprint,
        round: Round,
        at: DateTime<Utc>,
        out: &mut Vec<Command>,
    ) -> Stage {
        let to = d.moves_to();
        for c in 0..self.consumers.len() {
            let held_back = d.held_back(&self.consumers[c].consumer);
            if held_back == (round == Round::Resync) {
                self.consumers[c].bound_forward = true;
                self.bind(at, c, to, target, out);
            }
        }
        if self.in_flight == 0 {
            return self.binds_done(d, target, round, 0, at, out);
        }
        Stage::Binding {
            target,
            round,
            failures: 0,
        }
    }

    /// After a backoff in a round that only goes forward: bind again each consumer
    /// whose bind or verification failed.
    pub(super) fn rebind_failed(
        &mut self,
        d: &Decided,
        target: Fingerprint,
        at: DateTime<Utc>,
        out: &mut Vec<Command>,
    ) {
        let to = d.moves_to();
        for c in 0..self.consumers.len() {
            if self.consumers[c].failed() {
                self.bind(at, c, to, target, out);
            }
        }
    }

    /// Every bind of the round answered: verify the ones that hold `target` now, or
    /// retry the failed ones (where the round only goes forward; otherwise a failure
    /// rolled back when it answered).
    pub(super) fn binds_done(
        &mut self,
        d: &Decided,
        target: Fingerprint,
        round: Round,
        failures: u32,
        at: DateTime<Utc>,
        out: &mut Vec<Command>,
    ) -> Stage {
        let to = d.moves_to();
        if self
            .consumers
            .iter()
            .any(|t| matches!(t.status, ConsumerStatus::BindFailed { .. }))
        {
            return self.forward_retry(d, target, round, failures + 1, at, out);
        }
        for c in 0..self.consumers.len() {
            if self.consumers[c].status == (ConsumerStatus::Bound { key: to }) {
                self.verify_consumer(at, c, to, target, out);
            }
        }
        if self.in_flight == 0 {
            return self.verifications_done(d, target, round, failures, at, out);
        }
        Stage::VerifyingConsumers {
            target,
            round,
            failures,
        }
    }

    /// Every verification of the round answered. After the first round, the
    /// consumers Azure steers (a workspace resync) are bound: only now, with every
    /// other consumer verified on `target`, because nothing can roll them back. After
    /// the last, commit, which only a check of every consumer allows. A failure is
    /// retried where the round only goes forward.
    pub(super) fn verifications_done(
        &mut self,
        d: &Decided,
        target: Fingerprint,
        round: Round,
        failures: u32,
        at: DateTime<Utc>,
        out: &mut Vec<Command>,
    ) -> Stage {
        if self.consumers.iter().any(Track::failed) {
            return self.forward_retry(d, target, round, failures + 1, at, out);
        }
        if round == Round::Steerable && self.consumers.iter().any(|t| d.held_back(&t.consumer)) {
            return self.bind_round(d, target, Round::Resync, at, out);
        }
        match AllVerified::check(&self.steps, &self.consumers, d.moves_to(), target) {
            Ok(verified) => self.commit(at, verified, out),
            Err(what) => self.impossible(at, format!("the swap cannot commit: {what}"), out),
        }
    }

    /// Issues `Commit`: the one place it is issued, and only with the proof that every
    /// consumer was verified.
    fn commit(
        &mut self,
        at: DateTime<Utc>,
        verified: AllVerified,
        out: &mut Vec<Command>,
    ) -> Stage {
        self.issue(Some(at), Action::Commit, None, out);
        Stage::Committing { verified }
    }

    /// In a round that only goes forward (`revoke_first`, or the resync round): back
    /// off and bind the failed consumers again, or park after `retire_attempts`
    /// rounds. Elsewhere a failure rolled back when it was answered, so one found here
    /// is a lost track.
    pub(super) fn forward_retry(
        &mut self,
        d: &Decided,
        target: Fingerprint,
        round: Round,
        failures: u32,
        at: DateTime<Utc>,
        out: &mut Vec<Command>,
    ) -> Stage {
        if !d.forward_only(round) {
            return self.impossible(
                at,
                format!(
                    "a consumer failed to move in the {round:?} round of route {:?} and the rotation did not roll back",
                    d.route
                ),
                out,
            );
        }
        if failures >= self.attempts() {
            let consumers = self
                .consumers
                .iter()
                .filter_map(|t| match &t.status {
                    ConsumerStatus::BindFailed { reason, .. }
                    | ConsumerStatus::Mismatch { reason, .. } => {
                        Some((t.consumer.id.clone(), reason.clone()))
                    }
                    _ => None,
                })
                .collect();
            let reason = if d.route.revoke_first() {
                Attention::ConsumersNotMoved {
                    key: d.moves_to(),
                    consumers,
                    attempts: failures,
                }
            } else if d.route == Route::Adopt {
                Attention::NotAdopted {
                    key: d.moves_to(),
                    consumers,
                    attempts: failures,
                }
            } else {
                Attention::ResyncFailed {
                    key: d.moves_to(),
                    consumers,
                    attempts: failures,
                    leaked: self.mode.is_incident().then_some(d.active),
                }
            };
            return self.park(at, reason, out);
        }
        let until = at + retry_backoff(failures);
        self.issue(Some(at), Action::WaitUntil { at: until }, None, out);
        Stage::Binding {
            target,
            round,
            failures,
        }
    }

    /// After the `failures`-th failure of a regeneration that cannot roll back:
    /// `None` after issuing the backoff wait, or the parked stage.
    pub(super) fn regeneration_failed(
        &mut self,
        failures: u32,
        key: KeyName,
        purpose: Purpose,
        error: &Failure,
        at: DateTime<Utc>,
        out: &mut Vec<Command>,
    ) -> Option<Stage> {
        if failures >= self.attempts() {
            let reason = Attention::RetriesExhausted {
                key,
                purpose,
                attempts: failures,
                last_error: error.clone(),
            };
            return Some(self.park(at, reason, out));
        }
        let until = at + retry_backoff(failures);
        self.issue(Some(at), Action::WaitUntil { at: until }, None, out);
        None
    }

    /// Incident cleanup: disable every version holding a leaked value, in each
    /// consumer that keeps old versions (Key Vault).
    pub(super) fn cleanup(
        &mut self,
        d: &Decided,
        at: DateTime<Utc>,
        out: &mut Vec<Command>,
    ) -> Stage {
        for c in 0..self.consumers.len() {
            if self.consumers[c].consumer.capabilities.keeps_old_versions {
                let consumer = self.consumers[c].consumer.clone();
                self.issue(
                    Some(at),
                    Action::DisableVersions {
                        consumer,
                        fingerprints: d.leaked.clone(),
                    },
                    Some(c),
                    out,
                );
            }
        }
        if self.in_flight == 0 {
            return self.complete(d, at, out);
        }
        Stage::Cleanup
    }

    pub(super) fn complete(
        &mut self,
        d: &Decided,
        at: DateTime<Utc>,
        out: &mut Vec<Command>,
    ) -> Stage {
        let outcome = Outcome::Completed {
            active: d.moves_to(),
            regenerated: self.regenerations.clone(),
            warnings: self.warnings.clone(),
        };
        self.finish(at, outcome, out)
    }

    pub(super) fn park(
        &mut self,
        at: DateTime<Utc>,
        reason: Attention,
        out: &mut Vec<Command>,
    ) -> Stage {
        let in_doubt = self
            .steps
            .iter()
            .filter(|s| s.answer.is_none())
            .map(|s| s.command.clone())
            .collect();
        self.finish(at, Outcome::NeedsAttention { reason, in_doubt }, out)
    }

    /// Parks on a state the machine must never reach, naming it, instead of picking a
    /// default: whatever it would pick could commit or retire the wrong thing.
    pub(super) fn impossible(
        &mut self,
        at: DateTime<Utc>,
        what: String,
        out: &mut Vec<Command>,
    ) -> Stage {
        self.park(at, Attention::InternalError { what }, out)
    }

    pub(super) fn finish(
        &mut self,
        at: DateTime<Utc>,
        outcome: Outcome,
        out: &mut Vec<Command>,
    ) -> Stage {
        let outcome = Box::new(outcome);
        self.issue(Some(at), Action::Finish { outcome }, None, out);
        Stage::Finished
    }
}

impl Track {
    /// Its last bind or verification failed.
    pub(super) fn failed(&self) -> bool {
        matches!(
            self.status,
            ConsumerStatus::BindFailed { .. } | ConsumerStatus::Mismatch { .. }
        )
    }
}
