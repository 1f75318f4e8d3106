//! From plan text to raw sections, collecting every error on the way.
//!
//! The TOML is parsed once into a spanned document. Syntax errors end the pass (what
//! follows them would be guesses). Otherwise unknown keys are reported and removed
//! ([`super::fields`]), and each top-level section, and each table of an array section,
//! is deserialized on its own, so an error in one does not hide errors in another.

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::fields::{fields_of, strip_unknown, strip_unknown_keys};
use super::raw::{
    RawDrift, RawNotify, RawRotation, RawSchedule, RawUsageGate, RawWindow, Text, top_level,
};
use crate::consumer::{Entry, SECTIONS};
use crate::diagnostic::SourceError;

/// Errors kept per file. A file of garbage has one error per line; locating each
/// costs a pass over the text, so past this many they are only counted.
pub const MAX_ERRORS: usize = 20;

/// The errors found so far in one file.
pub(crate) struct Diagnostics<'s> {
    pub file: &'s str,
    pub source: &'s str,
    pub errors: Vec<SourceError>,
    /// Errors found beyond [`MAX_ERRORS`].
    pub more: usize,
}

impl<'s> Diagnostics<'s> {
    pub fn new(file: &'s str, source: &'s str) -> Self {
        Diagnostics {
            file,
            source,
            errors: Vec::new(),
            more: 0,
        }
    }

    /// Whether another error may be kept; counts it when not.
    fn room(&mut self) -> bool {
        if self.errors.len() < MAX_ERRORS {
            true
        } else {
            self.more += 1;
            false
        }
    }

    pub fn error(
        &mut self,
        span: Range<usize>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        if self.room() {
            self.errors
                .push(SourceError::at(self.file, self.source, span, message).with_hint(hint));
        }
    }

    fn toml(&mut self, err: &toml::de::Error, hint: impl Into<String>) {
        if self.room() {
            self.errors
                .push(SourceError::from_toml(self.file, self.source, err).with_hint(hint));
        }
    }

    /// Errors in source order, the way a reader goes through the file.
    pub fn into_sorted(mut self) -> Vec<SourceError> {
        self.errors.sort_by_key(|e| (e.line, e.column));
        self.errors
    }
}

/// Every section of a plan that deserialized, in raw form.
#[derive(Default)]
pub(super) struct Sections {
    pub description: Option<Text>,
    pub storage_account: Option<Text>,
    pub schedule: Option<Spanned<RawSchedule>>,
    pub rotation: Option<Spanned<RawRotation>>,
    pub usage_gate: Option<Spanned<RawUsageGate>>,
    pub unlisted: Option<Text>,
    /// Every consumer table that is valid, with its span: the tables of each section
    /// in file order, the sections in [`SECTIONS`] order.
    pub consumers: Vec<(Entry, Range<usize>)>,
    pub notify: Vec<Spanned<RawNotify>>,
    pub drift: Option<Spanned<RawDrift>>,
    /// Whether the file has any consumer table, including ones that failed to
    /// deserialize (so "no consumers" is not reported on top of their errors).
    pub any_consumer_table: bool,
}

pub(super) fn sections(d: &mut Diagnostics<'_>) -> Option<Sections> {
    let source = d.source;
    let (root, syntax) = DeTable::parse_recoverable(source);
    if !syntax.is_empty() {
        for err in &syntax {
            d.toml(
                err,
                "fix the TOML syntax (https://toml.io); names, durations, times and URLs are quoted strings",
            );
        }
        return None;
    }
    let mut root = root.into_inner();
    strip_unknown_keys(&mut root, &top_level(), "the plan", d);

    let mut out = Sections::default();
    let mut consumers: Vec<Vec<(Entry, Range<usize>)>> =
        SECTIONS.iter().map(|_| Vec::new()).collect();
    for (key, value) in root {
        let key = key.into_inner();
        // `key_vault = []` lists no consumer; anything else is an attempt at one.
        let non_empty = value.get_ref().as_array().is_none_or(|a| !a.is_empty());
        match key.as_ref() {
            "description" => out.description = value_of(value, "description", d),
            "storage_account" => out.storage_account = value_of(value, "storage_account", d),
            "schedule" => {
                out.schedule = table_of::<RawSchedule>(value, "[schedule]", d, |table, d| {
                    let keep = table
                        .get_mut("window")
                        .map(|w| inline_table(w, "window", fields_of::<RawWindow>(), d));
                    if keep == Some(false) {
                        table.remove("window");
                    }
                })
            }
            "rotation" => out.rotation = table_of(value, "[rotation]", d, |_, _| {}),
            "usage_gate" => out.usage_gate = table_of(value, "[usage_gate]", d, |_, _| {}),
            "unlisted" => out.unlisted = value_of(value, "unlisted", d),
            "drift" => out.drift = table_of(value, "[drift]", d, |_, _| {}),
            "notify" => out.notify = tables_of(value, "notify", d),
            other => {
                // A consumer table; unknown keys were removed above.
                if let Some(i) = SECTIONS.iter().position(|s| s.key == other) {
                    out.any_consumer_table |= non_empty;
                    consumers[i] = (SECTIONS[i].parse)(value, d);
                }
            }
        }
    }
    out.consumers = consumers.into_iter().flatten().collect();
    Some(out)
}

/// A plain top-level value such as `description`.
fn value_of<T: for<'de> Deserialize<'de>>(
    value: Spanned<DeValue<'_>>,
    key: &str,
    d: &mut Diagnostics<'_>,
) -> Option<T> {
    T::deserialize(ValueDeserializer::from(value))
        .map_err(|e| d.toml(&e, format!("`{key}` takes a string; see docs/plans.md")))
        .ok()
}

/// A `[section]` table: checked for unknown keys (then `nested` checks inner tables),
/// then deserialized.
fn table_of<T: for<'de> Deserialize<'de>>(
    mut value: Spanned<DeValue<'_>>,
    section: &str,
    d: &mut Diagnostics<'_>,
    nested: impl FnOnce(&mut DeTable<'_>, &mut Diagnostics<'_>),
) -> Option<Spanned<T>> {
    let span = value.span();
    let DeValue::Table(table) = value.get_mut() else {
        d.error(
            span,
            format!("`{}` must be a table", section.trim_matches(['[', ']'])),
            format!("write {section} on its own line, followed by its keys"),
        );
        return None;
    };
    strip_unknown_keys(table, fields_of::<T>(), section, d);
    nested(table, d);
    Spanned::<T>::deserialize(ValueDeserializer::from(value))
        .map_err(|e| {
            let hint = if e.message().contains("expected a string") {
                format!("quote the value: durations, times, names, URLs and ids are strings, e.g. \"30s\"; {section} is described in docs/plans.md")
            } else {
                format!("{section} is described in docs/plans.md")
            };
            d.toml(&e, hint)
        })
        .ok()
}

/// An array of tables such as `[[key_vault]]`: each table on its own.
pub(crate) fn tables_of<T: for<'de> Deserialize<'de>>(
    value: Spanned<DeValue<'_>>,
    key: &str,
    d: &mut Diagnostics<'_>,
) -> Vec<Spanned<T>> {
    let section = format!("[[{key}]]");
    let span = value.span();
    let DeValue::Array(items) = value.into_inner() else {
        d.error(
            span,
            format!("`{key}` must be an array of tables"),
            format!("write {section} with double brackets, once per {key} entry"),
        );
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let item = item.clone();
            if !item.get_ref().is_table() {
                d.error(
                    item.span(),
                    format!("each `{key}` entry must be a table"),
                    format!("write {section} followed by its keys"),
                );
                return None;
            }
            table_of::<T>(item, &section, d, |_, _| {})
        })
        .collect()
}

/// An inline table inside a section, such as `window = { start = …, end = … }`: checked
/// for unknown keys. Returns false, after reporting it, when it is not a table at all;
/// the caller then drops it so the section's other keys still deserialize.
fn inline_table(
    value: &mut Spanned<DeValue<'_>>,
    key: &str,
    valid: &[&str],
    d: &mut Diagnostics<'_>,
) -> bool {
    let span = value.span();
    if !value.get_ref().is_table() {
        d.error(
            span,
            format!("`{key}` must be a table"),
            format!(
                "write {key} = {{ {} }}",
                valid
                    .iter()
                    .map(|f| format!("{f} = …"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        return false;
    }
    strip_unknown(value.get_mut(), valid, &format!("`{key}`"), d);
    true
}
