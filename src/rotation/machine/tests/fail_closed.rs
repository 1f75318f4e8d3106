//! Failing closed: states the machine must never reach, forced by hand because the
//! executor cannot produce them, park the rotation as an internal error that names
//! what was impossible. None commits, retires or picks a default instead.

use super::*;
use crate::rotation::machine::{Decided, Rollback, Stage, State, Track};

fn stage_mut(m: &mut Machine) -> &mut Stage {
    match &mut m.state {
        State::Decided { stage, .. } => stage,
        other => panic!("not decided: {other:?}"),
    }
}

/// Parked as an internal error whose text contains `about`, with no commit and no
/// retire issued.
fn assert_parked_internally(r: &Run, cmds: &[Command], about: &str) {
    assert!(is_finish(cmds), "{cmds:#?}");
    let outcome = r.outcome();
    let Outcome::NeedsAttention {
        reason: Attention::InternalError { what },
        ..
    } = &outcome
    else {
        panic!("{outcome:?}")
    };
    assert!(what.contains(about), "{what}");
    assert!(
        outcome.to_string().contains("this is a bug in keyflip"),
        "{outcome}"
    );
    assert!(
        !r.m.issued().any(|c| matches!(
            c.action,
            Action::Commit
                | Action::Regenerate {
                    purpose: Purpose::Retire,
                    ..
                }
        )),
        "nothing committed or retired"
    );
    assert_eq!(r.m.phase(), Phase::NeedsAttention);
    assert!(r.m.is_finished());
}

/// A scheduled swap up to its consumer verifications (not answered).
fn at_verifications() -> (Run, Vec<Command>) {
    let mut r = Run::new(Mode::Scheduled, opts(0));
    let c = r.observe(on_key1());
    let c = r.succeed_until(c, |a| matches!(a, Action::VerifyConsumer { .. }));
    (r, c)
}

#[test]
fn a_consumer_with_no_verification_in_the_log_blocks_the_commit() {
    let (mut r, verifies) = at_verifications();
    // A consumer the machine tracks but never bound, whose summary claims it is
    // verified: the proof reads the step log, so the claim does not count.
    r.m.consumers.push(Track {
        consumer: kv("late"),
        initially: Holding::Key(K1),
        status: ConsumerStatus::Verified { key: K2 },
        bound_forward: false,
        disabled: vec![],
    });
    let c = r.succeed(verifies);
    assert_parked_internally(&r, &c, "late was never bound nor verified");
}

#[test]
fn verifications_of_another_value_than_the_target_block_the_commit() {
    let (mut r, verifies) = at_verifications();
    // The stage lost track of the value consumers move to.
    let Stage::VerifyingConsumers { target, .. } = stage_mut(&mut r.m) else {
        panic!("{:?}", r.m.phase())
    };
    *target = fp(99);
    let c = r.succeed(verifies);
    assert_parked_internally(&r, &c, "is not verified on key2 (fp:000000000063)");
}

#[test]
fn a_failed_bind_that_did_not_roll_back_parks() {
    let mut r = Run::new(Mode::Scheduled, opts(0));
    let c = r.observe(on_key1());
    let binds = r.succeed_until(c, |a| matches!(a, Action::Bind { .. }));
    r.answer(binds[0].seq, StepResult::Bound);
    // Outside `revoke_first` a failed bind rolls back when it answers; here one is
    // marked failed without that having happened.
    r.m.consumers[0].status = ConsumerStatus::BindFailed {
        key: K2,
        reason: why("forced"),
    };
    r.answer(binds[1].seq, StepResult::Bound);
    let c = r.answer(binds[2].seq, StepResult::Bound);
    assert_parked_internally(&r, &c, "did not roll back");
}

#[test]
fn an_answer_its_stage_does_not_expect_parks() {
    let mut r = Run::new(Mode::Scheduled, opts(0));
    let c = r.observe(on_key1());
    assert_eq!(r.m.phase(), Phase::Staging);
    // The stage no longer matches what is in flight (the stage regeneration).
    *stage_mut(&mut r.m) = Stage::Cleanup;
    let c = r.succeed(c);
    assert_parked_internally(
        &r,
        &c,
        "`regenerated` answered step 2 (regenerate key2 (stage)) while disabling leaked Key Vault versions",
    );
}

#[test]
fn a_backoff_with_nothing_to_retry_parks_instead_of_stalling() {
    let mut r = Run::new(
        Mode::Leaked {
            key: K1,
            revoke_first: true,
        },
        legacy(),
    );
    let c = r.observe(on_key1());
    let binds = r.succeed_until(c, |a| matches!(a, Action::Bind { .. }));
    r.answer(binds[0].seq, failed("throttled"));
    r.answer(binds[1].seq, StepResult::Bound);
    let wait = r.answer(binds[2].seq, StepResult::Bound);
    assert!(matches!(only(&wait), Action::WaitUntil { .. }));
    // The failure is forgotten during the backoff: after it there is nothing to bind
    // again, and without a park nothing would ever answer.
    r.m.consumers[0].status = ConsumerStatus::Bound { key: K1 };
    let c = r.succeed(wait);
    assert_parked_internally(&r, &c, "Binding with no command in flight");
}

#[test]
fn a_rollback_that_does_not_know_the_value_consumers_moved_to_parks() {
    let mut r = Run::new(Mode::Scheduled, opts(0));
    let c = r.observe(on_key1());
    let binds = r.succeed_until(c, |a| matches!(a, Action::Bind { .. }));
    *stage_mut(&mut r.m) = Stage::RollingBack {
        cause: Cause::Drift { drifts: vec![] },
        step: Rollback::Draining { moved_to: None },
    };
    let c = r.succeed(binds);
    assert_parked_internally(&r, &c, "does not know to which value");
    assert!(
        !r.m.issued()
            .any(|c| matches!(c.action, Action::Bind { key: K1, .. })),
        "no bind back to a value it cannot name the new one of"
    );
}

fn decided_mut(m: &mut Machine) -> &mut Decided {
    match &mut m.state {
        State::Decided { decided, .. } => decided,
        other => panic!("not decided: {other:?}"),
    }
}

#[test]
fn a_revoke_answered_in_a_route_that_revokes_nothing_parks() {
    let mut r = Run::new(Mode::Scheduled, opts(0));
    let c = r.observe(on_key1());
    // The stage regeneration answers while the machine believes it is revoking.
    *stage_mut(&mut r.m) = Stage::Revoking { failures: 0 };
    let c = r.succeed(c);
    assert_parked_internally(&r, &c, "a revoke answered in route Scheduled");
}

#[test]
fn a_commit_in_the_leaked_standby_route_parks_instead_of_retiring() {
    let mut r = Run::new(Mode::Scheduled, opts(0));
    let c = r.observe(on_key1());
    let c = r.succeed_until(c, |a| matches!(a, Action::Commit));
    // The route no longer matches the swap that was verified: retiring "the active
    // key" of a leaked-standby route would kill the key every consumer holds.
    decided_mut(&mut r.m).route = Route::LeakedStandby;
    let c = r.succeed(c);
    assert!(is_finish(&c), "{c:#?}");
    let Outcome::NeedsAttention {
        reason: Attention::InternalError { what },
        ..
    } = r.outcome()
    else {
        panic!("{:?}", r.outcome())
    };
    assert!(what.contains("committed a swap it never makes"), "{what}");
    assert!(
        !r.m.issued().any(|c| matches!(
            c.action,
            Action::Regenerate {
                purpose: Purpose::Retire,
                ..
            }
        )),
        "nothing retired"
    );
}
