//! Microsoft.MachineLearningServices workspaces: GET, `listKeys`, and `resyncKeys`
//! as a long-running operation polled through `Location`.
//!
//! Modelling choice (Azure does not document it): `listKeys` returns the storage key
//! the workspace has cached; a completed `resyncKeys` caches the account's newest key
//! by `keyCreationTime` (key1 on a tie), chosen when the resync is accepted. The
//! workspace never re-syncs on its own.

use serde_json::{Value, json};

use super::route::WorkspaceAction;
use super::{authorize, check_group, error, resource_not_found, throttle};
use crate::auth::Caller;
use crate::clock::secs;
use crate::server::Shared;
use crate::server::dispatch::Flags;
use crate::state::{Lro, LroOutcome, Workspace};
use crate::wire::{self, Req, Resp, with_header};

const TYPE: &str = "Microsoft.MachineLearningServices/workspaces";

#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    sh: &Shared,
    req: &Req,
    caller: &Caller,
    sub: &str,
    rg: &str,
    name: &str,
    action: WorkspaceAction,
    flags: &Flags,
) -> Resp {
    let scope = format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/{TYPE}/{name}");
    let (verb, write) = match action {
        WorkspaceAction::Get => ("read", false),
        WorkspaceAction::ListKeys => ("listKeys/action", true),
        WorkspaceAction::Resync => ("resyncKeys/action", true),
    };
    let now = sh.clock.now();
    let mut core = sh.core();
    core.settle(now);
    if let Err(r) = throttle(sh, &mut core, sub, write, caller) {
        return r;
    }
    if let Err(r) = authorize(sh, caller, &format!("{TYPE}/{verb}"), &scope) {
        return r;
    }
    if let Err(r) = check_group(sh, sub, rg) {
        return r;
    }
    let key = name.to_ascii_lowercase();
    let Some(ws) = core
        .workspaces
        .get(&key)
        .filter(|w| w.subscription.eq_ignore_ascii_case(sub) && w.group.eq_ignore_ascii_case(rg))
    else {
        return resource_not_found(TYPE, name, rg);
    };
    match action {
        WorkspaceAction::Get => wire::json(200, &workspace_json(sh, ws)),
        WorkspaceAction::ListKeys => wire::json(200, &keys_json(ws)),
        WorkspaceAction::Resync => {
            let (ws_sub, ws_location, account) = (
                ws.subscription.clone(),
                ws.location.clone(),
                ws.storage_account.clone(),
            );
            let outcome = match &flags.lro_fail {
                Some((code, status)) => LroOutcome::Fails {
                    code: code.clone(),
                    status: *status,
                },
                None => LroOutcome::Succeeds {
                    key: core
                        .accounts
                        .get(&account)
                        .map(|a| a.keys[a.newest_key()].value.clone()),
                },
            };
            let id = uuid::Uuid::new_v4().to_string();
            let api = req.param("api-version").unwrap_or("2024-04-01");
            let location = poll_url(sh, &ws_sub, &ws_location, &id, api);
            let due = now + secs(core.settings.resync_duration_secs);
            let retry = core.settings.lro_retry_after_secs;
            core.lros.insert(
                id,
                Lro {
                    workspace: key,
                    subscription: ws_sub,
                    due,
                    outcome,
                    settled: false,
                },
            );
            accepted(&location, retry)
        }
    }
}

fn poll_url(sh: &Shared, sub: &str, location: &str, id: &str, api_version: &str) -> String {
    format!(
        "{}/subscriptions/{sub}/providers/Microsoft.MachineLearningServices/locations/{location}/workspaceOperationResults/{id}?api-version={api_version}",
        sh.base_url
    )
}

fn accepted(location: &str, retry_after: u32) -> Resp {
    with_header(
        with_header(wire::empty(202), "location", location),
        "retry-after",
        &retry_after.to_string(),
    )
}

/// `GET` on a `Location` URL: 202 while running, then 200 (or the failure).
pub(super) fn poll(sh: &Shared, req: &Req, caller: &Caller, sub: &str, id: &str) -> Resp {
    let now = sh.clock.now();
    let mut core = sh.core();
    if let Err(r) = throttle(sh, &mut core, sub, false, caller) {
        return r;
    }
    core.settle(now);
    let retry = core.settings.lro_retry_after_secs;
    let Some(lro) = core
        .lros
        .get(id)
        .filter(|l| l.subscription.eq_ignore_ascii_case(sub))
    else {
        return error(
            404,
            "NotFound",
            &format!("The operation '{id}' was not found."),
        );
    };
    if !lro.settled {
        let url = format!("{}{}?{}", sh.base_url, req.path, req.query_raw);
        return accepted(&url, retry);
    }
    match &lro.outcome {
        LroOutcome::Succeeds { .. } => wire::empty(200),
        LroOutcome::Fails { code, status } => error(
            *status,
            code,
            "The operation failed: the workspace keys could not be resynchronised. Retry the operation.",
        ),
    }
}

fn keys_json(ws: &Workspace) -> Value {
    json!({
        "userStorageKey": ws.user_storage_key,
        "userStorageResourceId": ws.storage_account_id,
        "userStorageArmId": ws.storage_account_id,
        "appInsightsInstrumentationKey": null,
        "containerRegistryCredentials": {
            "location": ws.location,
            "username": format!("cr{}", ws.name.replace(['-', '_'], "")),
            "passwords": [
                {"name": "password", "value": "keyflip-twin-fake-registry-password-1"},
                {"name": "password2", "value": "keyflip-twin-fake-registry-password-2"},
            ],
        },
        "notebookAccessKeys": {"primaryAccessKey": null, "secondaryAccessKey": null},
    })
}

pub(super) fn workspace_json(sh: &Shared, ws: &Workspace) -> Value {
    let rg_id = format!(
        "/subscriptions/{}/resourceGroups/{}",
        ws.subscription, ws.group
    );
    let tid = &sh.topology.tenant_id;
    let key_vault = ws.key_vault_id.clone().unwrap_or_else(|| {
        format!(
            "{rg_id}/providers/Microsoft.KeyVault/vaults/kv{}",
            ws.name.replace(['-', '_'], "")
        )
    });
    json!({
        "id": ws.id,
        "name": ws.name,
        "type": TYPE,
        "location": ws.location,
        "kind": "Default",
        "sku": {"name": "Basic", "tier": "Basic"},
        "tags": {},
        "identity": {
            "principalId": ws.workspace_id,
            "tenantId": tid,
            "type": "SystemAssigned",
            "userAssignedIdentities": {},
        },
        "properties": {
            "containerRegistry": format!("{rg_id}/providers/Microsoft.ContainerRegistry/registries/cr{}", ws.name.replace(['-', '_'], "")),
            "keyVault": key_vault,
            "applicationInsights": format!("{rg_id}/providers/microsoft.insights/components/appi-{}", ws.name),
            "storageAccount": ws.storage_account_id,
            "discoveryUrl": format!("{}/discovery", sh.base_url),
            "friendlyName": ws.name,
            "description": "",
            "encryption": {
                "status": "Disabled",
                "identity": {"userAssignedIdentity": ""},
                "keyVaultProperties": {"keyVaultArmId": "", "keyIdentifier": "", "identityClientId": ""},
            },
            "hbiWorkspace": false,
            "serviceProvisionedResourceGroup": format!("{}_{}", ws.name, ws.workspace_id.replace('-', "")),
            "privateLinkCount": 0,
            "allowPublicAccessWhenBehindVnet": false,
            "publicNetworkAccess": "Enabled",
            "imageBuildCompute": "",
            "privateEndpointConnections": [],
            "sharedPrivateLinkResources": [],
            "workspaceId": ws.workspace_id,
            "provisioningState": "Succeeded",
            "tenantId": tid,
            "storageHnsEnabled": false,
            "v1LegacyMode": false,
            "mlFlowTrackingUri": format!("azureml://{}.api.azureml.ms/mlflow/v1.0{}", ws.location, ws.id),
        },
    })
}
