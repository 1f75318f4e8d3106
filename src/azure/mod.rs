//! All of keyflip's Azure traffic: credentials, clouds, ARM, Key Vault, the SharedKey
//! data-plane probe and Databricks. Only this module knows Azure's wire formats.
//!
//! [`Azure`] is the facade the rotation executor and `doctor` call. It is built once
//! from the configuration, shares one HTTPS client and one credential, and caches a
//! Key Vault client per vault. Its methods are typed: keys come back as
//! [`StorageKey`](crate::secret::StorageKey)s, failures as [`Error`], whose
//! [`Error::is_transient`] says whether a retry later may help. Idempotent calls are
//! retried here (with backoff, honouring `Retry-After`); `regenerateKey` never is.
//!
//! The methods live beside their wire formats: [`storage`], [`ml`], [`datastore`],
//! [`authorization`], [`keyvault`], [`probe`], [`databricks`], [`web`] (App Service
//! settings), [`datafactory`] (linked services).

mod arm;
pub mod authorization;
pub mod budget;
pub mod certificate;
pub mod chain;
pub mod cloud;
pub mod credential;
pub mod databricks;
pub mod datafactory;
pub mod datastore;
mod error;
mod http;
pub mod inventory;
pub mod keyvault;
pub mod ml;
#[cfg(any(test, feature = "fuzzing"))]
#[cfg_attr(not(test), allow(dead_code))]
mod mock;
pub mod monitor;
pub mod operations;
pub mod origin;
pub mod probe;
pub mod roles;
pub mod shared_key;
pub mod storage;
pub mod web;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use azure_core::http::HttpClient;
use azure_security_keyvault_secrets::SecretClient;
use tokio_util::sync::CancellationToken;

pub use cloud::Cloud;
pub use databricks::DATABRICKS_AUDIENCE;
pub use error::{Call, Denial, Error};
pub use http::RetryPolicy;
pub(crate) use http::{Answer, Operation, RETRY_STATUSES, Sender};

use crate::config::{Config, Env, process_env};
use crate::secret::{Fingerprint, Fingerprinter, StorageKey};

/// Which service a call goes to (a dry run's planned calls, and what it counts).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum CallService {
    Arm,
    KeyVault,
    Databricks,
    /// The storage account's blob data plane (SharedKey-signed).
    Blob,
}

impl CallService {
    /// The services besides ARM where consumers live, each with limits of its own that
    /// a dry run counts separately.
    pub const CONSUMER_SERVICES: [CallService; 2] =
        [CallService::KeyVault, CallService::Databricks];

    /// The service a planned call's target names: an ARM id, a Databricks API path,
    /// the blob endpoint, or another URL (a vault's).
    pub(crate) fn of_target(target: &str) -> CallService {
        if target.starts_with("/subscriptions/") || target.starts_with("/providers/") {
            CallService::Arm
        } else if target.contains("/api/2.0/") {
            CallService::Databricks
        } else if target.starts_with("<blob endpoint>") {
            CallService::Blob
        } else {
            CallService::KeyVault
        }
    }

    /// The service in words (`Key Vault`).
    pub fn label(self) -> &'static str {
        match self {
            CallService::Arm => "ARM",
            CallService::KeyVault => "Key Vault",
            CallService::Databricks => "Databricks",
            CallService::Blob => "Blob",
        }
    }

    /// The service's snake_case name, as serialized (`key_vault`).
    pub fn key(self) -> &'static str {
        match self {
            CallService::Arm => "arm",
            CallService::KeyVault => "key_vault",
            CallService::Databricks => "databricks",
            CallService::Blob => "blob",
        }
    }
}

/// The sender of Log Analytics queries (the usage gate): only to the cloud's query
/// API, `None` when the cloud has none.
fn logs_sender(
    http: &Arc<dyn HttpClient>,
    credential: &Arc<dyn TokenCredential>,
    cloud: &Cloud,
    retry: &RetryPolicy,
    interrupt: &CancellationToken,
) -> Option<http::Sender> {
    let url = cloud.log_analytics_url.as_ref()?;
    let mut sender = http::Sender::bearer(
        http,
        credential.clone(),
        &cloud.log_analytics_audience(),
        http::Service {
            name: "Log Analytics",
            destination: origin::Destination::origin_of(url),
        },
        retry.clone(),
    );
    sender.set_interrupt(interrupt.clone());
    Some(sender)
}

fn arm_service(cloud: &Cloud) -> http::Service {
    http::Service {
        name: "ARM",
        destination: origin::Destination::origin_of(&cloud.arm_url),
    }
}

/// Who a token says keyflip is (`oid`, `appid`/`azp`, `tid`, `idtyp`, a name), for
/// people (`doctor`, the daemon's start-up line) and for `az role assignment create`.
/// Never a secret: claims only, the token itself is not kept.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Principal {
    /// The principal's object id: what a role assignment names.
    pub object_id: Option<String>,
    /// The application (client) id of a service principal or managed identity.
    pub app_id: Option<String>,
    pub tenant_id: Option<String>,
    /// `ServicePrincipal` or `User`, as `az role assignment create
    /// --assignee-principal-type` spells it.
    pub(crate) principal_type: Option<String>,
    /// A user's sign-in name, when the token is a user's (Azure CLI credential).
    pub user: Option<String>,
}

impl Principal {
    /// The claims of a JWT's payload; an unreadable token gives an empty identity.
    pub(crate) fn from_jwt(token: &str) -> Principal {
        use base64::Engine as _;
        let claims: serde_json::Value = token
            .split('.')
            .nth(1)
            .and_then(|p| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(p.trim_end_matches('='))
                    .ok()
            })
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        let claim = |name: &str| claims.get(name).and_then(|v| v.as_str()).map(str::to_owned);
        let user = claim("upn").or_else(|| claim("unique_name"));
        let principal_type = match claim("idtyp").as_deref() {
            Some("app") => Some("ServicePrincipal".to_owned()),
            Some("user") => Some("User".to_owned()),
            _ if user.is_some() => Some("User".to_owned()),
            _ if claim("oid").is_some() => Some("ServicePrincipal".to_owned()),
            _ => None,
        };
        Principal {
            object_id: claim("oid"),
            app_id: claim("appid").or_else(|| claim("azp")),
            tenant_id: claim("tid"),
            principal_type,
            user,
        }
    }

    /// One line for people: `service principal (app 1234…, object 5678…) in tenant …`.
    pub(crate) fn describe(&self) -> String {
        let who = match (&self.user, &self.principal_type) {
            (Some(user), _) => format!("user {user}"),
            (None, Some(t)) if t == "ServicePrincipal" => "service principal".to_owned(),
            _ => "an identity".to_owned(),
        };
        let mut ids = Vec::new();
        if let Some(app) = &self.app_id {
            ids.push(format!("app {app}"));
        }
        if let Some(oid) = &self.object_id {
            ids.push(format!("object {oid}"));
        }
        let mut line = who;
        if !ids.is_empty() {
            line.push_str(&format!(" ({})", ids.join(", ")));
        }
        if let Some(tid) = &self.tenant_id {
            line.push_str(&format!(" in tenant {tid}"));
        }
        line
    }
}

/// Tuning for [`Azure`]. The defaults suit production; tests shorten the waits.
#[derive(Clone, Debug)]
pub struct AzureOptions {
    pub retry: RetryPolicy,
    /// How often a long-running operation is polled when Azure gives no `Retry-After`.
    pub lro_poll: Duration,
    /// How long to wait, after an ambiguous `regenerateKey` failure, before reading the
    /// keys back (a request still in flight inside Azure may land meanwhile).
    pub reconcile_delay: Duration,
    /// How long an answer may be silent before the attempt fails (a hung connection).
    pub read_timeout: Duration,
}

impl Default for AzureOptions {
    fn default() -> Self {
        AzureOptions {
            retry: RetryPolicy::default(),
            lro_poll: Duration::from_secs(10),
            reconcile_delay: Duration::from_secs(3),
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// keyflip's view of Azure. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct Azure {
    cloud: Cloud,
    http: Arc<dyn HttpClient>,
    credential: Arc<dyn TokenCredential>,
    /// How to name the credential in use (`doctor`, the daemon's start-up log).
    identity: credential::Identity,
    arm: arm::Arm,
    /// One sender per Databricks workspace (by origin): each may send only there.
    databricks: Mutex<HashMap<String, http::Sender>>,
    /// The Log Analytics query API (the usage gate), when the cloud has one.
    logs: Option<http::Sender>,
    probe: http::Sender,
    vaults: Mutex<HashMap<String, Arc<SecretClient>>>,
    fingerprinter: Arc<Fingerprinter>,
    options: AzureOptions,
    /// Shared write budgets (ARM per subscription, Key Vault per vault), when the
    /// daemon configured them.
    budgets: Option<Arc<budget::Budgets>>,
    /// One lock per App Service settings collection this process writes, so that its
    /// own read-modify-writes of one collection never interleave ([`web`]).
    web_writes: WebLocks,
    /// Cancelled when keyflip is interrupted: every wait of every call ends (see
    /// [`Azure::interrupt`]).
    interrupt: CancellationToken,
}

/// Per collection: the lock its writes take, holding how many PUTs this process sent
/// to it (a listing made before one of them is stale).
type WebLocks = Mutex<HashMap<String, Arc<tokio::sync::Mutex<u64>>>>;

impl Azure {
    /// Builds the facade from the configuration with default options and the process
    /// environment. Reads the client secret, if any, now; sends nothing.
    pub fn new(config: &Config, fingerprinter: Arc<Fingerprinter>) -> Result<Azure, Error> {
        Self::with_options(config, fingerprinter, AzureOptions::default(), &process_env)
    }

    pub fn with_options(
        config: &Config,
        fingerprinter: Arc<Fingerprinter>,
        options: AzureOptions,
        env: Env,
    ) -> Result<Azure, Error> {
        let cloud = Cloud::from_config(&config.cloud)?;
        let http = cloud::http_client(&cloud, options.read_timeout)?;
        let credential::Built {
            credential,
            identity,
        } = credential::build(&config.credential, &cloud, &http, env)?;
        let interrupt = CancellationToken::new();
        let mut arm_sender = http::Sender::bearer(
            &http,
            credential.clone(),
            &cloud.arm_audience,
            arm_service(&cloud),
            options.retry.clone(),
        );
        arm_sender.set_interrupt(interrupt.clone());
        let mut probe = shared_key::sender(&http, cloud.blob_endpoints.clone());
        probe.set_interrupt(interrupt.clone());
        let logs = logs_sender(&http, &credential, &cloud, &options.retry, &interrupt);
        Ok(Azure {
            interrupt,
            arm: arm::Arm::new(arm_sender, cloud.arm_url.clone(), options.lro_poll),
            cloud,
            http,
            credential,
            identity,
            databricks: Mutex::new(HashMap::new()),
            logs,
            probe,
            vaults: Mutex::new(HashMap::new()),
            fingerprinter,
            options,
            budgets: None,
            web_writes: Mutex::default(),
        })
    }

    /// Makes every ARM write and every Key Vault call wait for its share of
    /// `budgets`, which all facades of one process share (the daemon builds one).
    pub fn with_budgets(mut self, budgets: Arc<budget::Budgets>) -> Azure {
        self.arm.set_budgets(budgets.clone());
        self.budgets = Some(budgets);
        self
    }

    pub fn budgets(&self) -> Option<&Arc<budget::Budgets>> {
        self.budgets.as_ref()
    }

    /// A facade on a scripted transport, the public cloud and a fixed token (unit
    /// tests, and the fuzzer's answers from Azure).
    #[cfg(any(test, feature = "fuzzing"))]
    #[allow(clippy::panic)] // The public cloud's settings are constants.
    pub(crate) fn for_tests(http: Arc<dyn HttpClient>, options: AzureOptions) -> Azure {
        let cloud = Cloud::from_config(&crate::config::CloudConfig {
            kind: crate::config::CloudKind::Public,
            ca_bundle: None,
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let credential: Arc<dyn TokenCredential> = Arc::new(mock::FixedToken);
        Azure {
            arm: arm::Arm::new(
                http::Sender::bearer(
                    &http,
                    credential.clone(),
                    &cloud.arm_audience,
                    arm_service(&cloud),
                    options.retry.clone(),
                ),
                cloud.arm_url.clone(),
                options.lro_poll,
            ),
            databricks: Mutex::new(HashMap::new()),
            logs: logs_sender(
                &http,
                &credential,
                &cloud,
                &options.retry,
                &CancellationToken::new(),
            ),
            probe: shared_key::sender(&http, cloud.blob_endpoints.clone()),
            cloud,
            http,
            credential,
            identity: credential::Identity::Fixed("a fixed test token".into()),
            vaults: Mutex::new(HashMap::new()),
            fingerprinter: Arc::new(Fingerprinter::from_bytes(b"unit tests")),
            options,
            budgets: None,
            web_writes: Mutex::default(),
            interrupt: CancellationToken::new(),
        }
    }

    /// A sender with a bearer token for `audience` that sends only to `destination`'s
    /// origin, on this facade's transport and credential (the coordination blob
    /// client, whose origin is the configured coordination endpoint).
    pub(crate) fn bearer_sender(&self, audience: &str, destination: &url::Url) -> Sender {
        let mut sender = Sender::bearer(
            &self.http,
            self.credential.clone(),
            audience,
            http::Service {
                name: "Blob",
                destination: origin::Destination::origin_of(destination),
            },
            self.options.retry.clone(),
        );
        sender.set_interrupt(self.interrupt.clone());
        sender
    }

    /// The token that interrupts this facade: once cancelled, every call stops waiting
    /// (retry backoff, write budgets, long-running operation polls, token requests of
    /// attempts not yet sent) and fails with [`Error::Interrupted`]; an attempt already
    /// on the wire still gets its answer. A signal handler or shutdown cancels it.
    pub(crate) fn interrupt(&self) -> CancellationToken {
        self.interrupt.clone()
    }

    pub fn cloud(&self) -> &Cloud {
        &self.cloud
    }

    /// The sender for one Databricks workspace: its token goes to that origin only.
    fn databricks(&self, workspace: &url::Url) -> Result<http::Sender, Error> {
        let key = workspace.origin().ascii_serialization();
        let mut cache = self.databricks.lock().map_err(|_| {
            Error::Invalid("the Databricks client cache was poisoned by a panic".into())
        })?;
        Ok(cache
            .entry(key)
            .or_insert_with(|| {
                let mut sender = http::Sender::bearer(
                    &self.http,
                    self.credential.clone(),
                    DATABRICKS_AUDIENCE,
                    http::Service {
                        name: "Databricks",
                        destination: origin::Destination::origin_of(workspace),
                    },
                    self.options.retry.clone(),
                );
                sender.set_interrupt(self.interrupt.clone());
                sender
            })
            .clone())
    }

    /// The credential in use, for people: "client secret of app …", or the default
    /// chain's choice once it has made one.
    pub fn credential_in_use(&self) -> String {
        self.identity.describe()
    }

    /// The default chain's links as built (what each would use, or why it cannot),
    /// for the start-up log; empty for a fixed credential.
    pub fn credential_chain(&self) -> Vec<String> {
        match &self.identity {
            credential::Identity::Chain(chain) => chain.describe(),
            credential::Identity::Fixed(_) => Vec::new(),
        }
    }

    /// The fingerprint key this facade compares values under.
    pub fn fingerprinter(&self) -> &Fingerprinter {
        &self.fingerprinter
    }

    /// The fingerprint of a key under this installation's fingerprint key.
    pub fn fingerprint(&self, key: &StorageKey) -> Fingerprint {
        self.fingerprinter.fingerprint(key)
    }

    /// Who keyflip authenticates as: the claims of its own ARM token. They are read,
    /// not verified (a person reads them; Azure authorizes every call anyway), and
    /// the token is dropped at once.
    pub async fn principal(&self) -> Result<Principal, Error> {
        let audience = self.cloud.arm_audience.clone();
        let scope = format!("{}/.default", audience.trim_end_matches('/'));
        let token = self
            .credential
            .get_token(&[scope.as_str()], None)
            .await
            .map_err(|e| Error::Credential {
                audience: audience.clone(),
                transient: credential::is_network_failure(&e),
                detail: e.to_string(),
            })?;
        Ok(Principal::from_jwt(token.token.secret()))
    }

    /// Asks Entra ID for an ARM token and, at the same time, for tokens for
    /// `audiences` (the consumers' services), and keeps them in the credential's
    /// cache, so the concurrent reads that follow neither queue behind one token
    /// request each nor wait for their service's token. An ARM token that cannot be
    /// had is the error every ARM call would have met, returned once (not once per
    /// queued call); another audience's failure is only logged, as the call that needs
    /// that token asks again and reports it.
    pub(crate) async fn acquire_tokens(&self, audiences: &[String]) -> Result<(), Error> {
        let arm = self.cloud.arm_audience.clone();
        let others = audiences
            .iter()
            .filter(|a| a.trim_end_matches('/') != arm.trim_end_matches('/'))
            .map(|audience| async move {
                let scope = format!("{}/.default", audience.trim_end_matches('/'));
                if let Err(e) = self.credential.get_token(&[scope.as_str()], None).await {
                    tracing::debug!(audience, error = %e, "token prefetch failed; the call that needs it will ask again");
                }
            });
        let tokens =
            async { tokio::join!(self.check_token(&arm), futures::future::join_all(others)).0 };
        // Interruption ends the wait, as it ends a call still getting its token.
        tokio::select! {
            result = tokens => result,
            () = self.interrupt.cancelled() => Err(Error::Interrupted {
                call: error::Call {
                    operation: "entra.token",
                    target: arm,
                    request_id: None,
                }
                .into(),
                sent: false,
            }),
        }
    }

    /// Asks Entra ID for a token for `audience` (e.g. [`Cloud::arm_audience`],
    /// [`DATABRICKS_AUDIENCE`], a vault resource) and drops it: `doctor`'s check that
    /// keyflip can authenticate at all.
    pub async fn check_token(&self, audience: &str) -> Result<(), Error> {
        let scope = format!("{}/.default", audience.trim_end_matches('/'));
        match self.credential.get_token(&[scope.as_str()], None).await {
            Ok(_) => {
                tracing::debug!(audience, "token acquired");
                Ok(())
            }
            Err(e) => Err(Error::credential(audience, &e)),
        }
    }
}
