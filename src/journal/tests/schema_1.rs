//! Rows written under record schema 1, before failure reasons and warnings had kinds,
//! exactly as that keyflip wrote them: they still decode (a plain string reads as
//! kind `Unclassified` with it as the message) and an unfinished rotation still
//! replays.

use super::super::record::{decode, encode};
use super::*;

/// A regeneration's answer, a key rejection, a bind failure, a consumer mismatch and
/// a disable failure, each as an event row of schema 1.
const V1_EVENTS: [(&str, &str); 5] = [
    (
        r#"{"schema":1,"body":{"event":"answer","seq":2,"at":"2025-03-01T12:00:01Z","result":{"result":"regenerate_failed","error":"storage.regenerateKey: HTTP 503"}}}"#,
        "storage.regenerateKey: HTTP 503",
    ),
    (
        r#"{"schema":1,"body":{"event":"answer","seq":2,"at":"2025-03-01T12:00:01Z","result":{"result":"key_rejected","reason":"the blob service did not accept key2"}}}"#,
        "the blob service did not accept key2",
    ),
    (
        r#"{"schema":1,"body":{"event":"answer","seq":2,"at":"2025-03-01T12:00:01Z","result":{"result":"bind_failed","reason":"ml.datastore.put: HTTP 400"}}}"#,
        "ml.datastore.put: HTTP 400",
    ),
    (
        r#"{"schema":1,"body":{"event":"answer","seq":2,"at":"2025-03-01T12:00:01Z","result":{"result":"consumer_mismatch","reason":"it holds key1"}}}"#,
        "it holds key1",
    ),
    (
        r#"{"schema":1,"body":{"event":"answer","seq":2,"at":"2025-03-01T12:00:01Z","result":{"result":"disable_failed","reason":"keyvault.update: HTTP 403"}}}"#,
        "keyvault.update: HTTP 403",
    ),
];

fn old(message: &str) -> Failure {
    Failure::new(FailureKind::Unclassified, message)
}

fn regenerate_stage() -> Action {
    Action::Regenerate {
        key: KeyName::Key2,
        purpose: Purpose::Stage,
        before: KeyState {
            fingerprint: fp(2),
            created: None,
        },
    }
}

fn v1_cause() -> Cause {
    Cause::Failed {
        seq: 2,
        action: regenerate_stage(),
        reason: old("storage.regenerateKey: HTTP 503"),
    }
}

#[test]
fn schema_1_failure_results_decode_as_unclassified_with_their_text() {
    for (json, message) in V1_EVENTS {
        let event: Event = decode(json).unwrap_or_else(|e| panic!("{json}: {e}"));
        let Event::Answer { seq, at, result } = &event else {
            panic!("{event:?}")
        };
        assert_eq!((*seq, *at), (2, t(1)));
        assert_eq!(result.failure(), Some(&old(message)), "{json}");
        // Written again, it takes this build's schema and typed form.
        let again = encode(&event);
        assert!(again.starts_with(r#"{"schema":2,"#), "{again}");
        assert!(
            again.contains(&format!(
                r#"{{"kind":"unclassified","message":"{message}"}}"#
            )),
            "{again}"
        );
        assert_eq!(decode::<Event>(&again).unwrap(), event);
    }
}

#[test]
fn schema_1_outcomes_decode_their_causes_reasons_and_warnings() {
    let cases: Vec<(&str, Outcome)> = vec![
        (
            r#"{"schema":1,"body":{"outcome":"rolled_back","cause":{"cause":"failed","seq":2,"action":{"kind":"regenerate","key":"key2","purpose":"stage","before":{"fingerprint":"00000000000200000000000000000000","created":null}},"reason":"storage.regenerateKey: HTTP 503"},"discarded":null,"warnings":["dbx/scope/key was not checked (write-only); keyflip cannot tell which key it holds"]}}"#,
            Outcome::RolledBack {
                cause: v1_cause(),
                discarded: None,
                warnings: vec![Warning::new(
                    WarningKind::Unclassified,
                    "dbx/scope/key was not checked (write-only); keyflip cannot tell which key it holds",
                )],
            },
        ),
        (
            r#"{"schema":1,"body":{"outcome":"completed","active":"key2","regenerated":[],"warnings":["could not disable versions of x: 403"]}}"#,
            Outcome::Completed {
                active: KeyName::Key2,
                regenerated: vec![],
                warnings: vec![Warning::new(
                    WarningKind::Unclassified,
                    "could not disable versions of x: 403",
                )],
            },
        ),
        (
            r#"{"schema":1,"body":{"outcome":"needs_attention","reason":{"attention":"retries_exhausted","key":"key1","purpose":"retire","attempts":8,"last_error":"503"},"in_doubt":[]}}"#,
            Outcome::NeedsAttention {
                reason: Attention::RetriesExhausted {
                    key: KeyName::Key1,
                    purpose: Purpose::Retire,
                    attempts: 8,
                    last_error: old("503"),
                },
                in_doubt: vec![],
            },
        ),
        (
            r#"{"schema":1,"body":{"outcome":"needs_attention","reason":{"attention":"consumers_not_moved","key":"key1","consumers":[["keyvault:https://vault/secrets/storage-key","throttled"]],"attempts":3},"in_doubt":[]}}"#,
            Outcome::NeedsAttention {
                reason: Attention::ConsumersNotMoved {
                    key: KeyName::Key1,
                    consumers: vec![(kv().id, old("throttled"))],
                    attempts: 3,
                },
                in_doubt: vec![],
            },
        ),
        (
            r#"{"schema":1,"body":{"outcome":"needs_attention","reason":{"attention":"key_not_accepted","key":"key1","fingerprint":"00000000000900000000000000000000","attempts":3,"last_reason":"403"},"in_doubt":[]}}"#,
            Outcome::NeedsAttention {
                reason: Attention::KeyNotAccepted {
                    key: KeyName::Key1,
                    fingerprint: fp(9),
                    attempts: 3,
                    last_reason: old("403"),
                },
                in_doubt: vec![],
            },
        ),
        (
            r#"{"schema":1,"body":{"outcome":"needs_attention","reason":{"attention":"rollback_incomplete","cause":{"cause":"failed","seq":2,"action":{"kind":"regenerate","key":"key2","purpose":"stage","before":{"fingerprint":"00000000000200000000000000000000","created":null}},"reason":"storage.regenerateKey: HTTP 503"},"key":"key1","not_back":[["keyvault:https://vault/secrets/storage-key","500"]]},"in_doubt":[]}}"#,
            Outcome::NeedsAttention {
                reason: Attention::RollbackIncomplete {
                    cause: v1_cause(),
                    key: KeyName::Key1,
                    not_back: vec![(kv().id, old("500"))],
                },
                in_doubt: vec![],
            },
        ),
    ];
    for (json, expected) in cases {
        let outcome: Outcome = decode(json).unwrap_or_else(|e| panic!("{json}: {e}"));
        assert_eq!(outcome, expected, "{json}");
        assert_eq!(decode::<Outcome>(&encode(&outcome)).unwrap(), outcome);
    }
}

/// Rewrites every JSON column of the journal at `path` to schema 1. Rows holding no
/// failure and no warning have the same body in both schemas.
fn to_schema_1(path: &Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    for sql in [
        r#"UPDATE steps SET command = replace(command, '{"schema":2,', '{"schema":1,')"#,
        r#"UPDATE steps SET result = replace(result, '{"schema":2,', '{"schema":1,')"#,
        r#"UPDATE events SET event = replace(event, '{"schema":2,', '{"schema":1,')"#,
        r#"UPDATE rotations SET mode = replace(mode, '{"schema":2,', '{"schema":1,'), options = replace(options, '{"schema":2,', '{"schema":1,')"#,
    ] {
        conn.execute(sql, []).unwrap();
    }
}

#[test]
fn an_unfinished_schema_1_rotation_with_its_finish_in_doubt_still_replays() {
    let mut f = fixture();
    f.journal.begin(&rotation("r1", "p", "acct", 0)).unwrap();
    let mut obs = observation();
    obs.missing_permissions.clear();
    // Observe, then staging key2 fails: nothing moved, so the rotation rolls back with
    // the Databricks consumer's warning, and crashed after recording `Finish`.
    let observe = Command {
        seq: 1,
        action: Action::Observe,
    };
    f.journal.record_intent("r1", &observe, t(0)).unwrap();
    let observed = answer(1, 1, StepResult::Observed(obs));
    f.journal.record_event("r1", &observed, t(1)).unwrap();
    let stage = Command {
        seq: 2,
        action: regenerate_stage(),
    };
    f.journal.record_intent("r1", &stage, t(2)).unwrap();
    let failed = answer(
        2,
        3,
        StepResult::RegenerateFailed {
            error: old("storage.regenerateKey: HTTP 503"),
        },
    );
    f.journal.record_event("r1", &failed, t(3)).unwrap();
    let finish_v1 = r#"{"schema":1,"body":{"seq":3,"action":{"kind":"finish","outcome":{"outcome":"rolled_back","cause":{"cause":"failed","seq":2,"action":{"kind":"regenerate","key":"key2","purpose":"stage","before":{"fingerprint":"00000000000200000000000000000000","created":null}},"reason":"storage.regenerateKey: HTTP 503"},"discarded":null,"warnings":["Databricks secret databricks:https://dbx#scope/key was not checked (write-only); keyflip cannot tell which key it holds"]}}}}"#;
    f.journal
        .record_intent("r1", &decode::<Command>(finish_v1).unwrap(), t(4))
        .unwrap();
    to_schema_1(&f.path);
    // The rows with a failure or a warning, exactly as schema 1 wrote them.
    let result_v1 = r#"{"schema":1,"body":{"result":"regenerate_failed","error":"storage.regenerateKey: HTTP 503"}}"#;
    let event_v1 = r#"{"schema":1,"body":{"event":"answer","seq":2,"at":"2025-03-01T12:00:03Z","result":{"result":"regenerate_failed","error":"storage.regenerateKey: HTTP 503"}}}"#;
    let conn = rusqlite::Connection::open(&f.path).unwrap();
    conn.execute("UPDATE steps SET result = ?1 WHERE seq = 2", [result_v1])
        .unwrap();
    conn.execute("UPDATE events SET event = ?1 WHERE n = 2", [event_v1])
        .unwrap();
    conn.execute("UPDATE steps SET command = ?1 WHERE seq = 3", [finish_v1])
        .unwrap();
    let typed: i64 = conn
        .query_row(
            r#"SELECT (SELECT count(*) FROM steps WHERE command LIKE '%"schema":2%' OR result LIKE '%"schema":2%')
                    + (SELECT count(*) FROM events WHERE event LIKE '%"schema":2%' OR event LIKE '%"kind":"unclassified"%')"#,
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(typed, 0, "every row is as schema 1 wrote it");

    let stored = Journal::open(&f.path, &fingerprinter())
        .unwrap()
        .unfinished()
        .unwrap();
    let stored = &stored[0];
    assert_eq!(stored.in_doubt().len(), 1, "the Finish");
    let machine = stored.replay().unwrap_or_else(|e| panic!("{e}"));
    // The replayed outcome names the warning's kind, which schema 1 did not store.
    let Some(Outcome::RolledBack {
        cause, warnings, ..
    }) = machine.outcome()
    else {
        panic!("{:?}", machine.outcome())
    };
    assert_eq!(*cause, v1_cause());
    assert_eq!(warnings[0].kind, WarningKind::ConsumerNotChecked);
    assert_ne!(machine.command(3), Some(&stored.steps[2].command));

    // Anything else that differs is still a divergence.
    conn.execute(
        "UPDATE steps SET command = ?1 WHERE seq = 3",
        [finish_v1.replace("was not checked", "was skipped")],
    )
    .unwrap();
    let stored = f.journal.unfinished().unwrap();
    let err = stored[0].replay().unwrap_err();
    assert!(matches!(err, ResumeError::Diverged { seq: 3, .. }), "{err}");
}
