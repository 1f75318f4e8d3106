//! Log set-up for the binary: human-readable lines on a terminal, one JSON object per
//! line with `--log-format json` (for journald and log shippers). `RUST_LOG` overrides
//! the level chosen with `-v`. Logs go to stderr so command output on stdout stays
//! parseable. No event anywhere in keyflip carries a key, token or connection string;
//! `tests/it` captures every log line to prove it.
//!
//! A JSON line is flat and every key appears once: `timestamp`, `level`, `target` (the
//! Rust module), `message`, then the event's fields, then the fields of the spans it
//! happened in ([`plan_span`]: `plan` and `rotation_id`, so every Azure call a rotation
//! makes names both). One name per concept: an event's `target` field (the Azure
//! resource a call addressed) is written as `resource`, a `rotation` field as
//! `rotation_id`. Values are written as the code displays them, never with Rust's
//! `Debug` formatting of a type (fields are recorded with `%`, or as numbers and
//! booleans).

use std::fmt;
use std::io::IsTerminal as _;

use serde_json::Value;
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use crate::cli::LogFormat;

/// Installs the global subscriber. Call once, early in `main`. `quiet` (interactive
/// commands, which print their own progress) starts at warnings instead of info.
pub fn init(format: LogFormat, verbose: u8, quiet: bool) {
    let default = match verbose {
        0 if quiet => "warn",
        0 => "keyflip=info,warn",
        1 => "keyflip=debug,info",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Json => builder
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines)
            .try_init(),
        LogFormat::Human => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .try_init(),
    };
    // A second init (tests calling `main`'s set-up twice) keeps the first subscriber.
    let _ = result;
}

/// The span every piece of work on one plan runs in: its events carry `plan`, and
/// `rotation_id` once [`record_rotation`] names the rotation. At error level so it
/// is enabled whatever the filter (a span's level only decides whether it exists).
pub fn plan_span(plan: &str) -> tracing::Span {
    tracing::error_span!(
        "plan",
        plan = %plan,
        rotation_id = tracing::field::Empty
    )
}

/// [`plan_span`] of a rotation already known.
pub fn rotation_span(plan: &str, rotation_id: &str) -> tracing::Span {
    let span = plan_span(plan);
    span.record("rotation_id", rotation_id);
    span
}

/// Names the rotation in the current [`plan_span`].
pub fn record_rotation(rotation_id: &str) {
    tracing::Span::current().record("rotation_id", rotation_id);
}

/// The one field name a concept has in JSON logs.
fn canonical(name: &str) -> &str {
    match name {
        "target" => "resource",
        "rotation" => "rotation_id",
        other => other,
    }
}

/// Event fields in order, as JSON values.
#[derive(Default)]
struct Fields(Vec<(String, Value)>);

impl Fields {
    fn put(&mut self, name: &str, value: Value) {
        self.0.push((canonical(name).to_owned(), value));
    }
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        // `%x` arrives here wrapped so that Debug prints its Display.
        self.put(field.name(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.put(field.name(), Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.put(field.name(), Value::from(value));
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.put(field.name(), Value::from(value));
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.put(field.name(), Value::from(value));
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.put(field.name(), Value::from(value));
    }
    fn record_error(
        &mut self,
        field: &tracing::field::Field,
        value: &(dyn std::error::Error + 'static),
    ) {
        self.put(field.name(), Value::String(value.to_string()));
    }
}

/// One flat JSON object per event, each key once.
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut entries: Vec<(String, Value)> = vec![
            (
                "timestamp".into(),
                Value::String(
                    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                ),
            ),
            ("level".into(), Value::String(meta.level().to_string())),
            ("target".into(), Value::String(meta.target().to_owned())),
        ];
        let message = fields
            .0
            .iter()
            .position(|(k, _)| k == "message")
            .map(|i| fields.0.remove(i).1);
        if let Some(message) = message {
            entries.push(("message".into(), message));
        }
        entries.extend(fields.0);
        // The spans' fields, innermost first: an event's own field wins.
        if let Some(scope) = ctx.event_scope() {
            for span in scope {
                let ext = span.extensions();
                let Some(formatted) = ext.get::<FormattedFields<N>>() else {
                    continue;
                };
                if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(formatted) {
                    for (k, v) in map {
                        entries.push((canonical(&k).to_owned(), v));
                    }
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        let mut line = String::from("{");
        for (k, v) in entries {
            if !seen.insert(k.clone()) {
                continue;
            }
            if line.len() > 1 {
                line.push(',');
            }
            line.push_str(&Value::String(k.clone()).to_string());
            line.push(':');
            line.push_str(&v.to_string());
        }
        line.push('}');
        writeln!(writer, "{line}")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    #[test]
    fn json_lines_are_flat_with_each_key_once_and_the_span_s_plan_and_rotation() {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(buffer.clone())
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = plan_span("demo");
            let _in = span.enter();
            record_rotation("r-1");
            tracing::info!(
                operation = "storage.listKeys",
                target = "/subscriptions/s/x",
                status = 200u16,
                "azure call answered"
            );
            tracing::warn!(rotation = "r-1", plan = "demo", "twice on purpose");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["target"], "keyflip::logging::tests", "{text}");
        assert_eq!(lines[0]["resource"], "/subscriptions/s/x");
        assert_eq!(lines[0]["plan"], "demo");
        assert_eq!(lines[0]["rotation_id"], "r-1");
        assert_eq!(lines[0]["status"], 200);
        assert_eq!(lines[0]["message"], "azure call answered");
        for line in text.lines() {
            for key in ["\"plan\"", "\"rotation_id\"", "\"target\""] {
                assert!(line.matches(key).count() <= 1, "{key} twice: {line}");
            }
        }
    }
}
