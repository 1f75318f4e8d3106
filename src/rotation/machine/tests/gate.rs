//! The usage gate (G1–G12 in the transition table), unlisted consumers, and the
//! retire of a swap parked at the gate.

use super::*;

fn gate() -> GateOptions {
    GateOptions {
        quiet: TimeDelta::minutes(30),
        recheck: TimeDelta::minutes(10),
        deadline: TimeDelta::hours(2),
        latency: TimeDelta::minutes(5),
        lookback: TimeDelta::days(7),
    }
}

fn gated(grace_secs: i64) -> Options {
    Options {
        usage_gate: Some(gate()),
        ..opts(grace_secs)
    }
}

fn caller(last: DateTime<Utc>) -> Caller {
    Caller {
        ip: "10.42.7.19".into(),
        user_agent: "nightly-export/2.3".into(),
        operation: "ListContainers".into(),
        authentication: "AccountKey".into(),
        requests: 12,
        first_seen: last - TimeDelta::minutes(6),
        last_seen: last,
    }
}

fn checked(callers: Vec<Caller>) -> StepResult {
    StepResult::UsageChecked {
        until: t(0),
        callers,
    }
}

/// Runs a gated scheduled swap up to its first gate check, answering the standby
/// check with nobody; returns the check.
fn to_first_gate_check(r: &mut Run) -> Command {
    let c = r.observe(on_key1());
    assert!(matches!(
        only(&c),
        Action::CheckUsage {
            key: K2,
            purpose: GatePurpose::Stage,
            ..
        }
    ));
    assert_eq!(r.m.phase(), Phase::CheckingUsage);
    let c = r.answer(c[0].seq, checked(vec![]));
    let c = r.succeed_until(c, |a| matches!(a, Action::Commit));
    let c = r.answer(c[0].seq, StepResult::Committed);
    let committed = t(r.now);
    // G3: the wait covers the ingestion latency and the quiet period, longer than
    // the 60 s grace.
    assert_eq!(
        only(&c),
        &Action::WaitUntil {
            at: committed + TimeDelta::minutes(35)
        }
    );
    let c = r.answer(c[0].seq, StepResult::Waited);
    match only(&c) {
        Action::CheckUsage {
            key,
            fingerprint,
            since,
            purpose,
        } => {
            assert_eq!((*key, *fingerprint), (K1, fp(1)));
            assert_eq!(*since, committed, "usage counts from the swap");
            assert_eq!(*purpose, GatePurpose::Retire);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(r.m.phase(), Phase::UsageGate);
    c[0].clone()
}

#[test]
fn g4_g5_the_retire_waits_while_the_old_key_is_in_use_and_goes_once_quiet() {
    let mut r = Run::new(Mode::Scheduled, gated(60));
    let check = to_first_gate_check(&mut r);
    // A caller seen a minute ago: hold, both keys untouched, check again in 10 min.
    let recent = t(r.now) - TimeDelta::minutes(1);
    let c = r.answer(check.seq, checked(vec![caller(recent)]));
    assert_eq!(
        only(&c),
        &Action::WaitUntil {
            at: t(r.now) + TimeDelta::minutes(10)
        }
    );
    assert_eq!(r.m.phase(), Phase::UsageGate);
    assert!(
        !regenerations(&r.m).contains(&(K1, Purpose::Retire)),
        "nothing retired while held"
    );
    let view = r.m.view();
    assert!(view.timeline.iter().any(|e| matches!(
        &e.what,
        Happening::Noted { note: Note::UsageHeld { key: K1, callers, .. } } if callers.len() == 1
    )));
    let c = r.answer(c[0].seq, StepResult::Waited);
    assert!(matches!(
        only(&c),
        Action::CheckUsage {
            purpose: GatePurpose::Retire,
            ..
        }
    ));
    // The caller stopped long enough ago (before latency + quiet): retire, and say so.
    let long_ago = t(r.now) - TimeDelta::minutes(40);
    let c = r.answer(c[0].seq, checked(vec![caller(long_ago)]));
    assert!(matches!(
        only(&c),
        Action::Regenerate {
            key: K1,
            purpose: Purpose::Retire,
            ..
        }
    ));
    let c = r.succeed(c);
    assert!(is_finish(&c));
    match r.outcome() {
        Outcome::Completed { warnings, .. } => assert!(
            warnings
                .iter()
                .any(|w| w.kind == WarningKind::UsageHeld && w.message.contains("10.42.7.19")),
            "{warnings:?}"
        ),
        other => panic!("{other}"),
    }
    assert_eq!(r.replayed(), r.m);
}

#[test]
fn g6_past_the_deadline_the_rotation_parks_naming_the_callers() {
    let mut r = Run::new(Mode::Scheduled, gated(0));
    let mut c = vec![to_first_gate_check(&mut r)];
    for _ in 0..20 {
        if is_finish(&c) {
            break;
        }
        let result = match &c[0].action {
            Action::CheckUsage { .. } => checked(vec![caller(t(r.now))]),
            Action::WaitUntil { at } => {
                r.now = at.timestamp() - 1;
                StepResult::Waited
            }
            other => panic!("{other:?}"),
        };
        c = r.answer(c[0].seq, result);
    }
    assert!(is_finish(&c));
    assert!(!regenerations(&r.m).contains(&(K1, Purpose::Retire)));
    match r.outcome() {
        Outcome::NeedsAttention {
            reason: reason @ Attention::UsageGateHeld { key: K1, .. },
            ..
        } => {
            let Attention::UsageGateHeld { callers, .. } = &reason else {
                unreachable!()
            };
            assert_eq!(callers.len(), 1);
            let text = reason.to_string();
            for words in [
                "10.42.7.19",
                "nightly-export/2.3",
                "ListContainers",
                "both keys still work",
                "--force-retire",
            ] {
                assert!(text.contains(words), "{words}: {text}");
            }
        }
        other => panic!("{other}"),
    }
    assert_eq!(r.m.phase(), Phase::NeedsAttention);
}

#[test]
fn g7_logs_that_cannot_be_read_never_count_as_quiet() {
    let mut r = Run::new(Mode::Scheduled, gated(0));
    let check = to_first_gate_check(&mut r);
    let c = r.answer(
        check.seq,
        StepResult::UsageUnknown {
            reason: why("InsufficientAccessError"),
        },
    );
    assert!(matches!(only(&c), Action::WaitUntil { .. }));
    // Jump past the deadline: the next unreadable answer parks.
    r.now += 3 * 3600;
    let c = r.answer(c[0].seq, StepResult::Waited);
    let c = r.answer(
        c[0].seq,
        StepResult::UsageUnknown {
            reason: why("InsufficientAccessError"),
        },
    );
    assert!(is_finish(&c));
    assert!(matches!(
        r.outcome(),
        Outcome::NeedsAttention {
            reason: Attention::UsageGateHeld {
                unknown: Some(_),
                ..
            },
            ..
        }
    ));
}

#[test]
fn g1_g2_callers_of_the_standby_refuse_the_rotation_before_anything_changes() {
    let mut r = Run::new(Mode::Scheduled, gated(60));
    let c = r.observe(on_key1());
    let c = r.answer(c[0].seq, checked(vec![caller(t(0))]));
    assert!(is_finish(&c));
    assert!(regenerations(&r.m).is_empty());
    match r.outcome() {
        Outcome::Refused { reasons } => assert!(
            matches!(&reasons[..], [RefusalReason::StandbyInUse { key: K2, callers }] if callers.len() == 1),
            "{reasons:?}"
        ),
        other => panic!("{other}"),
    }
    assert_eq!(r.m.phase(), Phase::Refused);
    // Unreadable logs refuse too: the standby may be in use.
    let mut r = Run::new(Mode::Scheduled, gated(60));
    let c = r.observe(on_key1());
    let c = r.answer(
        c[0].seq,
        StepResult::UsageUnknown {
            reason: why("timeout"),
        },
    );
    assert!(is_finish(&c));
    assert!(matches!(
        r.outcome(),
        Outcome::Refused { reasons } if matches!(reasons[..], [RefusalReason::UsageUnknown { key: K2, .. }])
    ));
}

#[test]
fn g8_an_incident_never_waits_but_names_who_breaks() {
    let mut r = Run::new(
        Mode::Leaked {
            key: K1,
            revoke_first: false,
        },
        gated(3600),
    );
    let c = r.observe(on_key1());
    let c = r.succeed_until(c, |a| matches!(a, Action::Commit));
    let c = r.answer(c[0].seq, StepResult::Committed);
    let since = t(r.now) - TimeDelta::days(7);
    assert_eq!(
        only(&c),
        &Action::CheckUsage {
            key: K1,
            fingerprint: fp(1),
            since,
            purpose: GatePurpose::Incident
        }
    );
    // Callers or not, the leaked key dies at once.
    let c = r.answer(c[0].seq, checked(vec![caller(t(r.now))]));
    assert!(matches!(
        only(&c),
        Action::Regenerate {
            key: K1,
            purpose: Purpose::Retire,
            ..
        }
    ));
    let c = r.succeed_until(c, |a| matches!(a, Action::Finish { .. }));
    assert!(is_finish(&c));
    match r.outcome() {
        Outcome::Completed { warnings, .. } => assert!(
            warnings
                .iter()
                .any(|w| w.kind == WarningKind::CallersWillBreak
                    && w.message.contains("10.42.7.19")
                    && w.message.contains("break now")),
            "{warnings:?}"
        ),
        other => panic!("{other}"),
    }
}

#[test]
fn g9_the_leaked_standby_and_revoke_first_ask_before_the_revoke() {
    let mut r = Run::new(
        Mode::Leaked {
            key: K2,
            revoke_first: false,
        },
        gated(0),
    );
    let c = r.observe(on_key1());
    assert!(matches!(
        only(&c),
        Action::CheckUsage {
            key: K2,
            purpose: GatePurpose::Incident,
            ..
        }
    ));
    let c = r.answer(
        c[0].seq,
        StepResult::UsageUnknown {
            reason: why("timeout"),
        },
    );
    assert!(matches!(
        only(&c),
        Action::Regenerate {
            key: K2,
            purpose: Purpose::Revoke,
            ..
        }
    ));
    // A revoke first journaled before the revoke came first asked before its revoke
    // too (a new one asks after it: `tests::revoke_first`).
    let mut r = Run::new(
        Mode::Leaked {
            key: K1,
            revoke_first: true,
        },
        Options {
            revoke_before_reads: false,
            ..gated(0)
        },
    );
    let c = r.observe(on_key1());
    let c = r.answer(c[0].seq, StepResult::KeyVerified);
    assert!(matches!(
        only(&c),
        Action::CheckUsage {
            key: K1,
            purpose: GatePurpose::Incident,
            ..
        }
    ));
    let c = r.answer(c[0].seq, checked(vec![]));
    assert!(matches!(
        only(&c),
        Action::Regenerate {
            key: K1,
            purpose: Purpose::Revoke,
            ..
        }
    ));
}

fn on_key2() -> Observation {
    observation(vec![
        (kv("kv/storage-key"), Holding::Key(K2)),
        (ds("ws/ds-a"), Holding::Key(K2)),
    ])
}

fn retire(force: bool) -> Mode {
    Mode::Retire {
        key: K1,
        expect: fp(1),
        since: t(-7200),
        force,
    }
}

#[test]
fn g10_a_parked_swap_is_retired_after_the_gate_or_at_once_when_forced() {
    let mut r = Run::new(retire(false), gated(3600));
    let c = r.observe(on_key2());
    assert_eq!(only(&c), &Action::Commit);
    let c = r.answer(c[0].seq, StepResult::Committed);
    // No grace again: the parked swap waited it out. Usage counts from its swap.
    assert!(matches!(
        only(&c),
        Action::CheckUsage { key: K1, since, purpose: GatePurpose::Retire, .. } if *since == t(-7200)
    ));
    let c = r.answer(c[0].seq, checked(vec![]));
    assert!(matches!(
        only(&c),
        Action::Regenerate {
            key: K1,
            purpose: Purpose::Retire,
            ..
        }
    ));
    let c = r.succeed(c);
    assert!(is_finish(&c));
    assert!(matches!(r.outcome(), Outcome::Completed { active: K2, .. }));

    let mut r = Run::new(retire(true), gated(3600));
    let c = r.observe(on_key2());
    let c = r.answer(c[0].seq, StepResult::Committed);
    assert!(matches!(
        only(&c),
        Action::Regenerate {
            key: K1,
            purpose: Purpose::Retire,
            ..
        }
    ));
    assert_eq!(r.replayed(), r.m);
}

#[test]
fn g11_a_retire_refuses_when_consumers_or_the_key_moved_since_the_park() {
    let mut r = Run::new(retire(false), gated(0));
    let mut obs = on_key2();
    obs.consumers[1].holding = Holding::Key(K1);
    let c = r.observe(obs);
    assert!(is_finish(&c));
    assert!(matches!(
        r.outcome(),
        Outcome::Refused { reasons } if matches!(&reasons[..], [RefusalReason::NotAllOn { key: K2, others }] if others.len() == 1)
    ));
    let mut r = Run::new(
        Mode::Retire {
            key: K1,
            expect: fp(77),
            since: t(0),
            force: true,
        },
        gated(0),
    );
    let c = r.observe(on_key2());
    assert!(is_finish(&c));
    assert!(matches!(
        r.outcome(),
        Outcome::Refused { reasons } if matches!(reasons[..], [RefusalReason::RetireKeyChanged { key: K1, .. }])
    ));
}

fn unlisted(probable: bool) -> UnlistedConsumer {
    UnlistedConsumer {
        consumer: "keyvault:https://kv/secrets/other".into(),
        subject: "Key Vault secret kv/other".into(),
        holds: "key1".into(),
        how: "its current version holds key1".into(),
        probable,
    }
}

#[test]
fn g12_unlisted_consumers_warn_or_refuse_as_the_plan_says() {
    let mut obs = on_key1();
    obs.unlisted = vec![unlisted(false), unlisted(true)];
    // Warn (the default): the rotation goes on, with a warning per consumer.
    let mut r = Run::new(Mode::Scheduled, opts(0));
    let c = r.observe(obs.clone());
    assert!(matches!(only(&c), Action::Regenerate { .. }));
    let warned: Vec<_> =
        r.m.view()
            .warnings
            .into_iter()
            .filter(|w| w.kind == WarningKind::UnlistedConsumer)
            .collect();
    assert_eq!(warned.len(), 2);
    assert!(
        warned[0]
            .message
            .contains("keyvault:https://kv/secrets/other")
    );
    // Refuse: refused over the one whose value was read; the probable one only warns.
    let mut r = Run::new(
        Mode::Scheduled,
        Options {
            refuse_unlisted: true,
            ..opts(0)
        },
    );
    let c = r.observe(obs.clone());
    assert!(is_finish(&c));
    match r.outcome() {
        Outcome::Refused { reasons } => {
            assert!(
                matches!(&reasons[..], [RefusalReason::UnlistedConsumers { consumers }] if consumers.len() == 1)
            );
            assert!(reasons[0].to_string().contains("plan discover"));
        }
        other => panic!("{other}"),
    }
    // An incident never refuses over them.
    let mut r = Run::new(
        Mode::Leaked {
            key: K1,
            revoke_first: false,
        },
        Options {
            refuse_unlisted: true,
            ..opts(0)
        },
    );
    let c = r.observe(obs);
    assert!(!is_finish(&c));
}

fn unchecked() -> Vec<UncheckedRead> {
    vec![
        UncheckedRead {
            subject: "app settings of func-datasci-ingest".into(),
            why: Unchecked::PutOff,
            detail: "web.appSettings.list: not sent, deferred".into(),
        },
        UncheckedRead {
            subject: "secrets of vault kv-other".into(),
            why: Unchecked::Failed,
            detail: "cannot list them: 403 Forbidden".into(),
        },
    ]
}

/// G13: a check that could not read everything is a warning in the report (the
/// finished outcome's warnings, not only the log) that names what was not read and
/// the complete check.
#[test]
fn g13_an_incomplete_unlisted_check_warns_in_the_report_and_the_rotation_goes_on() {
    let mut obs = on_key1();
    obs.unlisted_unchecked = unchecked();
    let mut r = Run::new(Mode::Scheduled, opts(0));
    let c = r.observe(obs);
    assert!(matches!(only(&c), Action::Regenerate { .. }));
    let c = r.succeed_until(c, |a| matches!(a, Action::Finish { .. }));
    assert!(is_finish(&c), "{c:#?}");
    let Outcome::Completed { warnings, .. } = r.outcome() else {
        panic!("{}", r.outcome())
    };
    let incomplete: Vec<_> = warnings
        .iter()
        .filter(|w| w.kind == WarningKind::UnlistedCheckIncomplete)
        .collect();
    assert_eq!(incomplete.len(), 1, "{warnings:?}");
    let text = &incomplete[0].message;
    for part in [
        "2 read(s)",
        "app settings of func-datasci-ingest (put off",
        "secrets of vault kv-other (cannot list them: 403 Forbidden)",
        "`keyflip doctor --strict`",
    ] {
        assert!(text.contains(part), "{part:?} not in {text}");
    }
    // A complete check warns about nothing of the kind.
    let mut r = Run::new(Mode::Scheduled, opts(0));
    let c = r.observe(on_key1());
    r.succeed_until(c, |a| matches!(a, Action::Finish { .. }));
    let Outcome::Completed { warnings, .. } = r.outcome() else {
        panic!("{}", r.outcome())
    };
    assert!(
        warnings
            .iter()
            .all(|w| w.kind != WarningKind::UnlistedCheckIncomplete),
        "{warnings:?}"
    );
}

/// G13 with `unlisted = "refuse"`: a partial check refuses before any effect, says
/// what was not read and what to do; an incident only warns.
#[test]
fn g13_an_incomplete_unlisted_check_refuses_before_any_effect_when_the_plan_refuses() {
    let mut obs = on_key1();
    obs.unlisted_unchecked = unchecked();
    let refusing = Options {
        refuse_unlisted: true,
        ..opts(0)
    };
    let mut r = Run::new(Mode::Scheduled, refusing);
    let c = r.observe(obs.clone());
    assert!(is_finish(&c), "{c:#?}");
    assert!(
        r.m.issued()
            .all(|c| matches!(c.action, Action::Observe | Action::Finish { .. })),
        "nothing but the observation was issued"
    );
    match r.outcome() {
        Outcome::Refused { reasons } => {
            assert!(
                matches!(&reasons[..], [RefusalReason::UnlistedCheckIncomplete { unchecked }] if unchecked.len() == 2),
                "{reasons:?}"
            );
            let text = reasons[0].to_string();
            for part in [
                "could not make 2 read(s)",
                "app settings of func-datasci-ingest",
                "secrets of vault kv-other",
                "next check",
                "permission",
                "`keyflip doctor --strict`",
            ] {
                assert!(text.contains(part), "{part:?} not in {text}");
            }
        }
        other => panic!("{other}"),
    }
    // The refusal replays as it ran.
    assert_eq!(r.replayed().outcome(), Some(&r.outcome()));
    // With unlisted consumers too, both reasons are given.
    obs.unlisted = vec![unlisted(false)];
    let mut r = Run::new(Mode::Scheduled, refusing);
    r.observe(obs.clone());
    match r.outcome() {
        Outcome::Refused { reasons } => assert_eq!(reasons.len(), 2, "{reasons:?}"),
        other => panic!("{other}"),
    }
    // An incident never refuses over it.
    let mut r = Run::new(
        Mode::Leaked {
            key: K1,
            revoke_first: false,
        },
        refusing,
    );
    let c = r.observe(obs);
    assert!(!is_finish(&c));
}

/// The grace wait's end as the executor sees it ([`Machine::deadline`]) is not before
/// the gate's first check can see the logs, even when the grace is shortened to zero;
/// without this the gate asked the logs before the swap's traffic was in them.
#[test]
fn a_shortened_grace_still_waits_for_the_gates_first_check() {
    let mut r = Run::new(Mode::Scheduled, gated(60));
    let c = r.observe(on_key1());
    let c = r.answer(c[0].seq, checked(vec![]));
    let c = r.succeed_until(c, |a| matches!(a, Action::Commit));
    let c = r.answer(c[0].seq, StepResult::Committed);
    let wait = c[0].clone();
    let committed = r.m.view().committed_at.unwrap();
    let first = committed + TimeDelta::minutes(35);
    assert_eq!(r.m.deadline(&wait), Some(first));
    let c = r.amend(|at| Event::GraceShortened {
        at,
        grace: TimeDelta::zero(),
        by: None,
    });
    assert!(c.is_empty(), "{c:?}");
    assert_eq!(r.m.deadline(&wait), Some(first), "the gate still waits");
    let c = r.answer(wait.seq, StepResult::Waited);
    assert!(matches!(
        only(&c),
        Action::CheckUsage {
            purpose: GatePurpose::Retire,
            ..
        }
    ));
}

/// An incident that takes over a gated swap in its grace (the old key leaked) retires
/// it at once: the gate never holds an incident's retire.
#[test]
fn an_incident_taking_over_a_gated_swap_in_grace_retires_without_the_gate() {
    let mut r = Run::new(Mode::Scheduled, gated(3600));
    let c = r.observe(on_key1());
    let c = r.answer(c[0].seq, checked(vec![]));
    let c = r.succeed_until(c, |a| matches!(a, Action::WaitUntil { .. }));
    let wait = c[0].clone();
    let c = r.amend(|at| Event::Escalated {
        at,
        mode: Mode::Leaked {
            key: K1,
            revoke_first: false,
        },
        by: None,
    });
    assert!(c.is_empty(), "{c:?}");
    let committed = r.m.view().committed_at.unwrap();
    assert_eq!(
        r.m.deadline(&wait),
        Some(committed),
        "no grace, no gate wait"
    );
    let c = r.answer(wait.seq, StepResult::Waited);
    assert!(
        matches!(
            only(&c),
            Action::Regenerate {
                key: K1,
                purpose: Purpose::Retire,
                ..
            }
        ),
        "{c:?}"
    );
    assert_eq!(r.replayed(), r.m);
}
