//! A discovered account as a plan: TOML that `keyflip plan check` accepts, with a
//! comment on every consumer saying how it was found and which key it holds, and the
//! things that use the key but are not listed (cannot be rotated, covered by another
//! consumer, not readable) as comments with the reason.

use chrono::{DateTime, Utc};

use super::report::AccountDiscovery;
use super::{Finding, Verdict};
use crate::consumer::{self, SECTIONS};

/// A TOML basic string (quotes and escapes as TOML needs them).
pub(crate) fn quote(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// The usage gate's table for the plan, when discovery knows the workspace the
/// account's resource logs go to.
#[derive(Clone, Debug, Default)]
pub struct GateHint {
    /// The Log Analytics workspace's ARM id.
    pub workspace: String,
    /// Its workspace id (GUID), when it could be read.
    pub workspace_id: Option<String>,
    /// The services whose request logs go there (`blob`, ...).
    pub services: Vec<&'static str>,
}

/// The plan text for one account, or `None` when no consumer was found (a plan needs
/// at least one).
pub fn plan_text(
    found: &AccountDiscovery,
    at: DateTime<Utc>,
    gate: Option<&GateHint>,
) -> Option<String> {
    if found.consumers.is_empty() {
        return None;
    }
    let account: crate::resource_id::ResourceId = found.account.parse().ok()?;
    let name = account.name();
    let mut out = String::new();
    out.push_str(&format!(
        "# Rotation plan for {name}, written by `keyflip plan discover` at {}.\n",
        at.format("%Y-%m-%d %H:%M UTC")
    ));
    out.push_str("# Every consumer below was found with reads only and its value compared with the\n# account's keys by fingerprint; a table marked \"probable\" could not be read back. Check\n# each one, then run `keyflip plan check` and `keyflip doctor --plan` on this file.\n\n");
    out.push_str(&format!(
        "description = {}\n",
        quote(&format!("Discovered consumers of {name}"))
    ));
    out.push_str(&format!(
        "storage_account = {}\n\n",
        quote(account.as_str())
    ));
    match found.active() {
        Some(key) => out.push_str(&format!(
            "# Every consumer whose key is known holds {key}: a rotation moves them to {}.\n",
            key.other()
        )),
        None => out.push_str(
            "# The consumers do not all hold one key (see each comment): a rotation refuses until they do.\n",
        ),
    }
    out.push_str(
        "\n# Rotates only on `keyflip rotate now` until a schedule is set, for example:\n# [schedule]\n# cron = \"0 3 * * SUN\"\n# timezone = \"UTC\"\n\n[rotation]\n",
    );
    match consumer::day_long_grace(&found.consumers, &found.other) {
        Some(why) => out.push_str(&format!("# {why}.\ngrace = \"24h\"\n\n")),
        None => out.push_str("grace = \"1h\"\n\n"),
    }
    for section in &SECTIONS {
        let mine: Vec<&Finding> = found
            .consumers
            .iter()
            .filter(|f| f.section == section.key)
            .collect();
        if !mine.is_empty() {
            out.push_str(&consumer::render(section.key, &mine));
        }
    }
    if !found.other.is_empty() {
        out.push_str("# Found, but not listed above:\n");
        for f in &found.other {
            let why = match &f.verdict {
                Verdict::Cannot { why } => format!("keyflip cannot rotate it: {why}"),
                Verdict::Covered { by } => format!("it reads the key through {by}, listed above"),
                Verdict::Rotate | Verdict::Probable { .. } => f.how.clone(),
            };
            out.push_str(&format!("# - {}: {why}.\n", f.subject));
        }
        out.push('\n');
    }
    match gate {
        Some(g) => {
            out.push_str(&format!(
                "# The account's {} request logs go to this Log Analytics workspace: with a usage\n# gate, the old key is retired only once nobody has signed with it for the quiet period.\n",
                g.services.join(", ")
            ));
            let services: Vec<String> = g.services.iter().map(|s| quote(s)).collect();
            let table = format!(
                "[usage_gate]\nworkspace = {}\nworkspace_id = {}\nservices = [{}]\n",
                quote(&g.workspace),
                quote(g.workspace_id.as_deref().unwrap_or("WORKSPACE-GUID")),
                services.join(", ")
            );
            match &g.workspace_id {
                Some(_) => out.push_str(&table),
                None => {
                    out.push_str("# Its workspace id (GUID) could not be read: fill it in (az monitor log-analytics\n# workspace show --ids WORKSPACE --query customerId) and uncomment the table.\n");
                    for line in table.lines() {
                        out.push_str(&format!("# {line}\n"));
                    }
                }
            }
            out.push('\n');
        }
        None => out.push_str(
            "# No diagnostic setting sends this account's request logs to a Log Analytics workspace,\n# so a usage gate (`[usage_gate]`, see docs/plans.md) has nothing to read.\n",
        ),
    }
    Some(out)
}
