//! `keyflip doctor` end to end: the real binary, a keyflip.toml and plans directory
//! written here, and an in-process keyflip-twin reached over HTTPS. Each test checks
//! what the operator is told (the table, snapshotted with ids, fingerprints and times
//! redacted; the JSON, which must say the same), the exit code, and from the twin's
//! request log and state that doctor changed nothing.

mod apps;
mod conduct;
mod findings;
mod principals;
mod unlisted;

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
pub(super) const READS: &[&str] = &[
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
    // Discovery (the unlisted-consumer row) and the usage gate's rows.
    "arm.subscriptions",
    "ml.workspace.list",
    "keyvault.vault.list",
    "keyvault.list",
    "monitor.diagnosticSettings.list",
    "web.site.list",
    "web.slot.list",
    "datafactory.factory.list",
    // Listing settings is a POST (`config/appsettings/list`) that reads.
    "web.appSettings.list",
    "web.connectionStrings.list",
    "datafactory.linkedService.list",
    "datafactory.linkedService.get",
];

/// A keyflip installation pointed at a twin: keyflip.toml, a client secret file
/// (0600), the demo plan with the twin's address, and an empty state directory.
pub(super) struct Install {
    pub(super) dir: tempfile::TempDir,
    pub(super) config: PathBuf,
}

impl Install {
    pub(super) fn new(twin: &TestTwin, principal: &str) -> Install {
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
blob_endpoint = "{base}/{{account}}/"
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
                base = e.base_url,
                tenant = e.tenant_id,
                client = e.principals[principal].client_id,
            ),
        )
        .unwrap();
        Install { dir, config }
    }

    /// Runs `keyflip doctor ARGS` at `columns`: (exit code, stdout, stderr).
    pub(super) fn doctor_at(&self, args: &[&str], columns: usize) -> (i32, String, String) {
        let output = Command::new(env!("CARGO_BIN_EXE_keyflip"))
            .env_clear()
            .env("COLUMNS", columns.to_string())
            .env("LANG", "C.UTF-8")
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

    /// Runs `keyflip doctor ARGS`: (exit code, stdout, stderr). Rows on one line each,
    /// with Unicode marks, for `same_report`; the snapshots at 80 and 60 columns are in
    /// `doctor::principals`.
    pub(super) fn doctor(&self, args: &[&str]) -> (i32, String, String) {
        self.doctor_at(args, 1000)
    }

    pub(super) fn json(&self) -> (i32, Value) {
        let (code, out, err) = self.doctor(&["--output", "json"]);
        let json = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("--output json is not JSON ({e}):\n{out}\n{err}"));
        (code, json)
    }
}

/// Runs doctor as table and as JSON, checks both say the same and that the twin saw
/// only reads and kept its state; returns (exit code, table, JSON).
pub(super) async fn examine(twin: &TestTwin, install: &Install) -> (i32, String, Value) {
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
pub(super) fn same_report(text: &str, json: &Value) {
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

pub(super) fn checks<'a>(json: &'a Value, kind: &str) -> Vec<&'a Value> {
    json["plans"][0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["check"] == kind)
        .collect()
}

pub(super) fn check<'a>(json: &'a Value, kind: &str, subject: &str) -> &'a Value {
    checks(json, kind)
        .into_iter()
        .find(|c| c["subject"] == subject)
        .unwrap_or_else(|| panic!("no {kind} check for {subject} in {json:#}"))
}

/// The table with everything that changes between runs replaced.
pub(super) fn redact(text: &str, twin: &TestTwin, install: &Install) -> String {
    normalize(
        &text
            .replace(&twin.endpoints.base_url, "https://twin")
            .replace(&install.dir.path().display().to_string(), "<dir>"),
    )
}

/// Ids, fingerprints and times replaced, word by word.
pub(super) fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let words: Vec<String> = line.split(' ').map(redact_word).collect();
        out.push_str(&words.join(" "));
        out.push('\n');
    }
    out
}

pub(super) fn redact_word(word: &str) -> String {
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
pub(super) fn snapshot(name: &str, actual: &str) {
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
