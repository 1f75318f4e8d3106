//! When each plan is due: cron with time zones, maximum key age, rotation windows and
//! jitter.
//!
//! Everything here is a pure function of its arguments: `now` and what is known about
//! the plan's keys arrive as parameters, nothing reads a clock, a file or the network,
//! so the daemon, `status` and `plan check` get the same answer for the same inputs and
//! tests use fixed instants. [`decide`] says whether a plan is due now and, if not,
//! when to look again; [`next_due_times`] lists upcoming rotations. The DST rules live
//! in [`wall_clock`] and [`cron`], the window rules in [`window`], jitter in [`jitter`].

pub mod cron;
mod decide;
pub mod jitter;
pub(crate) mod wall_clock;
pub mod window;

use std::fmt;

use chrono::TimeDelta;
use chrono_tz::Tz;

pub use cron::{CronSpec, CronSpecError};
pub use decide::{Decision, Known, Trigger, WaitCause, decide, next_due_times};
pub use window::{Window, WindowError};

use crate::plan::duration;

/// Cron schedules may not fire more often than this: a rotation makes several ARM
/// writes and waits out a grace period, so faster schedules are mistakes.
pub(crate) const MIN_CRON_INTERVAL: TimeDelta = TimeDelta::minutes(1);

/// `max_key_age` below this would rotate again before the last rotation settled.
pub(crate) const MIN_MAX_KEY_AGE: TimeDelta = TimeDelta::hours(1);

/// A validated schedule. Build it with [`Schedule::new`], which refuses combinations
/// that cannot work.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    cron: Option<CronSpec>,
    timezone: Tz,
    max_key_age: Option<TimeDelta>,
    window: Option<Window>,
    jitter: TimeDelta,
}

/// Why a combination of schedule settings was refused. Each names the setting to change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("a schedule needs `cron`, `max_key_age`, or both")]
    NoTrigger,
    #[error("the cron expression fires every {}; keyflip rotates at most once a minute", fmt_delta(*.0))]
    TooFrequent(TimeDelta),
    #[error("max_key_age {} is shorter than the minimum of 1h", fmt_delta(*.0))]
    MaxKeyAgeTooShort(TimeDelta),
    #[error("jitter {} is not shorter than the {} between cron occurrences", fmt_delta(*.jitter), fmt_delta(*.interval))]
    JitterExceedsCron {
        jitter: TimeDelta,
        interval: TimeDelta,
    },
    #[error("jitter {} is not shorter than the {} rotation window", fmt_delta(*.jitter), fmt_delta(*.window))]
    JitterExceedsWindow {
        jitter: TimeDelta,
        window: TimeDelta,
    },
    #[error("jitter is negative")]
    NegativeJitter,
}

impl Schedule {
    pub fn new(
        cron: Option<CronSpec>,
        timezone: Tz,
        max_key_age: Option<TimeDelta>,
        window: Option<Window>,
        jitter: TimeDelta,
    ) -> Result<Schedule, ScheduleError> {
        if cron.is_none() && max_key_age.is_none() {
            return Err(ScheduleError::NoTrigger);
        }
        if jitter < TimeDelta::zero() {
            return Err(ScheduleError::NegativeJitter);
        }
        if let Some(interval) = cron.as_ref().and_then(CronSpec::shortest_interval) {
            if interval < MIN_CRON_INTERVAL {
                return Err(ScheduleError::TooFrequent(interval));
            }
            // Jitter past the next occurrence would start a rotation after it, and that
            // occurrence would then be silently absorbed.
            if jitter >= interval {
                return Err(ScheduleError::JitterExceedsCron { jitter, interval });
            }
        }
        if let Some(age) = max_key_age
            && age < MIN_MAX_KEY_AGE
        {
            return Err(ScheduleError::MaxKeyAgeTooShort(age));
        }
        if let Some(w) = &window
            && jitter >= w.length()
        {
            return Err(ScheduleError::JitterExceedsWindow {
                jitter,
                window: w.length(),
            });
        }
        Ok(Schedule {
            cron,
            timezone,
            max_key_age,
            window,
            jitter,
        })
    }

    pub fn cron(&self) -> Option<&CronSpec> {
        self.cron.as_ref()
    }

    /// The zone cron expressions and windows are read in.
    pub(crate) fn timezone(&self) -> Tz {
        self.timezone
    }

    pub fn max_key_age(&self) -> Option<TimeDelta> {
        self.max_key_age
    }

    pub fn window(&self) -> Option<&Window> {
        self.window.as_ref()
    }

    pub fn jitter(&self) -> TimeDelta {
        self.jitter
    }
}

/// One line for `plan check` and `status`: `cron "0 3 * * SUN" Europe/Berlin, max key
/// age 90d, window 01:00-05:00 sat,sun, jitter 10m`.
impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(cron) = &self.cron {
            parts.push(format!("cron \"{cron}\" {}", self.timezone.name()));
        }
        if let Some(age) = self.max_key_age {
            parts.push(format!("max key age {}", fmt_delta(age)));
        }
        if let Some(window) = &self.window {
            let zone = if self.cron.is_none() {
                format!(" {}", self.timezone.name())
            } else {
                String::new()
            };
            parts.push(format!("window {window}{zone}"));
        }
        if self.jitter > TimeDelta::zero() {
            parts.push(format!("jitter {}", fmt_delta(self.jitter)));
        }
        f.write_str(&parts.join(", "))
    }
}

/// Formats a non-negative `TimeDelta` like plan durations (`1h30m`).
pub(crate) fn fmt_delta(delta: TimeDelta) -> String {
    duration::format(delta.to_std().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveTime, WeekdaySet};

    fn window(start: u32, end: u32) -> Window {
        let t = |h| NaiveTime::from_hms_opt(h, 0, 0).unwrap();
        Window::new(t(start), t(end), WeekdaySet::ALL).unwrap()
    }

    fn cron(text: &str) -> Option<CronSpec> {
        Some(CronSpec::parse(text).unwrap())
    }

    #[test]
    fn refuses_what_cannot_work() {
        let utc = chrono_tz::UTC;
        let zero = TimeDelta::zero();
        assert_eq!(
            Schedule::new(None, utc, None, None, zero),
            Err(ScheduleError::NoTrigger)
        );
        assert_eq!(
            Schedule::new(cron("*/20 * * * * *"), utc, None, None, zero),
            Err(ScheduleError::TooFrequent(TimeDelta::seconds(20)))
        );
        assert_eq!(
            Schedule::new(
                cron("*/10 * * * *"),
                utc,
                None,
                None,
                TimeDelta::minutes(10)
            ),
            Err(ScheduleError::JitterExceedsCron {
                jitter: TimeDelta::minutes(10),
                interval: TimeDelta::minutes(10)
            })
        );
        assert_eq!(
            Schedule::new(None, utc, Some(TimeDelta::minutes(5)), None, zero),
            Err(ScheduleError::MaxKeyAgeTooShort(TimeDelta::minutes(5)))
        );
        let err = Schedule::new(
            cron("0 3 * * *"),
            utc,
            None,
            Some(window(23, 1)),
            TimeDelta::hours(2),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "jitter 2h is not shorter than the 2h rotation window"
        );
    }

    #[test]
    fn summary_names_every_setting() {
        let s = Schedule::new(
            cron("0 3 * * SUN"),
            chrono_tz::Europe::Berlin,
            Some(TimeDelta::days(90)),
            Some(window(1, 5)),
            TimeDelta::minutes(10),
        )
        .unwrap();
        assert_eq!(
            s.to_string(),
            "cron \"0 3 * * SUN\" Europe/Berlin, max key age 90d, window 01:00-05:00, jitter 10m"
        );
    }
}
