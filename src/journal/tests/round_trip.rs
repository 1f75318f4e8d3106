//! Storage round trips, durability, and replay of a stored rotation.

use super::*;

#[test]
fn every_command_and_event_type_round_trips() {
    let mut f = fixture();
    f.journal
        .begin(&rotation("r1", "plan-a", "acct", 0))
        .unwrap();
    let bind = Action::Bind {
        consumer: kv(),
        key: KeyName::Key2,
        fingerprint: fp(22),
    };
    let verify = Action::VerifyConsumer {
        consumer: kv(),
        key: KeyName::Key2,
        fingerprint: fp(22),
    };
    let disable = Action::DisableVersions {
        consumer: kv(),
        fingerprints: vec![fp(1), fp(2)],
    };
    let regenerate = Action::Regenerate {
        key: KeyName::Key2,
        purpose: Purpose::Stage,
        before: observation().key2,
    };
    let verify_key = Action::VerifyKey {
        key: KeyName::Key2,
        fingerprint: fp(22),
        budget: std::time::Duration::from_millis(45_500),
    };
    // Each result answers its own command, so every result type is stored once.
    let pairs: Vec<(Action, StepResult)> = vec![
        (Action::Observe, StepResult::Observed(observation())),
        (
            regenerate.clone(),
            StepResult::Regenerated {
                fingerprint: fp(22),
                created: Some(t(3)),
            },
        ),
        (
            regenerate,
            StepResult::RegenerateFailed { error: why("503") },
        ),
        (verify_key.clone(), StepResult::KeyVerified),
        (verify_key, StepResult::KeyRejected { reason: why("403") }),
        (bind.clone(), StepResult::Bound),
        (bind, StepResult::BindFailed { reason: why("409") }),
        (verify.clone(), StepResult::ConsumerVerified),
        (verify, StepResult::ConsumerMismatch { reason: why("old") }),
        (
            disable.clone(),
            StepResult::VersionsDisabled {
                versions: vec!["abc".into()],
            },
        ),
        (disable, StepResult::DisableFailed { reason: why("403") }),
        (Action::Commit, StepResult::Committed),
        (Action::WaitUntil { at: t(3600) }, StepResult::Waited),
    ];
    let mut events = vec![];
    for (i, (action, result)) in pairs.iter().enumerate() {
        let seq = i as u32 + 1;
        let command = Command {
            seq,
            action: action.clone(),
        };
        f.journal
            .record_intent("r1", &command, t(10 * i64::from(seq)))
            .unwrap();
        let event = answer(seq, 10 * i64::from(seq) + 1, result.clone());
        f.journal
            .record_event("r1", &event, t(10 * i64::from(seq) + 2))
            .unwrap();
        events.push(event);
    }
    let reobserved = Event::Reobserved {
        at: t(500),
        observation: observation(),
    };
    f.journal.record_event("r1", &reobserved, t(500)).unwrap();
    events.push(reobserved);
    let finish = Command {
        seq: 14,
        action: Action::Finish {
            outcome: Box::new(every_outcome().remove(3)),
        },
    };
    f.journal.record_intent("r1", &finish, t(600)).unwrap();

    let stored = Journal::open(&f.path, &fingerprinter())
        .unwrap()
        .unfinished()
        .unwrap();
    assert_eq!(stored.len(), 1);
    let s = &stored[0];
    assert_eq!(s.events, events);
    assert_eq!(
        (
            s.id.as_str(),
            s.plan.as_str(),
            &s.account,
            s.mode,
            s.options,
            s.started_at
        ),
        (
            "r1",
            "plan-a",
            &account("acct"),
            Mode::Scheduled,
            Options::default(),
            t(0)
        )
    );
    assert_eq!(s.steps.len(), 14);
    for (i, (action, result)) in pairs.iter().enumerate() {
        let step = &s.steps[i];
        assert_eq!(&step.command.action, action);
        assert_eq!(step.result.as_ref(), Some(result));
        assert_eq!(step.intent_at, t(10 * (i as i64 + 1)));
        assert_eq!(step.result_at, Some(t(10 * (i as i64 + 1) + 2)));
    }
    assert_eq!(s.steps[13].command, finish);
    assert_eq!(s.in_doubt(), vec![&finish]);

    // Every outcome shape, each in its own rotation.
    for (i, outcome) in every_outcome().iter().enumerate() {
        let id = format!("o{i}");
        f.journal
            .begin(&rotation(
                &id,
                "plan-o",
                &format!("acct{i}"),
                1000 + i as i64,
            ))
            .unwrap();
        f.journal.finish(&id, outcome, t(2000)).unwrap();
    }
    let history = f.journal.history(Some("plan-o"), 100).unwrap();
    let mut found: Vec<Outcome> = history.into_iter().filter_map(|r| r.outcome).collect();
    found.reverse();
    assert_eq!(found, every_outcome());
}

#[test]
fn an_intent_is_durable_and_visible_to_another_connection_when_recorded() {
    let mut f = fixture();
    let (mode, sync): (String, i64) = (
        f.journal
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap(),
        f.journal
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap(),
    );
    assert_eq!(
        (mode.as_str(), sync),
        ("wal", 2),
        "WAL with synchronous=FULL"
    );
    f.journal.begin(&rotation("r1", "p", "acct", 0)).unwrap();
    let command = Command {
        seq: 1,
        action: Action::Observe,
    };
    f.journal.record_intent("r1", &command, t(1)).unwrap();
    // A second, independent connection (as a restarted process would open) sees it.
    let other = rusqlite::Connection::open(&f.path).unwrap();
    let stored: String = other
        .query_row(
            "SELECT command FROM steps WHERE rotation_id = 'r1' AND seq = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        stored.contains("\"schema\":2") && stored.contains("\"observe\""),
        "{stored}"
    );
}

fn step(journal: &mut Journal, m: &mut Machine, event: Event) -> Vec<Command> {
    let cmds = m.handle(&event).unwrap();
    journal.record_event("r1", &event, event.at()).unwrap();
    cmds
}

#[test]
fn a_stored_rotation_replays_to_the_same_machine_and_in_doubt_commands() {
    let mut f = fixture();
    let options = Options::default();
    f.journal.begin(&rotation("r1", "p", "acct", 0)).unwrap();
    let mut m = Machine::new(Mode::Scheduled, options);
    for c in m.outstanding() {
        f.journal.record_intent("r1", &c, t(0)).unwrap();
    }
    let mut obs = observation();
    obs.missing_permissions.clear();
    let c = step(
        &mut f.journal,
        &mut m,
        answer(1, 1, StepResult::Observed(obs)),
    );
    f.journal.record_intent("r1", &c[0], t(1)).unwrap();
    let regenerated = StepResult::Regenerated {
        fingerprint: fp(22),
        created: Some(t(2)),
    };
    let c = step(&mut f.journal, &mut m, answer(c[0].seq, 2, regenerated));
    f.journal.record_intent("r1", &c[0], t(2)).unwrap();
    let binds = step(
        &mut f.journal,
        &mut m,
        answer(c[0].seq, 3, StepResult::KeyVerified),
    );
    assert_eq!(binds.len(), 2);
    // Crash after the first bind's intent: the second was never started.
    f.journal.record_intent("r1", &binds[0], t(3)).unwrap();
    drop(f.journal);

    let journal = Journal::open(&f.path, &fingerprinter()).unwrap();
    let stored = journal.unfinished().unwrap();
    let replayed = stored[0].replay().unwrap();
    assert_eq!(replayed, m);
    assert_eq!(replayed.outstanding(), binds);
    assert_eq!(stored[0].in_doubt(), vec![&binds[0]]);
}

#[test]
fn replay_refuses_a_journal_that_disagrees_with_the_machine() {
    let mut f = fixture();
    f.journal.begin(&rotation("r1", "p", "acct", 0)).unwrap();
    let other = Command {
        seq: 1,
        action: Action::Commit,
    };
    f.journal.record_intent("r1", &other, t(0)).unwrap();
    let err = f.journal.unfinished().unwrap()[0].replay().unwrap_err();
    assert!(
        matches!(&err, ResumeError::Diverged { seq: 1, rotation_id, .. } if rotation_id == "r1"),
        "{err}"
    );
    assert!(err.to_string().contains("`commit the swap`"), "{err}");
}

#[test]
fn origins_and_amendments_round_trip() {
    use crate::rotation::{Origin, Requester, Trigger};
    let mut f = fixture();
    let by = Requester {
        uid: Some(1000),
        user: Some("alice".into()),
        reason: Some("key in a gist".into()),
        ticket: Some("INC-9".into()),
    };
    let mut new = rotation("r1", "plan-a", "acct", 0);
    new.origin = Origin {
        trigger: Trigger::Incident,
        by: Some(by.clone()),
        follows: Some("r0".into()),
    };
    f.journal.begin(&new).unwrap();
    let events = [
        Event::Escalated {
            at: t(1),
            mode: Mode::LeakedBoth,
            by: Some(by.clone()),
        },
        Event::GraceShortened {
            at: t(2),
            grace: chrono::TimeDelta::seconds(30),
            by: None,
        },
    ];
    for e in &events {
        f.journal.record_event("r1", e, e.at()).unwrap();
    }
    let record = f.journal.rotation("r1").unwrap().unwrap();
    assert_eq!(record.origin, Some(new.origin.clone()));
    assert_eq!(f.journal.events_of("r1").unwrap(), events.to_vec());
    assert_eq!(f.journal.unfinished().unwrap()[0].origin, Some(new.origin));
}
