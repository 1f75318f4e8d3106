//! How the CLI shows a daemon's answers: JSON as received (`--output json`), or a few
//! plain lines per plan, rotation or step. The answers hold the engine's reports as
//! JSON; this reads the fields it shows and skips what is missing, so an answer from
//! a newer daemon still prints.

use std::fmt::Write as _;

use serde_json::Value;

use super::protocol::Reply;
use crate::rotation::machine::Outcome;

/// The answer as pretty JSON: the report itself, without the protocol's wrapping.
pub fn json(reply: &Reply) -> String {
    let value = match reply {
        Reply::Status { daemon, plans } => serde_json::json!({"daemon": daemon, "plans": plans}),
        Reply::History { rotations } => Value::Array(rotations.clone()),
        Reply::Rotation { report, .. } => report.clone(),
        Reply::DryRun { dry_run, .. } => dry_run.clone(),
        Reply::Resumed { reports, .. } => Value::Array(reports.clone()),
    };
    let mut text = serde_json::to_string_pretty(&value).unwrap_or_else(|e| format!("\"{e}\""));
    text.push('\n');
    text
}

pub fn human(reply: &Reply) -> String {
    let mut out = String::new();
    match reply {
        Reply::Status { daemon, plans } => {
            let _ = writeln!(out, "daemon (pid {}): {}", daemon.pid, daemon.summary);
            for plan in plans {
                plan_status(&mut out, plan);
            }
        }
        Reply::History { rotations } => {
            if rotations.is_empty() {
                out.push_str("no rotations yet\n");
            }
            for r in rotations {
                rotation(&mut out, r, false);
            }
        }
        Reply::Rotation { report, .. } => rotation(&mut out, report, true),
        Reply::Resumed { reports, .. } => {
            if reports.is_empty() {
                out.push_str("nothing to resume\n");
            }
            for r in reports {
                rotation(&mut out, r, true);
            }
        }
        Reply::DryRun { dry_run, .. } => {
            let _ = writeln!(
                out,
                "dry run of plan {} (nothing was changed)",
                text(&dry_run["plan"])
            );
            if let Some(d) = dry_run.get("decision").filter(|d| !d.is_null()) {
                let _ = writeln!(
                    out,
                    "  consumers are on {}; they would move to {}",
                    text(&d["active"]),
                    text(&d["standby"])
                );
            }
            if let Some(reasons) = dry_run["refused"].as_array() {
                let _ = writeln!(
                    out,
                    "  refused: {}",
                    reasons.iter().map(compact).collect::<Vec<_>>().join("; ")
                );
            }
            for step in dry_run["steps"].as_array().into_iter().flatten() {
                let _ = writeln!(out, "  {:>3}. {}", step["seq"], text(&step["step"]));
                for call in step["calls"].as_array().into_iter().flatten() {
                    let _ = writeln!(out, "         {}", text(call));
                }
            }
        }
    }
    out
}

fn plan_status(out: &mut String, plan: &Value) {
    let _ = write!(out, "{}: ", text(&plan["plan"]));
    match plan["active"].as_str() {
        Some(active) => {
            let _ = write!(out, "consumers on {active}");
        }
        None => out.push_str("active key unknown"),
    }
    if let Some(next) = plan["next_due"].as_str() {
        let _ = write!(
            out,
            ", next rotation {next} ({})",
            text(&plan["due_reason"])
        );
    } else {
        let _ = write!(out, ", {}", text(&plan["due_reason"]));
    }
    out.push('\n');
    let daemon = &plan["daemon"];
    if let Some(id) = daemon["running"].as_str() {
        let _ = writeln!(out, "  running: {id}");
    }
    if let Some(last) = plan.get("last_rotation").filter(|l| !l.is_null()) {
        let _ = writeln!(
            out,
            "  last rotation {} ({}): {}",
            text(&last["rotation_id"]),
            text(&last["started_at"]),
            text(&last["summary"])
        );
    }
    if let Some(parked) = daemon.get("parked").filter(|p| !p.is_null()) {
        let _ = writeln!(
            out,
            "  NEEDS ATTENTION since {}: {} (no automatic rotations until `keyflip rotate now` or `keyflip rotate resume` succeeds)",
            text(&parked["at"]),
            text(&parked["reason"])
        );
    } else if daemon["failures"].as_u64().unwrap_or(0) > 0 {
        let _ = writeln!(
            out,
            "  {} failed cycle(s) in a row; next retry {}",
            daemon["failures"],
            text(&daemon["retry_at"])
        );
    }
    for finding in daemon["drift"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "  drift: {}", text(finding));
    }
    if let Some(error) = plan["error"].as_str() {
        let _ = writeln!(out, "  cannot read live state: {error}");
    }
}

fn rotation(out: &mut String, report: &Value, with_steps: bool) {
    let outcome = report
        .get("outcome")
        .and_then(|o| serde_json::from_value::<Outcome>(o.clone()).ok())
        .map_or_else(|| "unfinished".to_owned(), |o| o.to_string());
    let _ = writeln!(
        out,
        "{}  {}  rotation {}: {outcome}",
        text(&report["started_at"]),
        text(&report["plan"]),
        text(&report["rotation_id"])
    );
    if !with_steps {
        return;
    }
    for step in report["steps"].as_array().into_iter().flatten() {
        if step["kind"] == "finish" {
            // `Finish` records the outcome and has no result of its own.
            continue;
        }
        let ok = match step["ok"].as_bool() {
            Some(true) => "ok",
            Some(false) => "FAILED",
            None => "in doubt",
        };
        let ms = step["duration_ms"]
            .as_i64()
            .map_or_else(String::new, |ms| format!(" ({ms} ms)"));
        let _ = writeln!(
            out,
            "  {:>3}. {} — {ok}{ms}",
            step["seq"],
            text(&step["step"])
        );
    }
    if let Some(paths) = report.get("incident_report").filter(|p| !p.is_null()) {
        let _ = writeln!(out, "  incident report: {}", text(&paths["markdown"]));
    }
}

/// One line for a progress event, or `None` for events not worth a line.
pub fn progress(event: &Value) -> Option<String> {
    match event["event"].as_str()? {
        "started" => Some(format!(
            "rotation {} of plan {} started",
            text(&event["rotation_id"]),
            text(&event["plan"])
        )),
        "resuming" => Some(format!(
            "resuming rotation {} of plan {}",
            text(&event["rotation_id"]),
            text(&event["plan"])
        )),
        "decided" => Some(format!(
            "consumers are on {}; moving them to {}",
            text(&event["active"]),
            text(&event["standby"])
        )),
        "step_started" => Some(format!("  … {}", text(&event["step"]))),
        "step_finished" if event["ok"] == Value::Bool(false) => Some(format!(
            "  ✗ {}{}",
            text(&event["step"]),
            event["detail"]
                .as_str()
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        )),
        "waiting" => Some(format!(
            "  waiting until {}: {}",
            text(&event["until"]),
            text(&event["why"])
        )),
        _ => None,
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

fn compact(v: &Value) -> String {
    match v {
        Value::Object(map) => map.values().map(text).collect::<Vec<_>>().join(" "),
        other => text(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::control::protocol::DaemonInfo;

    #[test]
    fn status_lines_show_schedule_parking_and_drift() {
        let reply = Reply::Status {
            daemon: DaemonInfo {
                pid: 7,
                version: "0.1.0".into(),
                summary: "1 plan, none rotating".into(),
            },
            plans: vec![serde_json::json!({
                "plan": "demo", "active": "key1", "next_due": "2026-03-01T01:00:00Z", "due_reason": "not-yet",
                "last_rotation": null, "error": null,
                "daemon": {"running": null, "failures": 3, "retry_at": null,
                           "parked": {"at": "2026-03-01T00:00:00Z", "reason": "3 failed cycles"},
                           "drift": ["key2 regenerated outside keyflip"]}
            })],
        };
        let text = human(&reply);
        assert!(
            text.contains("demo: consumers on key1, next rotation 2026-03-01T01:00:00Z (not-yet)"),
            "{text}"
        );
        assert!(
            text.contains("NEEDS ATTENTION since 2026-03-01T00:00:00Z: 3 failed cycles"),
            "{text}"
        );
        assert!(
            text.contains("drift: key2 regenerated outside keyflip"),
            "{text}"
        );
        assert!(json(&reply).contains("\"plans\""));
    }

    #[test]
    fn progress_lines_skip_noise() {
        let e = serde_json::json!({"event": "step_finished", "ok": true, "step": "observe"});
        assert_eq!(progress(&e), None);
        let e = serde_json::json!({"event": "step_finished", "ok": false, "step": "bind x", "detail": "403"});
        assert_eq!(progress(&e).as_deref(), Some("  ✗ bind x: 403"));
    }
}
