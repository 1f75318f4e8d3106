//! Builds the one Entra ID credential keyflip uses, from `[credential]`.
//!
//! All kinds go through `azure_identity` 1.x and share keyflip's HTTPS transport and
//! cloud, so a custom cloud's authority host and CA bundle apply to token requests too.
//! A client secret is read from its file (or `AZURE_CLIENT_SECRET`) here, once, and
//! handed to `azure_identity` without being copied elsewhere.

use std::sync::Arc;

use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::{ClientOptions, HttpClient};
use azure_identity::{
    AzureCliCredential, AzureCliCredentialOptions, ClientAssertionCredentialOptions,
    ClientSecretCredential, ClientSecretCredentialOptions, ManagedIdentityCredential,
    ManagedIdentityCredentialOptions, UserAssignedId, WorkloadIdentityCredential,
    WorkloadIdentityCredentialOptions,
};

use super::Error;
use super::cloud::{Cloud, transport};
use crate::config::{CredentialConfig, Env};

/// The credential `config` describes, reaching Entra ID through `http`.
pub fn build(
    config: &CredentialConfig,
    cloud: &Cloud,
    http: &Arc<dyn HttpClient>,
    env: Env,
) -> Result<Arc<dyn TokenCredential>, Error> {
    let options = || ClientOptions {
        transport: Some(transport(http)),
        cloud: Some(cloud.sdk_cloud()),
        user_agent: super::http::user_agent(),
        ..Default::default()
    };
    let failed = |kind: &str, e: azure_core::Error| Error::Credential {
        audience: "(any)".into(),
        detail: format!("cannot set up the {kind} credential: {e}"),
        transient: false,
    };
    Ok(match config {
        CredentialConfig::ManagedIdentity { client_id } => {
            ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                client_options: options(),
            }))
            .map_err(|e| failed("managed-identity", e))?
        }
        CredentialConfig::WorkloadIdentity {
            tenant_id,
            client_id,
            token_file,
        } => WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
            credential_options: ClientAssertionCredentialOptions {
                client_options: options(),
            },
            client_id: Some(client_id.clone()),
            tenant_id: Some(tenant_id.clone()),
            token_file_path: Some(token_file.clone()),
        }))
        .map_err(|e| failed("workload-identity", e))?,
        CredentialConfig::ClientSecret {
            tenant_id,
            client_id,
            secret,
        } => {
            let value = secret.read(env)?;
            ClientSecretCredential::new(
                tenant_id,
                client_id.clone(),
                Secret::new(value.to_string()),
                Some(ClientSecretCredentialOptions {
                    client_options: options(),
                }),
            )
            .map_err(|e| failed("client-secret", e))?
        }
        CredentialConfig::AzureCli { tenant_id } => {
            AzureCliCredential::new(Some(AzureCliCredentialOptions {
                tenant_id: tenant_id.clone(),
                ..Default::default()
            }))
            .map_err(|e| failed("azure-cli", e))?
        }
    })
}

/// Whether a credential failure came from the network (worth retrying) rather than
/// from a refusal or misconfiguration. `azure_identity` wraps the transport error, so
/// the cause chain is searched.
pub(crate) fn is_network_failure(e: &azure_core::Error) -> bool {
    use azure_core::error::ErrorKind;
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(az) = err.downcast_ref::<azure_core::Error>()
            && matches!(az.kind(), ErrorKind::Io | ErrorKind::Connection)
        {
            return true;
        }
        current = err.source();
    }
    false
}
