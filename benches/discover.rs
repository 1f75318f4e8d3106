//! `plan discover` at subscription scale: a twin world with ACCOUNTS storage accounts
//! (default 500), one Key Vault secret per account spread over VAULTS vaults, one
//! key-based datastore per account spread over WORKSPACES ML workspaces, and some
//! noise (secrets that hold no account key). Measures, over ROUNDS rounds (1 when throttled: see below):
//!
//! - one scan discovering every account at once (what `keyflip plan discover A B C…`
//!   and `keyflip doctor` do), and its Azure calls;
//! - the precheck's unlisted-consumer check of one account, cold and then warm (the
//!   daemon's cache: lists kept 15 minutes, secret values read again only when a new
//!   version appears).
//!
//! The twin throttles like Azure (ARM writes: 200 burst, 10/s; `listKeys` and
//! `listSecrets` are POSTs, so writes), and keyflip's budgets space calls below that,
//! so the 500-account scan is bounded by Azure's write rate, not by keyflip; with
//! THROTTLE=off the twin's buckets are made huge to show keyflip's own cost. Run:
//!
//! ```sh
//! cargo bench --bench discover                      # ACCOUNTS, VAULTS, WORKSPACES, ROUNDS, THROTTLE
//! THROTTLE=off cargo bench --bench discover         # keyflip's own cost, 3 rounds by default
//! ```

// A benchmark that cannot set up or measure has nothing to report: it stops with
// a message (the workspace denies unwrap, expect and panic in production code).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyflip::azure::budget::Budgets;
use keyflip::azure::{Azure, AzureOptions};
use keyflip::clock::SystemClock;
use keyflip::config::{BudgetConfig, Config};
use keyflip::discover::{DiscoveryCache, Request, discover};
use keyflip::resource_id::ResourceId;
use keyflip::secret::Fingerprinter;
use keyflip_twin::{Twin, TwinOptions, World};

const SUB: &str = "3c9e5b1d-2a4f-4e6b-9c8d-0f1e2d3c4b5a";
const RG: &str = "rg-fleet";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A world of `accounts` accounts and their consumers.
fn world(accounts: usize, vaults: usize, workspaces: usize, throttle: bool) -> String {
    let mut w = String::new();
    let burst = if throttle { 200 } else { 1_000_000_000 };
    let refill = if throttle { 10.0 } else { 1_000_000_000.0 };
    let _ = write!(
        w,
        r#"[tenant]
id = "7f3c1a2e-4b5d-4c6e-8f90-1a2b3c4d5e6f"

[settings]
arm_write_burst = {burst}
arm_write_refill_per_sec = {refill}
arm_read_burst = {rb}
arm_read_refill_per_sec = {rr}

[[subscription]]
id = "{SUB}"
display_name = "fleet"

[[resource_group]]
name = "{RG}"
location = "westeurope"

[[principal]]
name = "keyflip-operator"
client_id = "5f2d8a41-7c3e-4b9a-a1d6-0e4f7b2c9d13"
object_id = "c8e1b7a2-3f4d-4e5a-9b6c-7d8e9f0a1b2c"
client_secret = "bench-secret"

[[role_assignment]]
principal = "keyflip-operator"
role = "Owner"
scope = "/subscriptions/{SUB}"

[[role_assignment]]
principal = "keyflip-operator"
role = "Key Vault Secrets Officer"
scope = "/subscriptions/{SUB}"
"#,
        rb = if throttle { 250 } else { 1_000_000_000 },
        rr = if throttle { 25.0 } else { 1_000_000_000.0 },
    );
    for a in 0..accounts {
        let _ = write!(
            w,
            "\n[[storage_account]]\nname = \"stfleet{a:04}\"\nresource_group = \"{RG}\"\n"
        );
    }
    for v in 0..vaults {
        let _ = write!(
            w,
            "\n[[key_vault]]\nname = \"kv-fleet-{v:03}\"\nresource_group = \"{RG}\"\n"
        );
        for a in (v..accounts).step_by(vaults) {
            let _ = write!(
                w,
                "\n[[key_vault.secret]]\nname = \"stfleet{a:04}-key\"\nvalue_from = {{ account = \"stfleet{a:04}\", key = \"key1\", format = \"raw-key\" }}\n"
            );
        }
        // Noise: secrets that hold no account key.
        let _ = write!(
            w,
            "\n[[key_vault.secret]]\nname = \"api-token\"\nvalue = \"not-a-storage-key\"\n"
        );
    }
    for ws in 0..workspaces {
        let own = ws % accounts;
        let _ = write!(
            w,
            "\n[[ml_workspace]]\nname = \"mlw-fleet-{ws:03}\"\nresource_group = \"{RG}\"\nstorage_account = \"stfleet{own:04}\"\nuser_storage_key = \"key1\"\n"
        );
        for a in (ws..accounts).step_by(workspaces) {
            let _ = write!(
                w,
                "\n[[ml_workspace.datastore]]\nname = \"ds{a:04}\"\ntype = \"AzureBlob\"\naccount = \"stfleet{a:04}\"\ncontainer = \"data\"\ncredential = \"account-key\"\nkey = \"key1\"\n"
            );
        }
    }
    w
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    keyflip::install_crypto_provider();
    let accounts = env("ACCOUNTS", 500);
    let vaults = env("VAULTS", 50);
    let workspaces = env("WORKSPACES", 10);
    let throttle = std::env::var("THROTTLE").map_or(true, |v| v != "off");
    // A throttled 500-account scan spends about 1,000 of the 1,200 ARM writes an hour
    // keyflip's budget allows: a second round would wait most of an hour for it.
    let rounds = env("ROUNDS", if throttle { 1 } else { 3 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let text = world(accounts, vaults, workspaces, throttle);
        let world = World::from_toml_str(&text, "bench world").unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::tempdir().unwrap();
        let twin = Twin::start(
            world,
            TwinOptions {
                state_dir: Some(dir.path().to_path_buf()),
                ..TwinOptions::default()
            },
        )
        .await
        .expect("the twin starts");
        let e = twin.endpoints().clone();
        let config_text = format!(
            "state_dir = \"{state}\"\n[cloud]\nname = \"custom\"\narm_url = \"{arm}\"\narm_audience = \"{aud}\"\nauthority_host = \"{auth}\"\nca_bundle = \"{ca}\"\n[credential]\nkind = \"client-secret\"\ntenant_id = \"{tenant}\"\nclient_id = \"{client}\"\nclient_secret_file = \"{secret}\"\n",
            state = dir.path().join("state").display(),
            arm = e.arm_url,
            aud = e.arm_audience,
            auth = e.authority_host,
            ca = dir.path().join("ca.pem").display(),
            tenant = e.tenant_id,
            client = e.principals["keyflip-operator"].client_id,
            secret = dir.path().join("principals/keyflip-operator.secret").display(),
        );
        let config = Config::parse("bench.toml", &config_text, dir.path(), &|_| None)
            .unwrap_or_else(|e| panic!("{e}"));
        let fingerprinter = Arc::new(Fingerprinter::from_bytes(b"bench"));
        let clock = Arc::new(SystemClock);
        let azure = Azure::with_options(&config, fingerprinter.clone(), AzureOptions::default(), &|_| None)
            .unwrap()
            .with_budgets(Arc::new(Budgets::new(BudgetConfig::default(), clock.clone())));
        let ids: Vec<ResourceId> = (0..accounts)
            .map(|a| {
                format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Storage/storageAccounts/stfleet{a:04}")
                    .parse()
                    .unwrap()
            })
            .collect();
        println!(
            "discover bench: {accounts} accounts, {vaults} vaults ({} secrets), {workspaces} workspaces ({accounts} datastores), twin throttling {}",
            accounts + vaults,
            if throttle { "as Azure's (ARM writes 200 burst, 10/s)" } else { "off" }
        );
        let mut all = Vec::new();
        let mut calls = 0;
        for round in 0..rounds {
            let cache = DiscoveryCache::one_off(clock.clone());
            let request = Request {
                accounts: ids.clone(),
                subscriptions: Some(vec![SUB.to_owned()]),
                sources: Default::default(),
                written: Vec::new(),
            };
            let started = Instant::now();
            let found = discover(&azure, &fingerprinter, &cache, &request).await;
            let took = started.elapsed();
            let consumers: usize = found.accounts.iter().map(|a| a.consumers.len()).sum();
            let errors = found.accounts.iter().filter(|a| a.error.is_some()).count();
            assert_eq!(errors, 0, "accounts that could not be read");
            assert!(consumers >= 2 * accounts, "{consumers} consumers found");
            println!(
                "  round {round}: all {accounts} accounts in one scan: {:.1}s, {} calls, {consumers} consumers",
                took.as_secs_f64(),
                found.calls
            );
            calls = found.calls;
            all.push(took);
        }
        println!(
            "  median: {:.1}s for {accounts} accounts ({calls} calls: {:.2} per account)",
            median(all.clone()).as_secs_f64(),
            calls as f64 / accounts as f64
        );

        // The precheck's check of one account, through a cache a daemon keeps.
        let cache = DiscoveryCache::new(clock.clone(), keyflip::discover::LIST_TTL);
        let one = vec![ids[accounts / 2].clone()];
        let mut cold = None;
        let mut warm = Vec::new();
        for i in 0..=rounds {
            let request = Request {
                accounts: one.clone(),
                subscriptions: Some(vec![SUB.to_owned()]),
                sources: Default::default(),
                written: Vec::new(),
            };
            let started = Instant::now();
            let found = discover(&azure, &fingerprinter, &cache, &request).await;
            let took = started.elapsed();
            if i == 0 {
                cold = Some((took, found.calls));
            } else {
                warm.push((took, found.calls));
            }
        }
        let (cold_took, cold_calls) = cold.unwrap();
        let warm_calls = warm.last().map_or(0, |w| w.1);
        println!(
            "  one account's unlisted-consumer check: cold {:.2}s ({cold_calls} calls), warm median {:.3}s ({warm_calls} calls)",
            cold_took.as_secs_f64(),
            median(warm.iter().map(|w| w.0).collect()).as_secs_f64()
        );
        twin.shutdown().await;
    });
}
