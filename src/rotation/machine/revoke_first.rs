//! Revoke first (`Mode::Leaked { revoke_first: true }` with
//! `Options::revoke_before_reads`): the leaked key dies after one read of the keys,
//! before any consumer is read. The person asked for the leaked value dead first and
//! accepted that consumers on it break until they are moved.
//!
//! 1. `ObserveKeys` (the account's permissions, the account, `listKeys`: one round
//!    trip). [`precheck::before_revoke`] refuses only what makes the revoke itself
//!    impossible or wrong: a missing permission on the account, both keys with one
//!    fingerprint. Nothing else can refuse: the consumers are not known yet.
//! 2. `Regenerate(leaked, revoke)`, its `before` the leaked value as read (a revoke
//!    whose outcome a crash lost is reconciled from it, never sent twice, and no other
//!    key is ever regenerated here). A failure is retried with backoff, then parks
//!    (`RetriesExhausted`), as any revoke.
//! 3. `ObserveAfterRevoke` (every consumer, against the keys as they were before the
//!    revoke, so one still on the leaked value shows as holding the leaked key), and
//!    beside it, with a usage gate, `CheckUsage(leaked value, incident)`: who signed
//!    with the leaked value up to the revoke and breaks now (a warning, as before a
//!    revoke; it never holds anything).
//! 4. The route, from what consumers held ([`precheck::after_revoke`], the precheck's
//!    own rules): consumers on the leaked value move to its fresh value
//!    (`LeakedActive { revoke_first }`: the fresh value verified on the data plane,
//!    bound, verified, committed, Key Vault versions of the leaked value disabled), or
//!    none moves when they were on the other key (`LeakedStandby`: cleanup only).
//!    What would have refused before any effect (consumers split or on neither key,
//!    unusable as listed, a missing permission, no consumer's key known) parks as
//!    `NotMovedAfterRevoke` with the reasons and `--adopt`, the way out: the revoke is
//!    done, so it can no longer refuse.
//!
//! The route is not decided (the view shows none) until step 4: before the revoke
//! keyflip does not know which key consumers hold.

use chrono::{DateTime, Utc};

use super::outcome::*;
use super::precheck::{self, Route};
use super::types::*;
use super::{KeyCheck, Machine, State, index};
use crate::key::KeyName;
use crate::secret::Fingerprint;

/// A revoke-first rotation before its route is decided.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Early {
    /// The leaked key.
    pub(super) key: KeyName,
    /// Its leaked value, as the keys-only observation read it.
    pub(super) leaked: KeyState,
    /// Each key as last known (index 0 = key1).
    pub(super) last: [KeyState; 2],
    pub(super) stage: EarlyStage,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum EarlyStage {
    /// `Regenerate(leaked, revoke)` in flight, or the backoff before it again.
    Revoking { failures: u32 },
    /// The revoke answered with `fresh`; the consumers are being read (and, with a
    /// usage gate, who signed with the leaked value).
    Observing { fresh: Fingerprint },
}

impl Machine {
    /// Whether this rotation revokes after reading only the keys.
    pub(super) fn revokes_before_reads(&self) -> bool {
        matches!(
            self.mode,
            Mode::Leaked {
                revoke_first: true,
                ..
            }
        ) && self.options.revoke_before_reads
    }

    /// The first observation answered (step `i`).
    pub(super) fn first_observed(
        &mut self,
        i: usize,
        at: DateTime<Utc>,
        obs: &Observation,
        out: &mut Vec<Command>,
    ) -> State {
        if self.revokes_before_reads() {
            return self.precheck_keys(at, obs, out);
        }
        if matches!(self.steps[i].command.action, Action::ObserveKeys) {
            // An incident took the rotation over before its keys-only observation
            // answered (T45), and the incident's route is decided from the consumers.
            self.issue(Some(at), Action::Observe, None, out);
            return State::Prechecking;
        }
        self.precheck(at, obs, out)
    }

    /// Step 1: refuse what makes the revoke impossible or wrong, else revoke.
    fn precheck_keys(
        &mut self,
        at: DateTime<Utc>,
        obs: &Observation,
        out: &mut Vec<Command>,
    ) -> State {
        let Mode::Leaked { key, .. } = self.mode else {
            self.impossible(
                at,
                format!("a keys-only precheck in mode {}", self.mode),
                out,
            );
            return State::Ended;
        };
        match precheck::before_revoke(key, obs) {
            Err(reasons) => {
                self.finish(at, Outcome::Refused { reasons }, out);
                State::Ended
            }
            Ok(warnings) => {
                for w in warnings {
                    self.warn(at, w);
                }
                let leaked = *obs.key(key);
                self.issue(
                    Some(at),
                    Action::Regenerate {
                        key,
                        purpose: Purpose::Revoke,
                        before: leaked,
                    },
                    None,
                    out,
                );
                State::Revoking(Box::new(Early {
                    key,
                    leaked,
                    last: [obs.key1, obs.key2],
                    stage: EarlyStage::Revoking { failures: 0 },
                }))
            }
        }
    }

    /// An answer before the route is decided.
    pub(super) fn early_answer(
        &mut self,
        mut e: Early,
        i: usize,
        at: DateTime<Utc>,
        result: &StepResult,
        out: &mut Vec<Command>,
    ) -> State {
        use StepResult as R;
        let action = self.steps[i].command.action.clone();
        match (e.stage, &action, result) {
            (
                EarlyStage::Revoking { .. },
                Action::Regenerate { .. },
                R::Regenerated {
                    fingerprint,
                    created,
                },
            ) => {
                e.last[index(e.key)] = KeyState {
                    fingerprint: *fingerprint,
                    created: *created,
                };
                self.regenerations.push(Regeneration {
                    key: e.key,
                    purpose: Purpose::Revoke,
                    at,
                    before: e.leaked.fingerprint,
                    after: *fingerprint,
                });
                self.issue(
                    Some(at),
                    Action::ObserveAfterRevoke {
                        key: e.key,
                        leaked: e.leaked.fingerprint,
                    },
                    None,
                    out,
                );
                if let Some(gate) = self.options.usage_gate {
                    self.issue(
                        Some(at),
                        Action::CheckUsage {
                            key: e.key,
                            fingerprint: e.leaked.fingerprint,
                            since: at.checked_sub_signed(gate.lookback).unwrap_or(at),
                            purpose: GatePurpose::Incident,
                        },
                        None,
                        out,
                    );
                }
                e.stage = EarlyStage::Observing {
                    fresh: *fingerprint,
                };
                State::Revoking(Box::new(e))
            }
            (
                EarlyStage::Revoking { failures },
                Action::Regenerate { purpose, .. },
                R::RegenerateFailed { error },
            ) => match self.regeneration_failed(failures + 1, e.key, *purpose, error, at, out) {
                Some(_) => State::Ended,
                None => {
                    e.stage = EarlyStage::Revoking {
                        failures: failures + 1,
                    };
                    State::Revoking(Box::new(e))
                }
            },
            (EarlyStage::Revoking { .. }, Action::WaitUntil { .. }, R::Waited) => {
                self.issue(
                    Some(at),
                    Action::Regenerate {
                        key: e.key,
                        purpose: Purpose::Revoke,
                        before: e.last[index(e.key)],
                    },
                    None,
                    out,
                );
                State::Revoking(Box::new(e))
            }
            (
                EarlyStage::Observing { .. },
                Action::CheckUsage { .. },
                R::UsageChecked { .. } | R::UsageUnknown { .. },
            ) => {
                self.incident_callers(e.key, result, at);
                self.after_revoke_when_read(e, at, out)
            }
            (EarlyStage::Observing { .. }, Action::ObserveAfterRevoke { .. }, R::Observed(_)) => {
                self.after_revoke_when_read(e, at, out)
            }
            (stage, _, _) => {
                let what = format!(
                    "`{}` answered step {} ({action}) while revoking first ({stage:?})",
                    result.name(),
                    self.steps[i].command.seq,
                );
                self.impossible(at, what, out);
                State::Ended
            }
        }
    }

    fn after_revoke_when_read(
        &mut self,
        e: Early,
        at: DateTime<Utc>,
        out: &mut Vec<Command>,
    ) -> State {
        if self.in_flight > 0 {
            return State::Revoking(Box::new(e));
        }
        self.after_revoke(e, at, out)
    }

    /// Step 4: the route from what the consumers held before the revoke.
    fn after_revoke(&mut self, e: Early, at: DateTime<Utc>, out: &mut Vec<Command>) -> State {
        let fresh = match e.stage {
            EarlyStage::Observing { fresh } => fresh,
            EarlyStage::Revoking { .. } => {
                self.impossible(
                    at,
                    "deciding the route before the revoke answered".into(),
                    out,
                );
                return State::Ended;
            }
        };
        let observed = self
            .steps
            .iter()
            .rev()
            .find_map(|s| match (&s.command.action, &s.answer) {
                (Action::ObserveAfterRevoke { .. }, Some((_, StepResult::Observed(obs)))) => {
                    Some(obs.clone())
                }
                _ => None,
            });
        let Some(obs) = observed else {
            self.impossible(
                at,
                "the consumers read after the revoke did not answer".into(),
                out,
            );
            return State::Ended;
        };
        let found = obs.key(e.key).fingerprint;
        if found != fresh {
            let reason = Attention::Drift {
                drifts: vec![Drift {
                    key: e.key,
                    expected: fresh,
                    found,
                }],
                detail: format!(
                    "{} changed again outside keyflip right after keyflip revoked its leaked value, so keyflip cannot tell which value consumers should move to",
                    e.key
                ),
            };
            self.park(at, reason, out);
            return State::Ended;
        }
        self.track(&obs);
        // What consumers hold was read against the keys as they were before the revoke.
        let mut before = obs.clone();
        match e.key {
            KeyName::Key1 => before.key1 = e.leaked,
            KeyName::Key2 => before.key2 = e.leaked,
        }
        let decision = match precheck::after_revoke(e.key, &before) {
            Ok(decision) => decision,
            Err(reasons) => {
                self.park(
                    at,
                    Attention::NotMovedAfterRevoke {
                        key: e.key,
                        reasons,
                    },
                    out,
                );
                return State::Ended;
            }
        };
        let d = self.take_decision(at, decision, &obs);
        let stage = match d.route {
            // The leaked key was the standby: no consumer moves.
            Route::LeakedStandby => self.cleanup(&d, at, out),
            // Consumers held the leaked value: they move to its fresh one, verified first.
            Route::LeakedActive {
                revoke_first: true, ..
            } => self.verify_key(&d, at, KeyCheck::Fresh, fresh, 0, out),
            route => self.impossible(
                at,
                format!("after a revoke-first revoke the precheck chose route {route:?}"),
                out,
            ),
        };
        State::Decided {
            decided: Box::new(d),
            stage,
        }
    }

    /// After a restart, before the route is decided: a key changed behind keyflip's
    /// back. The leaked key changing (other than by this rotation's revoke in doubt)
    /// parks: keyflip cannot tell what consumers should move to. The other key is
    /// noted and taken as it is: nothing here acts on it.
    pub(super) fn early_reobserved(
        &mut self,
        mut e: Early,
        at: DateTime<Utc>,
        obs: &Observation,
        out: &mut Vec<Command>,
    ) -> State {
        let drifts = self.note_drifts(at, |key| e.last[index(key)].fingerprint, obs);
        if drifts.iter().any(|d| d.key == e.key) {
            let detail = match e.stage {
                EarlyStage::Revoking { .. } => format!(
                    "the leaked {} changed outside keyflip before keyflip's revoke of it succeeded; find out who regenerated it",
                    e.key
                ),
                EarlyStage::Observing { .. } => format!(
                    "{} changed again outside keyflip after keyflip revoked its leaked value, so keyflip cannot tell which value consumers should move to",
                    e.key
                ),
            };
            self.park(at, Attention::Drift { drifts, detail }, out);
            return State::Ended;
        }
        for d in &drifts {
            e.last[index(d.key)] = *obs.key(d.key);
        }
        State::Revoking(Box::new(e))
    }
}
