//! Showing a rotation's progress, whichever process runs it: a spinner with finished
//! steps printed above it on a terminal, one plain line per event otherwise, nothing
//! for `--output json`. The lines are [`super::render::progress`]'s; the daemon
//! client feeds the events it receives into the same [`Display`].

use std::io::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::render;
use crate::cli::Output;
use crate::rotation::{Progress, ProgressEvent};

/// How progress is drawn.
pub enum Display {
    Spinner(ProgressBar),
    Lines(Mutex<std::io::Stdout>),
    Silent,
}

impl Display {
    /// Silent for JSON, else [`Display::human`].
    pub fn for_output(output: Output) -> Display {
        match output {
            Output::Json => Display::Silent,
            Output::Human => Display::human(),
        }
    }

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
                if let Some(text) = render::progress(event) {
                    let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
                    let _ = writeln!(out, "{text}");
                }
            }
            Display::Spinner(bar) => {
                if let ProgressEvent::StepStarted { step, .. } = event {
                    bar.set_message(step.clone());
                }
                if let Some(text) = render::progress(event) {
                    bar.println(text);
                }
            }
        }
    }
}
