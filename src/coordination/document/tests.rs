use chrono::{TimeDelta, TimeZone as _};

use super::*;
use crate::key::KeyName;
use crate::rotation::machine::Action;

fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + TimeDelta::seconds(secs)
}

fn new(id: &str) -> NewRotation {
    NewRotation {
        id: id.to_owned(),
        plan: "plan".into(),
        account:
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/acct"
                .parse()
                .unwrap(),
        mode: Mode::Scheduled,
        options: Options::default(),
        started_at: t(0),
        origin: crate::rotation::origin::Origin {
            trigger: crate::rotation::origin::Trigger::Schedule {
                reason: "cron".into(),
            },
            by: None,
            follows: None,
        },
    }
}

fn cmd(seq: u32, action: Action) -> Command {
    Command { seq, action }
}

fn answer(seq: u32) -> Event {
    Event::Answer {
        seq,
        at: t(i64::from(seq)),
        result: StepResult::Committed,
    }
}

fn done() -> Outcome {
    Outcome::Completed {
        active: KeyName::Key2,
        regenerated: Vec::new(),
        warnings: Vec::new(),
    }
}

#[test]
fn writes_apply_in_journal_order_and_round_trip_to_an_import() {
    let mut doc = AccountDoc::empty();
    assert!(doc.apply("r1", SharedWrite::Begin(&new("r1"))).unwrap());
    let commit = cmd(1, Action::Commit);
    let intent = SharedWrite::Intent {
        command: &commit,
        at: t(1),
    };
    assert!(doc.apply("r1", intent).unwrap());
    // The same intent again (a resumed executor) changes nothing.
    assert!(!doc.apply("r1", intent).unwrap());
    // A different command with that seq is a conflict.
    let other = cmd(1, Action::Observe);
    assert!(matches!(
        doc.apply(
            "r1",
            SharedWrite::Intent {
                command: &other,
                at: t(1)
            }
        ),
        Err(ApplyError::Conflict { seq: 1, .. })
    ));
    // A result without its intent is refused, as the local journal refuses it.
    assert!(matches!(
        doc.apply(
            "r1",
            SharedWrite::Event {
                event: &answer(2),
                at: t(2)
            }
        ),
        Err(ApplyError::NoIntent { seq: 2, .. })
    ));
    doc.apply(
        "r1",
        SharedWrite::Event {
            event: &answer(1),
            at: t(2),
        },
    )
    .unwrap();
    // Twice is refused too.
    assert!(
        doc.apply(
            "r1",
            SharedWrite::Event {
                event: &answer(1),
                at: t(2)
            }
        )
        .is_err()
    );

    let back = AccountDoc::parse(&doc.to_bytes()).unwrap();
    assert_eq!(back, doc);
    let imported = back.unfinished().unwrap().to_imported().unwrap();
    assert_eq!(imported.rotation, new("r1"));
    assert_eq!(imported.steps.len(), 1);
    assert_eq!(imported.steps[0].result, Some(StepResult::Committed));
    assert_eq!(imported.events, vec![(answer(1), t(2))]);
    assert_eq!(imported.finished, None);

    doc.apply(
        "r1",
        SharedWrite::Finish {
            outcome: &done(),
            at: t(9),
        },
    )
    .unwrap();
    assert!(doc.unfinished().is_none());
    assert!(matches!(
        doc.apply(
            "r1",
            SharedWrite::Intent {
                command: &commit,
                at: t(10)
            }
        ),
        Err(ApplyError::Finished(_))
    ));
}

#[test]
fn one_unfinished_rotation_per_account_and_history_is_bounded() {
    let mut doc = AccountDoc::empty();
    doc.apply("r0", SharedWrite::Begin(&new("r0"))).unwrap();
    assert_eq!(
        doc.apply("r1", SharedWrite::Begin(&new("r1"))),
        Err(ApplyError::Busy { other: "r0".into() })
    );
    doc.apply(
        "r0",
        SharedWrite::Finish {
            outcome: &done(),
            at: t(1),
        },
    )
    .unwrap();
    for i in 1..20 {
        let id = format!("r{i}");
        doc.apply(&id, SharedWrite::Begin(&new(&id))).unwrap();
        doc.apply(
            &id,
            SharedWrite::Finish {
                outcome: &done(),
                at: t(1),
            },
        )
        .unwrap();
    }
    doc.apply("r20", SharedWrite::Begin(&new("r20"))).unwrap();
    assert_eq!(doc.rotations.len(), KEEP_FINISHED + 1);
    assert_eq!(doc.rotations.last().unwrap().id, "r20");
    assert_eq!(doc.unfinished().unwrap().id, "r20");
}

#[test]
fn empty_blobs_read_as_empty_documents_and_newer_formats_are_refused() {
    assert_eq!(AccountDoc::parse(b"").unwrap(), AccountDoc::empty());
    let mut newer = AccountDoc::empty();
    newer.format = FORMAT + 1;
    let err = AccountDoc::parse(&newer.to_bytes()).unwrap_err();
    assert!(err.contains("upgrade every replica"), "{err}");
    assert!(AccountDoc::parse(b"{not json").is_err());
}

fn imported(id: &str, started: i64, finished: bool) -> ImportedRotation {
    let mut rotation = new(id);
    rotation.started_at = t(started);
    let commit = cmd(1, Action::Commit);
    ImportedRotation {
        rotation,
        steps: vec![StepRecord {
            command: commit,
            intent_at: t(started),
            result: finished.then_some(StepResult::Committed),
            result_at: finished.then(|| t(started + 1)),
        }],
        events: if finished {
            vec![(answer(1), t(started + 1))]
        } else {
            Vec::new()
        },
        finished: finished.then(|| (t(started + 2), done())),
    }
}

#[test]
fn a_local_journal_is_adopted_once_and_never_over_a_different_unfinished_rotation() {
    let mut doc = AccountDoc::empty();
    let local: Vec<ImportedRotation> = (0..7)
        .map(|i| imported(&format!("old{i}"), i * 10, true))
        .chain([imported("left", 100, false)])
        .collect();
    let added = doc.adopt(&local).unwrap();
    // The newest finished ones are kept, and the unfinished one, last.
    assert_eq!(added, ["old2", "old3", "old4", "old5", "old6", "left"]);
    assert_eq!(doc.unfinished().map(|r| r.id.as_str()), Some("left"));
    assert_eq!(doc.rotations.last().map(|r| r.id.as_str()), Some("left"));
    // What the replica imports is what the local journal held.
    let back = doc.rotations.last().unwrap().to_imported().unwrap();
    assert_eq!(back, local[7]);
    // Again: nothing new.
    let before = doc.clone();
    assert!(doc.adopt(&local).unwrap().is_empty());
    assert_eq!(doc, before);
    // Another unfinished rotation of the account: refused, nothing changed.
    let err = doc.adopt(&[imported("other", 200, false)]).unwrap_err();
    assert!(matches!(err, ApplyError::Busy { .. }), "{err}");
    assert_eq!(doc, before);
}

#[test]
fn write_marks_are_kept_per_consumer_and_read_back_as_the_journal_holds_them() {
    let mut doc = AccountDoc::empty();
    doc.apply("r1", SharedWrite::Begin(&new("r1"))).unwrap();
    let mark = WriteMark {
        rotation_id: "r1".into(),
        fingerprint: crate::secret::Fingerprinter::from_bytes(b"k")
            .fingerprint(&crate::secret::StorageKey::new("v".to_owned())),
        mark: "etag-1".into(),
        at: t(5),
    };
    let write = SharedWrite::Mark {
        consumer: "datafactory:ls",
        mark: &mark,
    };
    assert!(doc.apply("r1", write).unwrap());
    assert!(!doc.apply("r1", write).unwrap(), "the same mark again");
    let back = AccountDoc::parse(&doc.to_bytes()).unwrap();
    assert_eq!(
        back.marks_imported().unwrap(),
        [("datafactory:ls".to_owned(), mark)]
    );
    // Documents without marks (written before) read as having none.
    let old = br#"{"format":1,"schema":1,"account":null,"holder":null,"rotations":[]}"#;
    assert!(AccountDoc::parse(old).unwrap().marks.is_empty());
}

#[test]
fn a_plans_start_and_success_move_with_the_journal_and_a_success_unparks_it() {
    let mut doc = AccountDoc::empty();
    // A daemon parked the plan after a failed cycle.
    let parked = PlanDoc {
        last_started: Some(t(-100)),
        failures: 3,
        parked: Some(ParkedDoc {
            at: t(-50),
            reason: "3 failed rotation cycles in a row".into(),
        }),
        by: Some("a".into()),
        updated_at: Some(t(-50)),
        ..PlanDoc::default()
    };
    assert!(doc.plans.entry("plan".into()).or_default().merge(&parked));
    assert!(
        !doc.plans.get_mut("plan").unwrap().merge(&parked),
        "the same state again changes nothing"
    );
    // `rotate now` on any replica: its begin moves the start, its completion unparks.
    doc.apply("r1", SharedWrite::Begin(&new("r1"))).unwrap();
    assert_eq!(doc.plans["plan"].last_started, Some(t(0)));
    assert!(
        doc.plans["plan"].parked.is_some(),
        "still parked while it runs"
    );
    doc.apply(
        "r1",
        SharedWrite::Finish {
            outcome: &done(),
            at: t(9),
        },
    )
    .unwrap();
    let state = &doc.plans["plan"];
    assert_eq!(state.last_success, Some(t(9)));
    assert_eq!((state.failures, state.parked.as_ref()), (0, None));
    // A park decided before that success (a slow write from another replica) does not
    // park it again, nor move its times back.
    let late = PlanDoc {
        last_started: Some(t(-100)),
        updated_at: Some(t(5)),
        ..parked.clone()
    };
    doc.plans.get_mut("plan").unwrap().merge(&late);
    let state = &doc.plans["plan"];
    assert_eq!(
        (state.last_started, state.parked.as_ref()),
        (Some(t(0)), None)
    );
    // A refused rotation's finish counts nothing by itself: the daemon that concluded
    // the cycle writes its count.
    let mut failed = new("r2");
    failed.started_at = t(20);
    doc.apply("r2", SharedWrite::Begin(&failed)).unwrap();
    doc.apply(
        "r2",
        SharedWrite::Finish {
            outcome: &Outcome::Refused {
                reasons: Vec::new(),
            },
            at: t(25),
        },
    )
    .unwrap();
    assert_eq!(doc.plans["plan"].last_success, Some(t(9)));
    assert_eq!(doc.plans["plan"].last_started, Some(t(20)));
    // It survives the blob, and documents without plans read as having none.
    let back = AccountDoc::parse(&doc.to_bytes()).unwrap();
    assert_eq!(back.plans, doc.plans);
    let old = br#"{"format":1,"schema":1,"account":null,"holder":null,"rotations":[]}"#;
    assert!(AccountDoc::parse(old).unwrap().plans.is_empty());
}

/// A plan's latest rotation (id, start, finished) and last finished one (id, end and
/// outcome in words).
type StatusPart = (
    Option<(String, DateTime<Utc>, bool)>,
    Option<(String, String)>,
);

/// What `status` reads of a plan from a journal: its latest rotation (id, start,
/// finished or not) and its last finished one (id, times, outcome in words).
fn status_part(doc: &AccountDoc, plan: &str) -> StatusPart {
    let fingerprinter = crate::secret::Fingerprinter::from_bytes(b"summary tests");
    let mut journal = crate::journal::Journal::in_memory(&fingerprinter).unwrap();
    for r in &doc.rotations {
        journal.import(&r.to_imported().unwrap()).unwrap();
    }
    let latest = journal
        .history(Some(plan), 1)
        .unwrap()
        .first()
        .map(|r| (r.id.clone(), r.started_at, r.finished_at.is_some()));
    let last = journal.last_finished(plan).unwrap().map(|r| {
        (
            r.id.clone(),
            format!("{:?} {}", r.finished_at, r.outcome.unwrap()),
        )
    });
    (latest, last)
}

fn summary_of(doc: &AccountDoc) -> Summary {
    let (bytes, value) = doc.encode();
    Summary::decode(&value.expect("a summary fits"), bytes.len() as u64).expect("it decodes")
}

#[test]
fn a_summary_gives_status_what_the_body_gives_it_and_history_every_start() {
    let mut doc = AccountDoc::empty();
    // Two plans of one account (a renamed plan), finished rotations of both, and one
    // unfinished: each summary must answer what the full document answers.
    for i in 0..9i64 {
        let id = format!("r{i}");
        let mut n = new(&id);
        n.plan = if i % 3 == 0 {
            "old".into()
        } else {
            "plan".into()
        };
        n.started_at = t(i * 100);
        doc.apply(&id, SharedWrite::Begin(&n)).unwrap();
        let summary = summary_of(&doc);
        for plan in ["plan", "old"] {
            assert_eq!(
                status_part(&summary.doc, plan),
                status_part(&doc, plan),
                "{id} {plan}"
            );
        }
        if i == 8 {
            break;
        }
        let outcome = if i % 2 == 0 {
            done()
        } else {
            Outcome::Refused {
                reasons: Vec::new(),
            }
        };
        doc.apply(
            &id,
            SharedWrite::Finish {
                outcome: &outcome,
                at: t(i * 100 + 50),
            },
        )
        .unwrap();
    }
    let summary = summary_of(&doc);
    assert!(summary.doc.unfinished().is_some_and(|r| r.id == "r8"));
    assert!(
        summary
            .doc
            .rotations
            .iter()
            .all(|r| r.steps.is_empty() && r.events.is_empty())
    );
    assert_eq!(summary.doc.plans, doc.plans);
    assert_eq!(summary.doc.holder, doc.holder);
    assert_eq!(
        summary.starts,
        doc.rotations
            .iter()
            .map(|r| (r.plan.clone(), r.started_at))
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_summary_is_trusted_only_for_the_body_it_was_made_from() {
    let mut doc = AccountDoc::empty();
    doc.apply("r1", SharedWrite::Begin(&new("r1"))).unwrap();
    let (bytes, value) = doc.encode();
    let value = value.unwrap();
    let len = bytes.len() as u64;
    assert!(Summary::decode(&value, len).is_some());
    // A body of another length (rewritten by something that kept the metadata).
    assert!(Summary::decode(&value, len + 1).is_none());
    // Not a summary, or one of another format.
    assert!(Summary::decode("not base64!", len).is_none());
    let mut other = summary_of(&doc);
    other.v = SUMMARY_FORMAT + 1;
    use base64::Engine as _;
    let other =
        base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&other).unwrap());
    assert!(Summary::decode(&other, len).is_none());
}

#[test]
fn a_summary_too_large_for_azure_metadata_is_not_written() {
    let mut doc = AccountDoc::empty();
    let mut n = new("r1");
    n.plan = "p".repeat(SUMMARY_MAX);
    doc.apply("r1", SharedWrite::Begin(&n)).unwrap();
    let (bytes, value) = doc.encode();
    assert!(
        value.is_none(),
        "a summary over {SUMMARY_MAX} bytes is left out"
    );
    assert_eq!(bytes, doc.to_bytes());
}
