//! The JSON documents of `--output json`: one per command, each an object with
//! `version` ([`VERSION`]) first, every field once.
//!
//! | command | document |
//! |---|---|
//! | `rotate now` | `{version, ...rotation}` |
//! | `rotate now --dry-run` | `{version, ...dry run, summary}` |
//! | `rotate resume` | `{version, rotations: [rotation]}` |
//! | `status` | `{version, at, plans: [plan status]}` |
//! | `history` | `{version, rotations: [rotation]}` |
//! | `plan check` | `{version, valid, plans, errors}` (in `plan::check`) |
//! | `version` | `{version, package_version, commit, ...}` (in `commands::version`) |
//! | an error | `{version, error, exit}` |
//!
//! A rotation is the engine's report, except that its `outcome` does not repeat the
//! report's own `regenerated` and `warnings`. Field names are stable: fields may be
//! added; a rename or a change of meaning bumps [`VERSION`].

use serde::Serialize;
use serde_json::Value;

use super::dry_run::{Summary, summary};
use crate::commands::answer::Answer;
use crate::exit::Exit;
use crate::rotation::{DryRun, PlanStatus, RotationReport};

/// The version of every command's JSON document.
pub const VERSION: u32 = 1;

#[derive(Serialize)]
struct Versioned<T: Serialize> {
    version: u32,
    #[serde(flatten)]
    body: T,
}

#[derive(Serialize)]
struct Rotations {
    rotations: Vec<Value>,
}

#[derive(Serialize)]
struct Status<'a> {
    at: chrono::DateTime<chrono::Utc>,
    plans: &'a [PlanStatus],
}

#[derive(Serialize)]
struct DryRunDoc<'a> {
    #[serde(flatten)]
    dry_run: &'a DryRun,
    summary: Summary,
}

/// A rotation report with its outcome's duplicates left out and the outcome in words
/// added (`summary`).
pub fn rotation(report: &RotationReport) -> Value {
    let mut value = serde_json::to_value(report).unwrap_or(Value::Null);
    if let Some(outcome) = value.get_mut("outcome").and_then(Value::as_object_mut) {
        outcome.remove("regenerated");
        outcome.remove("warnings");
    }
    if let (Some(obj), Some(outcome)) = (value.as_object_mut(), report.outcome.as_ref()) {
        let summary = crate::rotation::describe::outcome(outcome, report.mode, &report.plan);
        obj.insert("summary".into(), Value::String(summary));
    }
    value
}

/// Any document, versioned and pretty, newline included.
pub fn document<T: Serialize>(body: T) -> String {
    match serde_json::to_string_pretty(&Versioned {
        version: VERSION,
        body,
    }) {
        Ok(mut text) => {
            text.push('\n');
            text
        }
        // These types serialize infallibly (string keys, no fallible custom impls).
        Err(e) => error(&format!("cannot encode the report: {e}"), Exit::Failure),
    }
}

/// An answer's document.
pub fn answer(answer: &Answer) -> String {
    match answer {
        Answer::Rotation { report } => document(rotation(report)),
        Answer::DryRun { dry_run } => document(DryRunDoc {
            dry_run,
            summary: summary(dry_run),
        }),
        Answer::Resumed { reports } | Answer::History { rotations: reports } => {
            document(Rotations {
                rotations: reports.iter().map(rotation).collect(),
            })
        }
        Answer::Status { at, plans } => document(Status { at: *at, plans }),
    }
}

/// `{version, error, exit}`.
pub fn error(message: &str, exit: Exit) -> String {
    format!(
        "{}\n",
        serde_json::json!({"version": VERSION, "error": message, "exit": exit as u8})
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_document_has_a_version_and_lists_are_objects() {
        let doc: Value = serde_json::from_str(&answer(&Answer::History {
            rotations: Vec::new(),
        }))
        .unwrap();
        assert_eq!(doc["version"], VERSION);
        assert!(doc["rotations"].as_array().unwrap().is_empty());
        // `keyflip version`'s `version` is the document's too; the package's has its
        // own name.
        let info = crate::build_info::BuildInfo::current();
        let doc: Value = serde_json::from_str(&crate::commands::version::json(&info)).unwrap();
        assert_eq!(doc["version"], VERSION);
        assert_eq!(doc["package_version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(doc["commit"], info.commit);
        let doc: Value = serde_json::from_str(&error("boom", Exit::Usage)).unwrap();
        assert_eq!(
            doc,
            serde_json::json!({"version": VERSION, "error": "boom", "exit": 2})
        );
    }
}
