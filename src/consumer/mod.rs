//! Consumers of a storage key, one module per kind: [`key_vault`] (a Key Vault secret),
//! [`workspace`] (an Azure ML workspace's cached copy, renewed by `resyncKeys`),
//! [`datastore`] (an Azure ML datastore), [`databricks`] (a secret in a
//! Databricks-backed scope), [`app_service`] (an App Service or Functions setting) and
//! [`data_factory`] (a Data Factory linked service).
//!
//! A kind's module owns everything about it: its plan table (the raw TOML and its
//! validation, built with `crate::plan::fragment`), its [`ConsumerId`] form, finding
//! the plan entry behind an id (`resolve`), what it holds, writing and verifying
//! it, disabling old versions, its short description, the calls a dry run lists, and
//! what `doctor` reads and says about it. Azure's wire formats stay in
//! `crate::azure`, which the kind modules call.
//!
//! This file is the one place that lists the kinds: the enums below and the `each_*!`
//! macros that dispatch to the kind modules. The executor, the engine, dry run,
//! observation, `doctor`, drift watch and repair call these and never match on a
//! kind; the pure machine sees a consumer's [`Capabilities`], never its kind.
//!
//! Adding a kind: a module here with its id, its `Profile`, a `Target` implementing
//! `Kind` and, when it has a plan table of its own, an [`Entry`] implementing `Table`;
//! one variant in each enum below and one line in each macro; its Azure calls in
//! `crate::azure`.

pub mod app_service;
pub mod data_factory;
pub mod databricks;
pub mod datastore;
pub mod key_vault;
mod kind;
mod value;
pub mod workspace;

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use toml::Spanned;
use toml::de::DeValue;

pub use kind::Capabilities;
pub(crate) use kind::{
    Confirmation, Held, Kind, ONE_PLAN, Permission, Profile, Table, entries, last_segment,
    listed_twice, names, plan_url, resource_name,
};
pub(crate) use value::AccountAddress;
pub use value::{SecretFormat, account_key};

use crate::azure::keyvault::SecretVersion;
use crate::azure::{self, Azure, Cloud};
use crate::discover::{Finding, Scan};
use crate::doctor::assess::Ctx as DoctorCtx;
use crate::doctor::report::{Check, Holding as DoctorHolding, Service};
use crate::key::KeyName;
use crate::plan::Plan;
use crate::plan::fragment::Diagnostics;
use crate::resource_id::ResourceId;
use crate::rotation::EngineError;
use crate::rotation::machine::{ConsumerRef, Holding, MissingPermission};
use crate::rotation::observe::{Basis, Lacking};
use crate::rotation::step::Ctx;
use crate::secret::{Fingerprint, StorageKey};

/// A consumer's identity, stable across runs and journaled as text:
///
/// | kind | id |
/// |---|---|
/// | Key Vault secret | `keyvault:{vault_url}/secrets/{name}` |
/// | ML workspace (resync) | `workspace:{workspace_arm_id}` |
/// | ML datastore | `datastore:{workspace_arm_id}/datastores/{name}` |
/// | Databricks secret | `databricks:{workspace_url}#{scope}/{key}` |
/// | App Service setting | `appservice:{site_arm_id}[/slots/{slot}]/config/{appsettings\|connectionstrings}/{name}` |
/// | Data Factory linked service | `datafactory:{factory_arm_id}/linkedservices/{name}` |
///
/// URLs carry no trailing slash; ARM ids are as written in the plan. The text is an
/// API boundary (the journal stores it): `Display` writes it, `FromStr` and serde read
/// every id keyflip has written. Each kind's id is boxed, so an id is as small in the
/// machine's state as the text it replaced.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ConsumerId {
    KeyVault(Box<key_vault::SecretId>),
    Workspace(Box<workspace::WorkspaceId>),
    Datastore(Box<datastore::DatastoreId>),
    Databricks(Box<databricks::SecretId>),
    AppService(Box<app_service::SettingId>),
    DataFactory(Box<data_factory::LinkedServiceId>),
}

macro_rules! each_id {
    ($value:expr, $id:ident => $body:expr) => {
        match $value {
            ConsumerId::KeyVault($id) => $body,
            ConsumerId::Workspace($id) => $body,
            ConsumerId::Datastore($id) => $body,
            ConsumerId::Databricks($id) => $body,
            ConsumerId::AppService($id) => $body,
            ConsumerId::DataFactory($id) => $body,
        }
    };
}

impl ConsumerId {
    pub fn key_vault(vault_url: &str, secret: &str) -> ConsumerId {
        ConsumerId::KeyVault(Box::new(key_vault::SecretId::new(vault_url, secret)))
    }

    pub fn workspace(workspace: &ResourceId) -> ConsumerId {
        ConsumerId::Workspace(Box::new(workspace::WorkspaceId::new(workspace)))
    }

    pub fn datastore(workspace: &ResourceId, name: &str) -> ConsumerId {
        ConsumerId::Datastore(Box::new(datastore::DatastoreId::new(workspace, name)))
    }

    pub fn databricks(workspace_url: &str, scope: &str, key: &str) -> ConsumerId {
        ConsumerId::Databricks(Box::new(databricks::SecretId::new(
            workspace_url,
            scope,
            key,
        )))
    }

    pub fn app_setting(site: &ResourceId, slot: Option<&str>, name: &str) -> ConsumerId {
        let site = azure::web::SiteRef::new(site, slot);
        ConsumerId::AppService(Box::new(app_service::SettingId::new(
            &site,
            azure::web::Collection::AppSettings,
            name,
        )))
    }

    pub fn data_factory(factory: &ResourceId, linked_service: &str) -> ConsumerId {
        ConsumerId::DataFactory(Box::new(data_factory::LinkedServiceId::new(
            factory,
            linked_service,
        )))
    }

    pub fn kind(&self) -> ConsumerKind {
        match self {
            ConsumerId::KeyVault(_) => ConsumerKind::KeyVaultSecret,
            ConsumerId::Workspace(_) => ConsumerKind::Workspace,
            ConsumerId::Datastore(_) => ConsumerKind::Datastore,
            ConsumerId::Databricks(_) => ConsumerKind::Databricks,
            ConsumerId::AppService(_) => ConsumerKind::AppServiceSetting,
            ConsumerId::DataFactory(_) => ConsumerKind::DataFactoryLinkedService,
        }
    }

    /// The id in a few words for people (`kv-datasci/stdatasci001-key`,
    /// `mlw-datasci/training_data`); reports and the journal keep the full id.
    pub fn short(&self) -> String {
        each_id!(self, id => id.short())
    }

    /// The consumer in words: `Key Vault secret kv-datasci/stdatasci001-key`.
    pub(crate) fn describe(&self) -> String {
        format!("{} {}", self.kind(), self.short())
    }

    /// The form under which two ids name the same thing (what Azure compares
    /// case-insensitively is folded).
    pub(crate) fn same_target_key(&self) -> String {
        if self.kind().profile().case_sensitive {
            self.to_string()
        } else {
            self.to_string().to_ascii_lowercase()
        }
    }
}

impl fmt::Display for ConsumerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.kind().profile().prefix)?;
        each_id!(self, id => fmt::Display::fmt(id, f))
    }
}

/// Text that is not a consumer id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerIdError(String);

impl fmt::Display for ConsumerIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}' is not a consumer id: expected ", self.0)?;
        for (i, kind) in ConsumerKind::ALL.iter().enumerate() {
            let sep = match i {
                0 => "",
                i if i + 1 == ConsumerKind::ALL.len() => " or ",
                _ => ", ",
            };
            write!(f, "{sep}{}", kind.profile().form)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConsumerIdError {}

impl FromStr for ConsumerId {
    type Err = ConsumerIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (prefix, rest) = s
            .split_once(':')
            .ok_or_else(|| ConsumerIdError(s.to_owned()))?;
        ConsumerKind::ALL
            .iter()
            .map(|k| k.profile())
            .find(|p| p.prefix == prefix)
            .and_then(|p| (p.parse)(rest))
            .ok_or_else(|| ConsumerIdError(s.to_owned()))
    }
}

impl Serialize for ConsumerId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ConsumerId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The kinds of consumer. Journaled (`"kind"` beside a consumer's id) and shown in
/// incident reports, by these snake_case names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsumerKind {
    KeyVaultSecret,
    Datastore,
    Workspace,
    Databricks,
    AppServiceSetting,
    DataFactoryLinkedService,
}

impl ConsumerKind {
    pub const ALL: [ConsumerKind; 6] = [
        ConsumerKind::KeyVaultSecret,
        ConsumerKind::Datastore,
        ConsumerKind::Workspace,
        ConsumerKind::Databricks,
        ConsumerKind::AppServiceSetting,
        ConsumerKind::DataFactoryLinkedService,
    ];

    fn profile(self) -> &'static Profile {
        match self {
            ConsumerKind::KeyVaultSecret => &key_vault::PROFILE,
            ConsumerKind::Datastore => &datastore::PROFILE,
            ConsumerKind::Workspace => &workspace::PROFILE,
            ConsumerKind::Databricks => &databricks::PROFILE,
            ConsumerKind::AppServiceSetting => &app_service::PROFILE,
            ConsumerKind::DataFactoryLinkedService => &data_factory::PROFILE,
        }
    }

    /// What the machine and the executor need to know about consumers of this kind.
    pub(crate) fn capabilities(self) -> Capabilities {
        self.profile().capabilities
    }

    /// The kind in one or two lower-case words, for `doctor`'s tables (`key vault`).
    pub fn word(self) -> &'static str {
        self.profile().word
    }

    /// How a verified write is confirmed when the value cannot be read back (`by its
    /// timestamp (...)`); `None` when it is read back.
    pub(crate) fn confirmed_by(self) -> Option<&'static str> {
        self.profile().confirmed_by
    }

    /// Whether a consumer of this kind cannot be read back (its writes are confirmed
    /// by a timestamp or an etag): discovery ties one to an account through keyflip's
    /// own journaled writes.
    pub(crate) fn write_only(self) -> bool {
        self.profile().confirmed_by.is_some()
    }

    /// The prefix of this kind's ids, with its colon (`keyvault:`), as journal rows
    /// store them.
    pub(crate) fn id_prefix(self) -> String {
        format!("{}:", self.profile().prefix)
    }

    /// Why a consumer that is in two plans may be in only one.
    pub(crate) fn in_two_plans(self) -> &'static str {
        self.profile().in_two_plans
    }

    /// The plan error for an id listed twice (`first` is the earlier listing).
    pub(crate) fn listed_twice(self, id: &ConsumerId, first: &ConsumerId) -> String {
        (self.profile().listed_twice)(id, first)
    }
}

impl fmt::Display for ConsumerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.profile().label)
    }
}

// ---------------------------------------------------------------------------------
// Plans: the consumer tables of a plan file.

/// One consumer table of a plan, validated: `[[key_vault]]`, `[[ml_workspace]]` (a
/// workspace and its datastores), `[[databricks]]`, `[[app_service]]` or
/// `[[data_factory]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    KeyVault(key_vault::KeyVaultSecret),
    MlWorkspace(workspace::MlWorkspace),
    Databricks(databricks::DatabricksSecret),
    AppService(app_service::AppServiceSettings),
    DataFactory(data_factory::DataFactoryLinkedServices),
}

macro_rules! each_entry {
    ($value:expr, $entry:ident => $body:expr) => {
        match $value {
            Entry::KeyVault($entry) => $body,
            Entry::MlWorkspace($entry) => $body,
            Entry::Databricks($entry) => $body,
            Entry::AppService($entry) => $body,
            Entry::DataFactory($entry) => $body,
        }
    };
}

/// Reads every table of a consumer section (errors go to the diagnostics), each valid
/// one with its span.
pub(crate) type ParseTables =
    fn(Spanned<DeValue<'_>>, &mut Diagnostics<'_>) -> Vec<(Entry, Range<usize>)>;

/// A kind of consumer table: its key in the plan and how it is read.
pub(crate) struct Section {
    /// The array-of-tables key: `key_vault` for `[[key_vault]]`.
    pub key: &'static str,
    /// Deserializes and validates every table of the array.
    pub parse: ParseTables,
    /// The section's tables in a few words, for `keyflip demo`.
    pub summarize: fn(&[&Entry]) -> String,
    /// The section's tables for discovered consumers, as commented plan text.
    pub render: fn(&[&Finding]) -> String,
    /// Where its rows come in `doctor`'s report and its scopes among the permission
    /// checks: ML workspaces first, as keyflip has always listed them.
    report_order: u8,
}

/// The consumer tables, in the order a plan's consumers are listed and rotated.
pub(crate) const SECTIONS: [Section; 5] = [
    key_vault::SECTION,
    workspace::SECTION,
    databricks::SECTION,
    app_service::SECTION,
    data_factory::SECTION,
];

impl Entry {
    fn section(&self) -> &'static Section {
        match self {
            Entry::KeyVault(_) => &key_vault::SECTION,
            Entry::MlWorkspace(_) => &workspace::SECTION,
            Entry::Databricks(_) => &databricks::SECTION,
            Entry::AppService(_) => &app_service::SECTION,
            Entry::DataFactory(_) => &data_factory::SECTION,
        }
    }

    fn report_order(&self) -> u8 {
        self.section().report_order
    }

    pub(crate) fn claims(&self) -> Vec<(ConsumerId, bool)> {
        each_entry!(self, e => e.claims())
    }

    fn covers(&self, id: &ConsumerId) -> bool {
        each_entry!(self, e => e.covers(id))
    }
}

/// Every action a rotation needs on the plan's consumers, by scope: each scope once
/// (Azure compares them case-insensitively), ML workspaces first.
pub(crate) fn permissions(plan: &Plan) -> Vec<Permission> {
    let mut entries: Vec<&Entry> = plan.consumers.iter().collect();
    entries.sort_by_key(|e| e.report_order());
    let mut merged: Vec<Permission> = Vec::new();
    for p in entries
        .into_iter()
        .flat_map(|e| each_entry!(e, e => e.permissions()))
    {
        match merged
            .iter_mut()
            .find(|m| m.scope.eq_ignore_ascii_case(&p.scope))
        {
            Some(m) => {
                for action in p.actions {
                    if !m.actions.contains(&action) {
                        m.actions.push(action);
                    }
                }
            }
            None => merged.push(p),
        }
    }
    merged
}

/// The plan's consumers now, in plan order, discovered ones included.
pub(crate) async fn consumers(
    ctx: &Ctx<'_>,
    lacking: &Lacking,
    missing: &mut Vec<MissingPermission>,
) -> Result<Vec<ConsumerRef>, EngineError> {
    let mut out = Vec::new();
    for entry in &ctx.plan.consumers {
        let ids = each_entry!(entry, e => e.consumers(ctx, lacking, missing).await)?;
        out.extend(ids.into_iter().map(ConsumerRef::new));
    }
    Ok(out)
}

/// The consumers the plan names itself, in plan order (not those a discovery finds at
/// rotation time): what they hold can be read before anything else is known.
pub(crate) fn named(plan: &Plan) -> Vec<ConsumerId> {
    plan.consumers
        .iter()
        .flat_map(Entry::claims)
        .filter_map(|(id, own)| own.then_some(id))
        .collect()
}

/// The plan's id for a consumer named by its id text, when the plan lists it or finds
/// it at rotation time (a discovered datastore).
pub fn listed(plan: &Plan, id: &str) -> Option<ConsumerId> {
    let id: ConsumerId = id.parse().ok()?;
    plan.consumers.iter().any(|e| e.covers(&id)).then_some(id)
}

/// What some table of the plan finds at rotation time, in words (`datastores`).
pub(crate) fn discovers(plan: &Plan) -> Option<&'static str> {
    plan.consumers
        .iter()
        .find_map(|e| each_entry!(e, e => e.discovers()))
}

/// The calls observing the plan's consumers sends besides reading each (discoveries).
pub(crate) fn observe_calls(plan: &Plan) -> Vec<String> {
    plan.consumers
        .iter()
        .flat_map(|e| each_entry!(e, e => e.observe_calls()))
        .collect()
}

/// The plan's consumers in a few words: `2 Key Vault secrets, ML workspace mlw and its
/// account-key datastores, 1 Databricks secret`.
pub fn summary(plan: &Plan) -> String {
    SECTIONS
        .iter()
        .filter_map(|section| {
            let entries: Vec<&Entry> = plan
                .consumers
                .iter()
                .filter(|e| e.section().key == section.key)
                .collect();
            (!entries.is_empty()).then(|| (section.summarize)(&entries))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The versions of every consumer that keeps them, for drift watch.
pub async fn versions(
    azure: &Azure,
    plan: &Plan,
) -> Vec<(ConsumerId, Result<Vec<SecretVersion>, azure::Error>)> {
    let mut out = Vec::new();
    for entry in &plan.consumers {
        if let Some(found) = each_entry!(entry, e => e.versions(azure).await) {
            out.push(found);
        }
    }
    out
}

// ---------------------------------------------------------------------------------
// Discovery: each kind finds its own resources.

/// Every consumer of the scanned accounts' keys that Azure shows, kind by kind, each
/// with the account it belongs to (`None`: a read that failed, which concerns every
/// account). Key Vault goes first: the kinds that read a key through Key Vault (a Key
/// Vault-backed Databricks scope, an App Service Key Vault reference, a Data Factory
/// `AzureKeyVaultSecret`) are covered by the secrets it found.
pub(crate) async fn discover(scan: &Scan<'_>) -> Vec<(Option<usize>, Finding)> {
    let mut out = key_vault::discover::discover(scan).await;
    let (workspaces, databricks, apps, factories) = futures::join!(
        workspace::discover::discover(scan),
        databricks::discover::discover(scan),
        app_service::discover::discover(scan),
        data_factory::discover::discover(scan)
    );
    out.extend(workspaces);
    out.extend(databricks);
    out.extend(apps);
    out.extend(factories);
    out
}

/// Why a plan of these findings needs a grace of 24 hours, when it does: a consumer
/// that caches the key it reads through another (an App Service Key Vault reference)
/// keeps using the old key until it refetches it.
pub(crate) fn day_long_grace(consumers: &[Finding], other: &[Finding]) -> Option<String> {
    app_service::discover::grace(consumers, other)
}

/// The plan text of one section's findings (`section` is its table key).
pub(crate) fn render(section: &str, findings: &[&Finding]) -> String {
    SECTIONS
        .iter()
        .find(|s| s.key == section)
        .map_or_else(String::new, |s| (s.render)(findings))
}

// ---------------------------------------------------------------------------------
// Rotations: one consumer, resolved against its plan.

/// One consumer, resolved against the plan entry that says how to reach it.
#[derive(Clone, Debug)]
pub(crate) enum Target<'p> {
    KeyVault(key_vault::Target<'p>),
    Workspace(workspace::Target<'p>),
    Datastore(datastore::Target<'p>),
    Databricks(databricks::Target<'p>),
    AppService(app_service::Target<'p>),
    DataFactory(data_factory::Target<'p>),
}

macro_rules! each_target {
    ($value:expr, $target:ident => $body:expr) => {
        match $value {
            Target::KeyVault($target) => $body,
            Target::Workspace($target) => $body,
            Target::Datastore($target) => $body,
            Target::Databricks($target) => $body,
            Target::AppService($target) => $body,
            Target::DataFactory($target) => $body,
        }
    };
}

/// The plan entry behind `id`. A datastore found by discovery is not in the plan
/// file; its id carries its workspace and name, so a resumed rotation reaches it
/// without discovering again.
pub(crate) fn resolve<'p>(plan: &'p Plan, id: &ConsumerId) -> Result<Target<'p>, EngineError> {
    let found = match id {
        ConsumerId::KeyVault(id) => key_vault::resolve(plan, id).map(|t| t.map(Target::KeyVault)),
        ConsumerId::Workspace(id) => workspace::resolve(plan, id).map(|t| Ok(Target::Workspace(t))),
        ConsumerId::Datastore(id) => datastore::resolve(plan, id).map(|t| Ok(Target::Datastore(t))),
        ConsumerId::Databricks(id) => {
            databricks::resolve(plan, id).map(|t| t.map(Target::Databricks))
        }
        ConsumerId::AppService(id) => {
            app_service::resolve(plan, id).map(|t| Ok(Target::AppService(t)))
        }
        ConsumerId::DataFactory(id) => {
            data_factory::resolve(plan, id).map(|t| Ok(Target::DataFactory(t)))
        }
    };
    found.unwrap_or_else(|| {
        Err(EngineError::Plan {
            plan: plan.name.clone(),
            detail: format!(
                "{} {id} is in the journal but no longer in the plan ({}); put it back until the rotation has finished",
                id.kind(),
                plan.origin()
            ),
        })
    })
}

impl Target<'_> {
    pub(crate) async fn held(&self, ctx: &Ctx<'_>) -> Result<Held, azure::Error> {
        each_target!(self, t => t.held(ctx).await)
    }

    pub(crate) async fn observe(
        &self,
        ctx: &Ctx<'_>,
        id: &ConsumerId,
        basis: &Basis,
    ) -> Result<(Holding, Option<MissingPermission>), EngineError> {
        each_target!(self, t => t.observe(ctx, id, basis).await)
    }

    pub(crate) async fn prepare_write(&self, ctx: &Ctx<'_>) {
        each_target!(self, t => t.prepare_write(ctx).await)
    }

    pub(crate) async fn write(
        &self,
        ctx: &Ctx<'_>,
        key: KeyName,
        value: &StorageKey,
    ) -> Result<(), azure::Error> {
        each_target!(self, t => t.write(ctx, key, value).await)
    }

    pub(crate) async fn confirm_write(
        &self,
        ctx: &Ctx<'_>,
        bound_at: Option<DateTime<Utc>>,
    ) -> Option<Confirmation> {
        each_target!(self, t => t.confirm_write(ctx, bound_at).await)
    }

    pub(crate) async fn disable_versions(
        &self,
        ctx: &Ctx<'_>,
        fingerprints: &[Fingerprint],
    ) -> Result<Vec<String>, azure::Error> {
        each_target!(self, t => t.disable_versions(ctx, fingerprints).await)
    }

    pub(crate) fn write_effect(&self) -> Option<String> {
        each_target!(self, t => t.write_effect())
    }

    pub(crate) fn read_call(&self) -> String {
        each_target!(self, t => t.read_call())
    }

    pub(crate) fn write_calls(&self, key: KeyName) -> Vec<String> {
        each_target!(self, t => t.write_calls(key))
    }

    pub(crate) fn disable_calls(&self) -> Vec<String> {
        each_target!(self, t => t.disable_calls())
    }
}

// ---------------------------------------------------------------------------------
// doctor: what it reads about each consumer table, and the rows it makes of it.

/// What `doctor` read about one consumer table.
#[derive(Debug)]
pub enum Seen {
    KeyVault(key_vault::SecretSeen),
    MlWorkspace(Box<workspace::WorkspaceSeen>),
    Databricks(databricks::DatabricksSeen),
    AppService(app_service::AppServiceSeen),
    DataFactory(data_factory::DataFactorySeen),
}

impl Seen {
    /// Its rows in the report; every consumer it covers is added to `holdings`.
    pub(crate) fn checks(
        &self,
        ctx: &DoctorCtx<'_>,
        holdings: &mut Vec<DoctorHolding>,
    ) -> Vec<Check> {
        match self {
            Seen::KeyVault(s) => s.checks(ctx, holdings),
            Seen::MlWorkspace(s) => s.checks(ctx, holdings),
            Seen::Databricks(s) => s.checks(ctx, holdings),
            Seen::AppService(s) => s.checks(ctx, holdings),
            Seen::DataFactory(s) => s.checks(ctx, holdings),
        }
    }
}

/// The services the plan's consumers need tokens for, each once, in plan order.
pub(crate) fn tokens(plan: &Plan, cloud: &Cloud) -> Vec<(Service, Result<String, String>)> {
    let mut out: Vec<(Service, Result<String, String>)> = Vec::new();
    for entry in &plan.consumers {
        let (service, audience) = each_entry!(entry, e => e.token(cloud));
        if !out.iter().any(|(s, _)| *s == service) {
            out.push((service, audience));
        }
    }
    out
}

/// Reads what `doctor` needs about each consumer table, concurrently, in report
/// order. `token` says whether a service's token could be acquired.
pub(crate) async fn examine(
    azure: &Azure,
    plan: &Plan,
    token: impl Fn(Service) -> Result<(), String>,
) -> Vec<Seen> {
    let mut entries: Vec<&Entry> = plan.consumers.iter().collect();
    entries.sort_by_key(|e| e.report_order());
    let cloud = azure.cloud();
    futures::future::join_all(entries.into_iter().map(|entry| {
        let usable = each_entry!(entry, e => token(e.token(cloud).0));
        async move { each_entry!(entry, e => e.examine(azure, plan, usable).await) }
    }))
    .await
}

/// The structured part of a consumer's `doctor` row; `"check"` in JSON names the kind.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "check", rename_all = "snake_case")]
pub enum Facts {
    /// An ML workspace that is resynced: its own storage account and cached key.
    Workspace(workspace::WorkspaceFacts),
    /// The key-based datastores of a workspace on this account.
    Datastores(datastore::DatastoresFacts),
    /// A Key Vault secret and which key each version holds.
    KeyVaultSecret(key_vault::SecretFacts),
    /// A Databricks secret: the scope exists and is Databricks-backed.
    Databricks(databricks::SecretFacts),
    /// The settings of one App Service site or slot: the listed ones, unlisted ones
    /// holding the key, Key Vault references to the plan's secrets.
    AppService(app_service::AppServiceFacts),
    /// The linked services of one Data Factory.
    DataFactory(data_factory::DataFactoryFacts),
}

macro_rules! each_facts {
    ($value:expr, $facts:ident => $body:expr) => {
        match $value {
            Facts::Workspace($facts) => $body,
            Facts::Datastores($facts) => $body,
            Facts::KeyVaultSecret($facts) => $body,
            Facts::Databricks($facts) => $body,
            Facts::AppService($facts) => $body,
            Facts::DataFactory($facts) => $body,
        }
    };
}

impl Facts {
    /// The row's kind, as `"check"` in JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            Facts::Workspace(_) => "workspace",
            Facts::Datastores(_) => "datastores",
            Facts::KeyVaultSecret(_) => "key_vault_secret",
            Facts::Databricks(_) => "databricks",
            Facts::AppService(_) => "app_service",
            Facts::DataFactory(_) => "data_factory",
        }
    }

    /// The kind in the table's narrow column.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Facts::Workspace(_) => "workspace",
            Facts::Datastores(_) => "datastores",
            Facts::KeyVaultSecret(_) => "key vault",
            Facts::Databricks(_) => "databricks",
            Facts::AppService(_) => "app service",
            Facts::DataFactory(_) => "data factory",
        }
    }

    /// The lines under the row: what a person needs to act on it.
    pub(crate) fn details(&self) -> Vec<String> {
        each_facts!(self, f => f.details())
    }
}

#[cfg(test)]
mod tests;
