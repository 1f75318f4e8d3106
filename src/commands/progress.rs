//! Showing a rotation's progress, whichever process runs it: a spinner with finished
//! steps printed above it on a terminal, one plain line per event otherwise, nothing
//! for `--output json`. The lines are [`super::render::progress`]'s; the daemon
//! client feeds the events it receives into the same [`Display`].
//!
//! Steps of one batch run concurrently and finish in any order; [`Order`] holds a
//! finished step back until every step issued before it has finished, so steps are
//! printed in their plan order, the same on every run. A wait (the grace period) is
//! printed once, when it starts; the spinner counts it down.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressState, ProgressStyle};

use super::render;
use super::term::Term;
use crate::cli::Output;
use crate::rotation::machine::Mode;
use crate::rotation::{Progress, ProgressEvent};

/// How progress is drawn.
pub(crate) enum Display {
    Spinner {
        bar: ProgressBar,
        order: Mutex<Order>,
        /// The end of the wait in progress, for the countdown.
        until: Arc<Mutex<Option<DateTime<Utc>>>>,
    },
    Lines {
        out: Mutex<std::io::Stdout>,
        order: Mutex<Order>,
    },
    Silent,
}

/// Puts concurrent steps' lines in plan order. Pure: events in, lines out.
pub(crate) struct Order {
    term: Term,
    /// Steps issued or started whose result has not come yet.
    pending: BTreeSet<u32>,
    /// Finished steps' lines (`None`: nothing to print) waiting for an earlier step.
    done: BTreeMap<u32, Option<String>>,
    /// Lines shown at a step's place when it starts (a wait's), once earlier steps are
    /// out.
    early: BTreeMap<u32, String>,
    /// The wait step that started last, so its `Waiting` line takes its place.
    waiting: Option<u32>,
    /// Waits already shown by their `Waiting` line.
    shown_waits: BTreeSet<u32>,
    /// The rotation's plan and mode, from its `Started` or `Resuming` event: the last
    /// line words the outcome with them.
    rotation: Option<(String, Mode)>,
}

impl Order {
    pub fn new(term: Term) -> Order {
        Order {
            term,
            pending: BTreeSet::new(),
            done: BTreeMap::new(),
            early: BTreeMap::new(),
            waiting: None,
            shown_waits: BTreeSet::new(),
            rotation: None,
        }
    }

    /// The lines `event` releases, in order.
    pub fn event(&mut self, event: &ProgressEvent) -> Vec<String> {
        match event {
            ProgressEvent::Issued { seqs, .. } => {
                self.pending.extend(seqs.iter().copied());
                Vec::new()
            }
            ProgressEvent::StepStarted { seq, kind, .. } => {
                self.pending.insert(*seq);
                self.waiting = (kind == "wait_until").then_some(*seq);
                Vec::new()
            }
            ProgressEvent::Waiting { until, why, .. } => match self.waiting.take() {
                Some(seq) => {
                    let line = render::rotation::waiting_line(&self.term, Some(seq), *until, why);
                    self.shown_waits.insert(seq);
                    self.early.insert(seq, line);
                    self.release()
                }
                None => render::progress(event, &self.term).into_iter().collect(),
            },
            ProgressEvent::StepFinished { seq, ok, .. } => {
                self.pending.remove(seq);
                let line = if *ok && self.shown_waits.contains(seq) {
                    None
                } else {
                    render::progress(event, &self.term)
                };
                self.done.insert(*seq, line);
                self.release()
            }
            ProgressEvent::Finished { outcome, .. } if self.rotation.is_some() => {
                let mut lines = self.flush();
                if let Some((plan, mode)) = &self.rotation {
                    lines.push(render::rotation::finished_line(
                        outcome, *mode, plan, &self.term,
                    ));
                }
                lines
            }
            other => {
                match other {
                    ProgressEvent::Started { plan, mode, .. }
                    | ProgressEvent::Resuming {
                        plan,
                        mode: Some(mode),
                        ..
                    } => self.rotation = Some((plan.clone(), *mode)),
                    _ => {}
                }
                // A boundary (start, decision, end): everything before it is out.
                let mut lines = self.flush();
                lines.extend(render::progress(other, &self.term));
                lines
            }
        }
    }

    /// Every held line, in order (the rotation stopped, or a boundary).
    pub fn flush(&mut self) -> Vec<String> {
        self.pending.clear();
        self.release()
    }

    /// The held lines no pending earlier step holds back, in order.
    fn release(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let first = match (self.done.keys().next(), self.early.keys().next()) {
                (Some(a), Some(b)) => *a.min(b),
                (Some(a), None) => *a,
                (None, Some(b)) => *b,
                (None, None) => break,
            };
            if self.pending.iter().next().is_some_and(|p| *p < first) {
                break;
            }
            if let Some(line) = self.early.remove(&first) {
                out.push(line);
                continue;
            }
            if let Some(line) = self.done.remove(&first) {
                out.extend(line);
            }
        }
        out
    }
}

impl Display {
    /// Silent for JSON, else [`Display::human`].
    pub(crate) fn for_output(output: Output, term: Term) -> Display {
        match output {
            Output::Json => Display::Silent,
            Output::Human => Display::human(term),
        }
    }

    /// A spinner when stdout is a terminal, plain lines otherwise.
    pub fn human(term: Term) -> Display {
        use std::io::IsTerminal as _;
        if !std::io::stdout().is_terminal() {
            return Display::Lines {
                out: Mutex::new(std::io::stdout()),
                order: Mutex::new(Order::new(term)),
            };
        }
        let until: Arc<Mutex<Option<DateTime<Utc>>>> = Arc::new(Mutex::new(None));
        let left = until.clone();
        let style = ProgressStyle::with_template("{spinner} {msg}{left}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
            .with_key(
                "left",
                move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let at = *left.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(at) = at {
                        let _ = write!(w, ": {} left", render::age(at - Utc::now()));
                    }
                },
            );
        let bar = ProgressBar::new_spinner();
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(120));
        Display::Spinner {
            bar,
            order: Mutex::new(Order::new(term)),
            until,
        }
    }

    /// Stops the spinner, leaving the printed lines (and any still held).
    pub fn done(&self) {
        match self {
            Display::Spinner { bar, order, .. } => {
                for line in order.lock().unwrap_or_else(|e| e.into_inner()).flush() {
                    bar.println(line.trim_end());
                }
                bar.finish_and_clear();
            }
            Display::Lines { out, order } => {
                let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
                for line in order.lock().unwrap_or_else(|e| e.into_inner()).flush() {
                    let _ = write!(out, "{line}");
                }
            }
            Display::Silent => {}
        }
    }
}

impl Progress for Display {
    fn event(&self, event: &ProgressEvent) {
        match self {
            Display::Silent => {}
            Display::Lines { out, order } => {
                let lines = order.lock().unwrap_or_else(|e| e.into_inner()).event(event);
                let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
                for line in lines {
                    let _ = write!(out, "{line}");
                }
            }
            Display::Spinner { bar, order, until } => {
                match event {
                    ProgressEvent::StepStarted { step, .. } => bar.set_message(step.clone()),
                    ProgressEvent::Waiting { until: at, why, .. } => {
                        *until.lock().unwrap_or_else(|e| e.into_inner()) = Some(*at);
                        bar.set_message(why.clone());
                    }
                    ProgressEvent::StepFinished { kind, .. } if kind == "wait_until" => {
                        *until.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    }
                    _ => {}
                }
                for line in order.lock().unwrap_or_else(|e| e.into_inner()).event(event) {
                    bar.println(line.trim_end());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(seq: u32, kind: &str) -> ProgressEvent {
        ProgressEvent::StepFinished {
            rotation_id: "r".into(),
            seq,
            kind: kind.into(),
            step: format!("step {seq}"),
            ok: true,
            detail: None,
            duration: Duration::from_millis(100),
            request_id: None,
        }
    }

    fn started(seq: u32, kind: &str) -> ProgressEvent {
        ProgressEvent::StepStarted {
            rotation_id: "r".into(),
            seq,
            kind: kind.into(),
            step: format!("step {seq}"),
        }
    }

    fn seqs(lines: &[String]) -> Vec<u32> {
        lines
            .iter()
            .map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0)
            })
            .collect()
    }

    #[test]
    fn a_batch_is_printed_in_plan_order_whatever_order_it_finishes_in() {
        let mut order = Order::new(Term::PLAIN);
        let mut out = Vec::new();
        out.extend(order.event(&ProgressEvent::Issued {
            rotation_id: "r".into(),
            seqs: vec![4, 5, 6, 7],
        }));
        for s in [4, 5, 7] {
            out.extend(order.event(&started(s, "bind")));
        }
        out.extend(order.event(&finished(7, "bind")));
        out.extend(order.event(&finished(5, "bind")));
        assert!(out.is_empty(), "4 has not finished: {out:?}");
        out.extend(order.event(&finished(4, "bind")));
        assert_eq!(seqs(&out), [4, 5], "6 (deferred, not started) holds 7 back");
        out.extend(order.event(&started(6, "bind")));
        out.extend(order.event(&finished(6, "bind")));
        assert_eq!(seqs(&out), [4, 5, 6, 7]);
    }

    /// A resumed incident's last line calls the leaked key's regeneration a revoke and
    /// names the plan, as one that started in this process does; an event from a peer
    /// that predates `mode` still decodes and keeps the machine's words.
    #[test]
    fn a_resumed_incident_finishes_in_its_own_words() {
        use crate::key::KeyName;
        use crate::rotation::machine::{Outcome, Purpose, Regeneration};
        let fp = |n: u32| {
            crate::secret::Fingerprint::from_hex(&format!("{n:032x}")).expect("32 hex digits")
        };
        let finished = ProgressEvent::Finished {
            rotation_id: "r".into(),
            outcome: Outcome::Completed {
                active: KeyName::Key2,
                regenerated: vec![Regeneration {
                    key: KeyName::Key1,
                    purpose: Purpose::Retire,
                    at: chrono::DateTime::UNIX_EPOCH,
                    before: fp(1),
                    after: fp(2),
                }],
                warnings: Vec::new(),
            },
        };
        let resuming = ProgressEvent::Resuming {
            rotation_id: "r".into(),
            plan: "demo".into(),
            in_doubt: 1,
            mode: Some(Mode::Leaked {
                key: KeyName::Key1,
                revoke_first: false,
            }),
        };
        // Across the daemon's socket, as the client reads it.
        let resuming: ProgressEvent =
            serde_json::from_str(&serde_json::to_string(&resuming).unwrap()).unwrap();
        let mut order = Order::new(Term::PLAIN);
        order.event(&resuming);
        let last = order.event(&finished).concat();
        assert!(last.contains("key1 regenerated (revoke)"), "{last}");

        let older: ProgressEvent = serde_json::from_str(
            r#"{"event":"resuming","rotation_id":"r","plan":"demo","in_doubt":1}"#,
        )
        .unwrap();
        assert!(
            matches!(older, ProgressEvent::Resuming { mode: None, .. }),
            "{older:?}"
        );
        let mut order = Order::new(Term::PLAIN);
        order.event(&older);
        let last = order.event(&finished).concat();
        assert!(last.contains("key1 regenerated (retire)"), "{last}");
    }

    #[test]
    fn a_wait_is_shown_once_when_it_starts() {
        let mut order = Order::new(Term::PLAIN);
        let mut out = order.event(&started(21, "wait_until"));
        out.extend(order.event(&ProgressEvent::Waiting {
            rotation_id: "r".into(),
            until: chrono::DateTime::UNIX_EPOCH,
            why: "grace period before the old key is retired".into(),
        }));
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(
            out[0].contains(" 21 wait until 1970-01-01 00:00:00 UTC (grace period"),
            "{out:?}"
        );
        assert!(order.event(&finished(21, "wait_until")).is_empty());
        out = order.event(&started(22, "regenerate"));
        out.extend(order.event(&finished(22, "regenerate")));
        assert_eq!(seqs(&out), [22]);
    }
}
