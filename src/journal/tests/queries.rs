//! The read side: history, last finished, last bound.

use super::*;

#[test]
fn last_bound_is_the_latest_successful_bind() {
    let mut f = fixture();
    let dbx = dbx();
    assert_eq!(f.journal.last_bound(&dbx.id).unwrap(), None);
    let bind = |seq, key, n| Command {
        seq,
        action: Action::Bind {
            consumer: dbx.clone(),
            key,
            fingerprint: fp(n),
        },
    };
    f.journal.begin(&rotation("r1", "p", "acct", 0)).unwrap();
    f.journal
        .record_intent("r1", &bind(1, KeyName::Key2, 22), t(1))
        .unwrap();
    f.journal
        .record_event("r1", &answer(1, 2, StepResult::Bound), t(2))
        .unwrap();
    f.journal
        .finish("r1", &every_outcome().remove(0), t(3))
        .unwrap();

    f.journal.begin(&rotation("r2", "p", "acct", 10)).unwrap();
    f.journal
        .record_intent("r2", &bind(1, KeyName::Key1, 11), t(11))
        .unwrap();
    f.journal
        .record_event("r2", &answer(1, 12, StepResult::Bound), t(12))
        .unwrap();
    // A later failed bind and one in doubt do not count.
    f.journal
        .record_intent("r2", &bind(2, KeyName::Key2, 23), t(13))
        .unwrap();
    let failed = StepResult::BindFailed { reason: why("500") };
    f.journal
        .record_event("r2", &answer(2, 14, failed), t(14))
        .unwrap();
    f.journal
        .record_intent("r2", &bind(3, KeyName::Key2, 24), t(15))
        .unwrap();

    assert_eq!(
        f.journal.last_bound(&dbx.id).unwrap(),
        Some((KeyName::Key1, fp(11), t(12)))
    );
    assert_eq!(f.journal.last_bound(&kv().id).unwrap(), None);
}

#[test]
fn history_lists_newest_first_with_step_timings() {
    let mut f = fixture();
    for (i, plan) in ["a", "b", "a"].iter().enumerate() {
        let id = format!("r{i}");
        f.journal
            .begin(&rotation(&id, plan, &format!("acct{i}"), 100 * i as i64))
            .unwrap();
        let c = Command {
            seq: 1,
            action: Action::Observe,
        };
        f.journal
            .record_intent(&id, &c, t(100 * i as i64 + 1))
            .unwrap();
        if i < 2 {
            f.journal
                .finish(&id, &every_outcome().remove(i), t(100 * i as i64 + 50))
                .unwrap();
        }
    }
    let all = f.journal.history(None, 10).unwrap();
    let ids: Vec<&str> = all.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, vec!["r2", "r1", "r0"]);
    assert_eq!(all[0].finished_at, None);
    assert_eq!(all[0].steps[0].intent_at, t(201));
    assert_eq!(all[0].steps[0].result, None);
    let a: Vec<String> = f
        .journal
        .history(Some("a"), 1)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(a, vec!["r2"]);
    let last = f.journal.last_finished("a").unwrap().unwrap();
    assert_eq!((last.id.as_str(), last.finished_at), ("r0", Some(t(50))));
    assert_eq!(f.journal.last_finished("none").unwrap(), None);
}
