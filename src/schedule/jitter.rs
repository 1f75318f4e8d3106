//! Jitter: a per-plan delay that spreads a fleet's rotations.
//!
//! Many plans share a cron expression (`0 3 * * SUN`) and a subscription's write
//! budget. Each plan waits a different offset in `[0, jitter)` after each due instant,
//! so a hundred plans start over the jitter span instead of in the same second. The
//! offset is a hash of the plan name and the due instant, not a random draw: the
//! schedule stays a pure function (same inputs, same answer, on every machine and
//! after every restart), and a daemon that restarts mid-wait resumes the same wait.

use chrono::{DateTime, TimeDelta, Utc};

/// The delay for `plan` after the due instant `at`: whole seconds in `[0, limit)`,
/// zero when `limit` is under a second.
pub fn offset(plan: &str, at: DateTime<Utc>, limit: TimeDelta) -> TimeDelta {
    let span = limit.num_seconds();
    if span <= 0 {
        return TimeDelta::zero();
    }
    let hash = mix(fnv1a(plan, at.timestamp()));
    // `span` is positive, so the remainder fits back into an i64 below `span`.
    TimeDelta::seconds((hash % span.unsigned_abs()) as i64)
}

/// FNV-1a over the plan name, a separator and the instant: stable across Rust
/// versions and platforms, unlike `std`'s `DefaultHasher`.
fn fnv1a(plan: &str, seconds: i64) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let instant = seconds.to_be_bytes();
    let bytes = plan.as_bytes().iter().chain(&[0xff]).chain(&instant);
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// SplitMix64's finalizer: FNV's low bits vary little between nearby instants, and the
/// offset is taken modulo a small span.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn stays_within_bounds() {
        let limit = TimeDelta::minutes(10);
        let start = utc("2025-01-01T00:00:00Z");
        for i in 0..2_000 {
            let at = start + TimeDelta::minutes(10 * i);
            let o = offset(&format!("plan-{}", i % 37), at, limit);
            assert!(o >= TimeDelta::zero() && o < limit, "{o} at {at}");
        }
    }

    #[test]
    fn is_stable_for_the_same_inputs_and_differs_between_plans() {
        let at = utc("2025-06-01T03:00:00Z");
        let limit = TimeDelta::hours(1);
        assert_eq!(offset("datasci", at, limit), offset("datasci", at, limit));
        // A fleet spreads: 50 plans due at the same instant get many distinct offsets.
        let mut offsets: Vec<i64> = (0..50)
            .map(|i| offset(&format!("plan-{i}"), at, limit).num_seconds())
            .collect();
        offsets.sort_unstable();
        offsets.dedup();
        assert!(
            offsets.len() >= 45,
            "only {} distinct offsets",
            offsets.len()
        );
        // And one plan's offset changes from one occurrence to the next.
        let next_week = at + TimeDelta::weeks(1);
        let a = offset("datasci", at, limit);
        let b = offset("datasci", next_week, limit);
        let c = offset("datasci", next_week + TimeDelta::weeks(1), limit);
        assert!(a != b || b != c, "{a} {b} {c}");
    }

    #[test]
    fn zero_or_sub_second_limits_mean_no_delay() {
        let at = utc("2025-06-01T03:00:00Z");
        assert_eq!(offset("p", at, TimeDelta::zero()), TimeDelta::zero());
        assert_eq!(
            offset("p", at, TimeDelta::milliseconds(900)),
            TimeDelta::zero()
        );
        assert_eq!(offset("p", at, TimeDelta::seconds(-5)), TimeDelta::zero());
    }
}
