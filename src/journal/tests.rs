//! Journal tests and the fixtures they share.

mod integrity;
mod marks;
mod plan_state;
mod queries;
mod round_trip;
mod schema_1;
mod shared;
mod written_before;

pub(super) use std::path::{Path, PathBuf};

pub(super) use chrono::{DateTime, TimeDelta, TimeZone, Utc};

pub(super) use super::*;
pub(super) use crate::key::KeyName;
pub(super) use crate::resource_id::ResourceId;
pub(super) use crate::rotation::machine::{
    Action, Attention, Cause, ConsumerId, ConsumerRef, Drift, Failure, FailureKind, Holding,
    KeyState, Machine, MissingPermission, Mode, Observation, ObservedConsumer, Options, Purpose,
    RefusalReason, Regeneration, StepResult, Warning, WarningKind,
};
pub(super) use crate::secret::Fingerprint;

pub(super) fn fingerprinter() -> Fingerprinter {
    Fingerprinter::from_bytes(b"journal test fingerprint key")
}

/// A failure with this message (the journal stores whatever kind it is given).
pub(super) fn why(message: &str) -> Failure {
    Failure::new(FailureKind::Transient, message)
}

pub(super) fn fp(n: u32) -> Fingerprint {
    Fingerprint::from_hex(&format!("{n:012x}{:020x}", 0)).unwrap()
}

pub(super) fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap() + TimeDelta::seconds(secs)
}

pub(super) fn account(name: &str) -> ResourceId {
    format!("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/{name}")
        .parse()
        .unwrap()
}

pub(super) struct Fixture {
    _dir: tempfile::TempDir,
    pub(super) path: PathBuf,
    pub(super) journal: Journal,
}

pub(super) fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    let journal = Journal::open(&path, &fingerprinter()).unwrap();
    Fixture {
        _dir: dir,
        path,
        journal,
    }
}

pub(super) fn rotation(id: &str, plan: &str, acct: &str, started: i64) -> NewRotation {
    NewRotation {
        id: id.to_owned(),
        plan: plan.to_owned(),
        account: account(acct),
        mode: Mode::Scheduled,
        options: Options::default(),
        started_at: t(started),
        origin: crate::rotation::Origin::new(crate::rotation::Trigger::Manual, None),
    }
}

pub(super) fn kv() -> ConsumerRef {
    ConsumerRef::new(ConsumerId::key_vault("https://vault", "storage-key"))
}

pub(super) fn ws() -> ConsumerRef {
    ConsumerRef::new(ConsumerId::workspace(
        &"/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/w"
            .parse()
            .unwrap(),
    ))
}

pub(super) fn dbx() -> ConsumerRef {
    ConsumerRef::new(ConsumerId::databricks("https://dbx", "scope", "key"))
}

pub(super) fn observation() -> Observation {
    Observation {
        key1: KeyState {
            fingerprint: fp(1),
            created: Some(t(-1000)),
        },
        key2: KeyState {
            fingerprint: fp(2),
            created: None,
        },
        shared_key_access: true,
        missing_permissions: vec![MissingPermission {
            action: "Microsoft.Storage/storageAccounts/listkeys/action".into(),
            scope: "/subscriptions/s".into(),
            role_hint: None,
        }],
        consumers: vec![
            ObservedConsumer {
                consumer: kv(),
                holding: Holding::Key(KeyName::Key1),
            },
            ObservedConsumer {
                consumer: dbx(),
                holding: Holding::Unknown {
                    why: "write-only".into(),
                },
            },
        ],
        unlisted: vec![],
        unlisted_unchecked: vec![],
    }
}

pub(super) fn answer(seq: u32, at: i64, result: StepResult) -> Event {
    Event::Answer {
        seq,
        at: t(at),
        result,
    }
}

pub(super) fn every_outcome() -> Vec<Outcome> {
    let cause = Cause::Failed {
        seq: 4,
        action: Action::Bind {
            consumer: kv(),
            key: KeyName::Key2,
            fingerprint: fp(22),
        },
        reason: why("409"),
    };
    let drift = Drift {
        key: KeyName::Key1,
        expected: fp(1),
        found: fp(9),
    };
    vec![
        Outcome::Completed {
            active: KeyName::Key2,
            regenerated: vec![Regeneration {
                key: KeyName::Key2,
                purpose: Purpose::Stage,
                at: t(5),
                before: fp(2),
                after: fp(22),
            }],
            warnings: vec![Warning::new(WarningKind::ConsumerNotChecked, "w")],
        },
        Outcome::RolledBack {
            cause: cause.clone(),
            discarded: Some(KeyName::Key2),
            warnings: vec![],
        },
        Outcome::Refused {
            reasons: vec![
                RefusalReason::SharedKeyAccessDisabled,
                RefusalReason::ConsumersSplit {
                    on_key1: vec![kv().id],
                    on_key2: vec![dbx().id],
                },
                RefusalReason::NoConsumerKeyKnown { unknown: vec![] },
            ],
        },
        Outcome::NeedsAttention {
            reason: Attention::RollbackIncomplete {
                cause: Cause::Drift {
                    drifts: vec![drift],
                },
                key: KeyName::Key1,
                not_back: vec![(kv().id, why("500"))],
            },
            in_doubt: vec![Command {
                seq: 7,
                action: Action::Commit,
            }],
        },
        Outcome::NeedsAttention {
            reason: Attention::RetriesExhausted {
                key: KeyName::Key1,
                purpose: Purpose::Retire,
                attempts: 8,
                last_error: why("503"),
            },
            in_doubt: vec![],
        },
        Outcome::NeedsAttention {
            reason: Attention::LeakedKeyInUse {
                key: KeyName::Key1,
                cause,
                discarded: None,
            },
            in_doubt: vec![],
        },
        Outcome::NeedsAttention {
            reason: Attention::ResyncFailed {
                key: KeyName::Key2,
                consumers: vec![(ws().id, why("409"))],
                attempts: 8,
                leaked: Some(KeyName::Key1),
            },
            in_doubt: vec![],
        },
        Outcome::NeedsAttention {
            reason: Attention::InternalError {
                what: "nothing in flight".into(),
            },
            in_doubt: vec![],
        },
    ]
}
