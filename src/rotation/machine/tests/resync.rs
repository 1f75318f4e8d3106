//! An ML workspace's resync takes the key Azure picks and cannot be steered back, so
//! it comes after every other consumer is bound and verified; before it a failure
//! rolls back with the workspace untouched, after it a failure goes forward.

use super::restart::reobserve;
use super::*;

/// What `success` answers for `Regenerate(key2, stage)`.
fn staged_k2() -> Fingerprint {
    fp(110 + Purpose::Stage as u32)
}

fn touches_workspace(c: &Command) -> bool {
    c.action.consumer() == Some(&ws("ws"))
}

/// A scheduled swap with a workspace, up to its first round of verifications.
fn at_first_verifications(options: Options) -> (Run, Vec<Command>) {
    let mut r = Run::new(Mode::Scheduled, options);
    let c = r.observe(with_workspace());
    let binds = r.succeed_until(c, |a| matches!(a, Action::Bind { .. }));
    assert_eq!(binds.len(), 3, "{binds:#?}");
    assert!(!binds.iter().any(touches_workspace), "{binds:#?}");
    let verifies = r.succeed(binds);
    assert_eq!(verifies.len(), 3);
    (r, verifies)
}

/// Answers the first round's verifications; returns the resync.
fn at_resync(options: Options) -> (Run, Command) {
    let (mut r, verifies) = at_first_verifications(options);
    let c = r.succeed(verifies);
    assert!(
        matches!(only(&c), Action::Bind { consumer, key: K2, fingerprint }
            if *consumer == ws("ws") && *fingerprint == staged_k2()),
        "{c:#?}"
    );
    (r, c[0].clone())
}

fn three_attempts() -> Options {
    Options {
        retire_attempts: 3,
        ..opts(3600)
    }
}

#[test]
fn t17_t19_t19a_the_resync_comes_after_every_other_consumer_is_verified() {
    let (mut r, resync) = at_resync(opts(3600));
    assert_eq!(r.m.phase(), Phase::Binding);
    let view = r.m.view();
    for c in view.consumers.iter().filter(|c| c.consumer != ws("ws")) {
        assert_eq!(c.status, ConsumerStatus::Verified { key: K2 });
    }
    let c = r.answer(resync.seq, StepResult::Bound);
    assert!(
        matches!(only(&c), Action::VerifyConsumer { consumer, key: K2, .. } if *consumer == ws("ws"))
    );
    assert_eq!(r.m.phase(), Phase::VerifyingConsumers);
    let c = r.succeed(c);
    assert_eq!(only(&c), &Action::Commit);
}

#[test]
fn t18_a_failure_before_the_resync_rolls_back_and_never_touches_the_workspace() {
    let (mut r, verifies) = at_first_verifications(opts(3600));
    r.answer(verifies[0].seq, StepResult::ConsumerVerified);
    assert!(
        r.answer(
            verifies[1].seq,
            StepResult::ConsumerMismatch {
                reason: why("cannot read it: HTTP 500")
            }
        )
        .is_empty(),
        "drains first"
    );
    assert_eq!(r.m.phase(), Phase::RollingBack);
    let back = r.answer(verifies[2].seq, StepResult::ConsumerVerified);
    assert_eq!(back.len(), 3, "the three bound forward, not the workspace");
    let c = r.succeed_until(back, |a| matches!(a, Action::Finish { .. }));
    assert!(is_finish(&c));
    assert!(matches!(
        r.outcome(),
        Outcome::RolledBack {
            discarded: Some(K2),
            ..
        }
    ));
    assert!(
        !r.m.issued().any(touches_workspace),
        "the workspace was never resynced, forward or back"
    );
    let view = r.m.view();
    let workspace = view.consumers.iter().find(|c| c.consumer == ws("ws"));
    assert_eq!(
        workspace.map(|c| &c.status),
        Some(&ConsumerStatus::Untouched)
    );
}

#[test]
fn t20_t21_t22_a_failure_after_the_resync_retries_forward_then_parks_with_everyone_else_on_the_new_key()
 {
    let (mut r, resync) = at_resync(three_attempts());
    // The resync fails: no rollback (it may have moved the workspace already), a backoff.
    let w = r.answer(resync.seq, failed("resyncKeys: HTTP 409 Conflict"));
    assert_eq!(
        only(&w),
        &Action::WaitUntil {
            at: t(r.now) + TimeDelta::seconds(10)
        }
    );
    let c = r.succeed(w);
    assert_eq!(only(&c).clone(), resync.action, "the same resync again");
    let c = r.answer(c[0].seq, StepResult::Bound);
    // Its verification fails: resync again after 20 s.
    let w = r.answer(
        c[0].seq,
        StepResult::ConsumerMismatch {
            reason: why("it holds key1"),
        },
    );
    assert_eq!(
        only(&w),
        &Action::WaitUntil {
            at: t(r.now) + TimeDelta::seconds(20)
        }
    );
    let c = r.succeed(w);
    assert_eq!(only(&c).clone(), resync.action);
    let c = r.answer(c[0].seq, failed("resyncKeys: HTTP 409 Conflict"));
    assert!(is_finish(&c), "the third failed round parks: {c:#?}");

    let outcome = r.outcome();
    let Outcome::NeedsAttention {
        reason:
            Attention::ResyncFailed {
                key,
                consumers,
                attempts,
                leaked,
            },
        ..
    } = &outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!((*key, *attempts, *leaked), (K2, 3, None));
    assert_eq!(
        consumers,
        &vec![(ws("ws").id, why("resyncKeys: HTTP 409 Conflict"))]
    );
    let text = outcome.to_string();
    for part in [
        "a resync cannot be steered back",
        "az ml workspace sync-keys",
        "`keyflip rotate now PLAN`",
    ] {
        assert!(text.contains(part), "{text}");
    }
    // Nothing went back, nothing committed or retired; everyone else is on key2.
    assert!(
        !r.m.issued()
            .any(|c| matches!(c.action, Action::Bind { key: K1, .. } | Action::Commit))
    );
    assert_eq!(regenerations(&r.m), vec![(K2, Purpose::Stage)]);
    for c in
        r.m.view()
            .consumers
            .iter()
            .filter(|c| c.consumer != ws("ws"))
    {
        assert_eq!(c.status, ConsumerStatus::Verified { key: K2 });
    }
    assert_eq!(r.replayed(), r.m);
}

#[test]
fn t20_t21_a_resync_that_takes_on_a_retry_commits() {
    let (mut r, resync) = at_resync(three_attempts());
    let w = r.answer(resync.seq, failed("resyncKeys: HTTP 503"));
    let c = r.succeed(w);
    let c = r.succeed(c);
    assert!(matches!(only(&c), Action::VerifyConsumer { consumer, .. } if *consumer == ws("ws")));
    let c = r.succeed(c);
    assert_eq!(only(&c), &Action::Commit);
}

#[test]
fn t22_in_an_incident_a_resync_that_will_not_take_parks_naming_the_leaked_key() {
    let options = Options {
        retire_attempts: 1,
        ..Options::default()
    };
    let mut r = Run::new(
        Mode::Leaked {
            key: K1,
            revoke_first: false,
        },
        options,
    );
    let c = r.observe(with_workspace());
    let c = r.succeed_until(
        c,
        |a| matches!(a, Action::Bind { consumer, .. } if *consumer == ws("ws")),
    );
    let c = r.answer(c[0].seq, failed("resyncKeys: HTTP 409 Conflict"));
    assert!(is_finish(&c));
    let outcome = r.outcome();
    assert!(
        matches!(
            &outcome,
            Outcome::NeedsAttention {
                reason: Attention::ResyncFailed {
                    key: K2,
                    leaked: Some(K1),
                    ..
                },
                ..
            }
        ),
        "{outcome:?}"
    );
    assert!(
        outcome
            .to_string()
            .contains("`keyflip rotate now PLAN --leaked key1`: the leaked key1 is still valid"),
        "{outcome}"
    );
    assert!(
        !r.m.issued()
            .any(|c| matches!(c.action, Action::Bind { key: K1, .. })),
        "no rollback once the resync was issued"
    );
}

#[test]
fn t37a_after_the_resync_a_changed_staged_key_parks_instead_of_rolling_back() {
    let (mut r, resync) = at_resync(opts(3600));
    let c = reobserve(&mut r, fp(1), fp(77));
    assert!(is_finish(&c), "{c:#?}");
    let Outcome::NeedsAttention {
        reason: Attention::Drift { detail, .. },
        in_doubt,
    } = r.outcome()
    else {
        panic!("{:?}", r.outcome())
    };
    assert!(detail.contains("cannot be steered back"), "{detail}");
    assert_eq!(in_doubt, vec![resync]);
    assert!(
        !r.m.issued()
            .any(|c| matches!(c.action, Action::Bind { key: K1, .. }))
    );
}

#[test]
fn with_revoke_first_the_workspace_moves_with_everyone_else() {
    // Nothing rolls back after the revoke and every consumer is down until it moves,
    // so the workspace is not held back.
    let mut r = Run::new(
        Mode::Leaked {
            key: K1,
            revoke_first: true,
        },
        legacy(),
    );
    let c = r.observe(with_workspace());
    let binds = r.succeed_until(c, |a| matches!(a, Action::Bind { .. }));
    assert_eq!(binds.len(), 4);
    assert!(binds.iter().any(touches_workspace));
}

#[test]
fn a_rotation_journaled_with_the_resync_among_the_rest_replays_and_rolls_back_that_way() {
    // Options journaled before the resync went last name no order; such a rotation
    // keeps the order it began with, so its stored commands replay and it resumes.
    let options: Options = serde_json::from_str(
        r#"{"grace_ms":3600000,"verify_budget_ms":60000,"retire_attempts":8}"#,
    )
    .unwrap();
    assert_eq!(options.resync, ResyncOrder::WithTheRest);
    assert_eq!(Options::default().resync, ResyncOrder::Last);
    let mut r = Run::new(Mode::Scheduled, options);
    let c = r.observe(with_workspace());
    let binds = r.succeed_until(c, |a| matches!(a, Action::Bind { .. }));
    assert_eq!(binds.len(), 4, "the workspace with the rest: {binds:#?}");
    assert!(binds.iter().any(touches_workspace));
    // A failure in that round rolls back, the workspace included.
    r.answer(binds[0].seq, failed("vault down"));
    let mut back = Vec::new();
    for b in &binds[1..] {
        back = r.answer(b.seq, StepResult::Bound);
    }
    assert_eq!(back.len(), 4, "{back:#?}");
    assert!(back.iter().any(touches_workspace));
    let c = r.succeed_until(back, |a| matches!(a, Action::Finish { .. }));
    assert!(is_finish(&c));
    assert!(
        matches!(r.outcome(), Outcome::RolledBack { .. }),
        "{:?}",
        r.outcome()
    );
    assert_eq!(r.replayed(), r.m);
}
