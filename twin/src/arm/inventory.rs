//! Listing a subscription's resources of one type, as every resource provider's
//! `List` (by subscription) operation does: `GET
//! /subscriptions/{s}/providers/{Namespace}/{type}` answers `{"value": [...]}` with the
//! same model the resource's own GET returns. This is how an inventory (keyflip's
//! `plan discover`) finds the workspaces, vaults, sites and factories that may hold a
//! storage key. Served for `Microsoft.Storage/storageAccounts`,
//! `Microsoft.MachineLearningServices/workspaces`, `Microsoft.KeyVault/vaults`,
//! `Microsoft.Web/sites` and `Microsoft.DataFactory/factories` (specs:
//! `StorageAccounts_List`, `Workspaces_ListBySubscription`, `Vaults_ListBySubscription`,
//! `WebApps_List`, `Factories_List` in Azure/azure-rest-api-specs).
//!
//! Like ARM, a list names only the resources the caller may read (`{type}/read` at the
//! resource); an unknown subscription is 404 `SubscriptionNotFound`; a list counts as
//! one read against the subscription's bucket. The twin returns every item in one page
//! (no `nextLink`).

use serde_json::{Value, json};

use super::{check_subscription, error, throttle};
use crate::auth::Caller;
use crate::server::Shared;
use crate::wire::{self, Resp};

/// The resource types a subscription-wide list is served for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListKind {
    StorageAccounts,
    MlWorkspaces,
    Vaults,
    Sites,
    Factories,
}

impl ListKind {
    /// `(namespace, type)` in lower case, as routed.
    pub(crate) fn parse(namespace: &str, ty: &str) -> Option<ListKind> {
        Some(match (namespace, ty) {
            ("microsoft.storage", "storageaccounts") => ListKind::StorageAccounts,
            ("microsoft.machinelearningservices", "workspaces") => ListKind::MlWorkspaces,
            ("microsoft.keyvault", "vaults") => ListKind::Vaults,
            ("microsoft.web", "sites") => ListKind::Sites,
            ("microsoft.datafactory", "factories") => ListKind::Factories,
            _ => return None,
        })
    }

    /// The type as Azure spells it, for RBAC actions.
    fn resource_type(self) -> &'static str {
        match self {
            ListKind::StorageAccounts => "Microsoft.Storage/storageAccounts",
            ListKind::MlWorkspaces => "Microsoft.MachineLearningServices/workspaces",
            ListKind::Vaults => "Microsoft.KeyVault/vaults",
            ListKind::Sites => "Microsoft.Web/sites",
            ListKind::Factories => "Microsoft.DataFactory/factories",
        }
    }
}

pub(super) fn run(sh: &Shared, caller: &Caller, sub: &str, kind: ListKind) -> Resp {
    let now = sh.clock.now();
    let mut core = sh.core();
    core.settle(now);
    if let Err(r) = throttle(sh, &mut core, sub, false, caller) {
        return r;
    }
    if let Err(r) = check_subscription(sh, sub) {
        return r;
    }
    let read = format!("{}/read", kind.resource_type());
    let may_read = |id: &str| {
        sh.rbac
            .allowed(&caller.object_id, &read, &crate::rbac::scope_key(id), false)
    };
    let in_sub = |s: &str| s.eq_ignore_ascii_case(sub);
    let value: Vec<Value> = match kind {
        ListKind::StorageAccounts => core
            .accounts
            .values()
            .filter(|a| in_sub(&a.subscription) && may_read(&a.id))
            .map(|a| super::storage::account_json(&sh.base_url, a, false))
            .collect(),
        ListKind::MlWorkspaces => core
            .workspaces
            .values()
            .filter(|w| in_sub(&w.subscription) && may_read(&w.id))
            .map(|w| super::workspace::workspace_json(sh, w))
            .collect(),
        ListKind::Vaults => core
            .vaults
            .values()
            .filter(|v| subscription_of(&v.id).is_some_and(in_sub) && may_read(&v.id))
            .map(|v| vault_json(sh, &v.name, &v.id, &v.location))
            .collect(),
        ListKind::Sites => core
            .web_apps
            .values()
            .filter(|a| in_sub(&a.subscription) && may_read(&a.id))
            .map(|a| super::web::site_json(a, None))
            .collect(),
        ListKind::Factories => core
            .factories
            .values()
            .filter(|f| in_sub(&f.subscription) && may_read(&f.id))
            .map(super::datafactory::factory_json)
            .collect(),
    };
    wire::json(200, &json!({ "value": value }))
}

/// The subscription id in a resource id.
fn subscription_of(id: &str) -> Option<&str> {
    let mut segments = id.split('/').filter(|s| !s.is_empty());
    match (segments.next(), segments.next()) {
        (Some(s), Some(sub)) if s.eq_ignore_ascii_case("subscriptions") => Some(sub),
        _ => None,
    }
}

/// The Vault model (`Vaults_Get`): the vault URI is the twin's path-style vault URL.
fn vault_json(sh: &Shared, name: &str, id: &str, location: &str) -> Value {
    json!({
        "id": id,
        "name": name,
        "type": "Microsoft.KeyVault/vaults",
        "location": location,
        "tags": {},
        "properties": {
            "sku": {"family": "A", "name": "standard"},
            "tenantId": sh.topology.tenant_id,
            "vaultUri": format!("{}/keyvault/{name}/", sh.base_url),
            "enableRbacAuthorization": true,
            "enableSoftDelete": true,
            "softDeleteRetentionInDays": 90,
            "provisioningState": "Succeeded",
            "publicNetworkAccess": "Enabled",
        },
    })
}

/// 400 for a list of a type the twin does not list.
pub(super) fn not_listed(namespace: &str, ty: &str) -> Resp {
    error(
        400,
        "InvalidResourceType",
        &format!(
            "keyflip-twin does not list '{namespace}/{ty}' by subscription; it lists storage accounts, ML workspaces, key vaults, sites and data factories."
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_from_lower_case_segments() {
        assert_eq!(
            ListKind::parse("microsoft.keyvault", "vaults"),
            Some(ListKind::Vaults)
        );
        assert_eq!(ListKind::parse("microsoft.keyvault", "managedhsms"), None);
        assert_eq!(
            subscription_of("/subscriptions/abc/resourceGroups/g/providers/X/y/z"),
            Some("abc")
        );
        assert_eq!(subscription_of("/providers/X"), None);
    }
}
