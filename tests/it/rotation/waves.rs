//! Which calls go out together, read from the twin's request log (calls and their
//! order, never time): the consumers the plan names are read while the observation's
//! first wave is still out (a vault's 401 challenge included); an App Service setting's
//! first listing goes out beside the other binds, its listing after the PUT is the
//! verification's, and its lost-update guard still catches another writer on either
//! side of keyflip's PUT. Latency faults hold one call open so that the order in the
//! log says what was in flight together.

use keyflip::key::KeyName;
use keyflip::rotation::machine::{Mode, Outcome};
use keyflip::rotation::{NoProgress, RotateRequest, RotationReport, Trigger};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::support::engine::{Harness, account_key, assert_consumers_valid, keys_of};
use crate::support::twin::{FUNCTION_APP, OPERATOR, TestTwin};

const DEPLOYER: &str = "deployer";
const SETTING: &str = "AzureWebJobsStorage";

async fn rotate(h: &Harness, request: RotateRequest) -> RotationReport {
    h.engine()
        .rotate(&h.plan, request, &NoProgress, CancellationToken::new())
        .await
        .unwrap()
}

fn leaked_key1() -> RotateRequest {
    RotateRequest {
        mode: Mode::Leaked {
            key: KeyName::Key1,
            revoke_first: false,
        },
        grace: None,
        trigger: Trigger::Incident,
        by: None,
    }
}

/// Where the first answer of `operation` (with `status`, when given) is in the log.
fn first(log: &[Value], operation: &str, status: Option<u64>) -> usize {
    log.iter()
        .position(|e| {
            e["operation"] == operation && status.is_none_or(|s| e["status"].as_u64() == Some(s))
        })
        .unwrap_or_else(|| panic!("no {operation} ({status:?}) in the request log"))
}

/// keyflip's answered calls of `operation` before position `end` of the log.
fn count_before(log: &[Value], operation: &str, end: usize) -> usize {
    log[..end]
        .iter()
        .filter(|e| e["operation"] == operation && e["principal"] == OPERATOR)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_named_consumers_hold_is_read_while_the_observation_is_out() {
    let h = Harness::start().await;
    // The observation's listKeys answers after 1.5 s: every read that goes out beside
    // it is answered first.
    h.twin
        .fault(json!({"operation": "storage.listKeys", "count": 1,
            "action": {"kind": "latency", "ms": 1500}}))
        .await;
    let report = rotate(&h, leaked_key1()).await;
    assert!(
        matches!(report.outcome, Some(Outcome::Completed { .. })),
        "{:#?}",
        report.outcome
    );
    let log = h.twin.requests().await;
    let keys = first(&log, "storage.listKeys", Some(200));
    // The vault's challenge and the read it was for, both inside the first wave.
    assert!(first(&log, "keyvault.get", Some(401)) < keys);
    assert!(first(&log, "keyvault.get", Some(200)) < keys);
    for read in [
        "ml.workspace.listKeys",
        "databricks.scopes",
        "web.appSettings.list",
        "datafactory.linkedService.get",
    ] {
        assert!(first(&log, read, None) < keys, "{read} waited for listKeys");
    }
    // Discovered datastores are read once the list that found them is in.
    assert!(first(&log, "ml.datastore.list", None) < first(&log, "ml.datastore.listSecrets", None));
    for (consumer, held) in assert_consumers_valid(&h.twin.state().await, "after") {
        assert_eq!(held, keys_of(&h.twin.state().await).1, "{consumer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_setting_is_listed_beside_the_other_binds_and_verified_by_the_listing_after_its_put()
{
    let h = Harness::start().await;
    // The datastores' PUTs (among the binds) answer after a second.
    h.twin
        .fault(json!({"operation": "ml.datastore.put", "count": 0,
            "action": {"kind": "latency", "ms": 1000}}))
        .await;
    let report = rotate(&h, leaked_key1()).await;
    assert!(
        matches!(report.outcome, Some(Outcome::Completed { .. })),
        "{:#?}",
        report.outcome
    );
    let log = h.twin.requests().await;
    let list = "web.appSettings.list";
    // The observation's read, then the write's first listing while the datastores
    // are still being written.
    assert_eq!(
        count_before(&log, list, first(&log, "ml.datastore.put", None)),
        2
    );
    // The PUT goes after every other bind answered, right after a second listing.
    let put = first(&log, "web.appSettings.put", Some(200));
    let last_datastore_put = log
        .iter()
        .rposition(|e| e["operation"] == "ml.datastore.put")
        .expect("datastore PUTs");
    assert!(last_datastore_put < put, "the setting is written last");
    assert_eq!(count_before(&log, list, put), 3);
    // No listing of its own after the PUT: the verification's (what it holds, and
    // that keyflip's value stayed) are the only ones before the workspace resync.
    let resync = first(&log, "ml.workspace.resyncKeys", None);
    assert_eq!(count_before(&log, list, resync) - 3, 2);
    assert_eq!(
        count_before(&log, "web.appSettings.put", log.len()),
        1,
        "one PUT"
    );
}

/// The demo world plus a second writer of the Function app's settings.
fn with_deployer() -> TestTwin {
    let site = "/subscriptions/3c9e5b1d-2a4f-4e6b-9c8d-0f1e2d3c4b5a/resourceGroups/rg-datascience/providers/Microsoft.Web/sites/func-datasci-ingest";
    TestTwin::start_with(&format!(
        "[[principal]]\nname = \"{DEPLOYER}\"\nclient_id = \"7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d\"\nobject_id = \"8b2c3d4e-5f6a-4b7c-9d8e-0f1a2b3c4d5e\"\n\n[[role_assignment]]\nprincipal = \"{DEPLOYER}\"\nrole = \"Website Contributor\"\nscope = \"{site}\"\n"
    ))
}

/// keyflip's listings of the settings wait a second each; the deployer's do not.
async fn slow_listings(twin: &TestTwin) {
    twin.fault(
        json!({"operation": "web.appSettings.list", "principal": OPERATOR, "count": 0,
        "action": {"kind": "latency", "ms": 1000}}),
    )
    .await;
}

fn app_settings(state: &Value) -> &Value {
    &state["web_apps"][FUNCTION_APP]["appSettings"]
}

async fn keyflip_puts(twin: &TestTwin) -> usize {
    twin.requests_for("web.appSettings.put")
        .await
        .iter()
        .filter(|e| e["principal"] == OPERATOR && e["status"] == 200)
        .count()
}

/// A deployment: list, change `name`, PUT the whole collection.
async fn deploy(twin: &TestTwin, name: &str, value: &str) {
    let site = keyflip::azure::web::SiteRef::new(&twin.site_id(FUNCTION_APP), None);
    let deployer = twin.azure(DEPLOYER);
    let collection = keyflip::azure::web::Collection::AppSettings;
    let mut settings = deployer.web_settings(&site, collection).await.unwrap();
    settings.0.insert(
        name.to_owned(),
        keyflip::azure::web::Setting {
            value: keyflip::secret::StorageKey::new(value.to_owned()),
            conn_type: None,
        },
    );
    deployer
        .put_web_settings(&site, collection, &settings)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setting_changed_between_the_listing_beside_the_binds_and_the_put_is_kept() {
    let h = Harness::with_twin(with_deployer()).await;
    slow_listings(&h.twin).await;
    let (report, ()) = tokio::join!(rotate(&h, RotateRequest::manual()), async {
        // keyflip's listings: the observation's, the one beside the binds, and the one
        // right before the PUT, which is waiting now: a deployment lands before it.
        h.twin.fired("web.appSettings.list", 3).await;
        deploy(&h.twin, "BUILD", "2026.12.1").await;
    });
    assert!(
        matches!(report.outcome, Some(Outcome::Completed { .. })),
        "{:#?}",
        report.outcome
    );
    let state = h.twin.state().await;
    let settings = app_settings(&state);
    assert_eq!(
        settings["BUILD"], "2026.12.1",
        "the deployer's setting survived"
    );
    assert_eq!(
        account_key(settings[SETTING].as_str().unwrap()),
        keys_of(&state).1,
        "keyflip's value was written after it started over"
    );
    assert_eq!(
        keyflip_puts(&h.twin).await,
        1,
        "one PUT, once the listings agreed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_undoes_keyflips_right_after_its_put_fails_the_verification_and_rolls_back() {
    let h = Harness::with_twin(with_deployer()).await;
    let before = keys_of(&h.twin.state().await);
    slow_listings(&h.twin).await;
    let (report, ()) = tokio::join!(rotate(&h, RotateRequest::manual()), async {
        // The deployer reads while keyflip is about to write (so it sees key1)...
        h.twin.fired("web.appSettings.list", 3).await;
        let site = keyflip::azure::web::SiteRef::new(&h.twin.site_id(FUNCTION_APP), None);
        let collection = keyflip::azure::web::Collection::AppSettings;
        let deployer = h.twin.azure(DEPLOYER);
        let mut stale = deployer.web_settings(&site, collection).await.unwrap();
        // ...and writes after keyflip's PUT, while keyflip's verification waits.
        while keyflip_puts(&h.twin).await == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        stale.0.insert(
            "BUILD".into(),
            keyflip::azure::web::Setting {
                value: keyflip::secret::StorageKey::new("2026.12.2".into()),
                conn_type: None,
            },
        );
        deployer
            .put_web_settings(&site, collection, &stale)
            .await
            .unwrap();
    });
    // Caught: not completed with the app on the old key behind keyflip's back.
    let Some(Outcome::RolledBack { cause, .. }) = &report.outcome else {
        panic!("{:#?}", report.outcome)
    };
    assert!(
        cause.to_string().contains("right after keyflip's PUT"),
        "{cause}"
    );
    let state = h.twin.state().await;
    assert_eq!(keys_of(&state).0, before.0, "the old key lives");
    for (consumer, held) in assert_consumers_valid(&state, "after") {
        assert_eq!(held, before.0, "{consumer} back on key1");
    }
    let settings = app_settings(&state);
    assert_eq!(
        settings["BUILD"], "2026.12.2",
        "the deployer's setting survived"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incidents_one_after_another_then_a_plain_rotation_all_complete() {
    // The bench's sequence on one world: each ends with every consumer on one
    // working key, so the next one starts from a clean observation.
    let h = Harness::start().await;
    for request in [
        leaked_key1(),
        RotateRequest {
            mode: Mode::Leaked {
                key: KeyName::Key2,
                revoke_first: false,
            },
            ..leaked_key1()
        },
        RotateRequest {
            mode: Mode::Leaked {
                key: KeyName::Key1,
                revoke_first: true,
            },
            ..leaked_key1()
        },
        RotateRequest {
            mode: Mode::Leaked {
                key: KeyName::Key1,
                revoke_first: true,
            },
            ..leaked_key1()
        },
        RotateRequest {
            grace: Some(std::time::Duration::ZERO),
            ..RotateRequest::manual()
        },
    ] {
        let mode = format!("{:?}", request.mode);
        let report = rotate(&h, request).await;
        assert!(
            matches!(report.outcome, Some(Outcome::Completed { .. })),
            "{mode}: {:#?}",
            report.outcome
        );
        assert_consumers_valid(&h.twin.state().await, &mode);
    }
}
