//! One held blob lease: when it runs out by this process's own monotonic clock, the
//! task that renews it, and the check made before every journal write.
//!
//! Timing (see `docs/ARCHITECTURE.md`, "Replicas"): the service starts a lease's
//! timer when it handles the acquire or renew, which is after keyflip sent it, so
//! "sent + length" by the local monotonic clock is never later than the service's
//! expiry (wall clocks are never compared; skew does not matter, only the rate, and
//! [`usable`] keeps a tenth back for that). Renewals go every third of the length,
//! so a renewal that gets through on every tick keeps writes allowed; one missed
//! renewal pauses writes until the next gets through, and none for a whole length
//! loses the lease. A write is allowed only with at least half a length left.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::blob::{BlobClient, LeaseDuration, LeaseId};
use super::error::CoordError;

/// How much of a lease keyflip counts on, from the moment the request was sent: 90 %,
/// for clock-rate differences between this host and the service.
pub fn usable(length: Duration) -> Duration {
    length.mul_f64(0.9)
}

/// How often a held lease is renewed.
pub fn renew_every(length: Duration) -> Duration {
    length / 3
}

/// What must be left of a lease before recording an intent: half its length, far
/// more than one journal write takes, and within the first renewal's reach.
pub fn margin(length: Duration) -> Duration {
    length / 2
}

/// What must be left of a lease when an effect is sent (its intent was recorded
/// with at least [`margin`] left, a moment before): a tenth of the length.
pub fn sending(length: Duration) -> Duration {
    length / 10
}

/// Whether a lease last confirmed at `confirmed` (send time of the acquire or renew)
/// still has `need` left at `now`; the time left either way.
pub fn left(length: Duration, confirmed: Instant, now: Instant) -> Duration {
    (confirmed + usable(length)).saturating_duration_since(now)
}

/// A lease this replica holds on one blob, renewed in the background until dropped.
pub struct Lease {
    client: BlobClient,
    blob: String,
    id: LeaseId,
    length: Duration,
    /// Send time of the last acquire or renew the service confirmed.
    confirmed: Mutex<Instant>,
    lost: AtomicBool,
    why: Mutex<Option<String>>,
    /// When this replica acquired it (for status).
    pub since: chrono::DateTime<chrono::Utc>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("blob", &self.blob)
            .field("length", &self.length)
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// Acquires the lease on `blob` (which must exist), once: [`CoordError::Held`]
    /// when another replica holds it.
    pub async fn acquire(
        client: &BlobClient,
        blob: &str,
        length: Duration,
    ) -> Result<Lease, CoordError> {
        let proposed = LeaseId(uuid::Uuid::new_v4().to_string());
        let sent = Instant::now();
        let secs = u32::try_from(length.as_secs()).unwrap_or(60).clamp(15, 60);
        let id = client
            .acquire(blob, LeaseDuration::Seconds(secs), &proposed)
            .await?;
        Ok(Lease {
            client: client.clone(),
            blob: blob.to_owned(),
            id,
            length: Duration::from_secs(u64::from(secs)),
            confirmed: Mutex::new(sent),
            lost: AtomicBool::new(false),
            why: Mutex::new(None),
            since: chrono::Utc::now(),
        })
    }

    pub fn id(&self) -> &LeaseId {
        &self.id
    }

    pub fn blob(&self) -> &str {
        &self.blob
    }

    pub fn length(&self) -> Duration {
        self.length
    }

    /// Time left by the local clock (zero once lost).
    pub fn left(&self) -> Duration {
        if self.lost.load(Ordering::SeqCst) {
            return Duration::ZERO;
        }
        let confirmed = *self.confirmed.lock().unwrap_or_else(|e| e.into_inner());
        left(self.length, confirmed, Instant::now())
    }

    fn lose(&self, why: String) {
        tracing::warn!(blob = %self.blob, why = %why, "lease lost");
        *self.why.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
        self.lost.store(true, Ordering::SeqCst);
    }

    /// Fails unless the lease is held with at least [`margin`] left: the check before
    /// every intent, so an effect is only ever started well inside the lease.
    pub fn ensure(&self) -> Result<(), CoordError> {
        self.ensure_at_least(margin(self.length))
    }

    /// Fails unless the lease is held with at least `need` left by the local clock.
    /// The executor checks [`sending`] right before it sends an effect whose intent
    /// is recorded, so a process that was paused past its lease sends nothing.
    pub fn ensure_at_least(&self, need: Duration) -> Result<(), CoordError> {
        let left = self.left();
        if left >= need {
            return Ok(());
        }
        let why = self
            .why
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| {
                format!(
                    "only {} ms of the lease were left and a step needs {} ms; renewals did not get through in time",
                    left.as_millis(),
                    need.as_millis()
                )
            });
        Err(CoordError::Lost {
            blob: self.blob.clone(),
            why,
        })
    }

    /// Renews once; on success the local expiry moves to send time + length.
    pub async fn renew(&self) -> Result<Duration, CoordError> {
        let sent = Instant::now();
        match self.client.renew(&self.blob, &self.id).await {
            Ok(()) => {
                let mut confirmed = self.confirmed.lock().unwrap_or_else(|e| e.into_inner());
                if sent > *confirmed {
                    *confirmed = sent;
                }
                Ok(sent.elapsed())
            }
            Err(e) => {
                if e.is_lease_loss() {
                    self.lose(e.to_string());
                }
                Err(e)
            }
        }
    }

    /// Whether the lease counts as lost (or was released).
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Renews every [`renew_every`] until lost or `stop` fires; a failed renewal is
    /// retried at the next tick, and once the local expiry passes the lease counts as
    /// lost. `on_renew` gets each successful renewal's latency (metrics).
    pub async fn keep(
        &self,
        stop: tokio_util::sync::CancellationToken,
        on_renew: &(dyn Fn(Duration) + Send + Sync),
    ) {
        let every = renew_every(self.length);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            if self.lost.load(Ordering::SeqCst) {
                return;
            }
            match self.renew().await {
                Ok(latency) => on_renew(latency),
                Err(e) if e.is_lease_loss() => return,
                Err(e) => {
                    tracing::warn!(blob = %self.blob, error = %e, "lease renewal failed; retrying");
                    if self.left().is_zero() {
                        self.lose(format!("it could not be renewed before it expired: {e}"));
                        return;
                    }
                }
            }
        }
    }

    /// Gives the lease back (best effort: an expired lease needs no release).
    pub async fn release(&self) {
        if self.lost.load(Ordering::SeqCst) {
            return;
        }
        self.lost.store(true, Ordering::SeqCst);
        if let Err(e) = self.client.release(&self.blob, &self.id).await {
            tracing::debug!(blob = %self.blob, error = %e, "lease release failed; it expires on its own");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_left_counts_from_the_send_time_and_keeps_a_tenth_back() {
        let length = Duration::from_secs(30);
        let t0 = Instant::now();
        assert_eq!(left(length, t0, t0), Duration::from_secs(27));
        assert_eq!(
            left(length, t0, t0 + Duration::from_secs(20)),
            Duration::from_secs(7)
        );
        assert_eq!(
            left(length, t0, t0 + Duration::from_secs(40)),
            Duration::ZERO
        );
    }

    #[test]
    fn a_renewal_on_every_tick_keeps_writes_allowed() {
        for secs in [15, 30, 60] {
            let length = Duration::from_secs(secs);
            // Even after two missed renewals the lease has not run out yet.
            assert!(usable(length) > renew_every(length) * 2, "{secs}");
            assert!(
                margin(length) <= usable(length) - renew_every(length),
                "{secs}"
            );
        }
    }
}
