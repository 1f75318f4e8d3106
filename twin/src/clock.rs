//! The twin's clock: the system clock plus an offset that tests move forward through
//! `POST /_admin/clock`. Everything time-dependent in the twin (token expiry, key
//! propagation, long-running operations, throttling refill, Key Vault timestamps)
//! reads this clock, so tests can step over a delay instead of sleeping through it.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, TimeDelta, Utc};

#[derive(Debug, Default)]
pub(crate) struct Clock {
    offset_ms: AtomicI64,
}

impl Clock {
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + TimeDelta::milliseconds(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Moves the clock forward by `ms` milliseconds (never backward).
    pub fn advance_ms(&self, ms: i64) {
        self.offset_ms.fetch_add(ms.max(0), Ordering::Relaxed);
    }

    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }
}

/// Azure's date-time format: RFC 3339 in UTC with seven fractional digits.
pub(crate) fn azure_time(t: DateTime<Utc>) -> String {
    format!(
        "{}.{:07}Z",
        t.format("%Y-%m-%dT%H:%M:%S"),
        t.timestamp_subsec_nanos() / 100
    )
}

/// Seconds (fractions allowed, negative treated as zero) as a `TimeDelta`.
pub(crate) fn secs(s: f64) -> TimeDelta {
    let ms = (s.max(0.0) * 1000.0).round();
    TimeDelta::milliseconds(if ms.is_finite() { ms as i64 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_moves_now_forward() {
        let c = Clock::default();
        let before = c.now();
        c.advance_ms(3_600_000);
        assert!(c.now() - before >= TimeDelta::seconds(3600));
        c.advance_ms(-10_000_000);
        assert_eq!(c.offset_ms(), 3_600_000);
    }

    #[test]
    fn azure_time_has_seven_fraction_digits() {
        let t = DateTime::parse_from_rfc3339("2021-03-18T04:42:22.4322836Z")
            .expect("valid")
            .with_timezone(&Utc);
        assert_eq!(azure_time(t), "2021-03-18T04:42:22.4322836Z");
    }
}
