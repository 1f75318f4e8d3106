//! Incident routes: leaked standby, both keys, and what an incident rollback leaves
//! behind. The leaked-active routes are in `leaked_active`.

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
    let split = || {
        observation(vec![
            (kv("a"), Holding::Key(K1)),
            (ds("b"), Holding::Key(K2)),
        ])
    };
    // Read before any effect (without revoke first, and a revoke first journaled
    // before the revoke came first): refused, nothing changed.
    for (revoke_first, options) in [(false, Options::default()), (true, legacy())] {
        let mut r = Run::new(
            Mode::Leaked {
                key: K2,
                revoke_first,
            },
            options,
        );
        r.observe(split());
        assert!(
            matches!(r.outcome(), Outcome::Refused { reasons } if matches!(reasons[0], RefusalReason::ConsumersSplit { .. }))
        );
    }
    // A revoke first reads the consumers only after the revoke, so the split parks
    // there, naming `--adopt`.
    let mut r = Run::new(
        Mode::Leaked {
            key: K2,
            revoke_first: true,
        },
        Options::default(),
    );
    let c = r.observe(split());
    let c = r.succeed(c);
    let mut after = split();
    after.key2.fingerprint = fp(100 + 10 * (K2 as u32) + Purpose::Revoke as u32);
    r.answer(c[0].seq, StepResult::Observed(after));
    assert!(matches!(
        r.outcome(),
        Outcome::NeedsAttention { reason: Attention::NotMovedAfterRevoke { reasons, .. }, .. }
            if matches!(reasons[0], RefusalReason::ConsumersSplit { .. })
    ));
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
    r.answer(c[0].seq, StepResult::KeyRejected { reason: why("403") });
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
            reason: why("forbidden"),
        },
    );
    assert!(is_finish(&c));
    let Outcome::Completed { warnings, .. } = r.outcome() else {
        panic!()
    };
    assert!(
        warnings
            .iter()
            .any(|w| w.kind == WarningKind::VersionsNotDisabled && w.message.contains("forbidden"))
    );
}
