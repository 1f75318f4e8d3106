//! Scheduling decisions at fixed instants: missed runs, windows, DST, key age, jitter.

use chrono::{NaiveTime, Weekday, WeekdaySet};
use chrono_tz::{America::New_York, Europe::Berlin, Tz, UTC};

use super::*;
use crate::schedule::{CronSpec, Window};

fn utc(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

fn hm(h: u32, m: u32) -> NaiveTime {
    NaiveTime::from_hms_opt(h, m, 0).unwrap()
}

struct Setup {
    cron: Option<&'static str>,
    tz: Tz,
    max_key_age: Option<TimeDelta>,
    window: Option<Window>,
    jitter: TimeDelta,
}

impl Setup {
    fn cron(expression: &'static str, tz: Tz) -> Setup {
        Setup {
            cron: Some(expression),
            tz,
            max_key_age: None,
            window: None,
            jitter: TimeDelta::zero(),
        }
    }

    fn max_key_age(age: TimeDelta) -> Setup {
        Setup {
            cron: None,
            tz: UTC,
            max_key_age: Some(age),
            window: None,
            jitter: TimeDelta::zero(),
        }
    }

    fn window(mut self, window: Window) -> Setup {
        self.window = Some(window);
        self
    }

    fn jitter(mut self, jitter: TimeDelta) -> Setup {
        self.jitter = jitter;
        self
    }

    fn build(self) -> Schedule {
        Schedule::new(
            self.cron.map(|c| CronSpec::parse(c).unwrap()),
            self.tz,
            self.max_key_age,
            self.window,
            self.jitter,
        )
        .unwrap()
    }
}

fn known(last_started: Option<&str>, baseline: &str) -> Known {
    Known {
        last_started: last_started.map(utc),
        active_key_created: None,
        baseline: utc(baseline),
    }
}

/// Plays a daemon from `from` to `to`: decide, start a rotation when due (which
/// becomes `last_started`), otherwise sleep until the decision says. Returns the start
/// times. The daemon starts at `from`, which is its baseline.
fn simulate(schedule: &Schedule, from: &str, to: &str) -> Vec<DateTime<Utc>> {
    let (mut now, to) = (utc(from), utc(to));
    let mut state = Known {
        last_started: None,
        active_key_created: None,
        baseline: now,
    };
    let mut starts = Vec::new();
    for _ in 0..10_000 {
        match decide("sim", schedule, &state, now) {
            Decision::Due { .. } => {
                starts.push(now);
                state.last_started = Some(now);
            }
            Decision::Wait { until, .. } => {
                assert!(
                    until > now,
                    "a wait must move time forward: {until} at {now}"
                );
                now = until;
            }
            Decision::Never => break,
        }
        if now > to {
            break;
        }
    }
    starts
}

#[test]
fn missed_occurrences_after_downtime_run_once() {
    let s = Setup::cron("0 * * * *", UTC).build();
    // Last rotation at midnight, daemon back at 05:30: five occurrences were missed.
    let k = known(Some("2025-06-01T00:00:00Z"), "2025-06-01T05:30:00Z");
    let now = utc("2025-06-01T05:30:00Z");
    let d = decide("p", &s, &k, now);
    assert_eq!(
        d,
        Decision::Due {
            trigger: Trigger::Cron {
                occurrence: utc("2025-06-01T01:00:00Z")
            },
            since: utc("2025-06-01T01:00:00Z"),
        }
    );
    assert_eq!(d.reason_code(), "cron");
    // The rotation starts now; the missed ones are not replayed.
    let k = known(Some("2025-06-01T05:30:00Z"), "2025-06-01T05:30:00Z");
    let d = decide("p", &s, &k, now + TimeDelta::seconds(1));
    assert_eq!(
        d,
        Decision::Wait {
            until: utc("2025-06-01T06:00:00Z"),
            trigger: Trigger::Cron {
                occurrence: utc("2025-06-01T06:00:00Z")
            },
            cause: WaitCause::NotYet,
        }
    );
}

#[test]
fn a_fresh_plan_counts_from_the_baseline_not_the_past() {
    let s = Setup::cron("0 3 * * SUN", UTC).build();
    // Daemon started on a Wednesday; last Sunday's 03:00 is not due.
    let k = known(None, "2025-06-04T10:00:00Z");
    let d = decide("p", &s, &k, utc("2025-06-04T10:00:00Z"));
    assert_eq!(d.next_check(), Some(utc("2025-06-08T03:00:00Z")));
    assert!(!d.is_due());
    // Once the next Sunday passes, it is due.
    assert!(decide("p", &s, &k, utc("2025-06-08T03:00:00Z")).is_due());
}

#[test]
fn a_due_rotation_outside_the_window_waits_for_the_opening() {
    let s = Setup::cron("0 12 * * *", UTC)
        .window(Window::new(hm(1, 0), hm(5, 0), WeekdaySet::ALL).unwrap())
        .build();
    let k = known(Some("2025-06-01T13:00:00Z"), "2025-06-01T13:00:00Z");
    let d = decide("p", &s, &k, utc("2025-06-02T12:05:00Z"));
    assert_eq!(
        d,
        Decision::Wait {
            until: utc("2025-06-03T01:00:00Z"),
            trigger: Trigger::Cron {
                occurrence: utc("2025-06-02T12:00:00Z")
            },
            cause: WaitCause::Window,
        }
    );
    assert_eq!(d.reason_code(), "window");
    assert!(decide("p", &s, &k, utc("2025-06-03T01:00:00Z")).is_due());
    assert!(decide("p", &s, &k, utc("2025-06-03T04:59:00Z")).is_due());
}

#[test]
fn a_window_across_midnight_defers_and_opens_in_local_time() {
    // Saturday nights 22:00 to 02:00, Berlin time (CEST, UTC+2, in June).
    let saturday_night =
        Window::new(hm(22, 0), hm(2, 0), WeekdaySet::single(Weekday::Sat)).unwrap();
    let s = Setup::cron("0 12 * * *", Berlin)
        .window(saturday_night)
        .build();
    // Due Wednesday 2025-06-04 12:00 CEST; the window opens Saturday 22:00 CEST.
    let k = known(Some("2025-06-03T12:00:00Z"), "2025-06-03T12:00:00Z");
    let d = decide("p", &s, &k, utc("2025-06-04T10:30:00Z"));
    assert_eq!(d.next_check(), Some(utc("2025-06-07T20:00:00Z")));
    // Sunday 01:30 CEST is still Saturday's window.
    assert!(decide("p", &s, &k, utc("2025-06-07T23:30:00Z")).is_due());
    // Sunday 02:30 CEST is past it: the next chance is the following Saturday.
    let d = decide("p", &s, &k, utc("2025-06-08T00:30:00Z"));
    assert_eq!(d.next_check(), Some(utc("2025-06-14T20:00:00Z")));
    assert!(matches!(
        d,
        Decision::Wait {
            cause: WaitCause::Window,
            ..
        }
    ));
}

#[test]
fn a_daemon_across_fall_back_rotates_once_per_day() {
    // Berlin 2025-10-26: 02:30 happens at 00:30Z and again at 01:30Z.
    let s = Setup::cron("30 2 * * *", Berlin).build();
    assert_eq!(
        simulate(&s, "2025-10-25T12:00:00Z", "2025-10-27T12:00:00Z"),
        [utc("2025-10-26T00:30:00Z"), utc("2025-10-27T01:30:00Z")]
    );
    // New York 2025-11-02: 01:30 happens at 05:30Z and again at 06:30Z.
    let s = Setup::cron("30 1 * * *", New_York).build();
    assert_eq!(
        simulate(&s, "2025-11-01T12:00:00Z", "2025-11-03T12:00:00Z"),
        [utc("2025-11-02T05:30:00Z"), utc("2025-11-03T06:30:00Z")]
    );
    // Asked during the repeated hour, after the first pass ran: not due again.
    let k = known(Some("2025-10-26T00:30:05Z"), "2025-10-20T00:00:00Z");
    let d = decide(
        "p",
        &Setup::cron("30 2 * * *", Berlin).build(),
        &k,
        utc("2025-10-26T01:31:00Z"),
    );
    assert_eq!(d.next_check(), Some(utc("2025-10-27T01:30:00Z")));
}

#[test]
fn a_daemon_across_spring_forward_still_rotates_that_day() {
    // Berlin 2025-03-30: 02:30 does not exist; it runs at 03:00 CEST (01:00Z).
    let s = Setup::cron("30 2 * * *", Berlin).build();
    assert_eq!(
        simulate(&s, "2025-03-29T12:00:00Z", "2025-03-31T12:00:00Z"),
        [utc("2025-03-30T01:00:00Z"), utc("2025-03-31T00:30:00Z")]
    );
    // New York 2025-03-09: 02:30 does not exist; it runs at 03:00 EDT (07:00Z).
    let s = Setup::cron("30 2 * * *", New_York).build();
    assert_eq!(
        simulate(&s, "2025-03-08T12:00:00Z", "2025-03-10T12:00:00Z"),
        [utc("2025-03-09T07:00:00Z"), utc("2025-03-10T06:30:00Z")]
    );
}

#[test]
fn a_window_over_the_fall_back_hour_opens_once() {
    // Nightly 02:00-04:00 Berlin, cron every 30 minutes: across the fall-back night
    // each wall-clock slot runs once.
    let s = Setup::cron("*/30 * * * *", Berlin)
        .window(Window::new(hm(2, 0), hm(4, 0), WeekdaySet::ALL).unwrap())
        .build();
    let starts = simulate(&s, "2025-10-25T22:00:00Z", "2025-10-26T04:00:00Z");
    assert_eq!(
        starts,
        [
            utc("2025-10-26T00:00:00Z"), // 02:00 CEST
            utc("2025-10-26T00:30:00Z"), // 02:30 CEST
            utc("2025-10-26T02:00:00Z"), // 03:00 CET
            utc("2025-10-26T02:30:00Z"), // 03:30 CET
        ]
    );
}

#[test]
fn max_key_age_is_due_when_the_key_is_old_enough() {
    let s = Setup::max_key_age(TimeDelta::days(90)).build();
    let created = utc("2025-01-01T00:00:00Z");
    let k = Known {
        last_started: None,
        active_key_created: Some(created),
        baseline: utc("2025-03-01T00:00:00Z"),
    };
    let trigger = Trigger::KeyAge {
        created,
        max_age: TimeDelta::days(90),
    };
    let d = decide("p", &s, &k, created + TimeDelta::days(89));
    assert_eq!(
        d,
        Decision::Wait {
            until: created + TimeDelta::days(90),
            trigger,
            cause: WaitCause::NotYet
        }
    );
    let d = decide("p", &s, &k, created + TimeDelta::days(90));
    assert_eq!(d.reason_code(), "key-age");
    assert!(d.is_due());
    assert!(next_due_times("p", &s, created, 3).is_empty());
}

#[test]
fn unknown_key_age_is_due_with_its_reason() {
    let s = Setup::max_key_age(TimeDelta::days(90)).build();
    let k = known(None, "2025-03-01T00:00:00Z");
    let d = decide("p", &s, &k, utc("2025-03-01T00:00:00Z"));
    assert_eq!(
        d,
        Decision::Due {
            trigger: Trigger::KeyAgeUnknown,
            since: utc("2025-03-01T00:00:00Z")
        }
    );
    assert!(d.to_string().contains("key age unknown"), "{d}");
}

#[test]
fn the_earlier_of_cron_and_key_age_wins() {
    let mut setup = Setup::cron("0 3 1 * *", UTC);
    setup.max_key_age = Some(TimeDelta::days(30));
    let s = setup.build();
    let created = utc("2025-05-20T00:00:00Z");
    let k = Known {
        last_started: Some(created),
        active_key_created: Some(created),
        baseline: created,
    };
    // Cron next fires 2025-06-01, before the key turns 30 days old on 2025-06-19.
    let d = decide("p", &s, &k, utc("2025-05-25T00:00:00Z"));
    assert_eq!(d.next_check(), Some(utc("2025-06-01T03:00:00Z")));
    // After a rotation on the 1st whose key creation time was not refreshed, the key
    // age comes first.
    let k = Known {
        last_started: Some(utc("2025-06-01T03:00:00Z")),
        ..k
    };
    let d = decide("p", &s, &k, utc("2025-06-02T00:00:00Z"));
    assert_eq!(d.next_check(), Some(utc("2025-06-19T00:00:00Z")));
}

#[test]
fn jitter_delays_within_bounds_and_stays_put() {
    let jitter = TimeDelta::minutes(10);
    let s = Setup::cron("0 * * * *", UTC).jitter(jitter).build();
    let k = known(Some("2025-06-01T00:00:00Z"), "2025-06-01T00:00:00Z");
    let occurrence = utc("2025-06-01T01:00:00Z");
    let offset = jitter::offset("fleet-7", occurrence, jitter);
    let d = decide("fleet-7", &s, &k, occurrence);
    if offset > TimeDelta::zero() {
        assert_eq!(
            d,
            Decision::Wait {
                until: occurrence + offset,
                trigger: Trigger::Cron { occurrence },
                cause: WaitCause::Jitter
            }
        );
        // Asking again a minute later gives the same target.
        let later = decide("fleet-7", &s, &k, occurrence + TimeDelta::seconds(1));
        assert_eq!(later.next_check(), Some(occurrence + offset));
    }
    assert!(decide("fleet-7", &s, &k, occurrence + offset).is_due());
    // Across many plans and hours, the start lies in [occurrence, occurrence + jitter).
    for plan in 0..40 {
        let name = format!("plan-{plan}");
        for start in next_due_times(&name, &s, utc("2025-06-01T00:00:00Z"), 24) {
            let top_of_hour = start.format("%M:%S").to_string();
            let minutes: i64 = top_of_hour[..2].parse().unwrap();
            assert!(minutes < 10, "{name} starts at {start}");
        }
    }
}

#[test]
fn jitter_never_pushes_a_rotation_out_of_its_window() {
    // A five-minute window and a four-minute jitter; the occurrence at 01:03 leaves
    // two minutes of room, so the delay is cut to under two minutes.
    let s = Setup::cron("3 1 * * *", UTC)
        .window(Window::new(hm(1, 0), hm(1, 5), WeekdaySet::ALL).unwrap())
        .jitter(TimeDelta::minutes(4))
        .build();
    let window = *s.window().unwrap();
    for plan in 0..40 {
        let name = format!("plan-{plan}");
        let times = next_due_times(&name, &s, utc("2025-06-01T00:00:00Z"), 10);
        assert_eq!(times.len(), 10);
        for start in times {
            assert!(window.contains(UTC, start), "{name} at {start}");
        }
    }
}

#[test]
fn next_due_times_chain_occurrences_and_collapse_deferred_ones() {
    let s = Setup::cron("*/10 * * * *", UTC).build();
    assert_eq!(
        next_due_times("demo", &s, utc("2025-06-01T00:03:00Z"), 3),
        [
            utc("2025-06-01T00:10:00Z"),
            utc("2025-06-01T00:20:00Z"),
            utc("2025-06-01T00:30:00Z")
        ]
    );
    // Hourly cron, window 01:00-03:00: the hours outside the window fold into the
    // next opening instead of each producing a rotation.
    let s = Setup::cron("0 * * * *", UTC)
        .window(Window::new(hm(1, 0), hm(3, 0), WeekdaySet::ALL).unwrap())
        .build();
    assert_eq!(
        next_due_times("p", &s, utc("2025-06-01T00:30:00Z"), 3),
        [
            utc("2025-06-01T01:00:00Z"),
            utc("2025-06-01T02:00:00Z"),
            utc("2025-06-02T01:00:00Z")
        ]
    );
}

#[test]
fn decisions_read_well() {
    let s = Setup::cron("0 3 * * *", UTC).build();
    let k = known(None, "2025-06-01T00:00:00Z");
    let d = decide("p", &s, &k, utc("2025-06-01T00:00:00Z"));
    assert_eq!(
        d.to_string(),
        "waiting until 2025-06-01T03:00:00Z: next cron occurrence 2025-06-01T03:00:00Z"
    );
    assert_eq!(d.reason_code(), "not-yet");
}

#[test]
fn a_schedule_past_the_end_of_the_calendar_is_never_due() {
    let s = Setup::cron("0 0 1 1 *", UTC).build();
    let k = known(Some("5000-06-01T00:00:00Z"), "5000-06-01T00:00:00Z");
    let d = decide("p", &s, &k, utc("5000-06-02T00:00:00Z"));
    assert_eq!(d, Decision::Never);
    assert_eq!((d.next_check(), d.reason_code()), (None, "never"));
    // A key creation time at the end of chrono's range does not overflow.
    let s = Setup::max_key_age(TimeDelta::days(90)).build();
    let k = Known {
        last_started: None,
        active_key_created: Some(DateTime::<Utc>::MAX_UTC - TimeDelta::days(1)),
        baseline: utc("2025-01-01T00:00:00Z"),
    };
    assert_eq!(
        decide("p", &s, &k, utc("2025-01-01T00:00:00Z")),
        Decision::Never
    );
}
