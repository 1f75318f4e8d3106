//! Unit tests of the machine, named after the transition rows (T1..T40) of the
//! module docs they exercise.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};

use super::*;

/// A fingerprint whose short form shows `n` (`fp:00000000002a` for 42).
pub(super) fn fp(n: u32) -> Fingerprint {
    Fingerprint::from_hex(&format!("{n:012x}{:020x}", 0)).expect("32 hex digits")
}

pub(super) fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap() + TimeDelta::seconds(secs)
}

pub(super) fn consumer(kind: ConsumerKind, id: &str) -> ConsumerRef {
    ConsumerRef {
        id: ConsumerId(id.to_owned()),
        kind,
    }
}

fn kv(id: &str) -> ConsumerRef {
    consumer(ConsumerKind::KeyVaultSecret, id)
}
fn ds(id: &str) -> ConsumerRef {
    consumer(ConsumerKind::Datastore, id)
}
fn dbx(id: &str) -> ConsumerRef {
    consumer(ConsumerKind::Databricks, id)
}

const K1: KeyName = KeyName::Key1;
const K2: KeyName = KeyName::Key2;

/// key1 = fp(1), key2 = fp(2), shared keys on, no missing permission.
fn observation(consumers: Vec<(ConsumerRef, Holding)>) -> Observation {
    Observation {
        key1: KeyState {
            fingerprint: fp(1),
            created: None,
        },
        key2: KeyState {
            fingerprint: fp(2),
            created: Some(t(-86_400)),
        },
        shared_key_access: true,
        missing_permissions: vec![],
        consumers: consumers
            .into_iter()
            .map(|(consumer, holding)| ObservedConsumer { consumer, holding })
            .collect(),
    }
}

/// The usual world: a Key Vault secret, two datastores, all on key1.
fn on_key1() -> Observation {
    observation(vec![
        (kv("kv/storage-key"), Holding::Key(K1)),
        (ds("ws/ds-a"), Holding::Key(K1)),
        (ds("ws/ds-b"), Holding::Key(K1)),
    ])
}

fn opts(grace_secs: i64) -> Options {
    Options {
        grace: TimeDelta::seconds(grace_secs),
        ..Options::default()
    }
}

/// A machine and a clock that advances one second per answer.
struct Run {
    m: Machine,
    now: i64,
}

impl Run {
    fn new(mode: Mode, options: Options) -> Self {
        Self {
            m: Machine::new(mode, options),
            now: 0,
        }
    }

    fn answer(&mut self, seq: u32, result: StepResult) -> Vec<Command> {
        self.now += 1;
        let event = Event::Answer {
            seq,
            at: t(self.now),
            result,
        };
        self.m
            .handle(&event)
            .unwrap_or_else(|e| panic!("seq {seq}: {e}"))
    }

    fn observe(&mut self, obs: Observation) -> Vec<Command> {
        self.answer(1, StepResult::Observed(obs))
    }

    /// Answers every command in `cmds` with success, in order, and returns what the
    /// last answers produced (all of it).
    fn succeed(&mut self, cmds: Vec<Command>) -> Vec<Command> {
        let mut next = Vec::new();
        for c in cmds {
            let result = success(&c);
            next.extend(self.answer(c.seq, result));
        }
        next
    }

    /// Succeeds until a command satisfying `stop` is issued; returns it with its batch.
    fn succeed_until(
        &mut self,
        mut cmds: Vec<Command>,
        stop: impl Fn(&Action) -> bool,
    ) -> Vec<Command> {
        for _ in 0..100 {
            if cmds.iter().any(|c| stop(&c.action)) || cmds.is_empty() {
                return cmds;
            }
            cmds = self.succeed(cmds);
        }
        panic!("never reached the command")
    }

    fn outcome(&self) -> Outcome {
        self.m.outcome().cloned().expect("finished")
    }
}

fn success(c: &Command) -> StepResult {
    match &c.action {
        Action::Observe => StepResult::Observed(on_key1()),
        Action::Regenerate { key, purpose, .. } => StepResult::Regenerated {
            fingerprint: fp(100 + 10 * (*key as u32) + *purpose as u32),
            created: Some(t(1000)),
        },
        Action::VerifyKey { .. } => StepResult::KeyVerified,
        Action::Bind { .. } => StepResult::Bound,
        Action::VerifyConsumer { .. } => StepResult::ConsumerVerified,
        Action::DisableVersions { .. } => StepResult::VersionsDisabled {
            versions: vec!["v0".to_owned()],
        },
        Action::Commit => StepResult::Committed,
        Action::WaitUntil { .. } => StepResult::Waited,
        Action::Finish { .. } => panic!("finish takes no result"),
    }
}

fn only(cmds: &[Command]) -> &Action {
    assert_eq!(cmds.len(), 1, "expected one command, got {cmds:#?}");
    &cmds[0].action
}

fn is_finish(cmds: &[Command]) -> bool {
    cmds.len() == 1 && matches!(cmds[0].action, Action::Finish { .. })
}

fn regenerations(m: &Machine) -> Vec<(KeyName, Purpose)> {
    m.issued()
        .filter_map(|c| match c.action {
            Action::Regenerate { key, purpose, .. } => Some((key, purpose)),
            _ => None,
        })
        .collect()
}

fn failed(reason: &str) -> StepResult {
    StepResult::BindFailed {
        reason: reason.to_owned(),
    }
}

#[test]
fn starts_with_observe_outstanding() {
    let m = Machine::new(Mode::Scheduled, Options::default());
    assert_eq!(
        m.outstanding(),
        vec![Command {
            seq: 1,
            action: Action::Observe
        }]
    );
    assert_eq!(m.phase(), Phase::Prechecking);
}

#[test]
fn t2_t5_t7_t17_t19_t23_t25_t27_scheduled_swap_in_order() {
    let mut r = Run::new(Mode::Scheduled, opts(3600));
    let c = r.observe(on_key1());
    assert_eq!(
        only(&c),
        &Action::Regenerate {
            key: K2,
            purpose: Purpose::Stage,
            before: on_key1().key2
        }
    );
    assert_eq!(r.m.phase(), Phase::Staging);
    let c = r.answer(
        c[0].seq,
        StepResult::Regenerated {
            fingerprint: fp(22),
            created: Some(t(1)),
        },
    );
    assert!(
        matches!(only(&c), Action::VerifyKey { key: K2, fingerprint, .. } if *fingerprint == fp(22))
    );
    let binds = r.answer(c[0].seq, StepResult::KeyVerified);
    assert_eq!(binds.len(), 3);
    assert!(binds.iter().all(|b| matches!(&b.action,
        Action::Bind { key: K2, fingerprint, .. } if *fingerprint == fp(22))));
    assert_eq!(r.m.phase(), Phase::Binding);
    // T15: nothing new until the whole batch answered.
    assert!(r.answer(binds[0].seq, StepResult::Bound).is_empty());
    assert!(r.answer(binds[2].seq, StepResult::Bound).is_empty());
    let verifies = r.answer(binds[1].seq, StepResult::Bound);
    assert_eq!(verifies.len(), 3);
    assert!(
        verifies
            .iter()
            .all(|v| matches!(&v.action, Action::VerifyConsumer { key: K2, .. }))
    );
    assert_eq!(r.m.phase(), Phase::VerifyingConsumers);
    let c = r.succeed(verifies);
    assert_eq!(only(&c), &Action::Commit);
    let c = r.answer(c[0].seq, StepResult::Committed);
    let committed_at = t(r.now);
    assert_eq!(
        only(&c),
        &Action::WaitUntil {
            at: committed_at + TimeDelta::hours(1)
        }
    );
    assert_eq!(r.m.phase(), Phase::Grace);
    let c = r.answer(c[0].seq, StepResult::Waited);
    assert!(
        matches!(only(&c), Action::Regenerate { key: K1, purpose: Purpose::Retire, before } if before.fingerprint == fp(1))
    );
    let c = r.answer(
        c[0].seq,
        StepResult::Regenerated {
            fingerprint: fp(11),
            created: None,
        },
    );
    assert!(is_finish(&c));
    match r.outcome() {
        Outcome::Completed {
            active,
            regenerated,
            ..
        } => {
            assert_eq!(active, K2);
            assert_eq!(
                regenerated
                    .iter()
                    .map(|g| (g.key, g.purpose, g.before, g.after))
                    .collect::<Vec<_>>(),
                vec![
                    (K2, Purpose::Stage, fp(2), fp(22)),
                    (K1, Purpose::Retire, fp(1), fp(11))
                ]
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(r.m.phase(), Phase::Completed);
    assert_eq!(
        r.m.outstanding(),
        c,
        "only Finish is outstanding after the end"
    );
}

#[test]
fn t24_zero_grace_retires_right_after_commit() {
    let mut r = Run::new(Mode::Scheduled, opts(0));
    let c = r.observe(on_key1());
    let c = r.succeed_until(c, |a| matches!(a, Action::Commit));
    let c = r.succeed(c);
    assert!(matches!(
        only(&c),
        Action::Regenerate {
            key: K1,
            purpose: Purpose::Retire,
            ..
        }
    ));
}

#[test]
fn t1_refuses_with_every_reason_and_changes_nothing() {
    let mut obs = observation(vec![
        (kv("a"), Holding::Key(K1)),
        (ds("b"), Holding::Key(K2)),
        (ds("c"), Holding::Neither),
    ]);
    obs.shared_key_access = false;
    obs.missing_permissions = vec![MissingPermission {
        action: "Microsoft.Storage/storageAccounts/regeneratekey/action".into(),
        scope: "/subscriptions/s".into(),
        role_hint: Some("Storage Account Key Operator Service Role".into()),
    }];
    let mut r = Run::new(Mode::Scheduled, Options::default());
    let c = r.observe(obs);
    assert!(is_finish(&c));
    assert_eq!(r.m.issued().len(), 2, "only Observe and Finish");
    let Outcome::Refused { reasons } = r.outcome() else {
        panic!()
    };
    assert!(matches!(
        reasons[0],
        RefusalReason::MissingPermissions { .. }
    ));
    assert!(reasons.contains(&RefusalReason::SharedKeyAccessDisabled));
    assert!(reasons.contains(&RefusalReason::ConsumerHoldsNeither { consumer: ds("c") }));
    assert!(reasons.contains(&RefusalReason::ConsumersSplit {
        on_key1: vec![ConsumerId("a".into())],
        on_key2: vec![ConsumerId("b".into())],
    }));
    let text = r.outcome().to_string();
    assert!(
        text.contains("granted by Storage Account Key Operator"),
        "{text}"
    );
    assert_eq!(r.m.phase(), Phase::Refused);
}

#[test]
fn t1_refuses_when_no_consumer_key_is_known_or_keys_are_identical() {
    let unknown = Holding::Unknown {
        why: "Databricks values cannot be read".into(),
    };
    let mut r = Run::new(Mode::Scheduled, Options::default());
    r.observe(observation(vec![(dbx("scope/key"), unknown.clone())]));
    assert_eq!(
        r.outcome(),
        Outcome::Refused {
            reasons: vec![RefusalReason::NoConsumerKeyKnown {
                unknown: vec![ConsumerId("scope/key".into())]
            }]
        }
    );

    let mut obs = on_key1();
    obs.key2.fingerprint = obs.key1.fingerprint;
    obs.consumers.push(obs.consumers[0].clone());
    let mut r = Run::new(Mode::Scheduled, Options::default());
    r.observe(obs);
    let Outcome::Refused { reasons } = r.outcome() else {
        panic!()
    };
    assert!(reasons.contains(&RefusalReason::KeysIdentical));
    assert!(reasons.contains(&RefusalReason::DuplicateConsumer {
        consumer: ConsumerId("kv/storage-key".into())
    }));
}

#[test]
fn unknown_consumers_do_not_decide_or_block_but_are_bound_and_reported() {
    let mut r = Run::new(Mode::Scheduled, opts(0));
    let c = r.observe(observation(vec![
        (ds("a"), Holding::Key(K2)),
        (
            dbx("scope/key"),
            Holding::Unknown {
                why: "never written by keyflip".into(),
            },
        ),
    ]));
    assert!(matches!(
        only(&c),
        Action::Regenerate {
            key: K1,
            purpose: Purpose::Stage,
            ..
        }
    ));
    let binds = r.succeed_until(c, |a| matches!(a, Action::Bind { .. }));
    assert!(
        binds
            .iter()
            .any(|b| b.action.consumer() == Some(&dbx("scope/key")))
    );
    let view = r.m.view();
    assert_eq!((view.active, view.standby), (Some(K2), Some(K1)));
    assert!(
        view.warnings[0].contains("never written by keyflip"),
        "{:?}",
        view.warnings
    );
}

#[test]
fn t4_t10_t28_leaked_standby_is_revoked_without_touching_consumers() {
    let mut obs = observation(vec![
        (kv("kv"), Holding::Key(K1)),
        (ds("broken"), Holding::Neither),
    ]);
    obs.shared_key_access = false;
    let mut r = Run::new(
        Mode::Leaked {
            key: K2,
            revoke_first: false,
        },
        Options::default(),
    );
    let c = r.observe(obs);
    assert!(matches!(
        only(&c),
        Action::Regenerate {
            key: K2,
            purpose: Purpose::Revoke,
            ..
        }
    ));
    assert_eq!(r.m.phase(), Phase::Revoking);
    let c = r.succeed(c);
    assert_eq!(
        only(&c),
        &Action::DisableVersions {
            consumer: kv("kv"),
            fingerprints: vec![fp(2)]
        }
    );
    let c = r.succeed(c);
    assert!(is_finish(&c));
    assert!(
        !r.m.issued()
            .any(|c| matches!(c.action, Action::Bind { .. }))
    );
    let Outcome::Completed {
        active, warnings, ..
    } = r.outcome()
    else {
        panic!()
    };
    assert_eq!(active, K1);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert_eq!(r.m.view().consumers[0].disabled_versions, vec!["v0"]);
}

#[test]
fn leaked_key_held_by_some_consumers_is_a_split_and_refused() {
    let mut r = Run::new(
        Mode::Leaked {
            key: K2,
            revoke_first: true,
        },
        Options::default(),
    );
    r.observe(observation(vec![
        (kv("a"), Holding::Key(K1)),
        (ds("b"), Holding::Key(K2)),
    ]));
    assert!(
        matches!(r.outcome(), Outcome::Refused { reasons } if matches!(reasons[0], RefusalReason::ConsumersSplit { .. }))
    );
}

#[test]
fn t3_t24_t26_leaked_active_swaps_to_existing_standby_and_retires_at_once() {
    let mode = Mode::Leaked {
        key: K1,
        revoke_first: false,
    };
    let mut r = Run::new(mode, opts(3600));
    let c = r.observe(on_key1());
    assert!(
        matches!(only(&c), Action::VerifyKey { key: K2, fingerprint, .. } if *fingerprint == fp(2))
    );
    let binds = r.succeed(c);
    assert!(binds.iter().all(|b| matches!(&b.action,
        Action::Bind { key: K2, fingerprint, .. } if *fingerprint == fp(2))));
    let c = r.succeed_until(binds, |a| matches!(a, Action::Commit));
    let c = r.succeed(c);
    assert!(matches!(
        only(&c),
        Action::Regenerate {
            key: K1,
            purpose: Purpose::Retire,
            ..
        }
    ));
    let c = r.succeed(c);
    assert_eq!(
        only(&c),
        &Action::DisableVersions {
            consumer: kv("kv/storage-key"),
            fingerprints: vec![fp(1)]
        }
    );
    r.succeed(c);
    assert!(matches!(r.outcome(), Outcome::Completed { active: K2, .. }));
    assert_eq!(regenerations(&r.m), vec![(K1, Purpose::Retire)]);
}

#[test]
fn t8_t11_t26_revoke_first_kills_the_leaked_key_before_binding() {
    let mode = Mode::Leaked {
        key: K1,
        revoke_first: true,
    };
    let mut r = Run::new(mode, Options::default());
    let c = r.observe(on_key1());
    assert!(matches!(only(&c), Action::VerifyKey { key: K2, .. }));
    let c = r.succeed(c);
    assert!(matches!(
        only(&c),
        Action::Regenerate {
            key: K1,
            purpose: Purpose::Revoke,
            ..
        }
    ));
    let binds = r.succeed(c);
    assert_eq!(binds.len(), 3);
    let c = r.succeed_until(binds, |a| matches!(a, Action::Commit));
    let c = r.succeed(c);
    assert!(
        matches!(only(&c), Action::DisableVersions { fingerprints, .. } if fingerprints == &vec![fp(1)])
    );
    r.succeed(c);
    assert!(matches!(r.outcome(), Outcome::Completed { active: K2, .. }));
    assert_eq!(regenerations(&r.m), vec![(K1, Purpose::Revoke)]);
}

#[test]
fn t20_t21_t22_revoke_first_retries_binds_forward_then_parks() {
    let mode = Mode::Leaked {
        key: K1,
        revoke_first: true,
    };
    let options = Options {
        retire_attempts: 3,
        ..Options::default()
    };
    let mut r = Run::new(mode, options);
    let c = r.observe(on_key1());
    let binds = r.succeed_until(c, |a| matches!(a, Action::Bind { .. }));
    // One bind fails: no rollback (the leaked key is dead), a backoff instead.
    r.answer(binds[0].seq, failed("throttled"));
    r.answer(binds[1].seq, StepResult::Bound);
    let c = r.answer(binds[2].seq, StepResult::Bound);
    assert_eq!(
        only(&c),
        &Action::WaitUntil {
            at: t(r.now) + TimeDelta::seconds(10)
        }
    );
    let c = r.answer(c[0].seq, StepResult::Waited);
    assert!(
        matches!(only(&c), Action::Bind { consumer, key: K2, .. } if *consumer == kv("kv/storage-key"))
    );
    let c = r.succeed(c);
    // Only the two not yet verified... all three are Bound now, so all are verified.
    assert_eq!(c.len(), 3);
    // A verification fails: re-bind that one after 20 s.
    r.answer(c[0].seq, StepResult::ConsumerVerified);
    r.answer(c[1].seq, StepResult::ConsumerVerified);
    let w = r.answer(
        c[2].seq,
        StepResult::ConsumerMismatch {
            reason: "old value".into(),
        },
    );
    assert_eq!(
        only(&w),
        &Action::WaitUntil {
            at: t(r.now) + TimeDelta::seconds(20)
        }
    );
    let c = r.succeed(w);
    assert!(matches!(only(&c), Action::Bind { consumer, .. } if *consumer == ds("ws/ds-b")));
    let c = r.answer(c[0].seq, failed("still throttled"));
    assert!(is_finish(&c), "third failed round parks: {c:?}");
    let Outcome::NeedsAttention {
        reason:
            Attention::ConsumersNotMoved {
                key,
                consumers,
                attempts,
            },
        ..
    } = r.outcome()
    else {
        panic!("{:?}", r.outcome())
    };
    assert_eq!((key, attempts), (K2, 3));
    assert_eq!(
        consumers,
        vec![(ConsumerId("ws/ds-b".into()), "still throttled".into())]
    );
}

#[test]
fn leaked_both_stages_first_retires_at_once_and_disables_both_values() {
    let mut r = Run::new(Mode::LeakedBoth, opts(3600));
    let c = r.observe(on_key1());
    assert!(matches!(
        only(&c),
        Action::Regenerate {
            key: K2,
            purpose: Purpose::Stage,
            ..
        }
    ));
    let c = r.succeed_until(c, |a| matches!(a, Action::Commit));
    let c = r.succeed(c);
    assert!(matches!(
        only(&c),
        Action::Regenerate {
            key: K1,
            purpose: Purpose::Retire,
            ..
        }
    ));
    let c = r.succeed(c);
    assert!(
        matches!(only(&c), Action::DisableVersions { fingerprints, .. } if fingerprints == &vec![fp(1), fp(2)])
    );
    r.succeed(c);
    assert_eq!(
        regenerations(&r.m),
        vec![(K2, Purpose::Stage), (K1, Purpose::Retire)]
    );
}

#[test]
fn t6_t34_stage_failure_rolls_back_with_nothing_to_undo() {
    let mut r = Run::new(Mode::Scheduled, Options::default());
    let c = r.observe(on_key1());
    let c = r.answer(
        c[0].seq,
        StepResult::RegenerateFailed {
            error: "403".into(),
        },
    );
    assert!(is_finish(&c));
    let Outcome::RolledBack {
        cause: Cause::Failed { seq, reason, .. },
        discarded: None,
        ..
    } = r.outcome()
    else {
        panic!("{:?}", r.outcome())
    };
    assert_eq!((seq, reason.as_str()), (2, "403"));
}

#[test]
fn t9_rejected_key_rolls_back_without_discarding_an_unused_value() {
    let mut r = Run::new(Mode::Scheduled, Options::default());
    let c = r.observe(on_key1());
    let c = r.succeed(c);
    let c = r.answer(
        c[0].seq,
        StepResult::KeyRejected {
            reason: "403 after 60 s".into(),
        },
    );
    assert!(is_finish(&c));
    assert!(matches!(
        r.outcome(),
        Outcome::RolledBack {
            discarded: None,
            ..
        }
    ));
    assert!(
        !r.m.issued()
            .any(|c| matches!(c.action, Action::Bind { .. }))
    );
}

#[test]
fn t16_t29_t31_t32_t34_bind_failure_drains_then_binds_everyone_back() {
    let mut r = Run::new(Mode::Scheduled, Options::default());
    let c = r.observe(on_key1());
    let binds = r.succeed_until(c, |a| matches!(a, Action::Bind { .. }));
    // The datastore fails first; the other two binds are still in flight, so the
    // machine waits for them rather than racing a bind back against them.
    assert!(r.answer(binds[1].seq, failed("409")).is_empty());
    assert_eq!(r.m.phase(), Phase::RollingBack);
    assert!(r.answer(binds[0].seq, StepResult::Bound).is_empty());
    let back = r.answer(binds[2].seq, StepResult::Bound);
    assert_eq!(
        back.len(),
        3,
        "every consumer a bind was issued to, failed or not"
    );
    assert!(back.iter().all(|b| matches!(&b.action,
        Action::Bind { key: K1, fingerprint, .. } if *fingerprint == fp(1))));
    let checks = r.succeed(back);
    // Three verifications on key1 and one DisableVersions of the new value in Key Vault.
    assert_eq!(checks.len(), 4);
    let staged = r.m.view().target.unwrap();
    assert!(checks.iter().any(|c| c.action
        == Action::DisableVersions {
            consumer: kv("kv/storage-key"),
            fingerprints: vec![staged]
        }));
    assert!(
        checks
            .iter()
            .filter(|c| matches!(&c.action, Action::VerifyConsumer { key: K1, .. }))
            .count()
            == 3
    );
    let c = r.succeed(checks);
    assert!(matches!(
        only(&c),
        Action::Regenerate {
            key: K2,
            purpose: Purpose::Discard,
            before
        } if before.fingerprint == staged
    ));
    let c = r.succeed(c);
    assert!(is_finish(&c));
    let Outcome::RolledBack {
        cause: Cause::Failed { seq, .. },
        discarded: Some(K2),
        ..
    } = r.outcome()
    else {
        panic!("{:?}", r.outcome())
    };
    assert_eq!(seq, binds[1].seq);
    assert_eq!(r.m.phase(), Phase::RolledBack);
}

#[test]
fn t18_consumer_mismatch_rolls_back() {
    let mut r = Run::new(Mode::Scheduled, Options::default());
    let c = r.observe(on_key1());
    let verifies = r.succeed_until(c, |a| matches!(a, Action::VerifyConsumer { .. }));
    r.answer(verifies[0].seq, StepResult::ConsumerVerified);
    r.answer(
        verifies[1].seq,
        StepResult::ConsumerMismatch {
            reason: "holds old".into(),
        },
    );
    let back = r.answer(verifies[2].seq, StepResult::ConsumerVerified);
    assert!(
        back.iter()
            .all(|b| matches!(b.action, Action::Bind { key: K1, .. }))
    );
    assert_eq!(back.len(), 3);
}

#[test]
fn t30_a_failed_bind_back_parks() {
    let mut r = Run::new(Mode::Scheduled, Options::default());
    let c = r.observe(on_key1());
    let binds = r.succeed_until(c, |a| matches!(a, Action::Bind { .. }));
    r.answer(binds[0].seq, failed("500"));
    r.answer(binds[1].seq, StepResult::Bound);
    let back = r.answer(binds[2].seq, StepResult::Bound);
    r.answer(back[0].seq, StepResult::Bound);
    r.answer(back[1].seq, failed("vault down"));
    let c = r.answer(back[2].seq, StepResult::Bound);
    assert!(is_finish(&c));
    let Outcome::NeedsAttention {
        reason: Attention::RollbackIncomplete { key, not_back, .. },
        ..
    } = r.outcome()
    else {
        panic!("{:?}", r.outcome())
    };
    assert_eq!(key, K1);
    assert_eq!(
        not_back,
        vec![(ConsumerId("ws/ds-a".into()), "vault down".into())]
    );
    assert!(!regenerations(&r.m).contains(&(K2, Purpose::Discard)));
}

#[test]
fn t33_a_consumer_not_verified_back_parks_without_discarding() {
    let mut r = Run::new(Mode::Scheduled, Options::default());
    let c = r.observe(on_key1());
    let binds = r.succeed_until(c, |a| matches!(a, Action::Bind { .. }));
    r.answer(binds[0].seq, failed("500"));
    r.answer(binds[1].seq, StepResult::Bound);
    let back = r.answer(binds[2].seq, StepResult::Bound);
    let checks = r.succeed(back);
    let mut last = vec![];
    for c in &checks {
        let result = match c.action {
            Action::VerifyConsumer { .. } if c.action.consumer() == Some(&ds("ws/ds-b")) => {
                StepResult::ConsumerMismatch {
                    reason: "still new".into(),
                }
            }
            Action::DisableVersions { .. } => StepResult::DisableFailed {
                reason: "403".into(),
            },
            _ => success(c),
        };
        last = r.answer(c.seq, result);
    }
    assert!(is_finish(&last));
    assert!(matches!(
        r.outcome(),
        Outcome::NeedsAttention {
            reason: Attention::RollbackIncomplete { .. },
            ..
        }
    ));
    assert!(!regenerations(&r.m).contains(&(K2, Purpose::Discard)));
}

#[test]
fn t32_disable_failure_in_rollback_is_a_warning_and_discard_still_happens() {
    let mut r = Run::new(Mode::Scheduled, Options::default());
    let c = r.observe(on_key1());
    let c = r.succeed_until(c, |a| matches!(a, Action::VerifyConsumer { .. }));
    let mut next = vec![];
    for v in &c {
        next.extend(r.answer(v.seq, StepResult::ConsumerMismatch { reason: "x".into() }));
    }
    let checks = r.succeed(next);
    let mut last = vec![];
    for c in &checks {
        let result = match c.action {
            Action::DisableVersions { .. } => StepResult::DisableFailed {
                reason: "403".into(),
            },
            _ => success(c),
        };
        last = r.answer(c.seq, result);
    }
    assert!(matches!(
        only(&last),
        Action::Regenerate {
            purpose: Purpose::Discard,
            ..
        }
    ));
    r.succeed(last);
    let Outcome::RolledBack { warnings, .. } = r.outcome() else {
        panic!()
    };
    assert!(warnings[0].contains("403"), "{warnings:?}");
}

#[test]
fn t12_t13_t14_retire_backs_off_10s_doubling_to_5min_then_parks() {
    let mut r = Run::new(Mode::Scheduled, opts(0));
    let c = r.observe(on_key1());
    let mut c = r.succeed_until(c, |a| {
        matches!(
            a,
            Action::Regenerate {
                purpose: Purpose::Retire,
                ..
            }
        )
    });
    let first = c[0].action.clone();
    let mut waits = vec![];
    for attempt in 1..=8 {
        assert_eq!(only(&c), &first, "the same regenerate, same `before`");
        c = r.answer(
            c[0].seq,
            StepResult::RegenerateFailed {
                error: format!("503 #{attempt}"),
            },
        );
        if attempt == 8 {
            break;
        }
        let failed_at = t(r.now);
        let Action::WaitUntil { at } = only(&c) else {
            panic!("{c:?}")
        };
        waits.push((*at - failed_at).num_seconds());
        c = r.answer(c[0].seq, StepResult::Waited);
    }
    assert_eq!(waits, vec![10, 20, 40, 80, 160, 300, 300]);
    assert!(is_finish(&c));
    assert_eq!(
        r.outcome(),
        Outcome::NeedsAttention {
            reason: Attention::RetriesExhausted {
                key: K1,
                purpose: Purpose::Retire,
                attempts: 8,
                last_error: "503 #8".into()
            },
            in_doubt: vec![]
        }
    );
    assert!(r.outcome().to_string().contains("regenerate it by hand"));
    // Never rolled back: no bind back to key1.
    assert!(
        !r.m.issued()
            .any(|c| matches!(c.action, Action::Bind { key: K1, .. }))
    );
}

#[test]
fn retire_succeeds_after_a_retry() {
    let mut r = Run::new(Mode::Scheduled, opts(0));
    let c = r.observe(on_key1());
    let c = r.succeed_until(c, |a| {
        matches!(
            a,
            Action::Regenerate {
                purpose: Purpose::Retire,
                ..
            }
        )
    });
    let c = r.answer(
        c[0].seq,
        StepResult::RegenerateFailed {
            error: "503".into(),
        },
    );
    let c = r.succeed(c);
    let c = r.succeed(c);
    assert!(is_finish(&c));
    assert!(matches!(r.outcome(), Outcome::Completed { .. }));
}

#[test]
fn t12_t14_discard_and_revoke_retry_like_retire() {
    let mut r = Run::new(Mode::Scheduled, Options::default());
    let c = r.observe(on_key1());
    let c = r.succeed(c);
    let binds = r.succeed(c);
    let mut back = vec![];
    for b in &binds {
        back.extend(r.answer(b.seq, failed("x")));
    }
    let checks = r.succeed(back);
    let c = r.succeed(checks);
    assert!(matches!(
        only(&c),
        Action::Regenerate {
            purpose: Purpose::Discard,
            ..
        }
    ));
    let w = r.answer(
        c[0].seq,
        StepResult::RegenerateFailed {
            error: "503".into(),
        },
    );
    assert!(matches!(only(&w), Action::WaitUntil { .. }));
    let c = r.succeed(w);
    assert!(matches!(
        only(&c),
        Action::Regenerate {
            purpose: Purpose::Discard,
            ..
        }
    ));

    let mut r = Run::new(
        Mode::Leaked {
            key: K2,
            revoke_first: false,
        },
        Options {
            retire_attempts: 1,
            ..Options::default()
        },
    );
    let c = r.observe(on_key1());
    let c = r.answer(
        c[0].seq,
        StepResult::RegenerateFailed {
            error: "403".into(),
        },
    );
    assert!(is_finish(&c));
    assert!(
        r.outcome()
            .to_string()
            .contains("the leaked key is still valid")
    );
}

#[test]
fn incident_rollback_parks_saying_the_leaked_key_is_in_use() {
    let mode = Mode::Leaked {
        key: K1,
        revoke_first: false,
    };
    let mut r = Run::new(mode, Options::default());
    let c = r.observe(on_key1());
    let binds = r.succeed(c);
    let mut back = vec![];
    for b in &binds {
        back.extend(r.answer(b.seq, failed("x")));
    }
    let checks = r.succeed(back);
    let c = r.succeed(checks);
    // The existing standby was used, so it is discarded too.
    assert!(matches!(
        only(&c),
        Action::Regenerate {
            key: K2,
            purpose: Purpose::Discard,
            ..
        }
    ));
    r.succeed(c);
    let Outcome::NeedsAttention {
        reason: Attention::LeakedKeyInUse { key, discarded, .. },
        ..
    } = r.outcome()
    else {
        panic!("{:?}", r.outcome())
    };
    assert_eq!((key, discarded), (K1, Some(K2)));
    assert!(
        r.outcome()
            .to_string()
            .contains("leaked key1 is still in use")
    );

    // The standby does not work: nothing changes and the leak is still open.
    let mut r = Run::new(mode, Options::default());
    let c = r.observe(on_key1());
    r.answer(
        c[0].seq,
        StepResult::KeyRejected {
            reason: "403".into(),
        },
    );
    assert!(matches!(
        r.outcome(),
        Outcome::NeedsAttention {
            reason: Attention::LeakedKeyInUse {
                discarded: None,
                ..
            },
            ..
        }
    ));
    assert_eq!(r.m.issued().len(), 3);
}

#[test]
fn t28_disable_failure_in_cleanup_completes_with_a_warning() {
    let mut r = Run::new(
        Mode::Leaked {
            key: K2,
            revoke_first: false,
        },
        Options::default(),
    );
    let c = r.observe(on_key1());
    let c = r.succeed(c);
    let c = r.answer(
        c[0].seq,
        StepResult::DisableFailed {
            reason: "forbidden".into(),
        },
    );
    assert!(is_finish(&c));
    let Outcome::Completed { warnings, .. } = r.outcome() else {
        panic!()
    };
    assert!(warnings.iter().any(|w| w.contains("forbidden")));
}

fn reobserve(r: &mut Run, key1: Fingerprint, key2: Fingerprint) -> Vec<Command> {
    r.now += 1;
    let mut observation = on_key1();
    observation.key1.fingerprint = key1;
    observation.key2.fingerprint = key2;
    r.m.handle(&Event::Reobserved {
        at: t(r.now),
        observation,
    })
    .unwrap()
}

#[test]
fn t35_reobserved_matching_or_in_doubt_changes_nothing() {
    let mut r = Run::new(Mode::Scheduled, Options::default());
    let c = r.observe(on_key1());
    // The stage is in doubt: key2 may or may not have changed.
    let before = r.m.outstanding();
    assert!(reobserve(&mut r, fp(1), fp(77)).is_empty());
    assert!(reobserve(&mut r, fp(1), fp(2)).is_empty());
    assert_eq!(r.m.outstanding(), before);
    let c = r.answer(
        c[0].seq,
        StepResult::Regenerated {
            fingerprint: fp(77),
            created: None,
        },
    );
    assert!(reobserve(&mut r, fp(1), fp(77)).is_empty());
    assert_eq!(r.m.phase(), Phase::VerifyingKey);
    assert_eq!(r.m.outstanding(), c);
}

#[test]
fn t36_active_key_changed_before_commit_parks_and_lists_what_is_in_doubt() {
    let mut r = Run::new(Mode::Scheduled, Options::default());
    let c = r.observe(on_key1());
    let binds = r.succeed_until(c, |a| matches!(a, Action::Bind { .. }));
    r.answer(binds[0].seq, StepResult::Bound);
    let staged = r.m.view().target.unwrap();
    let c = reobserve(&mut r, fp(99), staged);
    assert!(is_finish(&c));
    let Outcome::NeedsAttention {
        reason: Attention::Drift { drifts, detail },
        in_doubt,
    } = r.outcome()
    else {
        panic!("{:?}", r.outcome())
    };
    assert_eq!(
        drifts,
        vec![Drift {
            key: K1,
            expected: fp(1),
            found: fp(99)
        }]
    );
    assert!(detail.contains("nothing can roll back"), "{detail}");
    assert_eq!(in_doubt, binds[1..].to_vec());
    assert_eq!(
        r.m.outstanding(),
        c,
        "abandoned commands are not outstanding"
    );
}

#[test]
fn t36_new_key_changed_after_commit_parks() {
    let mut r = Run::new(Mode::Scheduled, opts(3600));
    let c = r.observe(on_key1());
    let c = r.succeed_until(c, |a| matches!(a, Action::WaitUntil { .. }));
    assert_eq!(r.m.phase(), Phase::Grace);
    let staged = r.m.view().target.unwrap();
    assert!(reobserve(&mut r, fp(1), staged).is_empty());
    let c2 = reobserve(&mut r, fp(1), fp(55));
    assert!(is_finish(&c2), "{c2:?}");
    let Outcome::NeedsAttention { in_doubt, .. } = r.outcome() else {
        panic!()
    };
    assert_eq!(in_doubt, c, "the grace wait was in flight");

    // The old key changed during grace: someone else is regenerating keys.
    let mut r = Run::new(Mode::Scheduled, opts(3600));
    let c = r.observe(on_key1());
    r.succeed_until(c, |a| matches!(a, Action::WaitUntil { .. }));
    let staged = r.m.view().target.unwrap();
    assert!(is_finish(&reobserve(&mut r, fp(98), staged)));
    assert!(
        r.outcome()
            .to_string()
            .contains("someone else regenerated it")
    );
}

#[test]
fn t37_staged_key_changed_before_commit_rolls_back() {
    let mut r = Run::new(Mode::Scheduled, Options::default());
    let c = r.observe(on_key1());
    let binds = r.succeed_until(c, |a| matches!(a, Action::Bind { .. }));
    assert!(reobserve(&mut r, fp(1), fp(66)).is_empty(), "drains first");
    assert_eq!(r.m.phase(), Phase::RollingBack);
    let mut back = vec![];
    for b in &binds {
        back.extend(r.answer(b.seq, failed("fingerprint differs")));
    }
    assert_eq!(back.len(), 3);
    let checks = r.succeed(back);
    let c = r.succeed(checks);
    // The discard starts from what Azure holds now.
    assert!(
        matches!(only(&c), Action::Regenerate { key: K2, purpose: Purpose::Discard, before } if before.fingerprint == fp(66))
    );
    r.succeed(c);
    assert!(matches!(
        r.outcome(),
        Outcome::RolledBack {
            cause: Cause::Drift { .. },
            ..
        }
    ));
}

#[test]
fn t38_a_key_already_retired_changing_again_is_noted_and_ignored() {
    let mode = Mode::Leaked {
        key: K1,
        revoke_first: false,
    };
    let mut r = Run::new(mode, Options::default());
    let c = r.observe(on_key1());
    let c = r.succeed_until(c, |a| matches!(a, Action::DisableVersions { .. }));
    assert!(reobserve(&mut r, fp(12345), fp(2)).is_empty());
    assert_eq!(r.m.phase(), Phase::Cleanup);
    assert_eq!(r.m.outstanding(), c);
    assert!(r.m.view().timeline.iter().any(|e| matches!(&e.what,
        Happening::Noted { note: Note::Reobserved { drifts } } if drifts.len() == 1)));
}

#[test]
fn reobserved_before_the_first_observation_is_a_no_op() {
    let mut r = Run::new(Mode::Scheduled, Options::default());
    assert!(reobserve(&mut r, fp(1), fp(2)).is_empty());
    assert_eq!(r.m.outstanding().len(), 1);
    assert!(!r.observe(on_key1()).is_empty());
}

#[test]
fn t39_t40_rejected_events_change_nothing() {
    let mut r = Run::new(Mode::Scheduled, Options::default());
    let c = r.observe(on_key1());
    let before = r.m.clone();
    let bad = [
        (
            Event::Answer {
                seq: 0,
                at: t(9),
                result: StepResult::Bound,
            },
            HandleError::UnknownSeq { seq: 0, last: 2 },
        ),
        (
            Event::Answer {
                seq: 3,
                at: t(9),
                result: StepResult::Bound,
            },
            HandleError::UnknownSeq { seq: 3, last: 2 },
        ),
        (
            Event::Answer {
                seq: 1,
                at: t(9),
                result: StepResult::Observed(on_key1()),
            },
            HandleError::AlreadyAnswered { seq: 1 },
        ),
        (
            Event::Answer {
                seq: c[0].seq,
                at: t(9),
                result: StepResult::Bound,
            },
            HandleError::WrongResult {
                seq: 2,
                command: "regenerate",
                result: "bound",
            },
        ),
    ];
    for (event, expected) in bad {
        assert_eq!(r.m.handle(&event), Err(expected));
        assert_eq!(r.m, before);
    }
    let mut r = Run::new(Mode::Scheduled, Options::default());
    let mut obs = on_key1();
    obs.shared_key_access = false;
    let finish = r.observe(obs);
    let done = r.m.clone();
    assert_eq!(
        r.m.handle(&Event::Answer {
            seq: finish[0].seq,
            at: t(9),
            result: StepResult::Committed
        }),
        Err(HandleError::Finished)
    );
    assert_eq!(
        r.m.handle(&Event::Reobserved {
            at: t(9),
            observation: on_key1()
        }),
        Err(HandleError::Finished)
    );
    assert_eq!(r.m, done);
}

#[test]
fn replay_reproduces_state_commands_and_outstanding() {
    let mut r = Run::new(Mode::Scheduled, Options::default());
    let mut events = vec![];
    let mut c = r.observe(on_key1());
    events.push(Event::Answer {
        seq: 1,
        at: t(1),
        result: StepResult::Observed(on_key1()),
    });
    for _ in 0..3 {
        let answers: Vec<Event> = c
            .iter()
            .take(2)
            .map(|cmd| Event::Answer {
                seq: cmd.seq,
                at: t(50 + i64::from(cmd.seq)),
                result: success(cmd),
            })
            .collect();
        let mut next = vec![];
        for e in &answers {
            next.extend(r.m.handle(e).unwrap());
        }
        events.extend(answers);
        c = if next.is_empty() {
            r.m.outstanding()
        } else {
            next
        };
    }
    let replayed = Machine::replay(Mode::Scheduled, Options::default(), &events).unwrap();
    assert_eq!(replayed, r.m);
    assert_eq!(replayed.outstanding(), r.m.outstanding());
    assert!(!replayed.outstanding().is_empty());
    assert!(replayed.issued().eq(r.m.issued()));

    let mut bad = events.clone();
    bad.push(events[1].clone());
    let err = Machine::replay(Mode::Scheduled, Options::default(), &bad).unwrap_err();
    assert_eq!(err.index, events.len());
}

#[test]
fn view_tracks_consumers_and_timeline() {
    let mut r = Run::new(Mode::Scheduled, Options::default());
    let c = r.observe(on_key1());
    let binds = r.succeed_until(c, |a| matches!(a, Action::Bind { .. }));
    r.answer(binds[0].seq, StepResult::Bound);
    let view = r.m.view();
    assert_eq!(view.phase, Phase::Binding);
    assert_eq!(view.route, Some(Route::Scheduled));
    assert_eq!(view.consumers[0].status, ConsumerStatus::Bound { key: K2 });
    assert_eq!(
        view.consumers[1].status,
        ConsumerStatus::Binding { key: K2 }
    );
    assert_eq!(view.consumers[0].initially, Holding::Key(K1));
    assert_eq!(view.timeline[0].at, None, "Observe precedes every event");
    assert!(matches!(view.timeline[0].what, Happening::Issued { .. }));
    assert!(view.timeline.iter().any(|e| matches!(
        &e.what,
        Happening::Noted {
            note: Note::Decided {
                active: K1,
                standby: K2,
                ..
            }
        }
    )));
    let json = serde_json::to_string(&view).unwrap();
    assert!(json.contains("\"phase\":\"binding\""), "{json}");
}

#[test]
fn commands_and_events_round_trip_through_json() {
    let cmds: Vec<Command> = {
        let mut r = Run::new(Mode::Scheduled, opts(5));
        let c = r.observe(on_key1());
        r.succeed_until(c, |a| matches!(a, Action::Finish { .. }));
        r.m.issued().cloned().collect()
    };
    assert!(cmds.len() > 8);
    for c in &cmds {
        let json = serde_json::to_string(c).unwrap();
        assert_eq!(
            &serde_json::from_str::<Command>(&json).unwrap(),
            c,
            "{json}"
        );
    }
    let regen = serde_json::to_value(&cmds[1]).unwrap();
    assert_eq!(regen["action"]["kind"], "regenerate");
    assert_eq!(regen["action"]["key"], "key2");
    assert_eq!(regen["action"]["before"]["fingerprint"], fp(2).to_hex());
    let options = serde_json::to_value(opts(90)).unwrap();
    assert_eq!(options["grace_ms"], 90_000);
    assert_eq!(
        serde_json::from_value::<Options>(options).unwrap(),
        opts(90)
    );
}

#[test]
fn backoff_doubles_from_10s_and_caps_at_5min() {
    let secs: Vec<i64> = (1..=9).map(|n| retry_backoff(n).num_seconds()).collect();
    assert_eq!(secs, vec![10, 20, 40, 80, 160, 300, 300, 300, 300]);
    assert_eq!(retry_backoff(u32::MAX), RETRY_MAX_BACKOFF);
}
