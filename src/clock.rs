//! Time, injected. The daemon's scheduler and the executor's waits (grace periods,
//! retire backoff) read time and sleep only through a [`Clock`], so tests drive them
//! with a [`ManualClock`] instead of waiting. tokio's paused time is no substitute
//! here: it auto-advances while the runtime waits on real network IO, which would
//! fire HTTP timeouts at once in tests that talk to the twin over HTTPS.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
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
///
/// It also knows who sleeps on it until when, so a test need not guess how much wall
/// time the code under test needs before the clock should move: it waits until a task
/// is asleep ([`ManualClock::asleep_until`]) and jumps to that wake-up
/// ([`ManualClock::advance_to_next`]), like a discrete-event simulation.
#[derive(Clone, Debug)]
pub struct ManualClock {
    inner: Arc<Mutex<watch::Sender<DateTime<Utc>>>>,
    /// The instant every pending [`Clock::sleep_until`] waits for, with an id each.
    sleepers: Arc<Sleepers>,
    ids: Arc<AtomicU64>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            inner: Arc::new(Mutex::new(watch::Sender::new(start))),
            sleepers: Arc::new(watch::Sender::new(BTreeSet::new())),
            ids: Arc::new(AtomicU64::new(0)),
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

    /// The earliest instant a task sleeps until, if any task is asleep on this clock.
    pub fn next_wake(&self) -> Option<DateTime<Utc>> {
        let now = self.now();
        next_after(&self.sleepers.borrow(), now)
    }

    /// Waits until a task is asleep on this clock until an instant after now and no
    /// later than `by`, and returns the earliest such instant. A task that sleeps is
    /// waiting for the clock and for nothing else the test could wait for.
    pub async fn asleep_until(&self, by: DateTime<Utc>) -> DateTime<Utc> {
        let mut rx = self.sleepers.subscribe();
        loop {
            let now = self.now();
            if let Some(at) = next_after(&rx.borrow_and_update(), now).filter(|at| *at <= by) {
                return at;
            }
            // `self` holds the sender, so this only ends with a change.
            let _ = rx.changed().await;
        }
    }

    /// Moves the clock to the next wake-up, but not past `now + max`; returns the new
    /// time. With nobody asleep it moves by `max`.
    pub fn advance_to_next(&self, max: chrono::Duration) -> DateTime<Utc> {
        let limit = self.now() + max;
        let to = self.next_wake().map_or(limit, |at| at.min(limit));
        self.set(to);
        self.now()
    }
}

/// Pending sleeps: the instant each waits for, and an id.
type Sleepers = watch::Sender<BTreeSet<(DateTime<Utc>, u64)>>;

fn next_after(
    sleepers: &BTreeSet<(DateTime<Utc>, u64)>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    sleepers
        .range((now + chrono::Duration::nanoseconds(1), 0)..)
        .next()
        .map(|(at, _)| *at)
}

/// One pending sleep on a [`ManualClock`]; dropping it (the sleep ended or was
/// cancelled) takes it off the list.
struct Asleep {
    sleepers: Arc<Sleepers>,
    key: (DateTime<Utc>, u64),
}

impl Drop for Asleep {
    fn drop(&mut self) {
        self.sleepers.send_modify(|s| {
            s.remove(&self.key);
        });
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
        // Listed from the call, not the first poll: whoever asked is about to wait.
        let key = (at, self.ids.fetch_add(1, Ordering::Relaxed));
        self.sleepers.send_modify(|s| {
            s.insert(key);
        });
        let asleep = Asleep {
            sleepers: self.sleepers.clone(),
            key,
        };
        Box::pin(async move {
            let _asleep = asleep;
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
    async fn a_test_learns_who_sleeps_and_jumps_to_the_next_wake_up() {
        let start = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
        let clock = ManualClock::new(start);
        assert_eq!(clock.next_wake(), None);
        let soon = start + chrono::Duration::milliseconds(300);
        let later = start + chrono::Duration::seconds(5);
        let first = tokio::spawn(clock.sleep_until(later));
        let second = tokio::spawn(clock.sleep_until(soon));
        // An instant already reached is not a sleeper.
        clock.sleep_until(start).await;
        assert_eq!(clock.asleep_until(later).await, soon);
        assert_eq!(clock.advance_to_next(chrono::Duration::seconds(1)), soon);
        second.await.unwrap();
        assert_eq!(clock.next_wake(), Some(later));
        // `max` bounds the jump: the sleeper five seconds out is not due yet.
        assert_eq!(
            clock.advance_to_next(chrono::Duration::seconds(1)),
            soon + chrono::Duration::seconds(1)
        );
        assert!(!first.is_finished());
        // A sleep beyond `by` is not reported until `by` moves.
        let waiting = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            clock.asleep_until(soon + chrono::Duration::seconds(2)),
        )
        .await;
        assert!(waiting.is_err(), "nobody sleeps that briefly");
        assert_eq!(clock.advance_to_next(chrono::Duration::hours(1)), later);
        first.await.unwrap();
        assert_eq!(clock.next_wake(), None, "an ended sleep is off the list");
        // A cancelled sleep is off the list too.
        let dropped = clock.sleep_until(later + chrono::Duration::seconds(1));
        assert!(clock.next_wake().is_some());
        drop(dropped);
        assert_eq!(clock.next_wake(), None);
    }

    #[tokio::test]
    async fn system_clock_returns_at_once_for_the_past() {
        SystemClock
            .sleep_until(Utc::now() - chrono::Duration::seconds(5))
            .await;
    }
}
