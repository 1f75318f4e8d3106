//! Time, injected. The daemon's scheduler and the executor's waits (grace periods,
//! retire backoff) read time and sleep only through a [`Clock`], so tests drive them
//! with a [`ManualClock`] instead of waiting. tokio's paused time is no substitute
//! here: it auto-advances while the runtime waits on real network IO, which would
//! fire HTTP timeouts at once in tests that talk to the twin over HTTPS.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::watch;

/// A source of the current time that can also sleep until a given instant.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
    /// Completes once `now() >= at`. Cancel it by dropping it.
    fn sleep_until(&self, at: DateTime<Utc>) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>>;
}

/// The wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep_until(&self, at: DateTime<Utc>) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        Box::pin(async move {
            // Sleep in slices of at most a minute, re-reading the wall clock, so a
            // suspended host or a clock step does not stretch a long wait.
            loop {
                let left = at - Utc::now();
                let Ok(left) = left.to_std() else { return };
                if left.is_zero() {
                    return;
                }
                tokio::time::sleep(left.min(std::time::Duration::from_secs(60))).await;
            }
        })
    }
}

/// A clock that only moves when a test moves it. Sleepers wake as soon as
/// [`ManualClock::advance`] or [`ManualClock::set`] reaches their instant.
#[derive(Clone, Debug)]
pub struct ManualClock {
    inner: Arc<Mutex<watch::Sender<DateTime<Utc>>>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            inner: Arc::new(Mutex::new(watch::Sender::new(start))),
        }
    }

    pub fn advance(&self, by: chrono::Duration) {
        let sender = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        sender.send_modify(|t| *t += by);
    }

    pub fn set(&self, to: DateTime<Utc>) {
        let sender = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        sender.send_modify(|t| *t = to.max(*t));
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .borrow()
    }

    fn sleep_until(&self, at: DateTime<Utc>) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        let mut rx = self
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .subscribe();
        Box::pin(async move {
            // `wait_for` checks the current value first, so an instant already
            // reached returns at once; a dropped clock ends every sleep.
            let _ = rx.wait_for(|now| *now >= at).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    #[tokio::test]
    async fn manual_sleepers_wake_when_time_reaches_them() {
        let start = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
        let clock = ManualClock::new(start);
        let early = tokio::spawn(clock.sleep_until(start + chrono::Duration::seconds(10)));
        let late = tokio::spawn(clock.sleep_until(start + chrono::Duration::hours(1)));
        tokio::task::yield_now().await;
        assert!(!early.is_finished());
        clock.advance(chrono::Duration::seconds(10));
        early.await.unwrap();
        assert!(!late.is_finished());
        clock.set(start); // never goes backwards
        assert_eq!(clock.now(), start + chrono::Duration::seconds(10));
        clock.advance(chrono::Duration::hours(2));
        late.await.unwrap();
        // An instant in the past completes at once.
        clock.sleep_until(start).await;
    }

    #[tokio::test]
    async fn system_clock_returns_at_once_for_the_past() {
        SystemClock
            .sleep_until(Utc::now() - chrono::Duration::seconds(5))
            .await;
    }
}
