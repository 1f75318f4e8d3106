//! The one renderer of what commands show: an [`Answer`] as human text or as the JSON
//! document of `--output json`, a progress event as a line, a [`CommandError`] as an
//! error. The standalone runner and the daemon client both print through here, so a
//! command shows the same whichever process did the work.
//!
//! Promises: times to the second in UTC, fingerprints in short form, consumers by
//! their short label ([`describe::consumer`]) everywhere, no key anywhere (answers
//! hold none), and no Rust `Debug` text or raw serde in human output: every value a
//! person reads is worded here or by a `Display` impl. Human text fits the
//! [`Term`]'s width (long words such as ARM ids excepted) and uses its marks (`✓`, or
//! `ok` without a UTF-8 locale). Every JSON document carries `version` ([`json`]).
//!
//! One file per answer: [`rotation`] (reports and progress lines), [`dry_run`],
//! [`status`], [`history`], [`json`].

pub mod dry_run;
pub mod history;
pub mod json;
pub mod rotation;
pub mod status;

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::answer::{Answer, CommandError};
use super::term::Term;
use crate::cli::Output;
use crate::daemon::control::protocol::DaemonInfo;
use crate::rotation::describe;
use crate::rotation::machine::{ConsumerRef, Holding, Mode, RefusalReason};

pub use dry_run::dry_run;
pub use history::history;
pub use rotation::{progress, rotation};
pub use status::status;

/// `2026-03-01 03:00:12 UTC`.
pub fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// `3d 4h`, `12m 5s`, `40s`.
pub fn age(d: chrono::TimeDelta) -> String {
    let s = d.num_seconds().max(0);
    let (days, hours, mins, secs) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    match (days, hours, mins) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, _) => format!("{mins}m {secs}s"),
        (0, _, _) => format!("{hours}h {mins}m"),
        _ => format!("{days}d {hours}h"),
    }
}

/// Whole milliseconds (what the control socket carries) in seconds, one decimal.
pub fn seconds(d: Duration) -> String {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    format!("{:.1}s", ms as f64 / 1000.0)
}

/// How the person asked to see an answer: presentation only, never sent to a daemon.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shape {
    /// `--dry-run --show-calls`: every Azure call under its step.
    pub show_calls: bool,
    /// `status --plan NAME`: the detailed view instead of the table.
    pub detail: bool,
}

/// What `--output` prints on stdout for an answer, newline included.
pub fn answer(answer: &Answer, output: Output, term: &Term, shape: Shape) -> String {
    match output {
        Output::Human => human(answer, term, shape),
        Output::Json => json::answer(answer),
    }
}

/// An answer as text for people.
pub fn human(answer: &Answer, term: &Term, shape: Shape) -> String {
    match answer {
        Answer::Rotation { report } => rotation(report, term),
        Answer::DryRun { dry_run: d } => dry_run(d, term, shape.show_calls),
        Answer::Resumed { reports } if reports.is_empty() => {
            "Nothing to resume: no unfinished rotation.\n".to_owned()
        }
        Answer::Resumed { reports } => reports.iter().map(|r| rotation(r, term)).collect(),
        Answer::Status { at, plans } => status(plans, *at, shape.detail, term),
        Answer::History { rotations } => history(rotations, term),
    }
}

/// The line saying a running daemon did the work (on stderr, so stdout is the same
/// whichever process answered). `status` adds the daemon's one-line summary; after a
/// rotation it would still say "rotating", as the daemon answers before it notes the
/// end.
pub fn through_daemon(info: &DaemonInfo, with_summary: bool) -> String {
    let mut line = format!(
        "keyflip: answered by the running keyflip daemon (pid {}, version {})",
        info.pid, info.version
    );
    if with_summary {
        line.push_str(": ");
        line.push_str(&info.summary);
    }
    line
}

/// An error: the line for stderr, and for `--output json` the document for stdout.
pub fn error(error: &CommandError, output: Output) -> (String, Option<String>) {
    let line = format!("keyflip: {}", error.message);
    let doc = (output == Output::Json).then(|| json::error(&error.message, error.exit));
    (line, doc)
}

/// The mode in words: `safe swap`, `incident: key1 leaked, revoke first`.
pub fn mode_text(mode: Mode) -> String {
    mode.to_string()
}

/// What a consumer holds, in words.
pub fn holding(h: &Holding) -> String {
    match h {
        Holding::Key(k) => k.to_string(),
        Holding::Neither => "neither key".to_owned(),
        Holding::Unknown { why } => format!("unknown ({why})"),
        Holding::Unusable { fix } => format!("cannot be rotated ({fix})"),
    }
}

/// `text` (a reason, a warning) with every consumer it names by its full id given by
/// its short label instead, so a consumer is named the same way everywhere.
pub fn shorten(text: impl std::fmt::Display, consumers: &[&ConsumerRef]) -> String {
    let mut text = text.to_string();
    // Longest ids first, so a datastore id is not cut by its workspace's.
    let mut sorted: Vec<&&ConsumerRef> = consumers.iter().collect();
    sorted.sort_by_key(|c| std::cmp::Reverse(c.id.to_string().len()));
    for c in sorted {
        let label = describe::consumer(c);
        text = text
            .replace(&c.to_string(), &label)
            .replace(&c.id.to_string(), &label);
    }
    text
}

/// An ARM id in short: `storageAccounts/stdatasci001` for
/// `/subscriptions/…/providers/Microsoft.Storage/storageAccounts/stdatasci001`; any
/// other text as it is.
pub fn short_scope(id: &str) -> String {
    if !id.starts_with("/subscriptions/") {
        return id.to_owned();
    }
    let parts: Vec<&str> = id.trim_end_matches('/').rsplit('/').take(2).collect();
    match parts.as_slice() {
        [name, kind] => format!("{kind}/{name}"),
        _ => id.to_owned(),
    }
}

/// A precheck's refusal, one reason per item: missing permissions one per line with
/// the scope in short and the role that grants each, consumers by their short label.
/// The reasons a rotation was refused; the commands they name get `plan` filled in.
pub fn refusal(
    out: &mut String,
    reasons: &[RefusalReason],
    refs: &[&ConsumerRef],
    plan: &str,
    term: &Term,
) {
    out.push_str("  refused, nothing was changed:\n");
    for r in reasons {
        match r {
            RefusalReason::MissingPermissions { missing } => {
                out.push_str(&term.wrap(
                    "    - ",
                    "      ",
                    &format!(
                        "keyflip's identity lacks {} permission{} (`keyflip doctor` prints the role assignments to paste):",
                        missing.len(),
                        if missing.len() == 1 { "" } else { "s" }
                    ),
                ));
                for m in missing {
                    let how = match &m.role_hint {
                        Some(role) if role.starts_with(char::is_uppercase) => {
                            format!(" (granted by {role})")
                        }
                        Some(fix) => format!(" ({fix})"),
                        None => String::new(),
                    };
                    out.push_str(&term.wrap(
                        "        ",
                        "          ",
                        &format!("{} on {}{how}", m.action, short_scope(&m.scope)),
                    ));
                }
            }
            other => out.push_str(&term.wrap(
                "    - ",
                "      ",
                &shorten(describe::for_plan(&other.to_string(), plan), refs),
            )),
        }
    }
}

/// Whether `text` names the consumer `c` (by its full id).
pub fn names(text: &str, c: &ConsumerRef) -> bool {
    text.contains(&c.id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rotation::machine::ConsumerId;

    #[test]
    fn consumers_in_reasons_get_their_short_label() {
        let id: crate::resource_id::ResourceId =
            "/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/mlw"
                .parse()
                .unwrap();
        let ws = ConsumerRef::new(ConsumerId::workspace(&id));
        let ds = ConsumerRef::new(ConsumerId::datastore(&id, "td"));
        let text = format!("{ds} holds neither key; {} and {} are split", ws.id, ds.id);
        let short = shorten(&text, &[&ws, &ds]);
        assert_eq!(
            short,
            "ML datastore mlw/td holds neither key; ML workspace mlw and ML datastore mlw/td are split"
        );
    }

    #[test]
    fn times_are_to_the_second_and_ages_compact() {
        use chrono::TimeZone as _;
        let at = Utc.with_ymd_and_hms(2026, 3, 1, 1, 2, 3).unwrap()
            + chrono::TimeDelta::nanoseconds(999_999_999);
        assert_eq!(time(at), "2026-03-01 01:02:03 UTC");
        assert_eq!(age(chrono::TimeDelta::seconds(3 * 86_400 + 3700)), "3d 1h");
        assert_eq!(seconds(Duration::from_nanos(149_999_999)), "0.1s");
    }
}
