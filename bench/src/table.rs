//! One benchmark result row and the table they print as.

use std::fmt::Write as _;

/// How a row's samples read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Millis,
    Seconds,
    Megabytes,
    Ratio,
    Count,
}

impl Unit {
    fn show(self, v: f64) -> String {
        match self {
            Unit::Millis => format!("{v:.0} ms"),
            Unit::Seconds => format!("{v:.1} s"),
            Unit::Megabytes => format!("{v:.1} MB"),
            Unit::Ratio => format!("{v:.2}"),
            Unit::Count => format!("{v:.0}"),
        }
    }
}

/// Whether a row meets its target.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    AtMost(f64),
    AtLeast(f64),
    /// Reported for comparison only.
    None,
}

#[derive(Clone, Debug)]
pub struct Row {
    pub what: String,
    pub target: Target,
    pub unit: Unit,
    pub samples: Vec<f64>,
    /// Calls the twin answered during the measurement, when counted.
    pub calls: Option<u64>,
    /// ARM writes among them.
    pub arm_writes: Option<u64>,
    pub note: String,
}

impl Row {
    pub fn new(what: impl Into<String>, target: Target, unit: Unit) -> Row {
        Row {
            what: what.into(),
            target,
            unit,
            samples: Vec::new(),
            calls: None,
            arm_writes: None,
            note: String::new(),
        }
    }

    pub fn sample(mut self, v: f64) -> Row {
        self.samples.push(v);
        self
    }

    pub fn samples(mut self, v: impl IntoIterator<Item = f64>) -> Row {
        self.samples.extend(v);
        self
    }

    pub fn calls(mut self, calls: u64, writes: u64) -> Row {
        self.calls = Some(calls);
        self.arm_writes = Some(writes);
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Row {
        self.note = note.into();
        self
    }

    pub fn median(&self) -> Option<f64> {
        median(&self.samples)
    }

    fn met(&self) -> &'static str {
        match (self.target, self.median()) {
            (_, None) => "-",
            (Target::None, _) => "",
            (Target::AtMost(t), Some(m)) if m <= t => "yes",
            (Target::AtLeast(t), Some(m)) if m >= t => "yes",
            _ => "NO",
        }
    }

    fn target_text(&self) -> String {
        match self.target {
            Target::AtMost(t) => format!("≤ {}", self.unit.show(t)),
            Target::AtLeast(t) => format!("≥ {}", self.unit.show(t)),
            Target::None => String::new(),
        }
    }
}

pub fn median(samples: &[f64]) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

/// The rows as a Markdown table (readable in a terminal, pasteable into the docs).
pub fn render(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| what | target | median | min–max | n | calls | ARM writes | met | note |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let (median, range) = match r.median() {
            Some(m) => {
                let min = r.samples.iter().copied().fold(f64::INFINITY, f64::min);
                let max = r.samples.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                (
                    r.unit.show(m),
                    format!("{}–{}", r.unit.show(min), r.unit.show(max)),
                )
            }
            None => ("-".to_owned(), "-".to_owned()),
        };
        let opt = |v: Option<u64>| v.map_or_else(String::new, |v| v.to_string());
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.what,
            r.target_text(),
            median,
            range,
            r.samples.len(),
            opt(r.calls),
            opt(r.arm_writes),
            r.met(),
            r.note
        );
    }
    out
}
