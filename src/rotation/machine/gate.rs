//! The usage gate (`Options::usage_gate`): the account's resource logs, asked through
//! `CheckUsage`, decide when a key that callers may still sign with is regenerated.
//!
//! - **Retire** (`Scheduled`, `Retire`): after the commit, not before the swap plus
//!   the ingestion latency plus the quiet period (nor before the grace ends), ask who
//!   signed with the old key since the swap. Nobody in the quiet window (the quiet
//!   period before the newest logs that are surely in: `at − latency − quiet` on) →
//!   retire. Someone → hold: both keys keep working, the rotation stays committed and
//!   asks again after `recheck`; past the deadline (swap + deadline) it parks
//!   `NeedsAttention: UsageGateHeld` naming the callers. Logs that cannot be read
//!   never count as quiet: they hold like callers do.
//! - **Stage** (`Scheduled`): before the standby is regenerated, anyone who signed
//!   with it within the lookback would break: the rotation is refused, nothing
//!   changed. Unreadable logs refuse too.
//! - **Incident** (`Leaked*`): an incident never waits. Before the leaked key dies,
//!   the callers that signed with it within the lookback are asked for and reported
//!   as breaking now (a warning), whatever the answer; then the route goes on.
//!
//! Every `CheckUsage` carries the key's fingerprint as the machine knows it, so the
//! executor never asks the logs about another value.

use chrono::{DateTime, TimeDelta, Utc};

use super::failure::{Warning, WarningKind};
use super::outcome::*;
use super::proof::Committed;
use super::types::*;
use super::view::Note;
use super::{Decided, Kind, Machine, Stage, Then};
use crate::key::KeyName;

impl Machine {
    /// Asks who signed with `key` since `since`.
    fn check_usage(
        &mut self,
        d: &Decided,
        at: DateTime<Utc>,
        key: KeyName,
        since: DateTime<Utc>,
        purpose: GatePurpose,
        out: &mut Vec<Command>,
    ) {
        let fingerprint = d.last(key).fingerprint;
        self.issue(
            Some(at),
            Action::CheckUsage {
                key,
                fingerprint,
                since,
                purpose,
            },
            None,
            out,
        );
    }

    /// The lookback's start, for checks that are not counted from a swap.
    fn lookback_from(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        let lookback = self
            .options
            .usage_gate
            .map_or(TimeDelta::zero(), |g| g.lookback);
        at.checked_sub_signed(lookback).unwrap_or(at)
    }

    /// A `Scheduled` route with a gate: before staging, the standby's callers.
    pub(super) fn check_standby(
        &mut self,
        d: &Decided,
        at: DateTime<Utc>,
        out: &mut Vec<Command>,
    ) -> Stage {
        let since = self.lookback_from(at);
        self.check_usage(d, at, d.standby, since, GatePurpose::Stage, out);
        Stage::CheckingStandby
    }

    pub(super) fn standby_answer(
        &mut self,
        d: &Decided,
        result: &StepResult,
        at: DateTime<Utc>,
        out: &mut Vec<Command>,
    ) -> Stage {
        let reason = match result {
            StepResult::UsageChecked { callers, .. } if callers.is_empty() => {
                self.regenerate(d, at, d.standby, Purpose::Stage, out);
                return Stage::Staging;
            }
            StepResult::UsageChecked { callers, .. } => RefusalReason::StandbyInUse {
                key: d.standby,
                callers: callers.clone(),
            },
            StepResult::UsageUnknown { reason } => RefusalReason::UsageUnknown {
                key: d.standby,
                failure: reason.clone(),
            },
            other => {
                return self.impossible(
                    at,
                    format!(
                        "`{}` answered while checking the standby's callers",
                        other.name()
                    ),
                    out,
                );
            }
        };
        self.finish(
            at,
            Outcome::Refused {
                reasons: vec![reason],
            },
            out,
        )
    }

    /// After the commit of a route that retires: the retire at once, a grace wait
    /// (long enough, with a gate, for its first check), or straight to the gate.
    pub(super) fn after_commit(
        &mut self,
        d: &Decided,
        committed: Committed,
        at: DateTime<Utc>,
        grace: TimeDelta,
        out: &mut Vec<Command>,
    ) -> Stage {
        let wait = grace.max(self.first_gate_check());
        if wait > TimeDelta::zero() {
            let until = at
                .checked_add_signed(wait)
                .unwrap_or(DateTime::<Utc>::MAX_UTC);
            self.issue(Some(at), Action::WaitUntil { at: until }, None, out);
            return Stage::Grace { committed };
        }
        self.retire_or_gate(d, committed, at, out)
    }

    /// How long after the commit the gate's first check comes: the ingestion latency
    /// plus the quiet period, so the logs that would show a caller are in. Zero when
    /// the gate does not apply: no gate, a forced retire, or an incident (the gate
    /// never holds an incident's retire).
    pub(super) fn first_gate_check(&self) -> TimeDelta {
        if self.gate_skipped() {
            return TimeDelta::zero();
        }
        self.options
            .usage_gate
            .map_or(TimeDelta::zero(), |g| g.latency + g.quiet)
    }

    /// Whether this rotation retires without asking the gate: `--force-retire`, or an
    /// incident (including one that took over a scheduled rotation in its grace).
    fn gate_skipped(&self) -> bool {
        matches!(self.mode, Mode::Retire { force: true, .. }) || self.mode.is_incident()
    }

    /// The grace period is over (or there was none): the gate's first check, or the
    /// retire when the rotation has no gate (or the retire is forced, or an incident).
    pub(super) fn retire_or_gate(
        &mut self,
        d: &Decided,
        committed: Committed,
        at: DateTime<Utc>,
        out: &mut Vec<Command>,
    ) -> Stage {
        let skipped = self.gate_skipped();
        let Some(gate) = self.options.usage_gate.filter(|_| !skipped) else {
            self.retire(d, at, &committed, out);
            return Stage::Retiring {
                committed,
                failures: 0,
            };
        };
        // The swap: the parked rotation's, for a resumed retire; else this commit.
        let committed_at = self.committed_at().unwrap_or(at);
        let since = match self.mode {
            Mode::Retire { since, .. } => since,
            _ => committed_at,
        };
        let deadline = committed_at
            .checked_add_signed(gate.deadline)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        self.check_usage(d, at, d.active, since, GatePurpose::Retire, out);
        Stage::Gating {
            committed,
            since,
            deadline,
        }
    }

    /// An answer while the gate holds the retire.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn gate_answer(
        &mut self,
        d: &Decided,
        committed: Committed,
        since: DateTime<Utc>,
        deadline: DateTime<Utc>,
        kind: Kind,
        result: &StepResult,
        at: DateTime<Utc>,
        out: &mut Vec<Command>,
    ) -> Stage {
        let Some(gate) = self.options.usage_gate else {
            return self.impossible(
                at,
                "the usage gate answered in a rotation without one".into(),
                out,
            );
        };
        let (blocking, unknown) = match (kind, result) {
            (Kind::Wait, StepResult::Waited) => {
                self.check_usage(d, at, d.active, since, GatePurpose::Retire, out);
                return Stage::Gating {
                    committed,
                    since,
                    deadline,
                };
            }
            (_, StepResult::UsageChecked { callers, .. }) => {
                // Rows older than the quiet window are callers that stopped; rows
                // younger than the latency may be missing, which the wait before the
                // first check (and the deadline) accounts for.
                let quiet_from = at - gate.latency - gate.quiet;
                let blocking: Vec<Caller> = callers
                    .iter()
                    .filter(|c| c.last_seen >= quiet_from)
                    .cloned()
                    .collect();
                if blocking.is_empty() {
                    if !callers.is_empty() {
                        self.warn(
                            at,
                            Warning::new(
                                WarningKind::UsageHeld,
                                format!(
                                    "{} caller(s) signed with {} after the swap and then stopped before the retire: ",
                                    callers.len(),
                                    d.active
                                ) + &list(callers),
                            ),
                        );
                    }
                    self.retire(d, at, &committed, out);
                    return Stage::Retiring {
                        committed,
                        failures: 0,
                    };
                }
                (blocking, None)
            }
            (_, StepResult::UsageUnknown { reason }) => (Vec::new(), Some(reason.clone())),
            (_, other) => {
                return self.impossible(
                    at,
                    format!(
                        "`{}` answered while the usage gate held the retire",
                        other.name()
                    ),
                    out,
                );
            }
        };
        let next = at + gate.recheck;
        if next > deadline {
            return self.park(
                at,
                Attention::UsageGateHeld {
                    key: d.active,
                    callers: blocking,
                    since,
                    deadline,
                    unknown,
                },
                out,
            );
        }
        self.note(
            at,
            Note::UsageHeld {
                key: d.active,
                callers: blocking,
                unknown,
                next,
                deadline,
            },
        );
        self.issue(Some(at), Action::WaitUntil { at: next }, None, out);
        Stage::Gating {
            committed,
            since,
            deadline,
        }
    }

    /// An incident: ask who signs with `key` (the leaked one) before it dies, then do
    /// `then`; without a gate, do it at once.
    pub(super) fn report_then(
        &mut self,
        d: &Decided,
        key: KeyName,
        then: Then,
        at: DateTime<Utc>,
        out: &mut Vec<Command>,
    ) -> Stage {
        if self.options.usage_gate.is_none() {
            return self.go_on(d, then, at, out);
        }
        let since = self.lookback_from(at);
        self.check_usage(d, at, key, since, GatePurpose::Incident, out);
        Stage::Reporting { then }
    }

    pub(super) fn report_answer(
        &mut self,
        d: &Decided,
        then: Then,
        result: &StepResult,
        at: DateTime<Utc>,
        out: &mut Vec<Command>,
    ) -> Stage {
        let key = match self
            .steps
            .iter()
            .rev()
            .find_map(|s| match s.command.action {
                Action::CheckUsage { key, .. } => Some(key),
                _ => None,
            }) {
            Some(k) => k,
            None => d.active,
        };
        if !self.incident_callers(key, result, at) {
            return self.impossible(
                at,
                format!("`{}` answered while asking who breaks", result.name()),
                out,
            );
        }
        self.go_on(d, then, at, out)
    }

    /// An incident's usage answer about the leaked `key`, as a warning naming who
    /// breaks (or that the logs could not say); `false` for an answer that is not one.
    pub(super) fn incident_callers(
        &mut self,
        key: KeyName,
        result: &StepResult,
        at: DateTime<Utc>,
    ) -> bool {
        match result {
            StepResult::UsageChecked { callers, .. } if callers.is_empty() => {}
            StepResult::UsageChecked { callers, .. } => self.warn(
                at,
                Warning::new(
                    WarningKind::CallersWillBreak,
                    format!(
                        "{} caller(s) signed with the leaked {key} recently and break now that it is regenerated: {}",
                        callers.len(),
                        list(callers)
                    ),
                ),
            ),
            StepResult::UsageUnknown { reason } => self.warn(
                at,
                Warning::new(
                    WarningKind::UsageUnknown,
                    format!(
                        "the resource logs could not say who signs with the leaked {key} ({reason}); callers outside the plan may break"
                    ),
                ),
            ),
            _ => return false,
        }
        true
    }

    fn go_on(
        &mut self,
        d: &Decided,
        then: Then,
        at: DateTime<Utc>,
        out: &mut Vec<Command>,
    ) -> Stage {
        match then {
            Then::Retire(committed) => {
                self.retire(d, at, &committed, out);
                Stage::Retiring {
                    committed,
                    failures: 0,
                }
            }
            Then::Revoke(key) => {
                self.regenerate(d, at, key, Purpose::Revoke, out);
                Stage::Revoking { failures: 0 }
            }
        }
    }
}

fn list(callers: &[Caller]) -> String {
    callers
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
