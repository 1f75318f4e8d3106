//! What a person asked for: the one place where the command line of `rotate now`,
//! `rotate resume`, `status` and `history` becomes a typed [`Request`].
//!
//! Promises:
//! - Every check of the arguments happens here, once ([`Invocation::from_cli`]): a bad
//!   `--grace`, `--grace` with `--leaked` or `--adopt` (which have no grace period),
//!   `--revoke-first` with both keys leaked, a `--reason` with a newline, are refused
//!   before anything is read or any daemon is asked, whichever process would have
//!   done the work.
//! - Who asks is part of the request ([`Requester`]): the reason and ticket from here,
//!   the uid stamped by whoever can vouch for it ([`Request::stamp`]: this process for
//!   itself, a daemon from its socket peer's credentials).
//! - The same [`Request`] value is what the standalone runner performs and what the
//!   control socket carries to a daemon (it is the protocol's request body), so no
//!   process re-interprets flags.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::render::Shape;
use crate::cli::{
    AdoptKey, Command, HistoryArgs, Leaked, Output, ResumeArgs, RotateCommand, RotateNowArgs,
    WhyArgs,
};
use crate::key::KeyName;
use crate::rotation::engine::Amend;
use crate::rotation::machine::Mode;
use crate::rotation::{Requester, RotateRequest, Trigger};

/// How many rotations `history` shows unless `--limit` says otherwise.
pub const HISTORY_LIMIT: usize = 50;

/// A command keyflip performs standalone or in a running daemon. Closed: a new
/// command needs a variant here, in the standalone runner and in the daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// `rotate now PLAN` (or only what it would do, with `dry_run`).
    RotateNow {
        plan: String,
        mode: Mode,
        /// Overrides the plan's grace period (incident modes have none); shortens an
        /// unfinished rotation's.
        #[serde(rename = "grace_ms", with = "millis_opt")]
        grace: Option<Duration>,
        dry_run: bool,
        /// Who asks and why. A daemon replaces the uid with its peer's.
        #[serde(default)]
        by: Requester,
    },
    /// `rotate resume [PLAN] [--grace D] [--force-retire]`: finish or roll back
    /// unfinished rotations, shortening the grace period of PLAN's, then retire what
    /// swaps parked at the usage gate still owe.
    Resume {
        plan: Option<String>,
        #[serde(default, rename = "grace_ms", with = "millis_opt")]
        grace: Option<Duration>,
        #[serde(default)]
        by: Requester,
        /// Then retire what swaps parked at the usage gate still owe: after the gate
        /// again, or at once with `force_retire` (protocol 5).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        force_retire: bool,
    },
    /// `status`: every plan (or one), live.
    Status { plan: Option<String> },
    /// `history [PLAN]`: past rotations, newest first, at most `limit`, started at
    /// or after `since`.
    History {
        plan: Option<String>,
        limit: usize,
        #[serde(default)]
        since: Option<DateTime<Utc>>,
    },
}

impl Request {
    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Request::RotateNow { dry_run: true, .. } => "rotate-now (dry run)",
            Request::RotateNow { .. } => "rotate-now",
            Request::Resume { .. } => "resume",
            Request::Status { .. } => "status",
            Request::History { .. } => "history",
        }
    }

    /// Whether performing it may change keys or consumers (a rotation or a resume),
    /// rather than only read.
    pub fn changes_keys(&self) -> bool {
        matches!(
            self,
            Request::RotateNow { dry_run: false, .. } | Request::Resume { .. }
        )
    }

    /// The engine's request for a `rotate now`; `None` for other requests.
    pub fn rotation(&self) -> Option<RotateRequest> {
        match self {
            Request::RotateNow {
                mode, grace, by, ..
            } => Some(RotateRequest {
                mode: *mode,
                grace: *grace,
                trigger: match mode {
                    Mode::Leaked { .. } | Mode::LeakedBoth => Trigger::Incident,
                    Mode::Adopt { .. } => Trigger::Adopt,
                    Mode::Scheduled | Mode::Retire { .. } => Trigger::Manual,
                },
                by: Some(by.clone()),
            }),
            _ => None,
        }
    }

    /// What a resume changes in the rotation it resumes.
    pub fn amendment(&self) -> Amend {
        match self {
            Request::Resume { grace, by, .. } => Amend {
                grace: *grace,
                by: Some(by.clone()),
            },
            _ => Amend::default(),
        }
    }

    /// Records `uid` (and its user name) as who asks, replacing what the request
    /// carried: this process's uid, or a daemon's control socket peer's.
    pub fn stamp(&mut self, uid: u32) {
        if let Request::RotateNow { by, .. } | Request::Resume { by, .. } = self {
            by.stamp(uid);
        }
    }

    /// The dry run of a `rotate now` (itself when it is one already).
    pub fn as_dry_run(&self) -> Request {
        match self {
            Request::RotateNow {
                plan,
                mode,
                grace,
                by,
                ..
            } => Request::RotateNow {
                plan: plan.clone(),
                mode: *mode,
                grace: *grace,
                dry_run: true,
                by: by.clone(),
            },
            other => other.clone(),
        }
    }
}

/// A request with how its answer is shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    pub request: Request,
    pub output: Output,
    /// `rotate now --yes`: do not ask first.
    pub yes: bool,
    /// How the human output looks (`--show-calls`, `status --plan`).
    pub shape: Shape,
}

/// Arguments that make no request; nothing was read or changed (exit 2).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidArgs {
    /// How the error is shown.
    pub output: Output,
    pub message: String,
}

impl Invocation {
    /// The request a command line asks for; `None` for commands that are not
    /// requests (`demo`, `plan check`, `doctor`, `daemon`, ...).
    pub fn from_cli(command: &Command) -> Option<Result<Invocation, InvalidArgs>> {
        Self::from_cli_at(command, Utc::now())
    }

    /// [`Invocation::from_cli`] with `now` for `history --since 7d`.
    pub fn from_cli_at(
        command: &Command,
        now: DateTime<Utc>,
    ) -> Option<Result<Invocation, InvalidArgs>> {
        let plain = |request, output| {
            Ok(Invocation {
                request,
                output,
                yes: false,
                shape: Shape::default(),
            })
        };
        Some(match command {
            Command::Rotate(RotateCommand::Now(args)) => rotate_now(args),
            Command::Rotate(RotateCommand::Resume(args)) => resume(args),
            Command::Status(args) => Ok(Invocation {
                request: Request::Status {
                    plan: args.plan.clone(),
                },
                output: args.output.output,
                yes: false,
                shape: Shape {
                    detail: args.plan.is_some(),
                    ..Shape::default()
                },
            }),
            Command::History(args) => {
                history(args, now).and_then(|request| plain(request, args.output.output))
            }
            _ => return None,
        })
    }
}

/// Longest `--reason`, in characters: a sentence or two for a journal, a webhook and
/// a report.
const MAX_REASON: usize = 500;
/// Longest `--ticket`.
const MAX_TICKET: usize = 100;

/// `--reason` and `--ticket`, checked: printed in history, reports and webhooks, so no
/// control characters (a newline would forge a line) and a bounded length.
fn requester(why: &WhyArgs) -> Result<Requester, String> {
    let check = |flag: &str, text: &Option<String>, max: usize| -> Result<Option<String>, String> {
        let Some(text) = text else {
            return Ok(None);
        };
        let text = text.trim();
        if text.is_empty() {
            return Err(format!("{flag} is empty; leave it out or say something"));
        }
        if text.chars().any(char::is_control) {
            return Err(format!(
                "{flag} contains a control character (a newline, a tab, ...); use one line of plain text"
            ));
        }
        if text.chars().count() > max {
            return Err(format!("{flag} is longer than {max} characters"));
        }
        Ok(Some(text.to_owned()))
    };
    Ok(Requester {
        uid: None,
        user: None,
        reason: check("--reason", &why.reason, MAX_REASON)?,
        ticket: check("--ticket", &why.ticket, MAX_TICKET)?,
    })
}

fn grace_of(text: &Option<String>) -> Result<Option<Duration>, String> {
    let Some(text) = text else {
        return Ok(None);
    };
    let grace = crate::plan::duration::parse(text).map_err(|e| format!("--grace {text}: {e}"))?;
    if grace > crate::plan::MAX_GRACE {
        return Err(format!(
            "--grace {text}: longer than {}, the longest grace period keyflip allows (as in a plan's [rotation] grace)",
            crate::plan::duration::format(crate::plan::MAX_GRACE)
        ));
    }
    Ok(Some(grace))
}

fn resume(args: &ResumeArgs) -> Result<Invocation, InvalidArgs> {
    let invalid = |message: String| InvalidArgs {
        output: args.output.output,
        message,
    };
    Ok(Invocation {
        request: Request::Resume {
            plan: args.plan.clone(),
            grace: grace_of(&args.grace).map_err(invalid)?,
            by: requester(&args.why).map_err(invalid)?,
            force_retire: args.force_retire,
        },
        output: args.output.output,
        yes: false,
        shape: Shape::default(),
    })
}

fn rotate_now(args: &RotateNowArgs) -> Result<Invocation, InvalidArgs> {
    let invalid = |message: String| InvalidArgs {
        output: args.output.output,
        message,
    };
    let grace = grace_of(&args.grace).map_err(invalid)?;
    let by = requester(&args.why).map_err(invalid)?;
    if grace.is_some() && args.leaked.is_some() {
        return Err(invalid(
            "--grace does not apply to --leaked: an incident retires the leaked key as soon as consumers are off it, with no grace period".into(),
        ));
    }
    if grace.is_some() && args.adopt.is_some() {
        return Err(invalid(
            "--grace does not apply to --adopt: adopting a key retires nothing".into(),
        ));
    }
    if let Some(adopt) = args.adopt {
        let key = match adopt {
            AdoptKey::Any => None,
            AdoptKey::Key1 => Some(KeyName::Key1),
            AdoptKey::Key2 => Some(KeyName::Key2),
        };
        return Ok(Invocation {
            request: Request::RotateNow {
                plan: args.plan.clone(),
                mode: Mode::Adopt { key },
                grace: None,
                dry_run: args.dry_run,
                by,
            },
            output: args.output.output,
            yes: args.yes,
            shape: Shape {
                show_calls: args.show_calls,
                ..Shape::default()
            },
        });
    }
    let leaked = |key| Mode::Leaked {
        key,
        revoke_first: args.revoke_first,
    };
    let mode = match args.leaked {
        None => Mode::Scheduled,
        Some(Leaked::Key1) => leaked(KeyName::Key1),
        Some(Leaked::Key2) => leaked(KeyName::Key2),
        Some(Leaked::Both | Leaked::Unknown) if args.revoke_first => {
            return Err(invalid(
                "--revoke-first applies to --leaked key1 or key2; with both keys leaked keyflip swaps standby first and retires the other at once".into(),
            ));
        }
        Some(Leaked::Both | Leaked::Unknown) => Mode::LeakedBoth,
    };
    Ok(Invocation {
        request: Request::RotateNow {
            plan: args.plan.clone(),
            mode,
            grace,
            dry_run: args.dry_run,
            by,
        },
        output: args.output.output,
        yes: args.yes,
        shape: Shape {
            show_calls: args.show_calls,
            ..Shape::default()
        },
    })
}

fn history(args: &HistoryArgs, now: DateTime<Utc>) -> Result<Request, InvalidArgs> {
    let invalid = |message: String| InvalidArgs {
        output: args.output.output,
        message,
    };
    if args.limit == 0 {
        return Err(invalid(
            "--limit 0 shows nothing; give at least 1".to_owned(),
        ));
    }
    let since = match &args.since {
        Some(text) => Some(since(text, now).map_err(|e| invalid(format!("--since {text}: {e}")))?),
        None => None,
    };
    Ok(Request::History {
        plan: args.plan.clone(),
        limit: args.limit,
        since,
    })
}

/// `7d` (back from `now`), `2026-03-01` (midnight UTC) or an RFC 3339 time.
fn since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return day
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc())
            .ok_or_else(|| "not a day".to_owned());
    }
    let back = crate::plan::duration::parse(text).map_err(|e| {
        format!("expected a duration back from now (7d, 12h) or a date (2026-03-01, 2026-03-01T12:00:00Z): {e}")
    })?;
    chrono::TimeDelta::from_std(back)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .ok_or_else(|| "too far back".to_owned())
}

/// `Option<Duration>` as whole milliseconds.
mod millis_opt {
    use std::time::Duration;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    /// A grace beyond [`crate::plan::MAX_GRACE`] is refused here too, so a request
    /// written by hand to the control socket meets the command line's rule (one of
    /// `u64::MAX` milliseconds once overflowed the daemon's clock arithmetic).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let grace = Option::<u64>::deserialize(d)?.map(Duration::from_millis);
        match grace {
            Some(g) if g > crate::plan::MAX_GRACE => Err(serde::de::Error::custom(format!(
                "grace_ms {} is longer than {}, the longest grace period",
                g.as_millis(),
                crate::plan::duration::format(crate::plan::MAX_GRACE)
            ))),
            other => Ok(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::Cli;

    fn parse(args: &[&str]) -> Option<Result<Invocation, InvalidArgs>> {
        let cli = Cli::try_parse_from(std::iter::once("keyflip").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        Invocation::from_cli(&cli.command)
    }

    fn request(args: &[&str]) -> Request {
        parse(args)
            .expect("a request")
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .request
    }

    #[test]
    fn revoke_first_with_both_keys_leaked_is_refused_not_downgraded() {
        for leaked in ["both", "unknown"] {
            let err = parse(&[
                "rotate",
                "now",
                "demo",
                "--leaked",
                leaked,
                "--revoke-first",
                "--output",
                "json",
            ])
            .expect("a request command")
            .expect_err("refused");
            assert!(err.message.contains("--revoke-first applies to"), "{err}");
            assert_eq!(err.output, Output::Json);
        }
        assert_eq!(
            request(&["rotate", "now", "demo", "--leaked", "both"]),
            Request::RotateNow {
                plan: "demo".into(),
                mode: Mode::LeakedBoth,
                grace: None,
                dry_run: false,
                by: Requester::default(),
            }
        );
        assert_eq!(
            request(&[
                "rotate",
                "now",
                "demo",
                "--leaked",
                "key2",
                "--revoke-first"
            ]),
            Request::RotateNow {
                plan: "demo".into(),
                mode: Mode::Leaked {
                    key: KeyName::Key2,
                    revoke_first: true,
                },
                grace: None,
                dry_run: false,
                by: Requester::default(),
            }
        );
    }

    #[test]
    fn grace_with_a_route_that_has_none_is_refused_not_ignored() {
        for args in [
            &["rotate", "now", "demo", "--leaked", "key1", "--grace", "1m"][..],
            &["rotate", "now", "demo", "--adopt", "--grace", "1m"][..],
        ] {
            let err = parse(args).unwrap().unwrap_err();
            assert!(err.message.starts_with("--grace does not apply"), "{err}");
        }
        // `rotate resume --grace` needs the plan whose rotation it shortens.
        let cli = Cli::try_parse_from(["keyflip", "rotate", "resume", "--grace", "0s"]);
        assert!(cli.is_err());
        assert_eq!(
            request(&["rotate", "resume", "demo", "--grace", "0s"]),
            Request::Resume {
                plan: Some("demo".into()),
                grace: Some(Duration::ZERO),
                by: Requester::default(),
                force_retire: false,
            }
        );
    }

    #[test]
    fn adopt_takes_an_optional_key_and_excludes_leaked() {
        let adopt = |args: &[&str]| match request(args) {
            Request::RotateNow { mode, .. } => mode,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            adopt(&["rotate", "now", "demo", "--adopt"]),
            Mode::Adopt { key: None }
        );
        assert_eq!(
            adopt(&["rotate", "now", "demo", "--adopt", "key2", "--yes"]),
            Mode::Adopt {
                key: Some(KeyName::Key2)
            }
        );
        let r = request(&["rotate", "now", "demo", "--adopt"]);
        assert_eq!(r.rotation().unwrap().trigger, Trigger::Adopt);
        assert!(
            Cli::try_parse_from([
                "keyflip", "rotate", "now", "p", "--adopt", "--leaked", "key1"
            ])
            .is_err()
        );
    }

    #[test]
    fn reason_and_ticket_are_recorded_and_checked_and_the_uid_is_stamped() {
        let mut r = request(&[
            "rotate",
            "now",
            "demo",
            "--reason",
            " key in a gist ",
            "--ticket",
            "INC-7",
        ]);
        r.stamp(4242);
        let Request::RotateNow { by, .. } = &r else {
            panic!("{r:?}")
        };
        assert_eq!(by.reason.as_deref(), Some("key in a gist"));
        assert_eq!(by.ticket.as_deref(), Some("INC-7"));
        assert_eq!(by.uid, Some(4242));
        assert_eq!(r.rotation().unwrap().by.unwrap().uid, Some(4242));
        for (flag, value, want) in [
            ("--reason", "two\nlines", "control character"),
            ("--ticket", "", "is empty"),
        ] {
            let err = parse(&["rotate", "now", "demo", flag, value])
                .unwrap()
                .unwrap_err();
            assert!(err.message.contains(want), "{err}");
        }
        let long = "x".repeat(501);
        let err = parse(&["rotate", "resume", "demo", "--reason", &long])
            .unwrap()
            .unwrap_err();
        assert!(err.message.contains("longer than 500"), "{err}");
    }

    #[test]
    fn a_grace_longer_than_a_plan_may_have_is_refused_on_both_paths() {
        let err = parse(&["rotate", "now", "demo", "--grace", "31d", "--yes"])
            .unwrap()
            .unwrap_err();
        assert!(err.message.contains("longest grace period"), "{err}");
        assert!(
            parse(&["rotate", "now", "demo", "--grace", "30d", "--yes"])
                .unwrap()
                .is_ok()
        );
        // The wire: what a hand-written socket request could carry.
        let line = format!(
            r#"{{"v":{},"request":"rotate_now","plan":"demo","mode":{{"mode":"scheduled"}},"grace_ms":{},"dry_run":false}}"#,
            crate::daemon::control::protocol::VERSION,
            u64::MAX
        );
        let err =
            serde_json::from_str::<crate::daemon::control::protocol::Envelope>(&line).unwrap_err();
        assert!(err.to_string().contains("longest grace period"), "{err}");
    }

    #[test]
    fn grace_is_parsed_once_and_a_bad_one_is_refused() {
        let err = parse(&["rotate", "now", "demo", "--grace", "soon"])
            .unwrap()
            .unwrap_err();
        assert!(err.message.starts_with("--grace soon:"), "{err}");
        let invocation = parse(&["rotate", "now", "demo", "--grace", "90s", "--yes"])
            .unwrap()
            .unwrap();
        assert!(invocation.yes);
        let rotation = invocation.request.rotation().unwrap();
        assert_eq!(rotation.grace, Some(Duration::from_secs(90)));
        assert_eq!(rotation.trigger, Trigger::Manual);
        let incident = request(&["rotate", "now", "demo", "--leaked", "key1"]);
        assert_eq!(incident.rotation().unwrap().trigger, Trigger::Incident);
        assert!(parse(&["plan", "check"]).is_none());
    }

    #[test]
    fn history_takes_a_limit_and_a_since_as_a_duration_or_a_date() {
        use chrono::TimeZone as _;
        let now = Utc.with_ymd_and_hms(2026, 3, 10, 12, 0, 0).unwrap();
        let parse = |args: &[&str]| {
            let cli = Cli::try_parse_from(std::iter::once("keyflip").chain(args.iter().copied()))
                .unwrap();
            Invocation::from_cli_at(&cli.command, now).unwrap()
        };
        let got = parse(&["history", "--since", "7d", "--limit", "5"]).unwrap();
        assert_eq!(
            got.request,
            Request::History {
                plan: None,
                limit: 5,
                since: Some(Utc.with_ymd_and_hms(2026, 3, 3, 12, 0, 0).unwrap()),
            }
        );
        let got = parse(&["history", "demo", "--since", "2026-03-01"]).unwrap();
        assert!(
            matches!(got.request, Request::History { since: Some(at), limit: HISTORY_LIMIT, .. } if at == Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap())
        );
        let got = parse(&["history", "--since", "2026-03-01T06:30:00+02:00"]).unwrap();
        assert!(
            matches!(got.request, Request::History { since: Some(at), .. } if at == Utc.with_ymd_and_hms(2026, 3, 1, 4, 30, 0).unwrap())
        );
        let err = parse(&["history", "--since", "last tuesday"]).unwrap_err();
        assert!(
            err.message.starts_with("--since last tuesday: expected"),
            "{err}"
        );
        assert!(parse(&["history", "--limit", "0"]).is_err());
        let status = parse(&["status", "--plan", "demo"]).unwrap();
        assert!(status.shape.detail);
        let dry = parse(&["rotate", "now", "demo", "--dry-run", "--show-calls"]).unwrap();
        assert!(dry.shape.show_calls);
        assert!(Cli::try_parse_from(["keyflip", "rotate", "now", "demo", "--show-calls"]).is_err());
    }

    #[test]
    fn requests_round_trip_and_unknown_fields_are_refused() {
        for request in [
            request(&["rotate", "now", "demo", "--grace", "90m", "--dry-run"]),
            request(&["rotate", "resume"]),
            request(&["rotate", "resume", "demo", "--force-retire"]),
            request(&[
                "rotate", "resume", "demo", "--grace", "0s", "--ticket", "T-1",
            ]),
            request(&["rotate", "now", "demo", "--adopt", "key1", "--reason", "r"]),
            request(&["status"]),
            request(&["history", "demo", "--since", "2026-03-01", "--limit", "3"]),
        ] {
            let text = serde_json::to_string(&request).unwrap();
            assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), request);
        }
        let text = r#"{"request":"status","plan":null,"extra":1}"#;
        assert!(serde_json::from_str::<Request>(text).is_err());
        let text = r#"{"request":"delete_everything"}"#;
        assert!(serde_json::from_str::<Request>(text).is_err());
    }
}
