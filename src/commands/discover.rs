//! `keyflip plan discover ACCOUNT_ID...`: finds every consumer of each account's key
//! with reads only (`crate::discover`) and writes a commented plan per account, or
//! with `--output json` the inventory.
//!
//! Promises: nothing is written to Azure; on this machine only the plan files asked
//! for (`--out`; an existing file is never overwritten). The fingerprint key and the
//! journal are read when they exist (so consumers keyflip wrote that cannot be
//! read back are recognized) and never created. Each account's usage gate is suggested from its
//! diagnostic settings.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::azure::Azure;
use crate::azure::budget::Budgets;
use crate::azure::monitor::{REQUEST_CATEGORIES, StorageService};
use crate::cli::{Output, PlanDiscoverArgs};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::discover::write::GateHint;
use crate::discover::{Discovery, DiscoveryCache, Request, discover, plan_text};
use crate::doctor::report::FingerprintSource;
use crate::exit::Exit;
use crate::journal::Journal;
use crate::resource_id::ResourceId;
use crate::secret::Fingerprinter;

type Failed = (Exit, String);

pub fn run(
    config_flag: Option<&Path>,
    args: &PlanDiscoverArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Exit {
    match run_inner(config_flag, args, out, err) {
        Ok(exit) => exit,
        Err((exit, message)) => {
            let _ = writeln!(err, "keyflip plan discover: {message}");
            if args.output.output == Output::Json {
                let doc = serde_json::json!({"error": message, "exit": exit as u8});
                let _ = writeln!(out, "{doc}");
            }
            exit
        }
    }
}

fn accounts(args: &PlanDiscoverArgs) -> Result<Vec<ResourceId>, Failed> {
    let mut out: Vec<ResourceId> = Vec::new();
    for text in &args.accounts {
        let id: ResourceId = text.parse().map_err(|e| {
            (
                Exit::Usage,
                format!("'{text}' is not a storage account id: {e}"),
            )
        })?;
        if !id.is_type("Microsoft.Storage/storageAccounts") {
            return Err((
                Exit::Usage,
                format!(
                    "'{text}' is a {}, not a storage account (/subscriptions/…/providers/Microsoft.Storage/storageAccounts/NAME)",
                    id.resource_type()
                ),
            ));
        }
        if !out
            .iter()
            .any(|o| o.as_str().eq_ignore_ascii_case(id.as_str()))
        {
            out.push(id);
        }
    }
    Ok(out)
}

/// Where each account's plan goes: stdout (`None`), the file, or a file in the
/// directory. Checked before anything is read, so a bad `--out` costs no Azure call.
fn destinations(
    args: &PlanDiscoverArgs,
    accounts: &[ResourceId],
) -> Result<Vec<Option<PathBuf>>, Failed> {
    let Some(out) = &args.out else {
        if accounts.len() > 1 && args.output.output == Output::Human {
            return Err((
                Exit::Usage,
                "several accounts make several plans: give --out DIRECTORY (or --output json)"
                    .into(),
            ));
        }
        return Ok(vec![None; accounts.len()]);
    };
    let paths: Vec<PathBuf> = if accounts.len() == 1 && !out.is_dir() {
        vec![out.clone()]
    } else {
        if !out.is_dir() {
            return Err((
                Exit::Usage,
                format!(
                    "--out {} is not a directory; with several accounts it must be one",
                    out.display()
                ),
            ));
        }
        accounts
            .iter()
            .map(|a| out.join(format!("{}.toml", a.name())))
            .collect()
    };
    for p in &paths {
        if p.exists() {
            return Err((
                Exit::Usage,
                format!(
                    "{} exists; keyflip does not overwrite a plan: remove it or choose another --out",
                    p.display()
                ),
            ));
        }
    }
    Ok(paths.into_iter().map(Some).collect())
}

fn run_inner(
    config_flag: Option<&Path>,
    args: &PlanDiscoverArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Exit, Failed> {
    let config = Config::load(config_flag).map_err(|e| (Exit::Usage, e.to_string()))?;
    let accounts = accounts(args)?;
    let destinations = if args.output.output == Output::Human {
        destinations(args, &accounts)?
    } else {
        vec![None; accounts.len()]
    };
    let (fingerprinter, source) =
        crate::doctor::fingerprinter(&config, err, "keyflip plan discover");
    let written = written(&config, &fingerprinter, source.source, &accounts, err);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let azure = Azure::new(&config, fingerprinter.clone())
        .map_err(|e| (Exit::Usage, e.to_string()))?
        .with_budgets(Arc::new(Budgets::new(config.daemon.budget, clock.clone())));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| {
            (
                Exit::Failure,
                format!("cannot start the async runtime: {e}"),
            )
        })?;
    let cache = DiscoveryCache::one_off(clock.clone());
    let request = Request {
        accounts: accounts.clone(),
        subscriptions: (!args.subscriptions.is_empty()).then(|| args.subscriptions.clone()),
        sources: config.discovery.clone(),
        written,
    };
    let (discovery, gates) = runtime.block_on(async {
        let discovery = discover(&azure, &fingerprinter, &cache, &request).await;
        let gates = futures::future::join_all(accounts.iter().map(|a| gate_hint(&azure, a))).await;
        (discovery, gates)
    });
    if args.output.output == Output::Json {
        let text = serde_json::to_string_pretty(&discovery).map_err(|e| {
            (
                Exit::Failure,
                format!("cannot write the inventory as JSON: {e}"),
            )
        })?;
        writeln!(out, "{text}").map_err(|e| (Exit::Failure, format!("cannot write: {e}")))?;
        return Ok(exit_of(&discovery));
    }
    let now = clock.now();
    let mut exit = Exit::Ok;
    // The summary is for the person at the terminal: it fits its width.
    let term = super::term::Term::stderr();
    let mut say = |text: &str| {
        let _ = write!(err, "{}", term.wrap("", "  ", text));
    };
    for ((found, gate), dest) in discovery.accounts.iter().zip(&gates).zip(&destinations) {
        let name = found
            .account
            .rsplit('/')
            .next()
            .unwrap_or(found.account.as_str());
        if let Some(e) = &found.error {
            say(&format!("{name}: {e}"));
            exit = worse(exit, Exit::Failure);
            continue;
        }
        let Some(text) = plan_text(found, now, gate.as_ref()) else {
            say(&format!(
                "{name}: no consumer of its key was found in {} subscription(s); no plan written ({} found but not rotatable)",
                discovery.subscriptions.len(),
                found.other.len()
            ));
            exit = worse(exit, Exit::Refused);
            continue;
        };
        let probable = found
            .consumers
            .iter()
            .filter(|f| matches!(f.verdict, crate::discover::Verdict::Probable { .. }))
            .count();
        let summary = format!(
            "{name}: {} consumer(s) ({probable} probable), {} more found but not listed",
            found.consumers.len(),
            found.other.len()
        );
        match dest {
            None => {
                out.write_all(text.as_bytes())
                    .map_err(|e| (Exit::Failure, format!("cannot write the plan: {e}")))?;
                say(&summary);
            }
            Some(path) => {
                write_new(path, &text).map_err(|e| {
                    (
                        Exit::Failure,
                        format!("cannot write {}: {e}", path.display()),
                    )
                })?;
                say(&format!("{summary}; plan written to {}", path.display()));
            }
        }
    }
    say(&format!(
        "{} Azure call(s) in {:.1}s over {} subscription(s)",
        discovery.calls,
        discovery.took_ms as f64 / 1000.0,
        discovery.subscriptions.len()
    ));
    Ok(exit)
}

fn worse(a: Exit, b: Exit) -> Exit {
    // Failure outranks a refusal: something could not be read at all.
    match (a, b) {
        (Exit::Failure, _) | (_, Exit::Failure) => Exit::Failure,
        (Exit::Refused, _) | (_, Exit::Refused) => Exit::Refused,
        _ => a,
    }
}

fn exit_of(d: &Discovery) -> Exit {
    d.accounts.iter().fold(Exit::Ok, |e, a| {
        if a.error.is_some() {
            worse(e, Exit::Failure)
        } else if a.consumers.is_empty() {
            worse(e, Exit::Refused)
        } else {
            e
        }
    })
}

/// Creates `path` with `text`; fails if it exists (never overwrites a plan).
fn write_new(path: &Path, text: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// keyflip's last writes to consumers of these accounts that cannot be read back
/// (the write-only kinds), from the journal, when there is
/// one written under this installation's fingerprint key.
fn written(
    config: &Config,
    fingerprinter: &Fingerprinter,
    source: FingerprintSource,
    accounts: &[ResourceId],
    err: &mut dyn Write,
) -> Vec<crate::discover::Write> {
    let path = config.state_dir.join("journal.db");
    if source != FingerprintSource::Installation || !path.exists() {
        return Vec::new();
    }
    let journal = match Journal::open(&path, fingerprinter) {
        Ok(j) => j,
        Err(e) => {
            let _ = writeln!(
                err,
                "keyflip plan discover: the journal cannot be read ({e}); consumers keyflip wrote that cannot be read back are matched by name only"
            );
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for account in accounts {
        match crate::discover::journal_writes(&journal, account) {
            Ok(found) => out.extend(found),
            Err(e) => {
                let _ = writeln!(err, "keyflip plan discover: {e}");
            }
        }
    }
    out
}

/// The Log Analytics workspace the account's request logs go to, from the diagnostic
/// settings of its services.
async fn gate_hint(azure: &Azure, account: &ResourceId) -> Option<GateHint> {
    let mut workspace: Option<String> = None;
    let mut services = Vec::new();
    for service in StorageService::ALL {
        let Ok(settings) = azure.diagnostic_settings(account, service).await else {
            continue;
        };
        let sends = settings.iter().find(|s| {
            s.workspace.is_some()
                && REQUEST_CATEGORIES
                    .iter()
                    .all(|c| s.categories.iter().any(|k| k.eq_ignore_ascii_case(c)))
                && workspace.as_deref().is_none_or(|w| {
                    s.workspace
                        .as_deref()
                        .is_some_and(|x| x.eq_ignore_ascii_case(w))
                })
        });
        if let Some(s) = sends {
            workspace = workspace.or_else(|| s.workspace.clone());
            services.push(service.as_str());
        }
    }
    let workspace = workspace?;
    let workspace_id = azure.log_analytics_workspace_id(&workspace).await.ok();
    Some(GateHint {
        workspace,
        workspace_id,
        services,
    })
}
