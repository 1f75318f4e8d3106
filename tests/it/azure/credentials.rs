//! Credentials against the twin's Entra ID, through the binary (`keyflip doctor`
//! names the credential that gave the token) and through the facade: the default
//! chain picks environment, workload identity or managed identity from the
//! environment, stops at a service principal that is set up but refused, and lists
//! every link when none works; a client certificate (PEM with its key, no OpenSSL)
//! signs assertions the twin accepts, and an unregistered one is refused.
//!
//! No test here lets a link reach the VM metadata endpoint: every run that reaches
//! the managed identity link sets `IDENTITY_ENDPOINT` (the App Service form).

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::binary::{Cli, Run};
use crate::support::fast_options;
use crate::support::twin::{ACCOUNT, OPERATOR, TestTwin};

const CHAIN_VARS: [&str; 12] = [
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_USERNAME",
    "AZURE_AUTHORITY_HOST",
    "AZURE_TOKEN_CREDENTIALS",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "CREDENTIALS_DIRECTORY",
];

/// A keyflip.toml for the CLI's twin with `credential` as its `[credential]` table.
fn config_with(cli: &Cli, name: &str, credential: &str) -> PathBuf {
    let path = cli.write_config(name, OPERATOR);
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text.find("[credential]").unwrap();
    std::fs::write(&path, format!("{}{credential}", &text[..start])).unwrap();
    path
}

/// `keyflip doctor --output json` with exactly `vars` from the chain's variables,
/// and a PATH without the Azure CLI.
async fn doctor(cli: &Cli, config: &Path, vars: &[(&str, String)]) -> Run {
    let mut cmd: Command = cli.command(config, &["doctor", "--plan", "demo", "--output", "json"]);
    for name in CHAIN_VARS {
        cmd.env_remove(name);
    }
    cmd.env("PATH", "/usr/bin:/bin");
    for (name, value) in vars {
        cmd.env(name, value);
    }
    cli.run_cmd(cmd).await
}

fn arm_token_row(run: &Run) -> serde_json::Value {
    let report = run.json();
    report["plans"][0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "token" && c["service"] == "arm")
        .cloned()
        .unwrap_or_else(|| panic!("no ARM token row: {report}"))
}

fn private_copy(dir: &Path, fixture: &str) -> PathBuf {
    let from = format!(
        "{}/twin/worlds/certs/{fixture}.pem",
        env!("CARGO_MANIFEST_DIR")
    );
    let to = dir.join(format!("{fixture}.pem"));
    std::fs::copy(from, &to).unwrap();
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
    to
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_chain_takes_the_first_link_the_environment_sets_up() {
    let cli = Cli::start().await;
    let config = config_with(&cli, "default.toml", "[credential]\nkind = \"default\"\n");
    let e = &cli.twin.endpoints;
    let op = &e.principals[OPERATOR];
    let secret = std::fs::read_to_string(
        cli.twin
            .dir
            .path()
            .join(format!("principals/{OPERATOR}.secret")),
    )
    .unwrap()
    .trim()
    .to_owned();
    let tenant = ("AZURE_TENANT_ID", e.tenant_id.clone());
    let client = ("AZURE_CLIENT_ID", op.client_id.clone());
    let msi = [
        ("IDENTITY_ENDPOINT", e.managed_identity.endpoint.clone()),
        ("IDENTITY_HEADER", e.managed_identity.header.clone()),
    ];

    // 1. Environment, client secret; managed identity is also available but later.
    let mut vars = vec![
        tenant.clone(),
        client.clone(),
        ("AZURE_CLIENT_SECRET", secret.clone()),
    ];
    vars.extend(msi.clone());
    let run = doctor(&cli, &config, &vars).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let row = arm_token_row(&run);
    let used = row["credential"].as_str().unwrap();
    assert!(
        used.starts_with("default chain: environment (AZURE_CLIENT_SECRET of app"),
        "{used}"
    );

    // 2. Environment, client certificate.
    let pem = private_copy(cli.dir.path(), "keyflip-operator");
    let vars = vec![
        tenant.clone(),
        client.clone(),
        ("AZURE_CLIENT_CERTIFICATE_PATH", pem.display().to_string()),
    ];
    let run = doctor(&cli, &config, &vars).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let used = arm_token_row(&run)["credential"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        used.contains("environment (AZURE_CLIENT_CERTIFICATE_PATH"),
        "{used}"
    );

    // 3. Workload identity.
    let token_file = cli.dir.path().join("federated-token");
    std::fs::write(&token_file, cli.twin.federated_token(OPERATOR).await).unwrap();
    let mut vars = vec![
        tenant.clone(),
        client.clone(),
        (
            "AZURE_FEDERATED_TOKEN_FILE",
            token_file.display().to_string(),
        ),
    ];
    vars.extend(msi.clone());
    let run = doctor(&cli, &config, &vars).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let used = arm_token_row(&run)["credential"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        used.starts_with("default chain: workload identity"),
        "{used}"
    );

    // 4. Managed identity (App Service form), the system-assigned default identity.
    let run = doctor(&cli, &config, &msi).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let used = arm_token_row(&run)["credential"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        used.starts_with("default chain: managed identity (system-assigned, App Service"),
        "{used}"
    );
    // The human table names it too, once.
    let mut cmd = cli.command(&config, &["doctor", "--plan", "demo"]);
    for name in CHAIN_VARS {
        cmd.env_remove(name);
    }
    cmd.env("PATH", "/usr/bin:/bin")
        .envs(msi.iter().map(|(k, v)| (*k, v)));
    let table = cli.run_cmd(cmd).await;
    assert_eq!(
        table
            .stdout
            .matches("default chain: managed identity")
            .count(),
        1,
        "{}",
        table.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_service_principal_stops_the_chain_and_nothing_set_up_lists_every_link() {
    let cli = Cli::start().await;
    let config = config_with(&cli, "default.toml", "[credential]\nkind = \"default\"\n");
    let e = &cli.twin.endpoints;
    let msi = [
        ("IDENTITY_ENDPOINT", e.managed_identity.endpoint.clone()),
        ("IDENTITY_HEADER", e.managed_identity.header.clone()),
    ];
    let mut vars = vec![
        ("AZURE_TENANT_ID", e.tenant_id.clone()),
        ("AZURE_CLIENT_ID", e.principals[OPERATOR].client_id.clone()),
        ("AZURE_CLIENT_SECRET", "not-the-secret".to_owned()),
    ];
    vars.extend(msi.clone());
    let before = cli.twin.requests_for("msi.token").await.len();
    let run = doctor(&cli, &config, &vars).await;
    assert_eq!(run.code, Some(3), "{}", run.stderr);
    let row = arm_token_row(&run);
    let finding = row["finding"].as_str().unwrap();
    assert!(finding.contains("stopped at environment"), "{finding}");
    assert!(finding.contains("AADSTS7000215"), "{finding}");
    assert_eq!(
        cli.twin.requests_for("msi.token").await.len(),
        before,
        "a refused service principal never falls through to the managed identity"
    );

    // Nothing set up: no variables, a managed identity endpoint that does not answer,
    // no `az` on PATH.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let vars = [
        ("IDENTITY_ENDPOINT", format!("https://{closed}/msi/token")),
        ("IDENTITY_HEADER", "h".to_owned()),
    ];
    let run = doctor(&cli, &config, &vars).await;
    assert_eq!(run.code, Some(3), "{}", run.stderr);
    let finding = arm_token_row(&run)["finding"].as_str().unwrap().to_owned();
    for part in [
        "found no credential",
        "environment: unavailable (AZURE_TENANT_ID and AZURE_CLIENT_ID not set)",
        "workload identity: unavailable",
        "managed identity: unavailable",
        "Azure CLI: unavailable",
    ] {
        assert!(finding.contains(part), "{part} missing: {finding}");
    }

    // AZURE_TOKEN_CREDENTIALS=dev leaves only the CLI: the managed identity that
    // works is not tried.
    let mut vars = msi.to_vec();
    vars.push(("AZURE_TOKEN_CREDENTIALS", "dev".to_owned()));
    let run = doctor(&cli, &config, &vars).await;
    assert_eq!(run.code, Some(3), "{}", run.stderr);
    let finding = arm_token_row(&run)["finding"].as_str().unwrap().to_owned();
    assert!(finding.contains("Azure CLI: unavailable"), "{finding}");
    assert!(!finding.contains("managed identity"), "{finding}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_work_from_a_private_file_or_a_systemd_credential() {
    let cli = Cli::start().await;
    let client = cli.twin.endpoints.principals[OPERATOR].client_id.clone();
    let tenant = cli.twin.endpoints.tenant_id.clone();
    let table = |file: &Path| {
        format!(
            "[credential]\nkind = \"client-certificate\"\ntenant_id = \"{tenant}\"\nclient_id = \"{client}\"\nclient_certificate_file = \"{}\"\n",
            file.display()
        )
    };
    let pem = private_copy(cli.dir.path(), "keyflip-operator");
    let config = config_with(&cli, "cert.toml", &table(&pem));
    let run = doctor(&cli, &config, &[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let used = arm_token_row(&run)["credential"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        used.starts_with(&format!("client certificate of app {client} (x5t#S256 ")),
        "{used}"
    );
    // The token came from an assertion, not a secret.
    let tokens = cli.twin.requests_for("entra.token").await;
    assert!(
        tokens.iter().any(|t| t["principal"] == OPERATOR),
        "{tokens:?}"
    );

    // As systemd's LoadCredential= leaves it: mode 0440 inside $CREDENTIALS_DIRECTORY.
    let creds = cli.dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    let loaded = creds.join("client-certificate");
    std::fs::copy(&pem, &loaded).unwrap();
    std::fs::set_permissions(&loaded, std::fs::Permissions::from_mode(0o440)).unwrap();
    let config = config_with(&cli, "loaded.toml", &table(&loaded));
    let run = doctor(&cli, &config, &[]).await;
    // An unusable credential file is a configuration error.
    assert_eq!(
        run.code,
        Some(2),
        "group-readable outside the credentials directory"
    );
    assert!(run.stdout.contains("LoadCredential"), "{}", run.stdout);
    let run = doctor(
        &cli,
        &config,
        &[("CREDENTIALS_DIRECTORY", creds.display().to_string())],
    )
    .await;
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);

    // A certificate not registered on the app is refused by Entra ID (the twin).
    let stranger = private_copy(cli.dir.path(), "unregistered");
    let config = config_with(&cli, "stranger.toml", &table(&stranger));
    let run = doctor(&cli, &config, &[]).await;
    assert_eq!(run.code, Some(3), "{}", run.stderr);
    let finding = arm_token_row(&run)["finding"].as_str().unwrap().to_owned();
    assert!(finding.contains("AADSTS700027"), "{finding}");
}

#[tokio::test]
async fn the_facade_names_the_link_the_chain_chose() {
    let twin = TestTwin::start();
    let e = &twin.endpoints;
    let text = format!(
        "[cloud]\nname = \"custom\"\narm_url = \"{}\"\narm_audience = \"{}\"\nauthority_host = \"{}\"\nca_bundle = \"ca.pem\"\n[credential]\nkind = \"default\"\n",
        e.arm_url, e.arm_audience, e.authority_host
    );
    let secret = std::fs::read_to_string(
        twin.dir
            .path()
            .join(format!("principals/{OPERATOR}.secret")),
    )
    .unwrap();
    let vars = [
        ("AZURE_TENANT_ID", e.tenant_id.clone()),
        ("AZURE_CLIENT_ID", e.principals[OPERATOR].client_id.clone()),
        ("AZURE_CLIENT_SECRET", secret.trim().to_owned()),
    ];
    let env = move |name: &str| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    };
    let config = keyflip::config::Config::parse("k.toml", &text, twin.dir.path(), &env).unwrap();
    let azure = keyflip::azure::Azure::with_options(
        &config,
        std::sync::Arc::new(keyflip::secret::Fingerprinter::from_bytes(b"t")),
        fast_options(),
        &env,
    )
    .unwrap();
    let (captured, _guard) = crate::support::logs::capture();
    assert!(
        azure
            .credential_in_use()
            .contains("no link has given a token yet")
    );
    let links = azure.credential_chain();
    assert_eq!(links.len(), 4, "{links:?}");
    assert!(
        links[0].starts_with("environment: AZURE_CLIENT_SECRET of app"),
        "{links:?}"
    );
    assert!(
        links[1].starts_with("workload identity: unavailable (AZURE_FEDERATED_TOKEN_FILE not set)"),
        "{links:?}"
    );
    azure.storage_keys(&twin.account_id(ACCOUNT)).await.unwrap();
    assert!(
        azure
            .credential_in_use()
            .starts_with("default chain: environment")
    );
    let logs = captured.text();
    assert!(
        logs.contains("INFO") && logs.contains("default credential chain: using environment"),
        "{logs}"
    );
    // Chosen at once: no later link was tried, so none is reported unavailable.
    assert!(!logs.contains("link unavailable"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_logs_which_credential_it_uses() {
    use std::io::BufRead as _;
    let cli = Cli::start().await;
    let run = cli.dir.path().join("run");
    let config = config_with(
        &cli,
        "daemon.toml",
        &format!(
            "[credential]\nkind = \"default\"\n\n[daemon]\nsocket = \"{}\"\nmetrics_listen = \"off\"\n",
            run.join("keyflip.sock").display()
        ),
    );
    // A plan scheduled by key age with no stored observation is checked at once, so
    // the first token is taken at start-up; otherwise the first check waits for the
    // plan's hashed place in its one-minute drift interval, up to this test's deadline.
    let plan = cli.dir.path().join("plans/demo.toml");
    let text = std::fs::read_to_string(&plan).unwrap();
    let text = text.replacen("[schedule]\n", "[schedule]\nmax_key_age = \"90d\"\n", 1);
    assert!(
        text.contains("max_key_age"),
        "the demo plan has a [schedule]"
    );
    std::fs::write(&plan, text).unwrap();
    let e = &cli.twin.endpoints;
    let mut cmd = cli.command(&config, &["--log-format", "json", "-v", "daemon"]);
    for name in CHAIN_VARS {
        cmd.env_remove(name);
    }
    cmd.env("PATH", "/usr/bin:/bin")
        .env("IDENTITY_ENDPOINT", &e.managed_identity.endpoint)
        .env("IDENTITY_HEADER", &e.managed_identity.header)
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    // The reader drains stderr to the end: a daemon whose stderr pipe fills up
    // blocks on its next log line and never gets to handle SIGTERM.
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        match rx.recv_timeout(std::time::Duration::from_millis(200)) {
            Ok(line) => {
                let done = line.contains("default credential chain: using");
                seen.push(line);
                if done {
                    break;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    assert_eq!(status.code(), Some(0), "SIGTERM stops the daemon cleanly");
    let seen = seen.join("\n");
    // At start-up: the chain as built, each link's source or why it is unavailable.
    assert!(
        seen.contains("the first link that gives a token is logged when chosen"),
        "{seen}"
    );
    assert!(
        seen.contains("environment: unavailable (AZURE_TENANT_ID and AZURE_CLIENT_ID not set)"),
        "{seen}"
    );
    // Then the link chosen at the first token, and (at debug) why the others were skipped.
    assert!(
        seen.contains("default credential chain: using managed identity"),
        "{seen}"
    );
    assert!(seen.contains("App Service endpoint"), "{seen}");
    assert!(seen.contains("link unavailable"), "{seen}");
}
