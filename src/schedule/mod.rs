//! When each plan is due: cron with time zones, maximum key age, rotation windows, jitter.
