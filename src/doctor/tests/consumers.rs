//! Rows about consumers: datastores, Key Vault versions, Databricks scopes, and the
//! consumers' keys together.

use super::*;
use crate::consumer::datastore::DatastoresFacts;
use crate::consumer::key_vault::SecretFacts;

#[test]
fn a_healthy_plan_has_nothing_to_report_and_names_the_active_key() {
    let plan = plan("discover = true");
    let r = report(&plan, &healthy(&plan));
    assert!(!r.blocking, "{:#?}", r.checks);
    assert!(
        r.checks
            .iter()
            .all(|c| c.status == Status::Ok && c.fix.is_none()),
        "{:#?}",
        statuses(&r)
    );
    let consumers = row(&r, "consumers");
    match &consumers.facts {
        Facts::Consumers { active, holdings } => {
            assert_eq!(*active, Some(KeyName::Key1));
            // workspace, two discovered datastores, the vault secret, Databricks.
            let holds: Vec<Holds> = holdings.iter().map(|h| h.holds).collect();
            assert_eq!(
                holds,
                vec![
                    Holds::Key1,
                    Holds::Key1,
                    Holds::Key1,
                    Holds::Key1,
                    Holds::Unknown
                ]
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        consumers.finding.contains("key2 the standby"),
        "{}",
        consumers.finding
    );
}

#[test]
fn a_named_list_that_misses_a_key_based_datastore_or_names_an_unusable_one_blocks() {
    let plan = plan(r#"datastores = ["workspaceblobstore", "public_samples", "gone"]"#);
    assert!(matches!(
        workspace_table(&plan).datastores,
        Datastores::Named(_)
    ));
    let r = report(&plan, &healthy(&plan));
    let ds = row(&r, "datastores");
    assert_eq!(ds.status, Status::Error);
    assert!(
        ds.finding.contains("training_data uses stacct01's key"),
        "{}",
        ds.finding
    );
    assert!(
        ds.finding
            .contains("public_samples (it uses Sas credentials"),
        "{}",
        ds.finding
    );
    assert!(
        ds.finding.contains("gone (no such datastore"),
        "{}",
        ds.finding
    );
    let fix = ds.fix.as_deref().unwrap_or_default();
    assert!(
        fix.contains("add training_data") && fix.contains("discover = true"),
        "{fix}"
    );
    match &ds.facts {
        Facts::Consumer(ConsumerFacts::Datastores(DatastoresFacts {
            missed, datastores, ..
        })) => {
            assert_eq!(missed, &vec!["training_data".to_owned()]);
            let covered: Vec<&str> = datastores
                .iter()
                .filter(|d| d.covered)
                .map(|d| d.name.as_str())
                .collect();
            assert_eq!(covered, vec!["workspaceblobstore"]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_secret_on_the_other_key_splits_the_consumers_and_old_versions_only_warn() {
    let plan = plan("discover = true");
    let mut seen = healthy(&plan);
    secret_seen(&mut seen).versions = Got::Done(vec![
        (version("v3", true, 20), Got::Done(Some(fp("k2")))),
        (version("v2", false, 10), Got::NotTried("disabled".into())),
        (version("v1", true, 0), Got::Done(Some(fp("k1")))),
    ]);
    let r = report(&plan, &seen);
    let secret = row(&r, "key_vault_secret");
    assert_eq!(secret.status, Status::Warning, "{}", secret.finding);
    assert!(
        secret
            .finding
            .contains("1 older enabled version still holds key1"),
        "{}",
        secret.finding
    );
    match &secret.facts {
        Facts::Consumer(ConsumerFacts::KeyVaultSecret(SecretFacts { versions, .. })) => {
            let seen: Vec<(&str, Holds)> = versions
                .iter()
                .map(|v| (v.version.as_str(), v.holds))
                .collect();
            assert_eq!(
                seen,
                vec![
                    ("v3", Holds::Key2),
                    ("v2", Holds::Unknown),
                    ("v1", Holds::Key1)
                ]
            );
        }
        other => panic!("{other:?}"),
    }
    let consumers = row(&r, "consumers");
    assert_eq!(consumers.status, Status::Error);
    assert!(
        consumers.finding.contains("split: 3 on key1, 1 on key2"),
        "{}",
        consumers.finding
    );

    // The same old version under a current version on key1 is only a warning.
    secret_seen(&mut seen).versions = Got::Done(vec![
        (version("v3", true, 20), Got::Done(Some(fp("k1")))),
        (version("v2", true, 10), Got::Done(Some(fp("k2")))),
    ]);
    let r = report(&plan, &seen);
    assert!(!r.blocking, "{:#?}", statuses(&r));
    assert_eq!(row(&r, "key_vault_secret").status, Status::Warning);
}

#[test]
fn a_current_version_that_is_disabled_or_holds_neither_key_blocks() {
    let plan = plan("discover = true");
    let mut seen = healthy(&plan);
    secret_seen(&mut seen).versions = Got::Done(vec![(
        version("v1", false, 0),
        Got::NotTried("disabled".into()),
    )]);
    assert_eq!(
        row(&report(&plan, &seen), "key_vault_secret").status,
        Status::Error
    );
    secret_seen(&mut seen).versions =
        Got::Done(vec![(version("v1", true, 0), Got::Done(Some(fp("old"))))]);
    let r = report(&plan, &seen);
    assert_eq!(row(&r, "key_vault_secret").status, Status::Error);
    assert!(row(&r, "consumers").finding.contains("1 on neither key"));
    // A connection string without an account key holds neither key either.
    secret_seen(&mut seen).versions = Got::Done(vec![(version("v1", true, 0), Got::Done(None))]);
    assert_eq!(
        row(&report(&plan, &seen), "key_vault_secret").status,
        Status::Error
    );
}

#[test]
fn a_key_vault_backed_or_missing_scope_blocks_with_the_fix() {
    let plan = plan("discover = true");
    let mut seen = healthy(&plan);
    databricks_seen(&mut seen).scope = Got::Done(Some(SecretScope {
        name: "datasci".into(),
        backend: ScopeBackend::AzureKeyVault {
            resource_id: Some(VAULT_ID.into()),
            dns_name: Some("https://kv.vault.azure.net/".into()),
        },
    }));
    databricks_seen(&mut seen).secrets = Got::NotTried("not Databricks-backed".into());
    let r = report(&plan, &seen);
    let d = row(&r, "databricks");
    assert_eq!(d.status, Status::Error);
    assert!(d.finding.contains("Key Vault-backed"), "{}", d.finding);
    assert!(
        d.fix
            .as_deref()
            .unwrap_or_default()
            .contains("[[key_vault]]")
    );

    databricks_seen(&mut seen).scope = Got::Done(None);
    let d = report(&plan, &seen);
    assert!(
        row(&d, "databricks")
            .fix
            .as_deref()
            .unwrap_or_default()
            .contains("create-scope datasci")
    );
}
