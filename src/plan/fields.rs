//! Unknown keys and "did you mean": every misspelled key in a plan is reported, with the
//! closest valid key and the list of valid ones, before the table is deserialized.
//!
//! serde's `deny_unknown_fields` stops at the first unknown key of a table. This pass
//! walks the parsed document first, reports *every* unknown key with a hint, and
//! removes them, so deserialization can go on to find the other errors in the same
//! table. The valid keys come from the raw structs themselves ([`fields_of`]), so the
//! list can never drift from what the deserializer accepts.

use serde::de::{self, Deserialize, Visitor};
use toml::de::{DeTable, DeValue};

use super::parse::Diagnostics;

/// The field names a `#[derive(Deserialize)]` struct accepts, asked from serde: the
/// derive passes them to `deserialize_struct`, where this probe records them.
pub(super) fn fields_of<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

struct Probe<'a>(&'a mut &'static [&'static str]);

impl<'de> de::Deserializer<'de> for Probe<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("field probe"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("field probe"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
        enum identifier ignored_any
    }
}

/// Reports and removes every key of `value` (when it is a table) not in `valid`.
/// `section` names the table for the message, e.g. "[schedule]".
pub(super) fn strip_unknown(
    value: &mut DeValue<'_>,
    valid: &[&str],
    section: &str,
    diagnostics: &mut Diagnostics<'_>,
) {
    let DeValue::Table(table) = value else {
        return;
    };
    strip_unknown_keys(table, valid, section, diagnostics);
}

pub(super) fn strip_unknown_keys(
    table: &mut DeTable<'_>,
    valid: &[&str],
    section: &str,
    diagnostics: &mut Diagnostics<'_>,
) {
    let unknown: Vec<(String, std::ops::Range<usize>)> = table
        .keys()
        .filter(|key| !valid.contains(&key.get_ref().as_ref()))
        .map(|key| (key.get_ref().to_string(), key.span()))
        .collect();
    for (name, span) in unknown {
        let hint = match closest(&name, valid) {
            Some(guess) => format!("did you mean `{guess}`? Valid keys: {}", valid.join(", ")),
            None => format!("valid keys: {}", valid.join(", ")),
        };
        diagnostics.error(span, format!("unknown key `{name}` in {section}"), hint);
        table.remove(name.as_str());
    }
}

/// The candidate closest to `word`, if it is close enough to be a likely misspelling:
/// equal ignoring case, `_` and `-`, or within a small edit distance.
pub(super) fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let folded = fold(word);
    if let Some(same) = candidates.iter().find(|c| fold(c) == folded) {
        return Some(same);
    }
    let limit = if word.chars().count() <= 4 { 1 } else { 2 };
    candidates
        .iter()
        .map(|c| (edit_distance(&folded, &fold(c)), *c))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

fn fold(word: &str) -> String {
    word.chars()
        .filter(|c| !matches!(c, '_' | '-'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Levenshtein distance with adjacent transpositions counted as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut prev2: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut row = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            row[j] = (prev[j] + 1).min(row[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                row[j] = row[j].min(prev2[j - 2] + 1);
            }
        }
        prev2 = std::mem::replace(&mut prev, row);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::super::raw::{RawSchedule, RawWindow};
    use super::*;

    #[test]
    fn field_lists_come_from_the_structs() {
        assert_eq!(fields_of::<RawWindow>(), ["start", "end", "days"]);
        assert_eq!(
            fields_of::<RawSchedule>(),
            ["cron", "timezone", "max_key_age", "window", "jitter"]
        );
    }

    #[test]
    fn suggests_close_spellings_only() {
        let valid = ["cron", "timezone", "max_key_age", "window", "jitter"];
        assert_eq!(closest("crom", &valid), Some("cron"));
        assert_eq!(closest("time_zone", &valid), Some("timezone"));
        assert_eq!(closest("maxKeyAge", &valid), Some("max_key_age"));
        assert_eq!(closest("jtiter", &valid), Some("jitter"));
        assert_eq!(closest("windows", &valid), Some("window"));
        assert_eq!(closest("grace", &valid), None);
        // A consumer table's key, among the plan's real top-level keys.
        assert_eq!(
            closest("keyvault", &super::super::raw::top_level()),
            Some("key_vault")
        );
    }

    #[test]
    fn edit_distance_counts_transpositions_once() {
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(edit_distance("abc", "acb"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
