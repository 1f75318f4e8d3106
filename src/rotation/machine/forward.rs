//! Issuing commands and entering the phases they start: the swap's forward steps,
//! forward-only retries with backoff, incident cleanup and the ends.

use chrono::{DateTime, Utc};

use super::outcome::*;
use super::precheck::Route;
use super::types::*;
use super::view::ConsumerStatus;
use super::{Machine, State, retry_backoff};
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

    pub(super) fn verify_key(
        &mut self,
        at: DateTime<Utc>,
        key: KeyName,
        fingerprint: Fingerprint,
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
        State::VerifyingKey
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

    /// Binds every consumer to the standby.
    pub(super) fn bind_forward(&mut self, at: DateTime<Utc>, out: &mut Vec<Command>) -> State {
        let (_, standby) = self.keys();
        let Some(fp) = self.target else {
            return self.binds_done(0, at, out);
        };
        for c in 0..self.consumers.len() {
            self.consumers[c].bound_forward = true;
            self.bind(at, c, standby, fp, out);
        }
        if self.in_flight == 0 {
            return self.binds_done(0, at, out);
        }
        State::Binding { failures: 0 }
    }

    /// With `revoke_first`, after a backoff: bind again each consumer whose bind or
    /// verification failed.
    pub(super) fn rebind_failed(
        &mut self,
        at: DateTime<Utc>,
        standby: KeyName,
        out: &mut Vec<Command>,
    ) {
        let Some(fp) = self.target else { return };
        for c in 0..self.consumers.len() {
            if matches!(
                self.consumers[c].status,
                ConsumerStatus::BindFailed { .. } | ConsumerStatus::Mismatch { .. }
            ) {
                self.bind(at, c, standby, fp, out);
            }
        }
    }

    /// Every forward bind answered, none failed outside `revoke_first`.
    pub(super) fn binds_done(
        &mut self,
        failures: u32,
        at: DateTime<Utc>,
        out: &mut Vec<Command>,
    ) -> State {
        let (_, standby) = self.keys();
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
                if matches!(self.consumers[c].status, ConsumerStatus::Bound { key } if key == standby)
                {
                    self.verify_consumer(at, c, standby, fp, out);
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
            let (_, standby) = self.keys();
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
                key: standby,
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

    /// Incident cleanup: disable every Key Vault version holding a leaked value.
    pub(super) fn cleanup(&mut self, at: DateTime<Utc>, out: &mut Vec<Command>) -> State {
        let leaked = self
            .decision
            .as_ref()
            .map(|d| d.leaked.clone())
            .unwrap_or_default();
        for c in 0..self.consumers.len() {
            if self.consumers[c].consumer.kind == ConsumerKind::KeyVaultSecret {
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
        let (active, standby) = self.keys();
        let outcome = Outcome::Completed {
            active: if self.route() == Some(Route::LeakedStandby) {
                active
            } else {
                standby
            },
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
