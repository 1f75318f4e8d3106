//! Rollback before commit, and forward-only retries with backoff after it.

use super::*;

#[test]
fn t6_t34_stage_failure_rolls_back_with_nothing_to_undo() {
    let mut r = Run::new(Mode::Scheduled, Options::default());
    let c = r.observe(on_key1());
    let c = r.answer(c[0].seq, StepResult::RegenerateFailed { error: why("403") });
    assert!(is_finish(&c));
    let Outcome::RolledBack {
        cause: Cause::Failed { seq, reason, .. },
        discarded: None,
        ..
    } = r.outcome()
    else {
        panic!("{:?}", r.outcome())
    };
    assert_eq!((seq, reason), (2, why("403")));
}

#[test]
fn t9_t34a_rejected_key_rolls_back_and_discards_the_staged_value() {
    let mut r = Run::new(Mode::Scheduled, Options::default());
    let c = r.observe(on_key1());
    let c = r.succeed(c);
    let c = r.answer(
        c[0].seq,
        StepResult::KeyRejected {
            reason: why("403 after 60 s"),
        },
    );
    let staged = r.m.view().target;
    assert!(
        matches!(only(&c), Action::Regenerate { key: K2, purpose: Purpose::Discard, before }
            if Some(before.fingerprint) == staged),
        "{c:?}"
    );
    assert!(
        !r.m.issued()
            .any(|c| matches!(c.action, Action::Bind { .. }))
    );
    let c = r.answer(
        c[0].seq,
        StepResult::Regenerated {
            fingerprint: fp(23),
            created: Some(t(5)),
        },
    );
    assert!(is_finish(&c));
    assert!(matches!(
        r.outcome(),
        Outcome::RolledBack {
            discarded: Some(K2),
            ..
        }
    ));
}

#[test]
fn t9_t34_leaked_active_rejected_standby_is_not_discarded_it_was_not_staged() {
    let mut r = Run::new(
        Mode::Leaked {
            key: K1,
            revoke_first: false,
        },
        Options::default(),
    );
    let c = r.observe(on_key1());
    let c = r.answer(c[0].seq, StepResult::KeyRejected { reason: why("403") });
    assert!(is_finish(&c));
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
            reason: why("holds old"),
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
    assert_eq!(not_back, vec![(ds("ws/ds-a").id, why("vault down"))]);
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
                    reason: why("still new"),
                }
            }
            Action::DisableVersions { .. } => StepResult::DisableFailed { reason: why("403") },
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
        next.extend(r.answer(v.seq, StepResult::ConsumerMismatch { reason: why("x") }));
    }
    let checks = r.succeed(next);
    let mut last = vec![];
    for c in &checks {
        let result = match c.action {
            Action::DisableVersions { .. } => StepResult::DisableFailed { reason: why("403") },
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
    assert_eq!(warnings[0].kind, WarningKind::VersionsNotDisabled);
    assert!(warnings[0].message.contains("403"), "{warnings:?}");
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
                error: why(&format!("503 #{attempt}")),
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
                last_error: why("503 #8")
            },
            in_doubt: vec![]
        }
    );
    // The advice names the command that regenerates the old key without touching a
    // consumer (the leaked-standby route).
    assert!(
        r.outcome().to_string().contains(
            "`keyflip rotate now PLAN --leaked key1` regenerates it without touching a consumer"
        ),
        "{}",
        r.outcome()
    );
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
    let c = r.answer(c[0].seq, StepResult::RegenerateFailed { error: why("503") });
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
    let w = r.answer(c[0].seq, StepResult::RegenerateFailed { error: why("503") });
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
    let c = r.answer(c[0].seq, StepResult::RegenerateFailed { error: why("403") });
    assert!(is_finish(&c));
    assert!(
        r.outcome()
            .to_string()
            .contains("the leaked key2 is still valid: fix the cause and run `keyflip rotate now PLAN --leaked key2` again")
    );
}
