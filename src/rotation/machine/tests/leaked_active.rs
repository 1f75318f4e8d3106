//! The leaked key is the one in use: swap to the existing standby (no ML workspace),
//! stage the standby first (an ML workspace, whose resync takes the newest key), or
//! with `revoke_first` kill the leaked value and bind consumers to its fresh one.

use super::restart::reobserve;
use super::*;

const LEAKED_K1: Mode = Mode::Leaked {
    key: K1,
    revoke_first: false,
};
const REVOKE_K1: Mode = Mode::Leaked {
    key: K1,
    revoke_first: true,
};

/// What `success` answers for `Regenerate(key1, revoke)`: the fresh value.
fn fresh_k1() -> Fingerprint {
    fp(100 + Purpose::Revoke as u32)
}

/// What `success` answers for `Regenerate(key2, stage)`.
fn staged_k2() -> Fingerprint {
    fp(110 + Purpose::Stage as u32)
}

fn rejected() -> StepResult {
    StepResult::KeyRejected {
        reason: why("403 AuthenticationFailed"),
    }
}

#[test]
fn t3_t24_t26_leaked_active_swaps_to_existing_standby_and_retires_at_once() {
    let mut r = Run::new(LEAKED_K1, opts(3600));
    let c = r.observe(on_key1());
    assert_eq!(
        r.m.view().route,
        Some(Route::LeakedActive {
            revoke_first: false,
            stage_standby: false
        }),
        "no workspace: the fast path"
    );
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
fn t2_t5_t7_t24_t26_a_workspace_consumer_makes_the_leaked_active_route_stage_the_standby() {
    let mut r = Run::new(LEAKED_K1, opts(3600));
    let c = r.observe(with_workspace());
    assert_eq!(
        r.m.view().route,
        Some(Route::LeakedActive {
            revoke_first: false,
            stage_standby: true
        })
    );
    // The existing standby may be older than the leaked key, and a workspace resync
    // takes the newest: the standby is regenerated so the newest is the one to move to.
    assert!(
        matches!(only(&c), Action::Regenerate { key: K2, purpose: Purpose::Stage, before } if before.fingerprint == fp(2))
    );
    assert_eq!(r.m.phase(), Phase::Staging);
    let c = r.succeed(c);
    assert!(
        matches!(only(&c), Action::VerifyKey { key: K2, fingerprint, .. } if *fingerprint == staged_k2())
    );
    let binds = r.succeed(c);
    // Every consumer but the workspace first; its resync comes once they are verified.
    assert_eq!(binds.len(), 3);
    assert!(binds.iter().all(|b| matches!(&b.action,
        Action::Bind { consumer, key: K2, fingerprint } if *fingerprint == staged_k2() && *consumer != ws("ws"))));
    let verifies = r.succeed(binds);
    let resync = r.succeed(verifies);
    assert!(
        matches!(only(&resync), Action::Bind { consumer, key: K2, fingerprint } if *consumer == ws("ws") && *fingerprint == staged_k2())
    );
    let c = r.succeed_until(resync, |a| matches!(a, Action::Commit));
    let c = r.succeed(c);
    assert!(
        matches!(
            only(&c),
            Action::Regenerate {
                key: K1,
                purpose: Purpose::Retire,
                ..
            }
        ),
        "no grace in an incident"
    );
    let c = r.succeed(c);
    // Only the leaked value: the standby's old value never leaked.
    assert_eq!(
        only(&c),
        &Action::DisableVersions {
            consumer: kv("kv/storage-key"),
            fingerprints: vec![fp(1)]
        }
    );
    r.succeed(c);
    assert!(matches!(r.outcome(), Outcome::Completed { active: K2, .. }));
    assert_eq!(
        regenerations(&r.m),
        vec![(K2, Purpose::Stage), (K1, Purpose::Retire)]
    );
    let view = r.m.view();
    assert_eq!(view.target, Some(staged_k2()));
    assert!(
        view.consumers
            .iter()
            .all(|c| c.status == ConsumerStatus::Verified { key: K2 })
    );
}

#[test]
fn t9_t34a_a_staged_standby_that_fails_verification_is_discarded_and_the_leak_reported() {
    let mut r = Run::new(LEAKED_K1, Options::default());
    let c = r.observe(with_workspace());
    let c = r.succeed(c);
    let c = r.answer(c[0].seq, rejected());
    assert!(matches!(
        only(&c),
        Action::Regenerate {
            key: K2,
            purpose: Purpose::Discard,
            ..
        }
    ));
    r.succeed(c);
    assert!(
        !r.m.issued()
            .any(|c| matches!(c.action, Action::Bind { .. }))
    );
    let Outcome::NeedsAttention {
        reason: Attention::LeakedKeyInUse { key, discarded, .. },
        ..
    } = r.outcome()
    else {
        panic!("{:?}", r.outcome())
    };
    assert_eq!((key, discarded), (K1, Some(K2)));
}

#[test]
fn t3_t8_t11_t7_t26_revoke_first_binds_consumers_to_the_revoked_keys_fresh_value() {
    let mut r = Run::new(REVOKE_K1, legacy());
    let c = r.observe(with_workspace());
    assert_eq!(
        r.m.view().route,
        Some(Route::LeakedActive {
            revoke_first: true,
            stage_standby: false
        }),
        "revoke_first never stages: consumers do not move to the standby"
    );
    // The standby is checked first, so the one working key is never killed while
    // the other does not work; consumers will not move to it.
    assert!(
        matches!(only(&c), Action::VerifyKey { key: K2, fingerprint, .. } if *fingerprint == fp(2))
    );
    assert_eq!(
        r.m.view().target,
        None,
        "nothing to move to before the revoke"
    );
    let c = r.succeed(c);
    assert!(
        matches!(only(&c), Action::Regenerate { key: K1, purpose: Purpose::Revoke, before } if before.fingerprint == fp(1))
    );
    let c = r.succeed(c);
    // A fresh key can take a while to be accepted: verified before anyone binds to it.
    assert_eq!(
        only(&c),
        &Action::VerifyKey {
            key: K1,
            fingerprint: fresh_k1(),
            budget: Options::default().verify_budget,
        }
    );
    assert_eq!(r.m.phase(), Phase::VerifyingKey);
    assert_eq!(r.m.view().target, Some(fresh_k1()));
    let binds = r.succeed(c);
    assert_eq!(binds.len(), 4);
    assert!(binds.iter().all(|b| matches!(&b.action,
        Action::Bind { key: K1, fingerprint, .. } if *fingerprint == fresh_k1())));
    let c = r.succeed_until(binds, |a| matches!(a, Action::Commit));
    let c = r.succeed(c);
    // The leaked (pre-revoke) value is the one whose versions are disabled.
    assert!(
        matches!(only(&c), Action::DisableVersions { fingerprints, .. } if fingerprints == &vec![fp(1)])
    );
    r.succeed(c);
    assert!(matches!(r.outcome(), Outcome::Completed { active: K1, .. }));
    assert_eq!(regenerations(&r.m), vec![(K1, Purpose::Revoke)]);
    let view = r.m.view();
    assert_eq!((view.active, view.standby), (Some(K1), Some(K2)));
    assert!(
        view.consumers
            .iter()
            .all(|c| c.status == ConsumerStatus::Verified { key: K1 })
    );
    let text = r.outcome().to_string();
    assert!(
        text.contains(&format!(
            "consumers on key1 (its new value {}, the leaked {} revoked)",
            fresh_k1(),
            fp(1)
        )),
        "{text}"
    );
}

#[test]
fn t11a_t11b_t11c_a_rejected_fresh_value_is_retried_then_parks_without_binding() {
    let options = Options {
        retire_attempts: 3,
        ..legacy()
    };
    let mut r = Run::new(REVOKE_K1, options);
    let c = r.observe(on_key1());
    let c = r.succeed_until(c, |a| matches!(a, Action::VerifyKey { key: K1, .. }));
    let verify = only(&c).clone();
    // Nothing can roll back after the revoke: a backoff instead of a rollback.
    let w = r.answer(c[0].seq, rejected());
    assert_eq!(
        only(&w),
        &Action::WaitUntil {
            at: t(r.now) + TimeDelta::seconds(10)
        }
    );
    assert_eq!(r.m.phase(), Phase::VerifyingKey);
    let c = r.succeed(w);
    assert_eq!(only(&c), &verify, "the same fresh value again");
    let w = r.answer(c[0].seq, rejected());
    assert_eq!(
        only(&w),
        &Action::WaitUntil {
            at: t(r.now) + TimeDelta::seconds(20)
        }
    );
    let c = r.succeed(w);
    let c = r.answer(c[0].seq, rejected());
    assert!(is_finish(&c), "the third rejection parks: {c:?}");
    assert!(
        !r.m.issued()
            .any(|c| matches!(c.action, Action::Bind { .. }))
    );
    let outcome = r.outcome();
    let Outcome::NeedsAttention {
        reason:
            Attention::KeyNotAccepted {
                key,
                fingerprint,
                attempts,
                ..
            },
        ..
    } = &outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!((*key, *fingerprint, *attempts), (K1, fresh_k1(), 3));
    assert!(
        outcome
            .to_string()
            .contains("or to key2, which this rotation did not touch"),
        "{outcome}"
    );

    // Accepted on the second try: consumers are bound to it.
    let mut r = Run::new(REVOKE_K1, options);
    let c = r.observe(on_key1());
    let c = r.succeed_until(c, |a| matches!(a, Action::VerifyKey { key: K1, .. }));
    let w = r.answer(c[0].seq, rejected());
    let c = r.succeed(w);
    let binds = r.answer(c[0].seq, StepResult::KeyVerified);
    assert_eq!(binds.len(), 3);
    assert!(binds.iter().all(|b| matches!(&b.action,
        Action::Bind { key: K1, fingerprint, .. } if *fingerprint == fresh_k1())));
}

#[test]
fn t20_t21_t22_revoke_first_retries_binds_forward_then_parks() {
    let options = Options {
        retire_attempts: 3,
        ..legacy()
    };
    let mut r = Run::new(REVOKE_K1, options);
    let c = r.observe(on_key1());
    let binds = r.succeed_until(c, |a| matches!(a, Action::Bind { .. }));
    // One bind fails: no rollback (the leaked value is dead), a backoff instead.
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
        matches!(only(&c), Action::Bind { consumer, key: K1, fingerprint } if *consumer == kv("kv/storage-key") && *fingerprint == fresh_k1())
    );
    let c = r.succeed(c);
    // All three are bound now, so all three are verified.
    assert_eq!(c.len(), 3);
    // A verification fails: re-bind that one after 20 s.
    r.answer(c[0].seq, StepResult::ConsumerVerified);
    r.answer(c[1].seq, StepResult::ConsumerVerified);
    let w = r.answer(
        c[2].seq,
        StepResult::ConsumerMismatch {
            reason: why("old value"),
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
    assert_eq!((key, attempts), (K1, 3));
    assert_eq!(consumers, vec![(ds("ws/ds-b").id, why("still throttled"))]);
}

#[test]
fn t37_before_the_revoke_a_changed_standby_rolls_back_and_reports_the_leak() {
    let mut r = Run::new(REVOKE_K1, legacy());
    let c = r.observe(on_key1());
    assert!(reobserve(&mut r, fp(1), fp(66)).is_empty(), "drains first");
    let c = r.answer(c[0].seq, StepResult::KeyVerified);
    assert!(is_finish(&c), "{c:?}");
    assert_eq!(regenerations(&r.m), vec![], "nothing was revoked");
    assert!(matches!(
        r.outcome(),
        Outcome::NeedsAttention {
            reason: Attention::LeakedKeyInUse {
                key: K1,
                cause: Cause::Drift { .. },
                ..
            },
            ..
        }
    ));
}

#[test]
fn t36_t38_after_the_revoke_only_the_revoked_key_changing_parks() {
    // The standby changing is noted and ignored: consumers never move to it.
    let mut r = Run::new(REVOKE_K1, legacy());
    let c = r.observe(on_key1());
    let binds = r.succeed_until(c, |a| matches!(a, Action::Bind { .. }));
    assert!(reobserve(&mut r, fresh_k1(), fp(77)).is_empty());
    assert_eq!(r.m.phase(), Phase::Binding);
    r.succeed_until(binds, |a| matches!(a, Action::Finish { .. }));
    assert!(matches!(r.outcome(), Outcome::Completed { active: K1, .. }));

    // The fresh value changing again breaks what consumers are moving to.
    let mut r = Run::new(REVOKE_K1, legacy());
    let c = r.observe(on_key1());
    let binds = r.succeed_until(c, |a| matches!(a, Action::Bind { .. }));
    let c = reobserve(&mut r, fp(88), fp(2));
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
            expected: fresh_k1(),
            found: fp(88)
        }]
    );
    assert!(detail.contains("changed again outside keyflip"), "{detail}");
    assert_eq!(in_doubt, binds);
}

#[test]
fn both_routes_replay_to_the_same_machine_at_every_step() {
    for (mode, obs) in [(LEAKED_K1, with_workspace()), (REVOKE_K1, with_workspace())] {
        let mut r = Run::new(mode, legacy());
        let mut c = r.observe(obs);
        while !r.m.is_finished() {
            assert_eq!(r.replayed(), r.m, "{mode:?}");
            assert_eq!(r.replayed().outstanding(), r.m.outstanding());
            let next = c.remove(0);
            c.extend(r.answer(next.seq, success(&next)));
        }
        let replayed = r.replayed();
        assert_eq!(replayed, r.m);
        assert!(replayed.issued().eq(r.m.issued()));
        assert!(matches!(
            replayed.outcome(),
            Some(Outcome::Completed { .. })
        ));
    }
}

#[test]
fn a_route_journaled_before_stage_standby_existed_reads_as_the_fast_path() {
    let old: Route =
        serde_json::from_str(r#"{"route":"leaked_active","revoke_first":false}"#).unwrap();
    assert_eq!(
        old,
        Route::LeakedActive {
            revoke_first: false,
            stage_standby: false
        }
    );
    assert!(!old.stages());
    let now = Route::LeakedActive {
        revoke_first: false,
        stage_standby: true,
    };
    let json = serde_json::to_value(now).unwrap();
    assert_eq!(json["stage_standby"], true);
    assert_eq!(serde_json::from_value::<Route>(json).unwrap(), now);
    assert!(now.stages());
    assert!(!now.revoke_first());
}
