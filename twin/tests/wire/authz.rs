//! Microsoft.Authorization permissions and role definitions, subscriptions, tenants
//! and cloud metadata.

use reqwest::Method;
use serde_json::{Value, json};

use super::common::*;

async fn permissions(env: &Env, token: &str, scope: &str) -> Vec<Value> {
    let url = env.arm(
        &format!("{scope}/providers/Microsoft.Authorization/permissions"),
        "2022-04-01",
    );
    let (status, v) = body(
        env.req(Method::GET, &url, token)
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(status, 200, "{scope}: {v}");
    v["value"].as_array().cloned().expect("value")
}

#[tokio::test]
async fn permissions_return_the_roles_that_apply_at_the_scope() {
    let env = Env::demo().await;
    let op = env.token(OPERATOR, ARM_SCOPE).await;
    let rg = format!("/subscriptions/{SUB}/resourceGroups/{RG}");
    let at_rg = permissions(&env, &op, &rg).await;
    assert_eq!(
        at_rg,
        vec![
            json!({"actions": ["*/read"], "notActions": [], "dataActions": [], "notDataActions": []})
        ]
    );

    let at_account = permissions(&env, &op, &env.account_id("stdatasci001")).await;
    assert_eq!(
        at_account.len(),
        2,
        "Reader and the key operator role: {at_account:?}"
    );
    assert!(at_account.iter().any(|p| p["actions"]
        == json!([
            "Microsoft.Storage/storageAccounts/listkeys/action",
            "Microsoft.Storage/storageAccounts/regeneratekey/action"
        ])));
    // The spec's empty parentResourcePath gives a double slash; both forms work.
    let double = format!("{rg}/providers/Microsoft.Storage//storageAccounts/stdatasci001");
    assert_eq!(permissions(&env, &op, &double).await, at_account);

    let at_ws = permissions(&env, &op, &env.workspace_id()).await;
    assert_eq!(
        at_ws.len(),
        3,
        "Reader, AzureML Data Scientist, the custom key reader"
    );
    let at_vault = permissions(&env, &op, &env.ep.key_vaults["kv-datasci"].id).await;
    assert!(
        at_vault
            .iter()
            .any(|p| p["dataActions"] == json!(["Microsoft.KeyVault/vaults/secrets/*"]))
    );

    let reader = env.token(READER, ARM_SCOPE).await;
    assert_eq!(
        permissions(&env, &reader, &env.account_id("stdatasci001"))
            .await
            .len(),
        1
    );
    let url = env.arm(&format!("/subscriptions/{SUB}/resourceGroups/rg-nope/providers/Microsoft.Authorization/permissions"), "2022-04-01");
    assert_eq!(
        env.req(Method::GET, &url, &reader)
            .send()
            .await
            .expect("answer")
            .status(),
        404
    );
}

#[tokio::test]
async fn role_definitions_are_served_by_id() {
    let env = Env::demo().await;
    let t = env.token(READER, ARM_SCOPE).await;
    let id = "81a9662b-bebf-436f-a333-f67b29880f12";
    for prefix in [String::new(), format!("/subscriptions/{SUB}")] {
        let url = env.arm(
            &format!("{prefix}/providers/Microsoft.Authorization/roleDefinitions/{id}"),
            "2022-04-01",
        );
        let (status, v) = body(env.req(Method::GET, &url, &t).send().await.expect("answer")).await;
        assert_eq!(status, 200);
        assert_eq!(
            v["properties"]["roleName"],
            "Storage Account Key Operator Service Role"
        );
        assert_eq!(v["properties"]["type"], "BuiltInRole");
        assert_eq!(
            v["id"],
            format!("{prefix}/providers/Microsoft.Authorization/roleDefinitions/{id}")
        );
    }
    let url = env.arm(
        "/providers/Microsoft.Authorization/roleDefinitions/3b8f6c2e-9d4a-4e1b-8f7c-5a6d2e9b0c41",
        "2022-04-01",
    );
    let (_, v) = body(env.req(Method::GET, &url, &t).send().await.expect("answer")).await;
    assert_eq!(v["properties"]["roleName"], "keyflip Workspace Key Reader");
    assert_eq!(v["properties"]["type"], "CustomRole");
    let url = env.arm(
        "/providers/Microsoft.Authorization/roleDefinitions/00000000-0000-4000-8000-000000000000",
        "2022-04-01",
    );
    let (status, v) = body(env.req(Method::GET, &url, &t).send().await.expect("answer")).await;
    assert_eq!(
        (status.as_u16(), v["error"]["code"].as_str()),
        (404, Some("RoleDefinitionDoesNotExist"))
    );
}

#[tokio::test]
async fn subscriptions_tenants_and_cloud_metadata() {
    let env = Env::start(world_with_owner()).await;
    let t = env.token(READER, ARM_SCOPE).await;
    let (status, v) = body(
        env.req(Method::GET, &env.arm("/subscriptions", "2022-12-01"), &t)
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v["value"][0]["subscriptionId"], SUB);
    assert_eq!(v["value"][0]["displayName"], "datascience-prod");
    assert_eq!(v["value"][0]["tenantId"], TENANT);
    let (status, _) = body(
        env.req(
            Method::GET,
            &env.arm(&format!("/subscriptions/{SUB}"), "2022-12-01"),
            &t,
        )
        .send()
        .await
        .expect("answer"),
    )
    .await;
    assert_eq!(status, 200);
    let stranger = env.token(STRANGER, ARM_SCOPE).await;
    let (_, v) = body(
        env.req(
            Method::GET,
            &env.arm("/subscriptions", "2022-12-01"),
            &stranger,
        )
        .send()
        .await
        .expect("answer"),
    )
    .await;
    assert_eq!(
        v["value"],
        json!([]),
        "only subscriptions the caller holds a role in"
    );
    let (status, v) = body(
        env.req(Method::GET, &env.arm("/tenants", "2022-12-01"), &t)
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(
        (status.as_u16(), v["value"][0]["tenantId"].as_str()),
        (200, Some(TENANT))
    );

    // Cloud metadata needs no token; a trailing-slash ARM URL gives `//metadata`.
    for path in [
        "/metadata/endpoints?api-version=2015-01-01",
        "//metadata/endpoints?api-version=2022-09-01",
        "/metadata/endpoints",
    ] {
        let (status, v) = body(env.http.get(env.url(path)).send().await.expect("answer")).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(v["authentication"]["loginEndpoint"], env.ep.base_url);
        assert_eq!(
            v["authentication"]["audiences"][0],
            "https://management.core.windows.net/"
        );
        assert_eq!(v["resourceManager"], env.ep.arm_url);
        assert!(v["galleryEndpoint"].is_string() && v["graphEndpoint"].is_string());
    }
}

/// Issue 12: `AuthorizationFailed` spells each action as Azure does, with the
/// operation's own casing (`listKeys`, `regenerateKey`, `resyncKeys`, `listSecrets`),
/// as recorded in Azure's refusals.
#[tokio::test]
async fn authorization_failed_spells_actions_as_azure_does() {
    let env = Env::demo().await;
    let reader = env.token(READER, ARM_SCOPE).await;
    let account = env.account_id("stdatasci001");
    let ws = env.workspace_id();
    for (path, api, body_json, action) in [
        (
            format!("{account}/listKeys"),
            STORAGE_API,
            None,
            "Microsoft.Storage/storageAccounts/listKeys/action",
        ),
        (
            format!("{account}/regenerateKey"),
            STORAGE_API,
            Some(json!({"keyName": "key1"})),
            "Microsoft.Storage/storageAccounts/regenerateKey/action",
        ),
        (
            format!("{ws}/listKeys"),
            ML_API,
            None,
            "Microsoft.MachineLearningServices/workspaces/listKeys/action",
        ),
        (
            format!("{ws}/resyncKeys"),
            ML_API,
            None,
            "Microsoft.MachineLearningServices/workspaces/resyncKeys/action",
        ),
        (
            format!("{ws}/datastores/training_data/listSecrets"),
            ML_API,
            None,
            "Microsoft.MachineLearningServices/workspaces/datastores/listSecrets/action",
        ),
    ] {
        let mut r = env.req(Method::POST, &env.arm(&path, api), &reader);
        if let Some(b) = body_json {
            r = r.json(&b);
        }
        let (status, v) = body(r.send().await.expect("answer")).await;
        assert_eq!(status, 403, "{path}: {v}");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!("perform action '{action}' over scope")),
            "{path}: {message}"
        );
    }
}
