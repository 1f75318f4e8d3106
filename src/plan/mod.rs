//! Rotation plans: the TOML files in the plans directory, one per storage account,
//! naming the account, every consumer of its key, the schedule and how to rotate.
//!
//! Promises: a [`Plan`] is fully validated (every id, URL, name, duration and schedule
//! checked; at least one consumer; no consumer twice), and a file that is not a valid
//! plan yields *every* problem found in it, each as a [`SourceError`] with file, line,
//! column and a hint. Loading reads the file and nothing else: no network, journal or
//! clock. The format is documented for users in `docs/plans.md`.

mod build;
pub mod check;
pub mod duration;
mod fields;
pub(crate) mod fragment;
mod parse;
mod raw;
mod settings;
mod values;

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use settings::{
    Drift, MAX_GRACE, MIN_INGESTION_LATENCY, NotifyEvent, Rotation, UnlistedPolicy, UsageGate,
    Webhook, WebhookFormat,
};

use crate::consumer::{ConsumerId, Entry};
use crate::diagnostic::SourceError;
use crate::resource_id::ResourceId;
use crate::schedule::Schedule;

/// A validated rotation plan.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The file stem: `rotation-plans/demo.toml` is plan `demo`.
    pub name: String,
    pub description: Option<String>,
    pub storage_account: ResourceId,
    /// `None`: the plan rotates only on demand (`keyflip rotate now`).
    pub schedule: Option<Schedule>,
    pub rotation: Rotation,
    /// What the precheck does about consumers of the account this plan does not list.
    pub unlisted: UnlistedPolicy,
    /// Retire the old key only once the resource logs show nobody signs with it.
    pub usage_gate: Option<UsageGate>,
    /// The consumer tables, by kind in `crate::consumer`'s order, each kind's tables in
    /// file order.
    pub consumers: Vec<Entry>,
    pub notify: Vec<Webhook>,
    pub drift: Drift,
    source: PlanSource,
}

/// Where a plan came from, kept so later checks (two plans on one account) can point
/// into the file.
#[derive(Clone)]
struct PlanSource {
    origin: String,
    text: Arc<str>,
    account_span: Range<usize>,
    consumer_spans: Vec<(ConsumerId, Range<usize>)>,
}

impl fmt::Debug for PlanSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlanSource")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl Plan {
    /// The path the plan was read from, as given.
    pub fn origin(&self) -> &str {
        &self.source.origin
    }

    /// The text the plan was parsed from: `parse(source_text, origin)` gives the plan
    /// again (the daemon keeps the text of idle plans instead of the parsed form).
    pub(crate) fn source_text(&self) -> &Arc<str> {
        &self.source.text
    }

    /// Where the `storage_account` value (with its quotes) stands in the text.
    pub(crate) fn account_span(&self) -> Range<usize> {
        self.source.account_span.clone()
    }

    /// Every consumer known before the rotation starts, in plan order (the consumer
    /// tables in `crate::consumer`'s order). Consumers found at rotation time are not
    /// included; see [`crate::consumer::discovers`].
    pub fn consumer_ids(&self) -> Vec<ConsumerId> {
        self.source
            .consumer_spans
            .iter()
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn error_at(&self, span: Range<usize>, message: String, hint: String) -> SourceError {
        SourceError::at(&self.source.origin, &self.source.text, span, message).with_hint(hint)
    }
}

/// Why a file is not a valid plan.
#[derive(Debug)]
pub enum PlanErrors {
    /// The file or directory could not be read; `reason` is a full sentence.
    Unreadable { path: String, reason: String },
    /// The problems found in the file, in source order (never empty): the first
    /// [`parse::MAX_ERRORS`], and how many more there were.
    Invalid {
        origin: String,
        errors: Vec<SourceError>,
        more: usize,
    },
}

impl PlanErrors {
    pub fn origin(&self) -> &str {
        match self {
            PlanErrors::Unreadable { path, .. } => path,
            PlanErrors::Invalid { origin, .. } => origin,
        }
    }

    /// The located errors; empty for an unreadable file.
    pub fn errors(&self) -> &[SourceError] {
        match self {
            PlanErrors::Unreadable { .. } => &[],
            PlanErrors::Invalid { errors, .. } => errors,
        }
    }
}

impl fmt::Display for PlanErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanErrors::Unreadable { path, reason } => write!(f, "{path}: {reason}"),
            PlanErrors::Invalid {
                origin,
                errors,
                more,
            } => {
                for (i, err) in errors.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    writeln!(f, "{err}")?;
                }
                let total = errors.len() + more;
                let s = if total == 1 { "" } else { "s" };
                if *more > 0 {
                    write!(
                        f,
                        "{origin}: {total} errors ({more} more not shown; fix these first, or check that this is a plan file)"
                    )
                } else {
                    write!(f, "{origin}: {total} error{s}")
                }
            }
        }
    }
}

impl std::error::Error for PlanErrors {}

/// Parses plan text. `origin` is the path shown in errors; its file stem is the name.
pub fn parse(source: &str, origin: &str) -> Result<Plan, PlanErrors> {
    let mut d = parse::Diagnostics::new(origin, source);
    let plan = parse::sections(&mut d).and_then(|sections| build::plan(sections, &mut d));
    match plan {
        Some(plan) if d.errors.is_empty() => Ok(plan),
        _ => {
            let more = d.more;
            // Webhook URLs may carry a token in their path (chat webhooks): an error
            // on a `webhook = ...` line does not print it.
            let errors = d
                .into_sorted()
                .into_iter()
                .map(|e| e.masked(|key| key == "webhook"))
                .collect();
            Err(PlanErrors::Invalid {
                origin: origin.to_owned(),
                errors,
                more,
            })
        }
    }
}

/// Reads and parses one plan file.
pub fn load(path: &Path) -> Result<Plan, PlanErrors> {
    let origin = path.display().to_string();
    let source = crate::input::read_text(path, crate::input::MAX_PLAN_BYTES).map_err(|e| {
        PlanErrors::Unreadable {
            path: origin.clone(),
            reason: format!("cannot read the plan: {e}"),
        }
    })?;
    parse(&source, &origin)
}

/// Every `*.toml` plan in `dir`, sorted by name, and the errors of the files that are
/// not valid plans. Two plans of one storage account, or one consumer in two plans,
/// make the later plan (by name) invalid.
pub(crate) fn load_dir(dir: &Path) -> (Vec<Plan>, Vec<PlanErrors>) {
    let files = match plan_files(dir) {
        Ok(files) => files,
        Err(err) => return (Vec::new(), vec![err]),
    };
    let mut plans = Vec::new();
    let mut errors = Vec::new();
    for file in files {
        match load(&file) {
            Ok(plan) => plans.push(plan),
            Err(err) => errors.push(err),
        }
    }
    let (plans, conflicts) = without_conflicts(plans);
    errors.extend(conflicts);
    (plans, errors)
}

/// The `*.toml` files directly in `dir`, sorted.
pub(crate) fn plan_files(dir: &Path) -> Result<Vec<PathBuf>, PlanErrors> {
    let unreadable = |e: std::io::Error| PlanErrors::Unreadable {
        path: dir.display().to_string(),
        reason: format!("cannot list the plans directory: {e}"),
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(unreadable)? {
        let path = entry.map_err(unreadable)?.path();
        // Not only regular files: a FIFO or device named *.toml is reported by `load`
        // rather than silently skipped (and never opened for a blocking read).
        if path.extension().is_some_and(|e| e == "toml") && !path.is_dir() {
            files.push(path);
        }
    }
    // Every path is `dir` joined with one file name, so byte order is `Path` order;
    // comparing `Path`s component by component cost more than parsing 10,000 plans'
    // names (docs/performance.md).
    files.sort_unstable_by(|a, b| {
        a.as_os_str()
            .as_encoded_bytes()
            .cmp(b.as_os_str().as_encoded_bytes())
    });
    Ok(files)
}

/// Splits off the plans that clash with an earlier one (by name): same storage
/// account, or a consumer that already follows another plan's key.
pub(crate) fn without_conflicts(mut plans: Vec<Plan>) -> (Vec<Plan>, Vec<PlanErrors>) {
    plans.sort_by(|a, b| a.name.cmp(&b.name));
    let mut seen = Conflicts::default();
    let mut kept = Vec::new();
    let mut errors = Vec::new();
    for plan in plans {
        match seen.admit(&plan) {
            Ok(()) => kept.push(plan),
            Err(e) => errors.push(e),
        }
    }
    (kept, errors)
}

/// The accounts and consumers of the plans admitted so far, for checking plans one at
/// a time in name order (what [`without_conflicts`] does for a whole set) without
/// holding them all.
#[derive(Debug, Default)]
pub(crate) struct Conflicts {
    accounts: HashMap<String, String>,
    consumers: HashMap<String, String>,
}

/// What [`Conflicts`] compares a plan by: its account and its consumers' targets.
#[derive(Clone, Debug)]
pub(crate) struct ConflictKeys {
    account: String,
    consumers: Vec<String>,
}

impl ConflictKeys {
    pub fn of(plan: &Plan) -> ConflictKeys {
        ConflictKeys {
            account: plan.storage_account.as_str().to_ascii_lowercase(),
            consumers: plan
                .source
                .consumer_spans
                .iter()
                .map(|(id, _)| id.same_target_key())
                .collect(),
        }
    }
}

impl Conflicts {
    /// Admits the plan `name` with `keys` when it clashes with no plan admitted before;
    /// `false` (and nothing recorded) when it does: then [`Conflicts::admit`] on the
    /// plan says where and why.
    pub(crate) fn admit_keys(&mut self, name: &str, keys: &ConflictKeys) -> bool {
        if self.accounts.contains_key(&keys.account)
            || keys
                .consumers
                .iter()
                .any(|c| self.consumers.contains_key(c))
        {
            return false;
        }
        self.accounts.insert(keys.account.clone(), name.to_owned());
        for c in &keys.consumers {
            self.consumers.insert(c.clone(), name.to_owned());
        }
        true
    }

    /// Admits `plan` unless it clashes with a plan admitted before (by name): the same
    /// storage account, or a consumer that already follows another plan's key.
    pub(crate) fn admit(&mut self, plan: &Plan) -> Result<(), PlanErrors> {
        let mut found = Vec::new();
        let account_key = plan.storage_account.as_str().to_ascii_lowercase();
        if let Some(other) = self.accounts.get(&account_key) {
            found.push(plan.error_at(
                plan.source.account_span.clone(),
                format!(
                    "storage account `{}` is already rotated by plan `{other}`",
                    plan.storage_account.name()
                ),
                "one plan per storage account: move these consumers into that plan".into(),
            ));
        }
        for (id, span) in &plan.source.consumer_spans {
            if let Some(other) = self.consumers.get(&id.same_target_key()) {
                found.push(plan.error_at(
                    span.clone(),
                    format!("consumer `{id}` is also in plan `{other}`"),
                    id.kind().in_two_plans().into(),
                ));
            }
        }
        if found.is_empty() {
            self.accounts.insert(account_key, plan.name.clone());
            for (id, _) in &plan.source.consumer_spans {
                self.consumers
                    .insert(id.same_target_key(), plan.name.clone());
            }
            Ok(())
        } else {
            found.sort_by_key(|e| (e.line, e.column));
            Err(PlanErrors::Invalid {
                origin: plan.source.origin.clone(),
                errors: found,
                more: 0,
            })
        }
    }
}

/// Why [`find`] found no usable plan.
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    #[error("no plan named `{name}` in {}{}", dir.display(), suggestion(.name, .known))]
    NotFound {
        name: String,
        dir: PathBuf,
        /// The plans that do exist there.
        known: Vec<String>,
    },
    #[error("{0}")]
    Invalid(PlanErrors),
}

fn suggestion(name: &str, known: &[String]) -> String {
    let names: Vec<&str> = known.iter().map(String::as_str).collect();
    match fields::closest(name, &names) {
        Some(guess) => format!("; did you mean `{guess}`?"),
        None if names.is_empty() => "; it has no plans".to_owned(),
        None => format!("; plans there: {}", names.join(", ")),
    }
}

/// A plan by name (`demo` is `dir/demo.toml`) or by path (anything with a `/` or
/// ending in `.toml`).
pub fn find(dir: &Path, name_or_path: &str) -> Result<Plan, FindError> {
    let is_path = name_or_path.contains(std::path::MAIN_SEPARATOR)
        || name_or_path.contains('/')
        || name_or_path.ends_with(".toml");
    let path = if is_path {
        PathBuf::from(name_or_path)
    } else {
        dir.join(format!("{name_or_path}.toml"))
    };
    if !is_path && !path.is_file() {
        let known = plan_files(dir)
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .collect();
        return Err(FindError::NotFound {
            name: name_or_path.to_owned(),
            dir: dir.to_owned(),
            known,
        });
    }
    load(&path).map_err(FindError::Invalid)
}

#[cfg(test)]
mod tests;
