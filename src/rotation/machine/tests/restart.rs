//! Restarts and replay: reobservation and drift, rejected events, the view and
//! the JSON shape the journal stores.

use super::*;

pub(super) fn reobserve(r: &mut Run, key1: Fingerprint, key2: Fingerprint) -> Vec<Command> {
    let mut observation = on_key1();
    observation.key1.fingerprint = key1;
    observation.key2.fingerprint = key2;
    r.reobserve(observation)
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
