//! The demo world's two principals: the operator, who may rotate, and the reader,
//! who is told what to grant.

use serde_json::json;

use super::*;

#[tokio::test]
async fn the_operator_gets_a_clean_report_and_nothing_changes() {
    let twin = TestTwin::start();
    let install = Install::new(&twin, OPERATOR);
    let since = twin.requests().await.len();
    let (code, text, json) = examine(&twin, &install).await;
    assert_eq!(code, 0, "{text}");
    assert_eq!(json["blocking"], false);
    assert_eq!(json["fingerprints"]["source"], "this_run");
    let statuses: Vec<&str> = json["plans"][0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect();
    assert!(statuses.iter().all(|s| *s == "ok"), "{text}");

    // Tokens for all three audiences; every permission; shared keys; both keys work.
    let services: Vec<&str> = checks(&json, "token")
        .iter()
        .map(|c| c["service"].as_str().unwrap())
        .collect();
    assert_eq!(services, ["arm", "key_vault", "databricks"]);
    assert_eq!(checks(&json, "permissions").len(), 5);
    assert!(
        checks(&json, "permissions")
            .iter()
            .all(|c| c["missing"] == serde_json::json!([]))
    );
    assert_eq!(
        check(&json, "storage_account", "storage account stdatasci001")["shared_key_access"],
        true
    );
    let keys = checks(&json, "key");
    let outcomes: Vec<&str> = keys
        .iter()
        .map(|k| k["probe"]["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["works", "works"]);
    let key1 = keys[0]["fingerprint"].as_str().unwrap();
    assert_ne!(key1, keys[1]["fingerprint"].as_str().unwrap());

    // The four key-based datastores on stdatasci001, discovered; not the SAS one, not
    // the one on stexternal002.
    let ds = check(&json, "datastores", "datastores of mlw-datasci");
    assert_eq!(ds["selection"], "discover");
    let mut names: Vec<&str> = ds["datastores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "feature_snapshots",
            "training_data",
            "workspaceblobstore",
            "workspaceworkingdirectory"
        ]
    );
    assert!(
        ds["datastores"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["covered"] == true && d["holds"] == "key1" && d["fingerprint"] == key1)
    );

    // Both secrets (raw key and connection string) hold key1, by fingerprint.
    for secret in ["stdatasci001-key", "stdatasci001-connection-string"] {
        let s = check(&json, "key_vault_secret", &format!("{VAULT}/{secret}"));
        let versions = s["versions"].as_array().unwrap();
        assert_eq!(versions.len(), 1);
        assert_eq!(versions[0]["holds"], "key1");
        assert_eq!(versions[0]["fingerprint"], key1);
    }
    let dbx = check(&json, "databricks", "scope datasci in dbw-datasci");
    assert_eq!(dbx["backend"], "databricks");
    assert_eq!(dbx["secret_exists"], true);
    // The Function app: its storage setting holds key1; its Key Vault reference to a
    // secret of the plan is refetched when a rotation's write restarts the app.
    let app = check(&json, "app_service", "app service func-datasci-ingest");
    let setting = &app["settings"][0];
    assert_eq!(
        (
            &setting["name"],
            &setting["listed"],
            &setting["form"],
            &setting["holds"]
        ),
        (
            &json!("AzureWebJobsStorage"),
            &json!(true),
            &json!("connection_string"),
            &json!("key1")
        )
    );
    assert_eq!(setting["fingerprint"], key1);
    assert_eq!(app["settings"].as_array().unwrap().len(), 1, "{app:#}");
    assert_eq!(
        app["references"],
        json!([{"setting": "DATASCI_STORAGE_CONNECTION",
            "secret": "kv-datasci/stdatasci001-connection-string",
            "version": null, "refreshed_by_rotation": true}])
    );
    assert!(
        app["finding"]
            .as_str()
            .unwrap()
            .contains("restarts the app"),
        "{app:#}"
    );
    // Data Factory: a SecureString (unknown here) and a reader of the plan's secret.
    let adf = check(&json, "data_factory", "data factory adf-datasci");
    let services = adf["linked_services"].as_array().unwrap();
    assert_eq!(services[0]["name"], "ls_stdatasci001_blob");
    assert_eq!(services[0]["credential"], "secure_string");
    assert_eq!(services[0]["holds"], "unknown");
    assert_eq!(services[1]["name"], "ls_stdatasci001_blob_kv");
    assert_eq!(services[1]["listed"], false);
    assert_eq!(
        services[1]["key_vault_secret"],
        "kv-datasci/stdatasci001-connection-string"
    );
    let consumers = &checks(&json, "consumers")[0];
    assert_eq!(consumers["active"], "key1");
    assert_eq!(consumers["holdings"].as_array().unwrap().len(), 10);

    // Never a key value, in either form.
    let (k1, k2) = twin.keys(ACCOUNT).await;
    for shown in [&text, &json.to_string()] {
        assert!(!shown.contains(&k1) && !shown.contains(&k2));
    }

    // Doctor did look: the reads that answer each question are in the log.
    let log = twin.requests().await;
    let count = |op: &str| log[since..].iter().filter(|e| e["operation"] == op).count();
    // Two runs (table and JSON), each probing both keys and asking about six scopes
    // (the account, the ML workspace, the vault, the site, the factory and the usage
    // gate's workspace).
    assert_eq!(count("blob.accountInfo"), 4);
    assert_eq!(count("authz.permissions"), 12);
    // Per run, the datastores row reads the 4 key-based datastores, and discovery (the
    // unlisted row) reads them again with the SAS one: 2 × (4 + 5). Sharing those
    // reads between the two rows is left to do. The same holds for the site's app
    // settings (the app service row, then discovery's site and slot) and the
    // factory's linked services.
    assert_eq!(count("ml.datastore.listSecrets"), 18);
    assert_eq!(count("web.appSettings.list"), 2 * (1 + 2));
    assert_eq!(count("datafactory.linkedService.list"), 2 * (1 + 1));

    snapshot("doctor_operator", &redact(&text, &twin, &install));
}

#[tokio::test]
async fn the_reader_is_told_every_missing_action_and_the_role_that_grants_it() {
    let twin = TestTwin::start();
    let install = Install::new(&twin, READER);
    let (code, text, json) = examine(&twin, &install).await;
    assert_eq!(code, 3, "{text}");
    let missing = |subject: &str| -> Vec<(String, String)> {
        check(&json, "permissions", subject)["missing"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["action"].as_str().unwrap().to_owned(),
                    m["role"].as_str().unwrap_or("-").to_owned(),
                )
            })
            .collect()
    };
    let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(a, r)| ((*a).to_owned(), (*r).to_owned()))
            .collect()
    };
    let key_operator = "Storage Account Key Operator Service Role";
    assert_eq!(
        missing("storage account stdatasci001"),
        pairs(&[
            (
                "Microsoft.Storage/storageAccounts/listkeys/action",
                key_operator
            ),
            (
                "Microsoft.Storage/storageAccounts/regeneratekey/action",
                key_operator
            ),
        ])
    );
    let scientist = "AzureML Data Scientist";
    assert_eq!(
        missing("ML workspace mlw-datasci"),
        pairs(&[
            (
                "Microsoft.MachineLearningServices/workspaces/listKeys/action",
                "Contributor"
            ),
            (
                "Microsoft.MachineLearningServices/workspaces/resynckeys/action",
                scientist
            ),
            (
                "Microsoft.MachineLearningServices/workspaces/datastores/write",
                scientist
            ),
            (
                "Microsoft.MachineLearningServices/workspaces/datastores/listsecrets/action",
                scientist
            ),
        ])
    );
    let website = "Website Contributor";
    assert_eq!(
        missing("app service func-datasci-ingest"),
        pairs(&[
            ("Microsoft.Web/sites/config/list/action", website),
            ("Microsoft.Web/sites/config/write", website),
        ])
    );
    // Reader's */read covers reading linked services (masked), not writing them.
    assert_eq!(
        missing("data factory adf-datasci"),
        pairs(&[(
            "Microsoft.DataFactory/factories/linkedServices/write",
            "Data Factory Contributor"
        )])
    );
    let officer = "Key Vault Secrets Officer";
    assert_eq!(
        missing("key vault kv-datasci"),
        pairs(&[
            (
                "Microsoft.KeyVault/vaults/secrets/setSecret/action",
                officer
            ),
            ("Microsoft.KeyVault/vaults/secrets/update/action", officer),
        ])
    );
    // The table names each with its role, and says where to assign them.
    assert!(text.contains(&format!(
        "missing Microsoft.Storage/storageAccounts/listkeys/action: granted by '{key_operator}'"
    )));
    assert!(text.contains(&format!(
        "→ what to do: assign '{key_operator}' to keyflip's identity at {}",
        TestTwin::demo_account_id(ACCOUNT)
    )));
    // What the missing permissions keep doctor from reading is skipped, not repeated.
    for key in checks(&json, "key") {
        assert_eq!(key["status"], "skipped", "{key}");
    }
    // The reader is not a Databricks workspace user: that blocks too, with the fix.
    let dbx = check(&json, "databricks", "scope datasci in dbw-datasci");
    assert_eq!(dbx["status"], "error");
    assert!(
        dbx["fix"]
            .as_str()
            .unwrap()
            .contains("user of the workspace")
    );

    snapshot("doctor_reader", &redact(&text, &twin, &install));

    // Who doctor ran as, from its own token, and what to paste for that identity:
    // one assignment per narrow built-in role, and for the part only Contributor
    // grants (it can delete the workspace) a custom role with exactly that action.
    let principal = &twin.endpoints.principals[READER];
    assert_eq!(json["identity"]["object_id"], principal.object_id.as_str());
    assert_eq!(json["identity"]["app_id"], principal.client_id.as_str());
    assert!(
        text.contains(&format!(
            "ran as: service principal (app {}, object {})",
            principal.client_id, principal.object_id
        )),
        "{text}"
    );
    let ws = check(&json, "permissions", "ML workspace mlw-datasci");
    let commands: Vec<&str> = ws["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let assignee = format!(
        "az role assignment create --assignee-object-id {} --assignee-principal-type ServicePrincipal",
        principal.object_id
    );
    assert!(
        commands[0].starts_with(&assignee)
            && commands[0]
                .contains("--role f6c7c914-8db3-469d-8ca1-694a8f32e121 --scope /subscriptions/"),
        "{commands:#?}"
    );
    assert!(
        commands
            .contains(&"az role definition create --role-definition @keyflip-ml-workspace.json"),
        "{commands:#?}"
    );
    assert_eq!(
        ws["custom_role"]["Actions"],
        serde_json::json!(["Microsoft.MachineLearningServices/workspaces/listKeys/action"])
    );
    let vault = check(&json, "permissions", "key vault kv-datasci");
    assert!(
        vault["custom_role"].is_null(),
        "Key Vault Secrets Officer cannot delete the vault"
    );
    assert!(
        text.contains("ready to paste:") && text.contains("\"IsCustom\": true"),
        "{text}"
    );
    for width in [80, 60] {
        let (_, text, _) = install.doctor_at(&[], width);
        crate::output::assert_fits("doctor", &text, width);
        snapshot(
            &format!("output/doctor-reader-{width}"),
            &redact(&text, &twin, &install),
        );
    }
}
