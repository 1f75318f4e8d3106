//! From raw sections to a [`Plan`]: the top-level keys, each section's checks, and the
//! checks across sections (at least one consumer, no consumer listed twice).

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use super::parse::{Diagnostics, Sections};
use super::settings::{self, Drift};
use super::values::{arm_id, optional};
use super::{Plan, PlanSource};
use crate::consumer::{ConsumerId, SECTIONS};

pub(super) fn plan(sections: Sections, d: &mut Diagnostics<'_>) -> Option<Plan> {
    let name = plan_name(d);
    let account = match &sections.storage_account {
        Some(v) => arm_id(v, "storage_account", "Microsoft.Storage/storageAccounts", d)
            .filter(|id| account_name_ok(id.name(), v.span(), d)),
        None => {
            d.error(
                0..0,
                "the plan has no `storage_account`",
                "add storage_account = \"/subscriptions/<subscription-id>/resourceGroups/<group>/providers/Microsoft.Storage/storageAccounts/<name>\" at the top of the file",
            );
            None
        }
    };
    let account_span = sections.storage_account.as_ref().map_or(0..0, |v| v.span());

    let schedule = optional(&sections.schedule, |s| settings::schedule(s, d));
    let rotation = optional(&sections.rotation, |r| settings::rotation(r, d));
    let usage_gate = optional(&sections.usage_gate, |r| settings::usage_gate(r, d));
    let unlisted = optional(&sections.unlisted, |v| settings::unlisted(v, d));
    let drift = optional(&sections.drift, |r| settings::drift(r, d));
    let notify: Vec<_> = sections
        .notify
        .iter()
        .map(|n| settings::notify(n, d))
        .collect();

    // Every id a table names, for the duplicate check; whether each is a consumer.
    let mut claims: Vec<(ConsumerId, bool, Range<usize>)> = Vec::new();
    for (entry, span) in &sections.consumers {
        for (id, consumer) in entry.claims() {
            claims.push((id, consumer, span.clone()));
        }
    }
    let spans: Vec<(ConsumerId, Range<usize>)> = claims
        .iter()
        .map(|(id, _, span)| (id.clone(), span.clone()))
        .collect();

    if !sections.any_consumer_table {
        let tables: Vec<String> = SECTIONS.iter().map(|s| format!("[[{}]]", s.key)).collect();
        let tables = match tables.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => tables.join(""),
        };
        d.error(
            account_span.clone(),
            "the plan has no consumers",
            format!("add at least one {tables} table: a key nobody uses needs no rotation plan"),
        );
    }
    let duplicates_ok = no_duplicates(&spans, d);

    let schedule = schedule.ok()?;
    let (rotation, drift) = (rotation.ok()?, drift.ok()?);
    let (usage_gate, unlisted) = (usage_gate.ok()?, unlisted.ok()?);
    let notify: Option<Vec<_>> = notify.into_iter().collect();
    if !(duplicates_ok && sections.any_consumer_table) {
        return None;
    }
    // Only what is a consumer in its own right (not a workspace that is not resynced)
    // follows the plan's key.
    let spans = claims
        .into_iter()
        .filter(|(_, consumer, _)| *consumer)
        .map(|(id, _, span)| (id, span))
        .collect();
    Some(Plan {
        name: name?,
        description: sections.description.map(|v| v.into_inner()),
        storage_account: account?,
        schedule,
        rotation: rotation.unwrap_or_default(),
        unlisted: unlisted.unwrap_or_default(),
        usage_gate,
        consumers: sections.consumers.into_iter().map(|(e, _)| e).collect(),
        notify: notify?,
        drift: drift.unwrap_or(Drift::default()),
        source: PlanSource {
            origin: d.file.to_owned(),
            text: Arc::from(d.source),
            account_span,
            consumer_spans: spans,
        },
    })
}

/// The plan's name is its file stem; it appears in commands, logs and metric labels.
fn plan_name(d: &mut Diagnostics<'_>) -> Option<String> {
    let stem = Path::new(d.file)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ok = (1..=64).contains(&stem.len())
        && stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        return Some(stem);
    }
    d.error(
        0..0,
        format!("`{stem}` is not a valid plan name (the plan's name is its file name)"),
        "rename the file: up to 64 letters, digits, `-`, `_` or `.`, ending in .toml",
    );
    None
}

fn account_name_ok(name: &str, span: Range<usize>, d: &mut Diagnostics<'_>) -> bool {
    let ok = (3..=24).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !ok {
        d.error(
            span,
            format!("`{name}` is not a storage account name"),
            "storage account names are 3 to 24 lowercase letters and digits",
        );
    }
    ok
}

fn no_duplicates(spans: &[(ConsumerId, Range<usize>)], d: &mut Diagnostics<'_>) -> bool {
    let mut first: HashMap<String, (usize, &ConsumerId)> = HashMap::new();
    let mut ok = true;
    for (id, span) in spans {
        // The key is formatted once per consumer: at fleet scale this check runs for
        // every plan at every start and reload.
        match first.entry(id.same_target_key()) {
            std::collections::hash_map::Entry::Occupied(seen) => {
                let (first_line, first_id) = *seen.get();
                d.error(
                    span.clone(),
                    id.kind().listed_twice(id, first_id),
                    format!("it is first listed on line {first_line}; keep one of the two"),
                );
                ok = false;
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert((line_of(d.source, span.start), id));
            }
        }
    }
    ok
}

pub(super) fn line_of(source: &str, offset: usize) -> usize {
    source
        .get(..offset.min(source.len()))
        .map_or(1, |before| before.matches('\n').count() + 1)
}
