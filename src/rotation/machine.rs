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
//! | T29 | RollingBack(draining) | last in-flight answer | `Bind(active)` every consumer a forward `Bind` was issued to → binding back; none → T34 |
//! | T30 | RollingBack(binding back) | batch done, a `BindFailed` | `Finish(NeedsAttention: RollbackIncomplete)` |
//! | T31 | RollingBack(binding back) | batch done, all bound | `VerifyConsumer(active)` each, plus `DisableVersions(new fp)` for Key Vault → verifying back |
//! | T32 | RollingBack(verifying back) | batch done, all verified | `Regenerate(standby, discard)` → discarding (a `DisableFailed` is a warning) |
//! | T33 | RollingBack(verifying back) | batch done, a mismatch | `Finish(NeedsAttention: RollbackIncomplete)` |
//! | T34 | RollingBack(discarding) | `Regenerated`; or nothing was bound and nothing staged | `Finish(RolledBack)`; incident modes `Finish(NeedsAttention: LeakedKeyInUse)` |
//! | T34a | RollingBack(draining) | last in-flight answer, nothing bound, the standby staged | `Regenerate(standby, discard)` → discarding |
//! | T35 | any but Prechecking | `Reobserved`, every key as recorded (or in doubt) | nothing |
//! | T36 | any | `Reobserved`, a key consumers rely on, or one still to be retired, changed | `Finish(NeedsAttention: Drift)`, in-doubt commands listed |
//! | T37 | VerifyingKey, Binding, VerifyingConsumers | `Reobserved`, the standby changed before commit (and before any revoke) | roll back (cause: drift) |
//! | T38 | any | `Reobserved`, a key no consumer relies on changed: one this rotation already killed, the standby during a rollback, the leaked standby | note it, take it as the new `before`, go on |
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
//! regenerated once more (`Discard`); a staged standby is discarded even when no
//! consumer had been bound (it failed verification). A rollback that cannot bring everyone back
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

mod advance;
mod drift;
mod forward;
mod outcome;
mod precheck;
mod rollback;
mod types;
mod view;

#[cfg(test)]
mod random_tests;
#[cfg(test)]
mod tests;

use chrono::{DateTime, TimeDelta, Utc};

pub use outcome::*;
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
}
