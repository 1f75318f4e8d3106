//! Throttling like Azure's: token buckets per subscription (ARM reads and writes) and
//! per vault (Key Vault secret creates and other transactions). A request takes one
//! token; an empty bucket answers 429 with `Retry-After` (whole seconds until the
//! next token). Buckets refill continuously on the twin clock, and reset to full when
//! the settings change.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::world::Settings;

/// Which budget a request draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Budget {
    ArmRead,
    ArmWrite,
    VaultWrite,
    VaultRead,
}

impl Budget {
    fn limits(self, s: &Settings) -> (f64, f64) {
        match self {
            Budget::ArmRead => (s.arm_read_burst as f64, s.arm_read_refill_per_sec),
            Budget::ArmWrite => (s.arm_write_burst as f64, s.arm_write_refill_per_sec),
            Budget::VaultWrite => (
                s.keyvault_write_burst as f64,
                s.keyvault_write_refill_per_sec,
            ),
            Budget::VaultRead => (s.keyvault_read_burst as f64, s.keyvault_read_refill_per_sec),
        }
    }
}

#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    at: DateTime<Utc>,
}

/// Every bucket, keyed by budget and owner (subscription id or vault name, lower case).
#[derive(Debug, Default)]
pub(crate) struct Throttles {
    buckets: HashMap<(Budget, String), Bucket>,
}

/// The answer for an empty bucket: retry after this many seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Throttled {
    pub retry_after: u64,
}

impl Throttles {
    fn refill(
        &mut self,
        budget: Budget,
        owner: &str,
        s: &Settings,
        now: DateTime<Utc>,
    ) -> &mut Bucket {
        let (burst, rate) = budget.limits(s);
        let b = self
            .buckets
            .entry((budget, owner.to_ascii_lowercase()))
            .or_insert(Bucket {
                tokens: burst,
                at: now,
            });
        let elapsed = (now - b.at).num_milliseconds().max(0) as f64 / 1000.0;
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.at = now;
        b
    }

    /// Takes one token; returns what is left (rounded down) or how long to wait.
    pub fn take(
        &mut self,
        budget: Budget,
        owner: &str,
        s: &Settings,
        now: DateTime<Utc>,
    ) -> Result<u64, Throttled> {
        let (_, rate) = budget.limits(s);
        let b = self.refill(budget, owner, s, now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(b.tokens.floor() as u64)
        } else {
            let wait = if rate > 0.0 {
                ((1.0 - b.tokens) / rate).ceil()
            } else {
                3600.0
            };
            Err(Throttled {
                retry_after: (wait as u64).max(1),
            })
        }
    }

    /// What is left in a bucket without taking from it.
    pub fn remaining(
        &mut self,
        budget: Budget,
        owner: &str,
        s: &Settings,
        now: DateTime<Utc>,
    ) -> u64 {
        self.refill(budget, owner, s, now).tokens.floor().max(0.0) as u64
    }

    /// Forgets every bucket (they start full again under the new settings).
    pub fn reset(&mut self) {
        self.buckets.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn settings(burst: u32, rate: f64) -> Settings {
        Settings {
            arm_write_burst: burst,
            arm_write_refill_per_sec: rate,
            ..Settings::default()
        }
    }

    #[test]
    fn empty_bucket_refuses_until_refilled() {
        let s = settings(2, 0.5);
        let mut t = Throttles::default();
        let now = Utc::now();
        assert_eq!(t.take(Budget::ArmWrite, "sub", &s, now), Ok(1));
        assert_eq!(t.take(Budget::ArmWrite, "SUB", &s, now), Ok(0));
        assert_eq!(
            t.take(Budget::ArmWrite, "sub", &s, now),
            Err(Throttled { retry_after: 2 })
        );
        assert_eq!(
            t.take(Budget::ArmWrite, "other", &s, now),
            Ok(1),
            "buckets are per owner"
        );
        let later = now + TimeDelta::seconds(2);
        assert_eq!(t.take(Budget::ArmWrite, "sub", &s, later), Ok(0));
    }

    #[test]
    fn zero_rate_never_refills() {
        let s = settings(1, 0.0);
        let mut t = Throttles::default();
        let now = Utc::now();
        assert!(t.take(Budget::ArmWrite, "s", &s, now).is_ok());
        let err = t.take(Budget::ArmWrite, "s", &s, now + TimeDelta::days(1));
        assert_eq!(err, Err(Throttled { retry_after: 3600 }));
    }
}
