//! Consumer ids as the journal stores them, the kinds' capabilities, short labels,
//! and what a plan's consumer tables need (permissions, coverage, summaries).

use super::*;
use crate::azure::roles::Action;
use crate::doctor::report::Resource;
use crate::rotation::machine::ConsumerRef;

const WORKSPACE: &str =
    "/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/mlw";

fn ws() -> ResourceId {
    WORKSPACE.parse().unwrap()
}

/// One id of each kind, as keyflip has always written them.
fn written() -> Vec<&'static str> {
    vec![
        "keyvault:https://127.0.0.1:41659/keyvault/kv-datasci/secrets/stdatasci001-key",
        "keyvault:https://kv-datasci.vault.azure.net/secrets/stdatasci001-connection-string",
        "workspace:/subscriptions/3c9e5b1d-2a4f-4e6b-9c8d-0f1e2d3c4b5a/resourceGroups/rg-datascience/providers/Microsoft.MachineLearningServices/workspaces/mlw-datasci",
        "datastore:/subscriptions/3c9e5b1d-2a4f-4e6b-9c8d-0f1e2d3c4b5a/resourceGroups/rg-datascience/providers/Microsoft.MachineLearningServices/workspaces/mlw-datasci/datastores/workspaceblobstore",
        "databricks:https://127.0.0.1:41659/databricks/dbw-datasci#datasci/stdatasci001-key",
        "databricks:https://adb-1234567890123456.7.azuredatabricks.net#Data.Sci@x/Key_1",
        "appservice:/subscriptions/3c9e5b1d-2a4f-4e6b-9c8d-0f1e2d3c4b5a/resourceGroups/rg-datascience/providers/Microsoft.Web/sites/func-datasci-ingest/config/appsettings/AzureWebJobsStorage",
        "appservice:/subscriptions/s/resourceGroups/g/providers/Microsoft.Web/sites/web/slots/staging/config/connectionstrings/Storage:Main",
        "datafactory:/subscriptions/3c9e5b1d-2a4f-4e6b-9c8d-0f1e2d3c4b5a/resourceGroups/rg-datascience/providers/Microsoft.DataFactory/factories/adf-datasci/linkedservices/ls_stdatasci001_blob",
    ]
}

#[test]
fn ids_read_back_exactly_as_written() {
    for text in written() {
        let id: ConsumerId = text.parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(id.to_string(), text);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<ConsumerId>(&json).unwrap(), id);
    }
}

#[test]
fn constructors_write_the_documented_forms() {
    assert_eq!(
        ConsumerId::key_vault("https://kv.vault.azure.net/", "s").to_string(),
        "keyvault:https://kv.vault.azure.net/secrets/s"
    );
    assert_eq!(
        ConsumerId::workspace(&ws()).to_string(),
        format!("workspace:{WORKSPACE}")
    );
    assert_eq!(
        ConsumerId::datastore(&ws(), "training_data").to_string(),
        format!("datastore:{WORKSPACE}/datastores/training_data")
    );
    assert_eq!(
        ConsumerId::databricks("https://adb-1.2.azuredatabricks.net/", "scope", "key").to_string(),
        "databricks:https://adb-1.2.azuredatabricks.net#scope/key"
    );
    let parsed: ConsumerId = format!("datastore:{WORKSPACE}/datastores/training_data")
        .parse()
        .unwrap();
    assert_eq!(parsed, ConsumerId::datastore(&ws(), "training_data"));
    assert_eq!(parsed.kind(), ConsumerKind::Datastore);
}

#[test]
fn text_that_is_no_consumer_id_is_refused_with_the_forms() {
    for bad in [
        "",
        "kv/storage-key",
        "keyvault:https://v",
        "keyvault:/secrets/x",
        "workspace:not-an-arm-id",
        "datastore:/subscriptions/s/resourceGroups/g/providers/P/workspaces/w/datastores/",
        "databricks:https://h#scope",
        "databricks:https://h#/key",
        "appsetting:https://x",
        "appservice:/subscriptions/s/resourceGroups/g/providers/Microsoft.Web/sites/w/config/appsettings/",
        "appservice:/subscriptions/s/resourceGroups/g/providers/Microsoft.Web/sites/w/config/web/x",
        "datafactory:/subscriptions/s/resourceGroups/g/providers/Microsoft.DataFactory/factories/f",
    ] {
        let err = bad.parse::<ConsumerId>().unwrap_err().to_string();
        assert!(err.contains("is not a consumer id"), "{bad}: {err}");
        assert!(err.contains("keyvault:{vault_url}/secrets/{name}"), "{err}");
        assert!(serde_json::from_str::<ConsumerId>(&format!("\"{bad}\"")).is_err());
    }
}

#[test]
fn only_databricks_names_are_case_sensitive() {
    let kv = ConsumerId::key_vault("https://KV.vault.azure.net", "Key");
    assert_eq!(
        kv.same_target_key(),
        ConsumerId::key_vault("https://kv.vault.azure.net", "key").same_target_key()
    );
    let dbx = ConsumerId::databricks("https://h", "Scope", "Key");
    assert_ne!(
        dbx.same_target_key(),
        ConsumerId::databricks("https://h", "scope", "key").same_target_key()
    );
}

#[test]
fn labels_are_short() {
    let label = |text: &str| text.parse::<ConsumerId>().unwrap().describe();
    assert_eq!(
        label("keyvault:https://h:1/keyvault/kv-datasci/secrets/k"),
        "Key Vault secret kv-datasci/k"
    );
    assert_eq!(
        label(&format!("datastore:{WORKSPACE}/datastores/td")),
        "ML datastore mlw/td"
    );
    assert_eq!(label(&format!("workspace:{WORKSPACE}")), "ML workspace mlw");
    assert_eq!(
        label("databricks:https://h/databricks/dbw#scope/key"),
        "Databricks secret dbw scope/key"
    );
    let site = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Web/sites/func";
    assert_eq!(
        label(&format!(
            "appservice:{site}/config/appsettings/AzureWebJobsStorage"
        )),
        "App Service setting func AzureWebJobsStorage"
    );
    assert_eq!(
        label(&format!(
            "appservice:{site}/slots/staging/config/connectionstrings/Db"
        )),
        "App Service setting func/staging connection string Db"
    );
    assert_eq!(
        label(
            "datafactory:/subscriptions/s/resourceGroups/g/providers/Microsoft.DataFactory/factories/adf/linkedservices/ls"
        ),
        "Data Factory linked service adf/ls"
    );
    let words: Vec<&str> = ConsumerKind::ALL.iter().map(|k| k.word()).collect();
    assert_eq!(
        words,
        [
            "key vault",
            "datastore",
            "workspace",
            "databricks",
            "app service",
            "data factory"
        ]
    );
}

#[test]
fn each_kind_has_the_capabilities_the_rotation_relies_on() {
    let caps = |k: ConsumerKind| k.capabilities();
    assert!(caps(ConsumerKind::KeyVaultSecret).keeps_old_versions);
    assert!(!caps(ConsumerKind::KeyVaultSecret).bind_last);
    let ws = caps(ConsumerKind::Workspace);
    assert!(ws.takes_newest_key_on_resync && ws.bind_last && !ws.keeps_old_versions);
    assert_eq!(caps(ConsumerKind::Datastore), Capabilities::NONE);
    assert_eq!(caps(ConsumerKind::Databricks), Capabilities::NONE);
    // A settings write restarts the app: after the rest of its batch, never when the
    // rotation already turned back.
    let app = caps(ConsumerKind::AppServiceSetting);
    assert!(app.bind_last && !app.takes_newest_key_on_resync && !app.keeps_old_versions);
    assert_eq!(
        caps(ConsumerKind::DataFactoryLinkedService),
        Capabilities::NONE
    );
}

#[test]
fn a_consumer_journaled_without_capabilities_gets_its_kinds() {
    // The shape every keyflip before capabilities wrote.
    let old = r#"{"id":"workspace:/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/mlw","kind":"workspace"}"#;
    let c: ConsumerRef = serde_json::from_str(old).unwrap();
    assert_eq!(c.kind(), ConsumerKind::Workspace);
    assert_eq!(c.capabilities, ConsumerKind::Workspace.capabilities());
    assert_eq!(c, ConsumerRef::new(ConsumerId::workspace(&ws())));

    // Written now: the capabilities travel with it, and win over the kind's.
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(json["kind"], "workspace");
    assert_eq!(json["capabilities"]["bind_last"], true);
    let mut journaled = json.clone();
    journaled["capabilities"]["bind_last"] = false.into();
    let back: ConsumerRef = serde_json::from_value(journaled).unwrap();
    assert!(!back.capabilities.bind_last);
    assert!(back.capabilities.takes_newest_key_on_resync);

    // A kind that contradicts the id is a corrupt row, not a guess.
    let wrong = old.replace(r#""kind":"workspace""#, r#""kind":"databricks""#);
    let err = serde_json::from_str::<ConsumerRef>(&wrong).unwrap_err();
    assert!(
        err.to_string()
            .contains("is recorded as a Databricks secret"),
        "{err}"
    );
}

fn plan(text: &str) -> Plan {
    let account = "storage_account = \"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/stacct\"\n";
    crate::plan::parse(&format!("{account}{text}"), "t.toml").unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn each_scope_is_checked_once_with_what_the_plan_needs() {
    let plan = plan(
        r#"[[key_vault]]
vault = "https://kv.vault.azure.net"
secret = "a"
format = "raw-key"
vault_id = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv"
[[key_vault]]
vault = "https://kv.vault.azure.net"
secret = "b"
format = "raw-key"
vault_id = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/KV"
[[key_vault]]
vault = "https://other.vault.azure.net"
secret = "c"
format = "raw-key"
[[ml_workspace]]
workspace = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/w"
resync = false
datastores = ["d"]
[[app_service]]
site = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/func"
app_settings = ["AzureWebJobsStorage"]
[[app_service]]
site = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/web"
connection_strings = ["Storage"]
slots = ["staging"]
[[data_factory]]
factory = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.DataFactory/factories/adf"
linked_services = ["ls_blob", "ls_files"]
"#,
    );
    let checks = crate::doctor::collect::required_permissions(&plan);
    let summary: Vec<(Resource, usize)> = checks.iter().map(|(_, r, a)| (*r, a.len())).collect();
    assert_eq!(
        summary,
        vec![
            (Resource::STORAGE_ACCOUNT, 3),
            // The three datastore actions; no resync, so neither listKeys nor
            // resyncKeys (the workspace is not a consumer).
            (workspace::RESOURCE, 3),
            // One vault, named twice in different case; the third has no vault_id.
            (key_vault::RESOURCE, 4),
            // List and write settings; the slots' own actions only where slots are
            // listed.
            (app_service::RESOURCE, 2),
            (app_service::RESOURCE, 4),
            (data_factory::RESOURCE, 2),
        ]
    );
    assert!(
        checks[4]
            .2
            .contains(&crate::azure::roles::actions::WEB_SLOT_CONFIG_WRITE)
    );
    assert!(
        !checks[1]
            .2
            .contains(&crate::azure::roles::actions::ML_WORKSPACE_RESYNC_KEYS)
    );
    // A rotation checks exactly the same.
    let rotation: Vec<(String, Vec<Action>)> = checks.into_iter().map(|(s, _, a)| (s, a)).collect();
    assert_eq!(crate::rotation::required_permissions(&plan), rotation);
}

#[test]
fn a_plan_covers_its_listed_and_discovered_consumers_only() {
    let other = "/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/other";
    let plan = plan(&format!(
        r#"[[ml_workspace]]
workspace = "{WORKSPACE}"
discover = true
[[ml_workspace]]
workspace = "{other}"
resync = false
datastores = ["named"]
[[databricks]]
workspace_url = "https://adb-1.2.azuredatabricks.net"
scope = "s"
key = "k"
format = "raw-key"
"#
    ));
    let listed = |id: String| super::listed(&plan, &id);
    assert!(listed(format!("workspace:{WORKSPACE}")).is_some());
    assert!(listed(format!("datastore:{WORKSPACE}/datastores/found_later")).is_some());
    assert!(listed(format!("datastore:{other}/datastores/named")).is_some());
    assert!(listed(format!("datastore:{other}/datastores/unnamed")).is_none());
    assert!(
        listed(format!("workspace:{other}")).is_none(),
        "not resynced: no consumer"
    );
    assert!(listed("databricks:https://adb-1.2.azuredatabricks.net#s/k".into()).is_some());
    assert!(listed("databricks:https://adb-1.2.azuredatabricks.net#S/k".into()).is_none());
    assert!(listed("not an id".into()).is_none());
    assert_eq!(discovers(&plan), Some("datastores"));
    assert_eq!(
        summary(&plan),
        "ML workspace mlw and its account-key datastores, ML workspace other and 1 named datastore, 1 Databricks secret"
    );
}

#[test]
fn app_service_and_data_factory_tables_are_checked_where_written() {
    let account = "storage_account = \"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/stacct\"\n";
    let text = format!(
        r#"{account}[[app_service]]
site = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/x"
app_settings = ["A", "a"]
[[app_service]]
site = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/w"
slots = ["staging"]
[[app_service]]
site = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/w2"
app_settings = ["bad/name"]
slotz = ["x"]
[[data_factory]]
factory = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.DataFactory/factories/f"
linked_services = []
[[data_factory]]
factory = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.DataFactory/factories/g"
linked_services = ["ok", "OK"]
"#
    );
    let err = crate::plan::parse(&text, "t.toml").unwrap_err().to_string();
    for expected in [
        "t.toml:3:8: site is a Microsoft.Storage/storageAccounts id, expected a Microsoft.Web/sites id",
        "t.toml:4:22: `a` is listed twice in app_settings",
        "t.toml:5:1: [[app_service]] names no settings",
        "t.toml:10:17: app_settings `bad/name` is not a valid name",
        "t.toml:11:1: unknown key `slotz` in [[app_service]]",
        "t.toml:14:19: `linked_services` is empty",
        "t.toml:17:26: `OK` is listed twice in linked_services",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in\n{err}");
    }

    let plan = plan(
        r#"[[app_service]]
site = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/func"
app_settings = ["AzureWebJobsStorage"]
connection_strings = ["Storage"]
slots = ["staging"]
[[data_factory]]
factory = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.DataFactory/factories/adf"
linked_services = ["ls_blob"]
"#,
    );
    let ids: Vec<String> = plan
        .consumer_ids()
        .iter()
        .map(ToString::to_string)
        .collect();
    let site = "appservice:/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/func";
    assert_eq!(
        ids,
        [
            format!("{site}/config/appsettings/AzureWebJobsStorage"),
            format!("{site}/config/connectionstrings/Storage"),
            format!("{site}/slots/staging/config/appsettings/AzureWebJobsStorage"),
            format!("{site}/slots/staging/config/connectionstrings/Storage"),
            "datafactory:/subscriptions/s/resourceGroups/rg/providers/Microsoft.DataFactory/factories/adf/linkedservices/ls_blob".to_owned(),
        ]
    );
    for id in &ids {
        assert!(listed(&plan, id).is_some(), "{id}");
    }
    assert!(
        listed(
            &plan,
            &format!("{site}/slots/prod/config/appsettings/AzureWebJobsStorage")
        )
        .is_none()
    );
    assert_eq!(
        summary(&plan),
        "4 App Service settings, 1 Data Factory linked service"
    );
}
