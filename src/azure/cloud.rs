//! The endpoints of the configured Azure cloud, and the HTTPS transport that reaches it.
//!
//! Promises: every client keyflip builds uses one `reqwest` client (ring-only rustls,
//! no redirects, bounded connect and read timeouts) that trusts the system roots plus
//! the configured CA bundle (never `SSL_CERT_FILE`: `process::harden` removes it); a
//! certificate it refuses is a permanent [`CertificateRejected`] naming the problem,
//! never retried as if it were a network error; `azure_identity` gets the cloud's authority host through
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
    /// Which blob endpoints ARM may report for a storage account: the only places a
    /// SharedKey-signed request goes.
    pub blob_endpoints: BlobEndpoints,
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
                blob_endpoints: BlobEndpoints::Suffix {
                    suffix: storage.to_owned(),
                    dns_zones: matches!(config.kind, CloudKind::Public),
                },
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
                    blob_endpoints: match (&c.blob_endpoint, &c.storage_suffix) {
                        (Some(pattern), _) => BlobEndpoints::Pattern(pattern.clone()),
                        (None, Some(suffix)) => BlobEndpoints::Suffix {
                            suffix: suffix.clone(),
                            dns_zones: false,
                        },
                        (None, None) => BlobEndpoints::Unknown,
                    },
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

/// The blob endpoints a cloud's storage accounts have. ARM reports an account's
/// endpoint (`primaryEndpoints.blob`); keyflip signs requests for it and writes it into
/// connection strings, so an endpoint outside these is refused rather than trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobEndpoints {
    /// `https://{account}.blob.{suffix}/`; in the public cloud also Azure DNS zone
    /// endpoints, `https://{account}.z{00-99}.blob.storage.azure.net/` (see "Azure DNS
    /// zone endpoints" in Microsoft Learn's storage account overview).
    Suffix { suffix: String, dns_zones: bool },
    /// A custom cloud's `[cloud] blob_endpoint`, with `{account}` for the name.
    Pattern(String),
    /// A custom cloud that names neither `blob_endpoint` nor `storage_suffix`.
    Unknown,
}

const PLACEHOLDER: &str = "{account}";

/// Storage account names: 3 to 24 lower-case letters and digits.
fn is_account_name(s: &str) -> bool {
    (3..=24).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

impl BlobEndpoints {
    /// Whether `url` is `account`'s blob endpoint in this cloud; if not, why.
    pub fn check(&self, account: &str, url: &Url) -> Result<(), String> {
        if url.scheme() != "https" {
            return Err(format!(
                "it is {}, not HTTPS, and keyflip never sends a signed request in the clear",
                url.scheme()
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("it carries user-info".into());
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("it has a query or fragment".into());
        }
        let account = account.to_ascii_lowercase();
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let root = matches!(url.path(), "" | "/");
        match self {
            BlobEndpoints::Suffix { suffix, dns_zones } => {
                let standard = format!("{account}.blob.{}", suffix.to_ascii_lowercase());
                let zone = *dns_zones
                    && host
                        .strip_prefix(&format!("{account}.z"))
                        .and_then(|rest| rest.strip_suffix(".blob.storage.azure.net"))
                        .is_some_and(|n| n.len() == 2 && n.bytes().all(|b| b.is_ascii_digit()));
                if (host == standard || zone) && url.port().is_none() && root {
                    Ok(())
                } else {
                    Err(format!("the cloud's blob endpoint for {account} is https://{standard}/"))
                }
            }
            BlobEndpoints::Pattern(pattern) => {
                let expected = Url::parse(&pattern.replace(PLACEHOLDER, &account))
                    .map_err(|e| format!("[cloud] blob_endpoint does not make a URL: {e}"))?;
                let path = |u: &Url| u.path().trim_end_matches('/').to_owned();
                if url.origin() == expected.origin() && path(url) == path(&expected) {
                    Ok(())
                } else {
                    Err(format!(
                        "[cloud] blob_endpoint says {account}'s endpoint is {expected}"
                    ))
                }
            }
            BlobEndpoints::Unknown => Err(
                "the custom cloud names no storage endpoints: set [cloud] blob_endpoint (or storage_suffix) in keyflip.toml"
                    .into(),
            ),
        }
    }

    /// Whether a request to `url` goes to some account's blob endpoint of this cloud
    /// (any path and query below it): the probe pipeline's check.
    pub fn admits_any(&self, url: &Url) -> Result<(), String> {
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let ok = match self {
            BlobEndpoints::Suffix { suffix, dns_zones } => {
                let standard = host
                    .strip_suffix(&format!(".blob.{}", suffix.to_ascii_lowercase()))
                    .is_some_and(is_account_name);
                let zone = *dns_zones
                    && host
                        .strip_suffix(".blob.storage.azure.net")
                        .and_then(|h| h.rsplit_once(".z"))
                        .is_some_and(|(name, n)| {
                            is_account_name(name)
                                && n.len() == 2
                                && n.bytes().all(|b| b.is_ascii_digit())
                        });
                (standard || zone) && url.port().is_none()
            }
            BlobEndpoints::Pattern(pattern) => {
                let sentinel = "kfaccountsentinel";
                match Url::parse(&pattern.replace(PLACEHOLDER, sentinel)) {
                    Err(_) => false,
                    Ok(p) => {
                        let p_host = p.host_str().unwrap_or_default().to_ascii_lowercase();
                        let host_ok = match p_host.split_once(sentinel) {
                            Some((before, after)) => host
                                .strip_prefix(before)
                                .and_then(|h| h.strip_suffix(after))
                                .is_some_and(is_account_name),
                            None => host == p_host,
                        };
                        let path_ok = match p.path().split_once(sentinel) {
                            Some((before, _)) => url
                                .path()
                                .strip_prefix(before)
                                .map(|rest| rest.split('/').next().unwrap_or_default())
                                .is_some_and(is_account_name),
                            None => url.path().starts_with(p.path()),
                        };
                        host_ok
                            && path_ok
                            && url.port_or_known_default() == p.port_or_known_default()
                    }
                }
            }
            BlobEndpoints::Unknown => false,
        };
        if ok {
            Ok(())
        } else {
            Err("it is not a blob endpoint of the configured cloud".into())
        }
    }
}

impl std::fmt::Display for BlobEndpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlobEndpoints::Suffix { suffix, .. } => {
                write!(f, "https://{{account}}.blob.{suffix}/")
            }
            BlobEndpoints::Pattern(p) => f.write_str(p),
            BlobEndpoints::Unknown => f.write_str("(no blob endpoint configured)"),
        }
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

/// A server certificate the TLS stack refused. It is permanent (a retry meets the
/// same certificate), so it travels as an `azure_core` error of kind `Other`, which
/// neither keyflip nor the SDK retries, and becomes [`Error::Certificate`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the server certificate of {origin} is not accepted: {problem}; if this endpoint is right (a private CA, a TLS-inspecting proxy), add its CA certificate to [cloud] ca_bundle in keyflip.toml (keyflip does not read SSL_CERT_FILE or SSL_CERT_DIR)"
)]
pub struct CertificateRejected {
    pub origin: String,
    pub problem: String,
}

/// What is wrong with a certificate, in words, if `error` is a certificate problem.
fn certificate_problem(error: &rustls::Error) -> Option<String> {
    use rustls::CertificateError as C;
    match error {
        rustls::Error::InvalidCertificate(c) => Some(match c {
            C::UnknownIssuer => {
                "it is signed by a certificate authority keyflip does not trust".to_owned()
            }
            C::Expired | C::ExpiredContext { .. } => "it has expired".to_owned(),
            C::NotValidYet | C::NotValidYetContext { .. } => "it is not valid yet".to_owned(),
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                "it is not valid for this host name".to_owned()
            }
            C::Revoked => "it has been revoked".to_owned(),
            C::BadSignature => "its signature does not verify".to_owned(),
            other => format!("it is invalid ({other:?})"),
        }),
        rustls::Error::NoCertificatesPresented => {
            Some("the server presented no certificate".to_owned())
        }
        _ => None,
    }
}

/// Walks an error's causes. `io::Error` hides the error it wraps from `source()`
/// (it returns that error's own source), so it is unwrapped by hand.
fn find_in_chain<'a, T: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut next = Some(error);
    for _ in 0..32 {
        let e = next?;
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        next = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

/// The certificate refusal inside an `azure_core` error, however deeply the SDK
/// wrapped it (a token request inside a credential inside a client call).
pub(crate) fn certificate_rejected(error: &azure_core::Error) -> Option<&CertificateRejected> {
    find_in_chain::<CertificateRejected>(error)
}

/// keyflip's transport: reqwest, with certificate refusals made permanent and named.
#[derive(Debug)]
struct Https(reqwest::Client);

#[async_trait::async_trait]
impl HttpClient for Https {
    async fn execute_request(
        &self,
        request: &azure_core::http::Request,
    ) -> azure_core::Result<azure_core::http::AsyncRawResponse> {
        let result = HttpClient::execute_request(&self.0, request).await;
        result.map_err(
            |e| match find_in_chain::<rustls::Error>(&e).and_then(certificate_problem) {
                Some(problem) => azure_core::Error::new(
                    azure_core::error::ErrorKind::Other,
                    CertificateRejected {
                        origin: super::origin::shown_origin(request.url()),
                        problem,
                    },
                ),
                None => e,
            },
        )
    }
}

/// The HTTPS client every keyflip Azure client shares.
pub fn http_client(cloud: &Cloud, read_timeout: Duration) -> Result<Arc<dyn HttpClient>, Error> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(20).min(read_timeout))
        .read_timeout(read_timeout)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = &cloud.ca_bundle {
        let pem =
            crate::input::read_bytes(path, crate::input::MAX_CA_BUNDLE_BYTES).map_err(|e| {
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
    Ok(Arc::new(Https(client)))
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
                blob_endpoint: None,
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

    #[test]
    fn blob_endpoints_must_be_the_clouds_https_endpoint_of_the_account() {
        let url = |s: &str| Url::parse(s).unwrap();
        let public = Cloud::from_config(&CloudConfig {
            kind: CloudKind::Public,
            ca_bundle: None,
        })
        .unwrap()
        .blob_endpoints;
        assert!(
            public
                .check("st01", &url("https://st01.blob.core.windows.net/"))
                .is_ok()
        );
        assert!(
            public
                .check("ST01", &url("https://st01.blob.core.windows.net"))
                .is_ok()
        );
        assert!(
            public
                .check("st01", &url("https://st01.z24.blob.storage.azure.net/"))
                .is_ok()
        );
        for (bad, why) in [
            ("http://st01.blob.core.windows.net/", "not HTTPS"),
            (
                "https://elsewhere.example/",
                "https://st01.blob.core.windows.net/",
            ),
            ("https://st02.blob.core.windows.net/", "st01"),
            ("https://st01.blob.core.windows.net:8443/", "st01"),
            ("https://st01.blob.core.windows.net/?x=1", "query"),
            ("https://u:p@st01.blob.core.windows.net/", "user-info"),
            ("https://st01.blob.core.windows.net.evil.example/", "st01"),
        ] {
            let e = public.check("st01", &url(bad)).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(
            public
                .admits_any(&url("https://st01.blob.core.windows.net/?restype=account"))
                .is_ok()
        );
        assert!(
            public
                .admits_any(&url("https://st01.z07.blob.storage.azure.net/"))
                .is_ok()
        );
        assert!(
            public
                .admits_any(&url("https://a.b.blob.core.windows.net/"))
                .is_err()
        );
        assert!(public.admits_any(&url("https://evil.example/")).is_err());

        let path_style = BlobEndpoints::Pattern("https://127.0.0.1:4443/{account}/".into());
        assert!(
            path_style
                .check("st01", &url("https://127.0.0.1:4443/st01/"))
                .is_ok()
        );
        assert!(
            path_style
                .check("st01", &url("https://127.0.0.1:4443/st02/"))
                .is_err()
        );
        assert!(
            path_style
                .check("st01", &url("https://localhost:4443/st01/"))
                .is_err()
        );
        assert!(
            path_style
                .admits_any(&url("https://127.0.0.1:4443/st02/?comp=x"))
                .is_ok()
        );
        assert!(
            path_style
                .admits_any(&url("https://127.0.0.1:4444/st02/"))
                .is_err()
        );
        let host_style = BlobEndpoints::Pattern("https://{account}.blob.stack.local/".into());
        assert!(
            host_style
                .check("st01", &url("https://st01.blob.stack.local/"))
                .is_ok()
        );
        assert!(
            host_style
                .admits_any(&url("https://st09.blob.stack.local/"))
                .is_ok()
        );
        assert!(
            host_style
                .admits_any(&url("https://x.st09.blob.stack.local/"))
                .is_err()
        );
        let e = BlobEndpoints::Unknown
            .check("st01", &url("https://127.0.0.1/st01/"))
            .unwrap_err();
        assert!(e.contains("blob_endpoint"), "{e}");
    }
}
