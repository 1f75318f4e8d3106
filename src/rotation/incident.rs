//! The incident report, written when an incident rotation (`--leaked`) finishes:
//! `state_dir/reports/{rotation_id}.md` for people and `.json` for tools.
//!
//! It says what a responder needs after a leak: a timeline with timestamps, which key
//! died when, which consumers were re-bound, which Key Vault versions were disabled,
//! that every SAS signed with a leaked key is now invalid (Azure keeps no list of
//! them), and where `allowSharedKeyAccess=false` would remove the risk for good. It
//! holds key names and fingerprints only. Files are written whole (temporary file,
//! then rename) with mode 0600, so a crash never leaves half a report, and a resumed
//! rotation simply writes them again.

use std::io::Write as _;
use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::engine::{EngineError, Inner};
use super::report::IncidentReportPaths;
use crate::journal::RotationRecord;
use crate::key::KeyName;
use crate::rotation::machine::{
    ConsumerKind, ConsumerStatus, Happening, Mode, Note, Outcome, Purpose, Requester, StepResult,
    View, Warning,
};
use crate::secret::Fingerprint;

pub(crate) const SAS_WARNING: &str = "Every SAS token (account or service SAS) signed with a leaked key stopped working when that key was regenerated, and Azure keeps no list of the tokens it signed. Find the applications that use SAS tokens for this account and issue them new ones.";

pub(crate) const SHARED_KEY_ADVICE: &str = "Consider allowSharedKeyAccess=false on this account wherever consumers can use Microsoft Entra ID (RBAC) instead of keys: then no key, leaked or not, opens the data plane.";

#[derive(Debug, Serialize)]
struct KeyDeath {
    key: KeyName,
    purpose: Purpose,
    at: DateTime<Utc>,
    /// The value that died.
    before: Fingerprint,
    /// The key's new value.
    after: Fingerprint,
}

#[derive(Debug, Serialize)]
struct Rebound {
    consumer: String,
    kind: ConsumerKind,
    key: KeyName,
    /// The value the consumer was bound to (after `--revoke-first` the key name is
    /// the leaked one, so only the fingerprint shows the value is new).
    fingerprint: Option<Fingerprint>,
}

#[derive(Debug, Serialize)]
struct Disabled {
    consumer: String,
    versions: Vec<String>,
}

#[derive(Debug, Serialize)]
struct TakeOver {
    at: DateTime<Utc>,
    /// What the rotation began as.
    began_as: Mode,
}

#[derive(Debug, Serialize)]
struct Moment {
    at: Option<DateTime<Utc>>,
    what: String,
}

#[derive(Debug, Serialize)]
struct IncidentReport {
    rotation_id: String,
    plan: String,
    account: String,
    mode: Mode,
    leaked: String,
    /// Who declared the incident.
    requested_by: Option<Requester>,
    /// When the incident took over this rotation (begun as something else), if it did.
    took_over: Option<TakeOver>,
    /// The unfinished rotation the incident took over first, when this rotation is the
    /// follow-up that handled it.
    follows: Option<String>,
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
    outcome: Option<Outcome>,
    outcome_text: String,
    keys_regenerated: Vec<KeyDeath>,
    consumers_rebound: Vec<Rebound>,
    versions_disabled: Vec<Disabled>,
    warnings: Vec<Warning>,
    sas_warning: &'static str,
    advice: &'static str,
    timeline: Vec<Moment>,
}

fn leaked(mode: Mode) -> String {
    match mode {
        Mode::Leaked { key, revoke_first } => {
            format!("{key}{}", if revoke_first { " (revoke first)" } else { "" })
        }
        Mode::LeakedBoth => "both keys (or unknown)".to_owned(),
        Mode::Scheduled | Mode::Retire { .. } | Mode::Adopt { .. } => "none".to_owned(),
    }
}

fn happening(what: &Happening) -> String {
    match what {
        Happening::Issued { command } => {
            format!("started step {}: {}", command.seq, command.action)
        }
        Happening::Answered { seq, result } => match result {
            // A revoke first's first read has no consumer in it.
            StepResult::Observed(obs) if obs.consumers.is_empty() => {
                format!("step {seq}: read the account's keys")
            }
            StepResult::Observed(_) => {
                format!("step {seq}: observed the account and its consumers")
            }
            StepResult::Regenerated { fingerprint, .. } => {
                format!("step {seq}: regenerated, the key is now {fingerprint}")
            }
            StepResult::VersionsDisabled { versions } => {
                format!("step {seq}: disabled {} version(s)", versions.len())
            }
            StepResult::UsageChecked { callers, .. } if callers.is_empty() => {
                format!("step {seq}: the resource logs show nobody signing with the key")
            }
            StepResult::UsageChecked { callers, .. } => format!(
                "step {seq}: the resource logs show {} caller(s) signing with the key: {}",
                callers.len(),
                callers
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            other => match other.failure() {
                Some(reason) => format!("step {seq} failed: {reason}"),
                None => format!("step {seq}: {}", other.name().replace('_', " ")),
            },
        },
        Happening::Noted { note } => match note {
            Note::Decided {
                active, standby, ..
            } => format!("decided: consumers hold {active}, {standby} is the standby"),
            Note::RollbackStarted { cause } => format!("rolling back after {cause}"),
            Note::Reobserved { drifts } if drifts.is_empty() => {
                "re-observed Azure after a restart: as recorded".to_owned()
            }
            Note::Reobserved { drifts } => format!(
                "re-observed Azure after a restart: {}",
                drifts
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            Note::Warning { warning } => format!("warning: {warning}"),
            Note::UsageHeld {
                key, callers, next, ..
            } => format!(
                "the usage gate held the retire of {key}: {} caller(s) still sign with it; checking again at {}",
                callers.len(),
                next.format("%Y-%m-%d %H:%M:%S UTC")
            ),
            Note::Escalated {
                mode,
                by,
                handled_here,
            } => format!(
                "an incident took this rotation over ({mode}{}): {}",
                by.as_ref()
                    .map(|b| format!(", asked by {b}"))
                    .unwrap_or_default(),
                if *handled_here {
                    "it finishes the incident itself, with no grace period"
                } else {
                    "it winds down, and a follow-up rotation handles the incident"
                }
            ),
            Note::GraceShortened { grace_ms, by } => format!(
                "grace period shortened to {}s{}",
                grace_ms / 1000,
                by.as_ref().map(|b| format!(" by {b}")).unwrap_or_default()
            ),
        },
    }
}

fn build(record: &RotationRecord, view: &View, finished_at: DateTime<Utc>) -> IncidentReport {
    // `target` is the value consumers were moved to: the standby's, or with
    // `revoke_first` the active key's fresh one. A consumer verified back on the other
    // key (a rollback) holds a value the view does not name.
    let target_key = view.route.and_then(|route| {
        if route.revoke_first() {
            view.active
        } else {
            view.standby
        }
    });
    let took_over = view.escalation.as_ref().map(|e| TakeOver {
        at: e.at,
        began_as: record.mode,
    });
    let origin = record.origin.as_ref();
    IncidentReport {
        rotation_id: record.id.clone(),
        plan: record.plan.clone(),
        account: record.account.to_string(),
        mode: view.mode,
        leaked: leaked(view.mode),
        requested_by: view
            .escalation
            .as_ref()
            .and_then(|e| e.by.clone())
            .or_else(|| origin.and_then(|o| o.by.clone())),
        took_over,
        follows: origin.and_then(|o| o.follows.clone()),
        started_at: record.started_at,
        finished_at,
        outcome: view.outcome.clone(),
        outcome_text: view.outcome.as_ref().map_or_else(
            || "unfinished".to_owned(),
            |o| super::describe::outcome(o, view.mode, &record.plan),
        ),
        keys_regenerated: view
            .regenerations
            .iter()
            .map(|r| KeyDeath {
                key: r.key,
                purpose: r.purpose,
                at: r.at,
                before: r.before,
                after: r.after,
            })
            .collect(),
        consumers_rebound: view
            .consumers
            .iter()
            .filter_map(|c| match c.status {
                ConsumerStatus::Verified { key } | ConsumerStatus::Bound { key } => Some(Rebound {
                    consumer: c.consumer.id.to_string(),
                    kind: c.consumer.kind(),
                    key,
                    fingerprint: view.target.filter(|_| target_key == Some(key)),
                }),
                _ => None,
            })
            .collect(),
        versions_disabled: view
            .consumers
            .iter()
            .filter(|c| !c.disabled_versions.is_empty())
            .map(|c| Disabled {
                consumer: c.consumer.id.to_string(),
                versions: c.disabled_versions.clone(),
            })
            .collect(),
        warnings: view.warnings.clone(),
        sas_warning: SAS_WARNING,
        advice: SHARED_KEY_ADVICE,
        timeline: view
            .timeline
            .iter()
            .map(|e| Moment {
                at: e.at,
                what: happening(&e.what),
            })
            .collect(),
    }
}

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn markdown(r: &IncidentReport) -> String {
    use std::fmt::Write as _;
    let mut md = String::new();
    let _ = writeln!(md, "# Incident rotation {}\n", r.rotation_id);
    let _ = writeln!(md, "- Plan: `{}`", r.plan);
    let _ = writeln!(md, "- Storage account: `{}`", r.account);
    let _ = writeln!(md, "- Leaked: {}", r.leaked);
    if let Some(by) = &r.requested_by {
        let _ = writeln!(md, "- Declared by: {by}");
    }
    if let Some(t) = &r.took_over {
        let _ = writeln!(
            md,
            "- The incident took over this rotation at {}: it began as a {} and finished the incident itself",
            time(t.at),
            t.began_as
        );
    }
    if let Some(id) = &r.follows {
        let _ = writeln!(
            md,
            "- The incident took over the unfinished rotation {id} first (see `keyflip history`), then ran this one"
        );
    }
    let _ = writeln!(md, "- Started: {}", time(r.started_at));
    let _ = writeln!(md, "- Finished: {}", time(r.finished_at));
    let _ = writeln!(md, "- Outcome: {}\n", r.outcome_text);
    let _ = writeln!(md, "## SAS tokens\n\n**{}**\n", r.sas_warning);
    let _ = writeln!(
        md,
        "## Keys regenerated (the old value died at that moment)\n"
    );
    if r.keys_regenerated.is_empty() {
        let _ = writeln!(md, "None.");
    }
    for k in &r.keys_regenerated {
        let _ = writeln!(
            md,
            "- {}: {} {}, was {}, now {}",
            time(k.at),
            k.key,
            super::describe::regeneration(r.mode, k.key, k.purpose),
            k.before,
            k.after
        );
    }
    let _ = writeln!(md, "\n## Consumers re-bound\n");
    if r.consumers_rebound.is_empty() {
        let _ = writeln!(md, "None (no consumer had to move).");
    }
    for c in &r.consumers_rebound {
        let value = c
            .fingerprint
            .map(|fp| format!(" ({fp})"))
            .unwrap_or_default();
        let _ = writeln!(
            md,
            "- {} `{}` now holds {}{value}",
            c.kind, c.consumer, c.key
        );
    }
    let _ = writeln!(
        md,
        "\n## Key Vault versions disabled (they held a leaked value)\n"
    );
    if r.versions_disabled.is_empty() {
        let _ = writeln!(md, "None.");
    }
    for d in &r.versions_disabled {
        let _ = writeln!(md, "- `{}`: {}", d.consumer, d.versions.join(", "));
    }
    if !r.warnings.is_empty() {
        let _ = writeln!(md, "\n## Warnings\n");
        for w in &r.warnings {
            let _ = writeln!(md, "- {w}");
        }
    }
    let _ = writeln!(md, "\n## Next steps\n\n- {}\n- {}", r.sas_warning, r.advice);
    let _ = writeln!(md, "\n## Timeline\n");
    for m in &r.timeline {
        let at = m.at.map_or_else(|| "start".to_owned(), time);
        let _ = writeln!(md, "- {at}: {}", m.what);
    }
    md
}

fn write_private(path: &Path, content: &[u8]) -> Result<(), EngineError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let err = |source| EngineError::Report {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    file.write_all(content)
        .and_then(|()| file.sync_all())
        .and_then(|()| crate::journal::owner::hand_over(&tmp))
        .map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Writes both files and returns where.
pub(super) fn write(
    inner: &Inner,
    record: &RotationRecord,
    view: &View,
    finished_at: DateTime<Utc>,
) -> Result<IncidentReportPaths, EngineError> {
    use std::os::unix::fs::DirBuilderExt as _;
    let dir = inner.reports_dir();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .and_then(|()| crate::journal::owner::hand_over(&dir))
        .map_err(|source| EngineError::Report {
            path: dir.display().to_string(),
            source,
        })?;
    let report = build(record, view, finished_at);
    let paths = IncidentReportPaths {
        markdown: dir.join(format!("{}.md", record.id)),
        json: dir.join(format!("{}.json", record.id)),
    };
    let json = serde_json::to_vec_pretty(&report).map_err(|e| EngineError::Report {
        path: paths.json.display().to_string(),
        source: std::io::Error::other(e),
    })?;
    write_private(&paths.json, &json)?;
    write_private(&paths.markdown, markdown(&report).as_bytes())?;
    Ok(paths)
}
