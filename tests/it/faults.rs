//! The fault matrix: every Azure operation keyflip calls
//! (`keyflip::azure::operations::ALL`) meets every fault kind Azure produces (429 with
//! `Retry-After`, 500, 503, a reset connection, a hang past the read timeout, a
//! malformed body, and for long-running operations `lro_fail`), once and until
//! cleared, during a full rotation of the demo plan against its own twin. Whatever
//! happens, once the fault is cleared and an unfinished rotation is resumed, every
//! consumer holds a key that works, the latest Key Vault versions are enabled, and a
//! rotation that rolled back left the key consumers used untouched.
//!
//! An operation added to `ALL` without a line in [`twin_operation`] fails here; one no
//! rotation calls must say so in [`NOT_IN_A_ROTATION`]; one only incident rotations
//! call is listed in [`INCIDENT_ONLY`], whose cells rotate with `--leaked key1`; the usage
//! gate's in [`GATED`], whose cells rotate the demo plan with its gate. The run prints the number of
//! cells and their outcomes. It uses short timeouts (a hang costs 300 ms per attempt)
//! and runs cells concurrently, each on its own twin.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use keyflip::azure::operations::{ALL, Listed};
use keyflip::azure::{AzureOptions, RetryPolicy};
use keyflip::clock::Clock;
use keyflip::key::KeyName;
use keyflip::rotation::machine::{Mode, Outcome};
use keyflip::rotation::{NoProgress, RotateRequest, Trigger};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::support::engine::{
    Harness, TwinClock, consumer_keys, gated_demo_plan_text, keys_of, plan_from, versions,
};
use crate::support::twin::OPERATOR;

/// The twin's name for each of keyflip's operations (the twin's admin API selects
/// faults by it). `None` fails the matrix: a new operation needs its line here.
fn twin_operation(keyflip: &str) -> Option<&'static str> {
    Some(match keyflip {
        "entra.token" => "entra.token",
        "storage.get" => "storage.get",
        "storage.listKeys" => "storage.listKeys",
        "storage.regenerateKey" => "storage.regenerateKey",
        "storage.patch" => "storage.patch",
        "blob.getAccountInformation" => "blob.accountInfo",
        "authorization.permissions" => "authz.permissions",
        "ml.workspace.get" => "ml.workspace.get",
        "ml.workspace.listKeys" => "ml.workspace.listKeys",
        "ml.workspace.resyncKeys" => "ml.workspace.resyncKeys",
        "arm.pollOperation" => "ml.operation.poll",
        "ml.datastore.list" => "ml.datastore.list",
        "ml.datastore.get" => "ml.datastore.get",
        "ml.datastore.put" => "ml.datastore.put",
        "ml.datastore.listSecrets" => "ml.datastore.listSecrets",
        "keyvault.setSecret" => "keyvault.set",
        "keyvault.getSecret" => "keyvault.get",
        "keyvault.listVersions" => "keyvault.versions",
        "keyvault.disableVersion" => "keyvault.update",
        "databricks.scopes.list" => "databricks.scopes",
        "databricks.secrets.put" => "databricks.put",
        "databricks.secrets.list" => "databricks.list",
        // The twin names App Service and Data Factory operations as keyflip does.
        "web.appSettings.list" => "web.appSettings.list",
        "web.appSettings.put" => "web.appSettings.put",
        "web.connectionStrings.list" => "web.connectionStrings.list",
        "web.connectionStrings.put" => "web.connectionStrings.put",
        "datafactory.linkedService.get" => "datafactory.linkedService.get",
        "datafactory.linkedService.list" => "datafactory.linkedService.list",
        "datafactory.linkedService.put" => "datafactory.linkedService.put",
        // Discovery's lists and the usage gate's reads.
        "arm.subscriptions.list" => "arm.subscriptions",
        "storage.list" => "storage.list",
        "ml.workspace.list" => "ml.workspace.list",
        "keyvault.vault.list" => "keyvault.vault.list",
        "keyvault.listSecrets" => "keyvault.list",
        "web.site.list" => "web.site.list",
        "web.slot.list" => "web.slot.list",
        "datafactory.factory.list" => "datafactory.factory.list",
        "monitor.diagnosticSettings.list" => "monitor.diagnosticSettings.list",
        "loganalytics.query" => "loganalytics.query",
        _ => return None,
    })
}

/// Operations keyflip-twin does not serve, and why: the matrix cannot inject faults
/// into them, so it has no cells for them.
const NOT_IN_THE_TWIN: &[(&str, &str)] = &[(
    "loganalytics.workspace.get",
    "the twin serves no ARM read of a Log Analytics workspace (only plan discover asks for its customerId, and takes none); the usage gate's query is covered",
)];

/// Operations a rotation of the demo plan never calls, and why (their cells run and
/// must show the fault unused).
const NOT_IN_A_ROTATION: &[(&str, &str)] = &[
    (
        "storage.patch",
        "changes account settings; no rotation does",
    ),
    (
        "ml.workspace.get",
        "rotations read a workspace's keys (listKeys), only doctor reads its properties",
    ),
    (
        "web.connectionStrings.put",
        "the demo's app consumer is an app setting (the unlisted-consumer check only lists a site's connection strings); a connection-string consumer takes the same read-modify-write in azure/web.rs, covered by tests/it/rotation/apps.rs",
    ),
    (
        "ml.datastore.get",
        "the demo's datastores are discovered, and a bind PUTs the body the discovery listed; a named datastore's bind, and any bind after the first, GETs first (tests/it/azure/ml.rs)",
    ),
    (
        "arm.subscriptions.list",
        "the unlisted-consumer check looks in the plan's subscription; only plan discover lists them all",
    ),
    (
        "storage.list",
        "only plan discover lists storage accounts; a rotation checks its plan's one",
    ),
    (
        "monitor.diagnosticSettings.list",
        "only doctor and plan discover read an account's diagnostic settings; a rotation's usage gate queries the workspace its plan names",
    ),
];

/// Operations only a plan with a `[usage_gate]` calls (the Log Analytics query, before
/// staging and before the retire): their cells rotate the demo plan with its gate, on
/// a clock that moves the twin's, with the world's forgotten client switched off so
/// the gate passes once the fault is cleared.
const GATED: &[&str] = &["loganalytics.query"];

/// The client in no plan that the demo world keeps signing with key1.
const FORGOTTEN: &str = "legacy-nightly-export";

/// Operations only an incident rotation calls (listing a secret's versions and
/// disabling those holding the leaked key): their cells run `--leaked key1`.
const INCIDENT_ONLY: &[&str] = &["keyvault.listVersions", "keyvault.disableVersion"];

fn request_for(op: &Listed) -> RotateRequest {
    if GATED.contains(&op.name) {
        // A grace the gate's first check fits in, as in tests/it/rotation/gate.rs.
        RotateRequest {
            grace: Some(Duration::from_secs(5)),
            ..RotateRequest::manual()
        }
    } else if INCIDENT_ONLY.contains(&op.name) {
        RotateRequest {
            mode: Mode::Leaked {
                key: KeyName::Key1,
                revoke_first: false,
            },
            grace: None,
            trigger: Trigger::Manual,
            by: None,
        }
    } else {
        RotateRequest::manual()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Throttled,
    Error500,
    Unavailable503,
    Reset,
    Hang,
    Malformed,
    LroFail,
}

const KINDS: [Kind; 7] = [
    Kind::Throttled,
    Kind::Error500,
    Kind::Unavailable503,
    Kind::Reset,
    Kind::Hang,
    Kind::Malformed,
    Kind::LroFail,
];

impl Kind {
    fn action(self) -> Value {
        match self {
            Kind::Throttled => json!({"kind": "status", "status": 429, "retry_after": 1}),
            Kind::Error500 => json!({"kind": "status", "status": 500}),
            Kind::Unavailable503 => json!({"kind": "status", "status": 503}),
            Kind::Reset => json!({"kind": "reset"}),
            Kind::Hang => json!({"kind": "hang"}),
            Kind::Malformed => json!({"kind": "malformed"}),
            Kind::LroFail => json!({"kind": "lro_fail", "code": "InternalServerError"}),
        }
    }
}

struct Cell {
    op: Listed,
    wire: &'static str,
    kind: Kind,
    persistent: bool,
}

/// How a cell ended.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ending {
    Completed,
    RolledBack,
    Refused,
    NeedsAttention,
    /// The run stopped unfinished (or could not start); a resume after the fault was
    /// cleared finished it.
    ResumedThen(Box<Ending>),
    /// The fault never fired: the rotation does not call the operation.
    NotCalled,
}

fn ending(outcome: &Option<Outcome>) -> Ending {
    match outcome {
        Some(Outcome::Completed { .. }) => Ending::Completed,
        Some(Outcome::RolledBack { .. }) => Ending::RolledBack,
        Some(Outcome::Refused { .. }) => Ending::Refused,
        Some(Outcome::NeedsAttention { .. }) => Ending::NeedsAttention,
        None => Ending::NeedsAttention,
    }
}

fn options() -> AzureOptions {
    AzureOptions {
        retry: RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            max_retry_after: Duration::from_secs(2),
        },
        lro_poll: Duration::from_millis(20),
        reconcile_delay: Duration::ZERO,
        read_timeout: Duration::from_millis(300),
    }
}

/// The restart after the fault is cleared: the same retries, but a read timeout a
/// healthy twin on a loaded machine always meets. The 300 ms of [`options`] makes a
/// hang cheap while the fault is on; once it is off, a slow token answer is not what
/// the cell tests (with 300 ms, a resume on a machine at load 10 failed three token
/// attempts in a row: `storage.patch × Reset persistent`, whose fault never fired).
fn resume_options() -> AzureOptions {
    AzureOptions {
        read_timeout: Duration::from_secs(10),
        ..options()
    }
}

async fn fired(h: &Harness, persistent: bool) -> bool {
    let rules = h.twin.faults().await;
    match Some(rules.as_slice()) {
        // A one-shot rule is removed once it fired.
        Some([]) => !persistent,
        Some([rule]) => rule["fired"].as_u64().unwrap_or(0) > 0,
        other => panic!("unexpected fault table {other:?}"),
    }
}

/// Runs one cell; its ending, or what broke the invariant.
async fn run(cell: &Cell) -> Result<Ending, String> {
    let mut h = Harness::start().await;
    let gated = GATED.contains(&cell.op.name);
    let clock: Arc<dyn Clock> = if gated {
        h.plan = plan_from(&gated_demo_plan_text(&h.twin));
        h.twin.set_client(FORGOTTEN, false).await;
        Arc::new(TwinClock::new(&h.twin))
    } else {
        h.clock.clone()
    };
    let name = format!(
        "{} × {:?} {}",
        cell.op.name,
        cell.kind,
        if cell.persistent {
            "persistent"
        } else {
            "once"
        }
    );
    let before = keys_of(&h.twin.state().await);
    h.twin
        .fault(json!({
            "operation": cell.wire,
            "count": if cell.persistent { 0 } else { 1 },
            "action": cell.kind.action(),
        }))
        .await;
    let first = tokio::time::timeout(
        Duration::from_secs(120),
        h.engine_with_clock(OPERATOR, options(), clock.clone())
            .rotate(
                &h.plan,
                request_for(&cell.op),
                &NoProgress,
                CancellationToken::new(),
            ),
    )
    .await
    .map_err(|_| format!("{name}: the rotation did not end within 120 s"))?;
    let was_fired = fired(&h, cell.persistent).await;
    h.twin.clear_faults().await;
    let mut end = match &first {
        Ok(report) => ending(&report.outcome),
        Err(_) => {
            // Unfinished, or it could not start: a restart resumes it (nothing to do
            // when it never began).
            let resumed = tokio::time::timeout(
                Duration::from_secs(120),
                h.engine_with_clock(OPERATOR, resume_options(), clock.clone())
                    .resume(
                        std::slice::from_ref(&h.plan),
                        &NoProgress,
                        CancellationToken::new(),
                    ),
            )
            .await
            .map_err(|_| format!("{name}: the resume did not end within 120 s"))?
            .map_err(|e| format!("{name}: the resume failed: {e}"))?;
            match resumed.first() {
                Some(report) => Ending::ResumedThen(Box::new(ending(&report.outcome))),
                None => Ending::ResumedThen(Box::new(Ending::Refused)),
            }
        }
    };
    if !was_fired {
        end = Ending::NotCalled;
    }
    // The invariants, whatever the ending.
    let state = h.twin.state().await;
    let (key1, key2) = keys_of(&state);
    for (consumer, key) in consumer_keys(&state) {
        if key != key1 && key != key2 {
            return Err(format!(
                "{name}: {consumer} holds a key that no longer works ({end:?})"
            ));
        }
    }
    for secret in ["stdatasci001-key", "stdatasci001-connection-string"] {
        if !versions(&state, secret).last().is_some_and(|v| v.2) {
            return Err(format!(
                "{name}: the latest version of {secret} is disabled"
            ));
        }
    }
    let rolled_back = matches!(&end, Ending::RolledBack)
        || matches!(&end, Ending::ResumedThen(e) if **e == Ending::RolledBack);
    if rolled_back && key1 != before.0 {
        return Err(format!(
            "{name}: rolled back, yet the key in use (key1) was regenerated"
        ));
    }
    Ok(end)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_operation_meets_every_fault_and_consumers_keep_a_working_key() {
    let mut cells = Vec::new();
    // `KEYFLIP_FAULT_MATRIX_OPS=a,b` runs only those operations' cells (to reproduce).
    let only: Option<Vec<String>> = std::env::var("KEYFLIP_FAULT_MATRIX_OPS")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect());
    for op in ALL {
        if NOT_IN_THE_TWIN.iter().any(|(name, _)| *name == op.name) {
            continue;
        }
        if only
            .as_ref()
            .is_some_and(|only| !only.iter().any(|o| o == op.name))
        {
            continue;
        }
        let wire = twin_operation(op.name).unwrap_or_else(|| {
            panic!(
                "azure::operations::ALL lists {}, which the fault matrix cannot inject faults into: add it to twin_operation",
                op.name
            )
        });
        for kind in KINDS {
            if kind == Kind::LroFail && !op.long_running {
                continue;
            }
            for persistent in [false, true] {
                cells.push(Cell {
                    op: *op,
                    wire,
                    kind,
                    persistent,
                });
            }
        }
    }
    let started = Instant::now();
    let concurrency = std::env::var("KEYFLIP_FAULT_MATRIX_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let results: Vec<(usize, Result<Ending, String>)> =
        futures::stream::iter(cells.iter().enumerate())
            .map(|(i, cell)| async move { (i, run(cell).await) })
            .buffer_unordered(concurrency)
            .collect()
            .await;
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut called: BTreeMap<&str, bool> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut parked = Vec::new();
    for (i, result) in results {
        let cell = &cells[i];
        match result {
            Ok(end) => {
                *called.entry(cell.op.name).or_default() |= end != Ending::NotCalled;
                *outcomes.entry(format!("{end:?}")).or_default() += 1;
                if end == Ending::NeedsAttention {
                    // Parked with every consumer on a working key: named for people.
                    parked.push(format!(
                        "{} × {:?} {}",
                        cell.op.name,
                        cell.kind,
                        if cell.persistent {
                            "persistent"
                        } else {
                            "once"
                        }
                    ));
                }
            }
            Err(e) => failures.push(e),
        }
    }
    eprintln!(
        "fault matrix: {} operations, {} cells in {:.0?}:",
        ALL.len(),
        cells.len(),
        started.elapsed()
    );
    for (end, n) in &outcomes {
        eprintln!("  {n:4}  {end}");
    }
    parked.sort();
    eprintln!("  parked (needs attention): {}", parked.join("; "));
    assert!(
        failures.is_empty(),
        "{} cells broke an invariant:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Every misplaced operation at once, not only the first.
    let mut misplaced = Vec::new();
    for (op, was_called) in called {
        let excused = NOT_IN_A_ROTATION.iter().any(|(name, _)| *name == op);
        if !(was_called || excused) {
            misplaced.push(format!(
                "no cell's fault on {op} fired: no rotation calls it; list it in NOT_IN_A_ROTATION with the reason, or cover it"
            ));
        }
        if was_called && excused {
            misplaced.push(format!(
                "{op} is listed in NOT_IN_A_ROTATION but a rotation called it"
            ));
        }
    }
    assert!(misplaced.is_empty(), "{}", misplaced.join("\n"));
}
