//! Journals written by an earlier keyflip stay readable and replay as they ran. The
//! rows are real: `journal-11b36f7.sql` holds what keyflip at commit 11b36f7 (before
//! consumer ids were typed and consumers carried capabilities, and under record schema
//! 1: warnings as plain text, the workspace resynced with the rest) wrote for a demo
//! rotation, a leaked-active incident (the standby staged first because of the ML
//! workspace, Key Vault versions disabled) and a leaked-standby incident.

use std::collections::HashSet;

use super::super::record::same_outcome;
use super::*;
use crate::rotation::machine::{ConsumerKind, ResyncOrder, Route};

const ROWS: &str = include_str!("journal-11b36f7.sql");
const DATABRICKS: &str =
    "databricks:https://127.0.0.1:41659/databricks/dbw-datasci#datasci/stdatasci001-key";

fn loaded() -> Fixture {
    let f = fixture();
    // The rows name no columns: they fill the ten `rotations` had then (schema 4 added
    // `origin`, NULL for them).
    let rows = ROWS.replace(
        "INSERT INTO rotations VALUES(",
        "INSERT INTO rotations (id, plan, account, account_lower, mode, options, started_at, finished_at, outcome, outcome_kind) VALUES(",
    );
    f.journal
        .conn
        .execute_batch(&rows)
        .unwrap_or_else(|e| panic!("the rows load: {e}"));
    f
}

fn replayed(f: &Fixture, record: &RotationRecord) -> Machine {
    let stored = StoredRotation {
        id: record.id.clone(),
        plan: record.plan.clone(),
        account: record.account.clone(),
        mode: record.mode,
        options: record.options,
        started_at: record.started_at,
        origin: record.origin.clone(),
        events: f.journal.events_of(&record.id).unwrap(),
        steps: record.steps.clone(),
    };
    stored
        .replay()
        .unwrap_or_else(|e| panic!("rotation {} replays: {e}", record.id))
}

#[test]
fn rotations_written_before_typed_ids_replay_to_the_outcome_they_recorded() {
    let f = loaded();
    let history = f.journal.history(Some("demo"), 10).unwrap();
    assert_eq!(history.len(), 3);
    for record in &history {
        // Replay checks every stored command equals the one the machine issues now,
        // consumers (ids, kinds, capabilities) included.
        let machine = replayed(&f, record);
        let (Some(stored), Some(replayed)) = (&record.outcome, machine.outcome()) else {
            panic!(
                "{}: {:?} / {:?}",
                record.id,
                record.outcome,
                machine.outcome()
            )
        };
        // Schema 1 stored warnings as plain text (kind unclassified); replay names
        // their kinds. Everything else is equal.
        assert!(
            same_outcome(stored, replayed),
            "{}: {stored:?} / {replayed:?}",
            record.id
        );
        if let Outcome::Completed { warnings, .. } = replayed {
            assert!(
                warnings.iter().all(|w| w.kind != WarningKind::Unclassified),
                "{warnings:?}"
            );
        }
    }
    // These rows ran before a workspace's resync went last: its options name no
    // resync order, so they replay with the workspace bound in one round with the
    // rest, as it was.
    for record in &history {
        assert_eq!(
            record.options.resync,
            ResyncOrder::WithTheRest,
            "{}",
            record.id
        );
    }
    // The demo swap's warning: the Databricks secret keyflip had not written yet.
    let demo = history
        .iter()
        .find(|r| r.id == "90fdfbbe-5f20-4497-8caa-c581f2d3698b")
        .unwrap();
    let Some(Outcome::Completed { warnings, .. }) = replayed(&f, demo).outcome().cloned() else {
        panic!("{:?}", demo.outcome)
    };
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].kind, WarningKind::ConsumerNotChecked);
    assert!(warnings[0].message.contains(DATABRICKS), "{warnings:?}");
    let seq_of = |first: fn(&Action) -> bool| {
        demo.steps
            .iter()
            .find(|s| first(&s.command.action))
            .map(StepRecord::seq)
            .unwrap()
    };
    assert!(
        seq_of(
            |a| matches!(a, Action::Bind { consumer, .. } if consumer.kind() == ConsumerKind::Workspace)
        ) < seq_of(|a| matches!(a, Action::VerifyConsumer { .. })),
        "the demo rows bound the workspace with the rest"
    );

    let kinds: HashSet<ConsumerKind> = history
        .iter()
        .flat_map(|r| &r.steps)
        .filter_map(|s| s.command.action.consumer())
        .map(ConsumerRef::kind)
        .collect();
    assert_eq!(kinds.len(), 4, "every kind is in the rows: {kinds:?}");

    // The incident that staged the standby because a workspace takes the newest key,
    // and disabled versions in the consumers that keep them: decided again from
    // capabilities the old rows never stored.
    let incident = history
        .iter()
        .find(|r| {
            matches!(
                r.mode,
                Mode::Leaked {
                    revoke_first: false,
                    ..
                }
            )
        })
        .unwrap();
    let machine = replayed(&f, incident);
    assert!(matches!(
        machine.view().route,
        Some(Route::LeakedActive {
            stage_standby: true,
            ..
        })
    ));
    let disabled: Vec<&ConsumerRef> = incident
        .steps
        .iter()
        .filter(|s| matches!(s.command.action, Action::DisableVersions { .. }))
        .filter_map(|s| s.command.action.consumer())
        .collect();
    assert_eq!(disabled.len(), 2);
    assert!(
        disabled
            .iter()
            .all(|c| c.capabilities.keeps_old_versions && c.kind() == ConsumerKind::KeyVaultSecret)
    );
}

#[test]
fn old_consumer_rows_read_as_typed_ids_and_are_written_back_the_same() {
    let f = loaded();
    let record = f
        .journal
        .rotation("90fdfbbe-5f20-4497-8caa-c581f2d3698b")
        .unwrap()
        .unwrap();
    let step = record
        .steps
        .iter()
        .find(|s| {
            s.command
                .action
                .consumer()
                .is_some_and(|c| c.kind() == ConsumerKind::Workspace)
        })
        .unwrap();
    let consumer = step.command.action.consumer().unwrap();
    assert_eq!(
        consumer.capabilities,
        ConsumerKind::Workspace.capabilities()
    );
    assert!(consumer.capabilities.bind_last);
    assert_eq!(consumer.id.short(), "mlw-datasci");

    // The id and kind are written as before; the capabilities are added beside them.
    let json = serde_json::to_value(consumer).unwrap();
    assert_eq!(
        json["id"],
        "workspace:/subscriptions/3c9e5b1d-2a4f-4e6b-9c8d-0f1e2d3c4b5a/resourceGroups/rg-datascience/providers/Microsoft.MachineLearningServices/workspaces/mlw-datasci"
    );
    assert_eq!(json["kind"], "workspace");
    assert_eq!(
        serde_json::from_value::<ConsumerRef>(json).unwrap(),
        *consumer
    );
}

#[test]
fn what_a_write_only_consumer_was_last_bound_to_is_found_by_its_typed_id() {
    let f = loaded();
    let id: ConsumerId = DATABRICKS.parse().unwrap();
    let (key, _, at) = f.journal.last_bound(&id).unwrap().unwrap();
    // The leaked-active incident bound it last, to key1.
    assert_eq!(key, KeyName::Key1);
    assert_eq!(at.to_rfc3339(), "2026-12-06T01:15:41.158228824+00:00");
}

#[test]
fn a_version_4_journal_opens_at_version_7_and_its_rows_replay_as_they_ran() {
    let f = loaded();
    // What a keyflip of schema 4 left: its rows, and the version it wrote.
    f.journal
        .conn
        .execute(
            "UPDATE meta SET value = '4' WHERE name = 'schema_version'",
            [],
        )
        .unwrap();
    let Fixture {
        _dir,
        path,
        journal,
    } = f;
    drop(journal);
    let journal = Journal::open(&path, &fingerprinter()).unwrap();
    let version: String = journal
        .conn
        .query_row(
            "SELECT value FROM meta WHERE name = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(version, "7");
    let f = Fixture {
        _dir,
        path,
        journal,
    };
    let history = f.journal.history(Some("demo"), 10).unwrap();
    assert_eq!(history.len(), 3);
    for record in &history {
        // Rows from before the usage gate ran without one, and replay so.
        assert_eq!(record.options.usage_gate, None, "{}", record.id);
        assert!(!record.options.refuse_unlisted, "{}", record.id);
        // Rows from before a revoke first revoked on the keys alone replay in the
        // order they ran (every consumer read, the standby probed, then the revoke).
        assert!(!record.options.revoke_before_reads, "{}", record.id);
        let machine = replayed(&f, record);
        let (Some(stored), Some(replayed)) = (&record.outcome, machine.outcome()) else {
            panic!("{}: {:?}", record.id, record.outcome)
        };
        assert!(
            same_outcome(stored, replayed),
            "{}: {stored:?} / {replayed:?}",
            record.id
        );
        assert!(
            !record
                .steps
                .iter()
                .any(|s| matches!(s.command.action, Action::CheckUsage { .. })),
            "{}",
            record.id
        );
        // Observations from before the check recorded its gaps read as complete
        // checks, as their rotations ran them.
        let observed: Vec<_> = record
            .steps
            .iter()
            .filter_map(|s| match &s.result {
                Some(StepResult::Observed(obs)) => Some(obs),
                _ => None,
            })
            .collect();
        assert!(!observed.is_empty(), "{}", record.id);
        assert!(
            observed.iter().all(|o| o.unlisted_unchecked.is_empty()),
            "{}",
            record.id
        );
    }
}
