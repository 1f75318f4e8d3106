//! `keyflip doctor` end to end: the real binary, a keyflip.toml and plans directory
//! written here, and an in-process keyflip-twin reached over HTTPS. Each test checks
//! what the operator is told (the table, snapshotted with ids, fingerprints and times
//! redacted; the JSON, which must say the same), the exit code, and from the twin's
//! request log and state that doctor changed nothing.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use keyflip::azure::keyvault::NewSecretVersion;
use keyflip::azure::storage::StorageAccountPatch;
use keyflip::secret::StorageKey;
use serde_json::Value;

use crate::support::twin::{ACCOUNT, OPERATOR, READER, TestTwin, VAULT};

/// Operations that only read. Everything doctor sends must be one of these (or a
/// request that reached no operation, such as Key Vault's unauthenticated challenge).
const READS: &[&str] = &[
    "entra.token",
    "entra.discovery",
    "storage.get",
    "storage.listKeys",
    "ml.workspace.get",
    "ml.workspace.listKeys",
    "ml.datastore.list",
    "ml.datastore.get",
    "ml.datastore.listSecrets",
    "authz.permissions",
    "keyvault.get",
    "keyvault.versions",
    "blob.accountInfo",
    "databricks.scopes",
    "databricks.list",
];

/// A keyflip installation pointed at a twin: keyflip.toml, a client secret file
/// (0600), the demo plan with the twin's address, and an empty state directory.
struct Install {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Install {
    fn new(twin: &TestTwin, principal: &str) -> Install {
        let dir = tempfile::tempdir().unwrap();
        let e = &twin.endpoints;
        let secret = dir.path().join("client.secret");
        std::fs::write(&secret, &e.principals[principal].client_secret).unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(
            dir.path().join("ca.pem"),
            std::fs::read(twin.dir.path().join("ca.pem")).unwrap(),
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("plans")).unwrap();
        std::fs::create_dir(dir.path().join("state")).unwrap();
        let demo = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/rotation-plans/demo.toml"
        ))
        .unwrap();
        std::fs::write(
            dir.path().join("plans/demo.toml"),
            demo.replace("https://127.0.0.1:47443", &e.base_url),
        )
        .unwrap();
        let config = dir.path().join("keyflip.toml");
        std::fs::write(
            &config,
            format!(
                r#"plans_dir = "plans"
state_dir = "state"

[cloud]
name = "custom"
arm_url = "{arm}"
arm_audience = "{audience}"
authority_host = "{authority}"
key_vault_suffix = "vault.azure.net"
ca_bundle = "ca.pem"

[credential]
kind = "client-secret"
tenant_id = "{tenant}"
client_id = "{client}"
client_secret_file = "client.secret"
"#,
                arm = e.arm_url,
                audience = e.arm_audience,
                authority = e.authority_host,
                tenant = e.tenant_id,
                client = e.principals[principal].client_id,
            ),
        )
        .unwrap();
        Install { dir, config }
    }

    /// Runs `keyflip doctor ARGS`: (exit code, stdout, stderr).
    fn doctor(&self, args: &[&str]) -> (i32, String, String) {
        let output = Command::new(env!("CARGO_BIN_EXE_keyflip"))
            .env_clear()
            .arg("--config")
            .arg(&self.config)
            .arg("doctor")
            .args(args)
            .output()
            .expect("keyflip runs");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8(output.stdout).unwrap(),
            String::from_utf8(output.stderr).unwrap(),
        )
    }

    fn json(&self) -> (i32, Value) {
        let (code, out, err) = self.doctor(&["--output", "json"]);
        let json = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("--output json is not JSON ({e}):\n{out}\n{err}"));
        (code, json)
    }
}

/// Runs doctor as table and as JSON, checks both say the same and that the twin saw
/// only reads and kept its state; returns (exit code, table, JSON).
async fn examine(twin: &TestTwin, install: &Install) -> (i32, String, Value) {
    let before = twin.state().await;
    let since = twin.requests().await.len();
    let (code, text, err) = install.doctor(&[]);
    let (json_code, json) = install.json();
    assert_eq!(code, json_code, "both forms exit alike; stderr:\n{err}");
    same_report(&text, &json);

    let log = twin.requests().await;
    let ours = &log[since..];
    for entry in ours {
        let operation = entry["operation"].as_str();
        assert!(
            operation.is_none_or(|op| READS.contains(&op)),
            "doctor sent {entry}, which is not a read"
        );
        if operation.is_none() {
            assert_eq!(entry["method"], "GET", "{entry}");
        }
    }
    assert_eq!(
        twin.state().await,
        before,
        "doctor changed the twin's state"
    );
    assert!(
        !install.dir.path().join("state/fingerprint.key").exists(),
        "doctor created a fingerprint key"
    );
    assert!(
        std::fs::read_dir(install.dir.path().join("state"))
            .unwrap()
            .next()
            .is_none(),
        "doctor wrote into the state directory"
    );
    (code, text, json)
}

/// Every JSON check is a table row with the same symbol, subject and finding, and its
/// fix is printed; the table has no other rows. The two come from two runs, so what
/// differs between runs (request ids) is redacted on both sides first.
fn same_report(text: &str, json: &Value) {
    let text = &normalize(text);
    let symbols = [
        ("ok", "✓"),
        ("warning", "!"),
        ("skipped", "-"),
        ("error", "✗"),
    ];
    let mut rows = 0;
    for plan in json["plans"].as_array().unwrap() {
        assert!(text.contains(&format!("plan {}  (", plan["plan"].as_str().unwrap())));
        for check in plan["checks"].as_array().unwrap() {
            let status = check["status"].as_str().unwrap();
            let symbol = symbols.iter().find(|(s, _)| *s == status).unwrap().1;
            let subject = check["subject"].as_str().unwrap();
            let finding = normalize(check["finding"].as_str().unwrap());
            let finding = finding.trim_end();
            assert!(
                text.lines().any(|l| l.starts_with(&format!("  {symbol}  "))
                    && l.contains(subject)
                    && l.ends_with(finding)),
                "no table row for {check}\n{text}"
            );
            if let Some(fix) = check["fix"].as_str() {
                let fix = normalize(fix);
                assert!(
                    text.contains(&format!("→ what to do: {}", fix.trim_end())),
                    "{fix}"
                );
            }
            rows += 1;
        }
    }
    let table_rows = text
        .lines()
        .filter(|l| {
            ["  ✓  ", "  !  ", "  -  ", "  ✗  "]
                .iter()
                .any(|s| l.starts_with(s))
        })
        .count();
    assert_eq!(table_rows, rows, "{text}");
    let blocked = json["blocking"].as_bool().unwrap();
    assert_eq!(text.contains("a rotation would be blocked"), blocked);
}

fn checks<'a>(json: &'a Value, kind: &str) -> Vec<&'a Value> {
    json["plans"][0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["check"] == kind)
        .collect()
}

fn check<'a>(json: &'a Value, kind: &str, subject: &str) -> &'a Value {
    checks(json, kind)
        .into_iter()
        .find(|c| c["subject"] == subject)
        .unwrap_or_else(|| panic!("no {kind} check for {subject} in {json:#}"))
}

/// The table with everything that changes between runs replaced.
fn redact(text: &str, twin: &TestTwin, install: &Install) -> String {
    normalize(
        &text
            .replace(&twin.endpoints.base_url, "https://twin")
            .replace(&install.dir.path().display().to_string(), "<dir>"),
    )
}

/// Ids, fingerprints and times replaced, word by word.
fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let words: Vec<String> = line.split(' ').map(redact_word).collect();
        out.push_str(&words.join(" "));
        out.push('\n');
    }
    out
}

fn redact_word(word: &str) -> String {
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    let digits = |s: &str, shape: &str| {
        s.len() == shape.len()
            && s.bytes().zip(shape.bytes()).all(|(c, p)| {
                if p == b'9' {
                    c.is_ascii_digit()
                } else {
                    c == p
                }
            })
    };
    if let Some(rest) = word.strip_prefix("fp:")
        && rest.len() >= 12
        && hex(&rest[..12])
    {
        return format!("fp:<fingerprint>{}", &rest[12..]);
    }
    if word.len() == 32 && hex(word) {
        return "<version>".into();
    }
    if digits(word, "9999-99-99") {
        return "<date>".into();
    }
    if digits(word, "99:99") || digits(word, "99:99;") {
        return format!("<time>{}", &word[5..]);
    }
    // Request ids: `(request id 3f2a…)` and the like.
    let trimmed = word.trim_end_matches([')', ':', ',', ';']);
    if trimmed.len() == 36 && trimmed.matches('-').count() == 4 && !word.starts_with('/') {
        let known = trimmed == "3c9e5b1d-2a4f-4e6b-9c8d-0f1e2d3c4b5a"
            || trimmed == "2ff814a6-3304-4ab8-85cb-cd0e6f879c1d";
        if !known && trimmed.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            return format!("<id>{}", &word[36..]);
        }
    }
    word.to_owned()
}

/// Compares `actual` with `tests/it/snapshots/{name}.txt`. With `UPDATE_SNAPSHOTS=1`
/// (or when the file is missing) writes it instead; a missing file still fails, so a
/// new snapshot is always looked at before it is trusted.
fn snapshot(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/snapshots")
        .join(format!("{name}.txt"));
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some();
    match std::fs::read_to_string(&path) {
        Ok(expected) if !update => {
            if expected != actual {
                let first = expected
                    .lines()
                    .zip(actual.lines())
                    .position(|(a, b)| a != b)
                    .unwrap_or(expected.lines().count().min(actual.lines().count()));
                panic!(
                    "{} differs from the output (first difference at line {}; UPDATE_SNAPSHOTS=1 rewrites it):\n--- expected\n{expected}\n--- actual\n{actual}",
                    path.display(),
                    first + 1
                );
            }
        }
        _ => {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, actual).unwrap();
            assert!(
                update,
                "wrote a new snapshot {}; review it and run again",
                path.display()
            );
        }
    }
}

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
    assert_eq!(checks(&json, "permissions").len(), 3);
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
    let consumers = &checks(&json, "consumers")[0];
    assert_eq!(consumers["active"], "key1");
    assert_eq!(consumers["holdings"].as_array().unwrap().len(), 8);

    // Never a key value, in either form.
    let (k1, k2) = twin.keys(ACCOUNT).await;
    for shown in [&text, &json.to_string()] {
        assert!(!shown.contains(&k1) && !shown.contains(&k2));
    }

    // Doctor did look: the reads that answer each question are in the log.
    let log = twin.requests().await;
    let count = |op: &str| log[since..].iter().filter(|e| e["operation"] == op).count();
    // Two runs (table and JSON), each probing both keys and asking about three scopes.
    assert_eq!(count("blob.accountInfo"), 4);
    assert_eq!(count("authz.permissions"), 6);
    assert_eq!(count("ml.datastore.listSecrets"), 8);

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
}

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
            .starts_with("split: 6 on key1, 1 on key2")
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
async fn an_unknown_plan_is_a_usage_error_before_any_request() {
    let twin = TestTwin::start();
    let install = Install::new(&twin, OPERATOR);
    let since = twin.requests().await.len();
    let (code, out, err) = install.doctor(&["--plan", "dmeo"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("no plan named `dmeo`"), "{err}");
    assert!(err.contains("did you mean `demo`?"), "{err}");
    assert_eq!(twin.requests().await.len(), since);

    let (code, out, _) = install.doctor(&["--plan", "demo"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("keyflip doctor: 1 plan;"), "{out}");
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
async fn fingerprints_use_the_installation_key_when_there_is_one() {
    let twin = TestTwin::start();
    let install = Install::new(&twin, OPERATOR);
    let path = install.dir.path().join("state/fingerprint.key");
    let bytes = [7u8; 32];
    std::fs::write(&path, bytes).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, json) = install.json();
    assert_eq!(code, 0, "{json:#}");
    assert_eq!(json["fingerprints"]["source"], "installation");
    assert_eq!(
        json["fingerprints"]["path"],
        path.display().to_string().as_str()
    );
    let (key1, _) = twin.keys(ACCOUNT).await;
    let expected = keyflip::secret::Fingerprinter::from_bytes(&bytes)
        .fingerprint(&StorageKey::new(key1))
        .to_hex();
    assert_eq!(checks(&json, "key")[0]["fingerprint"], expected.as_str());
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "the key is left as it was"
    );
}
