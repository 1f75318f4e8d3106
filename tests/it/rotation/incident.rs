//! Incident rotations (`--leaked`): each mode kills what leaked, disables Key Vault
//! versions that hold a leaked value, and writes an incident report. They run on the
//! demo world and plan, whose ML workspace takes the account's newest key on resync.

use keyflip::key::KeyName;
use keyflip::rotation::machine::{
    Action, ConsumerKind, ConsumerStatus, Mode, Outcome, Purpose, Route,
};
use keyflip::rotation::{NoProgress, RotateRequest, RotationReport, Trigger};
use tokio_util::sync::CancellationToken;

use crate::support::engine::{
    Harness, assert_consumers_valid, consumer_keys, demo_plan_text, keys_of, plan_from,
    regenerations, versions,
};
use crate::support::twin::{TestTwin, WORKSPACE};

fn leaked(mode: Mode) -> RotateRequest {
    RotateRequest {
        mode,
        grace: None,
        trigger: Trigger::Incident,
        by: None,
    }
}

async fn run(h: &Harness, mode: Mode) -> RotationReport {
    h.engine()
        .rotate(&h.plan, leaked(mode), &NoProgress, CancellationToken::new())
        .await
        .unwrap()
}

/// The demo world with key1 regenerated after key2: the leaked key is the account's
/// newest, the one a workspace resync takes unless keyflip makes a newer one.
fn leaked_key_newest() -> TestTwin {
    let text = TestTwin::demo_world_text().replacen(
        "name = \"stdatasci001\"\n",
        "name = \"stdatasci001\"\nkey1_created = \"2026-06-01T00:00:00Z\"\nkey2_created = \"2026-01-01T00:00:00Z\"\n",
        1,
    );
    TestTwin::start_from(&text)
}

/// Where `operation` first appears in the request log.
fn first(log: &[serde_json::Value], operation: &str) -> usize {
    log.iter()
        .position(|e| e["operation"] == operation)
        .unwrap_or_else(|| panic!("no {operation} in the request log"))
}

/// Every Key Vault version holding `leaked` is disabled, every other one enabled.
fn assert_only_leaked_versions_disabled(state: &serde_json::Value, leaked: &str) {
    for secret in ["stdatasci001-key", "stdatasci001-connection-string"] {
        for (version, value, enabled) in versions(state, secret) {
            assert_eq!(enabled, value != leaked, "{secret}/{version}");
        }
    }
}

fn assert_report(report: &RotationReport) -> String {
    let paths = report.incident_report.as_ref().expect("an incident report");
    let md = std::fs::read_to_string(&paths.markdown).unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&paths.json).unwrap()).unwrap();
    assert!(
        md.contains("stopped working when that key was regenerated"),
        "{md}"
    );
    assert!(md.contains("allowSharedKeyAccess=false"), "{md}");
    assert_eq!(json["rotation_id"], report.rotation_id.as_str());
    assert!(json["sas_warning"].as_str().unwrap().contains("SAS"));
    assert!(!json["timeline"].as_array().unwrap().is_empty());
    md
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaked_standby_is_regenerated_and_no_consumer_is_touched() {
    let h = Harness::start().await;
    let before = h.twin.state().await;
    let report = run(
        &h,
        Mode::Leaked {
            key: KeyName::Key2,
            revoke_first: false,
        },
    )
    .await;
    assert!(
        matches!(
            report.outcome,
            Some(Outcome::Completed {
                active: KeyName::Key1,
                ..
            })
        ),
        "{:#?}",
        report.outcome
    );
    let state = h.twin.state().await;
    let (k1, k2) = (keys_of(&before), keys_of(&state));
    assert_eq!(k2.0, k1.0, "key1 untouched");
    assert_ne!(k2.1, k1.1, "the leaked key2 is dead");
    assert_eq!(state["ml_workspaces"], before["ml_workspaces"]);
    assert_eq!(
        state["databricks_workspaces"],
        before["databricks_workspaces"]
    );
    assert_eq!(
        versions(&state, "stdatasci001-key").len(),
        1,
        "no new version"
    );
    assert_eq!(regenerations(&h.twin).await, 1);
    let md = assert_report(&report);
    assert!(md.contains("key2 (revoke)"), "{md}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaked_active_key_is_swapped_to_a_freshly_staged_standby_and_retired_at_once() {
    // The plain demo: the ML workspace is a consumer (resync on), so the standby is
    // staged first, since a resync takes the newest key and the existing key2 is not.
    let h = Harness::start().await;
    let before = keys_of(&h.twin.state().await);
    let report = run(
        &h,
        Mode::Leaked {
            key: KeyName::Key1,
            revoke_first: false,
        },
    )
    .await;
    assert!(
        matches!(
            report.outcome,
            Some(Outcome::Completed {
                active: KeyName::Key2,
                ..
            })
        ),
        "{:#?}",
        report.outcome
    );
    assert_eq!(
        report.decision.map(|d| d.route),
        Some(Route::LeakedActive {
            revoke_first: false,
            stage_standby: true
        })
    );
    let state = h.twin.state().await;
    let (key1, key2) = keys_of(&state);
    assert_ne!(key2, before.1, "the standby was staged");
    assert_ne!(key1, before.0, "the leaked key is dead");
    for (consumer, held) in assert_consumers_valid(&state, "after") {
        assert_eq!(held, key2, "{consumer}");
    }
    assert_only_leaked_versions_disabled(&state, &before.0);
    assert_eq!(regenerations(&h.twin).await, 2);
    let regenerated: Vec<_> = report
        .regenerated
        .iter()
        .map(|r| (r.key, r.purpose))
        .collect();
    assert_eq!(
        regenerated,
        vec![
            (KeyName::Key2, Purpose::Stage),
            (KeyName::Key1, Purpose::Retire)
        ]
    );
    let log = h.twin.requests().await;
    assert!(first(&log, "storage.regenerateKey") < first(&log, "ml.workspace.resyncKeys"));
    assert!(
        report.steps.iter().all(|s| s.kind != "wait_until"),
        "no grace"
    );
    let md = assert_report(&report);
    assert!(
        md.contains("key2 staged, was") && md.contains("key1 revoked, was"),
        "{md}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_workspace_a_leaked_active_key_is_swapped_to_the_existing_standby() {
    let mut h = Harness::start().await;
    // No workspace resync: every consumer takes the key keyflip gives it, so the
    // existing standby is used as it is.
    h.plan = plan_from(&demo_plan_text(&h.twin).replace("resync = true", "resync = false"));
    let before = keys_of(&h.twin.state().await);
    let report = run(
        &h,
        Mode::Leaked {
            key: KeyName::Key1,
            revoke_first: false,
        },
    )
    .await;
    assert!(
        matches!(
            report.outcome,
            Some(Outcome::Completed {
                active: KeyName::Key2,
                ..
            })
        ),
        "{:#?}",
        report.outcome
    );
    assert_eq!(
        report.decision.map(|d| d.route),
        Some(Route::LeakedActive {
            revoke_first: false,
            stage_standby: false
        })
    );
    let state = h.twin.state().await;
    let (key1, key2) = keys_of(&state);
    assert_eq!(
        key2, before.1,
        "the existing standby was used, not regenerated"
    );
    assert_ne!(key1, before.0, "the leaked key is dead");
    for (consumer, held) in consumer_keys(&state) {
        if consumer != "workspace" {
            assert_eq!(held, key2, "{consumer}");
        }
    }
    assert_only_leaked_versions_disabled(&state, &before.0);
    assert_eq!(regenerations(&h.twin).await, 1);
    assert_report(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_first_kills_the_leaked_key_then_moves_every_consumer_to_its_fresh_value() {
    // The plain demo, workspace resync included: after the revoke key1's fresh value
    // is the newest key, the one the resync takes, and the one keyflip binds.
    let h = Harness::start().await;
    let before = keys_of(&h.twin.state().await);
    let report = run(
        &h,
        Mode::Leaked {
            key: KeyName::Key1,
            revoke_first: true,
        },
    )
    .await;
    assert!(
        matches!(
            report.outcome,
            Some(Outcome::Completed {
                active: KeyName::Key1,
                ..
            })
        ),
        "{:#?}",
        report.outcome
    );
    let log = h.twin.requests().await;
    let revoke = first(&log, "storage.regenerateKey");
    for write in [
        "keyvault.set",
        "ml.datastore.put",
        "ml.workspace.resyncKeys",
        "databricks.put",
    ] {
        assert!(revoke < first(&log, write), "{write} before the revoke");
    }
    let state = h.twin.state().await;
    let (key1, key2) = keys_of(&state);
    assert_ne!(key1, before.0, "the leaked value is dead");
    assert_eq!(key2, before.1, "the standby is untouched");
    for (consumer, held) in assert_consumers_valid(&state, "after") {
        assert_eq!(held, key1, "{consumer} on key1's fresh value");
    }
    assert_only_leaked_versions_disabled(&state, &before.0);
    assert_eq!(regenerations(&h.twin).await, 1);

    // The report says which key died when and which key consumers ended on.
    let decision = report.decision.expect("decided");
    assert_eq!(
        (decision.route, decision.active, decision.standby),
        (
            Route::LeakedActive {
                revoke_first: true,
                stage_standby: false
            },
            KeyName::Key1,
            KeyName::Key2
        )
    );
    let [revoked] = report.regenerated.as_slice() else {
        panic!("{:#?}", report.regenerated)
    };
    assert_eq!(
        (revoked.key, revoked.purpose),
        (KeyName::Key1, Purpose::Revoke)
    );
    let (keys_before, keys_after) = (report.keys_before.unwrap(), report.keys_after.unwrap());
    assert_eq!(revoked.before, keys_before.key1.fingerprint);
    assert_eq!(revoked.after, keys_after.key1.fingerprint);
    assert_eq!(keys_after.key2, keys_before.key2);
    for c in &report.consumers {
        assert_eq!(
            c.status,
            ConsumerStatus::Verified { key: KeyName::Key1 },
            "{}",
            c.consumer
        );
    }
    // The keys alone were read before the revoke, the consumers after it, and the
    // fresh value was checked on the data plane before anyone was bound to it; the
    // standby was never probed (nobody moves to it); every bind names that value.
    let at = |what: fn(&Action) -> bool| {
        report
            .steps
            .iter()
            .position(|s| what(&s.command))
            .expect("such a step")
    };
    assert!(
        !report.steps.iter().any(|s| matches!(
            s.command,
            Action::VerifyKey {
                key: KeyName::Key2,
                ..
            } | Action::Observe
        )),
        "{:#?}",
        report.steps
    );
    let keys_read = at(|a| matches!(a, Action::ObserveKeys));
    let consumers_read = at(|a| matches!(a, Action::ObserveAfterRevoke { .. }));
    let revoke = at(|a| {
        matches!(
            a,
            Action::Regenerate {
                purpose: Purpose::Revoke,
                ..
            }
        )
    });
    let verify_fresh = at(|a| {
        matches!(
            a,
            Action::VerifyKey {
                key: KeyName::Key1,
                ..
            }
        )
    });
    let first_bind = at(|a| matches!(a, Action::Bind { .. }));
    assert!(
        keys_read < revoke
            && revoke < consumers_read
            && consumers_read < verify_fresh
            && verify_fresh < first_bind
    );
    for s in &report.steps {
        if let Action::Bind {
            key, fingerprint, ..
        } = &s.command
        {
            assert_eq!(
                (*key, *fingerprint),
                (KeyName::Key1, revoked.after),
                "{}",
                s.step
            );
        }
    }
    let outcome = report.outcome.as_ref().unwrap().to_string();
    assert!(
        outcome.contains(&format!("its new value {}", revoked.after)),
        "{outcome}"
    );
    let md = assert_report(&report);
    assert!(md.contains("key1 (revoke)"), "{md}");
    // The key name is the leaked one, so the report must name the new value.
    assert!(
        md.contains(&format!("now holds key1 ({})", revoked.after)),
        "{md}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_keys_leaked_ends_with_two_new_keys_and_no_leaked_version_enabled() {
    let h = Harness::start().await;
    let before = keys_of(&h.twin.state().await);
    let report = run(&h, Mode::LeakedBoth).await;
    assert!(
        matches!(
            report.outcome,
            Some(Outcome::Completed {
                active: KeyName::Key2,
                ..
            })
        ),
        "{:#?}",
        report.outcome
    );
    let state = h.twin.state().await;
    let (key1, key2) = keys_of(&state);
    assert_ne!(key1, before.0);
    assert_ne!(key2, before.1);
    for (consumer, held) in assert_consumers_valid(&state, "after") {
        assert_eq!(held, key2, "{consumer}");
    }
    for secret in ["stdatasci001-key", "stdatasci001-connection-string"] {
        for (version, value, enabled) in versions(&state, secret) {
            if value == before.0 || value == before.1 {
                assert!(!enabled, "{secret}/{version} holds a leaked value");
            } else {
                assert!(enabled, "{secret}/{version}");
            }
        }
    }
    assert_eq!(regenerations(&h.twin).await, 2);
    let md = assert_report(&report);
    assert!(md.contains("Key Vault versions disabled"), "{md}");
    assert!(md.contains("kv-datasci/secrets/stdatasci001-key"), "{md}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_ends_on_the_staged_standby_even_when_the_leaked_key_is_the_newest() {
    // The worst case for a resync: the leaked key1 is the account's newest key. Moving
    // to the existing key2 would have the workspace take key1 back; the staged key2 is
    // newer still, and the workspace ends on it.
    let h = Harness::with_twin(leaked_key_newest()).await;
    let before = h.twin.state().await;
    let (leaked, _) = keys_of(&before);
    assert_eq!(before["ml_workspaces"][WORKSPACE]["userStorageKey"], leaked);
    let report = run(
        &h,
        Mode::Leaked {
            key: KeyName::Key1,
            revoke_first: false,
        },
    )
    .await;
    assert_eq!(
        report.exit(),
        keyflip::exit::Exit::Ok,
        "{:#?}",
        report.outcome
    );
    let state = h.twin.state().await;
    let (key1, key2) = keys_of(&state);
    assert_ne!(key1, leaked);
    assert_eq!(state["ml_workspaces"][WORKSPACE]["userStorageKey"], key2);
    let workspace = report
        .consumers
        .iter()
        .find(|c| c.consumer.kind() == ConsumerKind::Workspace)
        .expect("the workspace is a consumer");
    assert_eq!(
        workspace.status,
        ConsumerStatus::Verified { key: KeyName::Key2 }
    );
    assert_consumers_valid(&state, "after");
}

/// Injected latency on every call the path up to the revoke may make, so concurrent
/// calls answer together and sequential ones `LATENCY` apart.
const LATENCY_MS: u64 = 200;

/// `--revoke-first` kills the leaked key in three sequential round trips, counted from
/// the twin's request log as the bench counts them (answers less than half the
/// injected latency apart are one wave): the tokens; the account's permissions, the
/// account and `listKeys` together; the revoke. No consumer is read before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_first_revokes_after_three_round_trips_and_reads_no_consumer_before() {
    let h = Harness::start().await;
    for op in [
        "entra.token",
        "entra.discovery",
        "authz.permissions",
        "authz.roleDefinition",
        "storage.get",
        "storage.listKeys",
        "storage.regenerateKey",
    ] {
        h.twin
            .fault(serde_json::json!({"operation": op, "count": 0,
                "action": {"kind": "latency", "ms": LATENCY_MS}}))
            .await;
    }
    let report = run(
        &h,
        Mode::Leaked {
            key: KeyName::Key1,
            revoke_first: true,
        },
    )
    .await;
    assert!(
        matches!(report.outcome, Some(Outcome::Completed { .. })),
        "{:#?}",
        report.outcome
    );
    let log = h.twin.requests().await;
    let revoke = first(&log, "storage.regenerateKey");
    let before = &log[..=revoke];
    let allowed = [
        "entra.token",
        "entra.discovery",
        "authz.permissions",
        "authz.roleDefinition",
        "storage.get",
        "storage.listKeys",
        "storage.regenerateKey",
    ];
    for e in before {
        assert!(
            allowed.contains(&e["operation"].as_str().unwrap_or("")),
            "{} before the revoke: {before:#?}",
            e["operation"]
        );
    }
    for needed in ["authz.permissions", "storage.get", "storage.listKeys"] {
        assert!(before.iter().any(|e| e["operation"] == needed), "{needed}");
    }
    let mut times: Vec<chrono::DateTime<chrono::Utc>> = before
        .iter()
        .map(|e| e["at"].as_str().unwrap().parse().unwrap())
        .collect();
    times.sort();
    let gap = chrono::TimeDelta::milliseconds((LATENCY_MS / 2) as i64);
    let waves = times.windows(2).filter(|w| w[1] - w[0] > gap).count() + 1;
    assert_eq!(waves, 3, "{before:#?}");
    // The consumers were read after the revoke, and the usual path followed it.
    let after = &log[revoke..];
    assert!(after.iter().any(|e| e["operation"] == "keyvault.get"));
    assert!(first(&log, "keyvault.set") > revoke);
}

/// One truth: `--dry-run` of a revoke first lists the steps the real run then takes,
/// in the same order: the keys read, the revoke, the consumers read, then the move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_first_dry_run_lists_the_order_the_real_run_takes() {
    let cli = crate::support::binary::Cli::start().await;
    // After an incident without revoke first, consumers are on key2.
    let first = cli
        .run(&[
            "rotate", "now", "demo", "--leaked", "key1", "--yes", "--output", "json",
        ])
        .await;
    assert_eq!(first.code, Some(0), "{}\n{}", first.stdout, first.stderr);
    let args = [
        "rotate",
        "now",
        "demo",
        "--leaked",
        "key2",
        "--revoke-first",
        "--yes",
        "--output",
        "json",
    ];
    let kinds = |doc: &serde_json::Value| -> Vec<String> {
        doc["steps"]
            .as_array()
            .unwrap_or_else(|| panic!("{doc:#}"))
            .iter()
            .map(|s| s["kind"].as_str().unwrap().to_owned())
            .filter(|k| k != "finish")
            .collect()
    };
    let mut dry_args = args.to_vec();
    dry_args.push("--dry-run");
    let dry = cli.run(&dry_args).await;
    assert_eq!(dry.code, Some(0), "{}\n{}", dry.stdout, dry.stderr);
    let planned = kinds(&dry.json());
    assert_eq!(
        &planned[..4],
        [
            "observe_keys",
            "regenerate",
            "observe_after_revoke",
            "verify_key"
        ],
        "{planned:?}"
    );
    assert_eq!(
        regenerations(&cli.twin).await,
        2,
        "a dry run changes nothing"
    );
    let real = cli.run(&args).await;
    assert_eq!(real.code, Some(0), "{}\n{}", real.stdout, real.stderr);
    assert_eq!(kinds(&real.json()), planned);
    // And the plan rotates as usual from there.
    let next = cli
        .run(&[
            "rotate", "now", "demo", "--yes", "--grace", "0s", "--output", "json",
        ])
        .await;
    assert_eq!(next.code, Some(0), "{}\n{}", next.stdout, next.stderr);
}
