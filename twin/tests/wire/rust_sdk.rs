//! Microsoft's Rust SDK (`azure_identity`, `azure_security_keyvault_secrets`) as an
//! independent client: client-secret tokens from the twin's authority, the Key Vault
//! challenge, set/get/list versions/update, and secret ids the SDK can parse.

use std::sync::Arc;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::http::{ClientOptions, Transport};
use azure_identity::{ClientSecretCredential, ClientSecretCredentialOptions};
use azure_security_keyvault_secrets::models::{
    SecretAttributes, SecretClientGetSecretOptions, SecretClientUpdateSecretPropertiesOptions,
    SetSecretParameters, UpdateSecretPropertiesParameters,
};
use azure_security_keyvault_secrets::{ResourceExt, SecretClient, SecretClientOptions};
use futures::TryStreamExt;

use super::common::*;

fn options(env: &Env) -> ClientOptions {
    let cert = reqwest::Certificate::from_pem(env.twin.ca_pem().as_bytes()).expect("CA");
    let http = reqwest::Client::builder()
        .tls_certs_only([cert])
        .build()
        .expect("client");
    let mut custom = CustomConfiguration::default();
    custom.authority_host = env.ep.authority_host.clone();
    ClientOptions {
        transport: Some(Transport::new(Arc::new(http))),
        cloud: Some(Arc::new(CloudConfiguration::Custom(custom))),
        ..Default::default()
    }
}

#[tokio::test]
async fn the_key_vault_sdk_works_through_the_challenge() {
    let env = Env::demo().await;
    let p = &env.ep.principals[OPERATOR];
    let credential = ClientSecretCredential::new(
        TENANT,
        p.client_id.clone(),
        p.client_secret.clone().into(),
        Some(ClientSecretCredentialOptions {
            client_options: options(&env),
        }),
    )
    .expect("credential");
    let client = SecretClient::new(
        &env.ep.key_vaults["kv-datasci"].url,
        credential,
        Some(SecretClientOptions {
            client_options: options(&env),
            verify_challenge_resource: Some(false),
            ..Default::default()
        }),
    )
    .expect("client");

    let params = SetSecretParameters {
        value: Some("from-rust".into()),
        ..Default::default()
    };
    let set = client
        .set_secret(
            "stdatasci001-key",
            params.try_into().expect("content"),
            None,
        )
        .await
        .expect("set_secret")
        .into_model()
        .expect("model");
    let id = set
        .resource_id()
        .expect("the SDK parses the twin's secret ids");
    assert_eq!(id.name, "stdatasci001-key");
    let version = id.version.expect("version");
    assert_eq!(version.len(), 32);

    let latest = client
        .get_secret("stdatasci001-key", None)
        .await
        .expect("get")
        .into_model()
        .expect("model");
    assert_eq!(latest.value.as_deref(), Some("from-rust"));
    let first =
        env.state().await["key_vaults"]["kv-datasci"]["secrets"]["stdatasci001-key"][0]["version"]
            .as_str()
            .expect("version")
            .to_string();
    let old = client
        .get_secret(
            "stdatasci001-key",
            Some(SecretClientGetSecretOptions {
                secret_version: Some(first.clone()),
                ..Default::default()
            }),
        )
        .await
        .expect("get by version")
        .into_model()
        .expect("model");
    assert_eq!(
        old.value,
        Some(key_of(&env.state().await, "stdatasci001", "key1"))
    );

    let mut pager = client
        .list_secret_properties_versions("stdatasci001-key", None)
        .expect("pager");
    let mut versions = Vec::new();
    while let Some(item) = pager.try_next().await.expect("page") {
        versions.push(item.resource_id().expect("id").version.expect("version"));
    }
    assert_eq!(versions, vec![first.clone(), version]);

    let disable = UpdateSecretPropertiesParameters {
        secret_attributes: Some(SecretAttributes {
            enabled: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    };
    client
        .update_secret_properties(
            "stdatasci001-key",
            disable.try_into().expect("content"),
            Some(SecretClientUpdateSecretPropertiesOptions {
                secret_version: Some(first),
                ..Default::default()
            }),
        )
        .await
        .expect("update");
    let state = env.state().await;
    assert_eq!(
        state["key_vaults"]["kv-datasci"]["secrets"]["stdatasci001-key"][0]["enabled"],
        false
    );
}
