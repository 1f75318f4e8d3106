//! `status` and `history` at fleet scale read a per-account summary from the
//! container listing (blob metadata written in the same Put Blob as the document),
//! and a document's body only when they need it: counted with Azurite's own access
//! log, not keyflip's account of itself. The summary agrees with the body after every
//! kind of write; a blob without one (written by an older keyflip) is read in full and
//! printed the same.

use std::time::{Duration, Instant};

use keyflip::coordination::document::{AccountDoc, ParkedDoc, PlanDoc, SUMMARY_METADATA, Summary};
use keyflip::coordination::{BlobClient, Conditions, blob_name};
use keyflip::resource_id::ResourceId;
use keyflip::rotation::{NoProgress, RotateRequest};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::fleet::{account_id, name, world_of};
use super::truth::{engine, json};
use crate::support::engine::{demo_plan_text, plan_from};

/// The summary listed for `blob` and the one its body gives, when both were read at
/// the same version (`None` when a write came between the two reads).
async fn listed_and_derived(
    blob: &BlobClient,
    name: &str,
) -> Option<(Option<Summary>, Summary, AccountDoc)> {
    let listed = blob
        .list_with_metadata(name)
        .await
        .unwrap()
        .into_iter()
        .find(|l| l.name == name)?;
    let read = blob.read(name).await.unwrap()?;
    if read.etag.0.trim_matches('"') != listed.etag {
        return None;
    }
    let doc = AccountDoc::parse(&read.body).unwrap();
    let (bytes, value) = doc.encode();
    assert_eq!(bytes, read.body, "the document round-trips");
    let derived = Summary::decode(&value.unwrap(), bytes.len() as u64).unwrap();
    let summary = listed
        .metadata
        .iter()
        .find(|(n, _)| n == SUMMARY_METADATA)
        .and_then(|(_, v)| Summary::decode(v, listed.len));
    Some((summary, derived, doc))
}

async fn assert_agree(blob: &BlobClient, name: &str, after: &str) -> AccountDoc {
    let (summary, derived, doc) = listed_and_derived(blob, name)
        .await
        .unwrap_or_else(|| panic!("{after}: nothing wrote meanwhile"));
    assert_eq!(summary.as_ref(), Some(&derived), "after {after}");
    doc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_and_the_body_agree_after_every_kind_of_write() {
    let shared = Shared::start().await;
    let plan = plan_from(&demo_plan_text(&shared.twin));
    let blob = shared.operator_blob();
    let name = blob_name(&plan.storage_account);
    let a = engine(&shared, "a");
    let coordinator = a.coordination().unwrap().clone();

    // Created empty, then the holder written on taking the lease.
    let taken = coordinator.hold(&plan.storage_account).await.unwrap();
    let doc = assert_agree(&blob, &name, "creating the blob and naming the holder").await;
    assert_eq!(doc.holder.unwrap().replica, "a");
    drop(taken);
    // Released in the background: wait for it, so the rotation below gets the lease.
    let deadline = Instant::now() + Duration::from_secs(30);
    while blob.list_with_metadata(&name).await.unwrap()[0].leased {
        assert!(Instant::now() < deadline, "the lease was never released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Every journal write of a rotation (begin, intents, events, finish), sampled
    // while it runs: each version seen has the summary of its own body.
    let (engine_a, plan_a) = (a.clone(), plan.clone());
    let task = tokio::spawn(async move {
        engine_a
            .rotate(
                &plan_a,
                RotateRequest {
                    grace: Some(Duration::from_secs(3)),
                    ..RotateRequest::manual()
                },
                &NoProgress,
                CancellationToken::new(),
            )
            .await
    });
    let mut versions = std::collections::BTreeSet::new();
    let mut unfinished_seen = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !task.is_finished() {
        assert!(Instant::now() < deadline, "the rotation never ended");
        if let Some((summary, derived, doc)) = listed_and_derived(&blob, &name).await {
            assert_eq!(summary.as_ref(), Some(&derived), "mid-rotation");
            unfinished_seen |= doc.unfinished().is_some();
            versions.insert(format!(
                "{} {:?}",
                derived.len,
                doc.rotations
                    .last()
                    .map(|r| (r.steps.len(), r.events.len()))
            ));
        }
    }
    let report = task.await.unwrap().unwrap();
    assert!(
        unfinished_seen,
        "a version with the rotation unfinished was checked"
    );
    assert!(
        versions.len() >= 3,
        "several versions were checked: {versions:?}"
    );
    let doc = assert_agree(&blob, &name, "the rotation's finish").await;
    assert_eq!(doc.rotations.last().unwrap().id, report.rotation_id);

    // A daemon's concluded cycle (failures and a park), under a lease taken for it.
    let parked = PlanDoc {
        failures: 3,
        parked: Some(ParkedDoc {
            at: chrono::Utc::now(),
            reason: "three failed cycles".into(),
        }),
        by: Some("a".into()),
        updated_at: Some(chrono::Utc::now()),
        ..PlanDoc::default()
    };
    coordinator
        .record_plan(&plan.storage_account, &plan.name, parked)
        .await
        .unwrap();
    let doc = assert_agree(&blob, &name, "recording a plan's park").await;
    assert!(doc.plans[&plan.name].parked.is_some());
}

/// Plans of `n` fleet accounts (one raw-key secret each) and the demo plan.
fn fleet_plans(shared: &Shared, n: usize) {
    let vault = &shared.twin.endpoints.key_vaults["kv-datasci"].url;
    for i in 0..n {
        std::fs::write(
            shared.dir.path().join("plans").join(format!("{}.toml", name(i))),
            format!(
                "storage_account = \"{}\"\n\n[[key_vault]]\nvault = \"{vault}\"\nsecret = \"{}-key\"\nformat = \"raw-key\"\n",
                account_id(i),
                name(i)
            ),
        )
        .unwrap();
    }
}

/// `doc` (the demo account's) as fleet account `i`'s: its rotations and plan state
/// moved to that account and plan, their times `i + 1` minutes later.
fn as_fleet_account(doc: &AccountDoc, i: usize) -> AccountDoc {
    let later = chrono::TimeDelta::minutes(i as i64 + 1);
    let mut doc = doc.clone();
    doc.account = Some(account_id(i));
    for r in &mut doc.rotations {
        r.id = format!("{}-{i}", r.id);
        r.plan = name(i);
        r.account = account_id(i);
        r.started_at += later;
        if let Some(f) = &mut r.finished {
            f.at += later;
        }
        for e in &mut r.events {
            e.at += later;
        }
    }
    doc.plans = doc
        .plans
        .into_values()
        .map(|mut state| {
            state.last_started = state.last_started.map(|t| t + later);
            state.last_success = state.last_success.map(|t| t + later);
            state.updated_at = state.updated_at.map(|t| t + later);
            (name(i), state)
        })
        .collect();
    doc
}

async fn put(blob: &BlobClient, account: &str, doc: &AccountDoc, summary: bool) {
    let account: ResourceId = account.parse().unwrap();
    let (bytes, value) = doc.encode();
    let metadata = match (&value, summary) {
        (Some(v), true) => vec![(SUMMARY_METADATA, v.as_str())],
        _ => Vec::new(),
    };
    blob.put_with(
        &blob_name(&account),
        &bytes,
        &metadata,
        &Conditions::default(),
    )
    .await
    .unwrap();
}

/// Requests Azurite answered since `before` (its access log): listings of the
/// container and Get Blobs of account documents.
fn counted(shared: &Shared, before: usize) -> (Vec<String>, Vec<String>, usize) {
    let all = shared.azurite.requests();
    let new: Vec<String> = all[before..].to_vec();
    let lists = new
        .iter()
        .filter(|r| r.starts_with("GET ") && r.contains("comp=list"))
        .cloned()
        .collect();
    let gets = new
        .iter()
        .filter(|r| r.starts_with("GET ") && r.contains("/accounts/"))
        .cloned()
        .collect();
    (lists, gets, all.len())
}

/// Each plan's rotations and lease in a status document, by plan.
fn journal_parts(status: &Value) -> Vec<Value> {
    status["plans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            serde_json::json!({
                "plan": p["plan"],
                "last_rotation": p["last_rotation"],
                "unfinished": p["unfinished"],
                "lease": p["lease"],
                "schedule": p["schedule"],
                "next_due": p["next_due"],
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_of_a_fleet_lists_once_and_reads_only_the_documents_without_a_summary() {
    const N: usize = 12;
    let shared = Shared::start_world(&world_of(N)).await;
    fleet_plans(&shared, N);
    let plan = plan_from(&demo_plan_text(&shared.twin));
    let blob = shared.operator_blob();

    // One real rotation of the demo account, then its document as every fleet
    // account's (each a minute apart).
    let a = engine(&shared, "a");
    let report = a
        .rotate(
            &plan,
            RotateRequest::manual(),
            &NoProgress,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    let (bytes, _) = blob
        .get(&blob_name(&plan.storage_account))
        .await
        .unwrap()
        .unwrap();
    let demo = AccountDoc::parse(&bytes).unwrap();
    let docs: Vec<AccountDoc> = (0..N).map(|i| as_fleet_account(&demo, i)).collect();
    for (i, doc) in docs.iter().enumerate() {
        put(&blob, &account_id(i), doc, true).await;
    }

    // Every account summarised: one listing, no Get Blob.
    let before = shared.azurite.requests().len();
    let summarised = json(&shared, "fresh", &["status"]).await;
    let (lists, gets, before) = counted(&shared, before);
    assert_eq!(lists.len(), 1, "one listing for {} plans: {lists:?}", N + 1);
    assert!(gets.is_empty(), "no document read: {gets:?}");
    let parts = journal_parts(&summarised);
    assert_eq!(parts.len(), N + 1);
    for (i, doc) in docs.iter().enumerate() {
        let part = parts.iter().find(|p| p["plan"] == name(i)).unwrap();
        assert_eq!(
            part["last_rotation"]["rotation_id"],
            doc.rotations[0].id.as_str(),
            "{part}"
        );
        assert_eq!(part["last_rotation"]["outcome"], "completed");
    }
    let demo_part = parts.iter().find(|p| p["plan"] == "demo").unwrap();
    assert_eq!(
        demo_part["last_rotation"]["rotation_id"],
        report.rotation_id.as_str()
    );

    // Two documents rewritten without a summary, as an older replica writes them
    // (Put Blob replaces the metadata): those two are read, and status is the same.
    for i in [3, 7] {
        put(&blob, &account_id(i), &docs[i], false).await;
    }
    let mixed = json(&shared, "fresh", &["status"]).await;
    let (lists, mut gets, before) = counted(&shared, before);
    assert_eq!(lists.len(), 1, "{lists:?}");
    gets.sort();
    let mut legacy: Vec<String> = [3, 7]
        .iter()
        .map(|i| blob_name(&account_id(*i).parse().unwrap()))
        .collect();
    legacy.sort();
    assert_eq!(gets.len(), 2, "{gets:?}");
    for (get, name) in gets.iter().zip(&legacy) {
        assert!(get.ends_with(name.as_str()), "{get} reads {name}");
    }
    assert_eq!(journal_parts(&mixed), parts);

    // No summary anywhere (every blob as an older keyflip left it): every document is
    // read, and status prints what it printed from the summaries.
    for (i, doc) in docs.iter().enumerate() {
        put(&blob, &account_id(i), doc, false).await;
    }
    put(&blob, plan.storage_account.as_str(), &demo, false).await;
    let legacy_status = json(&shared, "fresh", &["status"]).await;
    let (_, gets, before) = counted(&shared, before);
    assert_eq!(gets.len(), N + 1, "{gets:?}");
    assert_eq!(journal_parts(&legacy_status), parts);

    // history: without summaries every document is read; with them, the newest 3
    // rotations need 3 documents, and it prints what reading every document prints.
    let everything = json(&shared, "fresh", &["history", "--limit", "3"]).await;
    let (_, gets, _) = counted(&shared, before);
    assert_eq!(
        gets.len(),
        N + 1,
        "without summaries every document is read"
    );
    for (i, doc) in docs.iter().enumerate() {
        put(&blob, &account_id(i), doc, true).await;
    }
    put(&blob, plan.storage_account.as_str(), &demo, true).await;
    let before = shared.azurite.requests().len();
    let history = json(&shared, "fresh", &["history", "--limit", "3"]).await;
    let (lists, gets, _) = counted(&shared, before);
    assert_eq!(lists.len(), 1, "{lists:?}");
    assert_eq!(gets.len(), 3, "the 3 newest rotations' documents: {gets:?}");
    assert_eq!(history, everything);
    let rotations = history["rotations"].as_array().unwrap();
    assert_eq!(rotations.len(), 3);
    assert_eq!(rotations[0]["plan"], name(N - 1), "newest first: {history}");
    assert!(
        rotations[0]["steps"]
            .as_array()
            .is_some_and(|s| !s.is_empty()),
        "history prints every step, from the body"
    );
}

/// `doc` with `KEEP` finished rotations, each a copy of its first one an hour apart
/// (a fleet account after a few months of rotations, about 130 KB).
fn with_history(doc: &AccountDoc, keep: usize) -> AccountDoc {
    let mut out = doc.clone();
    let first = doc.rotations[0].clone();
    out.rotations = (0..keep)
        .map(|k| {
            let back = chrono::TimeDelta::hours((keep - 1 - k) as i64);
            let mut r = first.clone();
            r.id = format!("{}-{k}", first.id);
            r.started_at -= back;
            if let Some(f) = &mut r.finished {
                f.at -= back;
            }
            for e in &mut r.events {
                e.at -= back;
            }
            r
        })
        .collect();
    out
}

/// Runs `keyflip ARGS --output json`; its wall time, and what went wrong (exit code
/// and the first plan error) when it did not exit 0.
fn timed(
    program: &std::path::Path,
    config: &std::path::Path,
    args: &[&str],
) -> (Duration, Option<String>) {
    let started = Instant::now();
    let out = std::process::Command::new(program)
        .arg("--config")
        .arg(config)
        .args(args)
        .args(["--output", "json"])
        .env_remove("RUST_LOG")
        .env_remove("KEYFLIP_PLANS_DIR")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let took = started.elapsed();
    let trouble = (!out.status.success()).then(|| {
        let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let errors: Vec<&Value> = json["plans"]
            .as_array()
            .map(|p| p.iter().filter(|p| !p["error"].is_null()).collect())
            .unwrap_or_default();
        format!(
            "exit {:?}, {} plan(s) with an error, first: {}; stderr: {}",
            out.status.code(),
            errors.len(),
            errors.first().map_or(Value::Null, |p| p["error"].clone()),
            String::from_utf8_lossy(&out.stderr)
                .chars()
                .take(300)
                .collect::<String>()
        )
    });
    (took, trouble)
}

fn median(mut times: Vec<Duration>) -> String {
    times.sort();
    format!(
        "{:.2} s ({:.2}–{:.2}, n={})",
        times[times.len() / 2].as_secs_f64(),
        times[0].as_secs_f64(),
        times[times.len() - 1].as_secs_f64(),
        times.len()
    )
}

/// The measurement behind docs/performance.md, "status and history with
/// [coordination]" (not a timed test: it asserts nothing about time):
///
/// ```sh
/// KEYFLIP_BEFORE=/path/to/older/keyflip KEYFLIP_ACCOUNTS=1000 \
///   cargo test --all-features --test it -- --ignored --nocapture measure_status_and_history
/// ```
///
/// Against Azurite and the twin, `KEYFLIP_ACCOUNTS` accounts (default 1,000), each
/// document holding 5 finished rotations, written by this keyflip (with summaries);
/// `keyflip status` and `keyflip history` of this build and of `KEYFLIP_BEFORE` (when
/// set), 5 runs each, and `status` without `[coordination]` (the live part alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by hand (see docs/performance.md)"]
async fn measure_status_and_history_at_fleet_scale() {
    let n: usize = std::env::var("KEYFLIP_ACCOUNTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let runs = 5;
    let shared = Shared::start_world(&world_of(n)).await;
    fleet_plans(&shared, n);
    let plan = plan_from(&demo_plan_text(&shared.twin));
    let blob = shared.operator_blob();
    let a = engine(&shared, "a");
    a.rotate(
        &plan,
        RotateRequest::manual(),
        &NoProgress,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let (bytes, _) = blob
        .get(&blob_name(&plan.storage_account))
        .await
        .unwrap()
        .unwrap();
    let demo = with_history(&AccountDoc::parse(&bytes).unwrap(), 5);
    put(&blob, plan.storage_account.as_str(), &demo, true).await;
    let started = Instant::now();
    let mut size = 0;
    for i in 0..n {
        let doc = as_fleet_account(&demo, i);
        size += doc.encode().0.len();
        put(&blob, &account_id(i), &doc, true).await;
    }
    println!(
        "{n} documents written in {:.1} s, {:.1} MB in all",
        started.elapsed().as_secs_f64(),
        size as f64 / 1e6
    );
    let config = shared.write_config("fresh", 15);
    let alone = shared.dir.path().join("alone.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&alone, text.split("\n[coordination]").next().unwrap()).unwrap();
    let after = std::path::PathBuf::from(env!("CARGO_BIN_EXE_keyflip"));
    let mut binaries = vec![("this build", after.clone())];
    if let Ok(before) = std::env::var("KEYFLIP_BEFORE") {
        binaries.insert(0, ("before", before.into()));
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at start: {}", load.trim());
    for (label, program) in &binaries {
        for args in [&["status"][..], &["history"][..]] {
            let start = shared.azurite.requests().len();
            let runs_done: Vec<(Duration, Option<String>)> =
                (0..runs).map(|_| timed(program, &config, args)).collect();
            for trouble in runs_done.iter().filter_map(|r| r.1.as_ref()) {
                println!("  {label} {args:?}: {trouble}");
            }
            let times: Vec<Duration> = runs_done.into_iter().map(|r| r.0).collect();
            let requests = shared.azurite.requests();
            let new = &requests[start..];
            let lists = new.iter().filter(|r| r.contains("comp=list")).count();
            let gets = new
                .iter()
                .filter(|r| r.starts_with("GET ") && r.contains("/accounts/"))
                .count();
            println!(
                "{label}: keyflip {} of {} accounts: {}; per run {} List Blobs, {} Get Blob",
                args[0],
                n + 1,
                median(times),
                lists / runs,
                gets / runs
            );
        }
    }
    let runs_done: Vec<(Duration, Option<String>)> = (0..runs)
        .map(|_| timed(&after, &alone, &["status"]))
        .collect();
    for trouble in runs_done.iter().filter_map(|r| r.1.as_ref()) {
        println!("  without [coordination]: {trouble}");
    }
    let times: Vec<Duration> = runs_done.into_iter().map(|r| r.0).collect();
    println!(
        "this build: keyflip status of the same plans without [coordination]: {}",
        median(times)
    );
    println!(
        "load average at end: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
}
