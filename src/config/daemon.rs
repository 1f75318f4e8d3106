//! `[daemon]`: where `keyflip daemon` listens (control socket, metrics), how many
//! rotations it runs at once, how it retries and parks failing plans, how long it
//! lets a step in flight finish on shutdown, and the shared write budgets that keep a
//! fleet rotation below Azure's throttling limits.
//!
//! Promises: every value is checked here, with a positioned error naming the key and
//! the accepted range; budgets above Azure's published limits are refused (a budget
//! that lets keyflip trip throttling on its own is a mistake, not a tuning choice).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{Ctx, Env};
use crate::diagnostic::SourceError;
use crate::plan::duration;

/// Where the control socket lives when neither the file nor `$RUNTIME_DIRECTORY` says.
pub const DEFAULT_SOCKET: &str = "/run/keyflip/keyflip.sock";
/// Loopback only by default: the metrics carry no secret, but need no audience either.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";

/// Settings of `keyflip daemon`, resolved and validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonConfig {
    /// The control socket (mode 0600).
    pub socket: PathBuf,
    /// Uids allowed on the control socket besides root and the daemon's own.
    pub allowed_uids: Vec<u32>,
    /// `/metrics`, `/healthz`, `/readyz`; `None` when set to `"off"`.
    pub metrics_listen: Option<SocketAddr>,
    /// Rotations (scheduled, resumed or requested) running at once across all plans.
    pub max_concurrent_rotations: usize,
    /// How long a step in flight may take to finish and be journaled after SIGTERM.
    pub shutdown_timeout: Duration,
    pub retry: RetryConfig,
    pub budget: BudgetConfig,
}

/// The defaults an empty `[daemon]` table means, except that the socket moves into
/// `$RUNTIME_DIRECTORY` when systemd sets it.
impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            socket: PathBuf::from(DEFAULT_SOCKET),
            allowed_uids: Vec::new(),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            max_concurrent_rotations: 4,
            shutdown_timeout: Duration::from_secs(60),
            retry: RetryConfig::default(),
            budget: BudgetConfig::default(),
        }
    }
}

/// What the daemon does after a failed rotation cycle (rolled back, refused, or an
/// error before it could start).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryConfig {
    /// Wait before the first retry; it doubles per further failure.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Consecutive failed cycles after which the plan is parked `needs-attention`
    /// (no more automatic attempts until `keyflip rotate now` or `resume` succeeds).
    pub park_after: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial_backoff: Duration::from_secs(5 * 60),
            max_backoff: Duration::from_secs(2 * 3_600),
            park_after: 3,
        }
    }
}

impl RetryConfig {
    /// The wait after `failures` consecutive failures (1 = the first).
    pub fn backoff(&self, failures: u32) -> Duration {
        let doubled = self
            .initial_backoff
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20));
        doubled.min(self.max_backoff)
    }
}

/// Shared budgets: every ARM call of every plan counts against its subscription's
/// budget, every Key Vault call against its vault's. Defaults are Azure's published
/// limits: ARM's per-subscription write and read refill rates, the Storage resource
/// provider's hourly writes and five-minute reads (per subscription and region), and
/// Key Vault transactions per vault and region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BudgetConfig {
    /// ARM writes (every method but GET) per subscription per second.
    pub arm_writes_per_second: u32,
    /// Writes to the Storage resource provider (`listKeys`, `regenerateKey`, ...) per
    /// subscription per hour.
    pub arm_writes_per_hour: u32,
    /// ARM reads per subscription per second.
    pub arm_reads_per_second: u32,
    /// Reads of the Storage resource provider per subscription per 5 minutes.
    pub arm_reads_per_5min: u32,
    /// Secret creates (`setSecret`) per vault per 10 seconds.
    pub keyvault_writes_per_10s: u32,
    /// Every other Key Vault call per vault per 10 seconds.
    pub keyvault_reads_per_10s: u32,
}

/// Azure's limits: in Azure's clouds the budgets may be lower, never higher.
pub const AZURE_LIMITS: BudgetConfig = BudgetConfig {
    arm_writes_per_second: 10,
    arm_writes_per_hour: 1_200,
    arm_reads_per_second: 25,
    arm_reads_per_5min: 800,
    keyvault_writes_per_10s: 300,
    keyvault_reads_per_10s: 4_000,
};

/// A custom cloud (Azure Stack Hub, a private endpoint, keyflip-twin) has limits of
/// its own that Azure does not publish: there, a budget may go up to this.
pub const CUSTOM_CLOUD_MAX: u32 = 1_000_000;

impl Default for BudgetConfig {
    fn default() -> Self {
        AZURE_LIMITS
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    socket: Option<Spanned<PathBuf>>,
    allowed_uids: Option<Spanned<Vec<i64>>>,
    metrics_listen: Option<Spanned<String>>,
    max_concurrent_rotations: Option<Spanned<i64>>,
    shutdown_timeout: Option<Spanned<String>>,
    retry_backoff: Option<Spanned<String>>,
    retry_backoff_max: Option<Spanned<String>>,
    park_after_failures: Option<Spanned<i64>>,
    budget: Option<Spanned<RawBudget>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    arm_writes_per_second: Option<Spanned<i64>>,
    arm_writes_per_hour: Option<Spanned<i64>>,
    arm_reads_per_second: Option<Spanned<i64>>,
    arm_reads_per_5min: Option<Spanned<i64>>,
    keyvault_writes_per_10s: Option<Spanned<i64>>,
    keyvault_reads_per_10s: Option<Spanned<i64>>,
}

/// What `path` would clobber in `state_dir`: the directory itself, the journal and
/// its SQLite side files, the fingerprint key, or anything under `locks/` and
/// `reports/`. Compared lexically (`a/./b` and `a/b` are the same), since the files
/// may not exist yet.
fn state_file(path: &Path, state_dir: &Path) -> Option<&'static str> {
    let norm = |p: &Path| -> PathBuf {
        p.components()
            .filter(|c| !matches!(c, std::path::Component::CurDir))
            .collect()
    };
    let (path, dir) = (norm(path), norm(state_dir));
    let rest = path.strip_prefix(&dir).ok()?;
    let mut parts = rest.components().map(|c| c.as_os_str().to_string_lossy());
    match (parts.next().as_deref(), parts.next()) {
        (None, _) => Some("the state directory itself"),
        (Some("journal.db" | "journal.db-wal" | "journal.db-shm" | "journal.db-journal"), None) => {
            Some("the journal")
        }
        (Some("fingerprint.key"), None) => Some("the fingerprint key"),
        (Some("locks"), _) => Some("a lock file"),
        (Some("reports"), _) => Some("an incident report"),
        _ => None,
    }
}

impl Ctx<'_> {
    /// `[daemon]`; `state_dir` is where the journal lives, which the socket must not.
    /// `custom_cloud`: the `[cloud]` is not one of Azure's, so budgets may exceed
    /// Azure's published limits.
    pub(super) fn daemon(
        &self,
        raw: RawDaemon,
        state_dir: &Path,
        env: Env,
        custom_cloud: bool,
    ) -> Result<DaemonConfig, SourceError> {
        let d = DaemonConfig::default();
        let socket = match raw.socket {
            Some(p) => {
                let span = p.span();
                let path = self.path(p.into_inner());
                if let Some(what) = state_file(&path, state_dir) {
                    return Err(self
                        .error(span, format!("socket is {what} in the state directory {}", state_dir.display()))
                        .with_hint("put the control socket in a runtime directory, e.g. socket = \"/run/keyflip/keyflip.sock\"; keyflip never replaces its own data with a socket"));
                }
                path
            }
            // systemd's RuntimeDirectory= may list several directories, colon-separated.
            None => env("RUNTIME_DIRECTORY")
                .and_then(|v| {
                    v.split(':')
                        .next()
                        .map(|d| PathBuf::from(d).join("keyflip.sock"))
                })
                .unwrap_or(d.socket),
        };
        let allowed_uids = match raw.allowed_uids {
            None => Vec::new(),
            Some(list) => {
                let span = list.span();
                list.into_inner()
                    .into_iter()
                    .map(|uid| {
                        u32::try_from(uid).map_err(|_| {
                            self.error(span.clone(), format!("allowed_uids: {uid} is not a uid"))
                                .with_hint("list numeric user ids, e.g. allowed_uids = [1000]")
                        })
                    })
                    .collect::<Result<_, _>>()?
            }
        };
        let metrics_listen = match &raw.metrics_listen {
            None => d.metrics_listen,
            Some(v) if v.get_ref().trim().eq_ignore_ascii_case("off") => None,
            Some(v) => Some(v.get_ref().trim().parse::<SocketAddr>().map_err(|_| {
                self.error(
                    v.span(),
                    format!(
                        "metrics_listen `{}` is not an address with a port",
                        v.get_ref()
                    ),
                )
                .with_hint(
                    "write metrics_listen = \"127.0.0.1:9464\", or \"off\" for no metrics endpoint",
                )
            })?),
        };
        let max_concurrent_rotations = match &raw.max_concurrent_rotations {
            None => d.max_concurrent_rotations,
            Some(v) => self.integer(v, "max_concurrent_rotations", 1, 64)? as usize,
        };
        let shutdown_timeout = match &raw.shutdown_timeout {
            None => d.shutdown_timeout,
            Some(v) => self.duration(
                v,
                "shutdown_timeout",
                Duration::from_secs(1),
                Duration::from_secs(3_600),
            )?,
        };
        let defaults = d.retry;
        let initial_backoff = match &raw.retry_backoff {
            None => defaults.initial_backoff,
            Some(v) => self.duration(
                v,
                "retry_backoff",
                Duration::from_secs(10),
                Duration::from_secs(7 * 86_400),
            )?,
        };
        let max_backoff = match &raw.retry_backoff_max {
            None => defaults.max_backoff.max(initial_backoff),
            Some(v) => {
                let max = self.duration(
                    v,
                    "retry_backoff_max",
                    Duration::from_secs(10),
                    Duration::from_secs(30 * 86_400),
                )?;
                if max < initial_backoff {
                    return Err(self
                        .error(v.span(), "retry_backoff_max is shorter than retry_backoff")
                        .with_hint("make retry_backoff_max at least as long as retry_backoff"));
                }
                max
            }
        };
        let park_after = match &raw.park_after_failures {
            None => defaults.park_after,
            Some(v) => self.integer(v, "park_after_failures", 1, 100)? as u32,
        };
        let budget = self.budget(
            raw.budget.map(Spanned::into_inner).unwrap_or_default(),
            custom_cloud,
        )?;
        Ok(DaemonConfig {
            socket,
            allowed_uids,
            metrics_listen,
            max_concurrent_rotations,
            shutdown_timeout,
            retry: RetryConfig {
                initial_backoff,
                max_backoff,
                park_after,
            },
            budget,
        })
    }

    fn budget(&self, raw: RawBudget, custom_cloud: bool) -> Result<BudgetConfig, SourceError> {
        let limit = |v: &Option<Spanned<i64>>, key: &str, azure: u32, what: &str| match v {
            None => Ok(azure),
            Some(v) => {
                let n = *v.get_ref();
                let max = if custom_cloud {
                    CUSTOM_CLOUD_MAX
                } else {
                    azure
                };
                if (1..=i64::from(max)).contains(&n) {
                    Ok(n as u32)
                } else {
                    let hint = if custom_cloud {
                        format!("{max} is the most keyflip accepts for {what}")
                    } else {
                        format!(
                            "{azure} is Azure's limit for {what}; a higher budget would let keyflip trip throttling on its own (only a custom [cloud] may declare higher limits)"
                        )
                    };
                    Err(self
                        .error(
                            v.span(),
                            format!("budget.{key} is {n}; it must be between 1 and {max}"),
                        )
                        .with_hint(hint))
                }
            }
        };
        Ok(BudgetConfig {
            arm_writes_per_second: limit(
                &raw.arm_writes_per_second,
                "arm_writes_per_second",
                AZURE_LIMITS.arm_writes_per_second,
                "ARM writes per subscription and second",
            )?,
            arm_writes_per_hour: limit(
                &raw.arm_writes_per_hour,
                "arm_writes_per_hour",
                AZURE_LIMITS.arm_writes_per_hour,
                "Storage resource provider writes per subscription and hour",
            )?,
            arm_reads_per_second: limit(
                &raw.arm_reads_per_second,
                "arm_reads_per_second",
                AZURE_LIMITS.arm_reads_per_second,
                "ARM reads per subscription and second",
            )?,
            arm_reads_per_5min: limit(
                &raw.arm_reads_per_5min,
                "arm_reads_per_5min",
                AZURE_LIMITS.arm_reads_per_5min,
                "Storage resource provider reads per subscription in 5 minutes",
            )?,
            keyvault_writes_per_10s: limit(
                &raw.keyvault_writes_per_10s,
                "keyvault_writes_per_10s",
                AZURE_LIMITS.keyvault_writes_per_10s,
                "secret creates per vault in 10 seconds",
            )?,
            keyvault_reads_per_10s: limit(
                &raw.keyvault_reads_per_10s,
                "keyvault_reads_per_10s",
                AZURE_LIMITS.keyvault_reads_per_10s,
                "other Key Vault transactions per vault in 10 seconds",
            )?,
        })
    }

    fn integer(&self, v: &Spanned<i64>, key: &str, min: i64, max: i64) -> Result<i64, SourceError> {
        let n = *v.get_ref();
        if (min..=max).contains(&n) {
            Ok(n)
        } else {
            Err(self
                .error(
                    v.span(),
                    format!("{key} is {n}; it must be between {min} and {max}"),
                )
                .with_hint(format!("choose a whole number from {min} to {max}")))
        }
    }

    fn duration(
        &self,
        v: &Spanned<String>,
        key: &str,
        min: Duration,
        max: Duration,
    ) -> Result<Duration, SourceError> {
        let d = duration::parse(v.get_ref()).map_err(|e| {
            self.error(v.span(), format!("{key}: {e}"))
                .with_hint(duration::DurationError::HINT)
        })?;
        if d < min || d > max {
            return Err(self
                .error(
                    v.span(),
                    format!(
                        "{key} is {}; it must be between {} and {}",
                        duration::format(d),
                        duration::format(min),
                        duration::format(max)
                    ),
                )
                .with_hint(format!(
                    "choose a duration from {} to {}",
                    duration::format(min),
                    duration::format(max)
                )));
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{parse, source_error};
    use super::*;

    #[test]
    fn defaults_follow_systemd_and_azure() {
        let c = parse("", &[("RUNTIME_DIRECTORY", "/run/keyflip:/run/other")]).unwrap();
        assert_eq!(c.daemon.socket, PathBuf::from("/run/keyflip/keyflip.sock"));
        let d = parse("", &[]).unwrap().daemon;
        assert_eq!(d.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(
            d.metrics_listen,
            Some(DEFAULT_METRICS_LISTEN.parse().unwrap())
        );
        assert_eq!(d.budget, AZURE_LIMITS);
        assert_eq!(d.retry, RetryConfig::default());
        assert_eq!(d.max_concurrent_rotations, 4);
    }

    #[test]
    fn every_setting_is_read() {
        let d = parse(
            "[daemon]\nsocket = \"run/k.sock\"\nallowed_uids = [1000, 1001]\nmetrics_listen = \"off\"\nmax_concurrent_rotations = 2\nshutdown_timeout = \"30s\"\nretry_backoff = \"1m\"\nretry_backoff_max = \"10m\"\npark_after_failures = 5\n[daemon.budget]\narm_writes_per_second = 2\narm_writes_per_hour = 600\narm_reads_per_second = 5\narm_reads_per_5min = 300\nkeyvault_writes_per_10s = 30\nkeyvault_reads_per_10s = 400\n",
            &[("RUNTIME_DIRECTORY", "/ignored")],
        )
        .unwrap()
        .daemon;
        assert_eq!(d.socket, PathBuf::from("/etc/kf/run/k.sock"));
        assert_eq!(d.allowed_uids, vec![1000, 1001]);
        assert_eq!(d.metrics_listen, None);
        assert_eq!(d.max_concurrent_rotations, 2);
        assert_eq!(d.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(d.retry.park_after, 5);
        assert_eq!(d.retry.backoff(1), Duration::from_secs(60));
        assert_eq!(d.retry.backoff(3), Duration::from_secs(240));
        assert_eq!(d.retry.backoff(30), Duration::from_secs(600));
        assert_eq!(
            d.budget,
            BudgetConfig {
                arm_writes_per_second: 2,
                arm_writes_per_hour: 600,
                arm_reads_per_second: 5,
                arm_reads_per_5min: 300,
                keyvault_writes_per_10s: 30,
                keyvault_reads_per_10s: 400,
            }
        );
    }

    #[test]
    fn bad_values_point_at_the_key_and_say_the_range() {
        let e = source_error("[daemon.budget]\narm_writes_per_second = 50\n", &[]);
        assert_eq!(e.line, 2);
        assert!(e.message.contains("between 1 and 10"), "{}", e.message);
        assert!(e.hint.unwrap().contains("Azure's limit"));
        // A custom cloud declares its own limits (keyflip-twin models no hourly quota).
        let custom = "[cloud]\nname = \"custom\"\narm_url = \"https://127.0.0.1:1/\"\narm_audience = \"https://management.azure.com\"\nauthority_host = \"https://127.0.0.1:1\"\n";
        let d = parse(
            &format!(
                "{custom}[daemon.budget]\narm_writes_per_hour = 36000\narm_reads_per_5min = 7500\n"
            ),
            &[],
        )
        .unwrap()
        .daemon;
        assert_eq!(
            (d.budget.arm_writes_per_hour, d.budget.arm_reads_per_5min),
            (36_000, 7_500)
        );
        let e = source_error(
            &format!("{custom}[daemon.budget]\narm_writes_per_hour = 0\n"),
            &[],
        );
        assert!(e.message.contains("between 1 and 1000000"), "{}", e.message);

        let e = source_error("[daemon]\nmetrics_listen = \"localhost\"\n", &[]);
        assert_eq!(e.line, 2);
        assert!(e.message.contains("not an address"), "{}", e.message);

        let e = source_error("[daemon]\nshutdown_timeout = \"1.5m\"\n", &[]);
        assert!(e.message.contains("shutdown_timeout"), "{}", e.message);

        let e = source_error(
            "[daemon]\nretry_backoff = \"1h\"\nretry_backoff_max = \"10m\"\n",
            &[],
        );
        assert_eq!(e.line, 3);

        let e = source_error("[daemon]\nmax_concurrent_rotations = 0\n", &[]);
        assert!(e.message.contains("between 1 and 64"), "{}", e.message);

        let e = source_error("[daemon]\nallowed_uids = [-1]\n", &[]);
        assert!(e.message.contains("not a uid"), "{}", e.message);
    }

    /// A socket path on the journal once made the daemon unlink the journal to bind.
    #[test]
    fn the_socket_may_not_be_one_of_the_state_directorys_files() {
        for (socket, what) in [
            ("/var/lib/kf/journal.db", "the journal"),
            ("/var/lib/kf/./journal.db-wal", "the journal"),
            ("/var/lib/kf/fingerprint.key", "the fingerprint key"),
            ("/var/lib/kf/locks/abc.lock", "a lock file"),
            ("/var/lib/kf/reports/x.md", "an incident report"),
            ("/var/lib/kf", "the state directory itself"),
        ] {
            let e = source_error(
                &format!("state_dir = \"/var/lib/kf\"\n[daemon]\nsocket = \"{socket}\"\n"),
                &[],
            );
            assert_eq!(e.line, 3, "{socket}");
            assert!(e.message.contains(what), "{socket}: {}", e.message);
        }
        // Relative to the file's directory, which is the state directory here.
        let e = source_error(
            "state_dir = \".\"\n[daemon]\nsocket = \"journal.db\"\n",
            &[],
        );
        assert!(e.message.contains("the journal"), "{}", e.message);
        let ok = super::super::tests::parse(
            "state_dir = \"/var/lib/kf\"\n[daemon]\nsocket = \"/var/lib/kf/keyflip.sock\"\n",
            &[],
        );
        assert!(ok.is_ok(), "{ok:?}");
    }
}
