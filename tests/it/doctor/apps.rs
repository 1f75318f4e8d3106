//! What doctor finds in App Service settings and Data Factory linked services: keys
//! the plan leaves out, Key Vault references listed as if they held a key, a pinned
//! reference, App Service's 24-hour reference cache against the plan's grace, and a
//! Data Lake linked service on the account that the plan does not list.

use serde_json::json;

use super::*;

const SITE: &str = "/subscriptions/3c9e5b1d-2a4f-4e6b-9c8d-0f1e2d3c4b5a/resourceGroups/rg-datascience/providers/Microsoft.Web/sites/app-datasci-report";
const FACTORY: &str = "/subscriptions/3c9e5b1d-2a4f-4e6b-9c8d-0f1e2d3c4b5a/resourceGroups/rg-datascience/providers/Microsoft.DataFactory/factories/adf-reports";

/// The demo world plus a web app and a factory with a little of everything.
fn twin() -> TestTwin {
    TestTwin::start_with(&format!(
        r#"[[web_app]]
name = "app-datasci-report"
resource_group = "rg-datascience"

[[web_app.app_setting]]
name = "STORAGE_KEY"
value_from = {{ account = "stdatasci001", key = "key1", format = "raw-key" }}

[[web_app.app_setting]]
name = "LEGACY_STORAGE"
value_from = {{ account = "stdatasci001", key = "key1", format = "connection-string" }}

[[web_app.app_setting]]
name = "PINNED"
key_vault_reference = {{ vault = "kv-datasci", secret = "stdatasci001-key", version = "0123456789abcdef0123456789abcdef" }}

[[web_app.slot]]
name = "blue"

[[web_app.slot.app_setting]]
name = "STORAGE_KEY"
key_vault_reference = {{ vault = "kv-datasci", secret = "stdatasci001-key" }}

[[data_factory]]
name = "adf-reports"
resource_group = "rg-datascience"

[[data_factory.linked_service]]
name = "ls_kv"
type = "AzureKeyVault"
key_vault = "kv-datasci"

[[data_factory.linked_service]]
name = "ls_lake"
type = "AzureBlobFS"
account = "stdatasci001"
value_from = {{ account = "stdatasci001", key = "key1", format = "raw-key" }}

[[data_factory.linked_service]]
name = "ls_blob_kv"
type = "AzureBlobStorage"
key_vault_secret = {{ linked_service = "ls_kv", secret = "stdatasci001-connection-string" }}

[[role_assignment]]
principal = "keyflip-operator"
role = "Website Contributor"
scope = "{SITE}"

[[role_assignment]]
principal = "keyflip-operator"
role = "Data Factory Contributor"
scope = "{FACTORY}"
"#
    ))
}

fn add_tables(install: &Install, tables: &str, grace: &str) {
    let plan = install.dir.path().join("plans/demo.toml");
    let text = std::fs::read_to_string(&plan).unwrap();
    assert!(text.contains("grace = \"30s\""));
    std::fs::write(
        &plan,
        format!(
            "{}\n{tables}",
            text.replace("grace = \"30s\"", &format!("grace = \"{grace}\""))
        ),
    )
    .unwrap();
}

#[tokio::test]
async fn app_service_settings_the_plan_misses_or_cannot_rotate_block_and_a_short_grace_warns() {
    let twin = twin();
    let install = Install::new(&twin, OPERATOR);
    add_tables(
        &install,
        &format!(
            "[[app_service]]\nsite = \"{SITE}\"\napp_settings = [\"STORAGE_KEY\"]\nslots = [\"blue\"]\n"
        ),
        "30s",
    );
    let (code, text, json) = examine(&twin, &install).await;
    assert_eq!(code, 3, "{text}");

    let site = check(&json, "app_service", "app service app-datasci-report");
    assert_eq!(site["status"], "error", "{site:#}");
    let settings = site["settings"].as_array().unwrap();
    let row = |name: &str| {
        settings
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {site:#}"))
    };
    assert_eq!(
        (
            &row("STORAGE_KEY")["listed"],
            &row("STORAGE_KEY")["form"],
            &row("STORAGE_KEY")["holds"]
        ),
        (&json!(true), &json!("raw_key"), &json!("key1"))
    );
    // A second setting with the key that the plan does not list.
    assert_eq!(
        (
            &row("LEGACY_STORAGE")["listed"],
            &row("LEGACY_STORAGE")["holds"]
        ),
        (&json!(false), &json!("key1"))
    );
    let finding = site["finding"].as_str().unwrap();
    assert!(
        finding.contains(
            "LEGACY_STORAGE holds one of the account's keys but the plan does not list it"
        ),
        "{finding}"
    );
    assert!(finding.contains("PINNED reads version 0123456789abcdef0123456789abcdef of kv-datasci/stdatasci001-key, pinned"), "{finding}");
    let fix = site["fix"].as_str().unwrap();
    assert!(
        fix.contains("add LEGACY_STORAGE to the [[app_service]] table"),
        "{fix}"
    );
    assert!(fix.contains("drop the version from the reference"), "{fix}");

    // The slot: its STORAGE_KEY reads Key Vault (a listed reference is an error), and
    // nothing keyflip writes restarts the slot, so the 30 s grace is shorter than the
    // reference cache.
    let slot = check(&json, "app_service", "app service app-datasci-report/blue");
    assert_eq!(slot["status"], "error");
    assert_eq!(slot["slot"], "blue");
    let finding = slot["finding"].as_str().unwrap();
    assert!(
        finding.contains("STORAGE_KEY is a Key Vault reference"),
        "{finding}"
    );
    assert!(
        finding.contains("caches for up to 24 h; the plan's grace (30s) is shorter"),
        "{finding}"
    );
    assert_eq!(slot["references"][0]["refreshed_by_rotation"], false);
    let fix = slot["fix"].as_str().unwrap();
    assert!(fix.contains("grace = \"24h\""), "{fix}");
    assert!(
        fix.contains("/slots/blue/config/configreferences/appsettings/refresh"),
        "{fix}"
    );
    assert!(
        text.contains("  ✗  app service  app service app-datasci-report/blue"),
        "{text}"
    );

    // With a grace that covers the cache, the slot's reference is no longer a warning.
    add_tables(&install, "", "24h");
    let (_, _, json) = examine(&twin, &install).await;
    let slot = check(&json, "app_service", "app service app-datasci-report/blue");
    let finding = slot["finding"].as_str().unwrap();
    assert!(!finding.contains("caches for up to 24 h"), "{finding}");
    assert!(
        finding.contains("within 24 h, inside the plan's grace"),
        "{finding}"
    );
}

#[tokio::test]
async fn data_factory_linked_services_are_classified_and_an_unlisted_one_on_the_account_blocks() {
    let twin = twin();
    let install = Install::new(&twin, OPERATOR);
    add_tables(
        &install,
        &format!("[[data_factory]]\nfactory = \"{FACTORY}\"\nlinked_services = [\"ls_blob_kv\"]\n"),
        "30s",
    );
    let (code, text, json) = examine(&twin, &install).await;
    assert_eq!(code, 3, "{text}");
    let adf = check(&json, "data_factory", "data factory adf-reports");
    assert_eq!(adf["status"], "error");
    let services = adf["linked_services"].as_array().unwrap();
    let listed = &services[0];
    assert_eq!(
        (&listed["name"], &listed["listed"], &listed["credential"]),
        (
            &json!("ls_blob_kv"),
            &json!(true),
            &json!("key_vault_secret")
        )
    );
    assert_eq!(
        listed["key_vault_secret"],
        "kv-datasci/stdatasci001-connection-string"
    );
    let lake = services
        .iter()
        .find(|s| s["name"] == "ls_lake")
        .unwrap_or_else(|| panic!("{adf:#}"));
    assert_eq!(
        (&lake["listed"], &lake["service_type"], &lake["credential"]),
        (
            &json!(false),
            &json!("AzureBlobFS"),
            &json!("secure_string")
        )
    );
    let finding = adf["finding"].as_str().unwrap();
    assert!(finding.contains("ls_blob_kv reads Key Vault secret stdatasci001-connection-string through linked service ls_kv"), "{finding}");
    assert!(
        finding.contains("ls_lake uses stdatasci001's key but the plan does not list it"),
        "{finding}"
    );
    assert!(
        text.contains("  ✗  data factory data factory adf-reports"),
        "{text}"
    );
}
