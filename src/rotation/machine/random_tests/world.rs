//! The Azure that random runs perform their commands against: both keys with their
//! creation times, what each consumer holds, and the one choice Azure makes on its own
//! (which key a workspace takes on `resyncKeys`). Failures are injected at the run's
//! rate and recorded, so a run that met none can be held to finishing its job.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::super::tests::fp;
use super::super::*;
use super::Rng;

pub(super) struct World {
    pub(super) keys: [Fingerprint; 2],
    /// `keyCreationTime` of each key; `None` until its first regeneration.
    pub(super) created: [Option<DateTime<Utc>>; 2],
    pub(super) holds: HashMap<ConsumerId, Option<Fingerprint>>,
    next_fp: u32,
    /// Percent of fallible commands that fail.
    fault_percent: u64,
    /// A failure was injected, or a key changed behind keyflip's back: the run may
    /// end any way the machine allows. Otherwise it must do its job.
    pub(super) disturbed: bool,
    /// How many failures were injected and keys changed so far, so a run can tell
    /// whether anything went wrong after a given point (a rollback's start).
    pub(super) disturbances: u32,
    /// Someone outside the plan signs with every key all along: each usage check
    /// finds them.
    pub(super) forgotten_caller: bool,
}

impl World {
    pub(super) fn new(obs: &Observation, fault_percent: u64) -> Self {
        let keys = [obs.key1.fingerprint, obs.key2.fingerprint];
        let holds = obs
            .consumers
            .iter()
            .map(|c| {
                let held = match c.holding {
                    Holding::Key(k) => Some(keys[index(k)]),
                    Holding::Neither | Holding::Unusable { .. } => None,
                    Holding::Unknown { .. } => Some(keys[0]),
                };
                (c.consumer.id.clone(), held)
            })
            .collect();
        Self {
            keys,
            created: [obs.key1.created, obs.key2.created],
            holds,
            next_fp: 1000,
            fault_percent,
            disturbed: false,
            disturbances: 0,
            forgotten_caller: false,
        }
    }

    fn regenerate(&mut self, i: usize, at: DateTime<Utc>) -> Fingerprint {
        self.next_fp += 1;
        self.keys[i] = fp(self.next_fp);
        self.created[i] = Some(at);
        self.keys[i]
    }

    /// Someone regenerates a key behind keyflip's back.
    pub(super) fn drift(&mut self, rng: &mut Rng, at: DateTime<Utc>) {
        self.regenerate(rng.below(2), at);
        self.disturbed = true;
        self.disturbances += 1;
    }

    /// What `Observe` would find now: `obs` with the keys as they are.
    pub(super) fn observation(&self, obs: &Observation) -> Observation {
        let mut now = obs.clone();
        now.key1 = KeyState {
            fingerprint: self.keys[0],
            created: self.created[0],
        };
        now.key2 = KeyState {
            fingerprint: self.keys[1],
            created: self.created[1],
        };
        now
    }

    /// The key a workspace caches on `resyncKeys`: the account's newest by creation
    /// time, key1 on a tie (never-regenerated keys are the oldest). Azure does not
    /// document the choice; keyflip-twin makes the same one.
    fn newest(&self) -> usize {
        usize::from(self.created[1] > self.created[0])
    }

    /// Performs `c` as the executor would. A bind or verification whose fingerprint
    /// does not match the key is refused (as the real executor must).
    pub(super) fn perform(
        &mut self,
        rng: &mut Rng,
        c: &Command,
        obs: &Observation,
        at: DateTime<Utc>,
    ) -> StepResult {
        let fallible = matches!(
            c.action,
            Action::Regenerate { .. }
                | Action::VerifyKey { .. }
                | Action::Bind { .. }
                | Action::VerifyConsumer { .. }
                | Action::DisableVersions { .. }
                | Action::CheckUsage { .. }
        );
        let fail = fallible
            && ((self.forgotten_caller && matches!(c.action, Action::CheckUsage { .. }))
                || rng.percent(self.fault_percent));
        self.disturbed |= fail;
        self.disturbances += u32::from(fail);
        let reason = || Failure::new(FailureKind::Transient, "injected");
        match &c.action {
            Action::Observe => StepResult::Observed(obs.clone()),
            Action::ObserveKeys => StepResult::Observed(Observation {
                consumers: Vec::new(),
                ..self.observation(obs)
            }),
            // What consumers hold, against the keys as they were before the revoke:
            // the revoked key with its leaked value.
            Action::ObserveAfterRevoke { key, leaked } => {
                let mut now = self.observation(obs);
                let mut against = self.keys;
                against[index(*key)] = *leaked;
                for c in &mut now.consumers {
                    if matches!(c.holding, Holding::Key(_) | Holding::Neither) {
                        c.holding = match self.holds.get(&c.consumer.id).copied().flatten() {
                            Some(h) if h == against[0] => Holding::Key(KeyName::Key1),
                            Some(h) if h == against[1] => Holding::Key(KeyName::Key2),
                            _ => Holding::Neither,
                        };
                    }
                }
                StepResult::Observed(now)
            }
            Action::Regenerate { key, .. } if !fail => StepResult::Regenerated {
                fingerprint: self.regenerate(index(*key), at),
                created: Some(at),
            },
            Action::Regenerate { .. } => StepResult::RegenerateFailed { error: reason() },
            Action::VerifyKey {
                key, fingerprint, ..
            } if !fail && self.keys[index(*key)] == *fingerprint => StepResult::KeyVerified,
            Action::VerifyKey { .. } => StepResult::KeyRejected { reason: reason() },
            Action::Bind {
                consumer,
                key,
                fingerprint,
            } if !fail && self.keys[index(*key)] == *fingerprint => {
                let held = self.holds.get(&consumer.id).copied().flatten();
                // A workspace is told to resync and takes the key Azure picks; the
                // executor checks first, so one holding the target is not resynced.
                let now =
                    if consumer.kind() == ConsumerKind::Workspace && held != Some(*fingerprint) {
                        self.keys[self.newest()]
                    } else {
                        *fingerprint
                    };
                self.holds.insert(consumer.id.clone(), Some(now));
                StepResult::Bound
            }
            Action::Bind { .. } => StepResult::BindFailed { reason: reason() },
            Action::VerifyConsumer {
                consumer,
                key,
                fingerprint,
            } if !fail
                && self.keys[index(*key)] == *fingerprint
                && self.holds.get(&consumer.id) == Some(&Some(*fingerprint)) =>
            {
                StepResult::ConsumerVerified
            }
            Action::VerifyConsumer { consumer, .. } if !fail => StepResult::ConsumerMismatch {
                reason: Failure::new(
                    FailureKind::WrongValue,
                    format!(
                        "{consumer} holds {:?}",
                        self.holds.get(&consumer.id).copied().flatten()
                    ),
                ),
            },
            Action::VerifyConsumer { .. } => StepResult::ConsumerMismatch { reason: reason() },
            Action::DisableVersions { .. } if !fail => StepResult::VersionsDisabled {
                versions: vec!["1".into()],
            },
            Action::DisableVersions { .. } => StepResult::DisableFailed { reason: reason() },
            // The logs are asked about the value the machine names, never another.
            Action::CheckUsage {
                key, fingerprint, ..
            } if self.keys[index(*key)] != *fingerprint => StepResult::UsageUnknown {
                reason: Failure::new(FailureKind::KeyChanged, "the key changed"),
            },
            // An injected "failure" here is someone still signing with the key (or,
            // now and then, logs that cannot be read): the gate must hold, and may park.
            Action::CheckUsage { .. } if fail && rng.percent(25) => {
                StepResult::UsageUnknown { reason: reason() }
            }
            Action::CheckUsage { .. } if fail => StepResult::UsageChecked {
                until: at,
                callers: vec![Caller {
                    ip: "10.0.0.1".into(),
                    user_agent: "forgotten".into(),
                    operation: "ListContainers".into(),
                    authentication: "AccountKey".into(),
                    requests: 3,
                    first_seen: at - chrono::TimeDelta::seconds(5),
                    last_seen: at,
                }],
            },
            Action::CheckUsage { .. } => StepResult::UsageChecked {
                until: at,
                callers: vec![],
            },
            Action::Commit => StepResult::Committed,
            Action::WaitUntil { .. } => StepResult::Waited,
            Action::Finish { .. } => unreachable!("Finish is never answered"),
        }
    }

    /// The end state matches the outcome. A completed rotation leaves every consumer
    /// it touched holding the key it names, as Azure has it now, and (in an incident
    /// mode) no leaked value alive in the account or in a touched consumer. A rolled
    /// back one leaves them on the old key.
    pub(super) fn check_end(&self, seed: u64, view: &View, leaked: &[Fingerprint]) {
        // Parked after a resync that would not take: every other consumer is on the
        // new key as Azure has it, which works.
        if let Some(Outcome::NeedsAttention {
            reason: Attention::ResyncFailed { key, .. },
            ..
        }) = &view.outcome
        {
            for c in &view.consumers {
                if c.consumer.kind() != ConsumerKind::Workspace {
                    assert_eq!(
                        self.holds.get(&c.consumer.id).copied().flatten(),
                        Some(self.keys[index(*key)]),
                        "seed {seed}: {} is not on {key} after the resync parked",
                        c.consumer
                    );
                }
            }
        }
        let on = match &view.outcome {
            Some(Outcome::Completed { active, .. }) => *active,
            Some(Outcome::RolledBack { .. }) => match view.active {
                Some(active) => active,
                None => return,
            },
            _ => return,
        };
        for c in &view.consumers {
            if c.status == ConsumerStatus::Untouched {
                continue;
            }
            let held = self.holds.get(&c.consumer.id).copied().flatten();
            assert_eq!(
                held,
                Some(self.keys[index(on)]),
                "seed {seed}: {} should hold {on}; keys are {:?}",
                c.consumer,
                self.keys
            );
        }
        if matches!(view.outcome, Some(Outcome::Completed { .. })) {
            for leaked in leaked {
                assert!(
                    !self.keys.contains(leaked),
                    "seed {seed}: the leaked {leaked} is still a key of the account"
                );
            }
        }
    }
}
