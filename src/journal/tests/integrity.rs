//! What the journal refuses: a second rotation of one account, a foreign
//! fingerprint key, a newer schema, corrupt rows, out-of-order recording.

use super::*;

#[test]
fn begin_refuses_a_second_unfinished_rotation_of_the_same_account() {
    let mut f = fixture();
    f.journal
        .begin(&rotation("r1", "plan-a", "acct", 0))
        .unwrap();
    let mut same = rotation("r2", "plan-b", "ACCT", 5);
    same.account = account("acct").as_str().to_uppercase().parse().unwrap();
    let err = f.journal.begin(&same).unwrap_err();
    let JournalError::Busy {
        rotation_id,
        plan,
        started_at,
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(
        (rotation_id.as_str(), plan.as_str(), *started_at),
        ("r1", "plan-a", t(0))
    );
    assert!(err.to_string().contains("keyflip rotate resume"));
    // Another account is not affected; a finished rotation no longer blocks.
    f.journal
        .begin(&rotation("r3", "plan-c", "other", 6))
        .unwrap();
    f.journal
        .finish("r1", &every_outcome().remove(0), t(9))
        .unwrap();
    f.journal.begin(&same).unwrap();
}

/// Drives a machine the way the executor does: intent before, event after.
#[test]
fn reopening_with_another_fingerprint_key_fails_clearly() {
    let f = fixture();
    drop(f.journal);
    let err = Journal::open(&f.path, &Fingerprinter::from_bytes(b"another key")).unwrap_err();
    assert!(
        matches!(err, JournalError::FingerprintKeyMismatch { .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains(&f.path.display().to_string()), "{text}");
    assert!(text.contains("fingerprint.key"), "{text}");
    // The right key still opens it.
    Journal::open(&f.path, &fingerprinter()).unwrap();
}

#[test]
fn a_journal_from_a_newer_keyflip_is_refused() {
    let f = fixture();
    f.journal
        .conn
        .execute(
            "UPDATE meta SET value = '99' WHERE name = 'schema_version'",
            [],
        )
        .unwrap();
    drop(f.journal);
    let err = Journal::open(&f.path, &fingerprinter()).unwrap_err();
    assert!(
        matches!(&err, JournalError::NewerSchema { found, supported: SCHEMA_VERSION, .. } if found == "99"),
        "{err}"
    );
}

fn tamper(path: &Path, sql: &str) {
    rusqlite::Connection::open(path)
        .unwrap()
        .execute(sql, [])
        .unwrap();
}

#[test]
fn a_corrupt_row_is_an_error_naming_the_rotation_and_row() {
    let mut f = fixture();
    f.journal.begin(&rotation("r1", "p", "acct", 0)).unwrap();
    for seq in 1..=2 {
        let command = Command {
            seq,
            action: Action::Commit,
        };
        f.journal.record_intent("r1", &command, t(0)).unwrap();
    }
    f.journal
        .record_event("r1", &answer(1, 1, StepResult::Committed), t(1))
        .unwrap();

    tamper(
        &f.path,
        "UPDATE steps SET command = '{\"schema\":1,' WHERE seq = 2",
    );
    for err in [
        f.journal.unfinished().unwrap_err(),
        f.journal.history(None, 10).unwrap_err(),
    ] {
        let JournalError::Corrupt {
            rotation_id, row, ..
        } = &err
        else {
            panic!("{err}")
        };
        assert_eq!(
            (rotation_id.as_str(), row.as_str()),
            ("r1", "steps, seq 2, command")
        );
        assert!(err.to_string().contains(&f.path.display().to_string()));
    }

    tamper(&f.path, "DELETE FROM steps WHERE seq = 2");
    tamper(
        &f.path,
        "UPDATE events SET event = '{\"schema\":1,\"body\":{\"event\":\"nope\"}}'",
    );
    let err = f.journal.unfinished().unwrap_err();
    assert!(
        matches!(&err, JournalError::Corrupt { row, .. } if row == "events, #1"),
        "{err}"
    );
    tamper(
        &f.path,
        "UPDATE events SET event = '{\"schema\":7,\"body\":{}}'",
    );
    let err = f.journal.unfinished().unwrap_err();
    assert!(err.to_string().contains("upgrade keyflip"), "{err}");
}

#[test]
fn misuse_is_refused_with_a_precise_error() {
    let mut f = fixture();
    let observe = Command {
        seq: 1,
        action: Action::Observe,
    };
    assert!(matches!(
        f.journal.record_intent("nope", &observe, t(0)),
        Err(JournalError::UnknownRotation { .. })
    ));
    f.journal.begin(&rotation("r1", "p", "acct", 0)).unwrap();
    assert!(matches!(
        f.journal
            .record_event("r1", &answer(1, 1, StepResult::Committed), t(1)),
        Err(JournalError::NoIntent { seq: 1, .. })
    ));
    f.journal.record_intent("r1", &observe, t(1)).unwrap();
    // Recording the same intent again (a restarted executor) is fine.
    f.journal.record_intent("r1", &observe, t(2)).unwrap();
    let other = Command {
        seq: 1,
        action: Action::Commit,
    };
    assert!(matches!(
        f.journal.record_intent("r1", &other, t(2)),
        Err(JournalError::IntentConflict { seq: 1, .. })
    ));
    let observed = answer(1, 3, StepResult::Observed(observation()));
    f.journal.record_event("r1", &observed, t(3)).unwrap();
    assert!(matches!(
        f.journal.record_event("r1", &observed, t(4)),
        Err(JournalError::AlreadyAnswered { seq: 1, .. })
    ));
    assert_eq!(
        f.journal.unfinished().unwrap()[0].events.len(),
        1,
        "a refused event is not stored"
    );
    f.journal
        .finish("r1", &every_outcome().remove(0), t(5))
        .unwrap();
    assert!(matches!(
        f.journal.finish("r1", &every_outcome().remove(0), t(6)),
        Err(JournalError::Finished { .. })
    ));
    assert!(matches!(
        f.journal.record_intent("r1", &other, t(6)),
        Err(JournalError::Finished { .. })
    ));
    assert!(f.journal.unfinished().unwrap().is_empty());
}
