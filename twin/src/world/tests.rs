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
    for (setting, why) in [
        ("propagation_delay_secs = 1e308", "at most 86400"),
        ("arm_write_burst = 0", "at least 1"),
        ("keyvault_read_burst = 0", "at least 1"),
        ("token_lifetime_secs = 0", "at least 1"),
    ] {
        let (_, _, message) = invalid(&format!("{MINIMAL}\n[settings]\n{setting}\n"));
        assert!(message.contains(why), "{setting}: {message}");
    }
    let src = format!(
        "{MINIMAL}\n[[storage_account]]\nname = \"acctsku\"\nresource_group = \"rg\"\nsku = \"Standard_XYZ\"\n"
    );
    let (_, _, message) = invalid(&src);
    assert!(message.contains("Standard_LRS"), "{message}");
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
