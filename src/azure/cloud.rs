//! The endpoints of the configured Azure cloud, and the HTTPS transport that reaches it.
//!
//! Promises: every client keyflip builds uses one `reqwest` client (ring-only rustls,
//! no redirects, bounded connect and read timeouts) that trusts the system roots plus
//! the configured CA bundle; `azure_identity` gets the cloud's authority host through
//! `azure_core::cloud`; Key Vault's challenge-resource check is switched off only for a
//! custom cloud's loopback vault host.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::http::{HttpClient, Transport};
use url::Url;

use super::Error;
use crate::config::{CloudConfig, CloudKind};

/// The Log Analytics query API's token audience in the public cloud.
pub const LOG_ANALYTICS_AUDIENCE: &str = "https://api.loganalytics.io";

/// A cloud's resolved endpoints.
#[derive(Clone, Debug)]
pub struct Cloud {
    pub arm_url: Url,
    /// The resource ARM tokens are issued for; the scope is this plus `/.default`.
    pub arm_audience: String,
    pub authority_host: Url,
    pub key_vault_suffix: Option<String>,
    pub storage_suffix: Option<String>,
    /// The Log Analytics query API (`https://api.loganalytics.io`), if the cloud has
    /// one; tokens for it are issued for [`Cloud::log_analytics_audience`].
    pub log_analytics_url: Option<Url>,
    pub ca_bundle: Option<PathBuf>,
    sdk: Arc<CloudConfiguration>,
    custom: bool,
}

impl Cloud {
    pub fn from_config(config: &CloudConfig) -> Result<Cloud, Error> {
        let known = |arm: &str,
                     login: &str,
                     kv: &str,
                     storage: &str,
                     logs: &str,
                     sdk|
         -> Result<Cloud, Error> {
            Ok(Cloud {
                arm_url: parse_builtin(arm)?,
                arm_audience: arm.trim_end_matches('/').to_owned(),
                authority_host: parse_builtin(login)?,
                key_vault_suffix: Some(kv.to_owned()),
                storage_suffix: Some(storage.to_owned()),
                log_analytics_url: Some(parse_builtin(logs)?),
                ca_bundle: config.ca_bundle.clone(),
                sdk: Arc::new(sdk),
                custom: false,
            })
        };
        match &config.kind {
            CloudKind::Public => known(
                "https://management.azure.com/",
                "https://login.microsoftonline.com",
                "vault.azure.net",
                "core.windows.net",
                "https://api.loganalytics.io",
                CloudConfiguration::AzurePublic,
            ),
            CloudKind::China => known(
                "https://management.chinacloudapi.cn/",
                "https://login.chinacloudapi.cn",
                "vault.azure.cn",
                "core.chinacloudapi.cn",
                "https://api.loganalytics.azure.cn",
                CloudConfiguration::AzureChina,
            ),
            CloudKind::UsGov => known(
                "https://management.usgovcloudapi.net/",
                "https://login.microsoftonline.us",
                "vault.usgovcloudapi.net",
                "core.usgovcloudapi.net",
                "https://api.loganalytics.us",
                CloudConfiguration::AzureGovernment,
            ),
            CloudKind::Custom(c) => {
                let mut sdk = CustomConfiguration::default();
                sdk.authority_host = c.authority_host.as_str().trim_end_matches('/').to_owned();
                Ok(Cloud {
                    arm_url: c.arm_url.clone(),
                    arm_audience: c.arm_audience.clone(),
                    authority_host: c.authority_host.clone(),
                    key_vault_suffix: c.key_vault_suffix.clone(),
                    storage_suffix: c.storage_suffix.clone(),
                    log_analytics_url: c.log_analytics_url.clone(),
                    ca_bundle: config.ca_bundle.clone(),
                    sdk: Arc::new(CloudConfiguration::Custom(sdk)),
                    custom: true,
                })
            }
        }
    }

    pub fn arm_scope(&self) -> String {
        format!("{}/.default", self.arm_audience)
    }

    /// The resource Key Vault tokens are issued for (`https://vault.azure.net` in the
    /// public cloud), when the cloud's vault suffix is known. Vaults name it in their
    /// 401 challenge too, which is what the Key Vault client uses.
    pub fn key_vault_audience(&self) -> Option<String> {
        self.key_vault_suffix
            .as_deref()
            .map(|s| format!("https://{s}"))
    }

    /// The resource Log Analytics query tokens are issued for: the query API's own
    /// origin in the named clouds, and `https://api.loganalytics.io` (what Entra ID and
    /// keyflip-twin issue for the public API's scope) for a custom cloud.
    pub fn log_analytics_audience(&self) -> String {
        match &self.log_analytics_url {
            Some(url) if !self.custom => url.as_str().trim_end_matches('/').to_owned(),
            _ => LOG_ANALYTICS_AUDIENCE.to_owned(),
        }
    }

    /// The `azure_core` cloud configuration, for credentials.
    pub fn sdk_cloud(&self) -> Arc<CloudConfiguration> {
        self.sdk.clone()
    }

    /// Whether Key Vault's challenge-resource check stays on for this vault. It
    /// requires the vault host to be a subdomain of the challenge's resource, which a
    /// loopback host never is; only a custom cloud may serve vaults there.
    pub fn verify_vault_challenge(&self, vault: &Url) -> bool {
        !(self.custom && is_loopback(vault))
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// The fixed endpoints above are valid URLs (a test builds every named cloud), so
/// this never fails in practice; it reports rather than panics all the same.
fn parse_builtin(s: &str) -> Result<Url, Error> {
    Url::parse(s).map_err(|e| Error::Invalid(format!("built-in endpoint {s} is not a URL: {e}")))
}

/// The HTTPS client every keyflip Azure client shares.
pub fn http_client(cloud: &Cloud) -> Result<Arc<dyn HttpClient>, Error> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(20))
        .read_timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = &cloud.ca_bundle {
        let pem = std::fs::read(path).map_err(|e| {
            Error::Invalid(format!(
                "cannot read the CA bundle {} named by [cloud] ca_bundle: {e}",
                path.display()
            ))
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            Error::Invalid(format!(
                "the CA bundle {} is not a PEM certificate bundle: {e}",
                path.display()
            ))
        })?;
        if certs.is_empty() {
            return Err(Error::Invalid(format!(
                "the CA bundle {} holds no certificate; expected one or more PEM 'BEGIN CERTIFICATE' blocks",
                path.display()
            )));
        }
        builder = builder.tls_certs_merge(certs);
    }
    let client = builder
        .build()
        .map_err(|e| Error::Invalid(format!("cannot build the HTTPS client: {e}")))?;
    Ok(Arc::new(client))
}

pub(crate) fn transport(http: &Arc<dyn HttpClient>) -> Transport {
    Transport::new(http.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CustomCloud;

    #[test]
    fn named_clouds_have_their_endpoints() {
        for kind in [CloudKind::Public, CloudKind::China, CloudKind::UsGov] {
            let cloud = Cloud::from_config(&CloudConfig {
                kind,
                ca_bundle: None,
            })
            .unwrap();
            assert_eq!(cloud.arm_url.scheme(), "https");
            assert!(cloud.arm_scope().ends_with("/.default"));
            assert!(!cloud.arm_scope().contains("//.default"));
            let vault = Url::parse("https://127.0.0.1/keyvault/x").unwrap();
            assert!(cloud.verify_vault_challenge(&vault));
        }
    }

    #[test]
    fn only_custom_loopback_vaults_skip_the_challenge_check() {
        let cloud = Cloud::from_config(&CloudConfig {
            kind: CloudKind::Custom(Box::new(CustomCloud {
                arm_url: Url::parse("https://127.0.0.1:4443/").unwrap(),
                arm_audience: "https://management.azure.com".into(),
                authority_host: Url::parse("https://127.0.0.1:4443").unwrap(),
                key_vault_suffix: None,
                storage_suffix: None,
                log_analytics_url: None,
            })),
            ca_bundle: None,
        })
        .unwrap();
        let url = |s: &str| Url::parse(s).unwrap();
        assert!(!cloud.verify_vault_challenge(&url("https://127.0.0.1:4443/keyvault/kv")));
        assert!(!cloud.verify_vault_challenge(&url("https://[::1]:4443/keyvault/kv")));
        assert!(!cloud.verify_vault_challenge(&url("https://localhost/kv")));
        assert!(cloud.verify_vault_challenge(&url("https://kv.vault.example.org/")));
    }
}
