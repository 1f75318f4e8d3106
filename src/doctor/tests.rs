//! `doctor`'s judgement on hand-made observations: what blocks, what only warns, what
//! is skipped because another row already reports it, and that the table and the
//! JSON carry the same rows. (The reads themselves are tested against keyflip-twin in
//! `tests/it/doctor.rs`.)

use chrono::{DateTime, Utc};

use super::assess::assess;
use super::collect::*;
use super::render;
use super::report::*;
use crate::azure::databricks::{DatabricksSecret as DbxSecret, ScopeBackend, SecretScope};
use crate::azure::keyvault::SecretVersion;
use crate::azure::ml::Workspace;
use crate::azure::probe::{Probe, ProbeOutcome};
use crate::azure::roles::{actions, role_granting};
use crate::azure::storage::StorageAccount;
use crate::azure::{Call, Denial, Error};
use crate::exit::Exit;
use crate::key::KeyName;
use crate::plan::{Datastores, Plan};
use crate::secret::{Fingerprint, Fingerprinter, StorageKey};

const ACCOUNT: &str =
    "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/stacct01";
const WORKSPACE: &str = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/mlw";
const VAULT_ID: &str = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv";

fn plan(datastores: &str) -> Plan {
    let text = format!(
        r#"storage_account = "{ACCOUNT}"
[[key_vault]]
vault = "https://kv.vault.azure.net"
secret = "stacct01-key"
format = "raw-key"
vault_id = "{VAULT_ID}"
[[ml_workspace]]
workspace = "{WORKSPACE}"
resync = true
{datastores}
[[databricks]]
workspace_url = "https://adb-1.2.azuredatabricks.net"
scope = "datasci"
key = "stacct01-key"
format = "raw-key"
"#
    );
    crate::plan::parse(&text, "plans/t.toml").unwrap_or_else(|e| panic!("{e}"))
}

fn fp(value: &str) -> Fingerprint {
    Fingerprinter::from_bytes(b"doctor tests").fingerprint(&StorageKey::new(value.into()))
}

fn at(secs: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(1_700_000_000 + secs, 0)
}

fn works() -> Got<Probe> {
    Got::Done(Probe {
        outcome: ProbeOutcome::Works,
        status: Some(200),
        code: None,
        request_id: None,
        detail: String::new(),
    })
}

fn datastore(name: &str, on_account: bool, key: Got<Fingerprint>) -> DatastoreSeen {
    DatastoreSeen {
        name: name.into(),
        datastore_type: "AzureBlob".into(),
        credentials_type: if on_account { "AccountKey" } else { "Sas" }.into(),
        account_name: Some("stacct01".into()),
        uses_account_key: on_account,
        on_account,
        key,
    }
}

fn version(id: &str, enabled: bool, created: i64) -> SecretVersion {
    SecretVersion {
        name: "stacct01-key".into(),
        version: id.into(),
        enabled,
        created: at(created),
        updated: None,
        expires: None,
        content_type: None,
        tags: Default::default(),
    }
}

fn forbidden(action: crate::azure::roles::Action) -> Error {
    Error::Forbidden {
        call: Box::new(Call {
            operation: "storage.listKeys",
            target: ACCOUNT.into(),
            request_id: None,
        }),
        denial: Box::new(Denial {
            role: role_granting(&action),
            action: Some(action),
            scope: None,
            code: Some("AuthorizationFailed".into()),
            message: None,
            advice: None,
        }),
    }
}

/// Everything as the demo world starts: every consumer on key1, both keys working.
fn healthy(plan: &Plan) -> Observed {
    let account: crate::resource_id::ResourceId = ACCOUNT.parse().unwrap();
    Observed {
        tokens: [Service::Arm, Service::KeyVault, Service::Databricks]
            .into_iter()
            .map(|service| TokenSeen {
                service,
                audience: Some(format!("{service:?}")),
                result: Got::Done(()),
            })
            .collect(),
        permissions: required_permissions(plan)
            .into_iter()
            .map(|(scope, resource, required)| PermissionsSeen {
                scope,
                resource,
                required,
                missing: Got::Done(Vec::new()),
            })
            .collect(),
        account: Got::Done(StorageAccount {
            id: account.clone(),
            blob_endpoint: url::Url::parse("https://stacct01.blob.core.windows.net/").ok(),
            key1_created: at(0),
            key2_created: at(0),
            allow_shared_key_access: Some(true),
            key_expiration_days: None,
            provisioning_state: None,
        }),
        keys: Got::Done(vec![
            KeySeen {
                name: KeyName::Key1,
                fingerprint: fp("k1"),
                created: at(0),
                probe: works(),
            },
            KeySeen {
                name: KeyName::Key2,
                fingerprint: fp("k2"),
                created: at(0),
                probe: works(),
            },
        ]),
        workspaces: vec![WorkspaceSeen {
            plan: plan.ml_workspaces[0].clone(),
            workspace: Got::Done(Workspace {
                id: WORKSPACE.parse().unwrap(),
                storage_account: Some(account),
                key_vault: None,
            }),
            cached_key: Got::Done(Some(fp("k1"))),
            datastores: Got::Done(vec![
                datastore("workspaceblobstore", true, Got::Done(fp("k1"))),
                datastore("training_data", true, Got::Done(fp("k1"))),
                datastore("public_samples", false, Got::NotTried("sas".into())),
            ]),
        }],
        secrets: vec![SecretSeen {
            plan: plan.key_vault[0].clone(),
            versions: Got::Done(vec![(version("v1", true, 0), Got::Done(Some(fp("k1"))))]),
        }],
        databricks: vec![DatabricksSeen {
            plan: plan.databricks[0].clone(),
            scope: Got::Done(Some(SecretScope {
                name: "datasci".into(),
                backend: ScopeBackend::Databricks,
            })),
            secrets: Got::Done(vec![DbxSecret {
                key: "stacct01-key".into(),
                last_updated: at(0),
            }]),
        }],
    }
}

fn report(plan: &Plan, seen: &Observed) -> PlanReport {
    PlanReport::new(
        plan.name.clone(),
        plan.origin().into(),
        plan.storage_account.to_string(),
        assess(plan, seen),
    )
}

fn rows<'a>(r: &'a PlanReport, kind: &str) -> Vec<&'a Check> {
    r.checks.iter().filter(|c| c.kind() == kind).collect()
}

fn row<'a>(r: &'a PlanReport, kind: &str) -> &'a Check {
    let found = rows(r, kind);
    assert_eq!(found.len(), 1, "one {kind} row in {:#?}", r.checks);
    found[0]
}

fn statuses(r: &PlanReport) -> Vec<(&'static str, Status)> {
    r.checks.iter().map(|c| (c.kind(), c.status)).collect()
}

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
fn missing_actions_block_once_with_the_role_and_reads_they_refuse_are_skipped() {
    let plan = plan("discover = true");
    let mut seen = healthy(&plan);
    let lacks = role_granting(&actions::STORAGE_LIST_KEYS).map(|r| {
        crate::azure::authorization::MissingAction {
            action: actions::STORAGE_LIST_KEYS,
            role: Some(r),
        }
    });
    seen.permissions[0].missing = Got::Done(lacks.into_iter().collect());
    seen.keys = Got::Failed(forbidden(actions::STORAGE_LIST_KEYS));
    let r = report(&plan, &seen);
    assert!(r.blocking);
    let errors: Vec<&Check> = r
        .checks
        .iter()
        .filter(|c| c.status == Status::Error)
        .collect();
    assert_eq!(errors.len(), 1, "{:#?}", statuses(&r));
    let perm = errors[0];
    assert_eq!(perm.kind(), "permissions");
    let fix = perm.fix.as_deref().unwrap_or_default();
    assert!(
        fix.contains("'Storage Account Key Operator Service Role'") && fix.contains(ACCOUNT),
        "{fix}"
    );
    for key in rows(&r, "key") {
        assert_eq!(key.status, Status::Skipped);
        assert!(key.finding.contains("listkeys/action"), "{}", key.finding);
    }
    // Without the keys no holding can be judged.
    assert_eq!(row(&r, "consumers").status, Status::Skipped);
    assert_eq!(row(&r, "key_vault_secret").status, Status::Skipped);
}

#[test]
fn a_refusal_the_permissions_check_did_not_predict_is_an_error() {
    let plan = plan("discover = true");
    let mut seen = healthy(&plan);
    seen.keys = Got::Failed(forbidden(actions::STORAGE_LIST_KEYS));
    let r = report(&plan, &seen);
    let key1 = rows(&r, "key")[0];
    assert_eq!(key1.status, Status::Error);
    assert!(
        key1.fix
            .as_deref()
            .unwrap_or_default()
            .contains("Storage Account Key Operator")
    );
}

#[test]
fn shared_keys_disabled_blocks_and_says_how_to_allow_them() {
    let plan = plan("discover = true");
    let mut seen = healthy(&plan);
    if let Got::Done(a) = &mut seen.account {
        a.allow_shared_key_access = Some(false);
    }
    if let Got::Done(keys) = &mut seen.keys {
        for k in keys {
            k.probe = Got::Done(Probe {
                outcome: ProbeOutcome::SharedKeysDisabled,
                status: Some(403),
                code: Some("KeyBasedAuthenticationNotPermitted".into()),
                request_id: None,
                detail: String::new(),
            });
        }
    }
    let r = report(&plan, &seen);
    let account = row(&r, "storage_account");
    assert_eq!(account.status, Status::Error);
    assert!(
        account
            .fix
            .as_deref()
            .unwrap_or_default()
            .contains("--allow-shared-key-access true")
    );
    assert!(rows(&r, "key").iter().all(|k| k.status == Status::Error));
}

#[test]
fn identical_keys_block() {
    let plan = plan("discover = true");
    let mut seen = healthy(&plan);
    if let Got::Done(keys) = &mut seen.keys {
        keys[1].fingerprint = fp("k1");
    }
    let r = report(&plan, &seen);
    let key2 = rows(&r, "key")[1];
    assert_eq!(key2.status, Status::Error);
    assert!(
        key2.finding.contains("same value as key1"),
        "{}",
        key2.finding
    );
}

#[test]
fn a_named_list_that_misses_a_key_based_datastore_or_names_an_unusable_one_blocks() {
    let plan = plan(r#"datastores = ["workspaceblobstore", "public_samples", "gone"]"#);
    assert!(matches!(
        plan.ml_workspaces[0].datastores,
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
        Facts::Datastores {
            missed, datastores, ..
        } => {
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
    seen.secrets[0].versions = Got::Done(vec![
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
        Facts::KeyVaultSecret { versions, .. } => {
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
    seen.secrets[0].versions = Got::Done(vec![
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
    seen.secrets[0].versions = Got::Done(vec![(
        version("v1", false, 0),
        Got::NotTried("disabled".into()),
    )]);
    assert_eq!(
        row(&report(&plan, &seen), "key_vault_secret").status,
        Status::Error
    );
    seen.secrets[0].versions =
        Got::Done(vec![(version("v1", true, 0), Got::Done(Some(fp("old"))))]);
    let r = report(&plan, &seen);
    assert_eq!(row(&r, "key_vault_secret").status, Status::Error);
    assert!(row(&r, "consumers").finding.contains("1 on neither key"));
    // A connection string without an account key holds neither key either.
    seen.secrets[0].versions = Got::Done(vec![(version("v1", true, 0), Got::Done(None))]);
    assert_eq!(
        row(&report(&plan, &seen), "key_vault_secret").status,
        Status::Error
    );
}

#[test]
fn a_key_vault_backed_or_missing_scope_blocks_with_the_fix() {
    let plan = plan("discover = true");
    let mut seen = healthy(&plan);
    seen.databricks[0].scope = Got::Done(Some(SecretScope {
        name: "datasci".into(),
        backend: ScopeBackend::AzureKeyVault {
            resource_id: Some(VAULT_ID.into()),
            dns_name: Some("https://kv.vault.azure.net/".into()),
        },
    }));
    seen.databricks[0].secrets = Got::NotTried("not Databricks-backed".into());
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

    seen.databricks[0].scope = Got::Done(None);
    let d = report(&plan, &seen);
    assert!(
        row(&d, "databricks")
            .fix
            .as_deref()
            .unwrap_or_default()
            .contains("create-scope datasci")
    );
}

#[test]
fn without_an_arm_token_the_arm_reads_are_skipped_not_piled_on() {
    let plan = plan("discover = true");
    let mut seen = healthy(&plan);
    seen.tokens[0].result = Got::Failed(Error::Credential {
        audience: "https://management.azure.com".into(),
        detail: "AADSTS7000215: Invalid client secret provided.".into(),
        transient: false,
    });
    let why = || "no Azure Resource Manager token (see above)".to_owned();
    for p in &mut seen.permissions {
        p.missing = Got::NotTried(why());
    }
    seen.account = Got::NotTried(why());
    seen.keys = Got::NotTried(why());
    let r = report(&plan, &seen);
    let errors: Vec<&str> = r
        .checks
        .iter()
        .filter(|c| c.status == Status::Error)
        .map(|c| c.kind())
        .collect();
    assert_eq!(errors, vec!["token"]);
    assert!(
        row(&r, "storage_account")
            .finding
            .starts_with("not checked: no Azure Resource Manager token")
    );
}

#[test]
fn the_exit_code_follows_the_worst_finding() {
    let plan = plan("discover = true");
    let fingerprints = || Fingerprints {
        source: FingerprintSource::ThisRun,
        path: None,
    };
    let ok = Report::new(
        fingerprints(),
        vec![report(&plan, &healthy(&plan))],
        Vec::new(),
    );
    assert_eq!(ok.exit(), Exit::Ok);
    let mut seen = healthy(&plan);
    seen.keys = Got::Failed(forbidden(actions::STORAGE_LIST_KEYS));
    let blocked = Report::new(fingerprints(), vec![report(&plan, &seen)], Vec::new());
    assert_eq!(blocked.exit(), Exit::Refused);
    let invalid = Report::new(
        fingerprints(),
        vec![report(&plan, &healthy(&plan))],
        vec![InvalidPlan {
            file: "plans/bad.toml".into(),
            message: "plans/bad.toml:1:1: expected a table".into(),
        }],
    );
    assert_eq!(invalid.exit(), Exit::Usage);
}

#[test]
fn the_table_and_the_json_carry_the_same_rows() {
    let plan = plan(r#"datastores = ["workspaceblobstore"]"#);
    let mut seen = healthy(&plan);
    seen.keys = Got::Failed(forbidden(actions::STORAGE_LIST_KEYS));
    let report = Report::new(
        Fingerprints {
            source: FingerprintSource::ThisRun,
            path: None,
        },
        vec![report(&plan, &seen)],
        Vec::new(),
    );
    let text = render::human(&report);
    let json: serde_json::Value = serde_json::to_value(&report).unwrap();
    let checks = json["plans"][0]["checks"].as_array().unwrap();
    assert_eq!(checks.len(), report.plans[0].checks.len());
    for (check, value) in report.plans[0].checks.iter().zip(checks) {
        assert_eq!(value["check"], check.kind());
        assert_eq!(value["subject"], check.subject.as_str());
        let symbol = check.status.symbol();
        assert!(
            text.lines().any(|l| l.starts_with(&format!("  {symbol}  "))
                && l.contains(&check.subject)
                && l.ends_with(&check.finding)),
            "no row for {check:?} in\n{text}"
        );
        if let Some(fix) = &check.fix {
            assert!(text.contains(&format!("→ what to do: {fix}")), "{fix}");
        }
    }
    assert!(text.contains("a rotation would be blocked: t"), "{text}");
}
