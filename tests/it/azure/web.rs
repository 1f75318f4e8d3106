//! App Service settings against keyflip-twin: the read-modify-write of one setting
//! while another writer (a "deployer" principal with Website Contributor) changes the
//! same collection through ARM. The twin's latency faults hold keyflip's own listings
//! open, so the other write lands exactly where each test wants it; no setting may be
//! lost, and a collection that keeps changing is refused with nothing written.

use keyflip::azure::Azure;
use keyflip::azure::web::{Collection, Setting, SiteRef};
use keyflip::secret::StorageKey;
use serde_json::json;

use crate::support::engine::account_key;
use crate::support::twin::{ACCOUNT, FUNCTION_APP, OPERATOR, TestTwin};

const DEPLOYER: &str = "deployer";
const SETTING: &str = "AzureWebJobsStorage";

/// The demo world plus a second writer of the Function app's settings.
fn twin() -> TestTwin {
    let site = "/subscriptions/3c9e5b1d-2a4f-4e6b-9c8d-0f1e2d3c4b5a/resourceGroups/rg-datascience/providers/Microsoft.Web/sites/func-datasci-ingest";
    TestTwin::start_with(&format!(
        "[[principal]]\nname = \"{DEPLOYER}\"\nclient_id = \"7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d\"\nobject_id = \"8b2c3d4e-5f6a-4b7c-9d8e-0f1a2b3c4d5e\"\n\n[[role_assignment]]\nprincipal = \"{DEPLOYER}\"\nrole = \"Website Contributor\"\nscope = \"{site}\"\n"
    ))
}

/// keyflip's listings of the settings wait 1.5 s each; the deployer's do not.
async fn slow_listings(twin: &TestTwin) {
    twin.fault(
        json!({"operation": "web.appSettings.list", "principal": OPERATOR, "count": 0,
        "action": {"kind": "latency", "ms": 1500}}),
    )
    .await;
}

/// What keyflip writes: `AzureWebJobsStorage` with key2 instead of key1.
async fn update(
    azure: &Azure,
    site: &SiteRef,
    key2: &str,
) -> Result<keyflip::azure::web::SettingWritten, keyflip::azure::Error> {
    let key2 = StorageKey::new(key2.to_owned());
    azure
        .update_web_setting(site, Collection::AppSettings, SETTING, |current| {
            let text = current.expose();
            let old = account_key(text);
            Ok(StorageKey::new(text.replace(&old, key2.expose())))
        })
        .await
}

fn setting(value: &str) -> Setting {
    Setting {
        value: StorageKey::new(value.to_owned()),
        conn_type: None,
    }
}

/// A deployment adds or changes one setting: list, change, PUT the whole collection.
async fn deploy(azure: &Azure, site: &SiteRef, name: &str, value: &str) {
    let mut settings = azure
        .web_settings(site, Collection::AppSettings)
        .await
        .unwrap();
    settings.0.insert(name.to_owned(), setting(value));
    azure
        .put_web_settings(site, Collection::AppSettings, &settings)
        .await
        .unwrap();
}

fn settings_of(state: &serde_json::Value) -> &serde_json::Value {
    &state["web_apps"][FUNCTION_APP]["appSettings"]
}

async fn keyflip_puts(twin: &TestTwin) -> usize {
    twin.requests_for("web.appSettings.put")
        .await
        .iter()
        .filter(|e| e["principal"] == OPERATOR && e["status"] == 200)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setting_changed_between_keyflips_list_and_put_is_kept() {
    let twin = twin();
    let site = SiteRef::new(&twin.site_id(FUNCTION_APP), None);
    let (keyflip, deployer) = (twin.azure(OPERATOR), twin.azure(DEPLOYER));
    let (_, key2) = twin.keys(ACCOUNT).await;
    slow_listings(&twin).await;
    let (written, ()) = tokio::join!(update(&keyflip, &site, &key2), async {
        // keyflip's second listing, right before its PUT, is waiting: deploy now.
        twin.fired("web.appSettings.list", 2).await;
        deploy(&deployer, &site, "BUILD", "2026.12.1").await;
    });
    let written = written.unwrap();
    assert_eq!(written.attempts, 2, "it saw the change and started over");
    let state = twin.state().await;
    let settings = settings_of(&state);
    assert_eq!(
        settings["BUILD"], "2026.12.1",
        "the deployer's setting survived"
    );
    assert_eq!(account_key(settings[SETTING].as_str().unwrap()), key2);
    assert_eq!(settings["FUNCTIONS_WORKER_RUNTIME"], "dotnet-isolated");
    assert_eq!(
        keyflip_puts(&twin).await,
        1,
        "one PUT: after the listings agreed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_undoes_keyflips_right_after_its_put_is_written_again() {
    let twin = twin();
    let site = SiteRef::new(&twin.site_id(FUNCTION_APP), None);
    let (keyflip, deployer) = (twin.azure(OPERATOR), twin.azure(DEPLOYER));
    let (key1, key2) = twin.keys(ACCOUNT).await;
    slow_listings(&twin).await;
    let (written, ()) = tokio::join!(update(&keyflip, &site, &key2), async {
        // The deployer reads while keyflip is about to write (so it sees key1)...
        twin.fired("web.appSettings.list", 2).await;
        let mut stale = deployer
            .web_settings(&site, Collection::AppSettings)
            .await
            .unwrap();
        // ...and writes after keyflip's PUT, while keyflip's check is waiting.
        while keyflip_puts(&twin).await == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        stale.0.insert("BUILD".into(), setting("2026.12.2"));
        deployer
            .put_web_settings(&site, Collection::AppSettings, &stale)
            .await
            .unwrap();
        let undone = twin.state().await;
        assert_eq!(
            account_key(settings_of(&undone)[SETTING].as_str().unwrap()),
            key1,
            "the stale write put key1 back"
        );
    });
    let written = written.unwrap();
    assert_eq!(written.attempts, 2);
    let state = twin.state().await;
    let settings = settings_of(&state);
    assert_eq!(
        settings["BUILD"], "2026.12.2",
        "the deployer's setting survived"
    );
    assert_eq!(
        account_key(settings[SETTING].as_str().unwrap()),
        key2,
        "keyflip's value was written again"
    );
    assert_eq!(keyflip_puts(&twin).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_that_keeps_changing_is_refused_with_nothing_written() {
    let twin = twin();
    let site = SiteRef::new(&twin.site_id(FUNCTION_APP), None);
    let (keyflip, deployer) = (twin.azure(OPERATOR), twin.azure(DEPLOYER));
    let (key1, key2) = twin.keys(ACCOUNT).await;
    slow_listings(&twin).await;
    let (written, ()) = tokio::join!(update(&keyflip, &site, &key2), async {
        // A change during the second listing of every attempt.
        for attempt in 1..=3u64 {
            twin.fired("web.appSettings.list", 2 * attempt).await;
            deploy(&deployer, &site, "BUILD", &format!("2026.12.{attempt}")).await;
        }
    });
    let err = written.unwrap_err().to_string();
    assert!(err.contains("kept changing"), "{err}");
    assert!(err.contains("BUILD"), "names what changed: {err}");
    assert!(err.contains(SETTING), "{err}");
    assert!(
        !err.contains(&key1) && !err.contains(&key2),
        "no key in errors"
    );
    assert_eq!(keyflip_puts(&twin).await, 0, "keyflip never wrote");
    let state = twin.state().await;
    let settings = settings_of(&state);
    assert_eq!(settings["BUILD"], "2026.12.3");
    assert_eq!(account_key(settings[SETTING].as_str().unwrap()), key1);
}

#[tokio::test]
async fn a_missing_setting_is_not_added_and_a_reader_is_told_the_role() {
    let twin = TestTwin::start();
    let site = SiteRef::new(&twin.site_id(FUNCTION_APP), None);
    let err = twin
        .azure(OPERATOR)
        .update_web_setting(&site, Collection::AppSettings, "NoSuchSetting", |v| {
            Ok(v.clone())
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("has no app setting 'NoSuchSetting'"), "{err}");
    assert!(twin.requests_for("web.appSettings.put").await.is_empty());

    let err = twin
        .azure(crate::support::twin::READER)
        .web_settings(&site, Collection::AppSettings)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(err.denial().is_some(), "{text}");
    assert!(
        text.contains("Microsoft.Web/sites/config/list/action"),
        "{text}"
    );
    assert!(text.contains("Website Contributor"), "{text}");
}
