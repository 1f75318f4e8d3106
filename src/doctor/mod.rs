//! `keyflip doctor [--plan NAME] [--output json]`: tells an operator, before anything
//! is rotated, whether keyflip can rotate each plan, and what to do where it cannot.
//!
//! For each plan (all plans in the configuration's `plans_dir`, or one): can keyflip
//! get a token for every audience the plan needs; does its identity hold every action
//! the plan needs on each resource (with the built-in role that would grant each
//! missing one); does the account allow shared keys and do both keys work on the data
//! plane; what each consumer holds and whether a rotation can write it (each kind's
//! reads and rows are its module's in `crate::consumer`: which datastores use the
//! account's key and whether the plan covers them, which secret versions hold which
//! key, whether a secret scope can be written); do the consumers agree on one key.
//! [`collect`] reads (concurrently), [`assess`] judges, [`report`] is the result,
//! [`render`] prints it for people and serde for machines.
//!
//! Promises: doctor changes nothing, in Azure or on this machine. It sends only reads
//! (and token requests), does not create the fingerprint key or the journal (without
//! an installation fingerprint key it fingerprints under a key made for this run), and
//! never prints a key value. Exit status: 0 when nothing would block a rotation
//! (warnings do not), 3 when something would, 2 for an invalid configuration or plan,
//! 1 when keyflip itself could not run. With `--output json` stdout holds exactly one
//! JSON document: the report, or `{"error": ..., "exit": N}`.

pub(crate) mod assess;
pub mod collect;
pub(crate) mod remedy;
pub(crate) mod render;
pub mod report;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use futures::StreamExt as _;

use crate::azure::Azure;
use crate::cli::{DoctorArgs, Output};
use crate::config::Config;
use crate::exit::Exit;
use crate::plan::{self, FindError, Plan};
use crate::secret::Fingerprinter;
use report::{FingerprintSource, Fingerprints, InvalidPlan, PlanReport, Report};

/// How many plans are examined at once. Each plan already runs its own reads
/// concurrently; this keeps a large fleet from spending a subscription's ARM read
/// budget in one burst.
const PLANS_AT_ONCE: usize = 4;

/// What `doctor` adds to its reads besides the plans: where discovery looks beyond
/// ARM, keyflip's own earlier writes, and whether unlisted consumers block.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `[discovery]`: where discovery looks beyond what ARM lists.
    pub sources: crate::config::DiscoveryConfig,
    /// The journal's last writes to consumers that cannot be read back.
    pub written: crate::discover::unlisted::Writes,
    /// `--strict`: a consumer the plan does not list blocks.
    pub strict: bool,
}

/// Examines `plans` (in their order) and returns one report per plan.
pub async fn examine(azure: &Azure, plans: &[Plan]) -> Vec<PlanReport> {
    examine_with(azure, plans, &Options::default()).await
}

/// [`examine`], with discovery's inputs and `--strict`. One discovery covers every
/// plan's account (each resource of the subscriptions is read once for all plans).
pub async fn examine_with(azure: &Azure, plans: &[Plan], options: &Options) -> Vec<PlanReport> {
    let mut accounts: Vec<crate::resource_id::ResourceId> = Vec::new();
    for plan in plans {
        if !accounts.iter().any(|a| {
            a.as_str()
                .eq_ignore_ascii_case(plan.storage_account.as_str())
        }) {
            accounts.push(plan.storage_account.clone());
        }
    }
    let cache = crate::discover::DiscoveryCache::one_off(Arc::new(crate::clock::SystemClock));
    let request = crate::discover::Request {
        accounts,
        subscriptions: None,
        sources: options.sources.clone(),
        written: options.written.clone(),
    };
    let discovery = crate::discover::discover(azure, azure.fingerprinter(), &cache, &request).await;
    let discovery = &discovery;
    futures::stream::iter(plans.iter().map(|plan| async move {
        let mut seen = tracing::Instrument::instrument(
            collect::observe(azure, plan),
            crate::logging::plan_span(&plan.name),
        )
        .await;
        seen.discovered = discovery
            .accounts
            .iter()
            .find(|a| a.account.eq_ignore_ascii_case(plan.storage_account.as_str()))
            .map(|a| match &a.error {
                Some(e) => collect::Discovered::Failed(e.clone()),
                None => collect::Discovered::Found(a.clone()),
            });
        let mut checks = assess::assess(plan, &seen);
        if options.strict {
            for c in &mut checks {
                if matches!(&c.facts, report::Facts::Unlisted { consumers, .. } if !consumers.is_empty())
                {
                    c.status = report::Status::Error;
                }
            }
        }
        PlanReport::new(
            plan.name.clone(),
            plan.origin().to_owned(),
            plan.storage_account.to_string(),
            checks,
        )
    }))
    .buffered(PLANS_AT_ONCE)
    .collect()
    .await
}

/// The `keyflip doctor` command: loads the configuration and plans, examines them and
/// writes the report to `out` (diagnostics to `err`).
pub fn run(
    config_flag: Option<&Path>,
    args: &DoctorArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Exit {
    match run_inner(config_flag, args, out, err) {
        Ok(exit) => exit,
        Err((exit, message)) => {
            let _ = writeln!(err, "keyflip doctor: {message}");
            // A machine reading stdout still gets one JSON document.
            if args.output.output == Output::Json {
                let doc = serde_json::json!({"error": message, "exit": exit as u8});
                let _ = writeln!(out, "{doc}");
            }
            exit
        }
    }
}

type Failed = (Exit, String);

fn run_inner(
    config_flag: Option<&Path>,
    args: &DoctorArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Exit, Failed> {
    let config = Config::load(config_flag).map_err(|e| (Exit::Usage, e.to_string()))?;
    let (plans, invalid) = plans(&config, args.plan.as_deref())?;
    let (fingerprinter, fingerprints) = fingerprinter(&config, err, "keyflip doctor");
    let azure = Azure::new(&config, fingerprinter.clone()).map_err(|e| match e {
        crate::azure::Error::Config(_) | crate::azure::Error::Invalid(_) => {
            (Exit::Usage, e.to_string())
        }
        other => (Exit::Failure, other.to_string()),
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            (
                Exit::Failure,
                format!("cannot start the async runtime: {e}"),
            )
        })?;
    let options = Options {
        sources: config.discovery.clone(),
        written: written(&config, &fingerprinter, fingerprints.source, &plans),
        strict: args.strict,
    };
    let (identity, mut reports) = runtime.block_on(async {
        futures::join!(azure.principal(), examine_with(&azure, &plans, &options))
    });
    // A token that cannot be had shows in the token rows; here it only leaves the
    // identity unnamed.
    let identity = identity.ok();
    remedy::fill(&mut reports, identity.as_ref());
    let mut report = Report::new(fingerprints, reports, invalid);
    report.identity = identity;
    let text = match args.output.output {
        Output::Human => render::human(&report, &crate::commands::term::Term::stdout()),
        Output::Json => serde_json::to_string_pretty(&report)
            .map(|j| j + "\n")
            .map_err(|e| {
                (
                    Exit::Failure,
                    format!("cannot write the report as JSON: {e}"),
                )
            })?,
    };
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| (Exit::Failure, format!("cannot write the report: {e}")))?;
    Ok(report.exit())
}

/// The plans to examine: one by name or path, or every plan in `plans_dir` (with the
/// files that are not valid plans, which the report lists).
fn plans(config: &Config, only: Option<&str>) -> Result<(Vec<Plan>, Vec<InvalidPlan>), Failed> {
    let dir = &config.plans_dir;
    if let Some(name) = only {
        return match plan::find(dir, name) {
            Ok(plan) => Ok((vec![plan], Vec::new())),
            Err(e @ FindError::NotFound { .. }) => Err((Exit::Usage, e.to_string())),
            Err(FindError::Invalid(e)) => Err((
                Exit::Usage,
                format!("{e}\n(keyflip plan check {} shows every error)", e.origin()),
            )),
        };
    }
    let (plans, errors) = plan::load_dir(dir);
    let invalid: Vec<InvalidPlan> = errors
        .iter()
        .map(|e| InvalidPlan {
            file: e.origin().to_owned(),
            message: e.to_string(),
        })
        .collect();
    if plans.is_empty() {
        let why = match invalid.first() {
            Some(first) if invalid.len() == 1 => first.message.clone(),
            Some(_) => invalid
                .iter()
                .map(|i| i.message.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
            None => format!(
                "the plans directory {} has no *.toml plans; set plans_dir in keyflip.toml",
                dir.display()
            ),
        };
        return Err((Exit::Usage, why));
    }
    Ok((plans, invalid))
}

/// The installation's fingerprint key if there is one (so fingerprints match the
/// journal and `keyflip status`), else a key for this run only. Read here rather than
/// through [`Fingerprinter::load_or_create`], which would create a missing key file:
/// doctor creates nothing (nor does `plan discover`, which uses it too; `who` names
/// the command in the note about a key for this run).
pub(crate) fn fingerprinter(
    config: &Config,
    err: &mut dyn Write,
    who: &str,
) -> (Arc<Fingerprinter>, Fingerprints) {
    use std::os::unix::fs::PermissionsExt as _;
    let path = config.state_dir.join("fingerprint.key");
    let installation = match std::fs::read(&path).map(zeroize::Zeroizing::new) {
        Ok(bytes) => {
            let open = std::fs::metadata(&path)
                .map(|m| m.permissions().mode() & 0o077 != 0)
                .unwrap_or(true);
            if bytes.len() != 32 {
                Err(format!(
                    "{} is not a fingerprint key (expected 32 bytes)",
                    path.display()
                ))
            } else if open {
                Err(format!(
                    "{} can be read by group or others; run chmod 600 on it",
                    path.display()
                ))
            } else {
                Ok(Some(Fingerprinter::from_bytes(&bytes)))
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    };
    match installation {
        Ok(Some(f)) => {
            return (
                Arc::new(f),
                Fingerprints {
                    source: FingerprintSource::Installation,
                    path: Some(path.display().to_string()),
                },
            );
        }
        Ok(None) => {}
        Err(why) => {
            let _ = writeln!(
                err,
                "{who}: {why}; fingerprints in this report use a key made for this run"
            );
        }
    }
    (
        Arc::new(Fingerprinter::from_bytes(random_key().as_ref())),
        Fingerprints {
            source: FingerprintSource::ThisRun,
            path: None,
        },
    )
}

/// keyflip's last writes to the plans' accounts' consumers that cannot be read back
/// (the write-only kinds), from the journal, when one
/// exists under this installation's fingerprint key (opened, never created).
fn written(
    config: &Config,
    fingerprinter: &Fingerprinter,
    source: FingerprintSource,
    plans: &[Plan],
) -> crate::discover::unlisted::Writes {
    let path = config.state_dir.join("journal.db");
    if source != FingerprintSource::Installation || !path.exists() {
        return Vec::new();
    }
    let Ok(journal) = crate::journal::Journal::open(&path, fingerprinter) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for plan in plans {
        if let Ok(found) = crate::discover::journal_writes(&journal, &plan.storage_account) {
            out.extend(found);
        }
    }
    out
}

/// 32 random bytes; if the system's random source fails, a key from the time and pid
/// still serves (these fingerprints only compare within one report).
fn random_key() -> zeroize::Zeroizing<[u8; 32]> {
    let mut key = zeroize::Zeroizing::new([0u8; 32]);
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), key.as_mut()).is_err() {
        let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
        let digest = ring::digest::digest(&ring::digest::SHA256, seed.as_bytes());
        key.copy_from_slice(digest.as_ref());
    }
    key
}

#[cfg(test)]
mod tests;
