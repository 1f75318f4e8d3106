//! Unit tests of the machine, named after the transition rows (T1..T40) of the
//! module docs they exercise, and the support they share.

mod adopt;
mod amend;
mod fail_closed;
mod gate;
mod incident;
mod leaked_active;
mod restart;
mod resync;
mod revoke_first;
mod rollback;
mod swap;

pub(super) use chrono::{DateTime, TimeDelta, TimeZone, Utc};

pub(super) use super::*;

/// A fingerprint whose short form shows `n` (`fp:00000000002a` for 42).
pub(super) fn fp(n: u32) -> Fingerprint {
    Fingerprint::from_hex(&format!("{n:012x}{:020x}", 0)).expect("32 hex digits")
}

pub(super) fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap() + TimeDelta::seconds(secs)
}

/// A consumer of `kind` whose id ends in `name` (`kv/storage-key`, `ws/ds-a`): the
/// machine only compares ids, so any name makes a distinct consumer.
pub(super) fn consumer(kind: ConsumerKind, name: &str) -> ConsumerRef {
    let (first, rest) = name.split_once('/').unwrap_or((name, name));
    let workspace = |ws: &str| -> crate::resource_id::ResourceId {
        format!("/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/{ws}")
            .parse()
            .expect("a workspace id")
    };
    ConsumerRef::new(match kind {
        ConsumerKind::KeyVaultSecret => {
            ConsumerId::key_vault(&format!("https://{first}.vault.azure.net"), rest)
        }
        ConsumerKind::Datastore => ConsumerId::datastore(&workspace(first), rest),
        ConsumerKind::Workspace => ConsumerId::workspace(&workspace(name)),
        ConsumerKind::Databricks => {
            ConsumerId::databricks("https://adb-1.2.azuredatabricks.net", first, rest)
        }
        ConsumerKind::AppServiceSetting => ConsumerId::app_setting(
            &format!("/subscriptions/s/resourceGroups/g/providers/Microsoft.Web/sites/{first}")
                .parse()
                .expect("a site id"),
            None,
            rest,
        ),
        ConsumerKind::DataFactoryLinkedService => ConsumerId::data_factory(
            &format!("/subscriptions/s/resourceGroups/g/providers/Microsoft.DataFactory/factories/{first}")
                .parse()
                .expect("a factory id"),
            rest,
        ),
    })
}

pub(super) fn kv(id: &str) -> ConsumerRef {
    consumer(ConsumerKind::KeyVaultSecret, id)
}
pub(super) fn ds(id: &str) -> ConsumerRef {
    consumer(ConsumerKind::Datastore, id)
}
pub(super) fn dbx(id: &str) -> ConsumerRef {
    consumer(ConsumerKind::Databricks, id)
}
pub(super) fn ws(id: &str) -> ConsumerRef {
    consumer(ConsumerKind::Workspace, id)
}

pub(super) const K1: KeyName = KeyName::Key1;
pub(super) const K2: KeyName = KeyName::Key2;

/// key1 = fp(1), key2 = fp(2), shared keys on, no missing permission.
pub(super) fn observation(consumers: Vec<(ConsumerRef, Holding)>) -> Observation {
    Observation {
        key1: KeyState {
            fingerprint: fp(1),
            created: None,
        },
        key2: KeyState {
            fingerprint: fp(2),
            created: Some(t(-86_400)),
        },
        shared_key_access: true,
        missing_permissions: vec![],
        consumers: consumers
            .into_iter()
            .map(|(consumer, holding)| ObservedConsumer { consumer, holding })
            .collect(),
        unlisted: vec![],
        unlisted_unchecked: vec![],
    }
}

/// The usual world: a Key Vault secret, two datastores, all on key1.
pub(super) fn on_key1() -> Observation {
    observation(vec![
        (kv("kv/storage-key"), Holding::Key(K1)),
        (ds("ws/ds-a"), Holding::Key(K1)),
        (ds("ws/ds-b"), Holding::Key(K1)),
    ])
}

/// The usual world plus the ML workspace of the datastores, all on key1.
pub(super) fn with_workspace() -> Observation {
    let mut obs = on_key1();
    obs.consumers.push(ObservedConsumer {
        consumer: ws("ws"),
        holding: Holding::Key(K1),
    });
    obs
}

/// A revoke first journaled before the revoke came first (no
/// `revoke_before_reads`): everything read, the standby probed, then the revoke.
pub(super) fn legacy() -> Options {
    Options {
        revoke_before_reads: false,
        ..Options::default()
    }
}

pub(super) fn opts(grace_secs: i64) -> Options {
    Options {
        grace: TimeDelta::seconds(grace_secs),
        ..Options::default()
    }
}

/// A machine, a clock that advances one second per answer, and the events accepted
/// (what a journal would hold, for replay).
pub(super) struct Run {
    pub(super) m: Machine,
    pub(super) now: i64,
    pub(super) events: Vec<Event>,
}

impl Run {
    pub(super) fn new(mode: Mode, options: Options) -> Self {
        Self {
            m: Machine::new(mode, options),
            now: 0,
            events: Vec::new(),
        }
    }

    pub(super) fn answer(&mut self, seq: u32, result: StepResult) -> Vec<Command> {
        self.now += 1;
        let event = Event::Answer {
            seq,
            at: t(self.now),
            result,
        };
        let cmds = self
            .m
            .handle(&event)
            .unwrap_or_else(|e| panic!("seq {seq}: {e}"));
        self.events.push(event);
        cmds
    }

    /// A restart's observation of Azure.
    pub(super) fn reobserve(&mut self, observation: Observation) -> Vec<Command> {
        self.now += 1;
        let event = Event::Reobserved {
            at: t(self.now),
            observation,
        };
        let cmds = self.m.handle(&event).unwrap_or_else(|e| panic!("{e}"));
        self.events.push(event);
        cmds
    }

    /// A fresh machine fed every event accepted so far.
    pub(super) fn replayed(&self) -> Machine {
        let (mode, options) = self.m.started();
        Machine::replay(mode, options, &self.events).unwrap_or_else(|e| panic!("{e}"))
    }

    /// An amendment (an incident, a shorter grace) a person made.
    pub(super) fn amend(&mut self, event: impl FnOnce(DateTime<Utc>) -> Event) -> Vec<Command> {
        self.now += 1;
        let event = event(t(self.now));
        let cmds = self.m.handle(&event).unwrap_or_else(|e| panic!("{e}"));
        self.events.push(event);
        cmds
    }

    pub(super) fn observe(&mut self, obs: Observation) -> Vec<Command> {
        self.answer(1, StepResult::Observed(obs))
    }

    /// Answers every command in `cmds` with success, in order, and returns what the
    /// last answers produced (all of it).
    pub(super) fn succeed(&mut self, cmds: Vec<Command>) -> Vec<Command> {
        let mut next = Vec::new();
        for c in cmds {
            let result = success(&c);
            next.extend(self.answer(c.seq, result));
        }
        next
    }

    /// Succeeds until a command satisfying `stop` is issued; returns it with its batch.
    pub(super) fn succeed_until(
        &mut self,
        mut cmds: Vec<Command>,
        stop: impl Fn(&Action) -> bool,
    ) -> Vec<Command> {
        for _ in 0..100 {
            if cmds.iter().any(|c| stop(&c.action)) || cmds.is_empty() {
                return cmds;
            }
            cmds = self.succeed(cmds);
        }
        panic!("never reached the command")
    }

    pub(super) fn outcome(&self) -> Outcome {
        self.m.outcome().cloned().expect("finished")
    }
}

pub(super) fn success(c: &Command) -> StepResult {
    match &c.action {
        Action::Observe => StepResult::Observed(on_key1()),
        Action::ObserveKeys => StepResult::Observed(Observation {
            consumers: vec![],
            ..on_key1()
        }),
        // The usual world read after a revoke first of `key`: consumers on its leaked
        // value, `key` with the value `success` gave its revoke.
        Action::ObserveAfterRevoke { key, .. } => {
            let mut obs = on_key1();
            let state = KeyState {
                fingerprint: fp(100 + 10 * (*key as u32) + Purpose::Revoke as u32),
                created: Some(t(1000)),
            };
            match key {
                KeyName::Key1 => obs.key1 = state,
                KeyName::Key2 => obs.key2 = state,
            }
            StepResult::Observed(obs)
        }
        Action::Regenerate { key, purpose, .. } => StepResult::Regenerated {
            fingerprint: fp(100 + 10 * (*key as u32) + *purpose as u32),
            created: Some(t(1000)),
        },
        Action::VerifyKey { .. } => StepResult::KeyVerified,
        Action::Bind { .. } => StepResult::Bound,
        Action::VerifyConsumer { .. } => StepResult::ConsumerVerified,
        Action::DisableVersions { .. } => StepResult::VersionsDisabled {
            versions: vec!["v0".to_owned()],
        },
        Action::CheckUsage { .. } => StepResult::UsageChecked {
            until: t(2000),
            callers: vec![],
        },
        Action::Commit => StepResult::Committed,
        Action::WaitUntil { .. } => StepResult::Waited,
        Action::Finish { .. } => panic!("finish takes no result"),
    }
}

pub(super) fn only(cmds: &[Command]) -> &Action {
    assert_eq!(cmds.len(), 1, "expected one command, got {cmds:#?}");
    &cmds[0].action
}

pub(super) fn is_finish(cmds: &[Command]) -> bool {
    cmds.len() == 1 && matches!(cmds[0].action, Action::Finish { .. })
}

pub(super) fn regenerations(m: &Machine) -> Vec<(KeyName, Purpose)> {
    m.issued()
        .filter_map(|c| match c.action {
            Action::Regenerate { key, purpose, .. } => Some((key, purpose)),
            _ => None,
        })
        .collect()
}

/// A failure with this message. The machine does not branch on failure kinds, so
/// tests use one.
pub(super) fn why(message: &str) -> Failure {
    Failure::new(FailureKind::Transient, message)
}

pub(super) fn failed(reason: &str) -> StepResult {
    StepResult::BindFailed {
        reason: why(reason),
    }
}
