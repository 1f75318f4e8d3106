//! The unlisted-consumer check when it cannot read everything. In the daemon, the
//! check puts off the reads that do not fit a quarter of the call budget's window,
//! and the rotation's report says what was not checked; an engine that does not defer
//! (a standalone `rotate now`) and a plan with `unlisted = "refuse"` wait for the
//! budget instead, so their check is complete; and a check that Azure could not
//! answer refuses a plan that refuses, before anything changes.

use std::sync::Arc;

use keyflip::azure::budget::Budgets;
use keyflip::journal::Journal;
use keyflip::rotation::machine::{Mode, Outcome, RefusalReason, Unchecked, WarningKind};
use keyflip::rotation::{Engine, EngineOptions, NoProgress, RotateRequest, Trigger};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::support::binary::Cli;
use crate::support::engine::{Harness, demo_plan_text, engine_options, keys_of, plan_from};
use crate::support::twin::{ACCOUNT, OPERATOR};
use crate::support::{config, fast_options, fingerprinter};

/// An engine as `keyflip daemon` builds it: shared call budgets from `[daemon.budget]`
/// and discovery reads put off for the daemon's own rotations. The budget is tiny for
/// ARM writes (one a second) and generous for reads, so the check's App Service
/// settings listings (POSTs, which ARM counts as writes) never fit a quarter of the
/// window beside the observation's `listKeys`, and its GETs always do.
fn daemon_engine(h: &Harness) -> Engine {
    budgeted_engine(h, true)
}

/// The same budgets; `defer`: whether the check's reads may be put off (the daemon's
/// engine option).
fn budgeted_engine(h: &Harness, defer: bool) -> Engine {
    let text = format!(
        "state_dir = \"{}\"\n{}\n[daemon.budget]\narm_writes_per_second = 1\narm_reads_per_second = 100000\narm_reads_per_5min = 1000000\n",
        h.state_dir().display(),
        h.twin.config_text(OPERATOR)
    );
    let config = config(&text, h.twin.dir.path(), &[]);
    let fingerprinter = fingerprinter();
    let azure = keyflip::azure::Azure::with_options(
        &config,
        fingerprinter.clone(),
        fast_options(),
        &|_: &str| None,
    )
    .unwrap()
    .with_budgets(Arc::new(Budgets::new(
        config.daemon.budget,
        h.clock.clone(),
    )));
    let journal = Journal::open(&h.state_dir().join("journal.db"), &fingerprinter).unwrap();
    Engine::with_options(
        &config,
        azure,
        journal,
        fingerprinter,
        h.clock.clone(),
        EngineOptions {
            defer_unlisted_check: defer,
            ..engine_options()
        },
    )
}

/// A plan of stdatasci001 that lists only its Key Vault secret.
fn partial_plan(h: &Harness, policy: &str) -> keyflip::plan::Plan {
    let vault = h.twin.vault_url("kv-datasci");
    plan_from(&format!(
        "storage_account = \"{}\"\nunlisted = \"{policy}\"\n\n[[key_vault]]\nvault = \"{}\"\nsecret = \"stdatasci001-key\"\nformat = \"raw-key\"\n",
        h.twin.account_id(ACCOUNT),
        vault.as_str().trim_end_matches('/')
    ))
}

fn scheduled() -> RotateRequest {
    RotateRequest::by_daemon(
        Mode::Scheduled,
        Trigger::Schedule {
            reason: "due".into(),
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemons_rotation_puts_discovery_reads_off_and_its_report_says_what_was_not_checked() {
    let mut h = Harness::start().await;
    h.plan = partial_plan(&h, "warn");
    let report = daemon_engine(&h)
        .rotate(&h.plan, scheduled(), &NoProgress, CancellationToken::new())
        .await
        .unwrap();
    let Some(Outcome::Completed { warnings, .. }) = &report.outcome else {
        panic!("{:?}", report.outcome)
    };
    let incomplete: Vec<_> = warnings
        .iter()
        .filter(|w| w.kind == WarningKind::UnlistedCheckIncomplete)
        .collect();
    assert_eq!(incomplete.len(), 1, "{warnings:#?}");
    let text = &incomplete[0].message;
    assert!(text.contains("func-datasci-ingest (put off"), "{text}");
    assert!(text.contains("`keyflip doctor --strict`"), "{text}");
    // Only App Service settings were put off (the GETs fit), and nothing failed.
    assert!(!text.contains("cannot"), "{text}");
    // The report as `--output json` and the daemon's control socket carry it.
    let json = serde_json::to_string(&report).unwrap();
    assert!(json.contains("\"unlisted_check_incomplete\""), "{json}");
    // The consumers the check could read are still named.
    assert!(
        warnings
            .iter()
            .any(|w| w.kind == WarningKind::UnlistedConsumer
                && w.message.contains("stdatasci001-connection-string")),
        "{warnings:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_that_does_not_defer_and_a_refusing_plan_wait_for_the_budget_and_check_everything()
 {
    let mut h = Harness::start().await;
    h.plan = partial_plan(&h, "warn");
    // An engine that does not defer (a standalone `rotate now`; here its dry run,
    // which checks the same way) under the same budget: the settings are read, so the
    // Function app's is named.
    let dry = budgeted_engine(&h, false)
        .dry_run(&h.plan, RotateRequest::manual())
        .await
        .unwrap();
    let text = serde_json::to_string(&dry).unwrap();
    assert!(!text.contains("unlisted_check_incomplete"), "{text}");
    assert!(
        text.contains("func-datasci-ingest AzureWebJobsStorage (holds"),
        "{text}"
    );
    // The daemon's engine running a person's `rotate now` (its dry run here): not put
    // off either, so it prints what the standalone run prints.
    let dry = daemon_engine(&h)
        .dry_run(&h.plan, RotateRequest::manual())
        .await
        .unwrap();
    let through_daemon = serde_json::to_string(&dry).unwrap();
    assert!(
        !through_daemon.contains("unlisted_check_incomplete"),
        "{through_daemon}"
    );
    assert!(
        through_daemon.contains("func-datasci-ingest AzureWebJobsStorage (holds"),
        "{through_daemon}"
    );
    // The daemon's own rotation of a plan that refuses: not put off either, so it is
    // refused over every unlisted consumer, the Function app's included, and never
    // over an incomplete check.
    h.plan = partial_plan(&h, "refuse");
    let before = keys_of(&h.twin.state().await);
    let report = daemon_engine(&h)
        .rotate(&h.plan, scheduled(), &NoProgress, CancellationToken::new())
        .await
        .unwrap();
    match &report.outcome {
        Some(Outcome::Refused { reasons }) => match &reasons[..] {
            [RefusalReason::UnlistedConsumers { consumers }] => {
                assert_eq!(consumers.len(), 7, "{consumers:?}");
                assert!(consumers.iter().any(|c| {
                    c.subject
                        .contains("func-datasci-ingest AzureWebJobsStorage")
                }));
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    assert_eq!(keys_of(&h.twin.state().await), before, "nothing changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_azure_could_not_answer_refuses_a_refusing_plan_before_any_effect_and_warns_otherwise()
 {
    let mut h = Harness::start().await;
    // Only the check lists connection strings (the demo's App Service consumer is an
    // app setting), so this refuses the check's reads and nothing the rotation needs.
    h.twin
        .fault(json!({
            "operation": "web.connectionStrings.list", "count": 0,
            "action": {"kind": "status", "status": 403}
        }))
        .await;
    let demo = demo_plan_text(&h.twin);
    h.plan = plan_from(&format!("unlisted = \"refuse\"\n{demo}"));
    let before = keys_of(&h.twin.state().await);
    let report = h
        .engine()
        .rotate(
            &h.plan,
            RotateRequest::manual(),
            &NoProgress,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    match &report.outcome {
        Some(Outcome::Refused { reasons }) => match &reasons[..] {
            [RefusalReason::UnlistedCheckIncomplete { unchecked }] => {
                assert!(
                    unchecked.iter().all(|u| u.why == Unchecked::Failed),
                    "{unchecked:?}"
                );
                assert!(
                    unchecked
                        .iter()
                        .any(|u| u.subject == "connection strings of func-datasci-ingest"),
                    "{unchecked:?}"
                );
                let text = reasons[0].to_string();
                assert!(text.contains("permission"), "{text}");
                assert!(text.contains("`keyflip doctor --strict`"), "{text}");
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    assert_eq!(keys_of(&h.twin.state().await), before, "nothing changed");
    assert!(
        h.twin
            .requests_for("storage.regenerateKey")
            .await
            .is_empty()
    );
    // The same plan warning instead: the report says what was not checked.
    h.plan = plan_from(&demo);
    let dry = h
        .engine()
        .dry_run(&h.plan, RotateRequest::manual())
        .await
        .unwrap();
    let text = serde_json::to_string(&dry).unwrap();
    assert!(text.contains("unlisted_check_incomplete"), "{text}");
    assert!(
        text.contains("connection strings of func-datasci-ingest"),
        "{text}"
    );
}

/// The same from the command line (standalone): the human report and `--output json`
/// say what was not checked, and a plan that refuses exits 3, the code of any
/// precheck refusal, with nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_now_says_what_the_check_could_not_read_and_a_refusing_plan_exits_3() {
    let cli = Cli::start().await;
    cli.twin
        .fault(json!({
            "operation": "web.connectionStrings.list", "count": 0,
            "action": {"kind": "status", "status": 403}
        }))
        .await;
    let human = cli.run(&["rotate", "now", "demo", "--dry-run"]).await;
    assert_eq!(human.code, Some(0), "{}{}", human.stdout, human.stderr);
    let out = format!("{}{}", human.stdout, human.stderr);
    assert!(
        out.contains("the unlisted-consumer check is incomplete"),
        "{out}"
    );
    assert!(
        out.contains("connection strings of func-datasci-ingest"),
        "{out}"
    );
    assert!(out.contains("`keyflip doctor --strict`"), "{out}");
    let json = cli
        .run(&["rotate", "now", "demo", "--dry-run", "--output", "json"])
        .await;
    assert_eq!(json.code, Some(0), "{}", json.stderr);
    assert!(
        json.stdout.contains("\"unlisted_check_incomplete\""),
        "{}",
        json.stdout
    );

    let plan = cli.dir.path().join("plans/demo.toml");
    let text = std::fs::read_to_string(&plan).unwrap();
    std::fs::write(&plan, format!("unlisted = \"refuse\"\n{text}")).unwrap();
    let before = keys_of(&cli.twin.state().await);
    let refused = cli.run(&["rotate", "now", "demo", "--yes"]).await;
    let out = format!("{}{}", refused.stdout, refused.stderr);
    assert_eq!(refused.code, Some(3), "{out}");
    assert!(
        out.contains("the unlisted-consumer check could not make"),
        "{out}"
    );
    assert_eq!(keys_of(&cli.twin.state().await), before, "nothing changed");
}
