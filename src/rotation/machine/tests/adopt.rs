//! `--adopt`: every consumer moves to one key that works now, nothing is regenerated,
//! and nothing rolls back once a consumer was bound.

use super::*;

fn adopt(key: Option<KeyName>) -> Mode {
    Mode::Adopt { key }
}

/// key1 regenerated behind keyflip's back: consumers that held it hold neither key.
fn down_after_key1_regenerated() -> Observation {
    let mut obs = observation(vec![
        (kv("kv/storage-key"), Holding::Neither),
        (ds("ws/ds-a"), Holding::Neither),
        (
            dbx("scope/key"),
            Holding::Unknown {
                why: "never written".into(),
            },
        ),
        (ws("ws"), Holding::Neither),
    ]);
    obs.key1.created = Some(t(-60));
    obs.key2.created = Some(t(-86_400));
    obs
}

#[test]
fn consumers_down_after_an_outside_regeneration_move_to_the_newest_key_workspace_last() {
    let mut r = Run::new(adopt(None), opts(3600));
    let c = r.observe(down_after_key1_regenerated());
    assert_eq!(r.m.view().route, Some(Route::Adopt));
    assert_eq!(
        r.m.view().standby,
        Some(K1),
        "the newest: a resync takes it"
    );
    assert!(
        matches!(only(&c), Action::VerifyKey { key: K1, fingerprint, .. } if *fingerprint == fp(1)),
        "{c:?}"
    );
    let binds = r.succeed(c);
    assert_eq!(
        binds.len(),
        3,
        "everyone but the workspace first: {binds:?}"
    );
    assert!(binds.iter().all(|b| matches!(&b.action, Action::Bind { key: K1, consumer, .. } if !steered_by_azure(consumer))));
    let c = r.succeed_until(binds, |a| matches!(a, Action::Commit));
    let c = r.succeed(c);
    assert!(is_finish(&c), "no grace, no retire: {c:?}");
    assert!(matches!(
        r.outcome(),
        Outcome::Completed {
            active: K1,
            ref regenerated,
            ..
        } if regenerated.is_empty()
    ));
    assert!(regenerations(&r.m).is_empty());
    assert_eq!(r.replayed(), r.m);
}

#[test]
fn without_a_workspace_split_consumers_move_to_the_key_most_of_them_hold() {
    let obs = observation(vec![
        (kv("a"), Holding::Key(K2)),
        (ds("ws/b"), Holding::Key(K2)),
        (ds("ws/c"), Holding::Key(K1)),
    ]);
    let mut r = Run::new(adopt(None), Options::default());
    let c = r.observe(obs.clone());
    assert!(matches!(only(&c), Action::VerifyKey { key: K2, .. }));
    // Asked for explicitly, the other key is fine too: no workspace picks for itself.
    let mut r = Run::new(adopt(Some(K1)), Options::default());
    let c = r.observe(obs);
    assert!(matches!(only(&c), Action::VerifyKey { key: K1, .. }));
}

#[test]
fn a_key_a_workspace_resync_would_not_take_is_refused() {
    let mut r = Run::new(adopt(Some(K2)), Options::default());
    let c = r.observe(down_after_key1_regenerated());
    assert!(is_finish(&c));
    let Outcome::Refused { reasons } = r.outcome() else {
        panic!("{:?}", r.outcome())
    };
    assert_eq!(
        reasons,
        vec![RefusalReason::AdoptNotNewest {
            key: K2,
            newest: K1
        }]
    );
}

#[test]
fn only_what_no_key_can_fix_refuses() {
    let mut obs = down_after_key1_regenerated();
    obs.shared_key_access = false;
    obs.consumers.push(ObservedConsumer {
        consumer: dbx("kvscope/key"),
        holding: Holding::Unusable {
            fix: "list the vault secret".into(),
        },
    });
    let mut r = Run::new(adopt(None), Options::default());
    r.observe(obs);
    let Outcome::Refused { reasons } = r.outcome() else {
        panic!("{:?}", r.outcome())
    };
    assert!(reasons.contains(&RefusalReason::SharedKeyAccessDisabled));
    assert!(
        reasons
            .iter()
            .any(|r| matches!(r, RefusalReason::ConsumerUnusable { .. }))
    );
    assert!(
        !reasons.iter().any(RefusalReason::adoptable),
        "neither and split never refuse an adopt: {reasons:?}"
    );
}

#[test]
fn a_failed_bind_goes_forward_then_parks_naming_the_command_again() {
    let options = Options {
        retire_attempts: 2,
        ..Options::default()
    };
    let mut r = Run::new(adopt(None), options);
    let c = r.observe(down_after_key1_regenerated());
    let binds = r.succeed(c);
    let mut next = Vec::new();
    for b in &binds {
        let result = match &b.action {
            Action::Bind { consumer, .. } if consumer.kind() == ConsumerKind::Datastore => {
                failed("409 Conflict")
            }
            _ => StepResult::Bound,
        };
        next.extend(r.answer(b.seq, result));
    }
    // Never back: a backoff, then the failed one again.
    assert!(matches!(only(&next), Action::WaitUntil { .. }), "{next:?}");
    let again = r.succeed(next);
    assert!(
        matches!(only(&again), Action::Bind { consumer, key: K1, .. } if consumer.kind() == ConsumerKind::Datastore)
    );
    let c = r.answer(again[0].seq, failed("409 Conflict"));
    assert!(is_finish(&c));
    let Outcome::NeedsAttention {
        reason:
            Attention::NotAdopted {
                key,
                consumers,
                attempts,
            },
        ..
    } = r.outcome()
    else {
        panic!("{:?}", r.outcome())
    };
    assert_eq!((key, attempts, consumers.len()), (K1, 2, 1));
    assert!(
        r.outcome()
            .to_string()
            .contains("`keyflip rotate now PLAN --adopt` again")
    );
    assert!(
        !r.m.issued()
            .any(|c| matches!(c.action, Action::Bind { key: K2, .. })),
        "nothing bound back"
    );
}

#[test]
fn refusals_that_leave_consumers_split_or_down_name_adopt() {
    let mut r = Run::new(Mode::Scheduled, Options::default());
    r.observe(observation(vec![
        (kv("a"), Holding::Key(K1)),
        (ds("ws/b"), Holding::Key(K2)),
        (ds("ws/c"), Holding::Neither),
    ]));
    let Outcome::Refused { reasons } = r.outcome() else {
        panic!("{:?}", r.outcome())
    };
    for reason in &reasons {
        assert!(reason.adoptable(), "{reason:?}");
        assert!(reason.to_string().contains("--adopt"), "{reason}");
    }
}
