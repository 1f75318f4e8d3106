//! Permissions, tokens and credentials against keyflip-twin's Entra ID and RBAC.

use keyflip::azure::Error;
use keyflip::azure::roles::{Action, actions::*};

use crate::support::fast_options;
use crate::support::twin::{ACCOUNT, OPERATOR, READER, TestTwin, VAULT, WORKSPACE};

fn names(
    missing: &[keyflip::azure::authorization::MissingAction],
) -> Vec<(String, Option<&'static str>)> {
    missing
        .iter()
        .map(|m| (m.action.name().to_owned(), m.role.map(|r| r.name)))
        .collect()
}

#[tokio::test]
async fn the_operator_holds_what_a_rotation_needs_and_the_reader_does_not() {
    let twin = TestTwin::start();
    let account = twin.account_id(ACCOUNT);
    let vault = twin.endpoints.key_vaults[VAULT].id.clone();
    let workspace = twin.workspace_id(WORKSPACE);
    let storage = [STORAGE_READ, STORAGE_LIST_KEYS, STORAGE_REGENERATE_KEY];
    let secrets = [
        KV_SECRET_GET,
        KV_SECRET_SET,
        KV_SECRET_READ_METADATA,
        KV_SECRET_UPDATE,
    ];
    let ml = [
        ML_WORKSPACE_READ,
        ML_WORKSPACE_LIST_KEYS,
        ML_WORKSPACE_RESYNC_KEYS,
        ML_DATASTORE_READ,
        ML_DATASTORE_WRITE,
        ML_DATASTORE_LIST_SECRETS,
    ];

    let operator = twin.azure(OPERATOR);
    assert!(
        operator
            .missing_permissions(account.as_str(), &storage)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        operator
            .missing_permissions(&vault, &secrets)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        operator
            .missing_permissions(workspace.as_str(), &ml)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        names(
            &operator
                .missing_permissions(account.as_str(), &[STORAGE_WRITE])
                .await
                .unwrap()
        ),
        vec![(
            STORAGE_WRITE.name().to_owned(),
            Some("Storage Account Contributor")
        )]
    );

    let reader = twin.azure(READER);
    assert_eq!(
        names(
            &reader
                .missing_permissions(account.as_str(), &storage)
                .await
                .unwrap()
        ),
        vec![
            (
                STORAGE_LIST_KEYS.name().to_owned(),
                Some("Storage Account Key Operator Service Role")
            ),
            (
                STORAGE_REGENERATE_KEY.name().to_owned(),
                Some("Storage Account Key Operator Service Role")
            ),
        ]
    );
    let missing: Vec<Action> = reader
        .missing_permissions(&vault, &secrets)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.action)
        .collect();
    assert_eq!(missing, vec![KV_SECRET_SET, KV_SECRET_UPDATE]);
    // Reader's */read covers the reads; every action is missing.
    let missing: Vec<Action> = reader
        .missing_permissions(workspace.as_str(), &ml)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.action)
        .collect();
    assert_eq!(
        missing,
        vec![
            ML_WORKSPACE_LIST_KEYS,
            ML_WORKSPACE_RESYNC_KEYS,
            ML_DATASTORE_WRITE,
            ML_DATASTORE_LIST_SECRETS
        ]
    );
}

#[tokio::test]
async fn what_the_permissions_api_says_matches_what_azure_enforces() {
    let twin = TestTwin::start();
    let reader = twin.azure(READER);
    let account = twin.account_id(ACCOUNT);
    let missing = reader
        .missing_permissions(account.as_str(), &[STORAGE_LIST_KEYS])
        .await
        .unwrap();
    assert_eq!(missing.len(), 1);
    let err = reader.storage_keys(&account).await.unwrap_err();
    let denial = err.denial().expect("a 403");
    assert_eq!(
        denial
            .action
            .as_ref()
            .map(|a| a.name().to_ascii_lowercase()),
        Some(STORAGE_LIST_KEYS.name().to_ascii_lowercase())
    );
    assert_eq!(denial.role, missing[0].role);
}

#[tokio::test]
async fn tokens_are_checked_per_audience() {
    let twin = TestTwin::start();
    let azure = twin.azure(OPERATOR);
    azure
        .check_token(&twin.endpoints.arm_audience)
        .await
        .unwrap();
    azure
        .check_token(keyflip::azure::DATABRICKS_AUDIENCE)
        .await
        .unwrap();
    azure.check_token("https://vault.azure.net").await.unwrap();
}

#[tokio::test]
async fn a_token_for_the_wrong_audience_is_a_401_naming_the_audience() {
    let twin = TestTwin::start();
    let text = twin.config_text(OPERATOR).replace(
        &format!("arm_audience = \"{}\"", twin.endpoints.arm_audience),
        "arm_audience = \"https://vault.azure.net\"",
    );
    let azure = twin.azure_from(&text, fast_options()).unwrap();
    let err = azure
        .storage_account(&twin.account_id(ACCOUNT))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
    assert!(err.to_string().contains("https://vault.azure.net"), "{err}");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn a_wrong_client_secret_is_a_credential_error() {
    let twin = TestTwin::start();
    let path = twin.dir.path().join("principals/wrong.secret");
    std::fs::write(&path, "not-the-secret").unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let text = twin.config_text(OPERATOR).replace(
        "principals/keyflip-operator.secret",
        "principals/wrong.secret",
    );
    let azure = twin.azure_from(&text, fast_options()).unwrap();
    let err = azure
        .storage_account(&twin.account_id(ACCOUNT))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Credential {
                transient: false,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains(&twin.endpoints.arm_audience),
        "{err}"
    );
    assert!(!err.to_string().contains("not-the-secret"), "{err}");
}

#[tokio::test]
async fn a_secret_file_others_can_read_is_refused_before_any_request() {
    let twin = TestTwin::start();
    let path = twin.dir.path().join("principals/keyflip-operator.secret");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let err = twin
        .azure_from(&twin.config_text(OPERATOR), fast_options())
        .err()
        .expect("refused");
    assert!(
        err.to_string()
            .contains(&format!("chmod 600 {}", path.display())),
        "{err}"
    );
    assert!(twin.requests().await.is_empty());
}

#[tokio::test]
async fn workload_identity_exchanges_a_federated_token() {
    let twin = TestTwin::start();
    let token_file = twin.dir.path().join("federated-token");
    std::fs::write(&token_file, twin.federated_token(OPERATOR).await).unwrap();
    let e = &twin.endpoints;
    let text = format!(
        "[cloud]\nname = \"custom\"\narm_url = \"{}\"\narm_audience = \"{}\"\nauthority_host = \"{}\"\nca_bundle = \"ca.pem\"\n[credential]\nkind = \"workload-identity\"\ntenant_id = \"{}\"\nclient_id = \"{}\"\nfederated_token_file = \"federated-token\"\n",
        e.arm_url, e.arm_audience, e.authority_host, e.tenant_id, e.principals[OPERATOR].client_id
    );
    let azure = twin.azure_from(&text, fast_options()).unwrap();
    azure.storage_keys(&twin.account_id(ACCOUNT)).await.unwrap();
    let tokens = twin.requests_for("entra.token").await;
    assert!(
        tokens.iter().any(|t| t["principal"] == OPERATOR),
        "{tokens:?}"
    );
}
