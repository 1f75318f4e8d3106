//! Showing a rotation's progress: a spinner with finished steps printed above it on a
//! terminal, one plain line per event otherwise, nothing for `--output json`.

use std::io::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::rotation::machine::Mode;
use crate::rotation::{Progress, ProgressEvent};

/// How progress is drawn.
pub enum Display {
    Spinner(ProgressBar),
    Lines(Mutex<std::io::Stdout>),
    Silent,
}

fn mode_text(mode: Mode) -> String {
    match mode {
        Mode::Scheduled => "safe swap".to_owned(),
        Mode::Leaked { key, revoke_first } => format!(
            "incident: {key} leaked{}",
            if revoke_first { ", revoke first" } else { "" }
        ),
        Mode::LeakedBoth => "incident: both keys leaked".to_owned(),
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// One event as a line of text; `None` for events only the spinner shows.
pub fn line(event: &ProgressEvent) -> Option<String> {
    Some(match event {
        ProgressEvent::Started {
            rotation_id,
            plan,
            mode,
        } => format!(
            "rotation {rotation_id} of plan {plan} started ({})",
            mode_text(*mode)
        ),
        ProgressEvent::Resuming {
            rotation_id,
            plan,
            in_doubt,
        } => format!(
            "resuming rotation {rotation_id} of plan {plan} ({in_doubt} step(s) in doubt, reconciled with Azure first)"
        ),
        ProgressEvent::Decided {
            active, standby, ..
        } => format!("decided: consumers hold {active}; {standby} is the standby"),
        ProgressEvent::StepStarted { .. } => return None,
        ProgressEvent::StepFinished {
            seq,
            step,
            ok,
            detail,
            duration,
            request_id,
            ..
        } => {
            let mut text = format!(
                "  {} {seq:>2} {step} ({})",
                if *ok { "ok  " } else { "FAIL" },
                seconds(*duration)
            );
            if let Some(d) = detail {
                text.push_str(&format!(": {d}"));
            }
            if let Some(id) = request_id {
                text.push_str(&format!(" [request id {id}]"));
            }
            text
        }
        ProgressEvent::Waiting { until, why, .. } => {
            format!(
                "  wait until {} ({why})",
                until.format("%Y-%m-%d %H:%M:%S UTC")
            )
        }
        ProgressEvent::Finished { outcome, .. } => format!("finished: {outcome}"),
    })
}

impl Display {
    /// A spinner when stdout is a terminal, plain lines otherwise.
    pub fn human() -> Display {
        use std::io::IsTerminal as _;
        if std::io::stdout().is_terminal() {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            Display::Spinner(bar)
        } else {
            Display::Lines(Mutex::new(std::io::stdout()))
        }
    }

    /// Stops the spinner, leaving the printed lines.
    pub fn done(&self) {
        if let Display::Spinner(bar) = self {
            bar.finish_and_clear();
        }
    }
}

impl Progress for Display {
    fn event(&self, event: &ProgressEvent) {
        match self {
            Display::Silent => {}
            Display::Lines(out) => {
                if let Some(text) = line(event) {
                    let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
                    let _ = writeln!(out, "{text}");
                }
            }
            Display::Spinner(bar) => {
                if let ProgressEvent::StepStarted { step, .. } = event {
                    bar.set_message(step.clone());
                }
                if let Some(text) = line(event) {
                    bar.println(text);
                }
            }
        }
    }
}
