//! doctor names every consumer of the account that a plan leaves out (a warning;
//! `--strict` blocks), and checks the usage gate's logs and access.

use super::{Install, examine};
use crate::support::twin::{OPERATOR, TestTwin};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_missing_consumers_makes_doctor_name_each_one() {
    let twin = TestTwin::start();
    let install = Install::new(&twin, OPERATOR);
    let plan = install.dir.path().join("plans/demo.toml");
    let vault = &twin.endpoints.key_vaults["kv-datasci"].url;
    std::fs::write(
        &plan,
        format!(
            "storage_account = \"{}\"\n\n[[key_vault]]\nvault = \"{vault}\"\nsecret = \"stdatasci001-key\"\nformat = \"raw-key\"\n",
            twin.account_id("stdatasci001")
        ),
    )
    .unwrap();
    let (code, text, json) = examine(&twin, &install).await;
    assert_eq!(code, 0, "a warning does not block:\n{text}");
    let row = json["plans"][0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "unlisted")
        .cloned()
        .expect("an unlisted row");
    assert_eq!(row["status"], "warning");
    let missing: Vec<&str> = row["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["consumer"].as_str().unwrap())
        .collect();
    // Every consumer but the listed secret (no Databricks workspace is configured):
    // the Function app's setting and the Data Factory linked service too.
    assert_eq!(missing.len(), 8, "{missing:?}");
    for name in [
        "appsettings/AzureWebJobsStorage",
        "linkedservices/ls_stdatasci001_blob",
        "stdatasci001-connection-string",
        "workspaces/mlw-datasci",
        "datastores/workspaceblobstore",
        "datastores/training_data",
        "datastores/feature_snapshots",
        "datastores/workspaceworkingdirectory",
    ] {
        assert!(
            missing.iter().any(|m| m.ends_with(name)),
            "{name}: {missing:?}"
        );
        let short = name.rsplit('/').next().unwrap();
        let short = short.trim_start_matches("ls_");
        assert!(text.contains(short), "the table names {short}:\n{text}");
    }
    assert!(text.contains("keyflip plan discover"), "{text}");
    assert!(
        row["not_rotatable"][0]["subject"]
            .as_str()
            .is_some_and(|s| s.contains("public_samples")),
        "{row}"
    );

    // --strict: the same consumers block.
    let (code, out, _) = install.doctor(&["--strict"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("✗  unlisted"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_checks_the_usage_gates_logs_and_access() {
    // The demo plan's gate reads blob logs, which the demo world sends to log-datasci.
    let twin = TestTwin::start();
    let install = Install::new(&twin, OPERATOR);
    let (_, text, json) = examine(&twin, &install).await;
    let checks = json["plans"][0]["checks"].as_array().unwrap();
    let logs = checks
        .iter()
        .find(|c| c["check"] == "usage_gate_logs")
        .expect("a logs row");
    assert_eq!(logs["status"], "ok", "{text}");
    assert_eq!(logs["services"][0]["setting"], "blob-logs-to-log-datasci");
    let query = checks
        .iter()
        .find(|c| c["check"] == "usage_gate_query")
        .expect("a query row");
    assert_eq!(query["status"], "ok", "{text}");
    assert_eq!(
        query["required"][0],
        "Microsoft.OperationalInsights/workspaces/query/StorageBlobLogs/read"
    );

    // A gate that also reads queue logs, which nothing sends there: blocking.
    let plan = install.dir.path().join("plans/demo.toml");
    let text = std::fs::read_to_string(&plan)
        .unwrap()
        .replace("services = [\"blob\"]", "services = [\"blob\", \"queue\"]");
    std::fs::write(&plan, text).unwrap();
    let (code, out, _) = install.doctor(&[]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("no diagnostic setting sends the queue request logs"),
        "{out}"
    );
}
