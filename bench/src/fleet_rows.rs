//! A fleet of N accounts due at the same minute, under the twin's write limits (by
//! default Azure's ARM subscription limits: a bucket of 200 writes refilled at 10 per
//! second), against the bound Azure's write limits set.
//!
//! The bound: a client that needs W ARM writes to the Storage resource provider cannot
//! send them faster than that provider allows, 10 per second per subscription and
//! region (its published limit; ARM's bucket would allow a burst of 200 on top, the
//! provider does not), so it needs at least (W − 10) / 10 s after the due minute, and
//! no less than its fastest rotation's own critical path. W is what keyflip actually
//! sent to the fleet's accounts between the due minute and the last rotation's retire,
//! so the bound is computed from keyflip's ARM writes per rotation (the "ARM writes
//! per rotation" rows say whether those are few). The provider's 1,200 writes per hour
//! would stretch a 1,000-account fleet over hours on Azure; the twin does not model
//! that quota, so the bench declares the twin's limits to keyflip (a custom cloud's
//! budget) and leaves it out.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Timelike as _, Utc};

use crate::Options;
use crate::keyflip::{FleetPlan, Workdir};
use crate::table::{Row, Target, Unit};
use crate::twin::{BenchTwin, fleet_account};

/// Fleet rows use accounts from this index on, so they never share an account with
/// another row's earlier rotations.
pub async fn fleet(
    twin: &BenchTwin,
    o: &Options,
    first: usize,
    n: usize,
) -> anyhow::Result<Vec<Row>> {
    let work = Workdir::new(twin, &o.keyflip, &o.daemon_lines)?;
    let offset = twin.clock_offset().await?;
    // Due at the first whole minute at least 25 s away: READY comes first.
    let soon = Utc::now() + chrono::TimeDelta::seconds(25);
    let due = soon
        .with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .map_or(soon, |t| t + chrono::TimeDelta::minutes(1));
    let cron = format!(
        "{} {} {} {} *",
        due.minute(),
        due.hour(),
        chrono::Datelike::day(&due),
        chrono::Datelike::month(&due)
    );
    work.write_fleet_plans(
        twin,
        first..first + n,
        &FleetPlan {
            cron,
            grace: "0s",
            drift_interval: "1d",
        },
    )?;
    twin.refill_buckets().await?;
    let seq0 = twin.last_seq().await?;
    let mut d = work.start_daemon(Duration::from_secs(60)).await?;
    d.wait_notify("READY=1", Duration::from_secs(300)).await?;
    let due_twin = due + offset;

    let accounts: HashMap<String, usize> =
        (first..first + n).map(|i| (fleet_account(i), i)).collect();
    let (burst, refill) = twin.write_limits().await?;
    let timeout = Duration::from_secs(o.fleet_timeout_secs);
    let started = std::time::Instant::now();
    let mut regens: HashMap<String, Vec<DateTime<Utc>>> = HashMap::new();
    let mut seen = seq0;
    let mut writes = 0u64;
    let mut calls = 0u64;
    let mut throttled = 0u64;
    let mut last_at = due_twin;
    let complete = loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let new = twin.requests_since(seen).await?;
        if let Some(last) = new.last() {
            seen = last.seq;
        }
        for c in &new {
            let Some(account) = c.storage_account() else {
                continue;
            };
            if !accounts.contains_key(&account) {
                continue;
            }
            if c.at >= due_twin {
                calls += 1;
                if c.is_arm_write() {
                    writes += 1;
                }
                if c.status == Some(429) {
                    throttled += 1;
                }
            }
            if c.operation == "storage.regenerateKey" && c.ok() && c.at >= due_twin {
                regens.entry(account).or_default().push(c.at);
                last_at = last_at.max(c.at);
            }
        }
        let done = regens.values().filter(|r| r.len() >= 2).count();
        if done >= n {
            break true;
        }
        if started.elapsed() > timeout {
            break false;
        }
    };
    let exit = d.stop().await?;
    let done = regens.values().filter(|r| r.len() >= 2).count();
    let wall = (last_at - due_twin).num_milliseconds() as f64 / 1000.0;
    let fastest = regens
        .values()
        .filter(|r| r.len() >= 2)
        .filter_map(|r| r.get(1))
        .min()
        .map_or(0.0, |t| (*t - due_twin).num_milliseconds() as f64 / 1000.0);
    let per_rotation = if done > 0 {
        writes as f64 / done as f64
    } else {
        0.0
    };
    // The provider's per-second limit (the twin's refill rate, Azure's 10): the first
    // second's writes go at once, the rest one refill period apart.
    let _ = burst;
    let write_bound = ((writes as f64 - refill).max(0.0)) / refill;
    let bound = write_bound.max(fastest);
    let label = format!("fleet of {n} accounts due together");
    let mut rows = Vec::new();
    if complete {
        rows.push(
            Row::new(format!("{label}: wall time"), Target::None, Unit::Seconds)
                .sample(wall)
                .calls(calls, writes)
                .note(format!(
                    "{per_rotation:.1} ARM writes/rotation; bound {bound:.1} s (writes {write_bound:.1} s, fastest rotation {fastest:.1} s); {throttled} answered 429; exit {exit}"
                )),
        );
        rows.push(
            Row::new(
                format!("{label}: wall ÷ bound"),
                Target::AtMost(1.15),
                Unit::Ratio,
            )
            .sample(if bound > 0.0 { wall / bound } else { 0.0 }),
        );
    } else {
        let rate = done as f64 / started.elapsed().as_secs_f64().max(1.0);
        let projected = if rate > 0.0 {
            n as f64 / rate
        } else {
            f64::INFINITY
        };
        rows.push(
            Row::new(format!("{label}: wall time"), Target::None, Unit::Seconds)
                .calls(calls, writes)
                .note(format!(
                    "DID NOT FINISH: {done} of {n} rotated in {:.0} s (projected {:.0} s); {throttled} answered 429",
                    started.elapsed().as_secs_f64(),
                    projected
                )),
        );
    }
    Ok(rows)
}
