//! Three `keyflip daemon` processes, one twin world of 30 storage accounts, one
//! Azurite container, 30 plans due at the same minute: every account is rotated
//! exactly once (one stage and one retire in the twin's request log) and the work is
//! spread over the replicas.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{Timelike as _, Utc};
use keyflip::coordination::blob_name;
use keyflip::coordination::document::AccountDoc;

use super::Shared;

const ACCOUNTS: usize = 30;
const REPLICAS: [&str; 3] = ["r1", "r2", "r3"];
const SUBSCRIPTION: &str = "3c9e5b1d-2a4f-4e6b-9c8d-0f1e2d3c4b5a";
const GROUP: &str = "rg-datascience";

pub(super) fn name(i: usize) -> String {
    format!("stfleet{i:03}")
}

pub(super) fn account_id(i: usize) -> String {
    format!(
        "/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}/providers/Microsoft.Storage/storageAccounts/{}",
        name(i)
    )
}

/// 30 accounts, each with a raw-key secret in the demo vault, and the operator's key
/// role on each.
fn world() -> String {
    world_of(ACCOUNTS)
}

/// [`world`] of `accounts` accounts.
pub(super) fn world_of(accounts: usize) -> String {
    let mut text = String::new();
    for i in 0..accounts {
        let n = name(i);
        text.push_str(&format!(
            "\n[[storage_account]]\nname = \"{n}\"\nresource_group = \"{GROUP}\"\nsku = \"Standard_LRS\"\nkind = \"StorageV2\"\nallow_shared_key_access = true\ncontainers = [\"data\"]\n\n[[role_assignment]]\nprincipal = \"keyflip-operator\"\nrole = \"Storage Account Key Operator Service Role\"\nscope = \"{}\"\n",
            account_id(i)
        ));
    }
    for i in 0..accounts {
        let n = name(i);
        text.push_str(&format!(
            "\n[[key_vault.secret]]\nname = \"{n}-key\"\ncontent_type = \"text/plain\"\nvalue_from = {{ account = \"{n}\", key = \"key1\", format = \"raw-key\" }}\n"
        ));
    }
    text
}

fn daemon(shared: &Shared, replica: &str) -> Child {
    let mut text = shared.config_text(replica, 15);
    let run = shared.dir.path().join(format!("run-{replica}"));
    std::fs::create_dir_all(&run).unwrap();
    text.push_str(&format!(
        "\n[daemon]\nsocket = \"{}\"\nmetrics_listen = \"off\"\nretry_backoff = \"10s\"\npark_after_failures = 10\nshutdown_timeout = \"10s\"\n",
        run.join("keyflip.sock").display()
    ));
    // [daemon] after [coordination] is fine: both are top-level tables.
    let path = shared.dir.path().join(format!("{replica}-daemon.toml"));
    std::fs::write(&path, text).unwrap();
    let log = std::fs::File::create(shared.dir.path().join(format!("{replica}.log"))).unwrap();
    Command::new(env!("CARGO_BIN_EXE_keyflip"))
        .arg("--config")
        .arg(&path)
        .arg("daemon")
        .env_remove("KEYFLIP_FAILPOINT")
        .env("RUST_LOG", "keyflip=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Successful `regenerateKey` calls per account.
async fn regenerations(shared: &Shared) -> BTreeMap<String, usize> {
    let mut per = BTreeMap::new();
    for e in shared.twin.requests_for("storage.regenerateKey").await {
        if !e["status"]
            .as_u64()
            .is_some_and(|s| (200..300).contains(&s))
        {
            continue;
        }
        let path = e["path"].as_str().unwrap_or_default();
        if let Some(n) = (0..ACCOUNTS)
            .map(name)
            .find(|n| path.contains(&format!("/{n}/")))
        {
            *per.entry(n).or_insert(0) += 1;
        }
    }
    per
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_rotate_thirty_due_plans_each_exactly_once() {
    let shared = Shared::start_world(&world()).await;
    // Due at the next whole minute at least 20 s away (every daemon is up by then).
    let at = Utc::now() + chrono::TimeDelta::seconds(80);
    let cron = format!("{} {} * * *", at.minute(), at.hour());
    let vault = &shared.twin.endpoints.key_vaults["kv-datasci"].url;
    for i in 0..ACCOUNTS {
        let n = name(i);
        std::fs::write(
            shared.dir.path().join("plans").join(format!("{n}.toml")),
            format!(
                "storage_account = \"{}\"\n[schedule]\ncron = \"{cron}\"\ntimezone = \"UTC\"\n[rotation]\ngrace = \"1s\"\n\n[[key_vault]]\nvault = \"{vault}\"\nsecret = \"{n}-key\"\nformat = \"raw-key\"\n",
                account_id(i)
            ),
        )
        .unwrap();
    }
    // The demo plan of the shared directory is not part of this fleet.
    std::fs::remove_file(shared.dir.path().join("plans/demo.toml")).unwrap();
    let mut daemons: Vec<Child> = REPLICAS.iter().map(|r| daemon(&shared, r)).collect();

    let deadline = Instant::now() + Duration::from_secs(150);
    let done = loop {
        let per = regenerations(&shared).await;
        if per.len() == ACCOUNTS && per.values().all(|n| *n >= 2) {
            // Let any straggler show itself before judging.
            tokio::time::sleep(Duration::from_secs(15)).await;
            break regenerations(&shared).await;
        }
        for (d, r) in daemons.iter_mut().zip(REPLICAS) {
            assert!(d.try_wait().unwrap().is_none(), "daemon {r} exited");
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = REPLICAS
                .iter()
                .map(|r| {
                    std::fs::read_to_string(shared.dir.path().join(format!("{r}.log")))
                        .unwrap_or_default()
                })
                .collect();
            panic!(
                "not every account was rotated: {per:?}\n{}",
                logs.join("\n----\n")
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    for d in &daemons {
        let _ = Command::new("kill")
            .args(["-TERM", &d.id().to_string()])
            .status();
    }
    for d in &mut daemons {
        let _ = d.wait();
    }
    // Exactly one stage and one retire per account.
    let expected: BTreeMap<String, usize> = (0..ACCOUNTS).map(|i| (name(i), 2)).collect();
    assert_eq!(done, expected);

    // Who did the work: the last writer of each account's shared journal.
    let blob = shared.operator_blob();
    let mut by = BTreeMap::<String, usize>::new();
    for i in 0..ACCOUNTS {
        let id = account_id(i).parse().unwrap();
        let (bytes, _) = blob
            .get(&blob_name(&id))
            .await
            .unwrap()
            .expect("a shared journal");
        let doc = AccountDoc::parse(&bytes).unwrap();
        assert_eq!(doc.rotations.len(), 1, "{}: one rotation", name(i));
        assert!(doc.unfinished().is_none());
        *by.entry(doc.holder.unwrap().replica).or_insert(0) += 1;
    }
    println!("rotations per replica: {by:?}");
    let replicas: BTreeSet<&String> = by.keys().collect();
    assert!(replicas.len() >= 2, "work spread over the replicas: {by:?}");
}
