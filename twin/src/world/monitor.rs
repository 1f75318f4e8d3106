//! World-file sections for Azure Monitor: Log Analytics workspaces, diagnostic
//! settings on storage accounts, and simulated data-plane clients (a "forgotten"
//! consumer that keeps signing with the key it captured), with their checks.

use std::collections::{BTreeSet, HashSet};
use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;
use toml::Spanned;

use super::checks::{Failure, check_guid, check_name, fail};
use super::{KeyName, World};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogAnalyticsWorkspaceSpec {
    pub name: Spanned<String>,
    pub resource_group: Spanned<String>,
    /// The workspace ID the query API takes (`customerId`); random when absent.
    pub workspace_id: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DiagnosticSettingSpec {
    pub name: Spanned<String>,
    /// The storage account whose service the setting is on.
    pub account: Spanned<String>,
    /// `blob` (default), `file`, `queue` or `table`.
    #[serde(default = "blob")]
    pub service: Spanned<String>,
    /// The Log Analytics workspace (by name) the logs go to.
    pub workspace: Spanned<String>,
    /// Log categories: `StorageRead`, `StorageWrite`, `StorageDelete`.
    #[serde(default)]
    pub categories: Vec<Spanned<String>>,
    /// Category groups: `allLogs`, `audit`.
    #[serde(default)]
    pub category_groups: Vec<Spanned<String>>,
}

fn blob() -> Spanned<String> {
    Spanned::new(0..0, "blob".into())
}

/// The Blob operation a simulated client repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub(crate) enum ClientOperation {
    #[default]
    ListContainers,
    GetAccountInformation,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClientSpec {
    pub name: Spanned<String>,
    pub account: Spanned<String>,
    /// Which key's value the client captured when the twin started. It never
    /// learns a new one: after that key is regenerated, its requests fail.
    pub key: KeyName,
    /// Seconds between two requests, on the twin clock.
    #[serde(default = "minute")]
    pub interval_secs: f64,
    #[serde(default = "agent")]
    pub user_agent: Spanned<String>,
    /// `IP` or `IP:port` (`CallerIpAddress` includes the port; without one, a port
    /// is chosen once, as a client on one keep-alive connection has).
    pub caller_ip: Spanned<String>,
    #[serde(default)]
    pub operation: ClientOperation,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn minute() -> f64 {
    60.0
}
fn agent() -> Spanned<String> {
    Spanned::new(
        0..0,
        "azsdk-python-storage-blob/12.19.0 Python/3.9.16 (Linux-5.15.0-1057-azure-x86_64-with-glibc2.31)"
            .into(),
    )
}
fn yes() -> bool {
    true
}

pub(crate) const STORAGE_SERVICES: &[&str] = &["blob", "file", "queue", "table"];
pub(crate) const LOG_CATEGORIES: &[&str] = &["StorageRead", "StorageWrite", "StorageDelete"];
pub(crate) const CATEGORY_GROUPS: &[&str] = &["allLogs", "audit"];
/// Azure allows five diagnostic settings per resource ("Create diagnostic settings
/// in Azure Monitor").
pub(crate) const MAX_SETTINGS_PER_RESOURCE: usize = 5;

/// The longest interval of a simulated client.
const MAX_INTERVAL_SECS: f64 = 86_400.0;

/// Checks the monitor sections; `accounts` and `groups` are the names the rest of
/// the world defines (groups in lower case).
pub(super) fn check(
    w: &World,
    accounts: &BTreeSet<String>,
    groups: &HashSet<String>,
) -> Result<(), Failure> {
    let mut workspaces = HashSet::new();
    let mut ids = HashSet::new();
    for ws in &w.log_analytics_workspaces {
        check_name(&ws.name, "Log Analytics workspace", 4, 63, |c| {
            c.is_ascii_alphanumeric() || c == '-'
        })?;
        if !workspaces.insert(ws.name.get_ref().to_ascii_lowercase()) {
            return fail(
                &ws.name,
                format!(
                    "Log Analytics workspace {} is defined twice",
                    ws.name.get_ref()
                ),
            );
        }
        if !groups.contains(&ws.resource_group.get_ref().to_ascii_lowercase()) {
            return fail(
                &ws.resource_group,
                format!(
                    "no [[resource_group]] is named {}",
                    ws.resource_group.get_ref()
                ),
            );
        }
        if let Some(id) = &ws.workspace_id {
            check_guid(id, "workspace_id")?;
            if !ids.insert(id.get_ref().to_ascii_lowercase()) {
                return fail(id, "workspace ids must be unique".into());
            }
        }
    }
    let known_account = |a: &Spanned<String>| -> Result<(), Failure> {
        if accounts.contains(a.get_ref()) {
            Ok(())
        } else {
            fail(
                a,
                format!("no [[storage_account]] is named {}", a.get_ref()),
            )
        }
    };

    // (account, service) -> (setting names, (workspace, category) sinks in use).
    // (account, service) -> its setting names and the (workspace, category) sinks used.
    let mut per_resource: std::collections::HashMap<(String, String), Resource> =
        std::collections::HashMap::new();
    for d in &w.diagnostic_settings {
        check_name(&d.name, "diagnostic setting", 1, 260, |c| {
            c.is_ascii_alphanumeric() || "-_. ".contains(c)
        })?;
        known_account(&d.account)?;
        if !STORAGE_SERVICES.contains(&d.service.get_ref().as_str()) {
            return fail(
                &d.service,
                format!(
                    "service {:?} is not a storage service; expected one of {}",
                    d.service.get_ref(),
                    STORAGE_SERVICES.join(", ")
                ),
            );
        }
        if !workspaces.contains(&d.workspace.get_ref().to_ascii_lowercase()) {
            return fail(
                &d.workspace,
                format!(
                    "no [[log_analytics_workspace]] is named {}",
                    d.workspace.get_ref()
                ),
            );
        }
        if d.categories.is_empty() && d.category_groups.is_empty() {
            return fail(
                &d.name,
                "a diagnostic setting needs `categories` or `category_groups`".into(),
            );
        }
        let mut enabled = BTreeSet::new();
        for c in &d.categories {
            if !LOG_CATEGORIES.contains(&c.get_ref().as_str()) {
                return fail(
                    c,
                    format!(
                        "Category '{}' is not supported; storage services log {}",
                        c.get_ref(),
                        LOG_CATEGORIES.join(", ")
                    ),
                );
            }
            enabled.insert(c.get_ref().clone());
        }
        for g in &d.category_groups {
            match crate::monitor::group_categories(g.get_ref()) {
                Some(cats) => enabled.extend(cats.iter().map(|c| c.to_string())),
                None => {
                    return fail(
                        g,
                        format!(
                            "category group {:?} is not one of {}",
                            g.get_ref(),
                            CATEGORY_GROUPS.join(", ")
                        ),
                    );
                }
            }
        }
        let entry = per_resource
            .entry((d.account.get_ref().clone(), d.service.get_ref().clone()))
            .or_default();
        if entry
            .names
            .iter()
            .any(|n| n.eq_ignore_ascii_case(d.name.get_ref()))
        {
            return fail(
                &d.name,
                format!(
                    "diagnostic setting {} is defined twice on {} {}",
                    d.name.get_ref(),
                    d.account.get_ref(),
                    d.service.get_ref()
                ),
            );
        }
        if entry.names.len() >= MAX_SETTINGS_PER_RESOURCE {
            return fail(
                &d.name,
                format!(
                    "Azure allows at most {MAX_SETTINGS_PER_RESOURCE} diagnostic settings on one resource"
                ),
            );
        }
        let ws = d.workspace.get_ref().to_ascii_lowercase();
        for c in &enabled {
            if entry.sinks.contains(&(ws.clone(), c.clone())) {
                return fail(
                    &d.name,
                    format!(
                        "workspace {} already receives {c} from another diagnostic setting on this resource (Azure refuses a data sink reused for one category)",
                        d.workspace.get_ref()
                    ),
                );
            }
        }
        entry.names.push(d.name.get_ref().clone());
        entry
            .sinks
            .extend(enabled.into_iter().map(|c| (ws.clone(), c)));
    }

    let mut clients = HashSet::new();
    for c in &w.clients {
        check_name(&c.name, "client", 1, 64, |ch| {
            ch.is_ascii_alphanumeric() || "-_.".contains(ch)
        })?;
        if !clients.insert(c.name.get_ref().clone()) {
            return fail(
                &c.name,
                format!("client {} is defined twice", c.name.get_ref()),
            );
        }
        known_account(&c.account)?;
        if !c.interval_secs.is_finite() || !(1.0..=MAX_INTERVAL_SECS).contains(&c.interval_secs) {
            return fail(
                &c.name,
                format!(
                    "interval_secs of client {} must be from 1 to {MAX_INTERVAL_SECS} seconds, found {}",
                    c.name.get_ref(),
                    c.interval_secs
                ),
            );
        }
        let ua = c.user_agent.get_ref();
        if ua.is_empty() || ua.len() > 512 || ua.chars().any(|ch| ch.is_control()) {
            return fail(
                &c.user_agent,
                "user_agent must be 1 to 512 printable characters".into(),
            );
        }
        if parse_caller(c.caller_ip.get_ref()).is_none() {
            return fail(
                &c.caller_ip,
                format!(
                    "caller_ip must be an IP address or IP:port such as 10.20.30.40 or 10.20.30.40:50123, found {:?}",
                    c.caller_ip.get_ref()
                ),
            );
        }
    }
    Ok(())
}

#[derive(Default)]
struct Resource {
    names: Vec<String>,
    sinks: Vec<(String, String)>,
}

/// An IP address, with the port when one is given.
pub(crate) fn parse_caller(s: &str) -> Option<(IpAddr, Option<u16>)> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some((sa.ip(), Some(sa.port())));
    }
    s.parse::<IpAddr>().ok().map(|ip| (ip, None))
}

impl World {
    /// Turns a simulated client on or off before the twin starts (the admin API,
    /// `PATCH /_admin/clients/{name}`, does it while it runs). Returns whether the
    /// world has a client of that name.
    pub fn set_client_enabled(&mut self, name: &str, enabled: bool) -> bool {
        match self.clients.iter_mut().find(|c| c.name.get_ref() == name) {
            Some(c) => {
                c.enabled = enabled;
                true
            }
            None => false,
        }
    }
}
