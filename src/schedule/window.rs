//! Rotation windows: the local hours, on chosen days, when a plan may start a rotation.
//!
//! A window is `start..end` in the schedule's time zone. When `end` is earlier than
//! `start` the window spans midnight, and it belongs to the day it **opens** on:
//! `22:00–02:00` on `sat` runs from Saturday 22:00 to Sunday 02:00. Window edges follow
//! the wall-clock rule of [`super::wall_clock`], so on a spring-forward day an opening
//! inside the gap moves to the end of the gap, and a window lying wholly inside the gap
//! does not open that day.

use std::fmt;

use chrono::{
    DateTime, Datelike as _, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, Utc, Weekday,
    WeekdaySet,
};
use chrono_tz::Tz;

use super::wall_clock;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    start: NaiveTime,
    end: NaiveTime,
    days: WeekdaySet,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("the window opens and closes at the same time ({})", .0.format("%H:%M"))]
    Empty(NaiveTime),
    #[error("the window has no days")]
    NoDays,
}

impl Window {
    pub fn new(start: NaiveTime, end: NaiveTime, days: WeekdaySet) -> Result<Window, WindowError> {
        if start == end {
            return Err(WindowError::Empty(start));
        }
        if days.is_empty() {
            return Err(WindowError::NoDays);
        }
        Ok(Window { start, end, days })
    }

    pub fn start(&self) -> NaiveTime {
        self.start
    }

    pub fn end(&self) -> NaiveTime {
        self.end
    }

    /// The days the window opens on.
    pub fn days(&self) -> WeekdaySet {
        self.days
    }

    pub(crate) fn spans_midnight(&self) -> bool {
        self.end < self.start
    }

    /// The window's length on the wall clock (a DST change makes one day's window an
    /// hour longer or shorter).
    pub fn length(&self) -> TimeDelta {
        let length = self.end - self.start;
        if self.spans_midnight() {
            length + TimeDelta::days(1)
        } else {
            length
        }
    }

    /// Whether `at` lies inside the window.
    pub fn contains(&self, tz: Tz, at: DateTime<Utc>) -> bool {
        self.opened_on(tz, at).is_some()
    }

    /// The first instant at or after `at` inside the window: `at` itself when it is
    /// inside, else the next opening. `None` only at the end of the calendar.
    pub(crate) fn next_opening(&self, tz: Tz, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.contains(tz, at) {
            return Some(at);
        }
        let today = at.with_timezone(&tz).date_naive();
        // Eight days reach the next opening even when one of them falls in a gap.
        (0..=8)
            .filter_map(|offset| today.checked_add_signed(TimeDelta::days(offset)))
            .filter(|day| self.days.contains(day.weekday()))
            .filter_map(|day| wall_clock::resolve(tz, day.and_time(self.start)))
            .find(|&opening| opening >= at && self.contains(tz, opening))
    }

    /// When the window that contains `at` closes; `None` when `at` is outside.
    pub(crate) fn closing(&self, tz: Tz, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let opened = self.opened_on(tz, at)?;
        let close_day = if self.spans_midnight() {
            opened.succ_opt()?
        } else {
            opened
        };
        wall_clock::resolve(tz, close_day.and_time(self.end))
    }

    /// The local date the window containing `at` opened on, if `at` is inside.
    fn opened_on(&self, tz: Tz, at: DateTime<Utc>) -> Option<NaiveDate> {
        let local: NaiveDateTime = at.with_timezone(&tz).naive_local();
        let (date, time) = (local.date(), local.time());
        let open_today = self.days.contains(date.weekday());
        if !self.spans_midnight() {
            return (open_today && self.start <= time && time < self.end).then_some(date);
        }
        if time >= self.start && open_today {
            return Some(date);
        }
        let yesterday = date.pred_opt()?;
        (time < self.end && self.days.contains(yesterday.weekday())).then_some(yesterday)
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}",
            self.start.format("%H:%M"),
            self.end.format("%H:%M")
        )?;
        if self.days != WeekdaySet::ALL {
            let days: Vec<&str> = self.days.iter(Weekday::Mon).map(day_name).collect();
            write!(f, " {}", days.join(","))?;
        }
        Ok(())
    }
}

/// The short lowercase name plans use for a weekday.
pub(crate) fn day_name(day: Weekday) -> &'static str {
    match day {
        Weekday::Mon => "mon",
        Weekday::Tue => "tue",
        Weekday::Wed => "wed",
        Weekday::Thu => "thu",
        Weekday::Fri => "fri",
        Weekday::Sat => "sat",
        Weekday::Sun => "sun",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::{Europe::Berlin, UTC};

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn hm(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    fn weekend_night() -> Window {
        // Friday and Saturday nights, 22:00 to 02:00 the next morning.
        Window::new(
            hm(22, 0),
            hm(2, 0),
            WeekdaySet::from_array([Weekday::Fri, Weekday::Sat]),
        )
        .unwrap()
    }

    #[test]
    fn refuses_empty_windows() {
        assert_eq!(
            Window::new(hm(1, 0), hm(1, 0), WeekdaySet::ALL),
            Err(WindowError::Empty(hm(1, 0)))
        );
        assert_eq!(
            Window::new(hm(1, 0), hm(2, 0), WeekdaySet::EMPTY),
            Err(WindowError::NoDays)
        );
    }

    #[test]
    fn a_window_across_midnight_belongs_to_its_opening_day() {
        let w = weekend_night();
        assert_eq!(w.length(), TimeDelta::hours(4));
        // 2025-06-06 is a Friday.
        assert!(w.contains(UTC, utc("2025-06-06T22:00:00Z")));
        assert!(
            w.contains(UTC, utc("2025-06-07T01:59:59Z")),
            "Saturday morning, Friday's window"
        );
        assert!(!w.contains(UTC, utc("2025-06-07T02:00:00Z")));
        assert!(
            w.contains(UTC, utc("2025-06-08T01:00:00Z")),
            "Sunday morning, Saturday's window"
        );
        assert!(
            !w.contains(UTC, utc("2025-06-08T22:30:00Z")),
            "Sunday night is not open"
        );
        assert!(
            !w.contains(UTC, utc("2025-06-06T01:00:00Z")),
            "Thursday's night is not open"
        );
        assert_eq!(
            w.closing(UTC, utc("2025-06-06T23:00:00Z")),
            Some(utc("2025-06-07T02:00:00Z"))
        );
    }

    #[test]
    fn next_opening_skips_closed_days() {
        let w = weekend_night();
        // From Sunday 03:00, the next opening is Friday 22:00.
        assert_eq!(
            w.next_opening(UTC, utc("2025-06-08T03:00:00Z")),
            Some(utc("2025-06-13T22:00:00Z"))
        );
        // Inside the window, the answer is the instant itself.
        let inside = utc("2025-06-07T23:00:00Z");
        assert_eq!(w.next_opening(UTC, inside), Some(inside));
    }

    #[test]
    fn local_time_decides_membership() {
        let w = Window::new(hm(1, 0), hm(5, 0), WeekdaySet::ALL).unwrap();
        // 01:30 CEST is 23:30Z the day before.
        assert!(w.contains(Berlin, utc("2025-06-06T23:30:00Z")));
        assert!(!w.contains(Berlin, utc("2025-06-07T03:30:00Z")));
        assert_eq!(
            w.next_opening(Berlin, utc("2025-06-07T12:00:00Z")),
            Some(utc("2025-06-07T23:00:00Z"))
        );
    }

    #[test]
    fn a_window_inside_a_spring_forward_gap_does_not_open_that_day() {
        // Berlin skips 02:00-03:00 on 2025-03-30.
        let inside_gap = Window::new(hm(2, 0), hm(2, 30), WeekdaySet::ALL).unwrap();
        assert_eq!(
            inside_gap.next_opening(Berlin, utc("2025-03-29T12:00:00Z")),
            Some(utc("2025-03-31T00:00:00Z"))
        );
        // A window that starts in the gap opens at its end.
        let straddling = Window::new(hm(2, 30), hm(4, 0), WeekdaySet::ALL).unwrap();
        assert_eq!(
            straddling.next_opening(Berlin, utc("2025-03-29T12:00:00Z")),
            Some(utc("2025-03-30T01:00:00Z"))
        );
    }

    #[test]
    fn displays_like_the_plan_file() {
        assert_eq!(weekend_night().to_string(), "22:00-02:00 fri,sat");
        let every_day = Window::new(hm(1, 0), hm(5, 0), WeekdaySet::ALL).unwrap();
        assert_eq!(every_day.to_string(), "01:00-05:00");
    }
}
