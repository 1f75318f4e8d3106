//! The rotation engine: the one entry point the CLI and the daemon use to rotate,
//! resume, inspect and report. It owns the Azure facade, the journal and the clock,
//! and drives [`super::machine::Machine`] through the executor.
//!
//! Promises:
//! - One driver per storage account: every run that can change Azure holds the
//!   account's [`AccountLock`] for its whole length, and refuses with
//!   [`EngineError::Busy`] when another process (or task) holds it or the journal has
//!   an unfinished rotation of the account that this call was not asked to resume.
//! - Journal before effect: every command's intent is durable before it is performed,
//!   its result after (see `executor`). A crash at any point leaves a journal that
//!   [`Engine::resume`] finishes from what Azure actually holds.
//! - Every wait goes through the injected [`Clock`].
//! - Reads that fail with 403 become missing permissions in the observation, so a
//!   principal without rights is refused with what to grant, never crashes a run.
//! - Nothing here holds a key longer than one step; reports, events and errors carry
//!   names and fingerprints only.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::progress::Progress;
use super::report::{DryRun, Inventory, PlanStatus, RotationReport};
use crate::azure::{self, Azure};
use crate::clock::Clock;
use crate::config::{Config, ConfigError};
use crate::exit::Exit;
use crate::journal::lock::{AccountLock, LockError};
use crate::journal::{Journal, JournalError, ResumeError};
use crate::plan::Plan;
use crate::resource_id::ResourceId;
use crate::rotation::machine::{GateOptions, HandleError, Mode, Options, ResyncOrder};
use crate::rotation::origin::{Origin, Requester, Trigger};
use crate::secret::{FingerprintKeyError, Fingerprinter};

/// How a rotation run should behave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RotateRequest {
    pub mode: Mode,
    /// Overrides the plan's grace period (incident modes have none). When the plan has
    /// an unfinished rotation, [`Engine::rotate_now`] shortens that rotation's grace
    /// instead, or refuses if it has none left to shorten.
    pub grace: Option<Duration>,
    pub trigger: Trigger,
    /// Who asked (`None` for the daemon's own rotations).
    pub by: Option<Requester>,
}

impl RotateRequest {
    /// A plain `rotate now`.
    pub fn manual() -> RotateRequest {
        RotateRequest {
            mode: Mode::Scheduled,
            grace: None,
            trigger: Trigger::Manual,
            by: None,
        }
    }

    /// The daemon's own rotation in `mode` for `trigger` (nobody asked).
    pub fn by_daemon(mode: Mode, trigger: Trigger) -> RotateRequest {
        RotateRequest {
            mode,
            grace: None,
            trigger,
            by: None,
        }
    }

    pub(super) fn origin(&self, follows: Option<String>) -> Origin {
        Origin {
            trigger: self.trigger.clone(),
            by: self.by.clone(),
            follows,
        }
    }
}

/// What a person changes in unfinished rotations they resume (`rotate resume PLAN
/// --grace`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Amend {
    /// Shorten the grace period to this.
    pub grace: Option<Duration>,
    pub by: Option<Requester>,
}

/// Tuning that production leaves at its defaults and tests shorten.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// The first wait between two data-plane probes of a new key; doubles up to
    /// `probe_max_backoff`.
    pub probe_backoff: Duration,
    pub probe_max_backoff: Duration,
    /// How long a workspace `resyncKeys` may run before the bind counts as failed.
    pub resync_deadline: Duration,
    /// Clock skew tolerated between keyflip and a service whose values cannot be read
    /// back, when its update time of a value is compared with the time keyflip wrote it.
    pub update_skew: Duration,
    /// Whether the unlisted-consumer check makes deferrable reads that never wait for
    /// the call budget (`budget::deferrable`); what they put off is then a warning in
    /// the report. The daemon sets it: discovery must never hold up its rotations.
    /// Off (the default: a standalone `rotate now`), and always for plans with
    /// `unlisted = "refuse"`, the check waits for the budget like any read and is
    /// complete.
    pub defer_unlisted_check: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            probe_backoff: Duration::from_secs(1),
            probe_max_backoff: Duration::from_secs(8),
            resync_deadline: Duration::from_secs(600),
            update_skew: Duration::from_secs(2),
            defer_unlisted_check: false,
        }
    }
}

/// Why the engine could not do what it was asked. Rotation outcomes (refused, rolled
/// back, parked) are not errors: they are [`RotationReport`]s.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("storage account {account} is busy: {holder}")]
    Busy { account: String, holder: String },
    /// Replicas: the shared plan state read under the account's lease shows another
    /// replica started (or parked) the plan after what this replica decided from;
    /// nothing was done, and the schedule decides again from `state`.
    #[error(
        "plan {plan}: another replica started or parked it since this replica decided; nothing was done, the schedule decides again from the shared plan state"
    )]
    Superseded {
        plan: String,
        state: Box<crate::coordination::document::PlanDoc>,
    },
    #[error(
        "interrupted; rotation {rotation_id} is unfinished in the journal and `keyflip rotate resume` finishes it (so does the next `keyflip rotate now` or daemon start)"
    )]
    Interrupted { rotation_id: String },
    #[error(
        "rotation {rotation_id}: {step} may or may not have happened and Azure could not be asked ({detail}); nothing else was done. The rotation stays unfinished and in doubt: run `keyflip rotate resume` once Azure answers again, and keyflip will find out from the key's creation time and fingerprint"
    )]
    InDoubt {
        rotation_id: String,
        step: String,
        detail: String,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot prepare the state directory {path}: {source}")]
    StateDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    FingerprintKey(#[from] FingerprintKeyError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Resume(#[from] ResumeError),
    #[error(transparent)]
    Lock(LockError),
    /// The coordination store (replicas) failed or refused: see its message.
    #[error(transparent)]
    Coordination(#[from] crate::coordination::CoordError),
    #[error(transparent)]
    Azure(#[from] azure::Error),
    /// The plan does not fit the rotation or Azure (a journaled consumer the plan no
    /// longer lists, a datastore without account-key credentials, ...).
    #[error("plan {plan}: {detail}")]
    Plan { plan: String, detail: String },
    #[error(
        "rotation {rotation_id}: the state machine refused an event ({error}); this is a keyflip bug, the journal is unchanged and `keyflip rotate resume` retries"
    )]
    Machine {
        rotation_id: String,
        error: HandleError,
    },
    /// A change asked of an unfinished rotation that it cannot take (a grace period
    /// it does not have, ...). Nothing was changed.
    #[error("rotation {rotation_id} of plan {plan}: {reason}; nothing was changed")]
    Amend {
        rotation_id: String,
        plan: String,
        reason: String,
    },
    #[error(
        "rotation {rotation_id}: the state machine has nothing in flight and nothing to do, yet has not finished; this is a keyflip bug. The journal is consistent: `keyflip rotate resume` retries"
    )]
    Stalled { rotation_id: String },
    #[error("cannot write the incident report {path}: {source}")]
    Report {
        path: String,
        source: std::io::Error,
    },
    /// A fail point stopped the run dead (tests only).
    #[cfg(feature = "failpoints")]
    #[error("crashed at fail point {at}")]
    Crashed { at: String },
}

impl From<LockError> for EngineError {
    fn from(e: LockError) -> Self {
        match e {
            LockError::Busy { account, pid, path } => EngineError::Busy {
                account,
                holder: match pid {
                    Some(pid) => {
                        format!("another keyflip process (pid {pid}) is rotating it (lock {path})")
                    }
                    None => format!("another keyflip process is rotating it (lock {path})"),
                },
            },
            other => EngineError::Lock(other),
        }
    }
}

impl EngineError {
    pub fn exit(&self) -> Exit {
        match self {
            EngineError::Busy { .. } | EngineError::Superseded { .. } => Exit::Busy,
            EngineError::Interrupted { .. } => Exit::Interrupted,
            EngineError::Azure(e) if e.is_interrupted() => Exit::Interrupted,
            EngineError::Config(_) | EngineError::Plan { .. } | EngineError::Amend { .. } => {
                Exit::Usage
            }
            _ => Exit::Failure,
        }
    }
}

/// The rotation engine. Cheap to clone (an `Arc` inside); `Send + Sync`.
#[derive(Clone)]
pub struct Engine {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) azure: Azure,
    /// Discovery's shared reads (the unlisted-consumer check of every rotation in this
    /// process), kept for [`crate::discover::cache::LIST_TTL`].
    pub(super) discovery: crate::discover::DiscoveryCache,
    /// `[discovery]`: where the unlisted-consumer check looks beyond what ARM lists.
    pub(super) sources: crate::config::DiscoveryConfig,
    pub(super) journal: Mutex<Journal>,
    pub(super) fingerprinter: Arc<Fingerprinter>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) state_dir: PathBuf,
    pub(super) options: EngineOptions,
    /// Leases and the shared journal, with `[coordination]`.
    pub(super) coordination: Option<Arc<crate::coordination::Coordinator>>,
    #[cfg(feature = "failpoints")]
    pub(super) failpoint: crate::failpoint::FailPoint,
}

impl Inner {
    pub(super) fn journal(&self) -> MutexGuard<'_, Journal> {
        // A panic while holding the lock cannot leave SQLite half-written (each write
        // is one transaction), so a poisoned lock is still usable.
        self.journal.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The account's OS lock, and with `[coordination]` its lease (see `replicas`).
    pub(super) async fn lock(
        &self,
        account: &ResourceId,
    ) -> Result<super::replicas::AccountGuard, EngineError> {
        let local = AccountLock::acquire(&self.state_dir, account)?;
        super::replicas::hold(self, account, local).await
    }

    pub(super) fn reports_dir(&self) -> PathBuf {
        self.state_dir.join("reports")
    }
}

impl Engine {
    /// The engine's journal, for the daemon's scheduler (plan states, last successes):
    /// the daemon opens the journal once, here.
    pub(crate) fn journal(&self) -> MutexGuard<'_, Journal> {
        self.inner.journal()
    }

    /// Opens `state_dir/journal.db` and `state_dir/fingerprint.key` (creating them and
    /// the directory, mode 0700), builds the Azure facade from the configuration. Does
    /// not touch the network.
    pub fn open(config: &Config, clock: Arc<dyn Clock>) -> Result<Engine, EngineError> {
        let dir = &config.state_dir;
        create_private_dir(dir)?;
        let fingerprinter = Arc::new(Fingerprinter::load_or_create(&dir.join("fingerprint.key"))?);
        let journal = Journal::open(&dir.join("journal.db"), &fingerprinter)?;
        let azure = Azure::new(config, fingerprinter.clone())?;
        Ok(Engine::from_parts(
            config,
            azure,
            journal,
            fingerprinter,
            clock,
        ))
    }

    /// An engine for commands that only read (`status`, `history`, a dry run): it
    /// creates nothing. With a journal in the state directory it opens it (with the
    /// installation's fingerprint key); without one it reads an empty journal in
    /// memory, and fingerprints under the installation's key if there is one, else
    /// under a key for this run (they then match nothing outside this run).
    pub(crate) fn open_to_read(
        config: &Config,
        clock: Arc<dyn Clock>,
    ) -> Result<Engine, EngineError> {
        let dir = &config.state_dir;
        let path = dir.join("journal.db");
        let key = dir.join("fingerprint.key");
        let (fingerprinter, journal) = if path.exists() {
            let fingerprinter = Arc::new(Fingerprinter::load_or_create(&key)?);
            let journal = Journal::open(&path, &fingerprinter)?;
            (fingerprinter, journal)
        } else {
            let fingerprinter = Arc::new(match Fingerprinter::load(&key)? {
                Some(f) => f,
                None => Fingerprinter::for_this_run()?,
            });
            let journal = Journal::in_memory(&fingerprinter)?;
            (fingerprinter, journal)
        };
        let azure = Azure::new(config, fingerprinter.clone())?;
        Ok(Engine::from_parts(
            config,
            azure,
            journal,
            fingerprinter,
            clock,
        ))
    }

    /// The same from parts (tests: a facade with short retries, a test clock).
    pub(crate) fn from_parts(
        config: &Config,
        azure: Azure,
        journal: Journal,
        fingerprinter: Arc<Fingerprinter>,
        clock: Arc<dyn Clock>,
    ) -> Engine {
        Engine::with_options(
            config,
            azure,
            journal,
            fingerprinter,
            clock,
            EngineOptions::default(),
        )
    }

    pub fn with_options(
        config: &Config,
        azure: Azure,
        journal: Journal,
        fingerprinter: Arc<Fingerprinter>,
        clock: Arc<dyn Clock>,
        options: EngineOptions,
    ) -> Engine {
        let mut journal = journal;
        let coordination = config.coordination.as_ref().map(|c| {
            // Its own connections and token cache: its requests run on its own thread.
            let own = Azure::with_options(
                config,
                fingerprinter.clone(),
                crate::coordination::azure_options(),
                &crate::config::process_env,
            )
            .inspect_err(|e| tracing::warn!(error = %e, "coordination shares the engine's Azure connections"));
            let coordinator = Arc::new(crate::coordination::Coordinator::new(
                own.as_ref().unwrap_or(&azure),
                c,
            ));
            journal.set_mirror(coordinator.clone());
            coordinator
        });
        Engine {
            inner: Arc::new(Inner {
                azure,
                discovery: crate::discover::DiscoveryCache::new(
                    clock.clone(),
                    crate::discover::LIST_TTL,
                ),
                sources: config.discovery.clone(),
                journal: Mutex::new(journal),
                fingerprinter,
                clock,
                state_dir: config.state_dir.clone(),
                options,
                coordination,
                #[cfg(feature = "failpoints")]
                failpoint: crate::failpoint::FailPoint::from_env(),
            }),
        }
    }

    /// Stops this engine dead at the `n`-th durable journal write (1-based) from now
    /// on, as if the process had crashed there (tests only).
    #[cfg(feature = "failpoints")]
    pub fn crash_at(&self, point: crate::failpoint::CrashAt) {
        self.inner.failpoint.arm(point);
    }

    /// Every durable journal write this engine has made, in order (tests only).
    #[cfg(feature = "failpoints")]
    pub fn durable_writes(&self) -> Vec<String> {
        self.inner.failpoint.writes()
    }

    pub fn state_dir(&self) -> &Path {
        &self.inner.state_dir
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// The engine's Azure facade, for reads the engine has no method for (the daemon's
    /// drift watch lists Key Vault versions). Sharing it keeps one token cache, one
    /// connection pool and one set of write budgets per process.
    pub fn azure(&self) -> &Azure {
        &self.inner.azure
    }

    /// The coordinator, with `[coordination]` (leases held, counters).
    pub fn coordination(&self) -> Option<&Arc<crate::coordination::Coordinator>> {
        self.inner.coordination.as_ref()
    }

    /// Runs one rotation of `plan` to its end (Completed, RolledBack, Refused,
    /// NeedsAttention), or until `cancel` fires: then the effects in flight finish and
    /// are journaled, and it returns [`EngineError::Interrupted`] (the rotation stays
    /// unfinished and [`Engine::resume`] finishes it).
    pub async fn rotate(
        &self,
        plan: &Plan,
        request: RotateRequest,
        progress: &dyn Progress,
        cancel: CancellationToken,
    ) -> Result<RotationReport, EngineError> {
        super::lifecycle::rotate(&self.inner, plan, request, None, progress, cancel)
            .instrument(crate::logging::plan_span(&plan.name))
            .await
    }

    /// [`Engine::rotate`] for the daemon's schedule, which decided from
    /// `known_started` (the plan's last start it knew of). With `[coordination]`, a
    /// later start or a park in the plan's shared state, read under the account's
    /// lease, refuses it with [`EngineError::Superseded`] before anything is done.
    pub async fn rotate_scheduled(
        &self,
        plan: &Plan,
        request: RotateRequest,
        known_started: Option<chrono::DateTime<chrono::Utc>>,
        progress: &dyn Progress,
        cancel: CancellationToken,
    ) -> Result<RotationReport, EngineError> {
        let decided = super::replicas::Decided { known_started };
        super::lifecycle::rotate(&self.inner, plan, request, Some(decided), progress, cancel)
            .instrument(crate::logging::plan_span(&plan.name))
            .await
    }

    /// `rotate now` as a person asks it: a new rotation, or, when the plan has an
    /// unfinished rotation, that one first, with the request applied to it. An
    /// incident takes it over (it finishes the incident itself, or winds down and a
    /// follow-up incident rotation starts right after, under the same lock), `--grace`
    /// shortens its grace (or is refused: [`EngineError::Amend`]), and `--adopt` runs
    /// after it whatever it ended as. The report is of the last rotation run.
    pub async fn rotate_now(
        &self,
        plan: &Plan,
        request: RotateRequest,
        progress: &dyn Progress,
        cancel: CancellationToken,
    ) -> Result<RotationReport, EngineError> {
        super::lifecycle::rotate_now(&self.inner, plan, request, progress, cancel)
            .instrument(crate::logging::plan_span(&plan.name))
            .await
    }

    /// Reads live state and changes nothing in Azure or the journal: the decision and
    /// every Azure call a rotation would make, in order.
    pub async fn dry_run(
        &self,
        plan: &Plan,
        request: RotateRequest,
    ) -> Result<DryRun, EngineError> {
        super::dry_run::dry_run(&self.inner, plan, &request)
            .instrument(crate::logging::plan_span(&plan.name))
            .await
    }

    /// Finishes or rolls back every unfinished rotation in the journal whose plan is in
    /// `plans` (the plan says how to reach each consumer; rotations of other plans are
    /// left alone and logged), reconciling in-doubt steps with Azure first. Oldest
    /// first; stops at the first error.
    pub async fn resume(
        &self,
        plans: &[Plan],
        progress: &dyn Progress,
        cancel: CancellationToken,
    ) -> Result<Vec<RotationReport>, EngineError> {
        super::lifecycle::resume(&self.inner, plans, &Amend::default(), progress, cancel).await
    }

    /// [`Engine::resume`] with a change to each rotation resumed (a shorter grace). A
    /// rotation that cannot take it is refused before anything is done to it
    /// ([`EngineError::Amend`]), and so is a change with nothing to resume.
    pub(crate) async fn resume_amended(
        &self,
        plans: &[Plan],
        amend: &Amend,
        progress: &dyn Progress,
        cancel: CancellationToken,
    ) -> Result<Vec<RotationReport>, EngineError> {
        super::lifecycle::resume(&self.inner, plans, amend, progress, cancel).await
    }

    /// The retire a swap of `plan` parked at the usage gate still owes: the request that
    /// resumes it (`Mode::Retire`), or `None` when the plan's latest rotation that
    /// changed anything did not park there. Reads the journal only.
    pub fn held_at_gate(
        &self,
        plan: &Plan,
        force_retire: bool,
    ) -> Result<Option<RotateRequest>, EngineError> {
        super::lifecycle::held_at_gate(&self.inner, plan, force_retire)
    }

    /// The ids and plans of unfinished rotations (reads the journal only).
    pub fn unfinished(&self) -> Result<Vec<(String, String)>, EngineError> {
        Ok(self
            .inner
            .journal()
            .unfinished()?
            .into_iter()
            .map(|r| (r.id, r.plan))
            .collect())
    }

    /// Live inventory of one plan (reads only).
    pub async fn observe(&self, plan: &Plan) -> Result<Inventory, EngineError> {
        super::observe::inventory(&self.inner, plan)
            .instrument(crate::logging::plan_span(&plan.name))
            .await
    }

    /// Per plan: active key, key ages, last rotation and outcome, drift, and `next_due`
    /// from the plan's schedule with the journal's last start. A plan whose live state
    /// cannot be read gets its error in `PlanStatus::error` instead of failing all.
    pub async fn status(&self, plans: &[Plan]) -> Result<Vec<PlanStatus>, EngineError> {
        super::status::status(&self.inner, plans).await
    }

    /// Past rotations in this process's own journal, with every step and timing,
    /// newest first. With `[coordination]` that is the rotations this replica took
    /// part in or learned of; `keyflip history` uses [`Engine::history_since`].
    pub fn history(
        &self,
        plan: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RotationReport>, EngineError> {
        super::status::local_history(&self.inner, plan, None, limit)
    }

    /// `keyflip history`: rotations started at or after `since`, newest first, from
    /// the shared journal with `[coordination]` (the same on every replica), else
    /// from the local journal.
    pub async fn history_since(
        &self,
        plan: Option<&str>,
        since: Option<chrono::DateTime<chrono::Utc>>,
        limit: usize,
    ) -> Result<Vec<RotationReport>, EngineError> {
        super::status::history(&self.inner, plan, since, limit).await
    }
}

/// The machine options of a plan's rotation, with the request's grace override.
pub(super) fn machine_options(plan: &Plan, request: &RotateRequest) -> Options {
    let grace = request.grace.unwrap_or(plan.rotation.grace);
    let delta = |d: Duration| chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX);
    Options {
        grace: delta(grace),
        verify_budget: plan.rotation.verify_budget,
        retire_attempts: plan.rotation.retire_attempts,
        resync: ResyncOrder::Last,
        usage_gate: plan.usage_gate.as_ref().map(|g| GateOptions {
            quiet: delta(g.quiet_period),
            recheck: delta(g.recheck),
            deadline: delta(g.deadline),
            latency: delta(g.ingestion_latency),
            lookback: delta(g.lookback),
        }),
        refuse_unlisted: plan.unlisted == crate::plan::UnlistedPolicy::Refuse,
        revoke_before_reads: true,
    }
}

fn create_private_dir(dir: &Path) -> Result<(), EngineError> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| EngineError::StateDir {
            path: dir.display().to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rotation::NoProgress;

    /// The daemon spawns these futures on a multi-threaded runtime: they must be `Send`.
    /// (Compiles or not; never run.)
    #[allow(dead_code)]
    fn futures_are_send(engine: &Engine, plan: &Plan) {
        fn send<T: Send>(_: &T) {}
        let cancel = CancellationToken::new;
        send(&engine.rotate(plan, RotateRequest::manual(), &NoProgress, cancel()));
        send(&engine.resume(std::slice::from_ref(plan), &NoProgress, cancel()));
        send(&engine.dry_run(plan, RotateRequest::manual()));
        send(&engine.observe(plan));
        send(&engine.status(std::slice::from_ref(plan)));
        send(&engine.rotate_now(plan, RotateRequest::manual(), &NoProgress, cancel()));
        fn sync<T: Send + Sync + Clone>(_: &T) {}
        sync(engine);
    }

    #[test]
    fn errors_map_to_documented_exit_codes() {
        let busy = EngineError::from(LockError::Busy {
            account: "a".into(),
            pid: Some(42),
            path: "/l".into(),
        });
        assert_eq!(busy.exit(), Exit::Busy);
        assert!(busy.to_string().contains("pid 42"), "{busy}");
        assert_eq!(
            EngineError::Interrupted {
                rotation_id: "r".into()
            }
            .exit(),
            Exit::Interrupted
        );
        assert_eq!(
            EngineError::Plan {
                plan: "p".into(),
                detail: "d".into()
            }
            .exit(),
            Exit::Usage
        );
        let in_doubt = EngineError::InDoubt {
            rotation_id: "r".into(),
            step: "regenerating key2".into(),
            detail: "unreachable".into(),
        };
        assert_eq!(in_doubt.exit(), Exit::Failure);
        assert!(in_doubt.to_string().contains("keyflip rotate resume"));
    }
}
