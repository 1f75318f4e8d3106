//! The pure state machine of one rotation: events in, commands out.
//!
//! [`Machine`] decides; it never acts. It does no IO, reads no clock, draws no
//! randomness and never sees a key: time arrives inside events, keys appear only as
//! [`KeyName`] and [`Fingerprint`]. An executor performs each [`Command`], journals
//! an intent before it and the result after, and feeds the result back as an
//! [`Event`]. Commands returned by one [`Machine::handle`] call may run concurrently.
//!
//! # Phases
//!
//! | phase | what is in flight |
//! |---|---|
//! | `Prechecking` | `Observe` |
//! | `Staging` | `Regenerate(standby, stage)` |
//! | `VerifyingKey` | `VerifyKey(standby)` |
//! | `Revoking` | `Regenerate(leaked, revoke)`, or the backoff `WaitUntil` before a retry |
//! | `Binding` | one `Bind(consumer, standby)` per consumer (with `revoke_first`: or a backoff wait) |
//! | `VerifyingConsumers` | one `VerifyConsumer(consumer, standby)` per bound consumer |
//! | `Committing` | `Commit` |
//! | `Grace` | `WaitUntil(committed + grace)` |
//! | `Retiring` | `Regenerate(active, retire)`, or a backoff wait |
//! | `Cleanup` | `DisableVersions(consumer, leaked fingerprints)` per Key Vault consumer |
//! | `RollingBack` | draining in-flight commands, then binds back, verifies back (+ `DisableVersions` of the new value), then `Regenerate(standby, discard)` |
//! | `Completed`, `RolledBack`, `Refused`, `NeedsAttention` | `Finish` (the end) |
//!
//! Routes (decided at precheck, see `precheck`):
//!
//! - `Scheduled`: Staging → VerifyingKey → Binding → VerifyingConsumers → Committing
//!   → Grace (skipped when grace ≤ 0) → Retiring → Completed.
//! - `LeakedBoth`: as `Scheduled` with no grace, then Cleanup (both observed
//!   fingerprints) → Completed.
//! - `LeakedActive`: VerifyingKey (the existing standby) → Binding →
//!   VerifyingConsumers → Committing → Retiring (no grace) → Cleanup → Completed.
//! - `LeakedActive { revoke_first }`: VerifyingKey (the standby, so the only working
//!   key is never killed when the other does not work) → Revoking → Binding →
//!   VerifyingConsumers → Committing → Cleanup → Completed. After the revoke nothing
//!   can roll back: failed binds and verifications are retried (backoff, up to
//!   `retire_attempts` rounds), then the rotation parks.
//! - `LeakedStandby`: Revoking → Cleanup → Completed; no consumer is touched.
//!
//! # Transitions
//!
//! "batch done" means every command of the batch has answered. A *failure* is
//! `RegenerateFailed`, `KeyRejected`, `BindFailed`, `ConsumerMismatch` or
//! `DisableFailed`. *Roll back* enters `RollingBack` (see below).
//!
//! | # | in | on | then |
//! |---|---|---|---|
//! | T1 | Prechecking | `Observed`, precheck refuses | `Finish(Refused)` |
//! | T2 | Prechecking | `Observed`, route stages | `Regenerate(standby, stage)` → Staging |
//! | T3 | Prechecking | `Observed`, route `LeakedActive` | `VerifyKey(standby)` → VerifyingKey |
//! | T4 | Prechecking | `Observed`, route `LeakedStandby` | `Regenerate(leaked, revoke)` → Revoking |
//! | T5 | Staging | `Regenerated` | `VerifyKey(standby, new fp)` → VerifyingKey |
//! | T6 | Staging | `RegenerateFailed` | roll back (nothing to undo) |
//! | T7 | VerifyingKey | `KeyVerified` | `Bind` every consumer → Binding |
//! | T8 | VerifyingKey | `KeyVerified`, `revoke_first` | `Regenerate(active, revoke)` → Revoking |
//! | T9 | VerifyingKey | `KeyRejected` | roll back |
//! | T10 | Revoking | `Regenerated`, `LeakedStandby` | Cleanup (T26) |
//! | T11 | Revoking | `Regenerated`, `revoke_first` | `Bind` every consumer → Binding |
//! | T12 | Revoking, Retiring, RollingBack(discard) | `RegenerateFailed`, attempts left | `WaitUntil(failed at + backoff)` |
//! | T13 | Revoking, Retiring, RollingBack(discard) | `RegenerateFailed`, `retire_attempts` reached | `Finish(NeedsAttention: RetriesExhausted)` |
//! | T14 | Revoking, Retiring, RollingBack(discard) | `Waited` (backoff) | the same `Regenerate` again, same `before` |
//! | T15 | Binding | `Bound`, batch not done | wait |
//! | T16 | Binding | `BindFailed` | roll back |
//! | T17 | Binding | batch done, all bound | `VerifyConsumer` every bound consumer → VerifyingConsumers |
//! | T18 | VerifyingConsumers | `ConsumerMismatch` | roll back |
//! | T19 | VerifyingConsumers | batch done, all verified | `Commit` → Committing |
//! | T20 | Binding, VerifyingConsumers (`revoke_first`) | batch done with failures, rounds left | `WaitUntil(backoff)` → Binding |
//! | T21 | Binding (`revoke_first`) | `Waited` | `Bind` again each failed consumer |
//! | T22 | Binding, VerifyingConsumers (`revoke_first`) | batch done with failures, rounds used up | `Finish(NeedsAttention: ConsumersNotMoved)` |
//! | T23 | Committing | `Committed`, `Scheduled`, grace > 0 | `WaitUntil(committed + grace)` → Grace |
//! | T24 | Committing | `Committed`, no grace (or `LeakedBoth`, `LeakedActive`) | `Regenerate(active, retire)` → Retiring |
//! | T25 | Grace | `Waited` | `Regenerate(active, retire)` → Retiring |
//! | T26 | Committing (`revoke_first`), Retiring (incident) | `Committed` / `Regenerated` | `DisableVersions` per Key Vault consumer → Cleanup, or `Finish(Completed)` if none |
//! | T27 | Retiring | `Regenerated`, `Scheduled` | `Finish(Completed)` |
//! | T28 | Cleanup | batch done (a `DisableFailed` is a warning: the value is dead) | `Finish(Completed)` |
//! | T29 | RollingBack(draining) | last in-flight answer | `Bind(active)` every consumer a forward `Bind` was issued to → binding back; none → T33 |
//! | T30 | RollingBack(binding back) | batch done, a `BindFailed` | `Finish(NeedsAttention: RollbackIncomplete)` |
//! | T31 | RollingBack(binding back) | batch done, all bound | `VerifyConsumer(active)` each, plus `DisableVersions(new fp)` for Key Vault → verifying back |
//! | T32 | RollingBack(verifying back) | batch done, all verified | `Regenerate(standby, discard)` → discarding (a `DisableFailed` is a warning) |
//! | T33 | RollingBack(verifying back) | batch done, a mismatch | `Finish(NeedsAttention: RollbackIncomplete)` |
//! | T34 | RollingBack(discarding) | `Regenerated`; or nothing was bound | `Finish(RolledBack)`; incident modes `Finish(NeedsAttention: LeakedKeyInUse)` |
//! | T35 | any but Prechecking | `Reobserved`, every key as recorded (or in doubt) | nothing |
//! | T36 | any | `Reobserved`, a key consumers rely on, or one still to be retired, changed | `Finish(NeedsAttention: Drift)`, in-doubt commands listed |
//! | T37 | VerifyingKey, Binding, VerifyingConsumers | `Reobserved`, the standby changed before commit | roll back (cause: drift) |
//! | T38 | any | `Reobserved`, a key this rotation already killed changed again | note it, go on |
//! | T39 | finished | any event | error, nothing changes |
//! | T40 | any | answer to an unknown or answered seq, or of the wrong kind | error, nothing changes |
//!
//! # Rollback
//!
//! A failure before commit first lets every in-flight command answer (so a late
//! forward `Bind` cannot land after the bind back), then binds back every consumer a
//! forward `Bind` was issued to, whatever its result, because it may have happened.
//! Then each is verified on the old key, and Key Vault consumers get the versions
//! holding the new value disabled. Only when every one is back is the standby
//! regenerated once more (`Discard`). A rollback that cannot bring everyone back
//! parks. The commit marker is the point after which nothing rolls back.
//!
//! # Replay
//!
//! Everything the machine knows came from [`Machine::new`] and the events it
//! accepted, so a fresh machine fed the journaled events in the journaled order is
//! equal to the one that crashed, and has issued exactly the same commands (same
//! `seq`, same content): [`Machine::replay`]. [`Machine::outstanding`] then lists the
//! commands without a result; the executor reconciles those (see
//! `docs/ARCHITECTURE.md`, "Crash recovery"), after first feeding a
//! [`Event::Reobserved`] so the machine can check that Azure still matches. An event
//! the machine rejects is never journaled, so replay never meets one.

mod precheck;
mod types;
mod view;

#[cfg(test)]
mod random_tests;
#[cfg(test)]
mod tests;

use chrono::{DateTime, TimeDelta, Utc};

pub use precheck::Route;
pub use types::*;
pub use view::{ConsumerStatus, ConsumerView, Happening, Note, Phase, TimelineEntry, View};

use crate::key::KeyName;
use crate::secret::Fingerprint;
use precheck::Decision;

/// The first wait between retries of a step that cannot roll back.
pub const RETRY_FIRST_BACKOFF: TimeDelta = TimeDelta::seconds(10);
/// The longest wait between retries.
pub const RETRY_MAX_BACKOFF: TimeDelta = TimeDelta::minutes(5);

/// The wait after the `failures`-th failure: 10 s doubling to 5 min.
pub fn retry_backoff(failures: u32) -> TimeDelta {
    let doublings = failures.saturating_sub(1).min(16);
    let secs = RETRY_FIRST_BACKOFF.num_seconds() << doublings;
    TimeDelta::seconds(secs).min(RETRY_MAX_BACKOFF)
}

/// An event the machine cannot accept. Nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    #[error(
        "the rotation has already finished, so the event is not accepted; it belongs to an older run or the journal is out of order"
    )]
    Finished,
    #[error(
        "no command with seq {seq} was issued (the last is {last}); the result belongs to another rotation or the journal is corrupt"
    )]
    UnknownSeq { seq: u32, last: u32 },
    #[error("command {seq} already has a result; a result is accepted once")]
    AlreadyAnswered { seq: u32 },
    #[error("command {seq} is `{command}`, which `{result}` does not answer")]
    WrongResult {
        seq: u32,
        command: &'static str,
        result: &'static str,
    },
}

/// Event `index` (0-based) of a replay was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("event {index} of the replay was rejected: {error}")]
pub struct ReplayError {
    pub index: usize,
    pub error: HandleError,
}

#[derive(Clone, Debug, PartialEq)]
struct Step {
    command: Command,
    issued_at: Option<DateTime<Utc>>,
    answer: Option<(DateTime<Utc>, StepResult)>,
    /// Index into `Machine::consumers` for consumer commands.
    consumer: Option<usize>,
}

#[derive(Clone, Debug, PartialEq)]
struct Track {
    consumer: ConsumerRef,
    initially: Holding,
    status: ConsumerStatus,
    /// A `Bind` to the standby was issued, so the rollback must bind it back.
    bound_forward: bool,
    disabled: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
enum Entry {
    Issued(u32),
    Answered(u32),
    Noted(DateTime<Utc>, Note),
}

#[derive(Clone, Debug, PartialEq)]
enum State {
    Prechecking,
    Staging,
    VerifyingKey,
    Revoking { failures: u32 },
    Binding { failures: u32 },
    VerifyingConsumers { failures: u32 },
    Committing,
    Grace,
    Retiring { failures: u32 },
    Cleanup,
    RollingBack { cause: Cause, step: Rollback },
    Finished,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Rollback {
    Draining,
    BindingBack,
    VerifyingBack,
    Discarding { failures: u32 },
}

/// What the answered command was, copied out so the step list is not borrowed
/// while the machine moves on.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Regenerate { key: KeyName, purpose: Purpose },
    Bind,
    VerifyConsumer,
    Wait,
    Other,
}

/// What to do about a key that changed behind the machine's back.
enum DriftResponse {
    Park(String),
    RollBack,
    Continue,
}

/// One rotation's state machine. See the module docs.
#[derive(Clone, Debug, PartialEq)]
pub struct Machine {
    mode: Mode,
    options: Options,
    steps: Vec<Step>,
    /// Issued, unanswered commands other than `Finish`.
    in_flight: usize,
    state: State,
    decision: Option<Decision>,
    /// Each key as last known (index 0 = key1), from observation and `Regenerated`.
    last: Option<[KeyState; 2]>,
    /// The fingerprint consumers move to.
    target: Option<Fingerprint>,
    committed_at: Option<DateTime<Utc>>,
    consumers: Vec<Track>,
    regenerations: Vec<Regeneration>,
    warnings: Vec<String>,
    timeline: Vec<Entry>,
}

fn index(key: KeyName) -> usize {
    match key {
        KeyName::Key1 => 0,
        KeyName::Key2 => 1,
    }
}

impl Machine {
    /// A machine that has issued its first command, `Observe` (see
    /// [`Machine::outstanding`]): a fresh start and a resumed one both begin by
    /// performing what is outstanding.
    pub fn new(mode: Mode, options: Options) -> Self {
        let mut machine = Self {
            mode,
            options,
            steps: Vec::with_capacity(16),
            in_flight: 0,
            state: State::Prechecking,
            decision: None,
            last: None,
            target: None,
            committed_at: None,
            consumers: Vec::new(),
            regenerations: Vec::new(),
            warnings: Vec::new(),
            timeline: Vec::with_capacity(32),
        };
        machine.issue(None, Action::Observe, None, &mut Vec::new());
        machine
    }

    /// A fresh machine fed `events` in order: the state a crashed run had reached.
    pub fn replay<'a>(
        mode: Mode,
        options: Options,
        events: impl IntoIterator<Item = &'a Event>,
    ) -> Result<Self, ReplayError> {
        let mut machine = Self::new(mode, options);
        for (index, event) in events.into_iter().enumerate() {
            machine
                .handle(event)
                .map_err(|error| ReplayError { index, error })?;
        }
        Ok(machine)
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Every command issued so far, in `seq` order.
    pub fn issued(&self) -> impl ExactSizeIterator<Item = &Command> {
        self.steps.iter().map(|s| &s.command)
    }

    /// The command with this `seq`, if issued.
    pub fn command(&self, seq: u32) -> Option<&Command> {
        self.step_index(seq).map(|i| &self.steps[i].command)
    }

    /// Commands issued without a result yet: what a restarted executor has in doubt.
    /// After `Finish`, only `Finish` (commands abandoned by a park are listed in the
    /// outcome instead, and must not be performed).
    pub fn outstanding(&self) -> Vec<Command> {
        if self.is_finished() {
            return self
                .steps
                .last()
                .map(|s| s.command.clone())
                .into_iter()
                .collect();
        }
        self.steps
            .iter()
            .filter(|s| s.answer.is_none())
            .map(|s| s.command.clone())
            .collect()
    }

    pub fn is_finished(&self) -> bool {
        self.state == State::Finished
    }

    /// The outcome, once finished.
    pub fn outcome(&self) -> Option<&Outcome> {
        match self.steps.last().map(|s| &s.command.action) {
            Some(Action::Finish { outcome }) => Some(outcome),
            _ => None,
        }
    }

    pub fn phase(&self) -> Phase {
        match &self.state {
            State::Prechecking => Phase::Prechecking,
            State::Staging => Phase::Staging,
            State::VerifyingKey => Phase::VerifyingKey,
            State::Revoking { .. } => Phase::Revoking,
            State::Binding { .. } => Phase::Binding,
            State::VerifyingConsumers { .. } => Phase::VerifyingConsumers,
            State::Committing => Phase::Committing,
            State::Grace => Phase::Grace,
            State::Retiring { .. } => Phase::Retiring,
            State::Cleanup => Phase::Cleanup,
            State::RollingBack { .. } => Phase::RollingBack,
            State::Finished => match self.outcome() {
                Some(Outcome::Completed { .. }) => Phase::Completed,
                Some(Outcome::RolledBack { .. }) => Phase::RolledBack,
                Some(Outcome::Refused { .. }) => Phase::Refused,
                Some(Outcome::NeedsAttention { .. }) | None => Phase::NeedsAttention,
            },
        }
    }

    /// A snapshot for status and reports.
    pub fn view(&self) -> View {
        let timeline = self
            .timeline
            .iter()
            .filter_map(|entry| match entry {
                Entry::Issued(seq) => self.step_index(*seq).map(|i| TimelineEntry {
                    at: self.steps[i].issued_at,
                    what: Happening::Issued {
                        command: self.steps[i].command.clone(),
                    },
                }),
                Entry::Answered(seq) => self.step_index(*seq).and_then(|i| {
                    self.steps[i]
                        .answer
                        .as_ref()
                        .map(|(at, result)| TimelineEntry {
                            at: Some(*at),
                            what: Happening::Answered {
                                seq: *seq,
                                result: result.clone(),
                            },
                        })
                }),
                Entry::Noted(at, note) => Some(TimelineEntry {
                    at: Some(*at),
                    what: Happening::Noted { note: note.clone() },
                }),
            })
            .collect();
        View {
            mode: self.mode,
            phase: self.phase(),
            route: self.decision.as_ref().map(|d| d.route),
            active: self.decision.as_ref().map(|d| d.active),
            standby: self.decision.as_ref().map(|d| d.standby),
            target: self.target,
            committed_at: self.committed_at,
            consumers: self
                .consumers
                .iter()
                .map(|t| ConsumerView {
                    consumer: t.consumer.clone(),
                    initially: t.initially.clone(),
                    status: t.status.clone(),
                    disabled_versions: t.disabled.clone(),
                })
                .collect(),
            regenerations: self.regenerations.clone(),
            warnings: self.warnings.clone(),
            timeline,
            outcome: self.outcome().cloned(),
        }
    }

    /// Applies one event and returns the commands to perform next. A rejected event
    /// changes nothing and must not be journaled.
    pub fn handle(&mut self, event: &Event) -> Result<Vec<Command>, HandleError> {
        if self.is_finished() {
            return Err(HandleError::Finished);
        }
        let mut out = Vec::new();
        match event {
            Event::Answer { seq, at, result } => {
                let i = self.check_answer(*seq, result)?;
                self.steps[i].answer = Some((*at, result.clone()));
                self.in_flight -= 1;
                self.timeline.push(Entry::Answered(*seq));
                let kind = self.record(i, *at, result);
                let state = std::mem::replace(&mut self.state, State::Finished);
                self.state = self.advance(state, i, kind, *at, result, &mut out);
            }
            Event::Reobserved { at, observation } => {
                let state = std::mem::replace(&mut self.state, State::Finished);
                self.state = self.reobserved(state, *at, observation, &mut out);
            }
        }
        Ok(out)
    }

    fn step_index(&self, seq: u32) -> Option<usize> {
        let i = usize::try_from(seq).ok()?.checked_sub(1)?;
        (i < self.steps.len()).then_some(i)
    }

    fn check_answer(&self, seq: u32, result: &StepResult) -> Result<usize, HandleError> {
        let i = self.step_index(seq).ok_or(HandleError::UnknownSeq {
            seq,
            last: u32::try_from(self.steps.len()).unwrap_or(u32::MAX),
        })?;
        let step = &self.steps[i];
        if step.answer.is_some() {
            return Err(HandleError::AlreadyAnswered { seq });
        }
        if !result.answers(&step.command.action) {
            return Err(HandleError::WrongResult {
                seq,
                command: step.command.action.name(),
                result: result.name(),
            });
        }
        Ok(i)
    }

    fn issue(
        &mut self,
        at: Option<DateTime<Utc>>,
        action: Action,
        consumer: Option<usize>,
        out: &mut Vec<Command>,
    ) {
        let seq = u32::try_from(self.steps.len() + 1).unwrap_or(u32::MAX);
        if !matches!(action, Action::Finish { .. }) {
            self.in_flight += 1;
        }
        let command = Command { seq, action };
        out.push(command.clone());
        self.steps.push(Step {
            command,
            issued_at: at,
            answer: None,
            consumer,
        });
        self.timeline.push(Entry::Issued(seq));
    }

    fn note(&mut self, at: DateTime<Utc>, note: Note) {
        self.timeline.push(Entry::Noted(at, note));
    }

    fn warn(&mut self, at: DateTime<Utc>, text: String) {
        self.warnings.push(text.clone());
        self.note(at, Note::Warning { text });
    }

    /// Bookkeeping that does not depend on the phase: key and consumer facts.
    fn record(&mut self, i: usize, at: DateTime<Utc>, result: &StepResult) -> Kind {
        let consumer = self.steps[i].consumer;
        let mut warning = None;
        let kind = match &self.steps[i].command.action {
            Action::Regenerate {
                key,
                purpose,
                before,
            } => {
                if let StepResult::Regenerated {
                    fingerprint,
                    created,
                } = result
                {
                    if let Some(last) = &mut self.last {
                        last[index(*key)] = KeyState {
                            fingerprint: *fingerprint,
                            created: *created,
                        };
                    }
                    self.regenerations.push(Regeneration {
                        key: *key,
                        purpose: *purpose,
                        at,
                        before: before.fingerprint,
                        after: *fingerprint,
                    });
                }
                Kind::Regenerate {
                    key: *key,
                    purpose: *purpose,
                }
            }
            Action::Bind { key, .. } => {
                let status = match result {
                    StepResult::BindFailed { reason } => ConsumerStatus::BindFailed {
                        key: *key,
                        reason: reason.clone(),
                    },
                    _ => ConsumerStatus::Bound { key: *key },
                };
                if let Some(t) = consumer.and_then(|c| self.consumers.get_mut(c)) {
                    t.status = status;
                }
                Kind::Bind
            }
            Action::VerifyConsumer { key, .. } => {
                let status = match result {
                    StepResult::ConsumerMismatch { reason } => ConsumerStatus::Mismatch {
                        key: *key,
                        reason: reason.clone(),
                    },
                    _ => ConsumerStatus::Verified { key: *key },
                };
                if let Some(t) = consumer.and_then(|c| self.consumers.get_mut(c)) {
                    t.status = status;
                }
                Kind::VerifyConsumer
            }
            Action::DisableVersions { consumer: c, .. } => {
                match result {
                    StepResult::VersionsDisabled { versions } => {
                        if let Some(t) = consumer.and_then(|c| self.consumers.get_mut(c)) {
                            t.disabled.extend(versions.iter().cloned());
                        }
                    }
                    StepResult::DisableFailed { reason } => {
                        warning = Some(format!("could not disable versions of {c}: {reason}"));
                    }
                    _ => {}
                }
                Kind::Other
            }
            Action::WaitUntil { .. } => Kind::Wait,
            _ => Kind::Other,
        };
        if let Some(text) = warning {
            self.warn(at, text);
        }
        kind
    }

    fn attempts(&self) -> u32 {
        self.options.retire_attempts.max(1)
    }

    fn route(&self) -> Option<Route> {
        self.decision.as_ref().map(|d| d.route)
    }

    fn revoke_first(&self) -> bool {
        self.route().is_some_and(Route::revoke_first)
    }

    fn keys(&self) -> (KeyName, KeyName) {
        self.decision
            .as_ref()
            .map_or((KeyName::Key1, KeyName::Key2), |d| (d.active, d.standby))
    }

    fn last_state(&self, key: KeyName) -> Option<KeyState> {
        self.last.map(|l| l[index(key)])
    }

    fn cause(&self, i: usize, result: &StepResult) -> Cause {
        Cause::Failed {
            seq: self.steps[i].command.seq,
            action: self.steps[i].command.action.clone(),
            reason: result.failure().unwrap_or_default().to_owned(),
        }
    }

    /// The phase-dependent reaction to command `i`'s result.
    fn advance(
        &mut self,
        state: State,
        i: usize,
        kind: Kind,
        at: DateTime<Utc>,
        result: &StepResult,
        out: &mut Vec<Command>,
    ) -> State {
        use StepResult as R;
        let (active, standby) = self.keys();
        match (state, result) {
            (State::Prechecking, R::Observed(obs)) => self.precheck(at, obs, out),

            (State::Staging, R::Regenerated { fingerprint, .. }) => {
                self.target = Some(*fingerprint);
                self.verify_key(at, standby, *fingerprint, out)
            }
            (State::Staging, R::RegenerateFailed { .. })
            | (State::VerifyingKey, R::KeyRejected { .. }) => {
                let cause = self.cause(i, result);
                self.roll_back(cause, at, out)
            }
            (State::VerifyingKey, R::KeyVerified) => {
                if self.revoke_first() {
                    self.regenerate(at, active, Purpose::Revoke, out);
                    State::Revoking { failures: 0 }
                } else {
                    self.bind_forward(at, out)
                }
            }

            (State::Revoking { failures }, _) => match (kind, result) {
                (_, R::Regenerated { .. }) if self.route() == Some(Route::LeakedStandby) => {
                    self.cleanup(at, out)
                }
                (_, R::Regenerated { .. }) => self.bind_forward(at, out),
                (Kind::Regenerate { key, purpose }, R::RegenerateFailed { error }) => self
                    .regeneration_failed(failures + 1, key, purpose, error, at, out)
                    .unwrap_or(State::Revoking {
                        failures: failures + 1,
                    }),
                (Kind::Wait, _) => {
                    let key = if self.route() == Some(Route::LeakedStandby) {
                        standby
                    } else {
                        active
                    };
                    self.regenerate(at, key, Purpose::Revoke, out);
                    State::Revoking { failures }
                }
                _ => State::Revoking { failures },
            },

            (State::Binding { failures }, _) => match kind {
                Kind::Wait => {
                    self.rebind_failed(at, standby, out);
                    State::Binding { failures }
                }
                _ if result.failure().is_some() && !self.revoke_first() => {
                    let cause = self.cause(i, result);
                    self.roll_back(cause, at, out)
                }
                _ if self.in_flight > 0 => State::Binding { failures },
                _ => self.binds_done(failures, at, out),
            },

            (State::VerifyingConsumers { failures }, _) => {
                if result.failure().is_some() && !self.revoke_first() {
                    let cause = self.cause(i, result);
                    self.roll_back(cause, at, out)
                } else if self.in_flight > 0 {
                    State::VerifyingConsumers { failures }
                } else if self
                    .consumers
                    .iter()
                    .all(|t| matches!(t.status, ConsumerStatus::Verified { key } if key == standby))
                {
                    self.issue(Some(at), Action::Commit, None, out);
                    State::Committing
                } else {
                    self.forward_retry(failures + 1, at, out)
                }
            }

            (State::Committing, R::Committed) => {
                self.committed_at = Some(at);
                match self.route() {
                    Some(Route::LeakedActive { revoke_first: true }) => self.cleanup(at, out),
                    Some(Route::Scheduled) if self.options.grace > TimeDelta::zero() => {
                        let until = at
                            .checked_add_signed(self.options.grace)
                            .unwrap_or(DateTime::<Utc>::MAX_UTC);
                        self.issue(Some(at), Action::WaitUntil { at: until }, None, out);
                        State::Grace
                    }
                    _ => {
                        self.regenerate(at, active, Purpose::Retire, out);
                        State::Retiring { failures: 0 }
                    }
                }
            }
            (State::Grace, R::Waited) => {
                self.regenerate(at, active, Purpose::Retire, out);
                State::Retiring { failures: 0 }
            }

            (State::Retiring { failures }, _) => match (kind, result) {
                (_, R::Regenerated { .. }) if self.mode.is_incident() => self.cleanup(at, out),
                (_, R::Regenerated { .. }) => self.complete(at, out),
                (Kind::Regenerate { key, purpose }, R::RegenerateFailed { error }) => self
                    .regeneration_failed(failures + 1, key, purpose, error, at, out)
                    .unwrap_or(State::Retiring {
                        failures: failures + 1,
                    }),
                (Kind::Wait, _) => {
                    self.regenerate(at, active, Purpose::Retire, out);
                    State::Retiring { failures }
                }
                _ => State::Retiring { failures },
            },

            (State::Cleanup, _) if self.in_flight == 0 => self.complete(at, out),

            (State::RollingBack { cause, step }, _) => {
                self.rollback_answer(cause, step, kind, result, at, out)
            }

            // A result this phase has no further use for; `record` kept its facts.
            (state, _) => state,
        }
    }

    fn precheck(&mut self, at: DateTime<Utc>, obs: &Observation, out: &mut Vec<Command>) -> State {
        self.consumers = obs
            .consumers
            .iter()
            .map(|c| Track {
                consumer: c.consumer.clone(),
                initially: c.holding.clone(),
                status: ConsumerStatus::Untouched,
                bound_forward: false,
                disabled: Vec::new(),
            })
            .collect();
        self.last = Some([obs.key1, obs.key2]);
        let decision = match precheck::precheck(self.mode, obs) {
            Ok(decision) => decision,
            Err(reasons) => return self.finish(at, Outcome::Refused { reasons }, out),
        };
        for text in &decision.warnings {
            self.warn(at, text.clone());
        }
        self.note(
            at,
            Note::Decided {
                route: decision.route,
                active: decision.active,
                standby: decision.standby,
            },
        );
        let (route, active, standby) = (decision.route, decision.active, decision.standby);
        self.decision = Some(decision);
        match route {
            Route::Scheduled | Route::LeakedBoth => {
                self.regenerate(at, standby, Purpose::Stage, out);
                State::Staging
            }
            Route::LeakedActive { .. } => {
                let fingerprint = obs.key(standby).fingerprint;
                self.target = Some(fingerprint);
                self.verify_key(at, standby, fingerprint, out)
            }
            Route::LeakedStandby => {
                debug_assert_ne!(active, standby);
                self.regenerate(at, standby, Purpose::Revoke, out);
                State::Revoking { failures: 0 }
            }
        }
    }

    fn regenerate(
        &mut self,
        at: DateTime<Utc>,
        key: KeyName,
        purpose: Purpose,
        out: &mut Vec<Command>,
    ) {
        // `last` is set at precheck, before any regeneration can be issued.
        if let Some(before) = self.last_state(key) {
            self.issue(
                Some(at),
                Action::Regenerate {
                    key,
                    purpose,
                    before,
                },
                None,
                out,
            );
        }
    }

    fn verify_key(
        &mut self,
        at: DateTime<Utc>,
        key: KeyName,
        fingerprint: Fingerprint,
        out: &mut Vec<Command>,
    ) -> State {
        let budget = self.options.verify_budget;
        self.issue(
            Some(at),
            Action::VerifyKey {
                key,
                fingerprint,
                budget,
            },
            None,
            out,
        );
        State::VerifyingKey
    }

    fn bind(
        &mut self,
        at: DateTime<Utc>,
        c: usize,
        key: KeyName,
        fp: Fingerprint,
        out: &mut Vec<Command>,
    ) {
        let consumer = self.consumers[c].consumer.clone();
        self.consumers[c].status = ConsumerStatus::Binding { key };
        self.issue(
            Some(at),
            Action::Bind {
                consumer,
                key,
                fingerprint: fp,
            },
            Some(c),
            out,
        );
    }

    fn verify_consumer(
        &mut self,
        at: DateTime<Utc>,
        c: usize,
        key: KeyName,
        fp: Fingerprint,
        out: &mut Vec<Command>,
    ) {
        let consumer = self.consumers[c].consumer.clone();
        self.consumers[c].status = ConsumerStatus::Verifying { key };
        self.issue(
            Some(at),
            Action::VerifyConsumer {
                consumer,
                key,
                fingerprint: fp,
            },
            Some(c),
            out,
        );
    }

    /// Binds every consumer to the standby.
    fn bind_forward(&mut self, at: DateTime<Utc>, out: &mut Vec<Command>) -> State {
        let (_, standby) = self.keys();
        let Some(fp) = self.target else {
            return self.binds_done(0, at, out);
        };
        for c in 0..self.consumers.len() {
            self.consumers[c].bound_forward = true;
            self.bind(at, c, standby, fp, out);
        }
        if self.in_flight == 0 {
            return self.binds_done(0, at, out);
        }
        State::Binding { failures: 0 }
    }

    /// With `revoke_first`, after a backoff: bind again each consumer whose bind or
    /// verification failed.
    fn rebind_failed(&mut self, at: DateTime<Utc>, standby: KeyName, out: &mut Vec<Command>) {
        let Some(fp) = self.target else { return };
        for c in 0..self.consumers.len() {
            if matches!(
                self.consumers[c].status,
                ConsumerStatus::BindFailed { .. } | ConsumerStatus::Mismatch { .. }
            ) {
                self.bind(at, c, standby, fp, out);
            }
        }
    }

    /// Every forward bind answered, none failed outside `revoke_first`.
    fn binds_done(&mut self, failures: u32, at: DateTime<Utc>, out: &mut Vec<Command>) -> State {
        let (_, standby) = self.keys();
        let fp = self.target;
        if self
            .consumers
            .iter()
            .any(|t| matches!(t.status, ConsumerStatus::BindFailed { .. }))
        {
            return self.forward_retry(failures + 1, at, out);
        }
        if let Some(fp) = fp {
            for c in 0..self.consumers.len() {
                if matches!(self.consumers[c].status, ConsumerStatus::Bound { key } if key == standby)
                {
                    self.verify_consumer(at, c, standby, fp, out);
                }
            }
        }
        if self.in_flight == 0 {
            self.issue(Some(at), Action::Commit, None, out);
            return State::Committing;
        }
        State::VerifyingConsumers { failures }
    }

    /// With `revoke_first` (the only route where forward failures do not roll back):
    /// back off and bind again, or park after `retire_attempts` rounds.
    fn forward_retry(&mut self, failures: u32, at: DateTime<Utc>, out: &mut Vec<Command>) -> State {
        if failures >= self.attempts() {
            let (_, standby) = self.keys();
            let consumers = self
                .consumers
                .iter()
                .filter_map(|t| match &t.status {
                    ConsumerStatus::BindFailed { reason, .. }
                    | ConsumerStatus::Mismatch { reason, .. } => {
                        Some((t.consumer.id.clone(), reason.clone()))
                    }
                    _ => None,
                })
                .collect();
            let reason = Attention::ConsumersNotMoved {
                key: standby,
                consumers,
                attempts: failures,
            };
            return self.park(at, reason, out);
        }
        let until = at + retry_backoff(failures);
        self.issue(Some(at), Action::WaitUntil { at: until }, None, out);
        State::Binding { failures }
    }

    /// After the `failures`-th failure of a regeneration that cannot roll back:
    /// `None` after issuing the backoff wait, or the parked state.
    fn regeneration_failed(
        &mut self,
        failures: u32,
        key: KeyName,
        purpose: Purpose,
        error: &str,
        at: DateTime<Utc>,
        out: &mut Vec<Command>,
    ) -> Option<State> {
        if failures >= self.attempts() {
            let reason = Attention::RetriesExhausted {
                key,
                purpose,
                attempts: failures,
                last_error: error.to_owned(),
            };
            return Some(self.park(at, reason, out));
        }
        let until = at + retry_backoff(failures);
        self.issue(Some(at), Action::WaitUntil { at: until }, None, out);
        None
    }

    /// Incident cleanup: disable every Key Vault version holding a leaked value.
    fn cleanup(&mut self, at: DateTime<Utc>, out: &mut Vec<Command>) -> State {
        let leaked = self
            .decision
            .as_ref()
            .map(|d| d.leaked.clone())
            .unwrap_or_default();
        for c in 0..self.consumers.len() {
            if self.consumers[c].consumer.kind == ConsumerKind::KeyVaultSecret {
                let consumer = self.consumers[c].consumer.clone();
                self.issue(
                    Some(at),
                    Action::DisableVersions {
                        consumer,
                        fingerprints: leaked.clone(),
                    },
                    Some(c),
                    out,
                );
            }
        }
        if self.in_flight == 0 {
            return self.complete(at, out);
        }
        State::Cleanup
    }

    fn complete(&mut self, at: DateTime<Utc>, out: &mut Vec<Command>) -> State {
        let (active, standby) = self.keys();
        let outcome = Outcome::Completed {
            active: if self.route() == Some(Route::LeakedStandby) {
                active
            } else {
                standby
            },
            regenerated: self.regenerations.clone(),
            warnings: self.warnings.clone(),
        };
        self.finish(at, outcome, out)
    }

    fn park(&mut self, at: DateTime<Utc>, reason: Attention, out: &mut Vec<Command>) -> State {
        let in_doubt = self
            .steps
            .iter()
            .filter(|s| s.answer.is_none())
            .map(|s| s.command.clone())
            .collect();
        self.finish(at, Outcome::NeedsAttention { reason, in_doubt }, out)
    }

    fn finish(&mut self, at: DateTime<Utc>, outcome: Outcome, out: &mut Vec<Command>) -> State {
        let outcome = Box::new(outcome);
        self.issue(Some(at), Action::Finish { outcome }, None, out);
        State::Finished
    }

    fn roll_back(&mut self, cause: Cause, at: DateTime<Utc>, out: &mut Vec<Command>) -> State {
        self.note(
            at,
            Note::RollbackStarted {
                cause: cause.clone(),
            },
        );
        self.rollback_continue(cause, Rollback::Draining, at, out)
    }

    fn rollback_answer(
        &mut self,
        cause: Cause,
        step: Rollback,
        kind: Kind,
        result: &StepResult,
        at: DateTime<Utc>,
        out: &mut Vec<Command>,
    ) -> State {
        let (_, standby) = self.keys();
        match (step, kind, result) {
            (Rollback::Discarding { .. }, _, StepResult::Regenerated { .. }) => {
                self.rolled_back(cause, Some(standby), at, out)
            }
            (
                Rollback::Discarding { failures },
                Kind::Regenerate { key, purpose },
                StepResult::RegenerateFailed { error },
            ) => self
                .regeneration_failed(failures + 1, key, purpose, error, at, out)
                .unwrap_or(State::RollingBack {
                    cause,
                    step: Rollback::Discarding {
                        failures: failures + 1,
                    },
                }),
            (Rollback::Discarding { failures }, Kind::Wait, _) => {
                self.regenerate(at, standby, Purpose::Discard, out);
                State::RollingBack {
                    cause,
                    step: Rollback::Discarding { failures },
                }
            }
            _ => self.rollback_continue(cause, step, at, out),
        }
    }

    /// Moves the rollback on once nothing is in flight.
    fn rollback_continue(
        &mut self,
        cause: Cause,
        step: Rollback,
        at: DateTime<Utc>,
        out: &mut Vec<Command>,
    ) -> State {
        if self.in_flight > 0 {
            return State::RollingBack { cause, step };
        }
        let (active, standby) = self.keys();
        let Some(old) = self.last_state(active).map(|k| k.fingerprint) else {
            return self.rolled_back(cause, None, at, out);
        };
        let back: Vec<usize> = (0..self.consumers.len())
            .filter(|&c| self.consumers[c].bound_forward)
            .collect();
        match step {
            Rollback::Draining => {
                if back.is_empty() {
                    return self.rolled_back(cause, None, at, out);
                }
                for c in back {
                    self.bind(at, c, active, old, out);
                }
                State::RollingBack {
                    cause,
                    step: Rollback::BindingBack,
                }
            }
            Rollback::BindingBack => {
                let not_back = self.not_back(&back, active);
                if !not_back.is_empty() {
                    return self.rollback_incomplete(cause, not_back, at, out);
                }
                let new = self.target;
                for c in back {
                    self.verify_consumer(at, c, active, old, out);
                    if let Some(new) = new
                        && self.consumers[c].consumer.kind == ConsumerKind::KeyVaultSecret
                    {
                        let consumer = self.consumers[c].consumer.clone();
                        self.issue(
                            Some(at),
                            Action::DisableVersions {
                                consumer,
                                fingerprints: vec![new],
                            },
                            Some(c),
                            out,
                        );
                    }
                }
                State::RollingBack {
                    cause,
                    step: Rollback::VerifyingBack,
                }
            }
            Rollback::VerifyingBack => {
                let not_back = self.not_back(&back, active);
                if !not_back.is_empty() {
                    return self.rollback_incomplete(cause, not_back, at, out);
                }
                self.regenerate(at, standby, Purpose::Discard, out);
                State::RollingBack {
                    cause,
                    step: Rollback::Discarding { failures: 0 },
                }
            }
            // Discarding moves on only through `rollback_answer`.
            Rollback::Discarding { .. } => State::RollingBack { cause, step },
        }
    }

    /// Consumers of `back` whose last bind or verification toward `key` failed.
    fn not_back(&self, back: &[usize], key: KeyName) -> Vec<(ConsumerId, String)> {
        back.iter()
            .filter_map(|&c| {
                let t = &self.consumers[c];
                match &t.status {
                    ConsumerStatus::Bound { key: k } | ConsumerStatus::Verified { key: k }
                        if *k == key =>
                    {
                        None
                    }
                    ConsumerStatus::BindFailed { reason, .. }
                    | ConsumerStatus::Mismatch { reason, .. } => {
                        Some((t.consumer.id.clone(), reason.clone()))
                    }
                    other => Some((t.consumer.id.clone(), format!("{other:?}"))),
                }
            })
            .collect()
    }

    fn rollback_incomplete(
        &mut self,
        cause: Cause,
        not_back: Vec<(ConsumerId, String)>,
        at: DateTime<Utc>,
        out: &mut Vec<Command>,
    ) -> State {
        let (active, _) = self.keys();
        let reason = Attention::RollbackIncomplete {
            cause,
            key: active,
            not_back,
        };
        self.park(at, reason, out)
    }

    fn rolled_back(
        &mut self,
        cause: Cause,
        discarded: Option<KeyName>,
        at: DateTime<Utc>,
        out: &mut Vec<Command>,
    ) -> State {
        let (active, _) = self.keys();
        if self.mode.is_incident() {
            let reason = Attention::LeakedKeyInUse {
                key: active,
                cause,
                discarded,
            };
            return self.park(at, reason, out);
        }
        let outcome = Outcome::RolledBack {
            cause,
            discarded,
            warnings: self.warnings.clone(),
        };
        self.finish(at, outcome, out)
    }

    fn regenerate_in_flight(&self, key: KeyName) -> bool {
        self.steps.iter().any(|s| {
            s.answer.is_none()
                && matches!(s.command.action, Action::Regenerate { key: k, .. } if k == key)
        })
    }

    fn killed_by_us(&self, key: KeyName) -> bool {
        self.regenerations.iter().any(|r| {
            r.key == key
                && matches!(
                    r.purpose,
                    Purpose::Retire | Purpose::Revoke | Purpose::Discard
                )
        })
    }

    fn reobserved(
        &mut self,
        state: State,
        at: DateTime<Utc>,
        obs: &Observation,
        out: &mut Vec<Command>,
    ) -> State {
        let Some(last) = self.last else {
            // Observe is still outstanding: there is nothing recorded to compare with.
            self.note(at, Note::Reobserved { drifts: vec![] });
            return state;
        };
        let mut drifts = Vec::new();
        for key in KeyName::BOTH {
            let expected = last[index(key)].fingerprint;
            let found = obs.key(key).fingerprint;
            if found != expected && !self.regenerate_in_flight(key) {
                drifts.push(Drift {
                    key,
                    expected,
                    found,
                });
            }
        }
        self.note(
            at,
            Note::Reobserved {
                drifts: drifts.clone(),
            },
        );
        if drifts.is_empty() {
            return state;
        }
        let mut park = Vec::new();
        let mut roll_back = false;
        for d in &drifts {
            match self.drift_response(&state, d.key) {
                DriftResponse::Park(why) => park.push(why),
                DriftResponse::RollBack => roll_back = true,
                DriftResponse::Continue => {}
            }
        }
        if !park.is_empty() {
            let reason = Attention::Drift {
                drifts,
                detail: park.join("; "),
            };
            return self.park(at, reason, out);
        }
        // Carry on from what Azure holds now, so a later regeneration's `before` is right.
        if let Some(last) = &mut self.last {
            for d in &drifts {
                last[index(d.key)] = *obs.key(d.key);
            }
        }
        if roll_back {
            return self.roll_back(Cause::Drift { drifts }, at, out);
        }
        state
    }

    fn drift_response(&self, state: &State, key: KeyName) -> DriftResponse {
        let Some(d) = &self.decision else {
            return DriftResponse::Continue;
        };
        let committed = matches!(
            state,
            State::Committing | State::Grace | State::Retiring { .. } | State::Cleanup
        );
        if d.route == Route::LeakedStandby {
            return if key == d.standby {
                DriftResponse::Continue
            } else {
                DriftResponse::Park(format!(
                    "consumers hold {key}, which changed outside keyflip, so they may be broken"
                ))
            };
        }
        if key == d.active {
            if self.killed_by_us(key) {
                DriftResponse::Continue
            } else if committed {
                DriftResponse::Park(format!(
                    "{key} was to be retired by this rotation but someone else regenerated it; find out who before retiring anything"
                ))
            } else {
                DriftResponse::Park(format!(
                    "consumers hold {key}, which changed outside keyflip before commit, so nothing can roll back to it"
                ))
            }
        } else if committed {
            DriftResponse::Park(format!(
                "consumers were moved to {key}, which changed outside keyflip after commit, so they may be broken"
            ))
        } else if matches!(state, State::RollingBack { .. }) {
            DriftResponse::Continue
        } else if self.revoke_first()
            && self.steps.iter().any(|s| {
                matches!(
                    s.command.action,
                    Action::Regenerate {
                        purpose: Purpose::Revoke,
                        ..
                    }
                )
            })
        {
            DriftResponse::Park(format!(
                "consumers are being moved to {key}, which changed outside keyflip after the leaked key was revoked, so nothing can roll back"
            ))
        } else {
            DriftResponse::RollBack
        }
    }
}
