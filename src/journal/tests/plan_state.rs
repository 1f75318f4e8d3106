//! The daemon's per-plan memory, and the migration that added it.

use super::*;

fn full_state() -> PlanState {
    PlanState {
        plan: "demo".into(),
        first_seen: t(0),
        last_started: Some(t(10)),
        last_success: Some(t(20)),
        failures: 2,
        retry_at: Some(t(30)),
        parked: Some(Parked {
            at: t(40),
            reason: "3 failed cycles in a row".into(),
        }),
        observed: Some(ObservedKeys {
            at: t(50),
            key1: KeyState {
                fingerprint: fp(1),
                created: Some(t(-100)),
            },
            key2: KeyState {
                fingerprint: fp(2),
                created: None,
            },
        }),
    }
}

#[test]
fn plan_state_round_trips_and_is_replaced_whole() {
    let mut f = fixture();
    assert_eq!(f.journal.plan_state("demo").unwrap(), None);
    let state = full_state();
    f.journal.save_plan_state(&state).unwrap();
    f.journal
        .save_plan_state(&PlanState::new("other", t(1)))
        .unwrap();
    assert_eq!(f.journal.plan_state("demo").unwrap(), Some(state.clone()));

    let mut cleared = state.clone();
    cleared.parked = None;
    cleared.observed = None;
    cleared.failures = 0;
    f.journal.save_plan_state(&cleared).unwrap();
    drop(f.journal);
    let reopened = Journal::open(&f.path, &fingerprinter()).unwrap();
    let names: Vec<_> = reopened
        .plan_states()
        .unwrap()
        .into_iter()
        .map(|s| (s.plan.clone(), s))
        .collect();
    assert_eq!(names.len(), 2);
    assert_eq!(names[0].1, cleared);
    assert_eq!(names[1].1, PlanState::new("other", t(1)));
}

#[test]
fn a_version_1_journal_is_migrated_and_its_rotations_stay_readable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    {
        let mut f = Journal::open(&path, &fingerprinter()).unwrap();
        f.begin(&rotation("r1", "demo", "acct", 0)).unwrap();
    }
    // Turn it back into what keyflip 0.1 wrote: no plan_state (nor the later
    // write_marks and origin), schema version 1.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "DROP TABLE plan_state; DROP TABLE write_marks; ALTER TABLE rotations DROP COLUMN origin;
         UPDATE meta SET value = '1' WHERE name = 'schema_version';",
    )
    .unwrap();
    drop(conn);

    let mut journal = Journal::open(&path, &fingerprinter()).unwrap();
    let version: String = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row(
            "SELECT value FROM meta WHERE name = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION.to_string());
    assert_eq!(SCHEMA_VERSION, 7);
    let unfinished = journal.unfinished().unwrap();
    assert_eq!(unfinished.len(), 1);
    assert_eq!(unfinished[0].id, "r1");
    assert_eq!(unfinished[0].origin, None, "written before origins were");
    journal.save_plan_state(&full_state()).unwrap();
    assert_eq!(journal.plan_state("demo").unwrap(), Some(full_state()));
}

#[test]
fn an_unreadable_plan_state_names_the_plan_and_column() {
    let mut f = fixture();
    f.journal.save_plan_state(&full_state()).unwrap();
    rusqlite::Connection::open(&f.path)
        .unwrap()
        .execute("UPDATE plan_state SET key1_fp = 'zz'", [])
        .unwrap();
    let err = f.journal.plan_state("demo").unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("plan state of demo") && text.contains("key1_fp"),
        "{text}"
    );
}

#[test]
fn last_successes_are_every_plans_last_completed_rotation_in_one_query() {
    let mut f = fixture();
    let observe = Command {
        seq: 1,
        action: Action::Observe,
    };
    let repair = Command {
        seq: 1,
        action: Action::Bind {
            consumer: kv(),
            key: KeyName::Key2,
            fingerprint: fp(2),
        },
    };
    let completed = || every_outcome().remove(0);
    let rolled_back = || every_outcome().remove(1);
    // (id, plan, account, start, first step, outcome, finished)
    let rows = [
        ("r1", "a", "acct-a", 0, &observe, completed(), 50),
        ("r2", "a", "acct-a", 100, &observe, completed(), 150),
        // A drift repair (its first step binds) is not a rotation.
        ("r3", "a", "acct-a", 200, &repair, completed(), 300),
        ("r4", "b", "acct-b", 0, &observe, rolled_back(), 60),
        ("r5", "c", "acct-c", 0, &observe, completed(), 70),
    ];
    for (id, plan, acct, start, first, outcome, end) in rows {
        f.journal.begin(&rotation(id, plan, acct, start)).unwrap();
        f.journal.record_intent(id, first, t(start + 1)).unwrap();
        f.journal.finish(id, &outcome, t(end)).unwrap();
    }
    // Started and unfinished: no success either.
    f.journal.begin(&rotation("r6", "d", "acct-d", 0)).unwrap();
    f.journal.record_intent("r6", &observe, t(1)).unwrap();

    let all = f.journal.last_successes().unwrap();
    assert_eq!(all.get("a"), Some(&t(150)));
    assert_eq!(all.get("c"), Some(&t(70)));
    assert_eq!(all.len(), 2, "{all:?}");
    // The same answer the per-plan query gives.
    for plan in ["a", "b", "c", "d"] {
        assert_eq!(
            all.get(plan).copied(),
            f.journal.last_success(plan).unwrap(),
            "{plan}"
        );
    }
}
