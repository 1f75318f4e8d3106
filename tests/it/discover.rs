//! `keyflip plan discover` and the unlisted-consumer check against keyflip-twin's demo
//! world: every consumer of stdatasci001 (two Key Vault secrets, the ML workspace,
//! four key-based datastores, the Databricks secret, the Function app's
//! `AzureWebJobsStorage`, the Data Factory linked service holding a SecureString), the
//! Key Vault references of the site, its slot and the factory as covered by their
//! secret, nothing of stexternal002 in its plan, a plan that passes `plan check` and rotates cleanly, reads only, and a
//! rotation's precheck that warns (or refuses) over what a plan leaves out.

use std::collections::BTreeSet;

use keyflip::clock::SystemClock;
use keyflip::discover::{DiscoveryCache, Holds, Request, Verdict, discover, plan_text};
use keyflip::rotation::machine::{Outcome, RefusalReason, WarningKind};
use keyflip::rotation::{NoProgress, RotateRequest};
use tokio_util::sync::CancellationToken;

use crate::support::binary::Cli;
use crate::support::engine::{Harness, assert_consumers_valid, keys_of, plan_from, writes};
use crate::support::fingerprinter;
use crate::support::twin::{ACCOUNT, OPERATOR, TestTwin};

fn request(twin: &TestTwin, accounts: &[&str]) -> Request {
    Request {
        accounts: accounts.iter().map(|a| twin.account_id(a)).collect(),
        subscriptions: None,
        sources: keyflip::config::DiscoveryConfig {
            databricks: vec![twin.databricks_url("dbw-datasci")],
        },
        written: Vec::new(),
    }
}

fn ids(found: &keyflip::discover::AccountDiscovery) -> BTreeSet<String> {
    found
        .consumers
        .iter()
        .map(|f| f.consumer.as_ref().unwrap().to_string())
        .collect()
}

/// The 10 consumers of stdatasci001 in the demo world, by id.
fn demo_consumers(twin: &TestTwin) -> BTreeSet<String> {
    let vault = twin.vault_url("kv-datasci");
    let vault = vault.as_str().trim_end_matches('/');
    let ws = twin.workspace_id("mlw-datasci");
    let dbx = twin.databricks_url("dbw-datasci");
    let dbx = dbx.as_str().trim_end_matches('/');
    let mut out: BTreeSet<String> = [
        format!("keyvault:{vault}/secrets/stdatasci001-key"),
        format!("keyvault:{vault}/secrets/stdatasci001-connection-string"),
        format!("workspace:{ws}"),
        format!("databricks:{dbx}#datasci/stdatasci001-key"),
        format!(
            "appservice:{}/config/appsettings/AzureWebJobsStorage",
            twin.site_id("func-datasci-ingest")
        ),
        format!(
            "datafactory:{}/linkedservices/ls_stdatasci001_blob",
            twin.factory_id("adf-datasci")
        ),
    ]
    .into();
    for ds in [
        "workspaceblobstore",
        "training_data",
        "feature_snapshots",
        "workspaceworkingdirectory",
    ] {
        out.insert(format!("datastore:{ws}/datastores/{ds}"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_finds_every_consumer_of_the_account_and_the_plan_it_writes_rotates_cleanly() {
    let h = Harness::start().await;
    let azure = h.twin.azure(OPERATOR);
    let cache = DiscoveryCache::one_off(std::sync::Arc::new(SystemClock));
    let found = discover(
        &azure,
        &fingerprinter(),
        &cache,
        &request(&h.twin, &[ACCOUNT]),
    )
    .await;
    let a = &found.accounts[0];
    assert!(a.error.is_none(), "{a:?}");
    assert_eq!(ids(a), demo_consumers(&h.twin));
    assert!(
        a.consumers.iter().all(|f| !f.subject.contains("external")),
        "stexternal002's datastore is not a consumer of stdatasci001"
    );
    // Every readable one holds key1; the Databricks secret and the linked service's
    // SecureString cannot be read back: probable, by name, with the reason.
    for f in &a.consumers {
        match &f.verdict {
            Verdict::Rotate => assert_eq!(f.holds, Holds::Key1, "{}", f.subject),
            Verdict::Probable { why } => {
                assert_eq!(f.holds, Holds::Unknown);
                assert!(
                    f.subject.starts_with("Databricks secret")
                        || (f.subject.starts_with("Data Factory linked service")
                            && why.contains("SecureString")
                            && why.contains("**********")),
                    "{f:?}"
                );
            }
            _ => unreachable!(),
        }
    }
    // Key Vault references are covered by the secret they read: the site's own, its
    // staging slot's AzureWebJobsStorage, and the factory's AzureKeyVaultSecret.
    let covered: BTreeSet<String> = a
        .other
        .iter()
        .filter(|f| {
            matches!(&f.verdict, Verdict::Covered { by }
                if by.contains("stdatasci001-connection-string"))
        })
        .map(|f| f.subject.clone())
        .collect();
    for subject in [
        "App Service setting func-datasci-ingest DATASCI_STORAGE_CONNECTION",
        "App Service setting func-datasci-ingest/staging AzureWebJobsStorage",
        "Data Factory linked service adf-datasci/ls_stdatasci001_blob_kv",
    ] {
        assert!(covered.contains(subject), "{subject}: {covered:?}");
    }
    // What uses the key but is not listed: the SAS datastore, and the Key
    // Vault-backed scope's secrets, covered by the vault's secrets.
    let other: Vec<String> = a.other.iter().map(|f| f.subject.clone()).collect();
    assert!(
        other.iter().any(|s| s.contains("public_samples")),
        "{other:?}"
    );
    assert!(
        a.other.iter().any(
            |f| matches!(&f.verdict, Verdict::Covered { by } if by.contains("stdatasci001-key"))
        ),
        "{other:?}"
    );
    // Reads only.
    assert!(writes(&h.twin).await.is_empty());

    // The plan passes plan check and rotates cleanly: every consumer ends on key2.
    let text = plan_text(a, chrono::Utc::now(), None).expect("a plan");
    // The staging slot's reference is refreshed by no write of the plan: App Service
    // may use the old key for up to 24 h, so the grace covers it.
    assert!(text.contains("grace = \"24h\""), "{text}");
    assert!(
        text.contains("no write of this plan restarts func-datasci-ingest/staging"),
        "{text}"
    );
    assert!(
        text.contains("[[app_service]]") && text.contains("[[data_factory]]"),
        "{text}"
    );
    let mut h = h;
    h.plan = plan_from(&text);
    assert_eq!(h.plan.consumer_ids().len(), 10);
    let report = h
        .engine()
        .rotate(
            &h.plan,
            RotateRequest::manual(),
            &NoProgress,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert!(
        matches!(report.outcome, Some(Outcome::Completed { .. })),
        "{:?}",
        report.outcome
    );
    assert!(
        report
            .warnings
            .iter()
            .all(|w| w.kind != WarningKind::UnlistedConsumer),
        "{:?}",
        report.warnings
    );
    let state = h.twin.state().await;
    let (_, key2) = keys_of(&state);
    for (name, held) in assert_consumers_valid(&state, "after the discovered plan") {
        assert_eq!(held, key2, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_scan_discovers_several_accounts_and_keeps_their_consumers_apart() {
    // The operator may list stexternal002's keys too.
    let twin = TestTwin::start_with(
        r#"
[[role_assignment]]
principal = "keyflip-operator"
role = "Storage Account Key Operator Service Role"
scope = "/subscriptions/3c9e5b1d-2a4f-4e6b-9c8d-0f1e2d3c4b5a/resourceGroups/rg-datascience/providers/Microsoft.Storage/storageAccounts/stexternal002"
"#,
    );
    let azure = twin.azure(OPERATOR);
    let cache = DiscoveryCache::one_off(std::sync::Arc::new(SystemClock));
    let alone = discover(
        &azure,
        &fingerprinter(),
        &cache,
        &request(&twin, &[ACCOUNT]),
    )
    .await;
    let both = discover(
        &azure,
        &fingerprinter(),
        &DiscoveryCache::one_off(std::sync::Arc::new(SystemClock)),
        &request(&twin, &[ACCOUNT, "stexternal002"]),
    )
    .await;
    assert_eq!(ids(&both.accounts[0]), demo_consumers(&twin));
    let ws = twin.workspace_id("mlw-datasci");
    assert_eq!(
        ids(&both.accounts[1]),
        BTreeSet::from([format!("datastore:{ws}/datastores/external_reference")])
    );
    // The second account costs its listKeys and its datastore's secret, not a second
    // pass over every vault and workspace.
    assert!(
        both.calls <= alone.calls + 2,
        "one account: {} calls, two: {}",
        alone.calls,
        both.calls
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_writes_a_plan_file_and_never_overwrites_one() {
    let cli = Cli::start().await;
    let account = cli.twin.account_id(ACCOUNT).to_string();
    let out = cli.dir.path().join("discovered.toml");
    let run = cli
        .run(&["plan", "discover", &account, "--out", out.to_str().unwrap()])
        .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr.contains("stdatasci001: 7 consumer(s)") || run.stderr.contains("consumer(s)"),
        "{}",
        run.stderr
    );
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        text.contains(
            "# Key Vault secret kv-datasci/stdatasci001-key: its current version holds key1"
        ),
        "{text}"
    );
    assert!(
        text.contains("[usage_gate]"),
        "the gate is suggested: {text}"
    );
    let check = cli.run(&["plan", "check", out.to_str().unwrap()]).await;
    assert_eq!(check.code, Some(0), "{}{}", check.stdout, check.stderr);
    // A second run does not overwrite it.
    let again = cli
        .run(&["plan", "discover", &account, "--out", out.to_str().unwrap()])
        .await;
    assert_eq!(again.code, Some(2), "{}", again.stderr);
    assert!(
        again.stderr.contains("does not overwrite"),
        "{}",
        again.stderr
    );
    // JSON: the inventory, with the consumers' ids and keys.
    let json = cli
        .run(&["plan", "discover", &account, "--output", "json"])
        .await;
    assert_eq!(json.code, Some(0), "{}", json.stderr);
    let doc = json.json();
    assert_eq!(doc["version"], 1);
    // Every consumer but the Databricks secret: this configuration names no Databricks
    // workspace under [discovery].
    assert_eq!(doc["accounts"][0]["consumers"].as_array().unwrap().len(), 9);
    // Not a storage account: refused before anything is read.
    let bad = cli
        .run(&[
            "plan",
            "discover",
            "/subscriptions/x/resourceGroups/g/providers/Microsoft.KeyVault/vaults/v",
        ])
        .await;
    assert_eq!(bad.code, Some(2), "{}", bad.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_warns_about_unlisted_consumers_or_refuses_when_the_plan_says_so() {
    let mut h = Harness::start().await;
    let vault = h.twin.vault_url("kv-datasci");
    let partial = |policy: &str| {
        format!(
            "storage_account = \"{}\"\nunlisted = \"{policy}\"\n\n[[key_vault]]\nvault = \"{}\"\nsecret = \"stdatasci001-key\"\nformat = \"raw-key\"\n",
            h.twin.account_id(ACCOUNT),
            vault.as_str().trim_end_matches('/')
        )
    };
    h.plan = plan_from(&partial("refuse"));
    let before = keys_of(&h.twin.state().await);
    let report = h
        .engine()
        .rotate(
            &h.plan,
            RotateRequest::manual(),
            &NoProgress,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    match &report.outcome {
        Some(Outcome::Refused { reasons }) => match &reasons[..] {
            [RefusalReason::UnlistedConsumers { consumers }] => {
                // Everything but the Databricks secret and the Data Factory linked
                // service, which are tied by name only (probable ones only warn).
                assert_eq!(consumers.len(), 7, "{consumers:?}");
                assert!(consumers.iter().any(|c| {
                    c.subject
                        .contains("func-datasci-ingest AzureWebJobsStorage")
                }));
                assert!(
                    consumers
                        .iter()
                        .any(|c| c.subject.contains("stdatasci001-connection-string"))
                );
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    assert_eq!(keys_of(&h.twin.state().await), before, "nothing changed");

    h.plan = plan_from(&partial("warn"));
    let dry = h
        .engine()
        .dry_run(&h.plan, RotateRequest::manual())
        .await
        .unwrap();
    let text = serde_json::to_string(&dry).unwrap();
    assert!(text.contains("is not in the plan"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_runs_no_unlisted_consumer_check_and_is_never_refused_over_one() {
    let mut h = Harness::start().await;
    let vault = h.twin.vault_url("kv-datasci");
    // A plan that leaves out seven consumers and refuses rotations over them.
    h.plan = plan_from(&format!(
        "storage_account = \"{}\"\nunlisted = \"refuse\"\n\n[[key_vault]]\nvault = \"{}\"\nsecret = \"stdatasci001-key\"\nformat = \"raw-key\"\n",
        h.twin.account_id(ACCOUNT),
        vault.as_str().trim_end_matches('/')
    ));
    let before = keys_of(&h.twin.state().await);
    let report = h
        .engine()
        .rotate(
            &h.plan,
            RotateRequest {
                mode: keyflip::rotation::machine::Mode::Leaked {
                    key: keyflip::key::KeyName::Key2,
                    revoke_first: false,
                },
                grace: None,
                trigger: keyflip::rotation::Trigger::Incident,
                by: None,
            },
            &NoProgress,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert!(
        matches!(report.outcome, Some(Outcome::Completed { .. })),
        "{:?}",
        report.outcome
    );
    let after = keys_of(&h.twin.state().await);
    assert_ne!(after.1, before.1, "the leaked key2 was regenerated");
    // Nothing routine stood before it: discovery's lists were never asked for.
    for operation in [
        "web.site.list",
        "web.appSettings.list",
        "web.connectionStrings.list",
        "ml.workspace.list",
    ] {
        assert!(
            h.twin.requests_for(operation).await.is_empty(),
            "{operation} was called during an incident"
        );
    }
    let text = serde_json::to_string(&report).unwrap();
    assert!(!text.contains("is not in the plan"), "{text}");
}

/// A subscription-wide list Azure refuses (here a 403 for each kind's list) is a
/// finding that names the kind and the subscription, never a silent gap; what the other
/// lists find is still reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_subscription_list_is_reported_per_kind_and_the_rest_is_still_found() {
    let h = Harness::start().await;
    for operation in [
        "web.site.list",
        "datafactory.factory.list",
        "keyvault.vault.list",
    ] {
        h.twin
            .fault(serde_json::json!({
                "operation": operation, "count": 0,
                "action": {"kind": "status", "status": 403}
            }))
            .await;
    }
    let azure = h.twin.azure(OPERATOR);
    let cache = DiscoveryCache::one_off(std::sync::Arc::new(SystemClock));
    let found = discover(
        &azure,
        &fingerprinter(),
        &cache,
        &request(&h.twin, &[ACCOUNT]),
    )
    .await;
    let a = &found.accounts[0];
    assert!(a.error.is_none(), "{a:?}");
    for what in ["App Service sites", "Data Factories", "key vaults"] {
        let f = a
            .other
            .iter()
            .find(|f| f.subject.starts_with(&format!("{what} of subscription ")))
            .unwrap_or_else(|| panic!("no finding for the refused list of {what}: {a:#?}"));
        assert_eq!(f.holds, Holds::Unknown);
        assert!(
            matches!(&f.verdict, Verdict::Cannot { why } if why.starts_with("cannot list them")),
            "{f:?}"
        );
    }
    // The ML workspace and its datastores come from lists that were not refused.
    let ids = ids(a);
    let ws = h.twin.workspace_id("mlw-datasci");
    assert!(ids.contains(&format!("workspace:{ws}")), "{ids:?}");
    assert!(
        !ids.iter()
            .any(|id| id.starts_with("appservice:") || id.starts_with("datafactory:")),
        "{ids:?}"
    );
}
