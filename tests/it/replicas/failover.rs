//! Two replicas in one process (two engines, two state directories, one twin world,
//! one Azurite container): one lease per account, the shared journal carries an
//! unfinished rotation from one replica to the other, a replica whose lease was taken
//! records nothing more and sends nothing more, and the coordination account is never
//! rotated.

use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use keyflip::clock::SystemClock;
use keyflip::coordination::{LeaseDuration, LeaseId};
use keyflip::journal::Journal;
use keyflip::rotation::machine::Outcome;
use keyflip::rotation::{
    Engine, EngineError, NoProgress, Progress, ProgressEvent, RotateRequest, RotationReport,
};
use keyflip::secret::Fingerprinter;
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::support::engine::{assert_consumers_valid, engine_options, plan_from, regenerations};
use crate::support::fast_options;

fn engine(shared: &Shared, replica: &str) -> Engine {
    let config = shared.config(replica, 15);
    let fingerprinter =
        Arc::new(Fingerprinter::load_or_create(&config.state_dir.join("fingerprint.key")).unwrap());
    engine_from(&config, fingerprinter)
}

fn engine_from(config: &keyflip::config::Config, fingerprinter: Arc<Fingerprinter>) -> Engine {
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

fn plan(shared: &Shared) -> keyflip::plan::Plan {
    plan_from(&crate::support::engine::demo_plan_text(&shared.twin))
}

fn request(grace: Duration) -> RotateRequest {
    RotateRequest {
        grace: Some(grace),
        ..RotateRequest::manual()
    }
}

/// One `rotate now` of `plan` (1 s grace).
async fn rotate(
    engine: &Engine,
    plan: &keyflip::plan::Plan,
) -> Result<RotationReport, EngineError> {
    engine
        .rotate(
            plan,
            request(Duration::from_secs(1)),
            &NoProgress,
            CancellationToken::new(),
        )
        .await
}

/// `rotate` until the lease is free (another replica's expires or is released).
async fn rotate_when_free(engine: &Engine, plan: &keyflip::plan::Plan) -> RotationReport {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match rotate(engine, plan).await {
            Ok(report) => return report,
            Err(EngineError::Busy { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_one_replica_left_after_staging_is_finished_by_another() {
    let shared = Shared::start().await;
    let plan = plan(&shared);
    let a = engine(&shared, "a");
    a.crash_at(keyflip::failpoint::CrashAt::Named(
        "result:regenerated".into(),
        1,
    ));
    let err = rotate(&a, &plan).await.unwrap_err();
    assert!(matches!(err, EngineError::Crashed { .. }), "{err}");
    assert_eq!(
        regenerations(&shared.twin).await,
        1,
        "the standby was staged"
    );
    let (left_id, _) = a.unfinished().unwrap().pop().expect("A left it unfinished");

    // B never saw it locally: the lease brings it in from the shared journal.
    let b = engine(&shared, "b");
    assert!(b.unfinished().unwrap().is_empty());
    let report = rotate_when_free(&b, &plan).await;
    assert_eq!(
        report.rotation_id, left_id,
        "B finished A's rotation, not a new one"
    );
    assert!(report.resumed);
    assert!(
        matches!(report.outcome, Some(Outcome::Completed { .. })),
        "{:?}",
        report.outcome
    );
    assert_eq!(
        regenerations(&shared.twin).await,
        2,
        "one stage, one retire"
    );
    assert_consumers_valid(&shared.twin.state().await, "after B finished");

    // A, back, learns from the shared journal that it is finished and does nothing.
    let reports = a
        .resume(
            std::slice::from_ref(&plan),
            &NoProgress,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert!(reports.is_empty(), "{reports:?}");
    assert!(a.unfinished().unwrap().is_empty());
    let history = a.history(None, 10).unwrap();
    assert_eq!(history.len(), 1);
    assert!(matches!(
        history[0].outcome,
        Some(Outcome::Completed { .. })
    ));
    assert_eq!(regenerations(&shared.twin).await, 2);
}

/// Signals when the rotation starts its grace wait.
struct OnGrace(std::sync::Mutex<mpsc::Sender<()>>);

impl Progress for OnGrace {
    fn event(&self, event: &ProgressEvent) {
        if matches!(event, ProgressEvent::Waiting { .. }) {
            let _ = self.0.lock().unwrap().send(());
        }
    }
}

/// Starts `engine`'s rotation of `plan` in the background and returns once it waits
/// out its grace period (committed, the old key not yet retired).
async fn rotate_into_grace(
    engine: &Engine,
    plan: &keyflip::plan::Plan,
    grace: Duration,
) -> tokio::task::JoinHandle<Result<RotationReport, EngineError>> {
    let (tx, rx) = mpsc::channel();
    let progress = OnGrace(std::sync::Mutex::new(tx));
    let (engine, plan) = (engine.clone(), plan.clone());
    let task = tokio::spawn(async move {
        engine
            .rotate(&plan, request(grace), &progress, CancellationToken::new())
            .await
    });
    tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60)))
        .await
        .unwrap()
        .expect("the rotation reaches its grace period");
    task
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_lease_was_taken_records_and_sends_nothing_more() {
    let shared = Shared::start().await;
    let plan = plan(&shared);
    let a = engine(&shared, "a");
    let task = rotate_into_grace(&a, &plan, Duration::from_secs(4)).await;
    // An operator (or Azure, after a partition) breaks A's lease and someone else
    // takes it: A's local clock still says it has time.
    let blob = shared.operator_blob();
    let name = keyflip::coordination::blob_name(&plan.storage_account);
    blob.break_lease(&name, 0).await.unwrap();
    let thief = LeaseId(uuid::Uuid::new_v4().to_string());
    blob.acquire(&name, LeaseDuration::Seconds(15), &thief)
        .await
        .unwrap();
    let writes_before = crate::support::engine::writes(&shared.twin).await.len();

    let err = task.await.unwrap().unwrap_err();
    let text = err.to_string();
    assert!(text.contains("lost the lease"), "{text}");
    assert_eq!(
        crate::support::engine::writes(&shared.twin).await.len(),
        writes_before,
        "no Azure write after the lease was taken"
    );
    assert_eq!(
        regenerations(&shared.twin).await,
        1,
        "the old key was not retired by A"
    );
    assert_consumers_valid(&shared.twin.state().await, "after A stopped");

    // Once the lease is free again, another replica finishes from the shared journal.
    blob.release(&name, &thief).await.unwrap();
    let b = engine(&shared, "b");
    let report = rotate_when_free(&b, &plan).await;
    assert!(report.resumed);
    assert!(
        matches!(report.outcome, Some(Outcome::Completed { .. })),
        "{:?}",
        report.outcome
    );
    assert_eq!(regenerations(&shared.twin).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordination_account_itself_is_never_rotated() {
    let shared = Shared::start().await;
    let plan = plan(&shared);
    // Coordination in the very account the plan rotates.
    let endpoint = shared.azurite.blob_endpoint.as_str().replace(
        &format!("/{}/", shared.azurite.account),
        &format!("/{}/", plan.storage_account.name()),
    );
    let text = shared
        .config_text("a", 15)
        .replace(shared.azurite.blob_endpoint.as_str(), &endpoint);
    let config = crate::support::config(&text, std::path::Path::new("/"), &[]);
    let engine = engine_from(&config, Arc::new(Fingerprinter::from_bytes(b"t")));
    let err = engine
        .rotate(
            &plan,
            RotateRequest::manual(),
            &NoProgress,
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("coordination account"), "{text}");
    assert!(text.contains(plan.storage_account.name()), "{text}");
    assert!(
        crate::support::engine::writes(&shared.twin)
            .await
            .is_empty()
    );
    assert!(engine.unfinished().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_another_fingerprint_key_is_refused_before_it_acts() {
    let shared = Shared::start().await;
    let plan = plan(&shared);
    let report = rotate_when_free(&engine(&shared, "a"), &plan).await;
    assert!(matches!(report.outcome, Some(Outcome::Completed { .. })));
    // Replica "c" was set up with its own key instead of the shared one.
    let dir = shared.dir.path().join("state-c");
    std::fs::create_dir_all(&dir).unwrap();
    Fingerprinter::load_or_create(&dir.join("fingerprint.key")).unwrap();
    let writes_before = crate::support::engine::writes(&shared.twin).await.len();
    let err = engine(&shared, "c")
        .rotate(
            &plan,
            request(Duration::from_secs(1)),
            &NoProgress,
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("same fingerprint.key"), "{err}");
    assert_eq!(
        crate::support::engine::writes(&shared.twin).await.len(),
        writes_before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_rotation_another_replica_completed_is_counted_not_repeated() {
    let shared = Shared::start().await;
    let plan = plan(&shared);
    let first = rotate_when_free(&engine(&shared, "a"), &plan).await;
    assert_eq!(regenerations(&shared.twin).await, 2);

    // Replica B's schedule found the plan due at the same time.
    let scheduled = RotateRequest {
        grace: Some(Duration::from_secs(1)),
        ..RotateRequest::by_daemon(
            keyflip::rotation::machine::Mode::Scheduled,
            keyflip::rotation::Trigger::Schedule {
                reason: "cron".into(),
            },
        )
    };
    let b = engine(&shared, "b");
    let counted = b
        .rotate(
            &plan,
            scheduled.clone(),
            &NoProgress,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(counted.rotation_id, first.rotation_id);
    assert!(matches!(counted.outcome, Some(Outcome::Completed { .. })));
    assert_eq!(regenerations(&shared.twin).await, 2, "not rotated twice");

    // `rotate now` is never answered that way: a person asked for a rotation.
    let manual = rotate(&b, &plan).await.unwrap();
    assert_ne!(manual.rotation_id, first.rotation_id);
    assert_eq!(regenerations(&shared.twin).await, 4);
    // And once B knows every rotation, the next due one is a new rotation.
    let next = b
        .rotate(&plan, scheduled, &NoProgress, CancellationToken::new())
        .await
        .unwrap();
    assert_ne!(next.rotation_id, manual.rotation_id);
    assert_eq!(regenerations(&shared.twin).await, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_coordination_storage_is_down_nothing_starts_and_in_flight_work_stops_safely() {
    let mut shared = Shared::start_restartable().await;
    let plan = plan(&shared);
    let a = engine(&shared, "a");
    let task = rotate_into_grace(&a, &plan, Duration::from_secs(6)).await;
    shared.azurite.stop();

    // In flight: A stops at its next step (recording the end of the grace) with every
    // consumer on a valid key, the old key not retired.
    let err = task.await.unwrap().unwrap_err();
    assert!(err.to_string().contains("not recorded"), "{err}");
    assert_eq!(regenerations(&shared.twin).await, 1);
    assert_consumers_valid(&shared.twin.state().await, "storage down");
    // New work: refused, saying why, with nothing sent to Azure.
    let writes_before = crate::support::engine::writes(&shared.twin).await.len();
    let b = engine(&shared, "b");
    let err = rotate(&b, &plan).await.unwrap_err();
    assert!(
        matches!(err, EngineError::Coordination(_)) && err.to_string().contains("network"),
        "{err}"
    );
    assert_eq!(
        crate::support::engine::writes(&shared.twin).await.len(),
        writes_before
    );

    // Storage back: the rotation continues from the shared journal.
    shared.azurite.restart();
    let report = rotate_when_free(&b, &plan).await;
    assert!(report.resumed);
    assert!(
        matches!(report.outcome, Some(Outcome::Completed { .. })),
        "{:?}",
        report.outcome
    );
    assert_eq!(regenerations(&shared.twin).await, 2);
    assert_consumers_valid(&shared.twin.state().await, "after storage returned");
}
