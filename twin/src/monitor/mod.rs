//! Azure Monitor as keyflip meets it: Log Analytics workspaces, diagnostic settings
//! on storage accounts' services, the `StorageBlobLogs` rows the Blob data plane
//! writes, simulated clients that keep using a key they captured, and the Log
//! Analytics query API.
//!
//! Invariants:
//! - a Blob request becomes a row in a workspace only if, when it was served, a
//!   diagnostic setting on the account's blob service sent its category there;
//! - a row is visible to queries only from `TimeGenerated` + the ingestion delay
//!   (a setting) on the twin clock;
//! - `AuthenticationHash` names the key and the SHA-256 of its bytes, in the
//!   format Microsoft documents; a request no key authorized has none;
//! - the query API answers with Azure's shapes or Azure's error shapes, and never
//!   with a result the KQL subset is not sure of (`kql`).

pub(crate) mod clients;
pub(crate) mod diagnostics;
pub(crate) mod kql;
pub(crate) mod logs;
pub(crate) mod query;
pub(crate) mod schema;

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, Utc};

use crate::state::StorageAccount;
use crate::world::World;

pub(crate) use clients::Due;

/// The log categories each category group stands for, on storage services.
/// `audit` covers the categories that change data (writes and deletes); reads are
/// in `allLogs` only.
pub(crate) fn group_categories(group: &str) -> Option<&'static [&'static str]> {
    match group {
        "allLogs" => Some(&["StorageRead", "StorageWrite", "StorageDelete"]),
        "audit" => Some(&["StorageWrite", "StorageDelete"]),
        _ => None,
    }
}

/// One Log Analytics workspace and the rows it holds (oldest first).
#[derive(Debug, Clone)]
pub(crate) struct LaWorkspace {
    pub name: String,
    /// ARM id.
    pub id: String,
    /// The workspace ID the query API takes (`customerId`), lower case.
    pub customer_id: String,
    pub rows: VecDeque<logs::Row>,
}

/// Everything Azure Monitor holds; part of the twin's `Core`.
#[derive(Debug, Default)]
pub(crate) struct Monitor {
    /// Lower-case name → workspace.
    pub workspaces: BTreeMap<String, LaWorkspace>,
    pub settings: Vec<diagnostics::Setting>,
    pub clients: Vec<clients::Client>,
}

impl Monitor {
    pub fn workspace_by_customer_id(&self, id: &str) -> Option<&LaWorkspace> {
        self.workspaces
            .values()
            .find(|w| w.customer_id.eq_ignore_ascii_case(id))
    }

    pub fn workspace_by_arm_id(&self, id: &str) -> Option<&LaWorkspace> {
        let key = crate::rbac::scope_key(id);
        self.workspaces
            .values()
            .find(|w| crate::rbac::scope_key(&w.id) == key)
    }
}

/// Where a resource group is: its subscription, name and location.
pub(crate) type GroupOf<'a> = &'a dyn Fn(&str) -> Option<(String, String, String)>;

/// Builds the monitor state of a world (after its storage accounts).
pub(crate) fn build(
    world: &World,
    accounts: &BTreeMap<String, StorageAccount>,
    group_of: GroupOf<'_>,
    now: DateTime<Utc>,
) -> Result<Monitor, String> {
    let mut m = Monitor::default();
    for w in &world.log_analytics_workspaces {
        let (sub, group, _location) = group_of(w.resource_group.get_ref()).ok_or_else(|| {
            format!(
                "resource group {} is not defined",
                w.resource_group.get_ref()
            )
        })?;
        let name = w.name.get_ref().clone();
        m.workspaces.insert(
            name.to_ascii_lowercase(),
            LaWorkspace {
                id: crate::state::arm_id(
                    &sub,
                    &group,
                    "Microsoft.OperationalInsights/workspaces",
                    &name,
                ),
                name,
                customer_id: w
                    .workspace_id
                    .as_ref()
                    .map(|i| i.get_ref().to_ascii_lowercase())
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                rows: VecDeque::new(),
            },
        );
    }
    for d in &world.diagnostic_settings {
        let account = accounts
            .get(d.account.get_ref())
            .ok_or_else(|| format!("storage account {} is not defined", d.account.get_ref()))?;
        let ws = m
            .workspaces
            .get(&d.workspace.get_ref().to_ascii_lowercase())
            .ok_or_else(|| format!("workspace {} is not defined", d.workspace.get_ref()))?;
        m.settings
            .push(diagnostics::Setting::from_world(d, account, ws));
    }
    for c in &world.clients {
        let account = accounts
            .get(c.account.get_ref())
            .ok_or_else(|| format!("storage account {} is not defined", c.account.get_ref()))?;
        m.clients
            .push(clients::Client::from_world(c, account, now)?);
    }
    Ok(m)
}

/// Replays the simulated clients' requests that have come due on the twin clock.
/// Called before the twin handles any request, so each happens before whatever the
/// request changes; cheap when none is due (one atomic read).
pub(crate) fn tick(shared: &crate::server::Shared) {
    let now = shared.clock.now();
    if !shared.clients_due.is_due(now) {
        return;
    }
    let mut core = shared.core();
    clients::catch_up(&mut core, now, &shared.base_url);
    shared.clients_due.set(&core);
}
