//! `keyflip demo`: the README's first command. Starts keyflip-twin in this process
//! with its demo world, points a configuration held in memory at it, and runs the
//! demo plan (`rotation-plans/demo.toml`, built in) twice: first a full safe swap,
//! whose retire the usage gate holds because the world's forgotten client
//! (`legacy-nightly-export`, in no plan) still signs with the old key, so the rotation
//! parks naming it; then, with that client switched off (as its owner would once
//! told), `rotate resume`, which passes the gate and retires the old key. Then it
//! prints `status`.
//!
//! Waits (grace, the gate's ingestion latency, quiet period and re-checks) jump the
//! twin's clock and keyflip's together instead of passing ([`TwinClock`]): the twin
//! replays the forgotten client's requests over the skipped time, so the logs hold
//! what they would have held. Needs no Azure account and writes nothing outside one
//! temporary directory, which is removed at the end. `--keep-running` leaves the twin
//! up and says how to point `keyflip` at it.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use keyflip_twin::{Endpoints, Twin, TwinOptions, World};
use tokio_util::sync::CancellationToken;

use super::progress::Display;
use super::term::Term;
use super::{render, runtime};
use crate::cli::{DemoArgs, Output};
use crate::clock::Clock;
use crate::config::{
    ClientSecretSource, CloudConfig, CloudKind, Config, CredentialConfig, CustomCloud,
    DaemonConfig, DiscoveryConfig,
};
use crate::exit::Exit;
use crate::rotation::machine::Mode;
use crate::rotation::{Engine, RotateRequest, Trigger};

/// The demo world's plan, as shipped in `rotation-plans/`.
pub const DEMO_PLAN: &str = include_str!("../../rotation-plans/demo.toml");
/// The address the shipped plan names; replaced with the running twin's.
pub const DEMO_PLAN_BASE_URL: &str = "https://127.0.0.1:47443";
/// The demo's grace period: long enough to see, short enough to wait for.
pub const DEMO_GRACE: Duration = Duration::from_secs(5);
const PRINCIPAL: &str = "keyflip-operator";
/// The demo world's forgotten client: signs with key1 and is in no plan.
pub const FORGOTTEN_CLIENT: &str = "legacy-nightly-export";

/// The wall clock plus an offset that the twin's clock shares: a wait moves both
/// forward at once (the twin through its admin API, on the wire) instead of passing.
/// The twin then replays its simulated clients over the skipped time, so its resource
/// logs hold what real time would have put there.
struct TwinClock {
    offset: Mutex<TimeDelta>,
    admin: Arc<Admin>,
}

/// The twin's admin API, as any client reaches it.
struct Admin {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Admin {
    fn new(endpoints: &Endpoints, ca_pem: &str) -> Result<Admin, DemoError> {
        let certs = reqwest::Certificate::from_pem_bundle(ca_pem.as_bytes())
            .map_err(|e| DemoError::Setup(format!("the twin's CA is not PEM: {e}")))?;
        let http = reqwest::Client::builder()
            .tls_certs_merge(certs)
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| DemoError::Setup(format!("cannot build the admin client: {e}")))?;
        Ok(Admin {
            http,
            url: endpoints.admin.url.clone(),
            token: endpoints.admin.token.clone(),
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
    ) -> Result<(), String> {
        let answer = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if answer.status().is_success() {
            Ok(())
        } else {
            Err(format!("{path}: HTTP {}", answer.status()))
        }
    }
}

impl Clock for TwinClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + *self.offset.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sleep_until(&self, at: DateTime<Utc>) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        let jump = {
            let mut offset = self.offset.lock().unwrap_or_else(|e| e.into_inner());
            let now = Utc::now() + *offset;
            let jump = (at - now).max(TimeDelta::zero());
            *offset += jump;
            jump
        };
        let admin = self.admin.clone();
        Box::pin(async move {
            if jump > TimeDelta::zero() {
                let secs = jump.num_milliseconds() as f64 / 1000.0;
                if let Err(e) = admin
                    .call(
                        reqwest::Method::POST,
                        "/clock",
                        serde_json::json!({"advance_secs": secs}),
                    )
                    .await
                {
                    tracing::warn!(error = %e, "the demo could not move the twin's clock");
                }
            }
        })
    }
}

#[derive(Debug, thiserror::Error)]
enum DemoError {
    #[error("cannot create a temporary directory for the demo: {0}")]
    TempDir(std::io::Error),
    #[error("cannot start keyflip-twin: {0}")]
    Twin(String),
    #[error("{0}")]
    Setup(String),
}

/// The in-memory configuration for a twin whose state directory is `twin_dir`.
fn config(endpoints: &Endpoints, twin_dir: &Path, root: &Path) -> Result<Config, DemoError> {
    let url = |text: &str| {
        url::Url::parse(text)
            .map_err(|e| DemoError::Setup(format!("the twin reported a bad URL {text}: {e}")))
    };
    let principal = endpoints
        .principals
        .get(PRINCIPAL)
        .ok_or_else(|| DemoError::Setup(format!("the demo world has no principal {PRINCIPAL}")))?;
    Ok(Config {
        source: None,
        cloud: CloudConfig {
            kind: CloudKind::Custom(Box::new(CustomCloud {
                arm_url: url(&endpoints.arm_url)?,
                arm_audience: endpoints.arm_audience.clone(),
                authority_host: url(&endpoints.authority_host)?,
                // The twin's Entra ID issues Key Vault tokens for the public cloud's
                // audience, so doctor can check the Key Vault token too.
                key_vault_suffix: Some("vault.azure.net".to_owned()),
                storage_suffix: None,
                log_analytics_url: endpoints
                    .log_analytics
                    .as_ref()
                    .map(|l| url(&l.url))
                    .transpose()?,
                // The twin serves every account path-style under its one origin.
                blob_endpoint: Some(format!("{}/{{account}}/", endpoints.base_url)),
            })),
            ca_bundle: Some(twin_dir.join("ca.pem")),
        },
        credential: CredentialConfig::ClientSecret {
            tenant_id: endpoints.tenant_id.clone(),
            client_id: principal.client_id.clone(),
            secret: ClientSecretSource::File(
                twin_dir
                    .join("principals")
                    .join(format!("{PRINCIPAL}.secret")),
            ),
        },
        plans_dir: root.join("plans"),
        state_dir: root.join("state"),
        daemon: DaemonConfig::default(),
        coordination: None,
        discovery: DiscoveryConfig {
            databricks: endpoints
                .databricks_workspaces
                .values()
                .map(|w| url(&w.url))
                .collect::<Result<_, _>>()?,
        },
    })
}

/// A keyflip.toml equivalent to [`config`], for `--keep-running`.
pub fn config_file(endpoints: &Endpoints, twin_dir: &Path, root: &Path) -> String {
    let client = endpoints
        .principals
        .get(PRINCIPAL)
        .map_or("", |p| p.client_id.as_str());
    format!(
        "# Written by `keyflip demo --keep-running`; valid while that demo runs.\nplans_dir = \"{plans}\"\nstate_dir = \"{state}\"\n\n[cloud]\nname = \"custom\"\narm_url = \"{arm}\"\narm_audience = \"{aud}\"\nauthority_host = \"{auth}\"\nblob_endpoint = \"{base}/{{account}}/\"\nkey_vault_suffix = \"vault.azure.net\"\nlog_analytics_url = \"{logs}\"\nca_bundle = \"{ca}\"\n\n[credential]\nkind = \"client-secret\"\ntenant_id = \"{tenant}\"\nclient_id = \"{client}\"\nclient_secret_file = \"{secret}\"\n\n# The demo world's Databricks workspaces, for plan discover and unlisted consumers.\n[discovery]\ndatabricks = [{databricks}]\n\n# A daemon started with this file keeps its control socket here, not in /run.\n[daemon]\nsocket = \"{socket}\"\n",
        plans = root.join("plans").display(),
        state = root.join("state").display(),
        arm = endpoints.arm_url,
        aud = endpoints.arm_audience,
        auth = endpoints.authority_host,
        logs = endpoints
            .log_analytics
            .as_ref()
            .map_or("", |l| l.url.as_str()),
        base = endpoints.base_url,
        ca = twin_dir.join("ca.pem").display(),
        tenant = endpoints.tenant_id,
        secret = twin_dir
            .join("principals")
            .join(format!("{PRINCIPAL}.secret"))
            .display(),
        socket = root.join("keyflip.sock").display(),
        databricks = endpoints
            .databricks_workspaces
            .values()
            .map(|w| format!("\"{}\"", w.url))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

pub fn run(args: &DemoArgs) -> Exit {
    let runtime = match runtime() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("keyflip: cannot start the async runtime: {e}");
            return Exit::Failure;
        }
    };
    runtime.block_on(async {
        match demo(args).await {
            Ok(exit) => exit,
            Err(e) => {
                eprintln!("keyflip: the demo could not run: {e}");
                Exit::Failure
            }
        }
    })
}

async fn demo(args: &DemoArgs) -> Result<Exit, DemoError> {
    let root = tempfile::Builder::new()
        .prefix("keyflip-demo-")
        .tempdir()
        .map_err(DemoError::TempDir)?;
    let twin_dir = root.path().join("twin");
    let twin = Twin::start(
        World::demo(),
        TwinOptions {
            state_dir: Some(twin_dir.clone()),
            ..TwinOptions::default()
        },
    )
    .await
    .map_err(|e| DemoError::Twin(e.to_string()))?;
    let endpoints = twin.endpoints().clone();
    let config = config(&endpoints, &twin_dir, root.path())?;
    let plan_text = DEMO_PLAN.replace(DEMO_PLAN_BASE_URL, &endpoints.base_url);
    let plans_dir = root.path().join("plans");
    std::fs::create_dir_all(&plans_dir)
        .and_then(|()| std::fs::write(plans_dir.join("demo.toml"), &plan_text))
        .map_err(|e| DemoError::Setup(format!("cannot write the demo plan: {e}")))?;
    let plan = crate::plan::parse(&plan_text, "rotation-plans/demo.toml")
        .map_err(|e| DemoError::Setup(format!("the built-in demo plan is invalid: {e}")))?;
    let admin = Arc::new(Admin::new(&endpoints, twin.ca_pem())?);
    let clock = Arc::new(TwinClock {
        offset: Mutex::new(TimeDelta::zero()),
        admin: admin.clone(),
    });
    let engine =
        Engine::open(&config, clock.clone()).map_err(|e| DemoError::Setup(e.to_string()))?;

    let json = args.output.output == Output::Json;
    let term = Term::stdout();
    // The story goes to stdout for people; with --output json stdout holds only the
    // document, so the story goes to stderr.
    let say = |line: String| {
        // `  twin:    …` lines hang under their value; others under two spaces.
        let blank = if line.starts_with('\n') { "\n" } else { "" };
        let line = line.trim_start_matches('\n');
        let lead = line.len() - line.trim_start_matches(' ').len();
        let hang = if lead > 0 { lead + 9 } else { 2 };
        let line = format!(
            "{blank}{}",
            term.wrap(&line[..lead], &" ".repeat(hang), &line[lead..])
        );
        if json {
            eprint!("{line}");
        } else {
            print!("{line}");
        }
    };
    say("keyflip demo: a full safe swap against keyflip-twin, a local stand-in for Azure.".into());
    say(format!(
        "  twin:    {} (the demo world; no Azure account involved)",
        endpoints.base_url
    ));
    say(format!("  account: {}", plan.storage_account.name()));
    say(format!(
        "  plan:    rotation-plans/demo.toml: {}",
        crate::consumer::summary(&plan)
    ));
    if let Some(gate) = &plan.usage_gate {
        say(format!(
            "  gate:    the old key is retired once the logs in {} show nobody signing with it for {} (checked every {}; parks after {})",
            gate.workspace.name(),
            crate::plan::duration::format(gate.quiet_period),
            crate::plan::duration::format(gate.recheck),
            crate::plan::duration::format(gate.deadline)
        ));
    }
    say(format!(
        "  caller:  {FORGOTTEN_CLIENT}, in no plan, signs with key1 every 30 s"
    ));
    say(format!(
        "  clock:   waits (grace {} instead of the plan's {}, log ingestion, quiet period) move the twin's clock forward instead of passing",
        crate::plan::duration::format(DEMO_GRACE),
        crate::plan::duration::format(plan.rotation.grace)
    ));
    say(format!(
        "  files:   {} (removed when the demo ends)\n",
        root.path().display()
    ));

    let display = Display::for_output(args.output.output, term);
    say(format!(
        "1. Rotate while {FORGOTTEN_CLIENT} still signs with the old key:\n"
    ));
    let request = RotateRequest {
        mode: Mode::Scheduled,
        grace: Some(DEMO_GRACE),
        trigger: Trigger::Manual,
        by: Some(crate::rotation::Requester::this_process()),
    };
    let first = engine
        .rotate(&plan, request, &display, CancellationToken::new())
        .await;
    display.done();
    let first = match first {
        Ok(r) => r,
        Err(e) => {
            let error = super::CommandError::from(&e);
            let exit = super::fail(args.output.output, &error);
            twin.shutdown().await;
            return Ok(exit);
        }
    };
    if !json {
        print!("{}", render::rotation(&first, &term));
    }

    say(format!(
        "\n2. {FORGOTTEN_CLIENT} switched off (its owner moved it to the new key), then `keyflip rotate resume demo`:\n"
    ));
    admin
        .call(
            reqwest::Method::PATCH,
            &format!("/clients/{FORGOTTEN_CLIENT}"),
            serde_json::json!({"enabled": false}),
        )
        .await
        .map_err(|e| DemoError::Setup(format!("cannot switch {FORGOTTEN_CLIENT} off: {e}")))?;
    let (held, report) = match engine.held_at_gate(&plan, false) {
        Ok(Some(retire)) => {
            let resumed = engine
                .rotate(&plan, retire, &display, CancellationToken::new())
                .await;
            display.done();
            match resumed {
                Ok(r) => (Some(first), r),
                Err(e) => {
                    let error = super::CommandError::from(&e);
                    let exit = super::fail(args.output.output, &error);
                    twin.shutdown().await;
                    return Ok(exit);
                }
            }
        }
        // The gate did not hold (a faster world): the first run is the result.
        Ok(None) => (None, first),
        Err(e) => {
            let error = super::CommandError::from(&e);
            let exit = super::fail(args.output.output, &error);
            twin.shutdown().await;
            return Ok(exit);
        }
    };
    let status = super::perform::status(&engine, std::slice::from_ref(&plan)).await;
    let status_exit = match &status {
        Ok(answer) => answer.exit(),
        Err(e) => e.exit,
    };
    if json {
        let status = match &status {
            Ok(super::Answer::Status { at, plans }) => {
                serde_json::json!({"at": at, "plans": plans})
            }
            Ok(_) => serde_json::Value::Null,
            Err(e) => serde_json::json!({"error": e.message, "exit": e.exit as u8}),
        };
        print!(
            "{}",
            render::json::document(serde_json::json!({
                "held": held.as_ref().map(render::json::rotation),
                "rotation": render::json::rotation(&report),
                "status": status,
            }))
        );
    } else {
        print!("{}", render::rotation(&report, &term));
        println!("\nkeyflip status:\n");
        match &status {
            Ok(answer) => print!("{}", render::human(answer, &term, render::Shape::default())),
            Err(e) => {
                super::fail(Output::Human, e);
            }
        }
    }

    if args.keep_running {
        let file = root.path().join("keyflip.toml");
        std::fs::write(&file, config_file(&endpoints, &twin_dir, root.path()))
            .map_err(|e| DemoError::Setup(format!("cannot write {}: {e}", file.display())))?;
        say(format!(
            "\nThe twin keeps running at {}. Point keyflip at it in another shell:",
            endpoints.base_url
        ));
        say(format!("  export KEYFLIP_CONFIG={}", file.display()));
        say("  keyflip doctor                      # passes: every check ok".into());
        say("  keyflip status".into());
        say("  keyflip rotate now demo --dry-run".into());
        say("  keyflip history demo".into());
        say("  keyflip daemon                      # rotates demo every 10 minutes".into());
        say("Press Ctrl-C to stop it (its files are removed then).".into());
        super::shutdown_signal().await;
    } else {
        say(
            "\nRun `keyflip demo --keep-running` to keep the twin up and try other commands against it."
                .into(),
        );
    }
    twin.shutdown().await;
    Ok(super::worst([report.exit(), status_exit]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_keep_running_configuration_parses_and_keeps_the_socket_in_the_demo_directory() {
        crate::install_crypto_provider();
        let twin = Twin::start(World::demo(), TwinOptions::default())
            .await
            .unwrap();
        let root = tempfile::tempdir().unwrap();
        let text = config_file(twin.endpoints(), &root.path().join("twin"), root.path());
        let config = crate::config::Config::parse("keyflip.toml", &text, root.path(), &|_| None)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(config.daemon.socket, root.path().join("keyflip.sock"));
        assert_eq!(config.plans_dir, root.path().join("plans"));
        assert_eq!(config.state_dir, root.path().join("state"));
        twin.shutdown().await;
    }
}
