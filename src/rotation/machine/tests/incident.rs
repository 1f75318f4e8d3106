//! Incident routes: leaked standby, leaked active (with and without
//! `revoke_first`), both keys, and what an incident rollback leaves behind.

use super::*;

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
