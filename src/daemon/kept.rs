//! A plan as the daemon keeps it between jobs: what scheduling and notifications need
//! (name, account, schedule, drift settings, webhooks), plus the text the plan was
//! validated from. The parsed plan (consumers, rotation settings) is parsed again from
//! that text when a job, a check or a request needs it: parsing is pure and takes tens
//! of microseconds, while holding ten thousand parsed plans took kilobytes each.
//!
//! Plans are loaded one at a time ([`load_plans`]): each is parsed, checked against
//! the plans before it, kept, and its parsed form dropped, so loading ten thousand
//! plans never holds ten thousand parsed plans. Identical schedules (a fleet mostly
//! repeats a few) and the plans directory's path are shared, and a text that differs
//! from an earlier plan's in a few lines is kept as those differences
//! ([`super::plan_text`]): a fleet written from a template costs tens of bytes of text
//! per plan instead of its whole file.
//!
//! Promise: [`KeptPlan::load`] gives the plan that was loaded (and checked against the
//! other plans) at start or at the last reload, never a newer version of its file:
//! changes on disk apply at the next reload, as before.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use super::plan_text::{Bases, PlanText};
use crate::plan::{self, Drift, Plan, PlanErrors, Webhook};
use crate::schedule::Schedule;

/// A plan loaded for the daemon: validated, checked against the other plans, kept
/// compact. What [`super::Loader`] returns.
#[derive(Clone, Debug)]
pub struct LoadedPlan(pub(super) KeptPlan);

impl LoadedPlan {
    pub fn name(&self) -> &str {
        &self.0.name
    }
}

#[derive(Clone, Debug)]
pub(super) struct KeptPlan {
    /// Shared with the scheduler's timers and queues (`Entry::key`).
    pub name: Arc<str>,
    pub schedule: Option<Arc<Schedule>>,
    pub drift: Drift,
    /// The plan's webhooks (usually none), kept for notifications.
    pub notify: Box<[Webhook]>,
    account: Account,
    origin: Origin,
    text: PlanText,
}

/// The path the plan was read from: `{dir}/{name}.toml` with the directory shared
/// between the plans of one load (as `plan_files` lists them), or its own copy.
#[derive(Clone, Debug)]
enum Origin {
    InDir(Arc<str>),
    Own(Box<str>),
}

/// The storage account's ARM id: where it stands in the text, or a copy when it does
/// not appear there verbatim.
#[derive(Clone, Debug)]
enum Account {
    InText(Range<u32>),
    Own(Box<str>),
}

/// Shares identical schedules, and the plans directory's path, between the plans of
/// one load.
#[derive(Default)]
pub(super) struct Schedules {
    /// The directory of the last plan kept, as its origin spells it.
    dir: Option<Arc<str>>,
    /// The first [`FEW`] distinct schedules, compared with `==` (a fleet mostly repeats
    /// a few; formatting each plan's schedule as a key cost more than parsing it).
    few: Vec<Arc<Schedule>>,
    /// Any further ones, by their `Debug` text.
    many: HashMap<String, Arc<Schedule>>,
    /// The texts other plans' texts are kept as patches of.
    bases: Bases,
}

/// Distinct schedules compared one by one before [`Schedules`] falls back to a map.
const FEW: usize = 16;

impl Schedules {
    /// `origin` as `{dir}/{name}.toml` with `dir` shared, when it is spelled so.
    fn origin(&mut self, origin: &str, name: &str) -> Origin {
        let dir = origin
            .strip_suffix(".toml")
            .and_then(|o| o.strip_suffix(name))
            .and_then(|o| o.strip_suffix('/'));
        match dir {
            Some(dir) => self.origin_dir(dir),
            None => Origin::Own(origin.into()),
        }
    }

    /// `dir`, shared with the other plans kept through `self`.
    fn origin_dir(&mut self, dir: &str) -> Origin {
        let shared = match &self.dir {
            Some(last) if &**last == dir => last.clone(),
            _ => self.dir.insert(Arc::from(dir)).clone(),
        };
        Origin::InDir(shared)
    }

    fn share(&mut self, schedule: &Schedule) -> Arc<Schedule> {
        if let Some(same) = self.few.iter().find(|s| ***s == *schedule) {
            return same.clone();
        }
        if self.few.len() < FEW {
            let shared = Arc::new(schedule.clone());
            self.few.push(shared.clone());
            return shared;
        }
        self.many
            .entry(format!("{schedule:?}"))
            .or_insert_with(|| Arc::new(schedule.clone()))
            .clone()
    }
}

impl KeptPlan {
    pub fn new(plan: &Plan, schedules: &mut Schedules) -> KeptPlan {
        let text = plan.source_text().clone();
        let id = plan.storage_account.as_str();
        // Where the id stands: inside the quotes of its TOML string (unless written
        // with escapes), else wherever it appears verbatim.
        let span = plan.account_span();
        let quoted = span
            .start
            .checked_add(1)
            .filter(|start| text.get(*start..span.end.saturating_sub(1)) == Some(id));
        let account = match quoted.or_else(|| text.find(id)) {
            Some(at) => match (u32::try_from(at), u32::try_from(at + id.len())) {
                (Ok(start), Ok(end)) => Account::InText(start..end),
                _ => Account::Own(id.into()),
            },
            None => Account::Own(id.into()),
        };
        KeptPlan {
            name: plan.name.as_str().into(),
            schedule: plan.schedule.as_ref().map(|s| schedules.share(s)),
            drift: plan.drift,
            notify: plan.notify.clone().into_boxed_slice(),
            account,
            origin: schedules.origin(plan.origin(), &plan.name),
            text: PlanText::Whole(text),
        }
    }

    /// A deep copy made by the calling thread, schedules shared through `schedules`:
    /// the loader's worker threads allocate in arenas of their own, among the garbage
    /// of parsing; copies made by one thread keep the long-lived data together, so the
    /// workers' arenas empty completely and go back to the kernel.
    fn rehome(&self, schedules: &mut Schedules) -> KeptPlan {
        KeptPlan {
            name: Arc::from(&*self.name),
            schedule: self.schedule.as_deref().map(|s| schedules.share(s)),
            drift: self.drift,
            notify: self.notify.to_vec().into_boxed_slice(),
            account: match &self.account {
                Account::InText(range) => Account::InText(range.clone()),
                Account::Own(id) => Account::Own(id.as_ref().into()),
            },
            origin: match &self.origin {
                Origin::InDir(dir) => schedules.origin_dir(dir),
                Origin::Own(origin) => Origin::Own(origin.as_ref().into()),
            },
            text: schedules.bases.keep(&self.text.text()),
        }
    }

    /// The path the plan was read from, as given.
    pub fn origin(&self) -> String {
        match &self.origin {
            Origin::InDir(dir) => format!("{dir}/{}.toml", self.name),
            Origin::Own(origin) => origin.to_string(),
        }
    }

    /// The storage account's ARM id.
    pub fn account(&self) -> String {
        match &self.account {
            Account::InText(range) => self
                .text
                .text()
                .get(range.start as usize..range.end as usize)
                .unwrap_or_default()
                .to_owned(),
            Account::Own(id) => id.to_string(),
        }
    }

    /// The whole plan, parsed from the text it was validated from. An error would mean
    /// parsing is not deterministic; it is reported rather than trusted.
    pub fn load(&self) -> Result<Arc<Plan>, String> {
        plan::parse(&self.text.text(), &self.origin())
            .map(Arc::new)
            .map_err(|e| {
                format!(
                    "plan `{}` no longer parses from the text it was loaded from: {e}",
                    self.name
                )
            })
    }
}

/// Every `*.toml` plan in `dir`, checked one at a time in name order against the ones
/// before (as `plan::without_conflicts` does), and the errors of those that are not
/// valid. Files are parsed on every core, each worker keeping only the compact form;
/// the checks against each other run in order afterwards.
pub(super) fn load_plans(dir: &Path) -> (Vec<LoadedPlan>, Vec<PlanErrors>) {
    let mut files = match plan::plan_files(dir) {
        Ok(files) => files,
        Err(e) => return (Vec::new(), vec![e]),
    };
    // Plans clash by name order: a later name is the one refused.
    files.sort_by(|a, b| a.file_stem().cmp(&b.file_stem()));
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    let chunk = files.len().div_ceil(workers).max(1);
    let parsed: Vec<Vec<Parsed>> = std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| scope.spawn(move || parse_part(part)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut conflicts = plan::Conflicts::default();
    let mut schedules = Schedules::default();
    let mut plans = Vec::with_capacity(files.len());
    let mut errors = Vec::new();
    for item in parsed.into_iter().flatten() {
        match item {
            Err(e) => errors.push(e),
            Ok((kept, keys)) => {
                if conflicts.admit_keys(&kept.name, &keys) {
                    plans.push(LoadedPlan(kept.rehome(&mut schedules)));
                } else {
                    // Rare: parse it again for the error that says where.
                    match kept.load() {
                        Ok(full) => errors.extend(conflicts.admit(&full).err()),
                        Err(e) => errors.push(PlanErrors::Unreadable {
                            path: kept.origin(),
                            reason: e,
                        }),
                    }
                }
            }
        }
    }
    (plans, errors)
}

type Parsed = Result<(KeptPlan, plan::ConflictKeys), PlanErrors>;

/// Parses `files`, keeping each plan's compact form and what conflicts compare.
fn parse_part(files: &[std::path::PathBuf]) -> Vec<Parsed> {
    let mut schedules = Schedules::default();
    files
        .iter()
        .map(|file| {
            plan::load(file).map(|p| {
                (
                    KeptPlan::new(&p, &mut schedules),
                    plan::ConflictKeys::of(&p),
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "storage_account = \"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/acct\"\n[schedule]\ncron = \"0 3 * * *\"\n[drift]\ninterval = \"2h\"\n[[key_vault]]\nvault = \"https://kv.vault.azure.net\"\nsecret = \"s\"\nformat = \"raw-key\"\n";

    #[test]
    fn a_kept_plan_loads_the_plan_it_was_made_from() {
        let plan = plan::parse(TEXT, "plans/lake.toml").unwrap();
        let mut schedules = Schedules::default();
        let kept = KeptPlan::new(&plan, &mut schedules);
        assert_eq!(&*kept.name, "lake");
        assert_eq!(kept.account(), plan.storage_account.as_str());
        assert_eq!(kept.drift.interval, std::time::Duration::from_secs(7_200));
        let again = kept.load().unwrap();
        assert_eq!(again.name, plan.name);
        assert_eq!(again.consumer_ids(), plan.consumer_ids());
        assert_eq!(again.consumer_ids().len(), 1);
        assert_eq!(again.schedule, plan.schedule);
        assert_eq!(again.origin(), "plans/lake.toml");
        // A second plan with the same schedule shares it.
        let other = KeptPlan::new(
            &plan::parse(TEXT, "plans/pond.toml").unwrap(),
            &mut schedules,
        );
        assert!(Arc::ptr_eq(
            kept.schedule.as_ref().unwrap(),
            other.schedule.as_ref().unwrap()
        ));
        // ... and the directory of its path, which it gives back as it was read.
        assert_eq!(other.origin(), "plans/pond.toml");
        match (&kept.origin, &other.origin) {
            (Origin::InDir(a), Origin::InDir(b)) => assert!(Arc::ptr_eq(a, b)),
            o => panic!("the plans directory is not shared: {o:?}"),
        }
        // A path without a directory is kept as it is.
        let bare = KeptPlan::new(&plan::parse(TEXT, "lake.toml").unwrap(), &mut schedules);
        assert!(matches!(bare.origin, Origin::Own(_)));
        assert_eq!(bare.origin(), "lake.toml");
        assert_eq!(bare.load().unwrap().origin(), "lake.toml");
    }

    #[test]
    fn a_plan_edited_on_disk_without_a_reload_still_loads_as_it_was_kept() {
        let dir = tempfile::tempdir().unwrap();
        // The second plan differs from the first in its account and secret: kept as
        // a patch of the first one's text.
        let second = TEXT.replace("acct", "acct2").replace("\"s\"", "\"s2\"");
        std::fs::write(dir.path().join("a.toml"), TEXT).unwrap();
        std::fs::write(dir.path().join("b.toml"), &second).unwrap();
        let (plans, errors) = load_plans(dir.path());
        assert!(errors.is_empty(), "{errors:?}");
        let kept = &plans[1].0;
        assert!(
            matches!(kept.text, PlanText::Patched { .. }),
            "{:?}",
            kept.text
        );
        // Edited (a consumer removed, another account) and not reloaded.
        std::fs::write(
            dir.path().join("b.toml"),
            second
                .replace("acct2", "acct3")
                .replace("[[key_vault]]", "[[databricks]]"),
        )
        .unwrap();
        let loaded = kept.load().unwrap();
        assert_eq!(loaded.name, "b");
        assert!(loaded.storage_account.as_str().ends_with("/acct2"));
        assert_eq!(kept.account(), loaded.storage_account.as_str());
        assert_eq!(loaded.consumer_ids().len(), 1);
        assert_eq!(
            loaded.consumer_ids()[0].to_string(),
            plan::parse(&second, "b.toml").unwrap().consumer_ids()[0].to_string()
        );
        assert_eq!(
            loaded.origin(),
            dir.path().join("b.toml").display().to_string()
        );
        assert_eq!(
            plans[0].0.load().unwrap().storage_account.as_str(),
            plan::parse(TEXT, "a.toml")
                .unwrap()
                .storage_account
                .as_str()
        );
    }

    #[test]
    fn schedules_are_shared_by_value_past_the_first_few() {
        let mut schedules = Schedules::default();
        let mut kept = Vec::new();
        for round in 0..2 {
            for minute in 0..FEW + 4 {
                let text = TEXT.replace("0 3 * * *", &format!("{minute} 3 * * *"));
                let plan = plan::parse(&text, &format!("plans/p{round}-{minute}.toml")).unwrap();
                kept.push(KeptPlan::new(&plan, &mut schedules));
            }
        }
        let (first, second) = kept.split_at(FEW + 4);
        for (a, b) in first.iter().zip(second) {
            let (a, b) = (a.schedule.as_ref().unwrap(), b.schedule.as_ref().unwrap());
            assert!(Arc::ptr_eq(a, b));
        }
        assert!(!Arc::ptr_eq(
            first[0].schedule.as_ref().unwrap(),
            first[FEW + 1].schedule.as_ref().unwrap()
        ));
        assert_eq!(schedules.few.len(), FEW);
        assert_eq!(schedules.many.len(), 4);
    }

    #[test]
    fn loading_checks_plans_one_at_a_time_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        // `a-b` comes before `a` by path but after it by name: `a-b` is refused.
        std::fs::write(dir.path().join("a.toml"), TEXT).unwrap();
        std::fs::write(dir.path().join("a-b.toml"), TEXT).unwrap();
        std::fs::write(dir.path().join("bad.toml"), "storage_account = 3\n").unwrap();
        let (plans, errors) = load_plans(dir.path());
        let names: Vec<&str> = plans.iter().map(LoadedPlan::name).collect();
        assert_eq!(names, ["a"]);
        assert_eq!(errors.len(), 2);
        assert!(
            errors.iter().any(|e| e.origin().ends_with("a-b.toml")
                && e.to_string().contains("already rotated by plan `a`")),
            "{errors:?}"
        );
    }
}
