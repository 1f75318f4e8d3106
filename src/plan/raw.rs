//! The plan file as deserialized, before validation: every value keeps its span so
//! that semantic errors can point at it, and every field is optional so that a
//! missing one is reported with the others instead of stopping deserialization.
//! Only this module knows the TOML shape; the rest of keyflip sees `Plan`.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

pub(super) type Text = Spanned<String>;

/// The top-level keys, in the order `docs/plans.md` documents them.
pub(super) const TOP_LEVEL: &[&str] = &[
    "description",
    "storage_account",
    "schedule",
    "rotation",
    "key_vault",
    "ml_workspace",
    "databricks",
    "notify",
    "drift",
];

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
pub(super) struct RawKeyVault {
    pub vault: Option<Text>,
    pub secret: Option<Text>,
    pub format: Option<Text>,
    pub content_type: Option<Text>,
    pub expires_after_days: Option<Spanned<i64>>,
    pub tags: Option<BTreeMap<Text, Text>>,
    pub vault_id: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMlWorkspace {
    pub workspace: Option<Text>,
    pub resync: Option<Spanned<bool>>,
    pub datastores: Option<Spanned<Vec<Text>>>,
    pub discover: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDatabricks {
    pub workspace_url: Option<Text>,
    pub workspace_id: Option<Text>,
    pub scope: Option<Text>,
    pub key: Option<Text>,
    pub format: Option<Text>,
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
