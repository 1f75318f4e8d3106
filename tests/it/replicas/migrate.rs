//! `keyflip coordination import-journal`: a single-node keyflip's journal, with a
//! rotation a crash left unfinished after staging the standby, is copied into
//! coordination storage, and a replica that never saw it finishes that rotation from
//! the shared journal (one stage, one retire: no second regeneration).

use std::sync::Arc;
use std::time::{Duration, Instant};

use keyflip::clock::SystemClock;
use keyflip::journal::Journal;
use keyflip::rotation::machine::Outcome;
use keyflip::rotation::{Engine, EngineError, NoProgress, RotateRequest, RotationReport};
use keyflip::secret::Fingerprinter;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::processes::keyflip;
use super::truth::json;
use crate::support::engine::{assert_consumers_valid, engine_options, plan_from, regenerations};
use crate::support::fast_options;

fn engine_of(config: &keyflip::config::Config) -> Engine {
    let fingerprinter =
        Arc::new(Fingerprinter::load_or_create(&config.state_dir.join("fingerprint.key")).unwrap());
    let azure = keyflip::azure::Azure::with_options(
        config,
        fingerprinter.clone(),
        fast_options(),
        &|_: &str| None,
    )
    .unwrap();
    let journal = Journal::open(&config.state_dir.join("journal.db"), &fingerprinter).unwrap();
    Engine::with_options(
        config,
        azure,
        journal,
        fingerprinter,
        Arc::new(SystemClock),
        engine_options(),
    )
}

async fn rotate(
    engine: &Engine,
    plan: &keyflip::plan::Plan,
) -> Result<RotationReport, EngineError> {
    engine
        .rotate(
            plan,
            RotateRequest {
                grace: Some(Duration::from_secs(1)),
                ..RotateRequest::manual()
            },
            &NoProgress,
            CancellationToken::new(),
        )
        .await
}

#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_single_node_rotation_moved_into_coordination_storage_is_resumed_by_a_replica()
 {
    let shared = Shared::start().await;
    let plan = plan_from(&crate::support::engine::demo_plan_text(&shared.twin));
    // The single-node keyflip: the same settings without [coordination].
    let text = shared.config_text("solo", 15);
    let single = text.split("\n[coordination]").next().unwrap();
    let config = crate::support::config(single, std::path::Path::new("/"), &[]);
    assert!(config.coordination.is_none());
    let solo = engine_of(&config);
    // A finished rotation, then one a crash leaves right after staging the standby.
    let first = rotate(&solo, &plan).await.unwrap();
    assert!(matches!(first.outcome, Some(Outcome::Completed { .. })));
    solo.crash_at(keyflip::failpoint::CrashAt::Named(
        "result:regenerated".into(),
        1,
    ));
    let err = rotate(&solo, &plan).await.unwrap_err();
    assert!(matches!(err, EngineError::Crashed { .. }), "{err}");
    assert_eq!(regenerations(&shared.twin).await, 3, "two, then the stage");
    let (left, _) = solo.unfinished().unwrap().pop().unwrap();
    drop(solo);

    // Moved into coordination storage with the documented command ("solo" now has
    // [coordination] in its keyflip.toml).
    let imported = json(&shared, "solo", &["coordination", "import-journal"]).await;
    let accounts = imported["accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 1, "{imported}");
    assert_eq!(
        accounts[0]["added"],
        serde_json::json!([first.rotation_id, left]),
        "{imported}"
    );
    assert_eq!(accounts[0]["unfinished"], left.as_str());
    // Again: nothing more to copy.
    let again = json(&shared, "solo", &["coordination", "import-journal"]).await;
    assert_eq!(again["accounts"][0]["added"], serde_json::json!([]));
    // Every machine's history shows both rotations now.
    let history = json(&shared, "fresh", &["history"]).await;
    let ids: Vec<&str> = history["rotations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rotation_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [left.as_str(), first.rotation_id.as_str()]);

    // A replica that never saw it finishes it: the same rotation, no second stage.
    let b = engine_of(&shared.config("b", 15));
    assert!(b.unfinished().unwrap().is_empty());
    let deadline = Instant::now() + Duration::from_secs(60);
    let report = loop {
        match rotate(&b, &plan).await {
            Ok(report) => break report,
            Err(EngineError::Busy { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(report.rotation_id, left, "B resumed the imported rotation");
    assert!(report.resumed);
    assert!(
        matches!(report.outcome, Some(Outcome::Completed { .. })),
        "{:?}",
        report.outcome
    );
    assert_eq!(regenerations(&shared.twin).await, 4, "then only the retire");
    assert_consumers_valid(&shared.twin.state().await, "after B finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_without_coordination_or_with_a_local_rotation_running_is_refused() {
    let shared = Shared::start().await;
    // No [coordination]: a usage error naming it.
    let text = shared.config_text("solo", 15);
    let single = text.split("\n[coordination]").next().unwrap().to_owned();
    let path = shared.dir.path().join("single.toml");
    std::fs::write(&path, &single).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyflip"))
        .arg("--config")
        .arg(&path)
        .args(["coordination", "import-journal"])
        .env("RUNTIME_DIRECTORY", shared.dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("[coordination]"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A journal whose account a local process holds (a rotation in flight): busy, and
    // nothing reaches coordination storage.
    let plan = plan_from(&crate::support::engine::demo_plan_text(&shared.twin));
    let config = crate::support::config(&single, std::path::Path::new("/"), &[]);
    let solo = engine_of(&config);
    assert!(matches!(
        rotate(&solo, &plan).await.unwrap().outcome,
        Some(Outcome::Completed { .. })
    ));
    let _lock =
        keyflip::journal::lock::AccountLock::acquire(&config.state_dir, &plan.storage_account)
            .unwrap();
    let mut cmd = keyflip(&shared, "solo", &["coordination", "import-journal"]);
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let blob = shared.operator_blob();
    assert!(
        blob.get(&keyflip::coordination::blob_name(&plan.storage_account))
            .await
            .unwrap()
            .is_none(),
        "nothing was copied"
    );
}
