//! From raw sections to a [`Plan`]: the top-level keys, each section's checks, and the
//! checks across sections (at least one consumer, no consumer listed twice).

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use super::consumer::{self, ConsumerId};
use super::parse::{Diagnostics, Sections};
use super::settings::{self, Drift};
use super::values::{arm_id, optional};
use super::{Plan, PlanSource};

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
    let drift = optional(&sections.drift, |r| settings::drift(r, d));
    let notify: Vec<_> = sections
        .notify
        .iter()
        .map(|n| settings::notify(n, d))
        .collect();

    let mut spans: Vec<(ConsumerId, Range<usize>)> = Vec::new();
    let mut consumers_ok = true;
    let key_vault: Vec<_> = sections
        .key_vault
        .iter()
        .filter_map(|raw| {
            let kv = consumer::key_vault(raw, d);
            consumers_ok &= kv.is_some();
            if let Some(kv) = &kv {
                spans.push((kv.id(), raw.span()));
            }
            kv
        })
        .collect();
    let ml_workspaces: Vec<_> = sections
        .ml_workspace
        .iter()
        .filter_map(|raw| {
            let ws = consumer::ml_workspace(raw, d);
            consumers_ok &= ws.is_some();
            if let Some(ws) = &ws {
                // The workspace itself is a unique entry whether or not it is resynced.
                spans.push((ConsumerId::workspace(&ws.workspace), raw.span()));
                for id in ws.datastore_ids() {
                    spans.push((id, raw.span()));
                }
            }
            ws
        })
        .collect();
    let databricks: Vec<_> = sections
        .databricks
        .iter()
        .filter_map(|raw| {
            let db = consumer::databricks(raw, d);
            consumers_ok &= db.is_some();
            if let Some(db) = &db {
                spans.push((db.id(), raw.span()));
            }
            db
        })
        .collect();

    if !sections.any_consumer_table {
        d.error(
            account_span.clone(),
            "the plan has no consumers",
            "add at least one [[key_vault]], [[ml_workspace]] or [[databricks]] table: a key nobody uses needs no rotation plan",
        );
    }
    let duplicates_ok = no_duplicates(&spans, d);

    let schedule = schedule.ok()?;
    let (rotation, drift) = (rotation.ok()?, drift.ok()?);
    let notify: Option<Vec<_>> = notify.into_iter().collect();
    if !(consumers_ok && duplicates_ok && sections.any_consumer_table) {
        return None;
    }
    // Only the workspace entries that are resynced are consumers in their own right.
    spans.retain(|(id, _)| {
        !id.as_str().starts_with("workspace:")
            || ml_workspaces.iter().any(|ws| ws.id().as_ref() == Some(id))
    });
    Some(Plan {
        name: name?,
        description: sections.description.map(|v| v.into_inner()),
        storage_account: account?,
        schedule,
        rotation: rotation.unwrap_or_default(),
        key_vault,
        ml_workspaces,
        databricks,
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
        let line = line_of(d.source, span.start);
        match first.get(&id.same_target_key()) {
            Some((first_line, first_id)) => {
                let what = if id.as_str().starts_with("workspace:") {
                    format!("workspace `{first_id}` has two [[ml_workspace]] tables")
                } else {
                    format!("consumer `{id}` is listed twice")
                };
                d.error(
                    span.clone(),
                    what,
                    format!("it is first listed on line {first_line}; keep one of the two"),
                );
                ok = false;
            }
            None => {
                first.insert(id.same_target_key(), (line, id));
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
