//! Shared call budgets, so that many plans rotating at once never trip Azure's
//! throttling on their own, and an incident never queues behind routine work.
//!
//! **Limits.** Per subscription: ARM writes (every method but GET, so POST actions such
//! as `listKeys` count) at most `arm_writes_per_second` in any second (Azure Resource
//! Manager refills a subscription's write bucket at 10 per second; the Storage resource
//! provider allows 10 per second); writes to the Storage resource provider also at most
//! `arm_writes_per_hour` in any hour (its 1,200 per hour); ARM reads at most
//! `arm_reads_per_second` (ARM's read bucket refills at 25 per second), reads of the
//! Storage resource provider also at most `arm_reads_per_5min` (its 800 per 5
//! minutes). Per vault: 300 secret creates and 4,000 other calls in any 10 seconds.
//! Sources: "Understand how Azure Resource Manager throttles requests" and "Scalability
//! and performance targets for the Azure Storage resource provider" (Microsoft Learn),
//! Azure Key Vault service limits. Which provider a request goes to is the last
//! `/providers/{namespace}/` segment of its path.
//!
//! **Windows.** Each limit is a sliding window ("at most N calls in any window of
//! length W"), stricter than a token bucket of the same rate: a bucket that starts full
//! allows twice its size within one window, a sliding window never does. Every attempt
//! counts, retries included, as Azure counts them.
//!
//! **Lanes.** Each call runs in a [`Lane`], read from a task-local the daemon sets per
//! job ([`in_lane`]): `Incident` (`--leaked`, `--revoke-first`), `Scheduled`
//! (rotations, resumes, repairs, requests), `Background` (start-up and drift checks).
//! Calls that cannot go at once wait in one queue per scope, ordered by lane, then by
//! arrival; a per-scope task grants the head of the queue as soon as the windows allow,
//! so an incident that arrives behind a thousand queued scheduled calls goes next. A
//! call is granted at the instant it goes (never for a later instant), so nothing
//! reserved by routine work stands in an incident's way.
//!
//! **Reserve.** In windows longer than ten seconds (the hourly and five-minute ones),
//! routine lanes leave the last tenth of the limit to incidents, and background checks
//! use at most half of it: a fleet rotation never spends the writes a leaked key needs,
//! and drift checks never starve rotations.
//!
//! **Azure's own word.** ARM reports what is left of the subscription's bucket on every
//! answer (`x-ms-ratelimit-remaining-subscription-writes`/`-reads`); when that runs low
//! (other tools share the subscription) routine lanes pause until it has refilled, and
//! a 429 with `Retry-After` pauses every lane of that scope for as long as Azure asks.
//!
//! Promises: a scope never sees more calls than its windows allow; a waiter dropped
//! before its turn consumes nothing; waiting goes through the injected [`Clock`] (the
//! daemon's tests drive budgets with a manual clock), and the time spent waiting is
//! counted per class for the daemon's throttling metric.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::{Notify, oneshot};

use crate::clock::Clock;
use crate::config::BudgetConfig;

/// What a call counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// An ARM request other than GET (POST actions such as `listKeys` count as writes).
    ArmWrite,
    /// An ARM GET.
    ArmRead,
    /// A Key Vault secret create (`setSecret`).
    KeyVaultWrite,
    /// Every other Key Vault call.
    KeyVaultRead,
}

impl Class {
    pub const ALL: [Class; 4] = [
        Class::ArmWrite,
        Class::ArmRead,
        Class::KeyVaultWrite,
        Class::KeyVaultRead,
    ];

    /// A stable label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::ArmWrite => "arm_write",
            Class::ArmRead => "arm_read",
            Class::KeyVaultWrite => "keyvault_write",
            Class::KeyVaultRead => "keyvault_read",
        }
    }

    fn index(self) -> usize {
        match self {
            Class::ArmWrite => 0,
            Class::ArmRead => 1,
            Class::KeyVaultWrite => 2,
            Class::KeyVaultRead => 3,
        }
    }

    fn is_arm(self) -> bool {
        matches!(self, Class::ArmWrite | Class::ArmRead)
    }
}

/// Whose work a call is, in priority order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Lane {
    /// Incident response: `--leaked`, `--revoke-first`. Goes first and may spend the
    /// reserve.
    Incident,
    /// Rotations, resumes, repairs and operator requests.
    Scheduled,
    /// Start-up and drift checks.
    Background,
}

impl Lane {
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Incident => "incident",
            Lane::Scheduled => "scheduled",
            Lane::Background => "background",
        }
    }
}

tokio::task_local! {
    static LANE: Lane;
    static DEFERRABLE: ();
}

/// Runs `work` with its budgeted calls deferrable: each goes at once if nobody waits
/// in its scope and it fits in a quarter of every window it counts against, or not at
/// all ([`Budgets::acquire_now`] refuses it with [`Deferred`]). The unlisted-consumer
/// check of the daemon's own rotations runs so: it never makes the rotation wait for
/// the budget, and leaves three quarters of every window to the calls that cannot be
/// put off (what it put off, the rotation's report names).
pub async fn deferrable<F: Future>(work: F) -> F::Output {
    DEFERRABLE.scope((), work).await
}

/// Whether the task this runs in makes deferrable calls (see [`deferrable`]).
pub fn is_deferrable() -> bool {
    DEFERRABLE.try_with(|()| ()).is_ok()
}

/// A deferrable call that could not go at once; it was not sent and consumed nothing.
#[derive(Clone, Copy, Debug, thiserror::Error)]
#[error("{DEFERRED}")]
pub struct Deferred;

/// What a deferred call's error says.
pub const DEFERRED: &str = "deferred: the shared call budget is left to rotations and incidents; the next check tries again";

/// Runs `work` with every budgeted call in it counted in `lane`. Calls outside any
/// lane count as `Scheduled`.
pub(crate) async fn in_lane<F: Future>(lane: Lane, work: F) -> F::Output {
    LANE.scope(lane, work).await
}

/// The lane of the task this runs in.
pub(crate) fn current_lane() -> Lane {
    LANE.try_with(|l| *l).unwrap_or(Lane::Scheduled)
}

/// Time spent waiting for one class's budgets since start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waits {
    pub class: Class,
    /// Calls that had to wait.
    pub count: u64,
    pub total: std::time::Duration,
}

/// Windows longer than this keep a reserve for incidents.
const RESERVED_WINDOW: TimeDelta = TimeDelta::seconds(10);

/// "At most `limit` calls in any window of `length`", with the granted instants.
#[derive(Debug)]
struct Window {
    limit: usize,
    length: TimeDelta,
    /// Granted instants, oldest first.
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

    /// What `lane` may use of this window: all of it for incidents; in long windows
    /// nine tenths for routine work and half for background checks.
    fn limit_for(&self, lane: Lane) -> usize {
        if self.length <= RESERVED_WINDOW {
            return self.limit;
        }
        let reserve = self.limit.div_ceil(10);
        match lane {
            Lane::Incident => self.limit,
            Lane::Scheduled => self.limit.saturating_sub(reserve).max(1),
            Lane::Background => (self.limit / 2).max(1),
        }
    }

    /// The earliest instant at or after `now` this window lets one more call of `lane` go.
    fn earliest(&mut self, now: DateTime<Utc>, lane: Lane) -> DateTime<Utc> {
        while self.times.front().is_some_and(|&t| t + self.length <= now) {
            self.times.pop_front();
        }
        let limit = self.limit_for(lane);
        if self.times.len() < limit {
            return now;
        }
        // The call may go once the `limit`-th most recent call leaves the window.
        let blocking = self.times[self.times.len() - limit];
        (blocking + self.length).max(now)
    }
}

/// Which windows of a scope a call needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Need {
    class: Class,
    /// The call goes to the Storage resource provider (its own, longer windows apply).
    storage: bool,
}

impl Need {
    /// Indices into [`Scope::windows`] (see [`Budgets::new_scope`]).
    fn windows(self) -> &'static [usize] {
        match (self.class, self.storage) {
            (Class::ArmWrite, false) => &[0],
            (Class::ArmWrite, true) => &[0, 1],
            (Class::ArmRead, false) => &[2],
            (Class::ArmRead, true) => &[2, 3],
            (Class::KeyVaultWrite, _) => &[0],
            (Class::KeyVaultRead, _) => &[1],
        }
    }
}

struct Waiter {
    need: Need,
    lane: Lane,
    grant: oneshot::Sender<()>,
}

/// One subscription's or vault's windows and the calls waiting for them.
struct Scope {
    windows: Vec<Window>,
    /// Waiting calls by (lane, arrival).
    queue: BTreeMap<(Lane, u64), Waiter>,
    /// Until when routine lanes hold off, per class (Azure said its bucket runs low).
    routine_hold: [Option<DateTime<Utc>>; 4],
    /// Until when every lane holds off, per class (Azure answered 429).
    hold: [Option<DateTime<Utc>>; 4],
    /// A task is granting this scope's queue.
    driving: bool,
    wake: Arc<Notify>,
}

impl Scope {
    /// The earliest instant `need` may go for `lane`.
    fn earliest(&mut self, need: Need, lane: Lane, now: DateTime<Utc>) -> DateTime<Utc> {
        let i = need.class.index();
        let mut at = now;
        if let Some(h) = self.hold[i] {
            at = at.max(h);
        }
        if lane != Lane::Incident
            && let Some(h) = self.routine_hold[i]
        {
            at = at.max(h);
        }
        for &w in need.windows() {
            at = at.max(self.windows[w].earliest(now, lane));
        }
        at
    }

    fn record(&mut self, need: Need, now: DateTime<Utc>) {
        for &w in need.windows() {
            self.windows[w].times.push_back(now);
        }
    }

    /// Grants every waiter that may go now, in queue order; when the next may go.
    fn grant_due(
        &mut self,
        now: DateTime<Utc>,
    ) -> (Vec<oneshot::Sender<()>>, Option<DateTime<Utc>>) {
        let mut granted = Vec::new();
        let mut next: Option<DateTime<Utc>> = None;
        let keys: Vec<(Lane, u64)> = self.queue.keys().copied().collect();
        for key in keys {
            let Some(w) = self.queue.get(&key) else {
                continue;
            };
            if w.grant.is_closed() {
                // Its caller gave up (cancelled); it consumes nothing.
                self.queue.remove(&key);
                continue;
            }
            let (need, lane) = (w.need, w.lane);
            let at = self.earliest(need, lane, now);
            if at <= now {
                self.record(need, now);
                if let Some(w) = self.queue.remove(&key) {
                    granted.push(w.grant);
                }
            } else {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        (granted, next)
    }
}

struct Inner {
    clock: Arc<dyn Clock>,
    config: BudgetConfig,
    scopes: Mutex<HashMap<(bool, String), Scope>>,
    arrivals: AtomicU64,
    waited_count: [AtomicU64; 4],
    waited_micros: [AtomicU64; 4],
}

/// The budgets of every scope (subscription or vault) the daemon talks to.
pub struct Budgets {
    inner: Arc<Inner>,
}

impl fmt::Debug for Budgets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Budgets")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// ARM's subscription buckets hold 200 writes and 250 reads; when an answer says fewer
/// than this share is left, routine lanes let the bucket refill.
const LOW_REMAINING: u64 = 20;

impl Budgets {
    pub fn new(config: BudgetConfig, clock: Arc<dyn Clock>) -> Budgets {
        Budgets {
            inner: Arc::new(Inner {
                clock,
                config,
                scopes: Mutex::new(HashMap::new()),
                arrivals: AtomicU64::new(0),
                waited_count: Default::default(),
                waited_micros: Default::default(),
            }),
        }
    }

    pub fn config(&self) -> &BudgetConfig {
        &self.inner.config
    }

    fn new_scope(config: &BudgetConfig, arm: bool) -> Scope {
        let c = config;
        let windows = if arm {
            vec![
                Window::new(c.arm_writes_per_second, TimeDelta::seconds(1)),
                Window::new(c.arm_writes_per_hour, TimeDelta::hours(1)),
                Window::new(c.arm_reads_per_second, TimeDelta::seconds(1)),
                Window::new(c.arm_reads_per_5min, TimeDelta::minutes(5)),
            ]
        } else {
            vec![
                Window::new(c.keyvault_writes_per_10s, TimeDelta::seconds(10)),
                Window::new(c.keyvault_reads_per_10s, TimeDelta::seconds(10)),
            ]
        };
        Scope {
            windows,
            queue: BTreeMap::new(),
            routine_hold: [None; 4],
            hold: [None; 4],
            driving: false,
            wake: Arc::new(Notify::new()),
        }
    }

    /// One more call of `class` now, if nobody waits in `scope` and the call fits in a
    /// quarter of each of its windows (see [`deferrable`]); else [`Deferred`], having
    /// consumed nothing.
    pub fn acquire_now(&self, class: Class, storage: bool, scope: &str) -> Result<(), Deferred> {
        let lane = current_lane().max(Lane::Background);
        let need = Need { class, storage };
        let inner = &self.inner;
        let now = inner.clock.now();
        let key = (class.is_arm(), scope.to_ascii_lowercase());
        let mut scopes = inner.scopes.lock().unwrap_or_else(|e| e.into_inner());
        let s = scopes
            .entry(key)
            .or_insert_with(|| Self::new_scope(&inner.config, class.is_arm()));
        // `earliest` also drops the instants that left the windows.
        if !s.queue.is_empty() || s.earliest(need, lane, now) > now {
            return Err(Deferred);
        }
        let fits = need.windows().iter().all(|&w| {
            let window = &s.windows[w];
            window.times.len() < (window.limit / 4).max(1)
        });
        if !fits {
            return Err(Deferred);
        }
        s.record(need, now);
        Ok(())
    }

    /// Waits until `scope`'s budget lets one more call of `class` go, in the current
    /// task's lane. `storage`: the call goes to the Storage resource provider.
    /// `scope` (a subscription id or a vault URL) is compared case-insensitively.
    pub async fn acquire(&self, class: Class, storage: bool, scope: &str) {
        let lane = current_lane();
        let need = Need { class, storage };
        let inner = &self.inner;
        let started = inner.clock.now();
        let key = (class.is_arm(), scope.to_ascii_lowercase());
        let granted = {
            let mut scopes = inner.scopes.lock().unwrap_or_else(|e| e.into_inner());
            let s = scopes
                .entry(key.clone())
                .or_insert_with(|| Self::new_scope(&inner.config, class.is_arm()));
            // Nobody waits ahead of this call: it goes now if the windows allow.
            let ahead = s.queue.keys().next().is_some_and(|(l, _)| *l <= lane);
            if !ahead && s.earliest(need, lane, started) <= started {
                s.record(need, started);
                None
            } else {
                let (tx, rx) = oneshot::channel();
                let n = inner.arrivals.fetch_add(1, Ordering::Relaxed);
                s.queue.insert(
                    (lane, n),
                    Waiter {
                        need,
                        lane,
                        grant: tx,
                    },
                );
                if s.driving {
                    s.wake.notify_one();
                } else {
                    s.driving = true;
                    tokio::spawn(drive(inner.clone(), key.clone(), s.wake.clone()));
                }
                Some(rx)
            }
        };
        let Some(rx) = granted else {
            return;
        };
        tracing::debug!(
            budget = class.as_str(),
            lane = lane.as_str(),
            scope,
            "waiting for the shared call budget"
        );

        // The granting task only ends once the queue is empty, so the grant comes.
        let _ = rx.await;
        let waited = (inner.clock.now() - started).to_std().unwrap_or_default();
        let i = class.index();
        inner.waited_count[i].fetch_add(1, Ordering::Relaxed);
        inner.waited_micros[i].fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
    }

    /// What an ARM answer says about the subscription's bucket: `remaining` calls of
    /// `class` left (`x-ms-ratelimit-remaining-subscription-writes`/`-reads`). When few
    /// are left, routine lanes wait for it to refill at the configured rate.
    pub(crate) fn remaining(&self, class: Class, scope: &str, remaining: u64) {
        if remaining >= LOW_REMAINING || !class.is_arm() {
            return;
        }
        let c = &self.inner.config;
        let rate = match class {
            Class::ArmWrite => c.arm_writes_per_second,
            _ => c.arm_reads_per_second,
        }
        .max(1);
        let wait =
            TimeDelta::milliseconds(((LOW_REMAINING - remaining) * 1000 / u64::from(rate)) as i64);
        self.hold(class, scope, wait, false);
    }

    /// Azure answered 429 asking to wait `retry_after`: every lane of this scope and
    /// class holds off that long.
    pub fn throttled(&self, class: Class, scope: &str, retry_after: std::time::Duration) {
        let wait = TimeDelta::from_std(retry_after).unwrap_or(TimeDelta::seconds(60));
        self.hold(class, scope, wait, true);
    }

    fn hold(&self, class: Class, scope: &str, wait: TimeDelta, everyone: bool) {
        let inner = &self.inner;
        let until = inner.clock.now() + wait;
        let mut scopes = inner.scopes.lock().unwrap_or_else(|e| e.into_inner());
        let s = scopes
            .entry((class.is_arm(), scope.to_ascii_lowercase()))
            .or_insert_with(|| Self::new_scope(&inner.config, class.is_arm()));
        let slot = if everyone {
            &mut s.hold[class.index()]
        } else {
            &mut s.routine_hold[class.index()]
        };
        *slot = Some(slot.map_or(until, |h| h.max(until)));
        tracing::debug!(
            budget = class.as_str(),
            scope,
            wait_ms = wait.num_milliseconds(),
            everyone,
            "Azure's bucket runs low; holding off"
        );
    }

    /// Calls waiting for their budget now, in every scope: each is asleep until the
    /// clock reaches its window (tests use it to know when to move a manual clock).
    pub fn queued(&self) -> usize {
        let scopes = self.inner.scopes.lock().unwrap_or_else(|e| e.into_inner());
        scopes
            .values()
            .map(|s| s.queue.values().filter(|w| !w.grant.is_closed()).count())
            .sum()
    }

    /// Waits so far, per class.
    pub fn waits(&self) -> Vec<Waits> {
        let inner = &self.inner;
        Class::ALL
            .iter()
            .map(|&class| {
                let i = class.index();
                Waits {
                    class,
                    count: inner.waited_count[i].load(Ordering::Relaxed),
                    total: std::time::Duration::from_micros(
                        inner.waited_micros[i].load(Ordering::Relaxed),
                    ),
                }
            })
            .collect()
    }
}

/// Grants one scope's queue in order as its windows allow; ends when the queue is empty.
async fn drive(inner: Arc<Inner>, key: (bool, String), wake: Arc<Notify>) {
    loop {
        let now = inner.clock.now();
        let (granted, next) = {
            let mut scopes = inner.scopes.lock().unwrap_or_else(|e| e.into_inner());
            let Some(s) = scopes.get_mut(&key) else {
                return;
            };
            let (granted, next) = s.grant_due(now);
            if s.queue.is_empty() {
                s.driving = false;
                drop(scopes);
                for g in granted {
                    let _ = g.send(());
                }
                return;
            }
            (granted, next)
        };
        for g in granted {
            let _ = g.send(());
        }
        let sleep = next.map(|at| inner.clock.sleep_until(at));
        tokio::select! {
            _ = wake.notified() => {}
            _ = async { match sleep { Some(s) => s.await, None => std::future::pending().await } } => {}
        }
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

/// Whether an ARM path is served by the Storage resource provider: its last
/// `/providers/{namespace}/` is `Microsoft.Storage` (a permissions check *on* a storage
/// account is served by `Microsoft.Authorization`).
pub(crate) fn is_storage_provider(path: &str) -> bool {
    let mut last = None;
    let mut parts = path.split('/').filter(|p| !p.is_empty()).peekable();
    while let Some(p) = parts.next() {
        if p.eq_ignore_ascii_case("providers")
            && let Some(ns) = parts.peek()
        {
            last = Some(*ns);
        }
    }
    last.is_some_and(|ns| ns.eq_ignore_ascii_case("Microsoft.Storage"))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;
    use crate::clock::ManualClock;

    fn start() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()
    }

    fn config(per_second: u32, per_hour: u32) -> BudgetConfig {
        BudgetConfig {
            arm_writes_per_second: per_second,
            arm_writes_per_hour: per_hour,
            arm_reads_per_second: 25,
            arm_reads_per_5min: 800,
            keyvault_writes_per_10s: 1,
            keyvault_reads_per_10s: 2,
        }
    }

    fn budgets(clock: &ManualClock, per_second: u32, per_hour: u32) -> Arc<Budgets> {
        Arc::new(Budgets::new(
            config(per_second, per_hour),
            Arc::new(clock.clone()),
        ))
    }

    /// Starts `n` acquisitions in `lane` at once and returns their join handles.
    fn spawn_in(
        b: &Arc<Budgets>,
        lane: Lane,
        class: Class,
        storage: bool,
        scope: &'static str,
        n: usize,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        (0..n)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(in_lane(lane, async move {
                    b.acquire(class, storage, scope).await
                }))
            })
            .collect()
    }

    fn spawn(
        b: &Arc<Budgets>,
        class: Class,
        scope: &'static str,
        n: usize,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        spawn_in(b, Lane::Scheduled, class, true, scope, n)
    }

    async fn settle() {
        for _ in 0..50 {
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
    async fn deferrable_calls_take_a_quarter_of_a_window_and_never_wait() {
        let clock = ManualClock::new(start());
        let b = budgets(&clock, 10, 1_200);
        // A quarter of ten writes a second: two go, the third is deferred at once.
        let taken: Vec<bool> = (0..3)
            .map(|_| b.acquire_now(Class::ArmWrite, false, "sub-a").is_ok())
            .collect();
        assert_eq!(taken, [true, true, false]);
        // What a rotation's own calls need is still there: eight more go now.
        let routine = spawn(&b, Class::ArmWrite, "sub-a", 8);
        settle().await;
        assert_eq!(done(&routine), 8);
        // A full window defers too, and a deferred call consumed nothing.
        assert!(b.acquire_now(Class::ArmWrite, false, "sub-a").is_err());
        let queued = spawn(&b, Class::ArmWrite, "sub-a", 1);
        settle().await;
        assert_eq!(done(&queued), 0);
        clock.advance(TimeDelta::seconds(1));
        // Someone waits in the scope: a deferrable call does not go ahead of them.
        assert!(b.acquire_now(Class::ArmWrite, false, "sub-a").is_err());
        settle().await;
        assert_eq!(done(&queued), 1);
        assert!(b.acquire_now(Class::ArmWrite, false, "sub-a").is_ok());
        // A budget of one a second still lets one deferrable call through.
        let one = budgets(&clock, 1, 1_200);
        assert!(one.acquire_now(Class::ArmWrite, false, "sub-a").is_ok());
        assert!(one.acquire_now(Class::ArmWrite, false, "sub-a").is_err());
    }

    #[tokio::test]
    async fn the_hourly_budget_holds_storage_writes_and_scopes_are_separate() {
        let clock = ManualClock::new(start());
        // An hourly limit of 20 keeps 2 for incidents: routine work gets 18.
        let b = budgets(&clock, 100, 20);
        let first = spawn(&b, Class::ArmWrite, "SUB-A", 19);
        let other = spawn(&b, Class::ArmWrite, "sub-b", 18);
        // Writes to other providers (ML datastores) do not count against the
        // Storage resource provider's hour.
        let ml = spawn_in(&b, Lane::Scheduled, Class::ArmWrite, false, "sub-a", 5);
        settle().await;
        assert_eq!(done(&first), 18);
        assert_eq!(done(&other), 18, "another subscription has its own budget");
        assert_eq!(done(&ml), 5);
        clock.advance(TimeDelta::minutes(59));
        settle().await;
        assert_eq!(done(&first), 18);
        clock.advance(TimeDelta::minutes(1));
        settle().await;
        assert_eq!(done(&first), 19);
    }

    #[tokio::test]
    async fn an_incident_goes_ahead_of_queued_routine_work_and_may_spend_the_reserve() {
        let clock = ManualClock::new(start());
        let b = budgets(&clock, 1, 20);
        // Eighteen scheduled writes: one per second, the rest queue.
        let routine = spawn(&b, Class::ArmWrite, "sub", 18);
        settle().await;
        assert_eq!(done(&routine), 1);
        let incident = spawn_in(&b, Lane::Incident, Class::ArmWrite, true, "sub", 1);
        settle().await;
        assert_eq!(done(&incident), 0, "the second is spent");
        clock.advance(TimeDelta::seconds(1));
        settle().await;
        assert_eq!(
            (done(&incident), done(&routine)),
            (1, 1),
            "the incident takes the next slot, ahead of 17 queued calls"
        );
        for _ in 0..16 {
            clock.advance(TimeDelta::seconds(1));
            settle().await;
        }
        // The hour's routine share is 18 of 20, and the incident took one of them: the
        // last routine write waits for the hour, the last two are the reserve.
        assert_eq!(done(&routine), 17);
        clock.advance(TimeDelta::seconds(1));
        settle().await;
        assert_eq!(done(&routine), 17);
        let urgent = spawn_in(&b, Lane::Incident, Class::ArmWrite, true, "sub", 1);
        settle().await;
        clock.advance(TimeDelta::seconds(1));
        settle().await;
        assert_eq!(
            (done(&routine), done(&urgent)),
            (17, 1),
            "an incident still finds its reserve"
        );
    }

    #[tokio::test]
    async fn background_checks_use_at_most_half_of_a_long_window() {
        let clock = ManualClock::new(start());
        let b = budgets(&clock, 100, 20);
        let checks = spawn_in(&b, Lane::Background, Class::ArmWrite, true, "sub", 12);
        settle().await;
        assert_eq!(done(&checks), 10);
        let rotation = spawn(&b, Class::ArmWrite, "sub", 8);
        settle().await;
        assert_eq!(done(&rotation), 8, "the rest is there for rotations");
    }

    #[tokio::test]
    async fn a_cancelled_waiter_consumes_nothing() {
        let clock = ManualClock::new(start());
        let b = budgets(&clock, 1, 1_200);
        let first = spawn(&b, Class::ArmWrite, "sub", 1);
        settle().await;
        let gives_up = spawn(&b, Class::ArmWrite, "sub", 1);
        settle().await;
        gives_up[0].abort();
        let next = spawn(&b, Class::ArmWrite, "sub", 1);
        settle().await;
        clock.advance(TimeDelta::seconds(1));
        settle().await;
        assert_eq!((done(&first), done(&next)), (1, 1));
    }

    #[tokio::test]
    async fn azure_running_low_holds_routine_lanes_and_a_429_holds_everyone() {
        let clock = ManualClock::new(start());
        let b = budgets(&clock, 10, 1_200);
        b.remaining(Class::ArmWrite, "sub", 0);
        let routine = spawn(&b, Class::ArmWrite, "sub", 1);
        let incident = spawn_in(&b, Lane::Incident, Class::ArmWrite, true, "sub", 1);
        settle().await;
        assert_eq!((done(&routine), done(&incident)), (0, 1));
        // 20 writes at 10 per second refill the bucket's low end in 2 s.
        clock.advance(TimeDelta::seconds(2));
        settle().await;
        assert_eq!(done(&routine), 1);

        b.throttled(Class::ArmRead, "sub", std::time::Duration::from_secs(5));
        let urgent = spawn_in(&b, Lane::Incident, Class::ArmRead, false, "sub", 1);
        settle().await;
        assert_eq!(done(&urgent), 0, "Azure asked everyone to wait");
        clock.advance(TimeDelta::seconds(5));
        settle().await;
        assert_eq!(done(&urgent), 1);
    }

    #[tokio::test]
    async fn key_vault_classes_have_their_own_windows() {
        let clock = ManualClock::new(start());
        let b = budgets(&clock, 10, 1_200);
        let writes = spawn_in(
            &b,
            Lane::Scheduled,
            Class::KeyVaultWrite,
            false,
            "https://v/kv",
            2,
        );
        let reads = spawn_in(
            &b,
            Lane::Scheduled,
            Class::KeyVaultRead,
            false,
            "https://v/kv",
            2,
        );
        settle().await;
        assert_eq!((done(&writes), done(&reads)), (1, 2));
        clock.advance(TimeDelta::seconds(10));
        settle().await;
        assert_eq!(done(&writes), 2);
    }

    #[test]
    fn subscriptions_and_providers_are_read_from_arm_paths() {
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
        let account =
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/a";
        assert!(is_storage_provider(&format!("{account}/listKeys")));
        assert!(is_storage_provider(account));
        assert!(!is_storage_provider(&format!(
            "{account}/providers/Microsoft.Authorization/permissions"
        )));
        assert!(!is_storage_provider(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/w/datastores"
        ));
    }
}
