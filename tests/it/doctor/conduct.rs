//! How doctor behaves: usage errors before any request, the installation's
//! fingerprint key, reads that run concurrently.

use super::*;

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

    let (code, out, _) = install.doctor(&["--plan", "dmeo", "--output", "json"]);
    assert_eq!(code, 2);
    let error: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(error["exit"], 2);
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("did you mean `demo`?")
    );

    let (code, out, _) = install.doctor(&["--plan", "demo"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("keyflip doctor: 1 plan;"), "{out}");
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

/// Independent reads do not wait for each other: while the storage account read hangs
/// in the twin, the permission, datastore, Key Vault and Databricks reads all arrive.
/// (No timing is measured: the test waits for those requests to show up in the log.)
#[tokio::test]
async fn independent_reads_run_concurrently() {
    let twin = TestTwin::start();
    let install = Install::new(&twin, OPERATOR);
    twin.fault(serde_json::json!({
        "operation": "storage.get", "count": 0, "action": {"kind": "hang"}
    }))
    .await;
    let since = twin.requests().await.len();
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyflip"))
        .env_clear()
        .arg("--config")
        .arg(&install.config)
        .arg("doctor")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("keyflip starts");
    let wanted = [
        ("authz.permissions", 3),
        ("ml.datastore.list", 1),
        ("ml.datastore.listSecrets", 4),
        ("keyvault.versions", 2),
        ("databricks.scopes", 1),
        ("storage.listKeys", 1),
    ];
    let mut seen = Vec::new();
    // A guard against a doctor that never sends them, not a speed requirement.
    for _ in 0..600 {
        seen = twin.requests().await.split_off(since);
        let count = |op: &str| {
            seen.iter()
                .filter(|e| e["operation"] == op && !e["status"].is_null())
                .count()
        };
        if wanted.iter().all(|(op, n)| count(op) >= *n) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let get: Vec<&Value> = seen
        .iter()
        .filter(|e| e["operation"] == "storage.get")
        .collect();
    assert_eq!(get.len(), 1, "{seen:#?}");
    assert!(get[0]["status"].is_null(), "the account read still hangs");
    for (op, n) in wanted {
        let done = seen
            .iter()
            .filter(|e| e["operation"] == op && !e["status"].is_null())
            .count();
        assert!(
            done >= n,
            "{op}: {done} of {n} answered while storage.get hung: {seen:#?}"
        );
    }
}

/// No key, secret value, client secret or token reaches stdout or stderr, even at
/// trace level.
#[tokio::test]
async fn no_secret_reaches_the_output_or_the_logs() {
    let twin = TestTwin::start();
    let install = Install::new(&twin, OPERATOR);
    let (code, out, err) = install.doctor(&["-vv", "--output", "json"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.lines().count() > 10, "trace logging is on:\n{err}");
    let (key1, key2) = twin.keys(ACCOUNT).await;
    let client_secret = &twin.endpoints.principals[OPERATOR].client_secret;
    for (name, secret) in [
        ("key1", &key1),
        ("key2", &key2),
        ("client secret", client_secret),
    ] {
        assert!(!out.contains(secret.as_str()), "{name} in stdout");
        assert!(!err.contains(secret.as_str()), "{name} in stderr");
    }
    // Entra ID tokens are JWTs: base64 of `{"` starts every one of them.
    assert!(
        !err.contains("eyJ") && !out.contains("eyJ"),
        "a token was logged"
    );
}
