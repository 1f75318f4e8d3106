//! The named national clouds (Azure US Government, Azure operated by 21Vianet) and
//! `AZURE_AUTHORITY_HOST`, tested by pointing each cloud's real endpoints at the twin:
//! keyflip runs `doctor` with `HTTPS_PROXY` set to a loopback proxy that tunnels every
//! connection to the twin, so the token request goes to the cloud's Entra ID host for
//! the cloud's ARM audience, ARM calls go to the cloud's ARM host, and TLS checks
//! those host names (the twin's certificate names them). Nothing leaves the machine.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::support::binary::{Cli, Run};
use crate::support::proxy::Proxy;

/// A plan the twin can serve under any cloud name: the storage account and the
/// Databricks secret (no Key Vault, whose challenge names the public cloud's vault
/// resource, and no ML datastores, matched by the cloud's storage suffix).
fn plan(cli: &Cli) -> String {
    let base = &cli.twin.endpoints.base_url;
    format!(
        r#"storage_account = "{account}"

[[databricks]]
workspace_url = "{base}/databricks/dbw-datasci"
workspace_id = "/subscriptions/3c9e5b1d-2a4f-4e6b-9c8d-0f1e2d3c4b5a/resourceGroups/rg-datascience/providers/Microsoft.Databricks/workspaces/dbw-datasci"
scope = "datasci"
key = "stdatasci001-key"
format = "raw-key"
"#,
        account = cli.twin.endpoints.storage_accounts["stdatasci001"].id
    )
}

/// keyflip.toml with `cloud` as its `[cloud]` table (the twin's CA added).
fn config(cli: &Cli, name: &str, cloud: &str) -> PathBuf {
    let path = cli.write_config(name, crate::support::twin::OPERATOR);
    let text = std::fs::read_to_string(&path).unwrap();
    let (start, end) = (
        text.find("[cloud]").unwrap(),
        text.find("[credential]").unwrap(),
    );
    let ca = cli.twin.dir.path().join("ca.pem");
    let table = format!("{cloud}ca_bundle = \"{}\"\n\n", ca.display());
    std::fs::write(&path, format!("{}{table}{}", &text[..start], &text[end..])).unwrap();
    path
}

async fn doctor(cli: &Cli, config: &Path, proxy: &Proxy, env: &[(&str, &str)]) -> Run {
    let mut cmd = cli.command(config, &["doctor", "--plan", "demo", "--output", "json"]);
    let url = format!("http://{}", proxy.addr);
    for name in [
        "NO_PROXY",
        "no_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
        "AZURE_AUTHORITY_HOST",
    ] {
        cmd.env_remove(name);
    }
    cmd.env("HTTPS_PROXY", &url).env("https_proxy", &url);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cli.run_cmd(cmd).await
}

fn twin_addr(cli: &Cli) -> SocketAddr {
    let url = url::Url::parse(&cli.twin.endpoints.base_url).unwrap();
    SocketAddr::new(
        url.host_str().unwrap().parse().unwrap(),
        url.port().unwrap(),
    )
}

fn arm_row(run: &Run) -> serde_json::Value {
    run.json()["plans"][0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "token" && c["service"] == "arm")
        .cloned()
        .unwrap()
}

/// The twin's accounts answer with its own path-style blob endpoint, which is not the
/// national cloud's: doctor reaches every token and ARM row, and its one error is the
/// refusal to sign for that endpoint (naming the cloud's), before any signed request.
fn only_the_twins_blob_endpoint_is_refused(run: &Run, name: &str, blob: &str) {
    assert_eq!(run.code, Some(3), "{name}: {}\n{}", run.stdout, run.stderr);
    let errors: Vec<serde_json::Value> = run.json()["plans"][0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "error" || c["status"] == "fail")
        .cloned()
        .collect();
    assert_eq!(errors.len(), 1, "{name}: {errors:#?}");
    assert_eq!(errors[0]["check"], "storage_account", "{name}: {errors:#?}");
    let finding = errors[0]["finding"].as_str().unwrap();
    assert!(
        finding.contains(&format!(
            "the cloud's blob endpoint for stdatasci001 is {blob}"
        )) && finding.contains("no SharedKey-signed request was sent"),
        "{name}: {finding}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn national_clouds_send_to_their_own_entra_and_arm_hosts() {
    for (name, login, arm, blob) in [
        (
            "usgov",
            "login.microsoftonline.us",
            "management.usgovcloudapi.net",
            "https://stdatasci001.blob.core.usgovcloudapi.net/",
        ),
        (
            "china",
            "login.chinacloudapi.cn",
            "management.chinacloudapi.cn",
            "https://stdatasci001.blob.core.chinacloudapi.cn/",
        ),
    ] {
        let cli = Cli::start().await;
        std::fs::write(cli.dir.path().join("plans/demo.toml"), plan(&cli)).unwrap();
        let proxy = Proxy::start(twin_addr(&cli)).await;

        let named = config(&cli, "named.toml", &format!("[cloud]\nname = \"{name}\"\n"));
        let run = doctor(&cli, &named, &proxy, &[]).await;
        only_the_twins_blob_endpoint_is_refused(&run, name, blob);
        let row = arm_row(&run);
        assert_eq!(row["audience"], format!("https://{arm}"), "{name}");
        let targets = proxy.targets();
        for host in [login, arm] {
            assert!(
                targets.contains(&format!("{host}:443")),
                "{name}: no tunnel to {host}: {targets:?}"
            );
        }
        assert!(
            !targets
                .iter()
                .any(|t| t.contains("microsoftonline.com") || t.contains("management.azure.com")),
            "{name}: the public cloud was asked: {targets:?}"
        );

        // No cloud name in the file: AZURE_AUTHORITY_HOST picks the same cloud.
        let unnamed = config(&cli, "unnamed.toml", "[cloud]\n");
        let authority = format!("https://{login}/");
        let run = doctor(
            &cli,
            &unnamed,
            &proxy,
            &[("AZURE_AUTHORITY_HOST", &authority)],
        )
        .await;
        only_the_twins_blob_endpoint_is_refused(&run, name, blob);
        assert_eq!(arm_row(&run)["audience"], format!("https://{arm}"));

        // A file naming one cloud and AZURE_AUTHORITY_HOST another: refused, nothing sent.
        let before = proxy.targets().len();
        let run = doctor(
            &cli,
            &named,
            &proxy,
            &[("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.com")],
        )
        .await;
        assert_eq!(run.code, Some(2), "{}", run.stdout);
        assert!(
            run.stdout.contains("AZURE_AUTHORITY_HOST")
                || run.stderr.contains("AZURE_AUTHORITY_HOST")
        );
        assert_eq!(proxy.targets().len(), before);
    }
}
