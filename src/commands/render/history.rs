//! `keyflip history` for people: each rotation, newest first, with its outcome and
//! every step (`?` for a step whose result was never recorded: in doubt).

use std::fmt::Write as _;

use super::rotation::step_line;
use super::{Term, age, mode_text, shorten, time};
use crate::commands::term::Mark;
use crate::rotation::machine::ConsumerRef;
use crate::rotation::{RotationReport, describe};

pub fn history(reports: &[RotationReport], term: &Term) -> String {
    let mut out = String::new();
    if reports.is_empty() {
        let _ = writeln!(out, "No rotations recorded.");
    }
    for r in reports {
        let refs: Vec<&ConsumerRef> = r.consumers.iter().map(|c| &c.consumer).collect();
        let outcome = r.outcome.as_ref().map_or_else(
            || "unfinished".to_owned(),
            |o| describe::outcome(o, r.mode, &r.plan),
        );
        out.push_str(&term.wrap(
            "",
            "  ",
            &format!("{}  plan {}  {}", r.rotation_id, r.plan, mode_text(r.mode)),
        ));
        out.push_str(&term.wrap(
            "  ",
            "    ",
            &format!(
                "started {}{}",
                time(r.started_at),
                r.finished_at
                    .map(|f| format!(", took {}", age(f - r.started_at)))
                    .unwrap_or_default()
            ),
        ));
        out.push_str(&term.wrap("  ", "    ", &shorten(outcome, &refs)));
        super::rotation::origin_lines(&mut out, r, term);
        for s in &r.steps {
            let mark = match s.ok {
                Some(true) => Mark::Ok,
                Some(false) => Mark::Fail,
                None => Mark::InDoubt,
            };
            let took = s.duration_ms.map_or_else(
                || "in doubt".to_owned(),
                |ms| format!("{:.1}s", ms as f64 / 1000.0),
            );
            let mut text = format!("{} ({took})", describe::step_in(&s.command, r.mode));
            if let Some(reason) = s.result.as_ref().and_then(|r| r.failure()) {
                let _ = write!(text, ": {}", shorten(reason, &refs));
            }
            out.push_str(&step_line(term, mark, Some(s.seq), &text));
        }
        out.push('\n');
    }
    out
}
