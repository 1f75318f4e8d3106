//! App Service settings and Data Factory linked services in whole rotations: a Key
//! Vault reference is no consumer and is refused when listed; a linked service someone
//! else wrote after keyflip is unknown (its value reads back masked) and is rewritten;
//! a failed or unclear settings write; a failed or unclear linked service write (its
//! value reads back masked, so the rollback writes it and journals the etag); a
//! connection string keeps everything but its key.

use keyflip::consumer::ConsumerId;
use keyflip::key::KeyName;
use keyflip::rotation::machine::{Holding, Outcome, RefusalReason};
use keyflip::rotation::{NoProgress, RotateRequest};
use keyflip::secret::StorageKey;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::support::engine::{
    Harness, account_key, assert_consumers_valid, demo_plan_text, keys_of, plan_from, writes,
};
use crate::support::twin::{
    ACCOUNT, DATA_FACTORY, FUNCTION_APP, LINKED_SERVICE, OPERATOR, TestTwin,
};

async fn rotate(h: &Harness) -> keyflip::rotation::RotationReport {
    h.engine()
        .rotate(
            &h.plan,
            RotateRequest::manual(),
            &NoProgress,
            CancellationToken::new(),
        )
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_key_vault_reference_refuses_the_swap_with_the_fix() {
    let mut h = Harness::start().await;
    // The staging slot's AzureWebJobsStorage reads stdatasci001-connection-string.
    h.plan = plan_from(&demo_plan_text(&h.twin).replace(
        "app_settings = [\"AzureWebJobsStorage\"]",
        "app_settings = [\"AzureWebJobsStorage\"]\nslots = [\"staging\"]",
    ));
    let before = h.twin.state().await;
    let report = rotate(&h).await;
    let Some(Outcome::Refused { reasons }) = &report.outcome else {
        panic!("{:#?}", report.outcome)
    };
    let fix = reasons
        .iter()
        .find_map(|r| match r {
            RefusalReason::ConsumerUnusable { consumer, fix }
                if consumer.id.to_string().contains("/slots/staging/") =>
            {
                Some(fix.clone())
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("{reasons:#?}"));
    assert!(fix.contains("Key Vault reference"), "{fix}");
    assert!(fix.contains("stdatasci001-connection-string"), "{fix}");
    assert!(fix.contains("[[key_vault]]"), "{fix}");
    assert!(writes(&h.twin).await.is_empty(), "nothing was written");
    assert_eq!(h.twin.state().await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_service_changed_behind_keyflips_back_is_unknown_then_rewritten() {
    let h = Harness::start().await;
    let id = ConsumerId::data_factory(&h.twin.factory_id(DATA_FACTORY), LINKED_SERVICE);
    let holding = |inventory: &keyflip::rotation::Inventory| {
        inventory
            .consumers
            .iter()
            .find(|c| c.consumer.id == id)
            .map(|c| c.holding.clone())
            .expect("the linked service is a consumer")
    };
    // Before keyflip ever wrote it: its SecureString cannot be read.
    let first = h.engine().observe(&h.plan).await.unwrap();
    assert!(
        matches!(&holding(&first), Holding::Unknown { why } if why.contains("never returns")),
        "{:?}",
        holding(&first)
    );
    assert!(matches!(
        rotate(&h).await.outcome,
        Some(Outcome::Completed {
            active: KeyName::Key2,
            ..
        })
    ));
    let after = h.engine().observe(&h.plan).await.unwrap();
    assert_eq!(
        holding(&after),
        Holding::Key(KeyName::Key2),
        "known by its etag"
    );

    // Someone saves the linked service again (the same key, even): a new etag.
    let (_, key2) = h.twin.keys(ACCOUNT).await;
    let blob = h.twin.endpoints.storage_accounts[ACCOUNT]
        .blob_endpoint
        .clone();
    h.twin
        .azure(OPERATOR)
        .set_linked_service_secret(&h.twin.factory_id(DATA_FACTORY), LINKED_SERVICE, |_| {
            StorageKey::new(format!(
                "DefaultEndpointsProtocol=https;AccountName={ACCOUNT};AccountKey={key2};BlobEndpoint={blob}"
            ))
        })
        .await
        .unwrap();
    let changed = h.engine().observe(&h.plan).await.unwrap();
    assert!(
        matches!(&holding(&changed), Holding::Unknown { why } if why.contains("changed after keyflip wrote it")),
        "{:?}",
        holding(&changed)
    );
    assert_eq!(changed.active, Some(KeyName::Key2), "the others decide");

    // The next rotation does not count it, writes it, and knows it again.
    h.sync_twin_clock().await;
    let again = rotate(&h).await;
    assert!(
        matches!(
            again.outcome,
            Some(Outcome::Completed {
                active: KeyName::Key1,
                ..
            })
        ),
        "{:#?}",
        again.outcome
    );
    let state = h.twin.state().await;
    let (key1, _) = keys_of(&state);
    for (consumer, held) in assert_consumers_valid(&state, "after the second rotation") {
        assert_eq!(held, key1, "{consumer}");
    }
    let last = h.engine().observe(&h.plan).await.unwrap();
    assert_eq!(holding(&last), Holding::Key(KeyName::Key1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settings_write_that_fails_rolls_back_with_the_app_untouched() {
    let h = Harness::start().await;
    h.twin
        .fault(json!({"operation": "web.appSettings.put", "count": 0,
            "action": {"kind": "status", "status": 409, "code": "Conflict"}}))
        .await;
    let before = keys_of(&h.twin.state().await);
    let report = rotate(&h).await;
    let Some(Outcome::RolledBack { cause, .. }) = &report.outcome else {
        panic!("{:#?}", report.outcome)
    };
    assert!(cause.to_string().contains("AzureWebJobsStorage"), "{cause}");
    let state = h.twin.state().await;
    let (key1, _) = keys_of(&state);
    assert_eq!(key1, before.0);
    for (consumer, held) in assert_consumers_valid(&state, "after the rollback") {
        assert_eq!(held, key1, "{consumer} is back on the old key");
    }
    assert_eq!(
        state["web_apps"][FUNCTION_APP]["restarts"], 0,
        "never restarted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settings_write_whose_answer_is_lost_is_read_back_not_resent() {
    let h = Harness::start().await;
    // The PUT is applied, then answered with a 500.
    h.twin
        .fault(json!({"operation": "web.appSettings.put", "count": 1,
            "action": {"kind": "after", "status": 500}}))
        .await;
    let report = rotate(&h).await;
    assert!(
        matches!(report.outcome, Some(Outcome::Completed { .. })),
        "{:#?}",
        report.outcome
    );
    let state = h.twin.state().await;
    assert_eq!(
        h.twin.requests_for("web.appSettings.put").await.len(),
        1,
        "a settings PUT is never resent blindly"
    );
    assert_eq!(state["web_apps"][FUNCTION_APP]["restarts"], 1);
    let (_, key2) = keys_of(&state);
    for (consumer, held) in assert_consumers_valid(&state, "after the swap") {
        assert_eq!(held, key2, "{consumer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_settings_write_starts_over_and_the_rotation_completes() {
    let h = Harness::start().await;
    // Azure refuses the PUT with 429 before doing anything (seen in the kill loop,
    // where an incident parked on it): nothing was written, so keyflip lists again
    // and writes once the wait is up, instead of failing the bind.
    h.twin
        .fault(json!({"operation": "web.appSettings.put", "count": 1,
            "action": {"kind": "status", "status": 429, "retry_after": 1}}))
        .await;
    let report = rotate(&h).await;
    assert!(
        matches!(report.outcome, Some(Outcome::Completed { .. })),
        "{:#?}",
        report.outcome
    );
    let puts = h.twin.requests_for("web.appSettings.put").await;
    assert_eq!(puts.len(), 2, "the refused PUT, then one that was applied");
    let state = h.twin.state().await;
    assert_eq!(state["web_apps"][FUNCTION_APP]["restarts"], 1);
    let (_, key2) = keys_of(&state);
    for (consumer, held) in assert_consumers_valid(&state, "after the swap") {
        assert_eq!(held, key2, "{consumer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_string_keeps_its_type_endpoints_and_slot() {
    let site = "/subscriptions/3c9e5b1d-2a4f-4e6b-9c8d-0f1e2d3c4b5a/resourceGroups/rg-datascience/providers/Microsoft.Web/sites/app-datasci-report";
    let twin = TestTwin::start_with(&format!(
        r#"[[web_app]]
name = "app-datasci-report"
resource_group = "rg-datascience"

[[web_app.app_setting]]
name = "THEME"
value = "dark"

[[web_app.connection_string]]
name = "Storage"
type = "Custom"
value_from = {{ account = "stdatasci001", key = "key1", format = "connection-string" }}

[[web_app.slot]]
name = "blue"

[[web_app.slot.connection_string]]
name = "Storage"
type = "Custom"
value_from = {{ account = "stdatasci001", key = "key1", format = "connection-string" }}

[[web_app.slot.connection_string]]
name = "Reports"
type = "SQLAzure"
value = "Server=tcp:sql.example;Database=reports"

[[role_assignment]]
principal = "keyflip-operator"
role = "Website Contributor"
scope = "{site}"
"#
    ));
    let mut h = Harness::with_twin(twin).await;
    h.plan = plan_from(&format!(
        "{}\n[[app_service]]\nsite = \"{site}\"\nconnection_strings = [\"Storage\"]\nslots = [\"blue\"]\n",
        demo_plan_text(&h.twin)
    ));
    let before = h.twin.state().await;
    let report = rotate(&h).await;
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
    assert_eq!(report.consumers.len(), 12, "{:#?}", report.consumers);
    let state = h.twin.state().await;
    let (_, key2) = keys_of(&state);
    let app = &state["web_apps"]["app-datasci-report"];
    for (place, config) in [("site", app), ("slot blue", &app["slots"]["blue"])] {
        let cs = &config["connectionStrings"]["Storage"];
        assert_eq!(cs["type"], "Custom", "{place}");
        let value = cs["value"].as_str().unwrap();
        assert_eq!(account_key(value), key2, "{place}");
        let old = before["web_apps"]["app-datasci-report"]
            .pointer(if place == "site" {
                "/connectionStrings/Storage/value"
            } else {
                "/slots/blue/connectionStrings/Storage/value"
            })
            .and_then(|v| v.as_str())
            .unwrap();
        assert_eq!(
            value.replace(&key2, "K"),
            old.replace(&account_key(old), "K"),
            "{place}: everything but the key is as it was"
        );
        assert_eq!(config["restarts"], 1, "{place}: one write, one restart");
    }
    assert_eq!(
        app["slots"]["blue"]["connectionStrings"]["Reports"]["type"],
        "SQLAzure"
    );
    assert_eq!(
        app["slots"]["blue"]["connectionStrings"]["Reports"]["value"],
        "Server=tcp:sql.example;Database=reports"
    );
    assert_eq!(app["appSettings"]["THEME"], "dark");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_service_written_by_someone_else_before_it_is_verified_is_not_verified() {
    const DEPLOYER: &str = "deployer";
    let factory_id = "/subscriptions/3c9e5b1d-2a4f-4e6b-9c8d-0f1e2d3c4b5a/resourceGroups/rg-datascience/providers/Microsoft.DataFactory/factories/adf-datasci";
    let twin = TestTwin::start_with(&format!(
        "[[principal]]\nname = \"{DEPLOYER}\"\nclient_id = \"7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d\"\nobject_id = \"8b2c3d4e-5f6a-4b7c-9d8e-0f1a2b3c4d5e\"\n\n[[role_assignment]]\nprincipal = \"{DEPLOYER}\"\nrole = \"Data Factory Contributor\"\nscope = \"{factory_id}\"\n"
    ));
    let h = Harness::with_twin(twin).await;
    // keyflip's reads of the linked service wait half a second; the second is its
    // verification (after the observation's, whose body and etag the write starts
    // from, so the bind reads nothing).
    h.twin
        .fault(
            json!({"operation": "datafactory.linkedService.get", "principal": OPERATOR,
            "count": 0, "action": {"kind": "latency", "ms": 500}}),
        )
        .await;
    let before = keys_of(&h.twin.state().await);
    let blob = h.twin.endpoints.storage_accounts[ACCOUNT]
        .blob_endpoint
        .clone();
    let (report, ()) = tokio::join!(rotate(&h), async {
        h.twin.fired("datafactory.linkedService.get", 2).await;
        // Someone saves the linked service while keyflip is about to verify it.
        let (_, key2) = h.twin.keys(ACCOUNT).await;
        h.twin
            .azure(DEPLOYER)
            .set_linked_service_secret(&h.twin.factory_id(DATA_FACTORY), LINKED_SERVICE, |_| {
                StorageKey::new(format!(
                    "DefaultEndpointsProtocol=https;AccountName={ACCOUNT};AccountKey={key2};BlobEndpoint={blob}"
                ))
            })
            .await
            .unwrap();
    });
    let Some(Outcome::RolledBack { cause, .. }) = &report.outcome else {
        panic!("{:#?}", report.outcome)
    };
    let cause = cause.to_string();
    assert!(cause.contains("changed after keyflip wrote it"), "{cause}");
    assert!(cause.contains(LINKED_SERVICE), "{cause}");
    // The rollback wrote it back to the old key, which it holds now.
    let state = h.twin.state().await;
    let (key1, _) = keys_of(&state);
    assert_eq!(key1, before.0);
    for (consumer, held) in assert_consumers_valid(&state, "after the rollback") {
        assert_eq!(held, key1, "{consumer} is on the old key");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_service_write_that_fails_rolls_back_and_its_old_key_is_known_again() {
    let h = Harness::start().await;
    h.twin
        .fault(
            json!({"operation": "datafactory.linkedService.put", "count": 1,
            "action": {"kind": "status", "status": 400, "code": "BadRequest"}}),
        )
        .await;
    let before = keys_of(&h.twin.state().await);
    let report = rotate(&h).await;
    let Some(Outcome::RolledBack { cause, .. }) = &report.outcome else {
        panic!("{:#?}", report.outcome)
    };
    assert!(cause.to_string().contains(LINKED_SERVICE), "{cause}");
    let state = h.twin.state().await;
    let (key1, _) = keys_of(&state);
    assert_eq!(key1, before.0, "the old key is kept");
    for (consumer, held) in assert_consumers_valid(&state, "after the rollback") {
        assert_eq!(held, key1, "{consumer} is back on the old key");
    }
    // The App Service setting goes last in its batch: the rotation had turned back.
    assert_eq!(state["web_apps"][FUNCTION_APP]["restarts"], 0);
    // Its value reads back masked, so the rollback wrote the old key (the second PUT)
    // and journaled that write's etag: the next observation knows it holds key1.
    assert_eq!(
        h.twin
            .requests_for("datafactory.linkedService.put")
            .await
            .len(),
        2
    );
    let id = ConsumerId::data_factory(&h.twin.factory_id(DATA_FACTORY), LINKED_SERVICE);
    let dry = h
        .engine()
        .dry_run(&h.plan, RotateRequest::manual())
        .await
        .unwrap();
    let found = dry.consumers.iter().find(|c| c.consumer.id == id).unwrap();
    assert_eq!(found.holding, Holding::Key(KeyName::Key1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_service_write_whose_answer_is_lost_ends_on_one_key_with_its_etag_known() {
    let h = Harness::start().await;
    // The PUT is applied, then answered with a 500: keyflip does not learn the etag.
    h.twin
        .fault(
            json!({"operation": "datafactory.linkedService.put", "count": 1,
            "action": {"kind": "after", "status": 500}}),
        )
        .await;
    let report = rotate(&h).await;
    let state = h.twin.state().await;
    let (key1, key2) = keys_of(&state);
    let (want, on) = match &report.outcome {
        Some(Outcome::Completed { .. }) => (key2, KeyName::Key2),
        Some(Outcome::RolledBack { .. }) => (key1, KeyName::Key1),
        other => panic!("{other:#?}"),
    };
    for (consumer, held) in assert_consumers_valid(&state, "at the end") {
        assert_eq!(held, want, "{consumer}: {:#?}", report.outcome);
    }
    // Whatever the outcome, keyflip's last write is the linked service's etag now, so
    // the next rotation knows which key it holds.
    let id = ConsumerId::data_factory(&h.twin.factory_id(DATA_FACTORY), LINKED_SERVICE);
    let dry = h
        .engine()
        .dry_run(&h.plan, RotateRequest::manual())
        .await
        .unwrap();
    let found = dry
        .consumers
        .iter()
        .find(|c| c.consumer.id == id)
        .expect("the linked service is observed");
    assert_eq!(found.holding, Holding::Key(on), "{:#?}", report.outcome);
}
