//! An Azure ML workspace (`[[ml_workspace]]`): the table names the workspace and which
//! of its datastores follow the key ([`super::datastore`]); with `resync = true` (the
//! default) the workspace's own cached copy of its storage account's key is a
//! consumer too.
//!
//! A workspace is bound with `resyncKeys`: Azure, not keyflip, picks the key it takes,
//! the account's newest as far as keyflip knows, and a resync cannot be steered back.
//! So a route must make the key consumers move to the newest before a workspace
//! moves ([`Capabilities::takes_newest_key_on_resync`]), and its bind goes last in its
//! batch ([`Capabilities::bind_last`]). What it holds is the `userStorageKey` of
//! `listKeys`; one that reports none holds neither key. Id: `workspace:{arm_id}`.

pub(crate) mod discover;
mod doctor;

use std::fmt;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;
use toml::de::DeValue;

pub use doctor::{WorkspaceFacts, WorkspaceSeen};

use super::datastore::{self, Datastores};
use super::{
    Capabilities, ConsumerId, Entry, Held, Kind, Permission, Profile, Section, Seen, Table, entries,
};
use crate::azure::roles::{Action, actions};
use crate::azure::{self, Azure, Cloud};
use crate::doctor::report::{Resource, Service};
use crate::key::KeyName;
use crate::plan::Plan;
use crate::plan::fragment::{Diagnostics, Text, arm_id, required};
use crate::resource_id::ResourceId;
use crate::rotation::EngineError;
use crate::rotation::machine::{Holding, MissingPermission};
use crate::rotation::observe::Lacking;
use crate::rotation::step::Ctx;
use crate::secret::StorageKey;

pub(super) const PROFILE: Profile = Profile {
    prefix: "workspace",
    form: "workspace:{arm_id}",
    label: "ML workspace",
    word: "workspace",
    capabilities: Capabilities {
        takes_newest_key_on_resync: true,
        bind_last: true,
        ..Capabilities::NONE
    },
    case_sensitive: false,
    parse: |rest| WorkspaceId::parse(rest).map(|id| ConsumerId::Workspace(Box::new(id))),
    listed_twice: |_, first| format!("workspace `{first}` has two [[ml_workspace]] tables"),
    in_two_plans: "only the plan for the workspace's own storage account sets resync = true",
    confirmed_by: None,
};

pub(super) const SECTION: Section = Section {
    key: "ml_workspace",
    parse: parse_tables,
    summarize,
    render: discover::render,
    report_order: 0,
};

/// `doctor`'s name for a workspace as a permission scope.
pub const RESOURCE: Resource = Resource {
    name: "ml_workspace",
    label: "ML workspace",
};

/// The id of a workspace: its ARM id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WorkspaceId(ResourceId);

impl WorkspaceId {
    pub fn new(workspace: &ResourceId) -> WorkspaceId {
        WorkspaceId(workspace.clone())
    }

    fn parse(rest: &str) -> Option<WorkspaceId> {
        rest.parse().ok().map(WorkspaceId)
    }

    pub(super) fn short(&self) -> String {
        self.0.name().to_owned()
    }
}

impl fmt::Display for WorkspaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An `[[ml_workspace]]` table: an Azure ML workspace that uses the account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MlWorkspace {
    pub workspace: ResourceId,
    /// Call `resyncKeys` after the datastores are updated, so the workspace's cached
    /// copy follows. Set on the plan for the workspace's own storage account.
    pub resync: bool,
    pub datastores: Datastores,
}

impl MlWorkspace {
    /// The workspace's own id as a consumer: present when it is resynced.
    pub fn id(&self) -> Option<ConsumerId> {
        self.resync.then(|| ConsumerId::workspace(&self.workspace))
    }

    /// Ids of the named datastores (discovered ones get theirs at rotation time).
    pub fn datastore_ids(&self) -> Vec<ConsumerId> {
        match &self.datastores {
            Datastores::Named(names) => names
                .iter()
                .map(|n| ConsumerId::datastore(&self.workspace, n))
                .collect(),
            Datastores::Discover => Vec::new(),
        }
    }
}

/// The table as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMlWorkspace {
    workspace: Option<Text>,
    resync: Option<Spanned<bool>>,
    datastores: Option<Spanned<Vec<Text>>>,
    discover: Option<Spanned<bool>>,
}

fn parse_tables(
    value: Spanned<DeValue<'_>>,
    d: &mut Diagnostics<'_>,
) -> Vec<(Entry, Range<usize>)> {
    entries::<RawMlWorkspace>(value, SECTION.key, d, |raw, d| {
        table(raw, d).map(Entry::MlWorkspace)
    })
}

fn table(raw: &Spanned<RawMlWorkspace>, d: &mut Diagnostics<'_>) -> Option<MlWorkspace> {
    let (span, r) = (raw.span(), raw.get_ref());
    let workspace = required(
        &r.workspace,
        "workspace",
        "[[ml_workspace]]",
        &span,
        "\"/subscriptions/…/providers/Microsoft.MachineLearningServices/workspaces/<name>\"",
        d,
    )
    .and_then(|v| {
        arm_id(
            v,
            "workspace",
            "Microsoft.MachineLearningServices/workspaces",
            d,
        )
    });
    let datastores = datastore::selection(&span, r.datastores.as_ref(), r.discover.as_ref(), d);
    Some(MlWorkspace {
        workspace: workspace?,
        resync: r.resync.as_ref().is_none_or(|v| *v.get_ref()),
        datastores: datastores?,
    })
}

fn summarize(entries: &[&Entry]) -> String {
    entries
        .iter()
        .filter_map(|e| match e {
            Entry::MlWorkspace(ws) => Some(format!(
                "ML workspace {} and {}",
                ws.workspace.name(),
                ws.datastores.summary()
            )),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl Table for MlWorkspace {
    /// The workspace itself is named whether or not it is resynced, so one workspace
    /// cannot have two tables.
    fn claims(&self) -> Vec<(ConsumerId, bool)> {
        let mut claims = vec![(ConsumerId::workspace(&self.workspace), self.resync)];
        claims.extend(self.datastore_ids().into_iter().map(|id| (id, true)));
        claims
    }

    fn permissions(&self) -> Vec<Permission> {
        let mut needed = Vec::new();
        if self.resync {
            needed.extend([
                actions::ML_WORKSPACE_LIST_KEYS,
                actions::ML_WORKSPACE_RESYNC_KEYS,
            ]);
        }
        needed.extend(self.datastores.permissions());
        if needed.is_empty() {
            return Vec::new();
        }
        vec![Permission {
            scope: self.workspace.to_string(),
            resource: RESOURCE,
            actions: needed,
        }]
    }

    /// The workspace (when resynced), then its datastores: named, or discovered and
    /// sorted by name.
    async fn consumers(
        &self,
        ctx: &Ctx<'_>,
        lacking: &Lacking,
        missing: &mut Vec<MissingPermission>,
    ) -> Result<Vec<ConsumerId>, EngineError> {
        let mut out: Vec<ConsumerId> = self.id().into_iter().collect();
        let names = datastore::names(ctx, self, lacking, missing).await?;
        out.extend(
            names
                .iter()
                .map(|name| ConsumerId::datastore(&self.workspace, name)),
        );
        Ok(out)
    }

    fn covers(&self, id: &ConsumerId) -> bool {
        match id {
            ConsumerId::Workspace(_) => self.id().as_ref() == Some(id),
            ConsumerId::Datastore(ds) => datastore::covers(self, ds),
            _ => false,
        }
    }

    fn discovers(&self) -> Option<&'static str> {
        (self.datastores == Datastores::Discover).then_some("datastores")
    }

    fn observe_calls(&self) -> Vec<String> {
        datastore::observe_calls(self)
    }

    fn token(&self, cloud: &Cloud) -> (Service, Result<String, String>) {
        (Service::ARM, Ok(cloud.arm_audience.clone()))
    }

    async fn examine(&self, azure: &Azure, plan: &Plan, token: Result<(), String>) -> Seen {
        Seen::MlWorkspace(Box::new(doctor::read(azure, plan, self, token).await))
    }
}

/// A workspace of the plan.
#[derive(Clone, Debug)]
pub(crate) struct Target<'p> {
    workspace: &'p ResourceId,
}

pub(super) fn resolve<'p>(plan: &'p Plan, id: &WorkspaceId) -> Option<Target<'p>> {
    plan.consumers.iter().find_map(|e| match e {
        Entry::MlWorkspace(ws) if ws.workspace == id.0 => Some(Target {
            workspace: &ws.workspace,
        }),
        _ => None,
    })
}

impl Kind for Target<'_> {
    fn read_permission(&self) -> (String, Action) {
        (self.workspace.to_string(), actions::ML_WORKSPACE_LIST_KEYS)
    }

    async fn held(&self, ctx: &Ctx<'_>) -> Result<Held, azure::Error> {
        let keys = ctx.azure().ml_workspace_keys(self.workspace).await?;
        Ok(match keys.user_storage_key {
            Some(key) => Held::Key(ctx.fingerprint(&key)),
            None => Held::NoKey("the workspace reports no cached storage key".into()),
        })
    }

    /// A workspace takes its key from Azure: one without a cached key simply holds
    /// neither, and a resync gives it one.
    fn holding_without_key(&self, _why: String) -> Holding {
        Holding::Neither
    }

    async fn write(
        &self,
        ctx: &Ctx<'_>,
        _key: KeyName,
        _value: &StorageKey,
    ) -> Result<(), azure::Error> {
        ctx.azure()
            .resync_ml_workspace_keys(self.workspace, ctx.resync_deadline())
            .await?;
        Ok(())
    }

    fn read_call(&self) -> String {
        format!("POST {}/listKeys", self.workspace)
    }

    fn write_calls(&self, _key: KeyName) -> Vec<String> {
        vec![format!(
            "POST {}/resyncKeys (then poll its Location until done)",
            self.workspace
        )]
    }
}
