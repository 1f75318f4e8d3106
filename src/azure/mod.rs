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
//! [`authorization`], [`keyvault`], [`probe`], [`databricks`].

mod arm;
pub mod authorization;
pub mod budget;
pub mod certificate;
pub mod chain;
pub mod cloud;
pub mod credential;
pub mod databricks;
pub mod datastore;
mod error;
mod http;
pub mod inventory;
pub mod keyvault;
pub mod ml;
#[cfg(test)]
mod mock;
pub mod monitor;
pub mod probe;
pub mod roles;
pub mod shared_key;
pub mod storage;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use azure_core::http::HttpClient;
use azure_security_keyvault_secrets::SecretClient;

pub use cloud::Cloud;
pub use databricks::DATABRICKS_AUDIENCE;
pub use error::{Call, Denial, Error};
pub use http::RetryPolicy;

use crate::config::{Config, Env, process_env};
use crate::secret::{Fingerprint, Fingerprinter, StorageKey};

/// Tuning for [`Azure`]. The defaults suit production; tests shorten the waits.
#[derive(Clone, Debug)]
pub struct AzureOptions {
    pub retry: RetryPolicy,
    /// How often a long-running operation is polled when Azure gives no `Retry-After`.
    pub lro_poll: Duration,
    /// How long to wait, after an ambiguous `regenerateKey` failure, before reading the
    /// keys back (a request still in flight inside Azure may land meanwhile).
    pub reconcile_delay: Duration,
}

impl Default for AzureOptions {
    fn default() -> Self {
        AzureOptions {
            retry: RetryPolicy::default(),
            lro_poll: Duration::from_secs(10),
            reconcile_delay: Duration::from_secs(3),
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
    databricks: http::Sender,
    /// The Log Analytics query API (the usage gate).
    logs: http::Sender,
    probe: http::Sender,
    vaults: Mutex<HashMap<String, Arc<SecretClient>>>,
    fingerprinter: Arc<Fingerprinter>,
    options: AzureOptions,
    /// Shared write budgets (ARM per subscription, Key Vault per vault), when the
    /// daemon configured them.
    budgets: Option<Arc<budget::Budgets>>,
}

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
        let http = cloud::http_client(&cloud)?;
        let credential::Built {
            credential,
            identity,
        } = credential::build(&config.credential, &cloud, &http, env)?;
        let arm_sender = http::Sender::bearer(
            &http,
            credential.clone(),
            &cloud.arm_audience,
            options.retry.clone(),
        );
        let databricks = http::Sender::bearer(
            &http,
            credential.clone(),
            DATABRICKS_AUDIENCE,
            options.retry.clone(),
        );
        let logs = http::Sender::bearer(
            &http,
            credential.clone(),
            &cloud.log_analytics_audience(),
            options.retry.clone(),
        );
        let probe = shared_key::sender(&http);
        Ok(Azure {
            arm: arm::Arm::new(arm_sender, cloud.arm_url.clone(), options.lro_poll),
            cloud,
            http,
            credential,
            identity,
            databricks,
            logs,
            probe,
            vaults: Mutex::new(HashMap::new()),
            fingerprinter,
            options,
            budgets: None,
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

    /// A facade on a scripted transport, the public cloud and a fixed token.
    #[cfg(test)]
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
                    options.retry.clone(),
                ),
                cloud.arm_url.clone(),
                options.lro_poll,
            ),
            databricks: http::Sender::bearer(
                &http,
                credential.clone(),
                DATABRICKS_AUDIENCE,
                options.retry.clone(),
            ),
            logs: http::Sender::bearer(
                &http,
                credential.clone(),
                &cloud.log_analytics_audience(),
                options.retry.clone(),
            ),
            probe: shared_key::sender(&http),
            cloud,
            http,
            credential,
            identity: credential::Identity::Fixed("a fixed test token".into()),
            vaults: Mutex::new(HashMap::new()),
            fingerprinter: Arc::new(Fingerprinter::from_bytes(b"unit tests")),
            options,
            budgets: None,
        }
    }

    pub fn cloud(&self) -> &Cloud {
        &self.cloud
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
            Err(e) => Err(Error::Credential {
                audience: audience.to_owned(),
                transient: credential::is_network_failure(&e),
                detail: e.to_string(),
            }),
        }
    }
}
