//! The `keyflip-twin serve` binary: it writes the state directory, serves, and
//! exits 0 on SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keyflip_twin::Endpoints;

use super::common::*;

#[tokio::test]
async fn serve_writes_the_state_directory_and_stops_on_sigterm() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyflip-twin"))
        .args(["serve", "--world", "demo", "--state-dir"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keyflip-twin");
    let endpoints_path = dir.path().join("endpoints.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !endpoints_path.exists() {
        assert!(Instant::now() < deadline, "endpoints.json never appeared");
        assert!(
            child.try_wait().expect("wait").is_none(),
            "keyflip-twin exited early"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ep: Endpoints =
        serde_json::from_str(&std::fs::read_to_string(&endpoints_path).expect("read"))
            .expect("endpoints.json parses");
    assert_eq!(ep.version, 1);
    assert_eq!(ep.tenant_id, TENANT);
    assert_eq!(ep.arm_url, format!("{}/", ep.base_url));
    assert_eq!(ep.authority_host, ep.base_url);
    let ca_path = ep.ca_pem_path.clone().expect("ca_pem_path");
    let ca = std::fs::read_to_string(&ca_path).expect("ca.pem");
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
    let secret = dir
        .path()
        .join("principals")
        .join("keyflip-operator.secret");
    let text = std::fs::read_to_string(&secret).expect("secret file");
    assert_eq!(
        text.trim_end(),
        ep.principals["keyflip-operator"].client_secret
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&secret)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);

    let http = client(&ca, false);
    let r = http
        .get(format!(
            "{}/{TENANT}/v2.0/.well-known/openid-configuration",
            ep.base_url
        ))
        .send()
        .await
        .expect("the served twin answers");
    assert_eq!(r.status(), 200);

    let pid = child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "keyflip-twin did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status:?}");
    let mut stderr = String::new();
    use std::io::Read as _;
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    assert!(stderr.contains(&ep.base_url), "logs the base URL: {stderr}");
    assert!(
        !stderr.contains(&ep.admin.token),
        "never logs the admin token"
    );
}

#[tokio::test]
async fn serve_refuses_a_bad_world_with_its_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let world = dir.path().join("bad.toml");
    std::fs::write(&world, "[tenant]\nid = \"not-a-guid\"\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_keyflip-twin"))
        .args(["serve", "--world"])
        .arg(&world)
        .arg("--state-dir")
        .arg(dir.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:2:6"), "{err}");
    assert!(!dir.path().join("endpoints.json").exists());
}
