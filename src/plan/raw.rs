//! The plan file as deserialized, before validation: every value keeps its span so
//! that semantic errors can point at it, and every field is optional so that a
//! missing one is reported with the others instead of stopping deserialization.
//! Only this module knows the TOML shape of the plan's settings; each consumer
//! table's shape is its kind's (`crate::consumer`). The rest of keyflip sees `Plan`.

use serde::Deserialize;
use toml::Spanned;

use crate::consumer::SECTIONS;

pub(crate) type Text = Spanned<String>;

/// The top-level keys, in the order `docs/plans.md` documents them: the settings
/// around the consumer tables.
pub(super) fn top_level() -> Vec<&'static str> {
    let mut keys = vec![
        "description",
        "storage_account",
        "unlisted",
        "schedule",
        "rotation",
        "usage_gate",
    ];
    keys.extend(SECTIONS.iter().map(|s| s.key));
    keys.extend(["notify", "drift"]);
    keys
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSchedule {
    pub cron: Option<Text>,
    pub timezone: Option<Text>,
    pub max_key_age: Option<Text>,
    pub window: Option<Spanned<RawWindow>>,
    pub jitter: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWindow {
    pub start: Option<Text>,
    pub end: Option<Text>,
    pub days: Option<Spanned<Vec<Text>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRotation {
    pub grace: Option<Text>,
    pub verify_budget: Option<Text>,
    pub retire_attempts: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    pub webhook: Option<Text>,
    pub events: Option<Spanned<Vec<Text>>>,
    pub format: Option<Text>,
    pub secret_file: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDrift {
    pub interval: Option<Text>,
    pub repair: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUsageGate {
    pub workspace: Option<Text>,
    pub workspace_id: Option<Text>,
    pub services: Option<Spanned<Vec<Text>>>,
    pub lookback: Option<Text>,
    pub quiet_period: Option<Text>,
    pub recheck: Option<Text>,
    pub deadline: Option<Text>,
    pub ingestion_latency: Option<Text>,
}
