//! Turning a wall-clock time in a time zone into one instant, across DST changes.
//!
//! Schedules and windows are written in local time, and local time is not a line:
//! on a fall-back day an hour happens twice, on a spring-forward day an hour does not
//! happen at all. keyflip's rule, used for cron occurrences and window edges alike:
//!
//! - a repeated wall-clock time means its **first** instant (so nothing runs twice);
//! - a wall-clock time inside a gap means the **end of the gap**, the first instant
//!   after the clocks jumped (so nothing is skipped).

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeDelta, TimeZone as _, Timelike as _, Utc};
use chrono_tz::Tz;

/// The instant a wall-clock time in `tz` stands for, by the rule above. `None` only
/// at the ends of the representable calendar.
pub fn resolve(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(first, _) => Some(first.with_timezone(&Utc)),
        LocalResult::None => end_of_gap(tz, local),
    }
}

/// The first instant after the gap that contains `local`. Transitions happen on whole
/// minutes in every zone the tz database describes since 1970, so stepping minute by
/// minute from `local`'s minute finds the exact transition. Gaps are at most a few
/// hours; two days of steps covers the historic outliers (a skipped calendar day).
fn end_of_gap(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    let minute = local.with_second(0)?.with_nanosecond(0)?;
    (1..=2 * 24 * 60).find_map(|step| {
        let later = minute.checked_add_signed(TimeDelta::minutes(step))?;
        match tz.from_local_datetime(&later) {
            LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Some(t.with_timezone(&Utc)),
            LocalResult::None => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn local(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, mo, d)
            .and_then(|date| date.and_hms_opt(h, mi, 0))
            .unwrap()
    }

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn repeated_time_resolves_to_its_first_instant() {
        // Berlin falls back at 03:00 CEST (01:00Z) on 2025-10-26: 02:30 happens twice.
        let at = resolve(chrono_tz::Europe::Berlin, local(2025, 10, 26, 2, 30));
        assert_eq!(at, Some(utc("2025-10-26T00:30:00Z")));
    }

    #[test]
    fn skipped_time_resolves_to_the_end_of_the_gap() {
        // Berlin springs forward at 02:00 CET (01:00Z) on 2025-03-30 to 03:00 CEST.
        let at = resolve(chrono_tz::Europe::Berlin, local(2025, 3, 30, 2, 30));
        assert_eq!(at, Some(utc("2025-03-30T01:00:00Z")));
        // New York springs forward at 02:00 EST (07:00Z) on 2025-03-09.
        let at = resolve(chrono_tz::America::New_York, local(2025, 3, 9, 2, 59));
        assert_eq!(at, Some(utc("2025-03-09T07:00:00Z")));
    }

    #[test]
    fn ordinary_time_is_unchanged() {
        let at = resolve(chrono_tz::America::New_York, local(2025, 7, 1, 12, 0));
        assert_eq!(at, Some(utc("2025-07-01T16:00:00Z")));
    }
}
