//! Write marks: keyflip's latest write of a consumer whose value cannot be read back,
//! and the migration that added them.

use super::*;
use crate::consumer::ConsumerId;

fn linked_service(name: &str) -> ConsumerId {
    format!("datafactory:/subscriptions/s/resourceGroups/rg/providers/Microsoft.DataFactory/factories/adf/linkedservices/{name}")
        .parse()
        .unwrap()
}

fn mark(n: u32) -> WriteMark {
    WriteMark {
        rotation_id: format!("r{n}"),
        fingerprint: fp(n),
        mark: format!("0000000{n}-0000-0000-0000-5b245bcf0000"),
        at: t(i64::from(n)),
    }
}

#[test]
fn the_latest_write_mark_of_each_consumer_is_kept() {
    let mut f = fixture();
    let (a, b) = (linked_service("a"), linked_service("b"));
    assert_eq!(f.journal.write_mark(&a).unwrap(), None);
    f.journal.record_write_mark(&a, &mark(1)).unwrap();
    f.journal.record_write_mark(&b, &mark(2)).unwrap();
    f.journal.record_write_mark(&a, &mark(3)).unwrap();
    assert_eq!(f.journal.write_mark(&a).unwrap(), Some(mark(3)));
    assert_eq!(f.journal.write_mark(&b).unwrap(), Some(mark(2)));
    // Durable: a fresh handle reads the same.
    let reopened = Journal::open(&f.path, &fingerprinter()).unwrap();
    assert_eq!(reopened.write_mark(&a).unwrap(), Some(mark(3)));
}

#[test]
fn an_unreadable_write_mark_names_the_consumer() {
    let mut f = fixture();
    let a = linked_service("a");
    f.journal.record_write_mark(&a, &mark(1)).unwrap();
    rusqlite::Connection::open(&f.path)
        .unwrap()
        .execute("UPDATE write_marks SET fingerprint = 'zz'", [])
        .unwrap();
    let err = f.journal.write_mark(&a).unwrap_err().to_string();
    assert!(
        err.contains("linkedservices/a") && err.contains("'zz'"),
        "{err}"
    );
}

#[test]
fn a_version_2_journal_is_migrated_and_gains_write_marks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    {
        let mut f = Journal::open(&path, &fingerprinter()).unwrap();
        f.begin(&rotation("r1", "demo", "acct", 0)).unwrap();
    }
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "DROP TABLE write_marks; ALTER TABLE rotations DROP COLUMN origin;
         UPDATE meta SET value = '2' WHERE name = 'schema_version';",
    )
    .unwrap();
    drop(conn);
    let mut journal = Journal::open(&path, &fingerprinter()).unwrap();
    assert_eq!(journal.unfinished().unwrap()[0].id, "r1");
    let a = linked_service("a");
    journal.record_write_mark(&a, &mark(1)).unwrap();
    assert_eq!(journal.write_mark(&a).unwrap(), Some(mark(1)));
}
