//! The scheduling decision: is a plan due now, and if not, when to look again.
//!
//! A plan becomes due through a **trigger**: a cron occurrence after the last rotation
//! started, or the active key reaching `max_key_age`. The trigger's instant is then
//! **placed**: moved to the next window opening when it falls outside the window, and
//! delayed by the plan's jitter (never past the window's close). The plan is due once
//! the placed instant has passed and `now` is inside the window.
//!
//! Promises:
//! - Missed cron occurrences run **once**: after downtime only the first occurrence
//!   after `last_started` counts, and the rotation that follows moves `last_started`
//!   past all of them.
//! - A plan that never rotated counts occurrences from a `baseline` (the daemon's start),
//!   so a new daemon does not fire for an occurrence in the distant past.
//! - A slot missed entirely (keyflip down for the whole window) waits for the next
//!   opening instead of running outside the window.

use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};

use super::{Schedule, fmt_delta, jitter};

/// What the caller knows about one plan at decision time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Known {
    /// Start of the last rotation the daemon ran or tried for this plan.
    pub last_started: Option<DateTime<Utc>>,
    /// `keyCreationTime` of the active key; `None` on accounts whose keys were never
    /// regenerated since Azure began recording it.
    pub(crate) active_key_created: Option<DateTime<Utc>>,
    /// Where cron counting starts when `last_started` is `None`: the daemon's start.
    pub baseline: DateTime<Utc>,
}

/// Why a plan is, or will become, due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The first cron occurrence after the last start (later missed ones fold into it).
    Cron { occurrence: DateTime<Utc> },
    /// The active key reaches `max_age` at `created + max_age`.
    KeyAge {
        created: DateTime<Utc>,
        max_age: TimeDelta,
    },
    /// The plan has `max_key_age` but Azure reports no creation time for the active key.
    KeyAgeUnknown,
}

/// What holds a plan back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitCause {
    /// The trigger lies in the future.
    NotYet,
    /// The trigger has passed; the plan's jitter delay has not.
    Jitter,
    /// The trigger has passed outside the rotation window.
    Window,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Start a rotation now. `since` is when it became due (trigger placed in the
    /// window, plus jitter).
    Due {
        trigger: Trigger,
        since: DateTime<Utc>,
    },
    /// Not due; decide again at `until`.
    Wait {
        until: DateTime<Utc>,
        trigger: Trigger,
        cause: WaitCause,
    },
    /// Nothing will make the plan due: its cron expression has no occurrence left
    /// before the year 5000 (croner's limit), and it has no usable `max_key_age`.
    Never,
}

impl Decision {
    #[cfg(test)]
    pub(crate) fn is_due(&self) -> bool {
        matches!(self, Decision::Due { .. })
    }

    /// When to decide again: `None` when due now or never.
    #[cfg(test)]
    pub(crate) fn next_check(&self) -> Option<DateTime<Utc>> {
        match self {
            Decision::Wait { until, .. } => Some(*until),
            Decision::Due { .. } | Decision::Never => None,
        }
    }

    /// A short stable label for metrics and JSON: `cron`, `key-age`,
    /// `key-age-unknown` when due; `not-yet`, `jitter`, `window` when waiting; `never`.
    pub(crate) fn reason_code(&self) -> &'static str {
        match self {
            Decision::Due { trigger, .. } => match trigger {
                Trigger::Cron { .. } => "cron",
                Trigger::KeyAge { .. } => "key-age",
                Trigger::KeyAgeUnknown => "key-age-unknown",
            },
            Decision::Wait { cause, .. } => match cause {
                WaitCause::NotYet => "not-yet",
                WaitCause::Jitter => "jitter",
                WaitCause::Window => "window",
            },
            Decision::Never => "never",
        }
    }
}

/// Decides whether `plan` (its name seeds the jitter) is due at `now`.
pub fn decide(plan: &str, schedule: &Schedule, known: &Known, now: DateTime<Utc>) -> Decision {
    let tz = schedule.timezone();
    let cron = schedule.cron().and_then(|cron| {
        let since = known.last_started.unwrap_or(known.baseline);
        let occurrence = cron.next_after(tz, since)?;
        Some((Trigger::Cron { occurrence }, occurrence))
    });
    let age = schedule
        .max_key_age()
        .and_then(|max_age| match known.active_key_created {
            // Checked: the creation time comes from Azure, and a nonsense one must not
            // overflow the calendar.
            Some(created) => Some((
                Trigger::KeyAge { created, max_age },
                created.checked_add_signed(max_age)?,
            )),
            None => Some((Trigger::KeyAgeUnknown, known.baseline)),
        });
    let placed = [cron, age]
        .into_iter()
        .flatten()
        .filter_map(|(trigger, at)| Some((trigger, at, place(plan, schedule, at)?)))
        .min_by_key(|&(_, _, fire)| fire);
    let Some((trigger, at, fire)) = placed else {
        return Decision::Never;
    };

    if fire > now {
        let cause = if at > now {
            WaitCause::NotYet
        } else if schedule.window().is_some_and(|w| !w.contains(tz, at)) {
            WaitCause::Window
        } else {
            WaitCause::Jitter
        };
        return Decision::Wait {
            until: fire,
            trigger,
            cause,
        };
    }
    if let Some(window) = schedule.window()
        && !window.contains(tz, now)
    {
        // The slot came and went with nothing started (keyflip was down or busy):
        // wait for the next opening rather than rotate outside the window.
        return match place(plan, schedule, now) {
            Some(until) => Decision::Wait {
                until,
                trigger,
                cause: WaitCause::Window,
            },
            None => Decision::Never,
        };
    }
    Decision::Due {
        trigger,
        since: fire,
    }
}

/// The next `n` times the plan's cron expression would start a rotation after `from`,
/// with window and jitter applied, assuming each rotation starts when due. Empty for a
/// plan scheduled only by `max_key_age`, whose due time depends on the live key.
pub fn next_due_times(
    plan: &str,
    schedule: &Schedule,
    from: DateTime<Utc>,
    n: usize,
) -> Vec<DateTime<Utc>> {
    let Some(cron) = schedule.cron() else {
        return Vec::new();
    };
    let mut since = from;
    let mut times = Vec::with_capacity(n);
    while times.len() < n {
        let Some(fire) = cron
            .next_after(schedule.timezone(), since)
            .and_then(|occurrence| place(plan, schedule, occurrence))
        else {
            break;
        };
        times.push(fire);
        // The rotation starts at `fire`, which becomes its `last_started`.
        since = fire;
    }
    times
}

/// Where a trigger at `at` actually fires: at `at` or the window's next opening, plus
/// the jitter offset, which is cut short so it never crosses the window's close.
fn place(plan: &str, schedule: &Schedule, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let Some(window) = schedule.window() else {
        return at.checked_add_signed(jitter::offset(plan, at, schedule.jitter()));
    };
    let tz = schedule.timezone();
    let opening = window.next_opening(tz, at)?;
    let room = window
        .closing(tz, opening)
        .map_or(TimeDelta::zero(), |close| close - opening);
    let limit = schedule.jitter().min(room);
    opening.checked_add_signed(jitter::offset(plan, opening, limit))
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::Cron { occurrence } => write!(f, "cron occurrence {}", stamp(*occurrence)),
            Trigger::KeyAge { created, max_age } => write!(
                f,
                "active key (created {}) reaches max_key_age {}",
                stamp(*created),
                fmt_delta(*max_age)
            ),
            Trigger::KeyAgeUnknown => f.write_str("key age unknown (no keyCreationTime)"),
        }
    }
}

/// One line for logs and `status`.
impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Due { trigger, since } => write!(f, "due since {}: {trigger}", stamp(*since)),
            Decision::Wait {
                until,
                trigger,
                cause,
            } => {
                let why = match cause {
                    WaitCause::NotYet => "next",
                    WaitCause::Jitter => "jitter delay after",
                    WaitCause::Window => "outside the rotation window after",
                };
                write!(f, "waiting until {}: {why} {trigger}", stamp(*until))
            }
            Decision::Never => f.write_str("never due: no further occurrence can be computed"),
        }
    }
}

fn stamp(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
