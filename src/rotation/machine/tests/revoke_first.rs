//! A revoke first that revokes on the keys alone (`Options::revoke_before_reads`, the
//! module `revoke_first`): keys read, revoke, then the consumers and the route.

use super::*;

fn revoke_first(key: KeyName) -> Mode {
    Mode::Leaked {
        key,
        revoke_first: true,
    }
}

fn keys_only() -> Observation {
    Observation {
        consumers: vec![],
        ..on_key1()
    }
}

fn gate() -> GateOptions {
    GateOptions {
        quiet: TimeDelta::seconds(60),
        recheck: TimeDelta::seconds(30),
        deadline: TimeDelta::seconds(400),
        latency: TimeDelta::seconds(30),
        lookback: TimeDelta::seconds(600),
    }
}

/// `obs` as read after the revoke of `key` gave it `fresh`: holdings against the keys
/// as they were before (what `ObserveAfterRevoke` answers).
fn after_revoke(mut obs: Observation, key: KeyName, fresh: Fingerprint) -> Observation {
    let state = KeyState {
        fingerprint: fresh,
        created: Some(t(1000)),
    };
    match key {
        KeyName::Key1 => obs.key1 = state,
        KeyName::Key2 => obs.key2 = state,
    }
    obs
}

/// The keys-only observation answered: the revoke is the only command, before any
/// consumer was read, and no route is decided yet.
#[test]
fn the_keys_alone_are_read_then_the_leaked_key_is_revoked() {
    let mut r = Run::new(revoke_first(K1), Options::default());
    assert_eq!(
        r.m.outstanding()
            .iter()
            .map(|c| &c.action)
            .collect::<Vec<_>>(),
        vec![&Action::ObserveKeys]
    );
    let c = r.observe(keys_only());
    assert_eq!(
        only(&c),
        &Action::Regenerate {
            key: K1,
            purpose: Purpose::Revoke,
            before: on_key1().key1,
        }
    );
    assert_eq!(r.m.phase(), Phase::Revoking);
    assert_eq!(
        r.m.view().route,
        None,
        "nothing decided before the consumers are read"
    );
    // After the revoke, the consumers against the keys as they were before it.
    let c = r.answer(c[0].seq, success(&c[0]));
    assert_eq!(
        only(&c),
        &Action::ObserveAfterRevoke {
            key: K1,
            leaked: fp(1)
        }
    );
}

/// Consumers that held the leaked value move to the revoked key's fresh value,
/// verified on the data plane first; its leaked Key Vault versions are disabled.
#[test]
fn consumers_on_the_leaked_value_move_to_its_fresh_value() {
    let mut r = Run::new(revoke_first(K1), Options::default());
    let c = r.observe(keys_only());
    let fresh = fp(500);
    r.answer(
        c[0].seq,
        StepResult::Regenerated {
            fingerprint: fresh,
            created: Some(t(5)),
        },
    );
    let c = r.answer(3, StepResult::Observed(after_revoke(on_key1(), K1, fresh)));
    assert!(matches!(
        only(&c),
        Action::VerifyKey { key: K1, fingerprint, .. } if *fingerprint == fresh
    ));
    let view = r.m.view();
    assert_eq!(
        view.route,
        Some(Route::LeakedActive {
            revoke_first: true,
            stage_standby: false
        })
    );
    assert_eq!((view.active, view.standby), (Some(K1), Some(K2)));
    let c = r.succeed_until(c, |a| matches!(a, Action::Bind { .. }));
    assert_eq!(c.len(), 3, "every consumer in one round: {c:#?}");
    assert!(c.iter().all(|c| matches!(
        &c.action,
        Action::Bind { key: K1, fingerprint, .. } if *fingerprint == fresh
    )));
    let c = r.succeed_until(c, |a| matches!(a, Action::DisableVersions { .. }));
    assert!(matches!(
        only(&c),
        Action::DisableVersions { fingerprints, .. } if fingerprints == &vec![fp(1)]
    ));
    r.succeed(c);
    match r.outcome() {
        Outcome::Completed {
            active,
            regenerated,
            ..
        } => {
            assert_eq!(active, K1);
            assert_eq!(regenerated.len(), 1, "only the revoke: {regenerated:?}");
            assert_eq!(regenerated[0].before, fp(1));
            assert_eq!(regenerated[0].after, fresh);
        }
        other => panic!("{other}"),
    }
    assert_eq!(regenerations(&r.m), vec![(K1, Purpose::Revoke)]);
}

/// The leaked key turns out to be the standby: nobody moves, only cleanup.
#[test]
fn a_leaked_standby_found_after_the_revoke_moves_nobody() {
    let mut r = Run::new(revoke_first(K2), Options::default());
    let c = r.observe(keys_only());
    let c = r.succeed(c);
    assert!(matches!(only(&c), Action::ObserveAfterRevoke { key: K2, leaked } if *leaked == fp(2)));
    let fresh = fp(100 + 10 * (K2 as u32) + Purpose::Revoke as u32);
    let c = r.answer(
        c[0].seq,
        StepResult::Observed(after_revoke(on_key1(), K2, fresh)),
    );
    assert!(
        c.iter().all(|c| matches!(&c.action, Action::DisableVersions { fingerprints, .. } if fingerprints == &vec![fp(2)])),
        "{c:#?}"
    );
    assert_eq!(r.m.view().route, Some(Route::LeakedStandby));
    r.succeed(c);
    assert!(matches!(r.outcome(), Outcome::Completed { active: K1, .. }));
    assert!(
        !r.m.issued()
            .any(|c| matches!(c.action, Action::Bind { .. } | Action::VerifyKey { .. }))
    );
}

/// What would have refused the rotation before any effect now parks after the revoke,
/// naming the reasons and `--adopt`.
#[test]
fn split_consumers_found_after_the_revoke_park_with_adopt() {
    let mut r = Run::new(revoke_first(K1), Options::default());
    let c = r.observe(keys_only());
    let c = r.succeed(c);
    let split = observation(vec![
        (kv("a"), Holding::Key(K1)),
        (ds("b"), Holding::Key(K2)),
    ]);
    let fresh = fp(100 + 10 * (K1 as u32) + Purpose::Revoke as u32);
    let c = r.answer(
        c[0].seq,
        StepResult::Observed(after_revoke(split, K1, fresh)),
    );
    assert!(is_finish(&c));
    let outcome = r.outcome();
    let Outcome::NeedsAttention {
        reason: Attention::NotMovedAfterRevoke { key, reasons },
        ..
    } = &outcome
    else {
        panic!("{outcome}")
    };
    assert_eq!(*key, K1);
    assert!(
        matches!(reasons[0], RefusalReason::ConsumersSplit { .. }),
        "{reasons:?}"
    );
    let text = outcome.to_string();
    assert!(
        text.contains("revoked first") && text.contains("`keyflip rotate now PLAN --adopt`"),
        "{text}"
    );
    assert_eq!(regenerations(&r.m), vec![(K1, Purpose::Revoke)]);
}

/// A consumer permission keyflip lacks, or a consumer it cannot rotate, also parks.
#[test]
fn a_missing_consumer_permission_found_after_the_revoke_parks() {
    let mut r = Run::new(revoke_first(K1), Options::default());
    let c = r.observe(keys_only());
    let c = r.succeed(c);
    let fresh = fp(100 + 10 * (K1 as u32) + Purpose::Revoke as u32);
    let mut obs = after_revoke(on_key1(), K1, fresh);
    obs.missing_permissions.push(MissingPermission {
        action: "Microsoft.KeyVault/vaults/secrets/setSecret/action".into(),
        scope: "https://kv.vault.azure.net".into(),
        role_hint: None,
    });
    r.answer(c[0].seq, StepResult::Observed(obs));
    assert!(matches!(
        r.outcome(),
        Outcome::NeedsAttention {
            reason: Attention::NotMovedAfterRevoke { .. },
            ..
        }
    ));
}

/// Only what makes the revoke impossible or wrong refuses, before anything changed.
#[test]
fn only_a_missing_account_permission_or_identical_keys_refuse_before_the_revoke() {
    let mut missing = keys_only();
    missing.missing_permissions.push(MissingPermission {
        action: "Microsoft.Storage/storageAccounts/regeneratekey/action".into(),
        scope: "/subscriptions/s/resourceGroups/g/providers/Microsoft.Storage/storageAccounts/a"
            .into(),
        role_hint: None,
    });
    let mut identical = keys_only();
    identical.key2.fingerprint = identical.key1.fingerprint;
    for (obs, reason) in [
        (missing, "missing permissions"),
        (identical, "same fingerprint"),
    ] {
        let mut r = Run::new(revoke_first(K1), Options::default());
        let c = r.observe(obs);
        assert!(is_finish(&c));
        let outcome = r.outcome();
        assert!(
            matches!(outcome, Outcome::Refused { .. }) && outcome.to_string().contains(reason),
            "{outcome}"
        );
    }
    // Shared-key access off only warns: the leaked value dies whatever it is.
    let mut off = keys_only();
    off.shared_key_access = false;
    let mut r = Run::new(revoke_first(K1), Options::default());
    let c = r.observe(off);
    assert!(matches!(
        only(&c),
        Action::Regenerate {
            key: K1,
            purpose: Purpose::Revoke,
            ..
        }
    ));
}

/// The incident's usage report (up to 10 s) comes after the revoke, beside the read of
/// the consumers, about the leaked value, in the words it had before the revoke.
#[test]
fn the_usage_report_follows_the_revoke_beside_the_consumer_read() {
    let options = Options {
        usage_gate: Some(gate()),
        ..Options::default()
    };
    let mut r = Run::new(revoke_first(K1), options);
    let c = r.observe(keys_only());
    assert!(matches!(
        only(&c),
        Action::Regenerate {
            purpose: Purpose::Revoke,
            ..
        }
    ));
    let c = r.succeed(c);
    assert_eq!(c.len(), 2, "{c:#?}");
    assert!(matches!(
        c[0].action,
        Action::ObserveAfterRevoke { key: K1, .. }
    ));
    assert!(matches!(
        &c[1].action,
        Action::CheckUsage { key: K1, fingerprint, purpose: GatePurpose::Incident, .. } if *fingerprint == fp(1)
    ));
    // The report answers first: nothing moves until the consumers are read too.
    let caller = Caller {
        ip: "10.0.0.9".into(),
        user_agent: "etl".into(),
        operation: "GetBlob".into(),
        authentication: "AccountKey".into(),
        requests: 4,
        first_seen: t(-100),
        last_seen: t(-1),
    };
    let next = r.answer(
        c[1].seq,
        StepResult::UsageChecked {
            until: t(10),
            callers: vec![caller],
        },
    );
    assert!(next.is_empty());
    let next = r.answer(c[0].seq, success(&c[0]));
    assert!(matches!(only(&next), Action::VerifyKey { key: K1, .. }));
    let warnings = r.m.view().warnings;
    assert!(
        warnings.iter().any(|w| w.to_string().contains(
            "1 caller(s) signed with the leaked key1 recently and break now that it is regenerated"
        )),
        "{warnings:?}"
    );
}

/// A crash with the revoke in flight: replay has the same revoke outstanding (never
/// the other key), a restart's observation that shows the leaked key changed is the
/// revoke in doubt, not drift, and the run goes on from the revoke's answer.
#[test]
fn a_crash_around_the_revoke_resumes_and_never_regenerates_the_other_key() {
    let mut r = Run::new(revoke_first(K1), Options::default());
    let c = r.observe(keys_only());
    let revoke = c[0].clone();
    // Crash with the intent recorded, no result.
    let mut m = r.replayed();
    assert_eq!(m.outstanding(), vec![revoke.clone()]);
    let fresh = fp(700);
    let reobserved = Event::Reobserved {
        at: t(50),
        observation: after_revoke(on_key1(), K1, fresh),
    };
    assert!(m.handle(&reobserved).unwrap().is_empty());
    assert_eq!(
        m.outstanding(),
        vec![revoke.clone()],
        "the revoke is reconciled, not another"
    );
    let c = m
        .handle(&Event::Answer {
            seq: revoke.seq,
            at: t(51),
            result: StepResult::Regenerated {
                fingerprint: fresh,
                created: Some(t(51)),
            },
        })
        .unwrap();
    assert!(matches!(
        only(&c),
        Action::ObserveAfterRevoke { key: K1, .. }
    ));

    // A crash after the revoke's result, before the consumers answered: the read is
    // outstanding again; a key changed again since parks (drift), nothing more.
    let mut r = Run::new(revoke_first(K1), Options::default());
    let c = r.observe(keys_only());
    let c = r.answer(
        c[0].seq,
        StepResult::Regenerated {
            fingerprint: fresh,
            created: Some(t(2)),
        },
    );
    let mut m = r.replayed();
    assert_eq!(m.outstanding(), c);
    let mut same = m.clone();
    assert!(
        same.handle(&Event::Reobserved {
            at: t(60),
            observation: after_revoke(on_key1(), K1, fresh),
        })
        .unwrap()
        .is_empty()
    );
    let c = m
        .handle(&Event::Reobserved {
            at: t(60),
            observation: after_revoke(on_key1(), K1, fp(800)),
        })
        .unwrap();
    assert!(is_finish(&c));
    assert!(matches!(
        m.outcome(),
        Some(Outcome::NeedsAttention {
            reason: Attention::Drift { .. },
            ..
        })
    ));
    assert!(
        regenerations(&m)
            .iter()
            .all(|(k, p)| *k == K1 && *p == Purpose::Revoke)
    );
}

/// A revoke that keeps failing parks with the leaked key still valid, as any revoke.
#[test]
fn a_revoke_first_that_keeps_failing_parks_before_any_consumer_is_read() {
    let options = Options {
        retire_attempts: 2,
        ..Options::default()
    };
    let mut r = Run::new(revoke_first(K1), options);
    let c = r.observe(keys_only());
    let c = r.answer(c[0].seq, StepResult::RegenerateFailed { error: why("503") });
    assert!(matches!(only(&c), Action::WaitUntil { .. }));
    let c = r.succeed(c);
    assert!(matches!(
        only(&c),
        Action::Regenerate {
            key: K1,
            purpose: Purpose::Revoke,
            ..
        }
    ));
    r.answer(c[0].seq, StepResult::RegenerateFailed { error: why("503") });
    assert!(matches!(
        r.outcome(),
        Outcome::NeedsAttention {
            reason: Attention::RetriesExhausted {
                key: K1,
                purpose: Purpose::Revoke,
                ..
            },
            ..
        }
    ));
    assert!(!r.m.issued().any(|c| matches!(
        c.action,
        Action::Observe | Action::ObserveAfterRevoke { .. }
    )));
}

/// A revoke first journaled before the revoke came first (its options without
/// `revoke_before_reads`) replays and resumes in the order it ran: everything read,
/// the standby probed, then the revoke.
#[test]
fn a_revoke_first_journaled_before_replays_in_its_old_order() {
    let stored = r#"{"grace_ms":0,"verify_budget_ms":60000,"retire_attempts":8,"resync":"last"}"#;
    let options: Options = serde_json::from_str(stored).unwrap();
    assert!(!options.revoke_before_reads);
    let mut r = Run::new(revoke_first(K1), options);
    assert!(matches!(only(&r.m.outstanding()), Action::Observe));
    let c = r.observe(on_key1());
    assert!(
        matches!(only(&c), Action::VerifyKey { key: K2, .. }),
        "{c:#?}"
    );
    // And a new rotation's options say so in the journal.
    let json = serde_json::to_value(Options::default()).unwrap();
    assert_eq!(json["revoke_before_reads"], true);
}
