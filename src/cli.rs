//! The command line: clap definitions only. `main.rs` dispatches each command to the
//! module that owns it; nothing here does IO.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "keyflip",
    version,
    long_version = crate::build_info::LONG_VERSION,
    about = "Rotates Azure Storage account keys without downtime"
)]
pub struct Cli {
    /// Configuration file. Default: $KEYFLIP_CONFIG, then /etc/keyflip/keyflip.toml.
    #[arg(long, global = true, env = "KEYFLIP_CONFIG")]
    pub config: Option<PathBuf>,

    /// Log format: human on a terminal, JSON for log shippers.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// More log detail (-v: debug, -vv: trace). RUST_LOG overrides it.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a built-in Azure twin and run a full safe swap against it. Needs no Azure account.
    #[cfg(feature = "demo")]
    Demo(DemoArgs),
    /// Rotate a plan's key now, or resume unfinished rotations.
    #[command(subcommand)]
    Rotate(RotateCommand),
    /// Per plan: active key, key ages, last rotation, next due time, state.
    Status(StatusArgs),
    /// Past rotations with every step and its timing.
    History(HistoryArgs),
    /// Work with rotation plans.
    #[command(subcommand)]
    Plan(PlanCommand),
    /// Check, without changing anything, whether keyflip can rotate each plan.
    Doctor(DoctorArgs),
    /// Run as a service: rotate plans on schedule, watch for drift, serve metrics.
    Daemon,
    /// Replicas: move this machine's journal into the shared journal of [coordination].
    #[command(subcommand)]
    Coordination(CoordinationCommand),
    /// Version, git commit, target and Azure SDK crate versions of this build.
    Version(OutputArgs),
    /// Print a shell completion script on stdout.
    Completions(CompletionsArgs),
    /// Write one man page per command into a directory.
    Manpages(ManpagesArgs),
}

#[derive(Debug, Subcommand)]
pub enum CoordinationCommand {
    /// Copy every rotation of this machine's journal into coordination storage, so that replicas resume an unfinished one and history shows them all.
    ImportJournal(OutputArgs),
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    pub shell: Shell,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args)]
pub struct ManpagesArgs {
    /// Directory to write keyflip.1, keyflip-rotate-now.1, ... into (created if missing).
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the twin running after the demo and print how to reach it.
    #[arg(long)]
    pub keep_running: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Subcommand)]
pub enum RotateCommand {
    /// Rotate now: swap to the standby key, then retire the old one after the grace period.
    Now(RotateNowArgs),
    /// Finish or roll back rotations a crash or signal interrupted.
    Resume(ResumeArgs),
}

#[derive(Debug, Args)]
pub struct RotateNowArgs {
    /// Plan name (file stem in the plans directory) or path to a plan file.
    pub plan: String,
    /// Print what a rotation would do (a summary, then every step) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: list every Azure call under its step.
    #[arg(long, requires = "dry_run")]
    pub show_calls: bool,
    /// Grace period before the old key is retired (overrides the plan), e.g. 10m, 1h.
    #[arg(long)]
    pub grace: Option<String>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// Incident response: which key leaked.
    #[arg(long, value_enum)]
    pub leaked: Option<Leaked>,
    /// With --leaked on the active key: regenerate it first and accept an outage until
    /// consumers are re-bound.
    #[arg(long, requires = "leaked")]
    pub revoke_first: bool,
    /// Move every consumer to a key that works now (KEY, or the one keyflip picks),
    /// regenerating nothing: after a key was regenerated outside keyflip, or when
    /// consumers are split across keys.
    #[arg(
        long,
        value_name = "KEY",
        num_args = 0..=1,
        default_missing_value = "any",
        conflicts_with_all = ["leaked", "revoke_first"]
    )]
    pub adopt: Option<AdoptKey>,
    #[command(flatten)]
    pub why: WhyArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Why a person runs a command that changes keys: recorded with what it does and
/// shown in `history` and reports.
#[derive(Debug, Args)]
pub struct WhyArgs {
    /// Why you run this (recorded in the journal, shown in history and reports).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// The ticket or incident this belongs to (recorded like --reason).
    #[arg(long, value_name = "ID")]
    pub ticket: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AdoptKey {
    /// The key keyflip picks (the newest when an ML workspace is a consumer).
    Any,
    Key1,
    Key2,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// Only this plan.
    pub plan: Option<String>,
    /// Retire the old key of a swap the usage gate parked without checking the logs
    /// again: the callers still signing with it break.
    #[arg(long)]
    pub force_retire: bool,
    /// Shorten the grace period of the plan's unfinished rotation (0s retires the old
    /// key now). Refused when the rotation has no grace period left to shorten.
    #[arg(long, requires = "plan")]
    pub grace: Option<String>,
    #[command(flatten)]
    pub why: WhyArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Leaked {
    Key1,
    Key2,
    Both,
    Unknown,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only this plan.
    pub plan: Option<String>,
    /// At most this many rotations, newest first.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Only rotations started since then: a duration back from now (7d, 12h) or a
    /// date/time in UTC (2026-03-01, 2026-03-01T12:00:00Z).
    #[arg(long)]
    pub since: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// One plan, in detail.
    #[arg(long)]
    pub plan: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Subcommand)]
pub enum PlanCommand {
    /// Validate plan files without touching the network. Default: every plan in the plans directory.
    Check(PlanCheckArgs),
    /// Find every consumer of a storage account's key with reads only, and write a plan for it.
    Discover(PlanDiscoverArgs),
}

#[derive(Debug, Args)]
pub struct PlanDiscoverArgs {
    /// ARM id of the storage account (/subscriptions/…/storageAccounts/NAME); several
    /// are discovered in one scan.
    #[arg(required = true, value_name = "ACCOUNT_ID")]
    pub accounts: Vec<String>,
    /// Write the plan to this file (one account) or into this directory as NAME.toml
    /// (several), instead of stdout. Existing files are not overwritten.
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// Look only in this subscription (repeatable). Default: every subscription
    /// keyflip's identity can see.
    #[arg(long = "subscription", value_name = "SUBSCRIPTION_ID")]
    pub subscriptions: Vec<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct PlanCheckArgs {
    /// Plan files or directories. Default: the plans directory (keyflip.toml's
    /// plans_dir, else $KEYFLIP_PLANS_DIR, else /etc/keyflip/rotation-plans).
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Only this plan.
    #[arg(long)]
    pub plan: Option<String>,
    /// Consumers of an account that its plan does not list block (exit 3) instead of
    /// warning.
    #[arg(long)]
    pub strict: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Human)]
    pub output: Output,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Human,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoke_first_requires_leaked() {
        assert!(Cli::try_parse_from(["keyflip", "rotate", "now", "p", "--revoke-first"]).is_err());
        let cli = Cli::try_parse_from([
            "keyflip",
            "rotate",
            "now",
            "p",
            "--leaked",
            "key1",
            "--revoke-first",
        ])
        .unwrap();
        assert!(matches!(cli.command, Command::Rotate(RotateCommand::Now(a)) if a.revoke_first));
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
