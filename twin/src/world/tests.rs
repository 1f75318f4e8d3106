use super::*;

const MINIMAL: &str = r#"
[tenant]
id = "7f3c1a2e-4b5d-4c6e-8f90-1a2b3c4d5e6f"

[[subscription]]
id = "3c9e5b1d-2a4f-4e6b-9c8d-0f1e2d3c4b5a"
display_name = "s"

[[resource_group]]
name = "rg"
location = "westeurope"

[[principal]]
name = "p"
client_id = "5f2d8a41-7c3e-4b9a-a1d6-0e4f7b2c9d13"
object_id = "c8e1b7a2-3f4d-4e5a-9b6c-7d8e9f0a1b2c"
"#;

fn invalid(src: &str) -> (usize, usize, String) {
    match World::from_toml_str(src, "w.toml") {
        Err(WorldError::Invalid {
            origin,
            line,
            column,
            message,
        }) => {
            assert_eq!(origin, "w.toml");
            (line, column, message)
        }
        other => panic!("expected an invalid world, got {other:?}"),
    }
}

#[test]
fn demo_world_is_valid() {
    let w = World::from_toml_str(DEMO_TOML, "demo.toml").expect("the demo world parses");
    assert_eq!(w.tenant_id(), "7f3c1a2e-4b5d-4c6e-8f90-1a2b3c4d5e6f");
    assert_eq!(w.storage_accounts.len(), 2);
    assert_eq!(w.ml_workspaces[0].datastores.len(), 6);
    assert_eq!(w.settings().lro_retry_after_secs, 1);
    let _ = World::demo();
}

#[test]
fn a_minimal_world_is_valid() {
    World::from_toml_str(MINIMAL, "w.toml").expect("valid");
}

#[test]
fn unknown_keys_are_reported_with_their_position() {
    let src = format!(
        "{MINIMAL}\n[[storage_account]]\nname = \"acct\"\nresource_group = \"rg\"\ncolour = \"blue\"\n"
    );
    let (line, column, message) = invalid(&src);
    assert_eq!(line, MINIMAL.lines().count() + 5, "{message}");
    assert_eq!(column, 1);
    assert!(message.contains("colour"), "{message}");
}

#[test]
fn dangling_references_are_reported_at_the_reference() {
    let src = format!(
        "{MINIMAL}\n[[storage_account]]\nname = \"acct\"\nresource_group = \"rg-missing\"\n"
    );
    let (line, column, message) = invalid(&src);
    assert_eq!(line, MINIMAL.lines().count() + 4);
    assert_eq!(column, 18);
    assert!(message.contains("rg-missing"), "{message}");

    let src = format!(
        "{MINIMAL}\n[[role_assignment]]\nprincipal = \"p\"\nrole = \"Reader\"\nscope = \"/subscriptions/3c9e5b1d-2a4f-4e6b-9c8d-0f1e2d3c4b5a/resourceGroups/nope\"\n"
    );
    let (_, _, message) = invalid(&src);
    assert!(
        message.contains("not a subscription, resource group or resource"),
        "{message}"
    );

    let src = format!(
        "{MINIMAL}\n[[role_assignment]]\nprincipal = \"p\"\nrole = \"Wizard\"\nscope = \"/subscriptions/3c9e5b1d-2a4f-4e6b-9c8d-0f1e2d3c4b5a\"\n"
    );
    let (_, _, message) = invalid(&src);
    assert!(message.contains("Wizard"), "{message}");
}

#[test]
fn role_assignment_scopes_match_case_insensitively() {
    let src = format!(
        "{MINIMAL}\n[[role_assignment]]\nprincipal = \"p\"\nrole = \"reader\"\nscope = \"/SUBSCRIPTIONS/3C9E5B1D-2A4F-4E6B-9C8D-0F1E2D3C4B5A/resourcegroups/RG\"\n"
    );
    World::from_toml_str(&src, "w.toml").expect("valid");
}

#[test]
fn names_are_checked() {
    for (name, why) in [
        ("Upper", "upper case"),
        ("ab", "too short"),
        ("msi", "reserved"),
    ] {
        let src =
            format!("{MINIMAL}\n[[storage_account]]\nname = \"{name}\"\nresource_group = \"rg\"\n");
        let (_, _, message) = invalid(&src);
        assert!(message.contains(name), "{why}: {message}");
    }
    let src = format!(
        "{MINIMAL}\n[[principal]]\nname = \"p\"\nclient_id = \"9b4e2f17-6a3c-4d8e-b5f1-2c7a0d9e8f34\"\nobject_id = \"e2a9c4d6-1b3f-4a5e-8c7d-9f0b1a2c3d4e\"\n"
    );
    let (_, _, message) = invalid(&src);
    assert!(message.contains("defined twice"), "{message}");
}

#[test]
fn secrets_need_exactly_one_value_source() {
    let src = format!(
        "{MINIMAL}\n[[key_vault]]\nname = \"kv1\"\nresource_group = \"rg\"\n[[key_vault.secret]]\nname = \"s\"\n"
    );
    let (_, _, message) = invalid(&src);
    assert!(
        message.contains("exactly one of `value` and `value_from`"),
        "{message}"
    );
}

#[test]
fn bad_settings_are_refused() {
    let src = format!("{MINIMAL}\n[settings]\npropagation_delay_secs = -1.0\n");
    let (_, _, message) = invalid(&src);
    assert!(message.contains("propagation_delay_secs"), "{message}");
}

/// Issue 15: values that would make the twin refuse everything, issue dead tokens or
/// overflow its clock are refused, naming the field, at its line and column.
#[test]
fn absurd_settings_are_refused_at_their_position() {
    let settings_line = MINIMAL.lines().count() + 2;
    for (setting, value) in [
        ("arm_write_burst", "0"),
        ("arm_read_burst", "0"),
        ("keyvault_write_burst", "0"),
        ("keyvault_read_burst", "0"),
        ("token_lifetime_secs", "0"),
        ("propagation_delay_secs", "1e308"),
        ("resync_duration_secs", "inf"),
        ("propagation_delay_secs", "nan"),
        ("arm_write_refill_per_sec", "1e300"),
        ("lro_retry_after_secs", "86400"),
        ("token_lifetime_secs", "604800"),
    ] {
        let src =
            format!("{MINIMAL}\n[settings]\narm_read_refill_per_sec = 25.0\n{setting} = {value}\n");
        let (line, column, message) = invalid(&src);
        assert!(
            message.contains(&format!("settings.{setting}")),
            "{message}"
        );
        assert_eq!(
            (line, column),
            (settings_line + 2, setting.len() + 4),
            "{setting} = {value}: {message}"
        );
    }
    // The edges stay usable: what keyflip's tests and the benchmark set.
    for (setting, value) in [
        ("lro_retry_after_secs", "0"),
        ("resync_duration_secs", "0.0"),
        ("propagation_delay_secs", "3600.0"),
        ("arm_write_burst", "1000000000"),
        ("arm_write_refill_per_sec", "1e9"),
        ("token_lifetime_secs", "1"),
    ] {
        let src = format!("{MINIMAL}\n[settings]\n{setting} = {value}\n");
        World::from_toml_str(&src, "w.toml")
            .unwrap_or_else(|e| panic!("{setting} = {value} is valid: {e}"));
    }
}

#[test]
fn unknown_skus_kinds_and_zero_key_expiry_are_refused() {
    let account = |extra: &str| {
        format!(
            "{MINIMAL}\n[[storage_account]]\nname = \"acct\"\nresource_group = \"rg\"\n{extra}\n"
        )
    };
    let (line, column, message) = invalid(&account("sku = \"Standard_XYZ\""));
    assert_eq!(
        (line, column),
        (MINIMAL.lines().count() + 5, 7),
        "{message}"
    );
    assert!(
        message.contains("Standard_XYZ") && message.contains("Standard_RAGRS"),
        "{message}"
    );
    let (_, _, message) = invalid(&account("kind = \"StorageV3\""));
    assert!(
        message.contains("StorageV3") && message.contains("BlockBlobStorage"),
        "{message}"
    );
    let (_, _, message) = invalid(&account("key_expiration_days = 0"));
    assert!(message.contains("key_expiration_days"), "{message}");
    World::from_toml_str(
        &account(
            "sku = \"Standard_RAGZRS\"\nkind = \"BlockBlobStorage\"\nkey_expiration_days = 90",
        ),
        "w.toml",
    )
    .expect("valid");
}

#[test]
fn secrets_with_more_tags_than_key_vault_allows_are_refused() {
    let tags = |n: usize| {
        (0..n)
            .map(|i| format!("t{i} = \"v\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let vault = |n: usize| {
        format!(
            "{MINIMAL}\n[[key_vault]]\nname = \"kv1\"\nresource_group = \"rg\"\n[[key_vault.secret]]\nname = \"s\"\nvalue = \"x\"\ntags = {{ {} }}\n",
            tags(n)
        )
    };
    World::from_toml_str(&vault(15), "w.toml").expect("15 tags are allowed");
    let (_, _, message) = invalid(&vault(16));
    assert!(
        message.contains("16 tags") && message.contains("at most 15"),
        "{message}"
    );
}

#[test]
fn files_are_read_and_missing_files_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("w.toml");
    std::fs::write(&path, MINIMAL).expect("write");
    World::from_toml_file(&path).expect("valid");
    let missing = dir.path().join("nope.toml");
    let e = World::from_toml_file(&missing).expect_err("missing");
    assert!(e.to_string().contains("nope.toml"), "{e}");
}

#[test]
fn web_apps_and_factories_refer_only_to_what_the_world_defines() {
    let base = format!(
        "{MINIMAL}\n[[storage_account]]\nname = \"acct\"\nresource_group = \"rg\"\n\n[[key_vault]]\nname = \"kv-a\"\nresource_group = \"rg\"\n"
    );
    let ok = format!(
        r#"{base}
[[web_app]]
name = "func"
resource_group = "rg"
kind = "functionapp"
[[web_app.app_setting]]
name = "AzureWebJobsStorage"
value_from = {{ account = "acct", key = "key1", format = "connection-string" }}
[[web_app.connection_string]]
name = "Db"
type = "SQLAzure"
value = "Server=x"
[[web_app.slot]]
name = "staging"
[[web_app.slot.app_setting]]
name = "Ref"
key_vault_reference = {{ vault = "kv-a", secret = "s" }}

[[data_factory]]
name = "adf"
resource_group = "rg"
[[data_factory.linked_service]]
name = "kvls"
type = "AzureKeyVault"
key_vault = "kv-a"
[[data_factory.linked_service]]
name = "blob"
type = "AzureBlobStorage"
key_vault_secret = {{ linked_service = "kvls", secret = "s" }}
[[data_factory.linked_service]]
name = "gen2"
type = "AzureBlobFS"
account = "acct"
value_from = {{ account = "acct", key = "key2" }}

[[role_assignment]]
principal = "p"
role = "Website Contributor"
scope = "/subscriptions/3c9e5b1d-2a4f-4e6b-9c8d-0f1e2d3c4b5a/resourceGroups/rg/providers/Microsoft.Web/sites/func/slots/staging"

[[role_assignment]]
principal = "p"
role = "673868aa-7521-48a0-acc6-0f60742d39f5"
scope = "/subscriptions/3c9e5b1d-2a4f-4e6b-9c8d-0f1e2d3c4b5a/resourceGroups/rg/providers/Microsoft.DataFactory/factories/adf"
"#
    );
    let w = World::from_toml_str(&ok, "w.toml").expect("valid");
    assert_eq!(w.web_apps[0].slots.len(), 1);
    assert_eq!(w.data_factories[0].linked_services.len(), 3);

    for (bad, wanted) in [
        (
            ok.replace(
                "account = \"acct\", key = \"key1\"",
                "account = \"nope\", key = \"key1\"",
            ),
            "no [[storage_account]] is named nope",
        ),
        (
            ok.replace("vault = \"kv-a\", secret", "vault = \"kv-b\", secret"),
            "no [[key_vault]] is named kv-b",
        ),
        (
            ok.replace("linked_service = \"kvls\"", "linked_service = \"blob\""),
            "not an AzureKeyVault linked service",
        ),
        (
            ok.replace("type = \"SQLAzure\"", "type = \"Oracle\""),
            "connection string type",
        ),
        (
            ok.replace("kind = \"functionapp\"", "kind = \"api\""),
            "kind \"api\"",
        ),
        (
            ok.replace("name = \"staging\"", "name = \"production\""),
            "slot production",
        ),
        (
            ok.replace(
                "value = \"Server=x\"",
                "value = \"Server=x\"\nvalue_from = { account = \"acct\", key = \"key1\" }",
            ),
            "exactly one of",
        ),
        (
            ok.replace("account = \"acct\"\nvalue_from", "value_from"),
            "needs `account",
        ),
    ] {
        let (_, _, message) = invalid(&bad);
        assert!(message.contains(wanted), "{message} (wanted {wanted})");
    }
}

/// The monitor sections: workspaces, diagnostic settings and simulated clients, each
/// reference checked and each refusal at the value at fault.
#[test]
fn monitor_sections_are_checked() {
    let base = format!(
        "{MINIMAL}\n[[storage_account]]\nname = \"acct\"\nresource_group = \"rg\"\n\n[[log_analytics_workspace]]\nname = \"logs\"\nresource_group = \"rg\"\nworkspace_id = \"4e1d2c3b-5a6f-4b7c-8d9e-0f1a2b3c4d5e\"\n"
    );
    let setting = |extra: &str| {
        format!(
            "{base}\n[[diagnostic_setting]]\nname = \"s\"\naccount = \"acct\"\nworkspace = \"logs\"\n{extra}\n"
        )
    };
    World::from_toml_str(&setting("categories = [\"StorageRead\"]"), "w.toml").expect("valid");
    World::from_toml_str(
        &setting("category_groups = [\"allLogs\"]\nservice = \"queue\""),
        "w.toml",
    )
    .expect("valid");
    for (extra, needle) in [
        ("categories = [\"AuditEvent\"]", "AuditEvent"),
        ("category_groups = [\"everything\"]", "everything"),
        ("", "categories"),
        ("categories = [\"StorageRead\"]\nservice = \"disk\"", "disk"),
    ] {
        let (_, _, message) = invalid(&setting(extra));
        assert!(message.contains(needle), "{extra}: {message}");
    }
    let (line, column, message) = invalid(&format!(
        "{base}\n[[diagnostic_setting]]\nname = \"s\"\naccount = \"acct\"\nworkspace = \"nope\"\ncategories = [\"StorageRead\"]\n"
    ));
    assert!(
        message.contains("no [[log_analytics_workspace]] is named nope"),
        "{message}"
    );
    assert_eq!((line, column), (base.lines().count() + 5, 13));
    // One sink may not receive one category from two settings of one resource.
    let (_, _, message) = invalid(&format!(
        "{}\n[[diagnostic_setting]]\nname = \"t\"\naccount = \"acct\"\nworkspace = \"logs\"\ncategory_groups = [\"audit\"]\ncategories = []\n",
        setting("categories = [\"StorageWrite\"]")
    ));
    assert!(
        message.contains("already receives StorageWrite"),
        "{message}"
    );

    let client = |extra: &str| {
        format!(
            "{base}\n[[client]]\nname = \"c\"\naccount = \"acct\"\nkey = \"key2\"\ncaller_ip = \"10.0.0.1\"\n{extra}\n"
        )
    };
    World::from_toml_str(&client(""), "w.toml").expect("valid");
    World::from_toml_str(
        &client("interval_secs = 1.5\noperation = \"GetAccountInformation\"\nenabled = false"),
        "w.toml",
    )
    .expect("valid");
    for (extra, needle) in [
        ("interval_secs = 0.0", "interval_secs"),
        ("interval_secs = 1e308", "interval_secs"),
        ("user_agent = \"\"", "user_agent"),
        ("operation = \"PutBlob\"", "PutBlob"),
    ] {
        let (_, _, message) = invalid(&client(extra));
        assert!(message.contains(needle), "{extra}: {message}");
    }
    let (_, _, message) =
        invalid(&client("").replace("caller_ip = \"10.0.0.1\"", "caller_ip = \"ten.zero\""));
    assert!(message.contains("caller_ip"), "{message}");
    let (_, _, message) = invalid(&client("").replace("account = \"acct\"", "account = \"other\""));
    assert!(
        message.contains("no [[storage_account]] is named other"),
        "{message}"
    );
    let (_, _, message) = invalid(&format!(
        "{base}\n[settings]\nlog_ingestion_delay_secs = -5\n"
    ));
    assert!(message.contains("log_ingestion_delay_secs"), "{message}");

    let mut w = World::from_toml_str(&client(""), "w.toml").expect("valid");
    assert!(w.set_client_enabled("c", false));
    assert!(!w.clients[0].enabled);
    assert!(!w.set_client_enabled("d", true));
}

#[test]
fn principal_certificates_must_be_pem_certificates() {
    let src = format!(
        "{MINIMAL}\n[[principal]]\nname = \"q\"\nclient_id = \"1b4e2f17-6a3c-4d8e-b5f1-2c7a0d9e8f34\"\nobject_id = \"12a9c4d6-1b3f-4a5e-8c7d-9f0b1a2c3d4e\"\ncertificates = [\"not a certificate\"]\n"
    );
    let (line, _, message) = invalid(&src);
    assert!(
        message.contains("a certificate of principal q is unusable"),
        "{message}"
    );
    assert!(line > 1);
    // The demo world's registered certificate parses.
    let w = World::from_toml_str(DEMO_TOML, "demo.toml").expect("the demo world parses");
    assert!(w.principals.iter().any(|p| !p.certificates.is_empty()));
}
