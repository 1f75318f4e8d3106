//! Problems doctor finds in Azure: shared keys off, Key Vault versions on the other
//! key, a named datastore list that misses some.

use super::*;

#[tokio::test]
async fn an_account_with_shared_keys_disabled_blocks() {
    const ADMIN: &str = "storage-admin";
    let twin = TestTwin::start_with(&format!(
        "[[principal]]\nname = \"{ADMIN}\"\nclient_id = \"0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f\"\nobject_id = \"1d2e3f4a-5b6c-4d7e-8f9a-0b1c2d3e4f5a\"\n\n[[role_assignment]]\nprincipal = \"{ADMIN}\"\nrole = \"Storage Account Contributor\"\nscope = \"{}\"\n",
        TestTwin::demo_account_id(ACCOUNT)
    ));
    twin.azure(ADMIN)
        .patch_storage_account(
            &twin.account_id(ACCOUNT),
            &StorageAccountPatch {
                allow_shared_key_access: Some(false),
                key_expiration_days: None,
            },
        )
        .await
        .unwrap();
    let install = Install::new(&twin, OPERATOR);
    let (code, text, json) = examine(&twin, &install).await;
    assert_eq!(code, 3, "{text}");
    let account = check(&json, "storage_account", "storage account stdatasci001");
    assert_eq!(account["status"], "error");
    assert_eq!(account["shared_key_access"], false);
    assert!(
        account["fix"]
            .as_str()
            .unwrap()
            .contains("--allow-shared-key-access true")
    );
    for key in checks(&json, "key") {
        assert_eq!(key["status"], "error");
        assert_eq!(key["probe"]["outcome"], "shared_keys_disabled");
    }
    // Everything else is as healthy as before.
    let errors: Vec<&str> = json["plans"][0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "error")
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    assert_eq!(errors, ["storage_account", "key", "key"], "{text}");
}

#[tokio::test]
async fn key_vault_versions_are_matched_to_keys_and_an_old_valid_one_only_warns() {
    let twin = TestTwin::start();
    let install = Install::new(&twin, OPERATOR);
    let operator = twin.azure(OPERATOR);
    let vault = twin.vault_url(VAULT);
    let (key1, key2) = twin.keys(ACCOUNT).await;
    let write = |value: String| {
        let (operator, vault) = (&operator, &vault);
        async move {
            let value = StorageKey::new(value);
            operator
                .set_secret(
                    vault,
                    "stdatasci001-key",
                    NewSecretVersion {
                        value: &value,
                        content_type: None,
                        tags: BTreeMap::new(),
                        expires: None,
                    },
                )
                .await
                .unwrap()
        }
    };

    // Someone put key2 into the secret: the current version disagrees with the rest.
    write(key2).await;
    let (code, text, json) = examine(&twin, &install).await;
    assert_eq!(code, 3, "{text}");
    let secret = check(&json, "key_vault_secret", "kv-datasci/stdatasci001-key");
    let holds: Vec<&str> = secret["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["holds"].as_str().unwrap())
        .collect();
    assert_eq!(holds, ["key2", "key1"], "newest first");
    assert!(
        secret["finding"]
            .as_str()
            .unwrap()
            .contains("current version holds key2")
    );
    let consumers = &checks(&json, "consumers")[0];
    assert_eq!(consumers["status"], "error");
    assert!(
        consumers["finding"]
            .as_str()
            .unwrap()
            .starts_with("split: 7 on key1, 1 on key2")
    );
    assert!(text.contains("  ✗  consumers"), "{text}");

    // Put back key1: consumers agree again; the version holding key2 is still enabled
    // and key2 still works, which is worth a warning but blocks nothing.
    write(key1).await;
    let (code, text, json) = examine(&twin, &install).await;
    assert_eq!(code, 0, "{text}");
    let secret = check(&json, "key_vault_secret", "kv-datasci/stdatasci001-key");
    assert_eq!(secret["status"], "warning");
    assert!(
        secret["finding"]
            .as_str()
            .unwrap()
            .contains("1 older enabled version still holds key2")
    );
    // Ready to paste: the vault, the secret and the version to disable.
    let stale = secret["versions"][1]["version"].as_str().unwrap();
    assert!(
        secret["fix"].as_str().unwrap().contains(&format!(
            "az keyvault secret set-attributes --vault-name kv-datasci --name stdatasci001-key --version {stale} --enabled false"
        )),
        "{secret:#}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("  !  key vault") && l.contains("kv-datasci/stdatasci001-key ")),
        "{text}"
    );
    assert!(
        text.contains("nothing blocks a rotation, 1 warning"),
        "{text}"
    );
}

#[tokio::test]
async fn a_named_datastore_list_that_misses_key_based_ones_blocks() {
    let twin = TestTwin::start();
    let install = Install::new(&twin, OPERATOR);
    let plan = install.dir.path().join("plans/demo.toml");
    let text = std::fs::read_to_string(&plan).unwrap();
    assert!(text.contains("discover = true"));
    std::fs::write(
        &plan,
        text.replace(
            "discover = true",
            r#"datastores = ["training_data", "public_samples"]"#,
        ),
    )
    .unwrap();
    let (code, text, json) = examine(&twin, &install).await;
    assert_eq!(code, 3, "{text}");
    let ds = check(&json, "datastores", "datastores of mlw-datasci");
    assert_eq!(ds["status"], "error");
    assert_eq!(ds["selection"], "named");
    assert_eq!(
        ds["missed"],
        serde_json::json!([
            "feature_snapshots",
            "workspaceblobstore",
            "workspaceworkingdirectory"
        ])
    );
    let unusable: Vec<(&str, &str)> = ds["datastores"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| Some((d["name"].as_str()?, d["unusable"].as_str()?)))
        .collect();
    assert_eq!(
        unusable,
        [(
            "public_samples",
            "it uses Sas credentials, not an account key"
        )]
    );
    let fix = ds["fix"].as_str().unwrap();
    assert!(fix.contains("discover = true"), "{fix}");
    // Only the named, usable datastore counts as a consumer.
    let consumers = &checks(&json, "consumers")[0];
    let datastores: Vec<&str> = consumers["holdings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| {
            h["consumer"]
                .as_str()
                .filter(|c| c.starts_with("datastore:"))
        })
        .collect();
    assert_eq!(datastores.len(), 1);
    assert!(datastores[0].ends_with("/datastores/training_data"));
}

#[tokio::test]
async fn a_key_vault_backed_databricks_scope_in_the_plan_blocks_with_the_fix() {
    let twin = TestTwin::start();
    let install = Install::new(&twin, OPERATOR);
    let plan = install.dir.path().join("plans/demo.toml");
    let text = std::fs::read_to_string(&plan).unwrap();
    assert!(text.contains("scope = \"datasci\""));
    std::fs::write(
        &plan,
        text.replace("scope = \"datasci\"", "scope = \"kv-datasci\""),
    )
    .unwrap();
    let (code, text, json) = examine(&twin, &install).await;
    assert_eq!(code, 3, "{text}");
    let dbx = check(&json, "databricks", "scope kv-datasci in dbw-datasci");
    assert_eq!(dbx["status"], "error");
    assert_eq!(dbx["backend"], "azure_keyvault");
    assert!(
        dbx["finding"]
            .as_str()
            .unwrap()
            .contains("Key Vault-backed"),
        "{dbx}"
    );
    assert!(
        dbx["fix"].as_str().unwrap().contains("[[key_vault]]"),
        "{dbx}"
    );
    let errors: Vec<&str> = json["plans"][0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "error")
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    assert_eq!(errors, ["databricks"], "{text}");
}
