//! The scheduled swap, the precheck and its refusals.

use super::*;

#[test]
fn starts_with_observe_outstanding() {
    let m = Machine::new(Mode::Scheduled, Options::default());
    assert_eq!(
        m.outstanding(),
        vec![Command {
            seq: 1,
            action: Action::Observe
        }]
    );
    assert_eq!(m.phase(), Phase::Prechecking);
}

#[test]
fn t2_t5_t7_t17_t19_t23_t25_t27_scheduled_swap_in_order() {
    let mut r = Run::new(Mode::Scheduled, opts(3600));
    let c = r.observe(on_key1());
    assert_eq!(
        only(&c),
        &Action::Regenerate {
            key: K2,
            purpose: Purpose::Stage,
            before: on_key1().key2
        }
    );
    assert_eq!(r.m.phase(), Phase::Staging);
    let c = r.answer(
        c[0].seq,
        StepResult::Regenerated {
            fingerprint: fp(22),
            created: Some(t(1)),
        },
    );
    assert!(
        matches!(only(&c), Action::VerifyKey { key: K2, fingerprint, .. } if *fingerprint == fp(22))
    );
    let binds = r.answer(c[0].seq, StepResult::KeyVerified);
    assert_eq!(binds.len(), 3);
    assert!(binds.iter().all(|b| matches!(&b.action,
        Action::Bind { key: K2, fingerprint, .. } if *fingerprint == fp(22))));
    assert_eq!(r.m.phase(), Phase::Binding);
    // T15: nothing new until the whole batch answered.
    assert!(r.answer(binds[0].seq, StepResult::Bound).is_empty());
    assert!(r.answer(binds[2].seq, StepResult::Bound).is_empty());
    let verifies = r.answer(binds[1].seq, StepResult::Bound);
    assert_eq!(verifies.len(), 3);
    assert!(
        verifies
            .iter()
            .all(|v| matches!(&v.action, Action::VerifyConsumer { key: K2, .. }))
    );
    assert_eq!(r.m.phase(), Phase::VerifyingConsumers);
    let c = r.succeed(verifies);
    assert_eq!(only(&c), &Action::Commit);
    let c = r.answer(c[0].seq, StepResult::Committed);
    let committed_at = t(r.now);
    assert_eq!(
        only(&c),
        &Action::WaitUntil {
            at: committed_at + TimeDelta::hours(1)
        }
    );
    assert_eq!(r.m.phase(), Phase::Grace);
    let c = r.answer(c[0].seq, StepResult::Waited);
    assert!(
        matches!(only(&c), Action::Regenerate { key: K1, purpose: Purpose::Retire, before } if before.fingerprint == fp(1))
    );
    let c = r.answer(
        c[0].seq,
        StepResult::Regenerated {
            fingerprint: fp(11),
            created: None,
        },
    );
    assert!(is_finish(&c));
    match r.outcome() {
        Outcome::Completed {
            active,
            regenerated,
            ..
        } => {
            assert_eq!(active, K2);
            assert_eq!(
                regenerated
                    .iter()
                    .map(|g| (g.key, g.purpose, g.before, g.after))
                    .collect::<Vec<_>>(),
                vec![
                    (K2, Purpose::Stage, fp(2), fp(22)),
                    (K1, Purpose::Retire, fp(1), fp(11))
                ]
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(r.m.phase(), Phase::Completed);
    assert_eq!(
        r.m.outstanding(),
        c,
        "only Finish is outstanding after the end"
    );
}

#[test]
fn t24_zero_grace_retires_right_after_commit() {
    let mut r = Run::new(Mode::Scheduled, opts(0));
    let c = r.observe(on_key1());
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
}

#[test]
fn t1_refuses_with_every_reason_and_changes_nothing() {
    let mut obs = observation(vec![
        (kv("a"), Holding::Key(K1)),
        (ds("b"), Holding::Key(K2)),
        (ds("c"), Holding::Neither),
    ]);
    obs.shared_key_access = false;
    obs.missing_permissions = vec![MissingPermission {
        action: "Microsoft.Storage/storageAccounts/regeneratekey/action".into(),
        scope: "/subscriptions/s".into(),
        role_hint: Some("Storage Account Key Operator Service Role".into()),
    }];
    let mut r = Run::new(Mode::Scheduled, Options::default());
    let c = r.observe(obs);
    assert!(is_finish(&c));
    assert_eq!(r.m.issued().len(), 2, "only Observe and Finish");
    let Outcome::Refused { reasons } = r.outcome() else {
        panic!()
    };
    assert!(matches!(
        reasons[0],
        RefusalReason::MissingPermissions { .. }
    ));
    assert!(reasons.contains(&RefusalReason::SharedKeyAccessDisabled));
    assert!(reasons.contains(&RefusalReason::ConsumerHoldsNeither { consumer: ds("c") }));
    assert!(reasons.contains(&RefusalReason::ConsumersSplit {
        on_key1: vec![kv("a").id],
        on_key2: vec![ds("b").id],
    }));
    let text = r.outcome().to_string();
    assert!(
        text.contains("granted by Storage Account Key Operator"),
        "{text}"
    );
    assert_eq!(r.m.phase(), Phase::Refused);
}

#[test]
fn t1_refuses_when_no_consumer_key_is_known_or_keys_are_identical() {
    let unknown = Holding::Unknown {
        why: "Databricks values cannot be read".into(),
    };
    let mut r = Run::new(Mode::Scheduled, Options::default());
    r.observe(observation(vec![(dbx("scope/key"), unknown.clone())]));
    assert_eq!(
        r.outcome(),
        Outcome::Refused {
            reasons: vec![RefusalReason::NoConsumerKeyKnown {
                unknown: vec![dbx("scope/key").id]
            }]
        }
    );

    let mut obs = on_key1();
    obs.key2.fingerprint = obs.key1.fingerprint;
    obs.consumers.push(obs.consumers[0].clone());
    let mut r = Run::new(Mode::Scheduled, Options::default());
    r.observe(obs);
    let Outcome::Refused { reasons } = r.outcome() else {
        panic!()
    };
    assert!(reasons.contains(&RefusalReason::KeysIdentical));
    assert!(reasons.contains(&RefusalReason::DuplicateConsumer {
        consumer: kv("kv/storage-key").id
    }));
}

#[test]
fn unknown_consumers_do_not_decide_or_block_but_are_bound_and_reported() {
    let mut r = Run::new(Mode::Scheduled, opts(0));
    let c = r.observe(observation(vec![
        (ds("a"), Holding::Key(K2)),
        (
            dbx("scope/key"),
            Holding::Unknown {
                why: "never written by keyflip".into(),
            },
        ),
    ]));
    assert!(matches!(
        only(&c),
        Action::Regenerate {
            key: K1,
            purpose: Purpose::Stage,
            ..
        }
    ));
    let binds = r.succeed_until(c, |a| matches!(a, Action::Bind { .. }));
    assert!(
        binds
            .iter()
            .any(|b| b.action.consumer() == Some(&dbx("scope/key")))
    );
    let view = r.m.view();
    assert_eq!((view.active, view.standby), (Some(K2), Some(K1)));
    assert!(
        view.warnings[0].kind == WarningKind::ConsumerNotChecked
            && view.warnings[0]
                .message
                .contains("never written by keyflip"),
        "{:?}",
        view.warnings
    );
}

#[test]
fn t1_an_unusable_consumer_refuses_a_swap_but_only_warns_a_leaked_standby_revoke() {
    let unusable = Holding::Unusable {
        fix: "the scope is backed by Key Vault; list the vault secret instead".into(),
    };
    let mut r = Run::new(Mode::Scheduled, Options::default());
    r.observe(observation(vec![
        (kv("a"), Holding::Key(K1)),
        (dbx("w#kv/k"), unusable.clone()),
    ]));
    assert_eq!(
        r.outcome(),
        Outcome::Refused {
            reasons: vec![RefusalReason::ConsumerUnusable {
                consumer: dbx("w#kv/k"),
                fix: "the scope is backed by Key Vault; list the vault secret instead".into(),
            }]
        }
    );
    assert!(r.outcome().to_string().contains("list the vault secret"));

    let mut r = Run::new(
        Mode::Leaked {
            key: K2,
            revoke_first: false,
        },
        Options::default(),
    );
    let c = r.observe(observation(vec![
        (kv("a"), Holding::Key(K1)),
        (dbx("w#kv/k"), unusable),
    ]));
    assert!(matches!(
        only(&c),
        Action::Regenerate {
            key: K2,
            purpose: Purpose::Revoke,
            ..
        }
    ));
    assert!(
        r.m.view()
            .warnings
            .iter()
            .any(|w| w.kind == WarningKind::ConsumerNotTouched
                && w.message.contains("cannot be rotated by keyflip")),
        "{:?}",
        r.m.view().warnings
    );
}
