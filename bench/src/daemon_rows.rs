//! The daemon at scale: time to READY (first start on an empty state directory, then
//! restarts), resident memory, CPU over an idle minute with the systemd watchdog on,
//! SIGHUP reload time; and `plan check` of the same plan files.
//!
//! The plans rotate once a year (`0 3 1 1 *`) and check drift daily, so nothing is due
//! while the bench watches: what is measured is the scheduler's own cost, plus the
//! start-up checks it spreads over the drift interval.

use std::time::{Duration, Instant};

use crate::Options;
use crate::keyflip::{FleetPlan, Workdir};
use crate::table::{Row, Target, Unit, median};
use crate::twin::BenchTwin;

const WATCHDOG: Duration = Duration::from_secs(20);

pub async fn daemon(
    twin: &BenchTwin,
    o: &Options,
    plans: usize,
) -> anyhow::Result<(Vec<Row>, Workdir)> {
    let work = Workdir::new(twin, &o.keyflip, &o.daemon_lines)?;
    work.write_fleet_plans(
        twin,
        0..plans,
        &FleetPlan {
            cron: "0 3 1 1 *".into(),
            grace: "1h",
            drift_interval: "1d",
        },
    )?;
    twin.refill_buckets().await?;
    let big = plans >= 10_000;
    let label = |what: &str| format!("daemon, {plans} plans: {what}");

    // Starts: the first on an empty state directory, the rest on the journal it left.
    let mut ready_cold = None;
    let mut ready_warm = Vec::new();
    let mut rss_ready = Vec::new();
    // CPU the process used until READY: the part of the time to READY that does not
    // depend on what else the machine runs.
    let mut cpu_ready = Vec::new();
    let starts = o.runs.max(2);
    let mut daemon = None;
    for run in 0..starts {
        let mut d = work.start_daemon(WATCHDOG).await?;
        let at = d.wait_notify("READY=1", Duration::from_secs(300)).await?;
        let took = at.duration_since(d.started).as_secs_f64() * 1000.0;
        rss_ready.push(d.rss()? as f64 / 1e6);
        cpu_ready.push(d.cpu()?.as_secs_f64() * 1000.0);
        if run == 0 {
            ready_cold = Some(took);
        } else {
            ready_warm.push(took);
        }
        if run + 1 < starts {
            d.stop().await?;
        } else {
            daemon = Some(d);
        }
    }
    let Some(mut d) = daemon else {
        anyhow::bail!("no daemon left running");
    };

    // An idle minute, a few seconds after READY.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let seq = twin.last_seq().await?;
    d.count_notify("WATCHDOG=1");
    let cpu0 = d.cpu()?;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(o.idle_secs)).await;
    let cpu = d.cpu()?.saturating_sub(cpu0);
    let elapsed = t0.elapsed().as_secs_f64();
    let per_minute_ms = cpu.as_secs_f64() * 1000.0 * 60.0 / elapsed;
    let pings = d.count_notify("WATCHDOG=1");
    let rss_idle = d.rss()? as f64 / 1e6;
    let idle_calls = twin.requests_since(seq).await?;
    let idle_writes = idle_calls.iter().filter(|c| c.is_arm_write()).count();

    // SIGHUP reloads.
    let mut reloads = Vec::new();
    let mut reload_note = String::new();
    for _ in 0..o.runs {
        d.drain_log();
        let sent = Instant::now();
        d.signal(libc::SIGHUP)?;
        match d
            .wait_log("configuration and plans reloaded", Duration::from_secs(120))
            .await
        {
            Ok(done) => reloads.push(done.duration_since(sent).as_secs_f64() * 1000.0),
            Err(e) => {
                reload_note = format!("{e}; ");
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let exit = match d.stop().await {
        Ok(code) => code.to_string(),
        Err(e) => e.to_string(),
    };

    let mut rows = vec![
        Row::new(
            label("time to READY, restart"),
            if big {
                Target::AtMost(300.0)
            } else {
                Target::None
            },
            Unit::Millis,
        )
        .samples(ready_warm.iter().copied()),
        Row::new(
            label("time to READY, empty state dir"),
            Target::None,
            Unit::Millis,
        )
        .samples(ready_cold),
        Row::new(
            label("RSS at READY"),
            if big {
                Target::AtMost(30.0)
            } else {
                Target::None
            },
            Unit::Megabytes,
        )
        .samples(rss_ready.iter().copied()),
        Row::new(
            label(&format!("RSS after {} s idle", o.idle_secs)),
            if big {
                Target::AtMost(30.0)
            } else {
                Target::None
            },
            Unit::Megabytes,
        )
        .sample(rss_idle),
        Row::new(
            label("CPU per idle minute"),
            Target::AtMost(50.0),
            Unit::Millis,
        )
        .sample(per_minute_ms)
        .calls(idle_calls.len() as u64, idle_writes as u64)
        .note(format!(
            "over {elapsed:.0} s; calls are start-up/drift checks"
        )),
        Row::new(
            label("watchdog pings in the idle period"),
            Target::AtLeast((o.idle_secs as f64 / (WATCHDOG.as_secs_f64() / 2.0)).floor() - 1.0),
            Unit::Count,
        )
        .sample(pings as f64)
        .note(format!("WatchdogSec={}s", WATCHDOG.as_secs())),
        Row::new(label("SIGHUP reload"), Target::None, Unit::Millis)
            .samples(reloads.iter().copied())
            .note(format!("{reload_note}daemon exit {exit} on SIGTERM")),
    ];
    if let (Some(cpu_cold), Some(cpu_warm)) = (cpu_ready.first().copied(), median(&cpu_ready[1..]))
    {
        rows[0].note = format!("CPU until READY {cpu_warm:.0} ms (median)");
        rows[1].note = format!("CPU until READY {cpu_cold:.0} ms");
    }
    Ok((rows, work))
}

/// `keyflip plan check` of every plan in `work`'s plans directory.
pub async fn plan_check(work: &Workdir, o: &Options, plans: usize) -> anyhow::Result<Row> {
    let mut times = Vec::new();
    let mut note = String::new();
    let dir = work.plans.display().to_string();
    for _ in 0..o.runs {
        let (took, code, stdout, _) = work.run(&["plan", "check", &dir]).await?;
        times.push(took.as_secs_f64() * 1000.0);
        note = format!(
            "exit {code}; {}",
            stdout.lines().last().unwrap_or_default().trim()
        );
    }
    Ok(Row::new(
        format!("plan check of {plans} files"),
        Target::AtMost(1000.0),
        Unit::Millis,
    )
    .samples(times)
    .note(note))
}
