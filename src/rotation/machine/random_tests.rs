//! Property-style test: thousands of seeded runs drive random successes, failures,
//! orderings and restarts (with occasional keys changed behind keyflip's back)
//! through the machine, checking the invariants after every event, then replay each
//! run and compare. The PRNG is a few lines of splitmix64, so a failing seed
//! reproduces exactly.

use std::collections::{BTreeSet, HashMap};

use super::tests::{consumer, fp, t};
use super::*;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn percent(&mut self, p: u64) -> bool {
        self.next() % 100 < p
    }
}

const KINDS: [ConsumerKind; 4] = [
    ConsumerKind::KeyVaultSecret,
    ConsumerKind::Datastore,
    ConsumerKind::Workspace,
    ConsumerKind::Databricks,
];

fn random_setup(rng: &mut Rng) -> (Mode, Options, Observation) {
    let mode = match rng.below(4) {
        0 | 1 => Mode::Scheduled,
        2 => Mode::Leaked {
            key: if rng.percent(50) {
                KeyName::Key1
            } else {
                KeyName::Key2
            },
            revoke_first: rng.percent(50),
        },
        _ => Mode::LeakedBoth,
    };
    let options = Options {
        grace: TimeDelta::seconds([0, 60][rng.below(2)]),
        retire_attempts: 1 + rng.below(4) as u32,
        ..Options::default()
    };
    let active = if rng.percent(50) {
        KeyName::Key1
    } else {
        KeyName::Key2
    };
    let n = 1 + rng.below(4);
    let tidy = rng.percent(85);
    let consumers = (0..n)
        .map(|i| {
            let holding = if tidy {
                Holding::Key(active)
            } else {
                match rng.below(4) {
                    0 => Holding::Key(KeyName::Key1),
                    1 => Holding::Key(KeyName::Key2),
                    2 => Holding::Neither,
                    _ => Holding::Unknown { why: "dbx".into() },
                }
            };
            ObservedConsumer {
                consumer: consumer(KINDS[rng.below(4)], &format!("c{i}")),
                holding,
            }
        })
        .collect();
    let obs = Observation {
        key1: KeyState {
            fingerprint: fp(1),
            created: None,
        },
        key2: KeyState {
            fingerprint: fp(2),
            created: None,
        },
        shared_key_access: rng.percent(97),
        missing_permissions: vec![],
        consumers,
    };
    (mode, options, obs)
}

/// What the invariant checks remember across events.
#[derive(Default)]
struct Seen {
    committed: bool,
    failure_before_commit: bool,
    finishes: usize,
    succeeded: HashMap<(KeyName, Purpose), u32>,
}

fn check_new_commands(seed: u64, m: &Machine, cmds: &[Command], first_seq: u32, seen: &mut Seen) {
    let view = m.view();
    for (i, c) in cmds.iter().enumerate() {
        assert_eq!(
            c.seq,
            first_seq + i as u32,
            "seed {seed}: seqs are consecutive"
        );
        let revoke_first = view.route.is_some_and(Route::revoke_first);
        match &c.action {
            Action::Regenerate { key, purpose, .. } => {
                if Some(*key) == view.active && view.route != Some(Route::LeakedStandby) {
                    assert!(
                        seen.committed || (revoke_first && *purpose == Purpose::Revoke),
                        "seed {seed}: the key being retired regenerated before commit: {c:?}"
                    );
                }
                assert!(
                    !seen.succeeded.contains_key(&(*key, *purpose)),
                    "seed {seed}: a second {purpose} of {key} after one succeeded"
                );
                if *purpose == Purpose::Discard {
                    for cv in &view.consumers {
                        assert!(
                            matches!(cv.status, ConsumerStatus::Untouched)
                                || cv.status == ConsumerStatus::Verified { key: key.other() },
                            "seed {seed}: discard before {} was verified back: {:?}",
                            cv.consumer,
                            cv.status
                        );
                    }
                }
            }
            Action::Bind { key, .. } if Some(*key) == view.standby => {
                assert!(
                    !seen.failure_before_commit || revoke_first,
                    "seed {seed}: bind to the new key after a failure: {c:?}"
                );
            }
            Action::Finish { outcome } => {
                seen.finishes += 1;
                assert_eq!(seen.finishes, 1, "seed {seed}: a second Finish");
                assert_eq!(i, cmds.len() - 1, "seed {seed}: Finish is last");
                check_outcome(seed, &view, outcome);
            }
            _ => {}
        }
    }
}

fn check_outcome(seed: u64, view: &View, outcome: &Outcome) {
    let (Some(active), Some(standby)) = (view.active, view.standby) else {
        assert!(
            matches!(outcome, Outcome::Refused { .. }),
            "seed {seed}: {outcome:?}"
        );
        return;
    };
    match outcome {
        Outcome::Completed { active: now, .. } => {
            if view.route == Some(Route::LeakedStandby) {
                assert_eq!(*now, active);
                assert!(
                    view.consumers
                        .iter()
                        .all(|c| c.status == ConsumerStatus::Untouched)
                );
            } else {
                assert_eq!(*now, standby);
                for c in &view.consumers {
                    assert_eq!(
                        c.status,
                        ConsumerStatus::Verified { key: standby },
                        "seed {seed}: completed with {} not verified",
                        c.consumer
                    );
                }
            }
        }
        Outcome::RolledBack { .. }
        | Outcome::NeedsAttention {
            reason: Attention::LeakedKeyInUse { .. },
            ..
        } => {
            for c in &view.consumers {
                assert!(
                    c.status == ConsumerStatus::Untouched
                        || c.status == ConsumerStatus::Verified { key: active },
                    "seed {seed}: rolled back with {} in {:?}",
                    c.consumer,
                    c.status
                );
            }
        }
        Outcome::Refused { .. } => panic!("seed {seed}: refused after deciding"),
        Outcome::NeedsAttention { .. } => {}
    }
}

/// Azure as the executor would find it: both keys and what each consumer holds. The
/// executor model refuses a bind or verification whose fingerprint does not match
/// the key (as the real one must), and otherwise fails at random.
struct World {
    keys: [Fingerprint; 2],
    holds: HashMap<ConsumerId, Option<Fingerprint>>,
    next_fp: u32,
}

impl World {
    fn new(obs: &Observation) -> Self {
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
            holds,
            next_fp: 1000,
        }
    }

    fn fresh(&mut self) -> Fingerprint {
        self.next_fp += 1;
        fp(self.next_fp)
    }

    fn perform(&mut self, rng: &mut Rng, c: &Command, obs: &Observation) -> StepResult {
        let fail = rng.percent(12);
        let reason = || "injected".to_owned();
        match &c.action {
            Action::Observe => StepResult::Observed(obs.clone()),
            Action::Regenerate { key, .. } if !fail => {
                let fingerprint = self.fresh();
                self.keys[index(*key)] = fingerprint;
                StepResult::Regenerated {
                    fingerprint,
                    created: None,
                }
            }
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
                self.holds.insert(consumer.id.clone(), Some(*fingerprint));
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
            Action::VerifyConsumer { .. } => StepResult::ConsumerMismatch { reason: reason() },
            Action::DisableVersions { .. } if !fail => StepResult::VersionsDisabled {
                versions: vec!["1".into()],
            },
            Action::DisableVersions { .. } => StepResult::DisableFailed { reason: reason() },
            Action::Commit => StepResult::Committed,
            Action::WaitUntil { .. } => StepResult::Waited,
            Action::Finish { .. } => unreachable!("Finish is never answered"),
        }
    }

    /// Completed and rolled-back rotations leave every consumer they touched holding
    /// a key that exists.
    fn check_end(&self, seed: u64, view: &View) {
        let done = matches!(
            view.outcome,
            Some(Outcome::Completed { .. } | Outcome::RolledBack { .. })
        );
        if !done {
            return;
        }
        for c in &view.consumers {
            if c.status == ConsumerStatus::Untouched {
                continue;
            }
            let held = self.holds.get(&c.consumer.id).copied().flatten();
            assert!(
                held.is_some_and(|h| self.keys.contains(&h)),
                "seed {seed}: {} holds {held:?}, keys are {:?}",
                c.consumer,
                self.keys
            );
        }
    }
}

/// While a `Bind` is in flight for a consumer, nothing else about that consumer is:
/// a bind back must never race a forward bind.
fn check_one_bind_at_a_time(seed: u64, m: &Machine) {
    let outstanding = m.outstanding();
    for c in &outstanding {
        if let Action::Bind { consumer, .. } = &c.action {
            let others = outstanding
                .iter()
                .filter(|o| o.seq != c.seq && o.action.consumer() == Some(consumer))
                .count();
            assert_eq!(
                others, 0,
                "seed {seed}: {consumer} has a bind racing: {outstanding:?}"
            );
        }
    }
}

#[test]
fn random_runs_keep_every_invariant_and_replay_exactly() {
    let mut phases = BTreeSet::new();
    let mut outcomes = BTreeSet::new();
    for seed in 0..3000u64 {
        let mut rng = Rng(seed);
        let (mode, options, obs) = random_setup(&mut rng);
        let mut m = Machine::new(mode, options);
        let mut world = World::new(&obs);
        let mut events = Vec::new();
        let mut seen = Seen::default();
        let mut now = 0;
        for _ in 0..500 {
            if m.is_finished() {
                break;
            }
            phases.insert(format!("{:?}", m.phase()));
            now += 1 + rng.below(30) as i64;
            let event = if rng.percent(4) && !events.is_empty() {
                // A restart: Azure observed again, now and then with a key changed
                // behind keyflip's back.
                if rng.percent(25) {
                    let drifted = world.fresh();
                    world.keys[rng.below(2)] = drifted;
                }
                let mut observation = obs.clone();
                observation.key1.fingerprint = world.keys[0];
                observation.key2.fingerprint = world.keys[1];
                Event::Reobserved {
                    at: t(now),
                    observation,
                }
            } else {
                let outstanding = m.outstanding();
                assert!(
                    !outstanding.is_empty(),
                    "seed {seed}: stuck in {:?}",
                    m.phase()
                );
                let c = &outstanding[rng.below(outstanding.len())];
                let result = world.perform(&mut rng, c, &obs);
                Event::Answer {
                    seq: c.seq,
                    at: t(now),
                    result,
                }
            };
            let first_seq = m.issued().len() as u32 + 1;
            let answered = match &event {
                Event::Answer { seq, .. } => m.command(*seq).cloned(),
                Event::Reobserved { .. } => None,
            };
            let cmds = m
                .handle(&event)
                .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            if let (Some(c), Event::Answer { result, .. }) = (&answered, &event) {
                if result.failure().is_some() && !seen.committed {
                    seen.failure_before_commit = true;
                }
                match (&c.action, result) {
                    (Action::Commit, _) => seen.committed = true,
                    (Action::Regenerate { key, purpose, .. }, StepResult::Regenerated { .. }) => {
                        *seen.succeeded.entry((*key, *purpose)).or_default() += 1;
                    }
                    _ => {}
                }
            }
            if matches!(&event, Event::Reobserved { .. }) && m.phase() == Phase::RollingBack {
                seen.failure_before_commit = true;
            }
            check_new_commands(seed, &m, &cmds, first_seq, &mut seen);
            check_one_bind_at_a_time(seed, &m);
            events.push(event);
        }
        assert!(
            m.is_finished(),
            "seed {seed}: no Finish after 500 events, in {:?}",
            m.phase()
        );
        phases.insert(format!("{:?}", m.phase()));
        outcomes.insert(match m.outcome() {
            Some(Outcome::NeedsAttention { reason, .. }) => {
                let json = serde_json::to_value(reason).unwrap();
                format!(
                    "needs_attention/{}",
                    json["attention"].as_str().unwrap_or("?")
                )
            }
            Some(other) => serde_json::to_value(other).unwrap()["outcome"].to_string(),
            None => "none".into(),
        });
        assert!(seen.succeeded.values().all(|&n| n == 1));
        world.check_end(seed, &m.view());

        // After Finish nothing is accepted and only Finish is outstanding.
        let finish = m.outstanding();
        assert!(matches!(
            finish.as_slice(),
            [Command {
                action: Action::Finish { .. },
                ..
            }]
        ));
        let late = Event::Answer {
            seq: 1,
            at: t(now),
            result: StepResult::Waited,
        };
        assert_eq!(m.handle(&late), Err(HandleError::Finished));

        // Replay gives the same machine, the same commands, the same outstanding.
        let replayed =
            Machine::replay(mode, options, &events).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(replayed, m, "seed {seed}");
        assert!(replayed.issued().eq(m.issued()));
        // And a replay of any prefix reproduces what was outstanding at that point.
        let cut = rng.below(events.len() + 1);
        let prefix = Machine::replay(mode, options, &events[..cut]).unwrap();
        assert!(prefix.issued().zip(m.issued()).all(|(a, b)| a == b));
    }
    for phase in [
        "Staging",
        "VerifyingKey",
        "Revoking",
        "Binding",
        "VerifyingConsumers",
        "Committing",
        "Grace",
        "Retiring",
        "Cleanup",
        "RollingBack",
        "Completed",
        "RolledBack",
        "Refused",
        "NeedsAttention",
    ] {
        assert!(phases.contains(phase), "no run reached {phase}: {phases:?}");
    }
    for outcome in [
        "\"completed\"",
        "\"rolled_back\"",
        "\"refused\"",
        "needs_attention/retries_exhausted",
        "needs_attention/consumers_not_moved",
        "needs_attention/rollback_incomplete",
        "needs_attention/leaked_key_in_use",
        "needs_attention/drift",
    ] {
        assert!(
            outcomes.contains(outcome),
            "no run ended {outcome}: {outcomes:?}"
        );
    }
}
