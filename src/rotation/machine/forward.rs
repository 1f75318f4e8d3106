//! Issuing commands and entering the phases they start: the swap's forward steps,
//! forward-only retries with backoff (after a `revoke_first` revoke), incident
//! cleanup and the ends.

use chrono::{DateTime, Utc};

use super::outcome::*;
use super::types::*;
use super::view::ConsumerStatus;
use super::{Kind, Machine, State, retry_backoff};
use crate::key::KeyName;
use crate::secret::Fingerprint;

impl Machine {
    pub(super) fn regenerate(
        &mut self,
        at: DateTime<Utc>,
        key: KeyName,
        purpose: Purpose,
        out: &mut Vec<Command>,
    ) {
        // `last` is set at precheck, before any regeneration can be issued.
        if let Some(before) = self.last_state(key) {
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
    }

    /// Issues `VerifyKey`; `failures` is what the phase has counted so far (only the
    /// fresh value after a revoke is retried).
    pub(super) fn verify_key(
        &mut self,
        at: DateTime<Utc>,
        key: KeyName,
        fingerprint: Fingerprint,
        failures: u32,
        out: &mut Vec<Command>,
    ) -> State {
        let budget = self.options.verify_budget;
        self.issue(
            Some(at),
            Action::VerifyKey {
                key,
                fingerprint,
                budget,
            },
            None,
            out,
        );
        State::VerifyingKey { failures }
    }

    /// With `revoke_first`, after the revoke: the fresh value of the revoked key is
    /// verified before any consumer is bound to it. Nothing can roll back, so a
    /// rejection is retried after a backoff, and parks after `retire_attempts`.
    pub(super) fn fresh_key_answer(
        &mut self,
        failures: u32,
        kind: Kind,
        result: &StepResult,
        at: DateTime<Utc>,
        out: &mut Vec<Command>,
    ) -> State {
        let (active, _) = self.keys();
        let Some(fingerprint) = self.target else {
            // The revoke's result set the target; without one there is nothing to bind.
            return State::VerifyingKey { failures };
        };
        match (kind, result) {
            (_, StepResult::KeyVerified) => self.bind_forward(at, out),
            (_, StepResult::KeyRejected { reason }) => {
                let failures = failures + 1;
                if failures >= self.attempts() {
                    let reason = Attention::KeyNotAccepted {
                        key: active,
                        fingerprint,
                        attempts: failures,
                        last_reason: reason.clone(),
                    };
                    return self.park(at, reason, out);
                }
                let until = at + retry_backoff(failures);
                self.issue(Some(at), Action::WaitUntil { at: until }, None, out);
                State::VerifyingKey { failures }
            }
            (Kind::Wait, _) => self.verify_key(at, active, fingerprint, failures, out),
            _ => State::VerifyingKey { failures },
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

    /// Binds every consumer to the target: the standby, or with `revoke_first` the
    /// revoked key's fresh value.
    pub(super) fn bind_forward(&mut self, at: DateTime<Utc>, out: &mut Vec<Command>) -> State {
        let to = self.moves_to();
        let Some(fp) = self.target else {
            return self.binds_done(0, at, out);
        };
        for c in 0..self.consumers.len() {
            self.consumers[c].bound_forward = true;
            self.bind(at, c, to, fp, out);
        }
        if self.in_flight == 0 {
            return self.binds_done(0, at, out);
        }
        State::Binding { failures: 0 }
    }

    /// With `revoke_first`, after a backoff: bind again each consumer whose bind or
    /// verification failed.
    pub(super) fn rebind_failed(&mut self, at: DateTime<Utc>, out: &mut Vec<Command>) {
        let to = self.moves_to();
        let Some(fp) = self.target else { return };
        for c in 0..self.consumers.len() {
            if matches!(
                self.consumers[c].status,
                ConsumerStatus::BindFailed { .. } | ConsumerStatus::Mismatch { .. }
            ) {
                self.bind(at, c, to, fp, out);
            }
        }
    }

    /// Whether every consumer is verified on `key`.
    pub(super) fn all_verified_on(&self, key: KeyName) -> bool {
        self.consumers
            .iter()
            .all(|t| t.status == ConsumerStatus::Verified { key })
    }

    /// Every forward bind answered, none failed outside `revoke_first`.
    pub(super) fn binds_done(
        &mut self,
        failures: u32,
        at: DateTime<Utc>,
        out: &mut Vec<Command>,
    ) -> State {
        let to = self.moves_to();
        let fp = self.target;
        if self
            .consumers
            .iter()
            .any(|t| matches!(t.status, ConsumerStatus::BindFailed { .. }))
        {
            return self.forward_retry(failures + 1, at, out);
        }
        if let Some(fp) = fp {
            for c in 0..self.consumers.len() {
                if self.consumers[c].status == (ConsumerStatus::Bound { key: to }) {
                    self.verify_consumer(at, c, to, fp, out);
                }
            }
        }
        if self.in_flight == 0 {
            self.issue(Some(at), Action::Commit, None, out);
            return State::Committing;
        }
        State::VerifyingConsumers { failures }
    }

    /// With `revoke_first` (the only route where forward failures do not roll back):
    /// back off and bind again, or park after `retire_attempts` rounds.
    pub(super) fn forward_retry(
        &mut self,
        failures: u32,
        at: DateTime<Utc>,
        out: &mut Vec<Command>,
    ) -> State {
        if failures >= self.attempts() {
            let to = self.moves_to();
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
            let reason = Attention::ConsumersNotMoved {
                key: to,
                consumers,
                attempts: failures,
            };
            return self.park(at, reason, out);
        }
        let until = at + retry_backoff(failures);
        self.issue(Some(at), Action::WaitUntil { at: until }, None, out);
        State::Binding { failures }
    }

    /// After the `failures`-th failure of a regeneration that cannot roll back:
    /// `None` after issuing the backoff wait, or the parked state.
    pub(super) fn regeneration_failed(
        &mut self,
        failures: u32,
        key: KeyName,
        purpose: Purpose,
        error: &str,
        at: DateTime<Utc>,
        out: &mut Vec<Command>,
    ) -> Option<State> {
        if failures >= self.attempts() {
            let reason = Attention::RetriesExhausted {
                key,
                purpose,
                attempts: failures,
                last_error: error.to_owned(),
            };
            return Some(self.park(at, reason, out));
        }
        let until = at + retry_backoff(failures);
        self.issue(Some(at), Action::WaitUntil { at: until }, None, out);
        None
    }

    /// Incident cleanup: disable every version holding a leaked value, in each
    /// consumer that keeps old versions (Key Vault).
    pub(super) fn cleanup(&mut self, at: DateTime<Utc>, out: &mut Vec<Command>) -> State {
        let leaked = self
            .decision
            .as_ref()
            .map(|d| d.leaked.clone())
            .unwrap_or_default();
        for c in 0..self.consumers.len() {
            if self.consumers[c].consumer.capabilities.keeps_old_versions {
                let consumer = self.consumers[c].consumer.clone();
                self.issue(
                    Some(at),
                    Action::DisableVersions {
                        consumer,
                        fingerprints: leaked.clone(),
                    },
                    Some(c),
                    out,
                );
            }
        }
        if self.in_flight == 0 {
            return self.complete(at, out);
        }
        State::Cleanup
    }

    pub(super) fn complete(&mut self, at: DateTime<Utc>, out: &mut Vec<Command>) -> State {
        let outcome = Outcome::Completed {
            active: self.moves_to(),
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
    ) -> State {
        let in_doubt = self
            .steps
            .iter()
            .filter(|s| s.answer.is_none())
            .map(|s| s.command.clone())
            .collect();
        self.finish(at, Outcome::NeedsAttention { reason, in_doubt }, out)
    }

    pub(super) fn finish(
        &mut self,
        at: DateTime<Utc>,
        outcome: Outcome,
        out: &mut Vec<Command>,
    ) -> State {
        let outcome = Box::new(outcome);
        self.issue(Some(at), Action::Finish { outcome }, None, out);
        State::Finished
    }
}
