//! Property-style test: thousands of seeded runs drive random successes, failures,
//! orderings and restarts (with occasional keys changed behind keyflip's back)
//! through the machine, checking the invariants after every event, then replay each
//! run and compare. Commands are performed against a model of Azure (`world`) that
//! makes Azure's own choices, so a route that relies on something Azure does not do
//! fails here even when nothing was injected. The PRNG is a few lines of splitmix64,
//! so a failing seed reproduces exactly.

mod invariants;
mod world;

use std::collections::BTreeSet;

use super::tests::{consumer, fp, t};
use super::*;
use invariants::{Seen, check_new_commands, check_one_bind_at_a_time};
use world::World;

pub(super) struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub(super) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub(super) fn percent(&mut self, p: u64) -> bool {
        self.next() % 100 < p
    }
}

const KINDS: [ConsumerKind; 4] = [
    ConsumerKind::KeyVaultSecret,
    ConsumerKind::Datastore,
    ConsumerKind::Workspace,
    ConsumerKind::Databricks,
];

fn random_key(rng: &mut Rng) -> KeyName {
    if rng.percent(50) {
        KeyName::Key1
    } else {
        KeyName::Key2
    }
}

struct Setup {
    mode: Mode,
    options: Options,
    obs: Observation,
    /// Percent of fallible commands that fail: some runs meet no failure at all.
    fault_percent: u64,
}

fn random_setup(rng: &mut Rng) -> Setup {
    let active = random_key(rng);
    let mode = match rng.below(7) {
        0 | 4 => Mode::Scheduled,
        // A swap parked at the usage gate, resumed: consumers hold `active`, the other
        // key is retired (its value sometimes not the one the swap left).
        5 => Mode::Retire {
            key: active.other(),
            expect: if rng.percent(90) {
                [fp(1), fp(2)][index(active.other())]
            } else {
                fp(99)
            },
            since: t(-500),
            force: rng.percent(30),
        },
        1 | 2 => Mode::Leaked {
            // Mostly the key in use: the routes with most to get wrong.
            key: if rng.percent(70) {
                active
            } else {
                active.other()
            },
            revoke_first: rng.percent(50),
        },
        3 => Mode::LeakedBoth,
        _ => Mode::Adopt {
            key: [None, Some(KeyName::Key1), Some(KeyName::Key2)][rng.below(3)],
        },
    };
    let options = Options {
        grace: TimeDelta::seconds([0, 60][rng.below(2)]),
        retire_attempts: 1 + rng.below(4) as u32,
        usage_gate: rng.percent(40).then_some(GateOptions {
            quiet: TimeDelta::seconds(60),
            recheck: TimeDelta::seconds(30),
            deadline: TimeDelta::seconds(400),
            latency: TimeDelta::seconds(30),
            lookback: TimeDelta::seconds(600),
        }),
        // Revoke-first rotations journaled before the revoke came first replay the
        // old order (read everything, probe the standby, revoke).
        revoke_before_reads: rng.percent(75),
        ..Options::default()
    };
    let n = 1 + rng.below(4);
    // Adopting is for consumers that are split or down: mostly untidy.
    let tidy = rng.percent(if matches!(mode, Mode::Adopt { .. }) {
        30
    } else {
        85
    });
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
    // Never regenerated, either key the newer, or a tie: each decides which key a
    // workspace resync takes.
    let (created1, created2) = [
        (None, None),
        (Some(t(-200)), Some(t(-100))),
        (Some(t(-100)), Some(t(-200))),
        (Some(t(-100)), Some(t(-100))),
        (None, Some(t(-100))),
    ][rng.below(5)];
    let obs = Observation {
        key1: KeyState {
            fingerprint: fp(1),
            created: created1,
        },
        key2: KeyState {
            fingerprint: fp(2),
            created: created2,
        },
        shared_key_access: rng.percent(97),
        missing_permissions: vec![],
        consumers,
        unlisted: vec![],
        unlisted_unchecked: vec![],
    };
    Setup {
        mode,
        options,
        obs,
        fault_percent: [0, 6, 12, 20][rng.below(4)],
    }
}

/// Every route; each must complete in some run.
const ROUTES: [Route; 8] = [
    Route::Adopt,
    Route::Scheduled,
    Route::Retire,
    Route::LeakedBoth,
    Route::LeakedActive {
        revoke_first: false,
        stage_standby: false,
    },
    Route::LeakedActive {
        revoke_first: false,
        stage_standby: true,
    },
    Route::LeakedActive {
        revoke_first: true,
        stage_standby: false,
    },
    Route::LeakedStandby,
];

/// The values an incident rotation must kill, as first observed.
fn leaked(mode: Mode, obs: &Observation) -> Vec<Fingerprint> {
    match mode {
        Mode::Scheduled | Mode::Retire { .. } => vec![],
        Mode::Leaked { key, .. } => vec![obs.key(key).fingerprint],
        Mode::LeakedBoth => vec![obs.key1.fingerprint, obs.key2.fingerprint],
        Mode::Adopt { .. } => vec![],
    }
}

/// An incident a person might declare mid-rotation.
fn random_incident(rng: &mut Rng) -> Mode {
    match rng.below(3) {
        0 => Mode::LeakedBoth,
        _ => Mode::Leaked {
            key: random_key(rng),
            revoke_first: rng.percent(30),
        },
    }
}

/// What one run reached, for the coverage checks.
struct Reached {
    phases: Vec<Phase>,
    route: Option<Route>,
    outcome: String,
    /// An incident took the run over: handled here or wound down, and how it ended.
    escalation: Option<String>,
}

/// One seeded run: random answers, restarts and drift until `Finish`, the invariants
/// checked after every event and at the end, then replayed.
fn run(seed: u64) -> Reached {
    let mut rng = Rng(seed);
    let Setup {
        mode,
        options,
        obs,
        fault_percent,
    } = random_setup(&mut rng);
    let mut m = Machine::new(mode, options);
    let mut world = World::new(&obs, fault_percent);
    world.forgotten_caller = options.usage_gate.is_some() && rng.percent(25);
    let mut events = Vec::new();
    let mut seen = Seen::default();
    let mut phases = Vec::new();
    let mut now = 0;
    // `world.disturbances` when the rollback started, if one did.
    let mut rollback_from = None;
    // The leaked values a completed run must have killed: from the mode, or from an
    // incident that took the run over and finished it here.
    let mut must_kill = leaked(mode, &obs);
    let mut escalated = false;
    for _ in 0..500 {
        if m.is_finished() {
            break;
        }
        phases.push(m.phase());
        now += 1 + rng.below(30) as i64;
        let amendment = if !events.is_empty() && rng.percent(3) {
            let at = t(now);
            if !escalated && rng.percent(60) {
                Some(Event::Escalated {
                    at,
                    mode: random_incident(&mut rng),
                    by: None,
                })
            } else {
                Some(Event::GraceShortened {
                    at,
                    grace: TimeDelta::seconds([0, 30][rng.below(2)]),
                    by: None,
                })
            }
        } else {
            None
        };
        let event = if let Some(amendment) = amendment.filter(|a| m.accepts(a).is_ok()) {
            if let Event::Escalated { mode: asked, .. } = &amendment {
                escalated = true;
                let killed_before: Vec<Fingerprint> = asked
                    .leaked_keys()
                    .iter()
                    .map(|k| world.keys[index(*k)])
                    .collect();
                let before = m.mode();
                let mut probe = m.clone();
                probe.handle(&amendment).unwrap();
                match probe.escalation() {
                    Some(e) if e.handled_here => must_kill = killed_before,
                    // Winding down is a disturbance: the run may end rolled back,
                    // and the follow-up (not this run) kills the leaked values.
                    Some(_) => world.disturbed = true,
                    // Covered already by the run's own incident.
                    None => assert!(before.covers(*asked), "seed {seed}"),
                }
            }
            amendment
        } else if rng.percent(4) && !events.is_empty() {
            // A restart: Azure observed again, now and then with a key changed
            // behind keyflip's back.
            if rng.percent(25) {
                world.drift(&mut rng, t(now));
            }
            Event::Reobserved {
                at: t(now),
                observation: world.observation(&obs),
            }
        } else {
            let outstanding = m.outstanding();
            assert!(
                !outstanding.is_empty(),
                "seed {seed}: stuck in {:?}",
                m.phase()
            );
            let c = &outstanding[rng.below(outstanding.len())];
            let result = world.perform(&mut rng, c, &obs, t(now));
            Event::Answer {
                seq: c.seq,
                at: t(now),
                result,
            }
        };
        let first_seq = m.issued().len() as u32 + 1;
        let answered = match &event {
            Event::Answer { seq, .. } => m.command(*seq).cloned(),
            _ => None,
        };
        let cmds = m
            .handle(&event)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        if let (Some(c), Event::Answer { result, .. }) = (&answered, &event) {
            if result.failure().is_some() && !seen.committed && !seen.resync_issued {
                seen.failure_before_resync = true;
            }
            match (&c.action, result) {
                (Action::Commit, _) => seen.committed = true,
                (
                    Action::VerifyKey {
                        key, fingerprint, ..
                    },
                    StepResult::KeyVerified,
                ) => {
                    seen.verified.insert((*key, *fingerprint));
                }
                (Action::Regenerate { key, purpose, .. }, StepResult::Regenerated { .. }) => {
                    *seen.succeeded.entry((*key, *purpose)).or_default() += 1;
                }
                (
                    Action::CheckUsage {
                        purpose: GatePurpose::Retire,
                        ..
                    },
                    result,
                ) => seen.last_gate = Some((t(now), result.clone())),
                _ => {}
            }
        }
        if matches!(&event, Event::Reobserved { .. }) && m.phase() == Phase::RollingBack {
            seen.failure_before_resync = true;
        }
        if m.phase() == Phase::RollingBack && rollback_from.is_none() {
            rollback_from = Some(world.disturbances);
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
    phases.push(m.phase());
    assert!(seen.succeeded.values().all(|&n| n == 1));
    let view = m.view();
    // Nothing failed and nothing changed behind keyflip's back: the rotation must do
    // its job (or refuse a setup it cannot handle), whatever Azure chose on its own.
    // A revoke first meets what would have refused it only after the revoke, and
    // parks on it (`NotMovedAfterRevoke`, with `--adopt`): its refusal.
    let refused_after_revoke = matches!(
        m.outcome(),
        Some(Outcome::NeedsAttention {
            reason: Attention::NotMovedAfterRevoke { .. },
            ..
        })
    );
    assert!(
        world.disturbed
            || refused_after_revoke
            || matches!(view.phase, Phase::Completed | Phase::Refused),
        "seed {seed}: nothing was injected, yet {:?} with {:?} ended: {}",
        view.route,
        obs.consumers
            .iter()
            .map(|c| c.consumer.kind())
            .collect::<Vec<_>>(),
        m.outcome().map_or("unfinished".into(), ToString::to_string)
    );
    world.check_end(seed, &view, &must_kill);
    // A rollback can always finish: once it started, only a failure of its own (or a
    // key changed behind keyflip's back) may stop it short of every consumer back on
    // the old key. A consumer that cannot be steered back (a workspace resync takes
    // Azure's choice) must never need to be.
    if rollback_from.is_some_and(|n| n == world.disturbances) {
        assert!(
            matches!(
                m.outcome(),
                Some(
                    Outcome::RolledBack { .. }
                        | Outcome::NeedsAttention {
                            reason: Attention::LeakedKeyInUse { .. },
                            ..
                        }
                )
            ),
            "seed {seed}: nothing failed after the rollback started, yet it ended: {}",
            m.outcome().map_or("unfinished".into(), ToString::to_string)
        );
    }

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

    let outcome_kind = m
        .outcome()
        .map(|o| serde_json::to_value(o).unwrap()["outcome"].to_string())
        .unwrap_or_default();
    Reached {
        phases,
        route: view.route,
        escalation: view.escalation.as_ref().map(|e| {
            format!(
                "{}/{outcome_kind}",
                if e.handled_here { "here" } else { "wound-down" }
            )
        }),
        outcome: match m.outcome() {
            Some(Outcome::NeedsAttention { reason, .. }) => {
                let json = serde_json::to_value(reason).unwrap();
                format!(
                    "needs_attention/{}",
                    json["attention"].as_str().unwrap_or("?")
                )
            }
            Some(other) => serde_json::to_value(other).unwrap()["outcome"].to_string(),
            None => "none".into(),
        },
    }
}

#[test]
fn random_runs_keep_every_invariant_and_replay_exactly() {
    let mut phases = BTreeSet::new();
    let mut outcomes = BTreeSet::new();
    let mut completed_routes = BTreeSet::new();
    let mut escalations = BTreeSet::new();
    for seed in 0..3000u64 {
        let reached = run(seed);
        escalations.extend(reached.escalation);
        phases.extend(reached.phases.iter().map(|p| format!("{p:?}")));
        if let (Some(route), "\"completed\"") = (reached.route, reached.outcome.as_str()) {
            completed_routes.insert(format!("{route:?}"));
        }
        outcomes.insert(reached.outcome);
    }
    for phase in [
        "Staging",
        "VerifyingKey",
        "Revoking",
        "Binding",
        "VerifyingConsumers",
        "Committing",
        "Grace",
        "CheckingUsage",
        "UsageGate",
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
        "needs_attention/key_not_accepted",
        "needs_attention/rollback_incomplete",
        "needs_attention/resync_failed",
        "needs_attention/leaked_key_in_use",
        "needs_attention/drift",
        "needs_attention/usage_gate_held",
        "needs_attention/not_moved_after_revoke",
    ] {
        assert!(
            outcomes.contains(outcome),
            "no run ended {outcome}: {outcomes:?}"
        );
    }
    for route in ROUTES {
        assert!(
            completed_routes.contains(&format!("{route:?}")),
            "no run completed route {route:?}: {completed_routes:?}"
        );
    }
    // Incidents that took a run over: finished there, and wound down for a follow-up
    // both after a rollback and after going forward.
    for escalation in [
        "here/\"completed\"",
        "wound-down/\"completed\"",
        "wound-down/\"rolled_back\"",
    ] {
        assert!(
            escalations.contains(escalation),
            "no run ended {escalation}: {escalations:?}"
        );
    }
}
