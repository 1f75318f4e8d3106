//! Cloud-level ARM endpoints: `/metadata/endpoints` (one JSON object carrying both
//! the classic and the current field names, so `az cloud register` and SDK cloud
//! discovery both work), `/subscriptions` (those the caller holds a role in) and
//! `/tenants`.

use serde_json::{Value, json};

use super::error;
use crate::auth::Caller;
use crate::server::Shared;
use crate::state::Subscription;
use crate::token::VAULT_AUDIENCE;
use crate::wire::{self, Resp};

pub(super) fn endpoints(sh: &Shared) -> Resp {
    let base = &sh.base_url;
    let audiences = json!([
        "https://management.core.windows.net/",
        "https://management.azure.com/"
    ]);
    wire::json(
        200,
        &json!({
            // Classic format (api-version 2015-01-01).
            "galleryEndpoint": format!("{base}/gallery/"),
            "graphEndpoint": "https://graph.windows.net/",
            "portalEndpoint": format!("{base}/portal/"),
            "authentication": {
                "loginEndpoint": base,
                "audiences": audiences,
                "tenant": "common",
                "identityProvider": "AAD",
            },
            // Current format (api-version 2019-05-01 and later).
            "name": "KeyflipTwin",
            "portal": format!("{base}/portal/"),
            "resourceManager": format!("{base}/"),
            "gallery": format!("{base}/gallery/"),
            "graph": "https://graph.windows.net/",
            "graphAudience": "https://graph.windows.net/",
            "microsoftGraphResourceId": "https://graph.microsoft.com/",
            "activeDirectoryDataLake": "https://datalake.azure.net/",
            "batch": "https://batch.core.windows.net/",
            "media": "https://rest.media.azure.net",
            "sqlManagement": "https://management.core.windows.net:8443/",
            "vmImageAliasDoc": "https://raw.githubusercontent.com/Azure/azure-rest-api-specs/main/arm-compute/quickstart-templates/aliases.json",
            "suffixes": {
                "keyVaultDns": "vault.azure.net",
                "storage": "core.windows.net",
                "acrLoginServer": "azurecr.io",
                "sqlServerHostname": "database.windows.net",
                "azureDataLakeStoreFileSystem": "azuredatalakestore.net",
                "azureDataLakeAnalyticsCatalogAndJob": "azuredatalakeanalytics.net",
                "mhsmDns": "managedhsm.azure.net",
            },
            "keyVaultResourceId": VAULT_AUDIENCE,
        }),
    )
}

fn subscription_json(sh: &Shared, s: &Subscription) -> Value {
    json!({
        "id": format!("/subscriptions/{}", s.id),
        "authorizationSource": "RoleBased",
        "managedByTenants": [],
        "subscriptionId": s.id,
        "tenantId": sh.topology.tenant_id,
        "displayName": s.display_name,
        "state": "Enabled",
        "subscriptionPolicies": {
            "locationPlacementId": "Public_2014-09-01",
            "quotaId": "PayAsYouGo_2014-09-01",
            "spendingLimit": "Off",
        },
    })
}

fn visible(sh: &Shared, caller: &Caller, s: &Subscription) -> bool {
    sh.rbac.has_any_under(
        &caller.object_id,
        &crate::rbac::scope_key(&format!("/subscriptions/{}", s.id)),
    )
}

pub(super) fn subscriptions(sh: &Shared, caller: &Caller) -> Resp {
    let value: Vec<Value> = sh
        .topology
        .subscriptions
        .iter()
        .filter(|s| visible(sh, caller, s))
        .map(|s| subscription_json(sh, s))
        .collect();
    let n = value.len();
    wire::json(
        200,
        &json!({"value": value, "count": {"type": "Total", "value": n}}),
    )
}

pub(super) fn subscription(sh: &Shared, caller: &Caller, id: &str) -> Resp {
    match sh
        .topology
        .subscription(id)
        .filter(|s| visible(sh, caller, s))
    {
        Some(s) => wire::json(200, &subscription_json(sh, s)),
        None => error(
            404,
            "SubscriptionNotFound",
            &format!("The subscription '{id}' could not be found."),
        ),
    }
}

pub(super) fn tenants(sh: &Shared) -> Resp {
    let t = &sh.topology;
    wire::json(
        200,
        &json!({"value": [{
            "id": format!("/tenants/{}", t.tenant_id),
            "tenantId": t.tenant_id,
            "tenantCategory": "Home",
            "displayName": t.tenant_name,
            "defaultDomain": "keyflip-twin.invalid",
            "tenantType": "AAD",
        }], "count": {"type": "Total", "value": 1}}),
    )
}
