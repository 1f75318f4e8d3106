//! An incident that takes over an unfinished rotation (T42-T45) and a shorter grace
//! (T46), as journaled events: what each does from each stage, and that both replay.

use super::*;

fn incident(key: KeyName) -> impl FnOnce(DateTime<Utc>) -> Event {
    move |at| Event::Escalated {
        at,
        mode: Mode::Leaked {
            key,
            revoke_first: false,
        },
        by: None,
    }
}

fn shorten(secs: i64) -> impl FnOnce(DateTime<Utc>) -> Event {
    move |at| Event::GraceShortened {
        at,
        grace: TimeDelta::seconds(secs),
        by: None,
    }
}

/// A scheduled swap of the usual world, committed and waiting out an hour's grace;
/// returns the grace's `WaitUntil`.
fn in_grace() -> (Run, Command) {
    let mut r = Run::new(Mode::Scheduled, opts(3600));
    let c = r.observe(on_key1());
    let c = r.succeed_until(c, |a| matches!(a, Action::WaitUntil { .. }));
    assert_eq!(r.m.phase(), Phase::Grace);
    (r, c[0].clone())
}

#[test]
fn t42_the_leaked_old_key_of_a_swap_in_grace_is_retired_at_once() {
    let (mut r, wait) = in_grace();
    let Action::WaitUntil { at } = wait.action else {
        panic!("{wait:?}")
    };
    assert_eq!(r.m.deadline(&wait), Some(at), "the grace as committed");
    let c = r.amend(incident(K1));
    assert!(c.is_empty(), "the grace wait is still in flight: {c:?}");
    // The wait now ends at commit + 0: the executor answers it at once.
    let committed = r.m.view().committed_at.unwrap();
    assert_eq!(r.m.deadline(&wait), Some(committed));
    assert_eq!(
        r.m.mode(),
        Mode::Leaked {
            key: K1,
            revoke_first: false
        }
    );
    let c = r.answer(wait.seq, StepResult::Waited);
    assert!(matches!(
        only(&c),
        Action::Regenerate {
            key: K1,
            purpose: Purpose::Retire,
            ..
        }
    ));
    // An incident: the leaked value's Key Vault versions are disabled, then done.
    let c = r.succeed(c);
    assert!(
        matches!(only(&c), Action::DisableVersions { fingerprints, .. } if *fingerprints == vec![fp(1)])
    );
    let c = r.succeed(c);
    assert!(is_finish(&c));
    assert!(matches!(r.outcome(), Outcome::Completed { active: K2, .. }));
    let escalation = r.m.escalation().cloned().unwrap();
    assert!(escalation.handled_here);
    assert_eq!(r.m.follow_up(), None);
    assert_eq!(r.replayed(), r.m);
}

#[test]
fn t42_before_commit_the_swap_goes_on_and_retires_the_leaked_key_without_grace() {
    let mut r = Run::new(Mode::Scheduled, opts(3600));
    let c = r.observe(with_workspace());
    let c = r.succeed(c);
    let binds = r.succeed(c);
    assert_eq!(r.m.phase(), Phase::Binding);
    assert!(r.amend(incident(K1)).is_empty());
    let c = r.succeed_until(binds, |a| matches!(a, Action::Commit));
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
        "no grace after an incident took over: {c:?}"
    );
    assert_eq!(
        r.m.view().route,
        Some(Route::LeakedActive {
            revoke_first: false,
            stage_standby: true
        })
    );
    let c = r.succeed(c);
    let c = r.succeed(c);
    assert!(is_finish(&c));
    assert!(matches!(r.outcome(), Outcome::Completed { active: K2, .. }));
    assert_eq!(r.replayed(), r.m);
}

#[test]
fn t42_revoke_first_on_a_swap_under_way_is_not_silently_dropped() {
    let (mut r, wait) = in_grace();
    r.amend(|at| Event::Escalated {
        at,
        mode: Mode::Leaked {
            key: K1,
            revoke_first: true,
        },
        by: None,
    });
    let c = r.answer(wait.seq, StepResult::Waited);
    let c = r.succeed(c);
    let c = r.succeed(c);
    assert!(is_finish(&c));
    let Outcome::Completed { warnings, .. } = r.outcome() else {
        panic!("{:?}", r.outcome())
    };
    assert!(
        warnings.iter().any(|w| w.kind == WarningKind::TakenOver
            && w.message.contains("--revoke-first was not applied")),
        "{warnings:?}"
    );
}

#[test]
fn t43_the_leaked_new_key_before_commit_rolls_back_and_leaves_the_incident_to_a_follow_up() {
    let mut r = Run::new(Mode::Scheduled, opts(3600));
    let c = r.observe(on_key1());
    let c = r.succeed(c); // staged key2
    let binds = r.succeed(c);
    assert_eq!(r.m.phase(), Phase::Binding);
    assert!(r.amend(incident(K2)).is_empty(), "drains the binds first");
    assert_eq!(r.m.phase(), Phase::RollingBack);
    let back = r.succeed(binds);
    assert!(
        back.iter()
            .all(|c| matches!(c.action, Action::Bind { key: K1, .. }))
    );
    let c = r.succeed_until(back, |a| {
        matches!(
            a,
            Action::Regenerate {
                purpose: Purpose::Discard,
                ..
            }
        )
    });
    let c = r.succeed(c);
    assert!(is_finish(&c));
    let Outcome::RolledBack {
        cause, discarded, ..
    } = r.outcome()
    else {
        panic!("{:?}", r.outcome())
    };
    assert_eq!(discarded, Some(K2));
    assert!(matches!(cause, Cause::Superseded { .. }), "{cause:?}");
    assert_eq!(
        r.m.follow_up(),
        Some(Mode::Leaked {
            key: K2,
            revoke_first: false
        })
    );
    assert_eq!(r.replayed(), r.m);
}

#[test]
fn t44_the_leaked_new_key_in_grace_goes_forward_without_grace_for_a_follow_up() {
    let (mut r, wait) = in_grace();
    assert!(r.amend(incident(K2)).is_empty());
    assert_eq!(r.m.deadline(&wait), r.m.view().committed_at);
    let c = r.answer(wait.seq, StepResult::Waited);
    let c = r.succeed(c);
    assert!(is_finish(&c));
    assert!(matches!(r.outcome(), Outcome::Completed { active: K2, .. }));
    assert_eq!(r.m.mode(), Mode::Scheduled, "the swap itself stays a swap");
    assert_eq!(
        r.m.follow_up(),
        Some(Mode::Leaked {
            key: K2,
            revoke_first: false
        })
    );
}

#[test]
fn t44_after_a_resync_nothing_rolls_back_even_for_an_incident() {
    let mut r = Run::new(Mode::Scheduled, opts(3600));
    let c = r.observe(with_workspace());
    let c = r.succeed_until(
        c,
        |a| matches!(a, Action::Bind { consumer, .. } if steered_by_azure(consumer)),
    );
    r.amend(|at| Event::Escalated {
        at,
        mode: Mode::LeakedBoth,
        by: None,
    });
    assert_ne!(r.m.phase(), Phase::RollingBack);
    let c = r.succeed_until(c, |a| {
        matches!(
            a,
            Action::Regenerate {
                purpose: Purpose::Retire,
                ..
            }
        )
    });
    let c = r.succeed(c);
    assert!(is_finish(&c));
    assert!(matches!(r.outcome(), Outcome::Completed { .. }));
    assert_eq!(r.m.follow_up(), Some(Mode::LeakedBoth));
}

#[test]
fn t45_before_the_precheck_the_incident_becomes_the_rotation() {
    let mut r = Run::new(Mode::Scheduled, opts(3600));
    r.amend(incident(K1));
    let c = r.observe(on_key1());
    assert!(matches!(only(&c), Action::VerifyKey { key: K2, .. }));
    assert_eq!(
        r.m.view().route,
        Some(Route::LeakedActive {
            revoke_first: false,
            stage_standby: false
        })
    );
    assert_eq!(r.m.follow_up(), None);
}

#[test]
fn t45_an_incident_the_rotation_covers_changes_nothing() {
    let mut r = Run::new(Mode::LeakedBoth, opts(0));
    let c = r.observe(on_key1());
    let before = r.m.view().route;
    r.amend(incident(K2));
    assert_eq!(r.m.view().route, before);
    assert_eq!(r.m.escalation(), None);
    assert_eq!(r.m.follow_up(), None);
    let c = r.succeed_until(c, |a| matches!(a, Action::Finish { .. }));
    assert!(is_finish(&c));
}

#[test]
fn t46_a_shorter_grace_ends_a_running_grace_early_and_replays() {
    let (mut r, wait) = in_grace();
    let committed = r.m.view().committed_at.unwrap();
    r.amend(shorten(30));
    assert_eq!(
        r.m.deadline(&wait),
        Some(committed + TimeDelta::seconds(30))
    );
    r.amend(shorten(0));
    assert_eq!(r.m.deadline(&wait), Some(committed));
    let c = r.answer(wait.seq, StepResult::Waited);
    assert!(matches!(
        only(&c),
        Action::Regenerate {
            purpose: Purpose::Retire,
            ..
        }
    ));
    assert_eq!(r.replayed(), r.m);
}

#[test]
fn t46_a_shorter_grace_before_commit_is_the_grace_the_commit_waits() {
    let mut r = Run::new(Mode::Scheduled, opts(3600));
    let c = r.observe(on_key1());
    r.amend(shorten(60));
    let c = r.succeed_until(c, |a| matches!(a, Action::WaitUntil { .. }));
    let committed = r.m.view().committed_at.unwrap();
    assert_eq!(
        only(&c),
        &Action::WaitUntil {
            at: committed + TimeDelta::seconds(60)
        }
    );
}

#[test]
fn an_amendment_the_rotation_cannot_take_is_refused_and_changes_nothing() {
    let refused = |m: &Machine, e: &Event, want: &str| {
        let err = m.accepts(e).unwrap_err();
        assert!(err.to_string().contains(want), "{err}");
        let mut copy = m.clone();
        assert_eq!(copy.handle(e).unwrap_err(), err);
        assert_eq!(&copy, m, "a refused amendment changes nothing");
    };
    let at = t(9);
    let grace = |secs| Event::GraceShortened {
        at,
        grace: TimeDelta::seconds(secs),
        by: None,
    };
    // Longer than the rotation's grace.
    let (r, _) = in_grace();
    refused(&r.m, &grace(7200), "can only shorten");
    // Not an incident.
    refused(
        &r.m,
        &Event::Escalated {
            at,
            mode: Mode::Scheduled,
            by: None,
        },
        "only an incident",
    );
    // An incident has no grace.
    let r = Run::new(Mode::LeakedBoth, opts(0));
    refused(&r.m, &grace(0), "has no grace period");
    // Past the grace: retiring.
    let (mut r, wait) = in_grace();
    r.answer(wait.seq, StepResult::Waited);
    refused(&r.m, &grace(0), "grace period is over");
    // Rolling back: no grace follows.
    let mut r = Run::new(Mode::Scheduled, opts(3600));
    let c = r.observe(on_key1());
    let c = r.succeed(c);
    r.answer(c[0].seq, StepResult::KeyRejected { reason: why("403") });
    assert_eq!(r.m.phase(), Phase::RollingBack);
    refused(&r.m, &grace(0), "rolling back");
}
