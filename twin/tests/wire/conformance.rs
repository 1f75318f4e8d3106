//! Microsoft's Python SDKs and the Azure CLI against a demo twin: starts a twin with a
//! state directory, runs `twin/conformance` (pytest) in `.tools/venv` with the twin's
//! `endpoints.json` and CA (the suite drives `az` from `.tools/az-venv`), prints
//! pytest's output and requires every test to pass. A missing venv is a failure that
//! says to run `.ci/setup`, never a skip; so is pytest collecting no test (exit 5).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use keyflip_twin::{Twin, TwinOptions, World};

use super::common::install_crypto;

/// Longer than any healthy run (about 15 s) by far; only a hung client reaches it.
const HANG_GUARD: Duration = Duration::from_secs(300);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("twin/ has a parent")
        .to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microsofts_python_sdks_and_azure_cli_accept_the_twin() {
    let root = repo_root();
    let python = root.join(".tools/venv/bin/python");
    for (tool, reqs) in [
        (&python, "requirements.txt"),
        (&root.join(".tools/az-venv/bin/az"), "az-requirements.txt"),
    ] {
        assert!(
            tool.exists(),
            "{} is missing: run .ci/setup, which installs twin/conformance/{reqs}",
            tool.display()
        );
    }

    install_crypto();
    let state = tempfile::tempdir().expect("tempdir");
    let twin = Twin::start(
        World::demo(),
        TwinOptions {
            state_dir: Some(state.path().to_path_buf()),
            ..TwinOptions::default()
        },
    )
    .await
    .expect("the twin starts");
    let ca = twin
        .endpoints()
        .ca_pem_path
        .clone()
        .expect("a twin with a state directory names its CA file");

    let out_path = state.path().join("pytest.out");
    let out = std::fs::File::create(&out_path).expect("pytest output file");
    let err = out.try_clone().expect("pytest output file");
    let mut child = tokio::process::Command::new(&python)
        .args(["-m", "pytest", "twin/conformance", "-q", "--basetemp"])
        .arg(state.path().join("pytest"))
        .current_dir(&root)
        .env(
            "KEYFLIP_TWIN_ENDPOINTS",
            state.path().join("endpoints.json"),
        )
        .env("REQUESTS_CA_BUNDLE", &ca)
        // Where the suite's loopback-only guard records refused attempts.
        .env("KEYFLIP_OFFLINE_LOG", state.path().join("offline.log"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        // Nothing the SDKs or MSAL cache may land in the developer's home.
        .env("HOME", state.path())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .expect("start pytest");
    let status = tokio::time::timeout(HANG_GUARD, child.wait()).await;
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    println!("{output}");
    twin.shutdown().await;

    let status = status
        .unwrap_or_else(|_| panic!("pytest did not finish within {HANG_GUARD:?}: {output}"))
        .expect("wait for pytest");
    match status.code() {
        Some(0) => {}
        Some(5) => panic!("pytest collected no test in twin/conformance"),
        other => panic!("the conformance suite failed (pytest exit {other:?}); output above"),
    }
    // Exit 0 with nothing run would still mean nothing was checked.
    assert!(
        output.lines().any(|l| l.contains(" passed")),
        "pytest exited 0 without reporting passed tests: {output}"
    );
}
