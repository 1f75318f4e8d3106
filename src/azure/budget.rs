//! Shared call budgets, so that many plans rotating at once never trip Azure's
//! throttling on their own: ARM writes per subscription (the Storage resource
//! provider's 10 per second and 1,200 per hour) and Key Vault calls per vault (300
//! secret creates and 4,000 other calls per 10 seconds).
//!
//! Each budget is a set of sliding windows ("at most N calls in any window of length
//! W"), which is stricter than a token bucket of the same rate: a bucket that starts
//! full allows twice its size within one window, a sliding window never does. A call
//! reserves the earliest instant every window of its scope allows, then waits until
//! then. Reservations are handed out in order, so concurrent callers are spaced
//! evenly rather than woken together. Waiting goes through the injected [`Clock`], so
//! the daemon's tests drive budgets with a manual clock.
//!
//! Promises: a scope never sees more calls than its budget in any window (every
//! attempt counts, retries included, as Azure counts them); a cancelled wait keeps its
//! reservation (conservative: the slot is lost, never reused twice); the time spent
//! waiting is counted per class for the daemon's throttling metric.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeDelta, Utc};

use crate::clock::Clock;
use crate::config::BudgetConfig;

/// What a call counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// An ARM request other than GET (POST actions such as `listKeys` count as writes).
    ArmWrite,
    /// A Key Vault secret create (`setSecret`).
    KeyVaultWrite,
    /// Every other Key Vault call.
    KeyVaultRead,
}

impl Class {
    pub const ALL: [Class; 3] = [Class::ArmWrite, Class::KeyVaultWrite, Class::KeyVaultRead];

    /// A stable label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::ArmWrite => "arm_write",
            Class::KeyVaultWrite => "keyvault_write",
            Class::KeyVaultRead => "keyvault_read",
        }
    }

    fn index(self) -> usize {
        match self {
            Class::ArmWrite => 0,
            Class::KeyVaultWrite => 1,
            Class::KeyVaultRead => 2,
        }
    }
}

/// Time spent waiting for one class's budgets since start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waits {
    pub class: Class,
    /// Calls that had to wait.
    pub count: u64,
    pub total: std::time::Duration,
}

/// "At most `limit` calls in any window of `length`", with the reserved instants.
#[derive(Debug)]
struct Window {
    limit: usize,
    length: TimeDelta,
    /// Reserved instants, oldest first (reservations never go back in time).
    times: VecDeque<DateTime<Utc>>,
}

impl Window {
    fn new(limit: u32, length: TimeDelta) -> Window {
        Window {
            limit: limit.max(1) as usize,
            length,
            times: VecDeque::new(),
        }
    }

    /// The earliest instant at or after `now` this window allows one more call.
    fn earliest(&mut self, now: DateTime<Utc>) -> DateTime<Utc> {
        while self.times.front().is_some_and(|&t| t + self.length <= now) {
            self.times.pop_front();
        }
        if self.times.len() < self.limit {
            return now;
        }
        // The call may go once the `limit`-th most recent reservation leaves the window.
        let blocking = self.times[self.times.len() - self.limit];
        (blocking + self.length).max(now)
    }
}

/// The budgets of every scope (subscription or vault) the daemon talks to.
pub struct Budgets {
    clock: Arc<dyn Clock>,
    config: BudgetConfig,
    scopes: Mutex<HashMap<(Class, String), Vec<Window>>>,
    waited_count: [AtomicU64; 3],
    waited_micros: [AtomicU64; 3],
}

impl fmt::Debug for Budgets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Budgets")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Budgets {
    pub fn new(config: BudgetConfig, clock: Arc<dyn Clock>) -> Budgets {
        Budgets {
            clock,
            config,
            scopes: Mutex::new(HashMap::new()),
            waited_count: Default::default(),
            waited_micros: Default::default(),
        }
    }

    pub fn config(&self) -> &BudgetConfig {
        &self.config
    }

    fn windows(&self, class: Class) -> Vec<Window> {
        let c = &self.config;
        match class {
            Class::ArmWrite => vec![
                Window::new(c.arm_writes_per_second, TimeDelta::seconds(1)),
                Window::new(c.arm_writes_per_hour, TimeDelta::hours(1)),
            ],
            Class::KeyVaultWrite => vec![Window::new(
                c.keyvault_writes_per_10s,
                TimeDelta::seconds(10),
            )],
            Class::KeyVaultRead => vec![Window::new(
                c.keyvault_reads_per_10s,
                TimeDelta::seconds(10),
            )],
        }
    }

    /// Reserves the earliest instant `scope`'s budget allows one more call of `class`,
    /// and waits until then. `scope` is compared case-insensitively.
    pub async fn acquire(&self, class: Class, scope: &str) {
        let now = self.clock.now();
        let at = {
            let mut scopes = self.scopes.lock().unwrap_or_else(|e| e.into_inner());
            let windows = scopes
                .entry((class, scope.to_ascii_lowercase()))
                .or_insert_with(|| self.windows(class));
            let at = windows
                .iter_mut()
                .map(|w| w.earliest(now))
                .max()
                .unwrap_or(now);
            for w in windows.iter_mut() {
                w.times.push_back(at);
            }
            at
        };
        if at <= now {
            return;
        }
        let wait = (at - now).to_std().unwrap_or_default();
        let i = class.index();
        self.waited_count[i].fetch_add(1, Ordering::Relaxed);
        self.waited_micros[i].fetch_add(wait.as_micros() as u64, Ordering::Relaxed);
        tracing::debug!(
            budget = class.as_str(),
            scope,
            wait_ms = wait.as_millis() as u64,
            "waiting for the shared call budget"
        );
        self.clock.sleep_until(at).await;
    }

    /// Waits so far, per class.
    pub fn waits(&self) -> Vec<Waits> {
        Class::ALL
            .iter()
            .map(|&class| {
                let i = class.index();
                Waits {
                    class,
                    count: self.waited_count[i].load(Ordering::Relaxed),
                    total: std::time::Duration::from_micros(
                        self.waited_micros[i].load(Ordering::Relaxed),
                    ),
                }
            })
            .collect()
    }
}

/// The subscription an ARM URL path belongs to, if any: `/subscriptions/{id}/...`.
pub(crate) fn subscription_of(path: &str) -> Option<&str> {
    let mut parts = path.split('/').filter(|p| !p.is_empty());
    match (parts.next(), parts.next()) {
        (Some(first), Some(id)) if first.eq_ignore_ascii_case("subscriptions") => Some(id),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;
    use crate::clock::ManualClock;

    fn start() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()
    }

    fn budgets(clock: &ManualClock, per_second: u32, per_hour: u32) -> Arc<Budgets> {
        let config = BudgetConfig {
            arm_writes_per_second: per_second,
            arm_writes_per_hour: per_hour,
            keyvault_writes_per_10s: 1,
            keyvault_reads_per_10s: 2,
        };
        Arc::new(Budgets::new(config, Arc::new(clock.clone())))
    }

    /// Starts `n` acquisitions at once and returns their join handles.
    fn spawn(
        b: &Arc<Budgets>,
        class: Class,
        scope: &'static str,
        n: usize,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        (0..n)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move { b.acquire(class, scope).await })
            })
            .collect()
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    fn done(handles: &[tokio::task::JoinHandle<()>]) -> usize {
        handles.iter().filter(|h| h.is_finished()).count()
    }

    #[tokio::test]
    async fn calls_beyond_the_per_second_budget_wait_for_the_window() {
        let clock = ManualClock::new(start());
        let b = budgets(&clock, 2, 1_200);
        let handles = spawn(&b, Class::ArmWrite, "sub-a", 5);
        settle().await;
        assert_eq!(done(&handles), 2, "two go at once, the rest wait");
        clock.advance(TimeDelta::milliseconds(999));
        settle().await;
        assert_eq!(done(&handles), 2);
        clock.advance(TimeDelta::milliseconds(1));
        settle().await;
        assert_eq!(done(&handles), 4);
        clock.advance(TimeDelta::seconds(1));
        settle().await;
        assert_eq!(done(&handles), 5);
        let waits = b.waits();
        assert_eq!(waits[0].count, 3);
        assert_eq!(waits[0].total, std::time::Duration::from_secs(1 + 1 + 2));
    }

    #[tokio::test]
    async fn the_hourly_budget_holds_across_seconds_and_scopes_are_separate() {
        let clock = ManualClock::new(start());
        let b = budgets(&clock, 10, 3);
        let first = spawn(&b, Class::ArmWrite, "SUB-A", 4);
        let other = spawn(&b, Class::ArmWrite, "sub-b", 3);
        settle().await;
        assert_eq!(done(&first), 3);
        assert_eq!(done(&other), 3, "another subscription has its own budget");
        clock.advance(TimeDelta::minutes(59));
        settle().await;
        assert_eq!(done(&first), 3);
        clock.advance(TimeDelta::minutes(1));
        settle().await;
        assert_eq!(done(&first), 4);
        // The scope is case-insensitive: `sub-a` shares SUB-A's window.
        let late = spawn(&b, Class::ArmWrite, "sub-a", 1);
        settle().await;
        assert_eq!(
            done(&late),
            1,
            "one slot left in the hour after the first three expired"
        );
    }

    #[tokio::test]
    async fn key_vault_classes_have_their_own_windows() {
        let clock = ManualClock::new(start());
        let b = budgets(&clock, 10, 1_200);
        let writes = spawn(&b, Class::KeyVaultWrite, "https://v/kv", 2);
        let reads = spawn(&b, Class::KeyVaultRead, "https://v/kv", 2);
        settle().await;
        assert_eq!((done(&writes), done(&reads)), (1, 2));
        clock.advance(TimeDelta::seconds(10));
        settle().await;
        assert_eq!(done(&writes), 2);
    }

    #[test]
    fn subscriptions_are_read_from_arm_paths() {
        assert_eq!(
            subscription_of("/subscriptions/abc/resourceGroups/rg/providers/x"),
            Some("abc")
        );
        assert_eq!(subscription_of("/Subscriptions/abc"), Some("abc"));
        assert_eq!(
            subscription_of("/providers/Microsoft.Storage/operations"),
            None
        );
        assert_eq!(subscription_of("/subscriptions"), None);
    }
}
