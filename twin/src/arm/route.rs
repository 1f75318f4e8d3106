//! ARM routing: which operation a path and method name, and which api-versions each
//! resource provider accepts.
//!
//! Literal segments match case-insensitively and empty segments are ignored, so
//! `resourcegroups`/`resourceGroups`, `listKeys`/`listkeys` and the `//` of an empty
//! `parentResourcePath` all route. Names keep the case they were sent in.

use axum::http::Method;

use super::inventory::{self, ListKind};
use super::{authz, datafactory, datastore, diagnostics, error, meta, storage, web, workspace};
use crate::auth::Caller;
use crate::ops::Op;
use crate::server::Shared;
use crate::server::dispatch::Flags;
use crate::wire::{Req, Resp};

#[derive(Debug, Clone)]
pub(crate) enum Route {
    Metadata,
    Subscriptions,
    Subscription(String),
    Tenants,
    Permissions {
        scope: String,
    },
    RoleDefinition {
        scope: String,
        id: String,
    },
    Storage {
        sub: String,
        rg: String,
        name: String,
        action: StorageAction,
    },
    Workspace {
        sub: String,
        rg: String,
        name: String,
        action: WorkspaceAction,
    },
    Datastore {
        sub: String,
        rg: String,
        ws: String,
        action: DatastoreAction,
    },
    Poll {
        sub: String,
        id: String,
    },
    Web(web::WebRoute),
    DataFactory(datafactory::DfRoute),
    Diagnostics(diagnostics::DiagRoute),
    /// A subscription's resources of one type.
    List {
        sub: String,
        kind: ListKind,
    },
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum StorageAction {
    Get,
    Patch,
    ListKeys,
    Regenerate,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum WorkspaceAction {
    Get,
    ListKeys,
    Resync,
}

#[derive(Debug, Clone)]
pub(crate) enum DatastoreAction {
    List,
    Get(String),
    Put(String),
    ListSecrets(String),
}

/// Which api-version range applies.
#[derive(Debug, Clone, Copy)]
enum Family {
    Metadata,
    Resources,
    Authorization,
    Storage,
    MachineLearning,
    Web,
    DataFactory,
    Insights,
    KeyVault,
}

impl Family {
    /// Inclusive range of accepted versions (date part), and a description.
    fn range(self) -> (&'static str, &'static str) {
        match self {
            Family::Metadata => ("2015-01-01", "2026-12-31"),
            Family::Resources => ("2016-06-01", "2026-12-31"),
            Family::Authorization => ("2015-07-01", "2026-12-31"),
            Family::Storage => ("2016-01-01", "2026-12-31"),
            Family::MachineLearning => ("2018-03-01", "2026-12-31"),
            Family::Web => ("2016-03-01", "2026-12-31"),
            Family::DataFactory => ("2017-09-01", "2026-12-31"),
            Family::Insights => ("2015-07-01", "2026-12-31"),
            Family::KeyVault => ("2015-06-01", "2026-12-31"),
        }
    }
}

impl Route {
    pub fn op(&self) -> Op {
        match self {
            Route::Metadata => Op::ArmMetadata,
            Route::Subscriptions | Route::Subscription(_) => Op::ArmSubscriptions,
            Route::Tenants => Op::ArmTenants,
            Route::Permissions { .. } => Op::AuthzPermissions,
            Route::RoleDefinition { .. } => Op::AuthzRoleDefinition,
            Route::Storage { action, .. } => match action {
                StorageAction::Get => Op::StorageGet,
                StorageAction::Patch => Op::StoragePatch,
                StorageAction::ListKeys => Op::StorageListKeys,
                StorageAction::Regenerate => Op::StorageRegenerateKey,
            },
            Route::Workspace { action, .. } => match action {
                WorkspaceAction::Get => Op::MlWorkspaceGet,
                WorkspaceAction::ListKeys => Op::MlWorkspaceListKeys,
                WorkspaceAction::Resync => Op::MlWorkspaceResyncKeys,
            },
            Route::Datastore { action, .. } => match action {
                DatastoreAction::List => Op::MlDatastoreList,
                DatastoreAction::Get(_) => Op::MlDatastoreGet,
                DatastoreAction::Put(_) => Op::MlDatastorePut,
                DatastoreAction::ListSecrets(_) => Op::MlDatastoreListSecrets,
            },
            Route::Poll { .. } => Op::MlOperationPoll,
            Route::Web(r) => r.op(),
            Route::DataFactory(r) => r.op(),
            Route::Diagnostics(d) => d.op(),
            Route::List { kind, .. } => match kind {
                ListKind::StorageAccounts => Op::StorageList,
                ListKind::MlWorkspaces => Op::MlWorkspaceList,
                ListKind::Vaults => Op::KeyVaultVaultList,
                ListKind::Sites => Op::WebSiteList,
                ListKind::Factories => Op::DataFactoryList,
            },
        }
    }

    fn family(&self) -> Family {
        match self {
            Route::Metadata => Family::Metadata,
            Route::Subscriptions | Route::Subscription(_) | Route::Tenants => Family::Resources,
            Route::Permissions { .. } | Route::RoleDefinition { .. } => Family::Authorization,
            Route::Storage { .. } => Family::Storage,
            Route::Workspace { .. } | Route::Datastore { .. } | Route::Poll { .. } => {
                Family::MachineLearning
            }
            Route::Web(_) => Family::Web,
            Route::DataFactory(_) => Family::DataFactory,
            Route::Diagnostics(_) => Family::Insights,
            Route::List { kind, .. } => match kind {
                ListKind::StorageAccounts => Family::Storage,
                ListKind::MlWorkspaces => Family::MachineLearning,
                ListKind::Vaults => Family::KeyVault,
                ListKind::Sites => Family::Web,
                ListKind::Factories => Family::DataFactory,
            },
        }
    }

    pub fn run(&self, sh: &Shared, req: &Req, caller: &Caller, flags: &Flags) -> Resp {
        match self {
            Route::Metadata => meta::endpoints(sh),
            Route::Subscriptions => meta::subscriptions(sh, caller),
            Route::Subscription(id) => meta::subscription(sh, caller, id),
            Route::Tenants => meta::tenants(sh),
            Route::Permissions { scope } => authz::permissions(sh, req, caller, scope),
            Route::RoleDefinition { scope, id } => authz::role_definition(sh, scope, id),
            Route::Storage {
                sub,
                rg,
                name,
                action,
            } => storage::run(sh, req, caller, sub, rg, name, *action),
            Route::Workspace {
                sub,
                rg,
                name,
                action,
            } => workspace::run(sh, req, caller, sub, rg, name, *action, flags),
            Route::Datastore {
                sub,
                rg,
                ws,
                action,
            } => datastore::run(sh, req, caller, sub, rg, ws, action),
            Route::Poll { sub, id } => workspace::poll(sh, req, caller, sub, id),
            Route::Web(r) => web::run(sh, req, caller, r),
            Route::DataFactory(r) => datafactory::run(sh, req, caller, r),
            Route::Diagnostics(d) => diagnostics::run(sh, req, caller, d),
            Route::List { sub, kind } => inventory::run(sh, caller, sub, *kind),
        }
    }
}

pub(super) fn method_not_allowed(req: &Req) -> Resp {
    error(
        405,
        "MethodNotAllowed",
        &format!(
            "The HTTP method '{}' is not supported at '{}' by keyflip-twin.",
            req.method, req.path
        ),
    )
}

fn not_served(req: &Req) -> Resp {
    error(
        404,
        "NotFound",
        &format!(
            "No HTTP resource was found that matches the request URI '{}'. keyflip-twin models storage accounts and the diagnostic settings of their services, ML workspaces and datastores, App Service sites and their settings, Data Factory linked services, permissions and role definitions.",
            req.path
        ),
    )
}

pub(crate) fn parse(req: &Req) -> Result<Route, Resp> {
    let segs = req.segments();
    let low: Vec<String> = segs.iter().map(|s| s.to_ascii_lowercase()).collect();
    let l: Vec<&str> = low.iter().map(String::as_str).collect();
    let s = |i: usize| segs.get(i).map(|v| v.to_string()).unwrap_or_default();
    let m = &req.method;
    let get = m == Method::GET;
    let post = m == Method::POST;
    let only = |ok: bool, r: Route| {
        if ok {
            Ok(r)
        } else {
            Err(method_not_allowed(req))
        }
    };

    match l.as_slice() {
        ["metadata", "endpoints"] => return only(get, Route::Metadata),
        ["subscriptions"] => return only(get, Route::Subscriptions),
        ["subscriptions", _] => return only(get, Route::Subscription(s(1))),
        ["tenants"] => return only(get, Route::Tenants),
        _ => {}
    }
    // `{scope}/providers/Microsoft.Authorization/...` at any scope.
    if let Some(i) = (0..l.len().saturating_sub(1))
        .rev()
        .find(|&i| l[i] == "providers" && l[i + 1] == "microsoft.authorization")
    {
        let scope = format!("/{}", segs[..i].join("/"));
        return match &l[i + 2..] {
            ["permissions"] => only(get, Route::Permissions { scope }),
            ["roledefinitions", _] => only(
                get,
                Route::RoleDefinition {
                    scope,
                    id: s(i + 3),
                },
            ),
            _ => Err(not_served(req)),
        };
    }
    if let Some(r) = diagnostics::parse(&l, &segs, m) {
        return r
            .map(Route::Diagnostics)
            .map_err(|()| method_not_allowed(req));
    }
    match l.as_slice() {
        ["subscriptions", _, "providers", namespace, ty] => match ListKind::parse(namespace, ty) {
            Some(kind) => only(get, Route::List { sub: s(1), kind }),
            None if get => Err(inventory::not_listed(segs[3], segs[4])),
            None => Err(not_served(req)),
        },
        [
            "subscriptions",
            _,
            "resourcegroups",
            _,
            "providers",
            "microsoft.storage",
            "storageaccounts",
            _,
            rest @ ..,
        ] => {
            let action = match (rest, m) {
                ([], &Method::GET) => StorageAction::Get,
                ([], &Method::PATCH) => StorageAction::Patch,
                (["listkeys"], &Method::POST) => StorageAction::ListKeys,
                (["regeneratekey"], &Method::POST) => StorageAction::Regenerate,
                ([] | ["listkeys"] | ["regeneratekey"], _) => return Err(method_not_allowed(req)),
                _ => return Err(not_served(req)),
            };
            Ok(Route::Storage {
                sub: s(1),
                rg: s(3),
                name: s(7),
                action,
            })
        }
        [
            "subscriptions",
            _,
            "resourcegroups",
            _,
            "providers",
            "microsoft.machinelearningservices",
            "workspaces",
            _,
            rest @ ..,
        ] => {
            let (sub, rg, ws) = (s(1), s(3), s(7));
            let ws_route = |action| {
                Ok(Route::Workspace {
                    sub: sub.clone(),
                    rg: rg.clone(),
                    name: ws.clone(),
                    action,
                })
            };
            let ds_route = |action| {
                Ok(Route::Datastore {
                    sub: sub.clone(),
                    rg: rg.clone(),
                    ws: ws.clone(),
                    action,
                })
            };
            match rest {
                [] if get => ws_route(WorkspaceAction::Get),
                ["listkeys"] if post => ws_route(WorkspaceAction::ListKeys),
                ["resynckeys"] if post => ws_route(WorkspaceAction::Resync),
                ["datastores"] if get => ds_route(DatastoreAction::List),
                ["datastores", _] if get => ds_route(DatastoreAction::Get(s(9))),
                ["datastores", _] if m == Method::PUT => ds_route(DatastoreAction::Put(s(9))),
                ["datastores", _, "listsecrets"] if post => {
                    ds_route(DatastoreAction::ListSecrets(s(9)))
                }
                []
                | ["listkeys"]
                | ["resynckeys"]
                | ["datastores"]
                | ["datastores", _]
                | ["datastores", _, "listsecrets"] => Err(method_not_allowed(req)),
                _ => Err(not_served(req)),
            }
        }
        [
            "subscriptions",
            _,
            "resourcegroups",
            _,
            "providers",
            "microsoft.web",
            "sites",
            _,
            rest @ ..,
        ] => match web::route(req, (s(1), s(3), s(7)), &segs[8..], rest) {
            Some(r) => r.map(Route::Web),
            None => Err(not_served(req)),
        },
        [
            "subscriptions",
            _,
            "resourcegroups",
            _,
            "providers",
            "microsoft.datafactory",
            "factories",
            _,
            rest @ ..,
        ] => match datafactory::route(req, (s(1), s(3), s(7)), &segs[8..], rest) {
            Some(r) => r.map(Route::DataFactory),
            None => Err(not_served(req)),
        },
        [
            "subscriptions",
            _,
            "providers",
            "microsoft.machinelearningservices",
            "locations",
            _,
            "workspaceoperationresults",
            _,
        ] => only(
            get,
            Route::Poll {
                sub: s(1),
                id: s(7),
            },
        ),
        _ => Err(not_served(req)),
    }
}

/// Checks `api-version` against the route's accepted range.
pub(crate) fn check_api_version(req: &Req, route: &Route) -> Result<(), Resp> {
    let family = route.family();
    let (low, high) = family.range();
    let Some(v) = req.param("api-version") else {
        if matches!(family, Family::Metadata) {
            return Ok(());
        }
        return Err(error(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        ));
    };
    let supported = format!("{low} to {high} (optionally with a -preview suffix)");
    let date = v.get(..10).unwrap_or("");
    let suffix = v.get(10..).unwrap_or("");
    let well_formed = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_ok()
        && (suffix.is_empty()
            || suffix
                .strip_prefix('-')
                .is_some_and(|s| s.chars().all(|c| c.is_ascii_alphanumeric()) && !s.is_empty()));
    if !well_formed {
        return Err(error(
            400,
            "InvalidApiVersionParameter",
            &format!("The api-version '{v}' is invalid. The supported versions are '{supported}'."),
        ));
    }
    if date < low || date > high {
        return Err(error(
            400,
            "NoRegisteredProviderFound",
            &format!(
                "No registered resource provider found for location 'westeurope' and API version '{v}' for this resource type. The supported api-versions are '{supported}'."
            ),
        ));
    }
    Ok(())
}
