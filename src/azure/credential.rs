//! Builds the one Entra ID credential keyflip uses, from `[credential]`.
//!
//! All kinds go through `azure_identity` 1.x and share keyflip's HTTPS transport and
//! cloud, so a custom cloud's authority host and CA bundle apply to token requests too.
//! A client secret is read from its file (or `AZURE_CLIENT_SECRET`) here, once, and
//! kept only as `azure_core`'s `Secret`, handed to `azure_identity`.
//!
//! Client-secret, managed-identity and workload-identity credentials keep one
//! `azure_identity` credential per token scope ([`PerAudience`]), so tokens for
//! different services are requested concurrently (the rotation prefetches them while
//! its first reads are in flight).

use std::sync::Arc;

use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::{ClientOptions, HttpClient};
use azure_identity::{
    AzureCliCredential, AzureCliCredentialOptions, ClientAssertionCredential,
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions,
    ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};

use super::Error;
use super::certificate::{CertificateAssertion, ClientCertificate};
use super::chain::{DefaultChain, Judge, Link, LinkKind};
use super::cloud::{Cloud, transport};
use crate::config::{CredentialConfig, Env};

/// The credential keyflip built, and how to name it to people.
pub struct Built {
    pub credential: Arc<dyn TokenCredential>,
    pub identity: Identity,
}

/// Which credential is in use: fixed by the configuration, or chosen by the default
/// chain at the first token.
#[derive(Clone, Debug)]
pub enum Identity {
    Fixed(String),
    Chain(Arc<DefaultChain>),
}

impl Identity {
    /// "client certificate of app 5f2d…", or "default chain: managed identity (App
    /// Service endpoint)" once the chain has chosen.
    pub(crate) fn describe(&self) -> String {
        match self {
            Identity::Fixed(what) => what.clone(),
            Identity::Chain(chain) => match chain.chosen() {
                Some(link) => format!("default chain: {link}"),
                None => "default chain (no link has given a token yet)".into(),
            },
        }
    }
}

/// The credential `config` describes, reaching Entra ID through `http`.
pub fn build(
    config: &CredentialConfig,
    cloud: &Cloud,
    http: &Arc<dyn HttpClient>,
    env: Env,
) -> Result<Built, Error> {
    let failed = |kind: &str, e: azure_core::Error| Error::Credential {
        audience: "(any)".into(),
        detail: format!("cannot set up the {kind} credential: {e}"),
        transient: false,
    };
    let fixed = |credential: Arc<dyn TokenCredential>, what: String| Built {
        credential,
        identity: Identity::Fixed(what),
    };
    Ok(match config {
        CredentialConfig::ManagedIdentity { client_id } => fixed(
            PerAudience::shared({
                let client_id = client_id.clone();
                let cloud = cloud.clone();
                let http = http.clone();
                move || -> Result<Arc<dyn TokenCredential>, azure_core::Error> {
                    Ok(ManagedIdentityCredential::new(Some(
                        ManagedIdentityCredentialOptions {
                            user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                            client_options: client_options(&cloud, &http),
                        },
                    ))?)
                }
            })
            .map_err(|e| failed("managed-identity", e))?,
            match client_id {
                Some(id) => format!("managed identity (user-assigned, client id {id})"),
                None => "managed identity (system-assigned)".into(),
            },
        ),
        CredentialConfig::WorkloadIdentity {
            tenant_id,
            client_id,
            token_file,
        } => fixed(
            PerAudience::shared({
                let (tenant_id, client_id, token_file) =
                    (tenant_id.clone(), client_id.clone(), token_file.clone());
                let cloud = cloud.clone();
                let http = http.clone();
                move || -> Result<Arc<dyn TokenCredential>, azure_core::Error> {
                    Ok(WorkloadIdentityCredential::new(Some(
                        WorkloadIdentityCredentialOptions {
                            credential_options: ClientAssertionCredentialOptions {
                                client_options: client_options(&cloud, &http),
                            },
                            client_id: Some(client_id.clone()),
                            tenant_id: Some(tenant_id.clone()),
                            token_file_path: Some(token_file.clone()),
                        },
                    ))?)
                }
            })
            .map_err(|e| failed("workload-identity", e))?,
            format!("workload identity of app {client_id}"),
        ),
        CredentialConfig::ClientSecret {
            tenant_id,
            client_id,
            secret,
        } => {
            let value = Secret::new(secret.read(env)?.to_string());
            fixed(
                PerAudience::shared({
                    let (tenant_id, client_id) = (tenant_id.clone(), client_id.clone());
                    let cloud = cloud.clone();
                    let http = http.clone();
                    move || -> Result<Arc<dyn TokenCredential>, azure_core::Error> {
                        Ok(ClientSecretCredential::new(
                            &tenant_id,
                            client_id.clone(),
                            value.clone(),
                            Some(ClientSecretCredentialOptions {
                                client_options: client_options(&cloud, &http),
                            }),
                        )?)
                    }
                })
                .map_err(|e| failed("client-secret", e))?,
                format!("client secret of app {client_id}"),
            )
        }
        CredentialConfig::ClientCertificate {
            tenant_id,
            client_id,
            certificate_file,
        } => {
            let (credential, thumbprint) =
                certificate_credential(tenant_id, client_id, certificate_file, cloud, http, env)?;
            fixed(
                credential,
                format!("client certificate of app {client_id} (x5t#S256 {thumbprint})"),
            )
        }
        CredentialConfig::AzureCli { tenant_id } => fixed(
            AzureCliCredential::new(Some(AzureCliCredentialOptions {
                tenant_id: tenant_id.clone(),
                ..Default::default()
            }))
            .map_err(|e| failed("azure-cli", e))?,
            "Azure CLI (az login)".into(),
        ),
        CredentialConfig::Default {
            managed_identity_client_id,
            links,
        } => {
            let chain = Arc::new(DefaultChain::new(
                links
                    .iter()
                    .map(|kind| {
                        link(
                            *kind,
                            managed_identity_client_id.as_deref(),
                            cloud,
                            http,
                            env,
                        )
                    })
                    .collect(),
            ));
            Built {
                credential: chain.clone(),
                identity: Identity::Chain(chain),
            }
        }
    })
}

/// One credential per token scope, each made by `make` when its scope is first asked
/// for. An `azure_identity` credential holds its token cache's one write lock across a
/// token request, so with one credential the tokens of the consumers' services a
/// rotation needs would be requested one after the other; with one per scope they
/// are requested at once (and each scope still has at most one request in flight).
struct PerAudience {
    make: Box<dyn Fn() -> Result<Arc<dyn TokenCredential>, azure_core::Error> + Send + Sync>,
    by_scope: std::sync::Mutex<std::collections::HashMap<Vec<String>, Arc<dyn TokenCredential>>>,
}

impl std::fmt::Debug for PerAudience {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PerAudience")
    }
}

impl PerAudience {
    /// Makes the first credential now, so a configuration error shows at start-up.
    fn shared(
        make: impl Fn() -> Result<Arc<dyn TokenCredential>, azure_core::Error> + Send + Sync + 'static,
    ) -> Result<Arc<dyn TokenCredential>, azure_core::Error> {
        make()?;
        Ok(Arc::new(PerAudience {
            make: Box::new(make),
            by_scope: std::sync::Mutex::default(),
        }))
    }
}

#[async_trait::async_trait]
impl TokenCredential for PerAudience {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        let key: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
        let credential = {
            let mut by_scope = self.by_scope.lock().map_err(|_| {
                azure_core::Error::with_message(
                    azure_core::error::ErrorKind::Credential,
                    "the per-audience credential map was poisoned by a panic",
                )
            })?;
            match by_scope.get(&key) {
                Some(credential) => credential.clone(),
                None => {
                    let credential = (self.make)()?;
                    by_scope.insert(key, credential.clone());
                    credential
                }
            }
        };
        credential.get_token(scopes, options).await
    }
}

fn client_options(cloud: &Cloud, http: &Arc<dyn HttpClient>) -> ClientOptions {
    ClientOptions {
        transport: Some(transport(http)),
        cloud: Some(cloud.sdk_cloud()),
        user_agent: super::http::user_agent(),
        // The SDK's own retry of a token request is short (its default retries for a
        // minute, and keyflip retries a transient token failure again around it, so a
        // persistent Entra ID outage held one call for minutes); keyflip's retry
        // policy, with its backoff and interruption, does the rest.
        retry: azure_core::http::RetryOptions::exponential(
            azure_core::http::ExponentialRetryOptions {
                max_total_elapsed: azure_core::time::Duration::seconds(10),
                ..Default::default()
            },
        ),
        ..Default::default()
    }
}

/// A client-certificate credential: keyflip's assertion signer behind
/// `azure_identity`'s `ClientAssertionCredential`. Returns it and the thumbprint.
fn certificate_credential(
    tenant_id: &str,
    client_id: &str,
    file: &std::path::Path,
    cloud: &Cloud,
    http: &Arc<dyn HttpClient>,
    env: Env,
) -> Result<(Arc<dyn TokenCredential>, String), Error> {
    use crate::config::PrivateFileError;
    crate::config::check_private_file(file, "client certificate", env).map_err(|e| match e {
        PrivateFileError::Io(io) => Error::Invalid(format!(
            "cannot read the client certificate {}: {io}",
            file.display()
        )),
        PrivateFileError::TooOpen(e) => Error::Invalid(e.to_string()),
    })?;
    let certificate = Arc::new(ClientCertificate::from_file(file)?);
    let thumbprint = certificate.thumbprint_s256().to_owned();
    // The assertion's audience is the URL azure_identity posts to.
    let token_endpoint = format!(
        "{}/{tenant_id}/oauth2/v2.0/token",
        cloud.authority_host.as_str().trim_end_matches('/')
    );
    let assertion = CertificateAssertion {
        certificate,
        client_id: client_id.to_owned(),
        token_endpoint,
    };
    let credential = ClientAssertionCredential::new(
        tenant_id.to_owned(),
        client_id.to_owned(),
        assertion,
        Some(ClientAssertionCredentialOptions {
            client_options: client_options(cloud, http),
        }),
    )
    .map_err(|e| Error::Credential {
        audience: "(any)".into(),
        detail: format!("cannot set up the client-certificate credential: {e}"),
        transient: false,
    })?;
    Ok((credential, thumbprint))
}

/// One link of the default chain, from the environment (see [`super::chain`]).
fn link(
    kind: LinkKind,
    managed_identity_client_id: Option<&str>,
    cloud: &Cloud,
    http: &Arc<dyn HttpClient>,
    env: Env,
) -> Link {
    let missing = |names: &[&str]| -> Vec<String> {
        names
            .iter()
            .filter(|n| env(n).is_none())
            .map(|n| (*n).to_owned())
            .collect()
    };
    let unavailable = |why: String| Link::Unavailable { kind, why };
    let broken = |why: String| Link::Broken { kind, why };
    let ready = |detail: String, credential: Arc<dyn TokenCredential>, judge: Judge| Link::Ready {
        kind,
        detail,
        credential,
        probe: None,
        judge,
    };
    match kind {
        LinkKind::Environment => {
            let absent = missing(&["AZURE_TENANT_ID", "AZURE_CLIENT_ID"]);
            let (Some(tenant), Some(client)) = (env("AZURE_TENANT_ID"), env("AZURE_CLIENT_ID"))
            else {
                return unavailable(format!("{} not set", absent.join(" and ")));
            };
            if let Some(secret) = env("AZURE_CLIENT_SECRET") {
                return match ClientSecretCredential::new(
                    &tenant,
                    client.clone(),
                    Secret::new(secret),
                    Some(ClientSecretCredentialOptions {
                        client_options: client_options(cloud, http),
                    }),
                ) {
                    Ok(c) => ready(
                        format!("AZURE_CLIENT_SECRET of app {client}"),
                        c,
                        Judge::Stops,
                    ),
                    Err(e) => broken(format!("the client secret credential: {e}")),
                };
            }
            if let Some(path) = env("AZURE_CLIENT_CERTIFICATE_PATH") {
                if env("AZURE_CLIENT_CERTIFICATE_PASSWORD").is_some() {
                    return broken(
                        "AZURE_CLIENT_CERTIFICATE_PASSWORD is set, but keyflip reads only unencrypted PEM certificates; decrypt it into a private file and unset the password".into(),
                    );
                }
                return match certificate_credential(
                    &tenant,
                    &client,
                    std::path::Path::new(&path),
                    cloud,
                    http,
                    env,
                ) {
                    Ok((c, thumbprint)) => ready(
                        format!(
                            "AZURE_CLIENT_CERTIFICATE_PATH of app {client}, x5t#S256 {thumbprint}"
                        ),
                        c,
                        Judge::Stops,
                    ),
                    Err(e) => broken(e.to_string()),
                };
            }
            let mut why =
                "neither AZURE_CLIENT_SECRET nor AZURE_CLIENT_CERTIFICATE_PATH is set".to_owned();
            if env("AZURE_USERNAME").is_some() {
                why.push_str(
                    "; AZURE_USERNAME/AZURE_PASSWORD are not supported (the flow cannot do multi-factor authentication)",
                );
            }
            unavailable(why)
        }
        LinkKind::WorkloadIdentity => {
            let absent = missing(&[
                "AZURE_TENANT_ID",
                "AZURE_CLIENT_ID",
                "AZURE_FEDERATED_TOKEN_FILE",
            ]);
            if !absent.is_empty() {
                return unavailable(format!("{} not set", absent.join(", ")));
            }
            let (tenant, client, file) = (
                env("AZURE_TENANT_ID").unwrap_or_default(),
                env("AZURE_CLIENT_ID").unwrap_or_default(),
                env("AZURE_FEDERATED_TOKEN_FILE").unwrap_or_default(),
            );
            match WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                credential_options: ClientAssertionCredentialOptions {
                    client_options: client_options(cloud, http),
                },
                client_id: Some(client.clone()),
                tenant_id: Some(tenant),
                token_file_path: Some(file.clone().into()),
            })) {
                Ok(c) => ready(format!("app {client}, token file {file}"), c, Judge::Stops),
                Err(e) => broken(format!("AZURE_FEDERATED_TOKEN_FILE={file}: {e}")),
            }
        }
        LinkKind::ManagedIdentity => {
            let client_id = managed_identity_client_id
                .map(str::to_owned)
                .or_else(|| env("AZURE_CLIENT_ID"));
            let app_service =
                env("IDENTITY_ENDPOINT").is_some() && env("IDENTITY_HEADER").is_some();
            let mut options = client_options(cloud, http);
            // The chain decides quickly; a managed identity that does not answer
            // is "unavailable", not something to retry for a minute.
            options.retry = azure_core::http::RetryOptions::none();
            let built = ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                client_options: options,
            }));
            let who = match &client_id {
                Some(id) => format!("user-assigned {id}"),
                None => "system-assigned".to_owned(),
            };
            match built {
                Ok(c) if app_service => ready(
                    format!("{who}, App Service endpoint IDENTITY_ENDPOINT"),
                    c,
                    Judge::ManagedIdentity,
                ),
                Ok(c) => Link::Ready {
                    kind,
                    detail: format!("{who}, VM metadata endpoint {}", super::chain::IMDS),
                    credential: c,
                    probe: Some(super::chain::IMDS),
                    judge: Judge::ManagedIdentity,
                },
                Err(e) => unavailable(e.to_string()),
            }
        }
        LinkKind::AzureCli => match AzureCliCredential::new(None) {
            Ok(c) => ready("az login".into(), c, Judge::Unavailable),
            Err(e) => unavailable(e.to_string()),
        },
    }
}

/// Whether a credential failure came from the network or a throttled or failing
/// token endpoint (worth retrying) rather than from a refusal or misconfiguration.
/// `azure_identity` wraps the transport error, so
/// the cause chain is searched.
pub(crate) fn is_network_failure(e: &azure_core::Error) -> bool {
    use azure_core::error::ErrorKind;
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(az) = err.downcast_ref::<azure_core::Error>() {
            match az.kind() {
                ErrorKind::Io | ErrorKind::Connection => return true,
                // Entra ID throttling or a server error: worth a later attempt, unlike
                // a refusal (400/401).
                ErrorKind::HttpResponse { status, .. }
                    if matches!(u16::from(*status), 408 | 429 | 500..=599) =>
                {
                    return true;
                }
                _ => {}
            }
        }
        current = err.source();
    }
    false
}
