//! Inventory reads: a subscription's resources of one type (`GET
//! /subscriptions/{s}/providers/{ns}/{type}`), an app's deployment slots and a vault's
//! secrets (`GET {vault}/secrets`), with RBAC filtering, paging and their refusals.

use keyflip_twin::World;
use reqwest::Method;
use serde_json::Value;

use super::common::*;

fn list_url(env: &Env, provider: &str, api: &str) -> String {
    env.arm(&format!("/subscriptions/{SUB}/providers/{provider}"), api)
}

async fn names(env: &Env, token: &str, provider: &str, api: &str) -> Vec<String> {
    let (status, v) = body(
        env.req(Method::GET, &list_url(env, provider, api), token)
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(status, 200, "{provider}: {v}");
    assert!(v.get("nextLink").is_none_or(Value::is_null), "{v}");
    v["value"]
        .as_array()
        .expect("value")
        .iter()
        .map(|r| r["name"].as_str().expect("name").to_owned())
        .collect()
}

#[tokio::test]
async fn a_subscription_lists_each_type_with_the_models_its_get_returns() {
    let env = Env::demo().await;
    let t = env.token(OPERATOR, ARM_SCOPE).await;
    assert_eq!(
        names(&env, &t, "Microsoft.Storage/storageAccounts", STORAGE_API).await,
        ["stdatasci001", "stexternal002"]
    );
    assert_eq!(
        names(
            &env,
            &t,
            "Microsoft.MachineLearningServices/workspaces",
            ML_API
        )
        .await,
        ["mlw-datasci"]
    );
    assert_eq!(
        names(&env, &t, "Microsoft.Web/sites", "2024-11-01").await,
        ["func-datasci-ingest"]
    );
    assert_eq!(
        names(&env, &t, "Microsoft.DataFactory/factories", "2018-06-01").await,
        ["adf-datasci"]
    );
    // The list carries the same workspace model as its GET (storageAccount included).
    let (_, list) = body(
        env.req(
            Method::GET,
            &list_url(&env, "Microsoft.MachineLearningServices/workspaces", ML_API),
            &t,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    let (_, get) = body(
        env.req(Method::GET, &env.arm(&env.workspace_id(), ML_API), &t)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(list["value"][0], get);

    // A vault comes with the URI its data plane answers at.
    let (status, v) = body(
        env.req(
            Method::GET,
            &list_url(&env, "Microsoft.KeyVault/vaults", "2023-07-01"),
            &t,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let vault = &v["value"][0];
    assert_eq!(vault["name"], "kv-datasci");
    assert_eq!(vault["type"], "Microsoft.KeyVault/vaults");
    assert_eq!(vault["id"], env.ep.key_vaults["kv-datasci"].id.as_str());
    assert_eq!(
        vault["properties"]["vaultUri"],
        format!("{}/", env.ep.key_vaults["kv-datasci"].url)
    );
    assert_eq!(vault["properties"]["tenantId"], TENANT);
}

#[tokio::test]
async fn a_list_names_only_what_the_caller_may_read() {
    // A second group the reader has no role in.
    let extra = r#"
[[resource_group]]
name = "rg-private"
location = "westeurope"

[[storage_account]]
name = "stprivate003"
resource_group = "rg-private"
"#;
    let world = World::from_toml_str(&format!("{DEMO_TOML}\n{extra}"), "extra.toml")
        .unwrap_or_else(|e| panic!("{e}"));
    let env = Env::start(world).await;
    let t = env.token(READER, ARM_SCOPE).await;
    assert_eq!(
        names(&env, &t, "Microsoft.Storage/storageAccounts", STORAGE_API).await,
        ["stdatasci001", "stexternal002"],
        "the reader cannot see rg-private"
    );
}

#[tokio::test]
async fn unknown_subscriptions_and_unlisted_types_are_refused() {
    let env = Env::demo().await;
    let t = env.token(OPERATOR, ARM_SCOPE).await;
    let url = env.arm(
        "/subscriptions/00000000-0000-0000-0000-000000000000/providers/Microsoft.KeyVault/vaults",
        "2023-07-01",
    );
    let (status, v) = body(env.req(Method::GET, &url, &t).send().await.unwrap()).await;
    assert_eq!(status, 404);
    assert_eq!(v["error"]["code"], "SubscriptionNotFound");
    let (status, v) = body(
        env.req(
            Method::GET,
            &list_url(&env, "Microsoft.Sql/servers", "2023-01-01"),
            &t,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["code"], "InvalidResourceType");
    let r = env
        .req(
            Method::POST,
            &list_url(&env, "Microsoft.Web/sites", "2024-11-01"),
            &t,
        )
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let ops: Vec<Value> = env.requests().await;
    assert!(
        ops.iter()
            .any(|r| r["operation"] == "keyvault.vault.list" && r["status"] == 404),
        "{ops:?}"
    );
}

#[tokio::test]
async fn an_app_lists_its_slots() {
    let env = Env::demo().await;
    let t = env.token(OPERATOR, ARM_SCOPE).await;
    let site = format!(
        "/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Web/sites/func-datasci-ingest"
    );
    let (status, v) = body(
        env.req(
            Method::GET,
            &env.arm(&format!("{site}/slots"), "2024-11-01"),
            &t,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["value"][0]["name"], "func-datasci-ingest/staging");
    assert_eq!(v["value"][0]["type"], "Microsoft.Web/sites/slots");
    assert_eq!(v["value"][0]["id"], format!("{site}/slots/staging"));
}

fn vault_list(env: &Env, query: &str) -> String {
    format!(
        "{}/secrets?api-version=7.5{query}",
        env.ep.key_vaults["kv-datasci"].url
    )
}

#[tokio::test]
async fn a_vault_lists_its_secrets_without_values_and_pages() {
    let env = Env::demo().await;
    let t = env.token(OPERATOR, VAULT_SCOPE).await;
    let (status, v) = body(
        env.req(Method::GET, &vault_list(&env, ""), &t)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let items = v["value"].as_array().expect("value");
    let ids: Vec<&str> = items.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            format!("{}/secrets/stdatasci001-connection-string", env.ep.base_url),
            format!("{}/secrets/stdatasci001-key", env.ep.base_url),
        ]
    );
    assert!(items.iter().all(|i| i.get("value").is_none()), "{v}");
    assert_eq!(items[1]["contentType"], "text/plain");
    assert_eq!(items[1]["tags"]["CredentialId"], "key1");
    assert_eq!(items[1]["attributes"]["enabled"], true);

    // One per page: the nextLink leads to the second and last.
    let (_, first) = body(
        env.req(Method::GET, &vault_list(&env, "&maxresults=1"), &t)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(first["value"].as_array().unwrap().len(), 1);
    let next = first["nextLink"].as_str().expect("nextLink").to_owned();
    let (_, second) = body(env.req(Method::GET, &next, &t).send().await.unwrap()).await;
    assert_eq!(
        second["value"][0]["id"],
        format!("{}/secrets/stdatasci001-key", env.ep.base_url)
    );
    assert!(second["nextLink"].is_null());
}

#[tokio::test]
async fn listing_a_vault_needs_read_metadata_on_it() {
    let env = Env::start(world_with_owner()).await;
    // The owner has control-plane Owner only: no Key Vault data action.
    let t = env.token(OWNER, VAULT_SCOPE).await;
    let (status, v) = body(
        env.req(Method::GET, &vault_list(&env, ""), &t)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["error"]["innererror"]["code"], "ForbiddenByRbac");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("Microsoft.KeyVault/vaults/secrets/readMetadata/action"),
        "{message}"
    );
    // A reader with Key Vault Secrets User may list.
    let t = env.token(READER, VAULT_SCOPE).await;
    let r = env
        .req(Method::GET, &vault_list(&env, ""), &t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
