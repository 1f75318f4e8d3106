//! The per-plan scheduling decision.

use chrono::TimeZone as _;

use super::super::kept::KeptPlan;
use super::*;
use crate::journal::Parked;

fn t(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, h, m, 0).unwrap()
}

fn entry(schedule: &str) -> Entry {
    let text = format!(
        "storage_account = \"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/acct\"\n{schedule}\n[[key_vault]]\nvault = \"https://kv.vault.azure.net\"\nsecret = \"s\"\nformat = \"raw-key\"\n"
    );
    let plan = crate::plan::parse(&text, "demo.toml").unwrap_or_else(|e| panic!("{e}"));
    let kept = KeptPlan::new(&plan, &mut Default::default());
    new_entry(kept, PlanState::new("demo", t(0, 0)), t(0, 0))
}

fn at(next: Next) -> Option<DateTime<Utc>> {
    match next {
        Next::At(at, _) => Some(at),
        _ => None,
    }
}

#[test]
fn cron_plans_wait_for_their_window_and_run_once_due() {
    let e =
        entry("[schedule]\ncron = \"0 * * * *\"\nwindow = { start = \"02:00\", end = \"04:00\" }");
    assert_eq!(at(next(&e, t(0, 30))), Some(t(2, 0)));
    assert!(
        matches!(next(&e, t(2, 0)), Next::Start(Trigger::Schedule { .. }, since) if since == t(2, 0))
    );
    let manual = entry("");
    assert!(matches!(next(&manual, t(2, 0)), Next::Idle("manual")));
}

#[test]
fn a_failed_plan_retries_after_its_backoff_and_only_inside_the_window() {
    let mut e =
        entry("[schedule]\ncron = \"0 * * * *\"\nwindow = { start = \"02:00\", end = \"04:00\" }");
    e.state.failures = 1;
    e.state.last_started = Some(t(2, 0));
    e.state.retry_at = Some(t(3, 0));
    assert_eq!(
        at(next(&e, t(2, 30))),
        Some(t(3, 0)),
        "waits out the backoff"
    );
    assert!(
        matches!(next(&e, t(3, 0)), Next::Start(Trigger::Schedule { ref reason }, _) if reason == "retry")
    );
    e.state.retry_at = Some(t(3, 59));
    assert_eq!(
        at(next(&e, t(4, 30))),
        Some(Utc.with_ymd_and_hms(2026, 3, 3, 2, 0, 0).unwrap()),
        "a retry due outside the window waits for the next opening"
    );
}

#[test]
fn parked_running_and_unobserved_key_age_plans_do_not_start() {
    let mut e = entry("[schedule]\ncron = \"0 * * * *\"");
    e.state.parked = Some(Parked {
        at: t(0, 0),
        reason: "r".into(),
    });
    assert!(matches!(next(&e, t(5, 0)), Next::Idle("parked")));
    let mut e = entry("[schedule]\ncron = \"0 * * * *\"");
    e.running = Some(Box::new(Activity {
        kind: "rotation",
        rotation_id: None,
        since: t(0, 0),
        waiting_until: None,
    }));
    assert!(matches!(next(&e, t(5, 0)), Next::Idle("running")));

    let mut e = entry("[schedule]\nmax_key_age = \"30d\"");
    assert!(matches!(
        next(&e, t(5, 0)),
        Next::Idle("waiting-for-observation")
    ));
    e.active_created = KeyAge::Known(Some(t(0, 0) - chrono::TimeDelta::days(31)));
    assert!(matches!(next(&e, t(5, 0)), Next::Start(Trigger::KeyAge, _)));
    e.active_created = KeyAge::Known(Some(t(0, 0)));
    assert_eq!(
        at(next(&e, t(5, 0))),
        Some(t(0, 0) + chrono::TimeDelta::days(30))
    );
}

/// What every plan costs the daemon in place (its text and names come on top): kept in
/// bytes, not kilobytes, so 10,000 plans fit the memory budget (docs/performance.md).
/// `KeptPlan` holds its text as a shared base and a patch (32 bytes in place, tens on
/// the heap, where the whole text took hundreds).
#[test]
fn an_idle_plan_stays_small() {
    let entry = std::mem::size_of::<Entry>();
    let kept = std::mem::size_of::<KeptPlan>();
    assert!(
        entry <= 512 && kept <= 136,
        "Entry is {entry} bytes and KeptPlan {kept}: box what idle plans do not use"
    );
}
