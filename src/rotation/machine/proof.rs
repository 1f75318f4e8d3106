//! Proofs the compiler checks. Each is a zero-sized value with a private field, so
//! only the function in this module that does the check can make one: a step that
//! needs a proof cannot be written without the check before it (the habit of rustls,
//! whose handshake states take `…Verified` values only the verifier mints).
//!
//! - [`AllVerified`]: every consumer was verified holding the value it moves to (or,
//!   for a resumed retire, observed holding the key the parked swap moved it to).
//!   `Commit` is issued only with one (the `Committing` stage holds it).
//! - [`Committed`]: the commit marker was journaled after such a check. The retire, the
//!   point of no return, is issued only with one (`Machine::retire`; the `Grace` and
//!   `Retiring` stages hold it).

use super::types::{Action, Holding, StepResult};
use super::{Step, Track};
use crate::key::KeyName;
use crate::secret::Fingerprint;

/// Every consumer's latest bind or verification is a verification, answered
/// `ConsumerVerified`, of the key and value consumers move to.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct AllVerified(());

impl AllVerified {
    /// Reads the step log itself, not the per-consumer summary, so a status set by
    /// mistake cannot stand in for a verification. The error names the first consumer
    /// that is not verified and why.
    pub(super) fn check(
        steps: &[Step],
        consumers: &[Track],
        key: KeyName,
        fingerprint: Fingerprint,
    ) -> Result<AllVerified, String> {
        if let Some(open) = steps
            .iter()
            .find(|s| s.answer.is_none() && !matches!(s.command.action, Action::Finish { .. }))
        {
            return Err(format!(
                "step {} ({}) has not answered",
                open.command.seq, open.command.action
            ));
        }
        for (c, track) in consumers.iter().enumerate() {
            let last = steps.iter().rev().find(|s| {
                s.consumer == Some(c)
                    && matches!(
                        s.command.action,
                        Action::Bind { .. } | Action::VerifyConsumer { .. }
                    )
            });
            let Some(last) = last else {
                return Err(format!("{} was never bound nor verified", track.consumer));
            };
            let verified = match (&last.command.action, &last.answer) {
                (
                    Action::VerifyConsumer {
                        consumer,
                        key: k,
                        fingerprint: f,
                    },
                    Some((_, StepResult::ConsumerVerified)),
                ) => *consumer == track.consumer && *k == key && *f == fingerprint,
                _ => false,
            };
            if !verified {
                return Err(format!(
                    "{} is not verified on {key} ({fingerprint}): its last step is {} ({})",
                    track.consumer, last.command.seq, last.command.action
                ));
            }
        }
        Ok(AllVerified(()))
    }
}

impl AllVerified {
    /// For a resumed retire, whose consumers were moved by the swap it continues: the
    /// observation (the first step, answered) shows every consumer holding `key` and
    /// `key` with `fingerprint`. Read from the step log, like [`AllVerified::check`].
    pub(super) fn observed(
        steps: &[Step],
        consumers: &[Track],
        key: KeyName,
        fingerprint: Fingerprint,
    ) -> Result<AllVerified, String> {
        let obs = steps
            .iter()
            .find_map(|s| match (&s.command.action, &s.answer) {
                (Action::Observe, Some((_, StepResult::Observed(obs)))) => Some(obs),
                _ => None,
            })
            .ok_or("the observation has not answered")?;
        if obs.key(key).fingerprint != fingerprint {
            return Err(format!("{key} is not {fingerprint} in the observation"));
        }
        if consumers.is_empty() {
            return Err("there is no consumer to have moved".into());
        }
        for track in consumers {
            let held = obs
                .consumers
                .iter()
                .find(|c| c.consumer == track.consumer)
                .map(|c| &c.holding);
            if held != Some(&Holding::Key(key)) {
                return Err(format!(
                    "{} was observed holding {held:?}, not {key}",
                    track.consumer
                ));
            }
        }
        Ok(AllVerified(()))
    }
}

/// The swap was committed: made only from an [`AllVerified`], when `Commit` answered.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Committed(());

impl Committed {
    pub(super) fn new(_verified: AllVerified) -> Committed {
        Committed(())
    }
}
