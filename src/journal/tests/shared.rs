//! The shared-journal hook (replicas) and importing a rotation another replica wrote.

use std::sync::{Arc, Mutex};

use super::*;
use crate::rotation::machine::Command;

/// Records what it is given and refuses intents once told to.
#[derive(Debug, Default)]
struct Recorder {
    seen: Mutex<Vec<String>>,
    refuse: Mutex<bool>,
}

impl Mirror for Recorder {
    fn record(
        &self,
        rotation_id: &str,
        write: SharedWrite<'_>,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let name = match write {
            SharedWrite::Begin(_) => "begin",
            SharedWrite::Intent { .. } => "intent",
            SharedWrite::Event { .. } => "event",
            SharedWrite::Finish { .. } => "finish",
            SharedWrite::Mark { .. } => "mark",
        };
        if *self.refuse.lock().unwrap() {
            return Err("lost the lease".into());
        }
        self.seen
            .lock()
            .unwrap()
            .push(format!("{rotation_id}:{name}"));
        Ok(())
    }
}

fn observe() -> Command {
    Command {
        seq: 1,
        action: Action::Observe,
    }
}

#[test]
fn a_write_the_shared_journal_refuses_is_not_recorded_locally() {
    let mut f = fixture();
    let recorder = Arc::new(Recorder::default());
    f.journal.set_mirror(recorder.clone());
    f.journal.begin(&rotation("r1", "p", "acct", 0)).unwrap();
    *recorder.refuse.lock().unwrap() = true;
    let err = f.journal.record_intent("r1", &observe(), t(1)).unwrap_err();
    assert!(matches!(err, JournalError::Shared { .. }), "{err}");
    assert!(err.to_string().contains("lost the lease"), "{err}");
    let stored = f.journal.unfinished().unwrap();
    assert!(stored[0].steps.is_empty(), "rolled back with the refusal");
    *recorder.refuse.lock().unwrap() = false;
    f.journal.record_intent("r1", &observe(), t(2)).unwrap();
    assert_eq!(*recorder.seen.lock().unwrap(), ["r1:begin", "r1:intent"]);
}

#[test]
fn an_import_replaces_the_local_copy_of_a_rotation_whole() {
    let mut f = fixture();
    f.journal.begin(&rotation("r1", "p", "acct", 0)).unwrap();
    f.journal.record_intent("r1", &observe(), t(1)).unwrap();
    let answer = Event::Answer {
        seq: 1,
        at: t(2),
        result: StepResult::Observed(observation()),
    };
    let outcome = Outcome::Refused {
        reasons: Vec::new(),
    };
    let shared = ImportedRotation {
        rotation: rotation("r1", "p", "acct", 0),
        steps: vec![StepRecord {
            command: observe(),
            intent_at: t(1),
            result: Some(StepResult::Observed(observation())),
            result_at: Some(t(2)),
        }],
        events: vec![(answer.clone(), t(2))],
        finished: Some((t(3), outcome.clone())),
    };
    f.journal.import(&shared).unwrap();
    assert!(f.journal.unfinished().unwrap().is_empty());
    let record = f.journal.rotation("r1").unwrap().unwrap();
    assert_eq!(record.outcome, Some(outcome));
    assert_eq!(record.steps, shared.steps);
    assert_eq!(f.journal.events_of("r1").unwrap(), vec![answer]);
    // Importing the same again changes nothing.
    f.journal.import(&shared).unwrap();
    assert_eq!(f.journal.rotation("r1").unwrap().unwrap(), record);
    // An unfinished rotation of the account under another id is refused, as begin would.
    let mut other = shared.clone();
    other.rotation.id = "r2".into();
    other.finished = None;
    f.journal.begin(&rotation("r3", "p", "acct", 5)).unwrap();
    assert!(matches!(
        f.journal.import(&other),
        Err(JournalError::Busy { .. })
    ));
}

#[test]
fn a_write_mark_goes_to_the_shared_journal_first_and_imports_keep_the_latest() {
    use crate::journal::WriteMark;
    let mut f = fixture();
    let recorder = Arc::new(Recorder::default());
    f.journal.set_mirror(recorder.clone());
    f.journal.begin(&rotation("r1", "p", "acct", 0)).unwrap();
    let consumer: crate::consumer::ConsumerId = "datafactory:/subscriptions/s/resourceGroups/rg/providers/Microsoft.DataFactory/factories/adf/linkedservices/ls"
        .parse()
        .unwrap();
    let mark = |n: i64| WriteMark {
        rotation_id: "r1".into(),
        fingerprint: fp(1),
        mark: format!("etag-{n}"),
        at: t(n),
    };
    *recorder.refuse.lock().unwrap() = true;
    assert!(f.journal.record_write_mark(&consumer, &mark(1)).is_err());
    assert_eq!(
        f.journal.write_mark(&consumer).unwrap(),
        None,
        "rolled back"
    );
    *recorder.refuse.lock().unwrap() = false;
    f.journal.record_write_mark(&consumer, &mark(2)).unwrap();
    assert_eq!(*recorder.seen.lock().unwrap(), ["r1:begin", "r1:mark"]);
    // Another replica's older mark does not replace this one; a newer one does.
    let key = consumer.to_string();
    f.journal.import_marks(&[(key.clone(), mark(1))]).unwrap();
    assert_eq!(f.journal.write_mark(&consumer).unwrap(), Some(mark(2)));
    f.journal.import_marks(&[(key, mark(3))]).unwrap();
    assert_eq!(f.journal.write_mark(&consumer).unwrap(), Some(mark(3)));
    assert_eq!(
        recorder.seen.lock().unwrap().len(),
        2,
        "imports are not mirrored"
    );
}
