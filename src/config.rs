//! keyflip's configuration file, `keyflip.toml`: which Azure cloud to talk to, which
//! credential to use, and where plans and state live.
//!
//! The file is found through `--config`, then `KEYFLIP_CONFIG`, then
//! `/etc/keyflip/keyflip.toml`. Loading promises: every unknown key, bad value or missing
//! setting is a [`SourceError`] naming the file, line and column; relative paths are
//! resolved against the file's directory; standard `AZURE_*` environment variables fill
//! in what the file leaves out (the file wins). Loading reads no secret: a client secret
//! is read only when a credential is built ([`ClientSecretSource::read`]), and a secret
//! file anyone but keyflip's user and root can read (by mode or ACL) is refused.
//!
//! The format is documented for operators in `docs/configuration.md`.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;
use url::Url;

use crate::diagnostic::SourceError;

mod coordination;
mod credential;
mod daemon;
mod private_file;

use coordination::RawCoordination;
pub use coordination::{CoordinationConfig, DEFAULT_LEASE_SECONDS, account_of_endpoint};
use credential::RawCredential;
pub use credential::{ClientSecretSource, CredentialConfig};
use daemon::RawDaemon;
pub use daemon::{
    AZURE_LIMITS, BudgetConfig, DEFAULT_METRICS_LISTEN, DEFAULT_SOCKET, DaemonConfig, RetryConfig,
};
pub use private_file::{PrivateFileError, check_private_file};

pub(crate) const DEFAULT_CONFIG_PATH: &str = "/etc/keyflip/keyflip.toml";
pub(crate) const DEFAULT_PLANS_DIR: &str = "/etc/keyflip/rotation-plans";
pub(crate) const DEFAULT_STATE_DIR: &str = "/var/lib/keyflip";

/// Reads an environment variable; empty values count as unset. Tests pass their own.
pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, as an [`Env`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// keyflip's whole configuration, resolved and validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The file this came from; `None` when no file exists at the default path.
    pub source: Option<PathBuf>,
    pub cloud: CloudConfig,
    pub credential: CredentialConfig,
    pub plans_dir: PathBuf,
    pub state_dir: PathBuf,
    pub daemon: DaemonConfig,
    /// `[coordination]`: replicas sharing leases and a journal in Blob Storage.
    pub coordination: Option<CoordinationConfig>,
    /// `[discovery]`: where `plan discover` and the unlisted-consumer check look
    /// beyond what ARM lists.
    pub discovery: DiscoveryConfig,
}

/// `[discovery]`. Databricks has no inventory API keyflip can use across workspaces,
/// and its secrets cannot be read back, so the workspaces to look in are listed here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// Databricks workspace URLs (`https://adb-….azuredatabricks.net`) whose
    /// Databricks-backed scopes discovery looks through.
    pub databricks: Vec<Url>,
}

/// Which Azure cloud, plus an optional extra CA bundle (custom clouds, or a
/// TLS-inspecting proxy in front of a public one). The bundle is added to the system
/// roots, not substituted for them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudConfig {
    pub kind: CloudKind,
    pub ca_bundle: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloudKind {
    Public,
    China,
    UsGov,
    Custom(Box<CustomCloud>),
}

/// The endpoints of a cloud keyflip does not know by name (Azure Stack, a sovereign
/// cloud, or `keyflip-twin`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomCloud {
    pub arm_url: Url,
    /// The Entra ID resource that ARM tokens are issued for (the scope is this plus
    /// `/.default`). Defaults to `arm_url` without its trailing slash.
    pub arm_audience: String,
    pub authority_host: Url,
    /// DNS suffix of vault hosts (`vault.azure.net` in the public cloud), if any.
    pub key_vault_suffix: Option<String>,
    /// DNS suffix of storage endpoints (`core.windows.net`), if any.
    pub storage_suffix: Option<String>,
    /// The Log Analytics query API's origin (`https://api.loganalytics.io` in the
    /// public cloud), for the usage gate; `None` when the cloud has none.
    pub log_analytics_url: Option<Url>,
    /// The blob endpoint of every storage account, with `{account}` for its name
    /// (`https://{account}.blob.local.azurestack.external/`, or path-style
    /// `https://127.0.0.1:47443/{account}/` for keyflip-twin). ARM's answer must match
    /// it before keyflip signs a request for it.
    pub blob_endpoint: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        path: String,
        source: crate::input::InputError,
    },
    #[error("{0}")]
    Invalid(Box<SourceError>),
    #[error(
        "the {what} file {path} is not private: {who}; run `chmod 600 {path}` (and make sure only keyflip's user owns it, with no ACL for anyone else), or hand it to the service with systemd's LoadCredential= (files under $CREDENTIALS_DIRECTORY, and files whose ACL names only keyflip's user, are accepted as systemd creates them)"
    )]
    SecretFileTooOpen {
        what: &'static str,
        path: String,
        /// Who else can reach it, in words (group, others, an ACL entry).
        who: String,
    },
    #[error("cannot read the client secret file {path}: {source}")]
    SecretFile {
        path: String,
        source: std::io::Error,
    },
    #[error("the client secret is empty ({origin}); put the secret of the app registration there")]
    EmptySecret { origin: String },
    #[error(
        "the credential reads AZURE_CLIENT_SECRET, which is not set; set it, or set client_secret_file in [credential]"
    )]
    SecretNotInEnvironment,
}

impl From<SourceError> for ConfigError {
    fn from(e: SourceError) -> Self {
        ConfigError::Invalid(Box::new(e))
    }
}

/// Where the configuration file is, and whether the user named it (a named file must
/// exist; the default path may be absent, and then built-in defaults apply).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigPath {
    pub path: PathBuf,
    pub explicit: bool,
}

impl ConfigPath {
    /// `--config`, then `KEYFLIP_CONFIG`, then the default path.
    pub fn resolve(flag: Option<&Path>, env: Env) -> ConfigPath {
        match (flag, env("KEYFLIP_CONFIG")) {
            (Some(p), _) => ConfigPath {
                path: p.to_path_buf(),
                explicit: true,
            },
            (None, Some(p)) => ConfigPath {
                path: PathBuf::from(p),
                explicit: true,
            },
            (None, None) => ConfigPath {
                path: PathBuf::from(DEFAULT_CONFIG_PATH),
                explicit: false,
            },
        }
    }
}

impl Config {
    /// Finds and loads the configuration with the process environment.
    pub fn load(flag: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_from(&ConfigPath::resolve(flag, &process_env), &process_env)
    }

    pub(crate) fn load_from(path: &ConfigPath, env: Env) -> Result<Config, ConfigError> {
        match crate::input::read_text(&path.path, crate::input::MAX_CONFIG_BYTES) {
            Ok(text) => {
                let dir = path
                    .path
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default();
                let mut config = Self::parse(&path.path.display().to_string(), &text, &dir, env)?;
                config.source = Some(path.path.clone());
                Ok(config)
            }
            Err(e) if e.io_kind() == Some(std::io::ErrorKind::NotFound) && !path.explicit => {
                Self::parse("(built-in defaults)", "", Path::new("/"), env)
            }
            Err(source) => Err(ConfigError::Read {
                path: path.path.display().to_string(),
                source,
            }),
        }
    }

    /// Parses configuration text. `file` names it in errors; `base_dir` anchors
    /// relative paths. No error echoes a value from the file: the excerpt shows the
    /// key and hides the value (a mistyped `client_secret = "..."` line would
    /// otherwise print the secret on a terminal and, on a daemon reload, in its log).
    pub fn parse(file: &str, text: &str, base_dir: &Path, env: Env) -> Result<Config, ConfigError> {
        Self::parse_shown(file, text, base_dir, env).map_err(|e| match e {
            ConfigError::Invalid(e) => ConfigError::Invalid(Box::new(e.masked(|_| true))),
            other => other,
        })
    }

    fn parse_shown(
        file: &str,
        text: &str,
        base_dir: &Path,
        env: Env,
    ) -> Result<Config, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| SourceError::from_toml(file, text, &e))?;
        let ctx = Ctx {
            file,
            text,
            base_dir,
        };
        let cloud = ctx.cloud(raw.cloud, env)?;
        let credential = ctx.credential(raw.credential, env)?;
        // The one rule every command follows: the file's plans_dir, else
        // $KEYFLIP_PLANS_DIR, else the default (the file wins, as for AZURE_*).
        let plans_dir = raw
            .plans_dir
            .map(|p| ctx.path(p.into_inner()))
            .or_else(|| env("KEYFLIP_PLANS_DIR").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PLANS_DIR));
        let state_dir = match raw.state_dir {
            Some(p) => ctx.path(p.into_inner()),
            // systemd's StateDirectory= may list several directories, colon-separated.
            None => env("STATE_DIRECTORY")
                .and_then(|v| v.split(':').next().map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
        };
        let custom_cloud = matches!(cloud.kind, CloudKind::Custom(_));
        let daemon = ctx.daemon(
            raw.daemon.map(Spanned::into_inner).unwrap_or_default(),
            &state_dir,
            env,
            custom_cloud,
        )?;
        let coordination = raw
            .coordination
            .map(|c| {
                let host = env("HOSTNAME").or_else(|| {
                    std::fs::read_to_string("/proc/sys/kernel/hostname")
                        .ok()
                        .map(|h| h.trim().to_owned())
                        .filter(|h| !h.is_empty())
                });
                ctx.coordination(c, host)
            })
            .transpose()?;
        let discovery = ctx.discovery(raw.discovery)?;
        Ok(Config {
            source: None,
            cloud,
            credential,
            plans_dir,
            state_dir,
            daemon,
            discovery,
            coordination,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    cloud: Option<Spanned<RawCloud>>,
    credential: Option<Spanned<RawCredential>>,
    plans_dir: Option<Spanned<PathBuf>>,
    state_dir: Option<Spanned<PathBuf>>,
    daemon: Option<Spanned<RawDaemon>>,
    coordination: Option<Spanned<RawCoordination>>,
    discovery: Option<Spanned<RawDiscovery>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDiscovery {
    databricks: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCloud {
    name: Option<Spanned<RawCloudName>>,
    arm_url: Option<Spanned<String>>,
    arm_audience: Option<Spanned<String>>,
    authority_host: Option<Spanned<String>>,
    key_vault_suffix: Option<Spanned<String>>,
    storage_suffix: Option<Spanned<String>>,
    log_analytics_url: Option<Spanned<String>>,
    blob_endpoint: Option<Spanned<String>>,
    ca_bundle: Option<Spanned<PathBuf>>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum RawCloudName {
    Public,
    China,
    Usgov,
    Custom,
}

/// The file being parsed, for positioned errors and path resolution.
struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
    base_dir: &'a Path,
}

impl Ctx<'_> {
    fn error(&self, span: std::ops::Range<usize>, message: impl Into<String>) -> SourceError {
        SourceError::at(self.file, self.text, span, message)
    }

    fn path(&self, p: PathBuf) -> PathBuf {
        if p.is_absolute() {
            p
        } else {
            self.base_dir.join(p)
        }
    }

    fn https_url(&self, value: &Spanned<String>, key: &str) -> Result<Url, SourceError> {
        let bad = |why: String| {
            self.error(value.span(), format!("{key} {why}"))
                .with_hint(format!("write it as {key} = \"https://host[:port]\""))
        };
        let url = Url::parse(value.get_ref()).map_err(|e| bad(format!("is not a URL ({e})")))?;
        if url.scheme() != "https" {
            // Both the bearer-token policy and Entra ID credentials refuse plain http.
            return Err(bad(format!(
                "must use https, found '{}'; Azure credentials are never sent over plain http",
                url.scheme()
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            // User-info would travel with every request and displace the token.
            return Err(bad(
                "must not carry a user name or password (user@host); keyflip authenticates with [credential]".into(),
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad(
                "must not have a query (?...) or fragment (#...); keyflip appends its own paths and api-version".into(),
            ));
        }
        Ok(url)
    }

    /// `[cloud] blob_endpoint`: an HTTPS URL with `{account}` once, as the first label
    /// of the host or as a whole path segment.
    fn blob_pattern(&self, value: &Spanned<String>) -> Result<String, SourceError> {
        let text = value.get_ref();
        let bad = |why: &str| {
            self.error(value.span(), format!("blob_endpoint {why}"))
                .with_hint("write it as blob_endpoint = \"https://{account}.blob.example.org/\" or \"https://host:port/{account}/\"")
        };
        if text.matches("{account}").count() != 1 {
            return Err(bad("must contain {account} exactly once"));
        }
        let url = Url::parse(&text.replace("{account}", "kfaccount"))
            .map_err(|e| bad(&format!("is not a URL ({e})")))?;
        let in_host = url
            .host_str()
            .is_some_and(|h| h.split('.').next() == Some("kfaccount"));
        let in_path = url.path().split('/').any(|s| s == "kfaccount");
        if url.scheme() != "https" {
            return Err(bad(
                "must use https: keyflip never sends a signed request in the clear",
            ));
        }
        if !(in_host || in_path)
            || !url.username().is_empty()
            || url.password().is_some()
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(bad(
                "must put {account} as the first label of the host or as a path segment, with no user-info, query or fragment",
            ));
        }
        Ok(text.clone())
    }

    /// `[discovery]`: every URL https.
    fn discovery(
        &self,
        raw: Option<Spanned<RawDiscovery>>,
    ) -> Result<DiscoveryConfig, SourceError> {
        let Some(raw) = raw else {
            return Ok(DiscoveryConfig::default());
        };
        let databricks = raw
            .into_inner()
            .databricks
            .unwrap_or_default()
            .iter()
            .map(|v| {
                self.https_url(v, "databricks")
                    .map(|u| Url::parse(u.as_str().trim_end_matches('/')).unwrap_or(u))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DiscoveryConfig { databricks })
    }

    /// `[cloud]`, reconciled with `AZURE_AUTHORITY_HOST` (Microsoft's SDKs read it to
    /// pick the cloud's Entra ID authority): without a `name` in the file it selects
    /// the named cloud whose authority it is; with one, it must agree with it, so a
    /// token is never asked of one cloud for another cloud's resources.
    fn cloud(&self, raw: Option<Spanned<RawCloud>>, env: Env) -> Result<CloudConfig, SourceError> {
        let authority_env = env("AZURE_AUTHORITY_HOST");
        let named_in_file = raw
            .as_ref()
            .and_then(|r| r.get_ref().name.as_ref().map(Spanned::span));
        let config = self.cloud_from_file(raw, authority_env.as_deref())?;
        let Some(value) = authority_env else {
            return Ok(config);
        };
        let span = named_in_file.unwrap_or(0..0);
        let host = authority_host_of(&value).map_err(|why| {
            self.error(span.clone(), why)
                .with_hint("unset AZURE_AUTHORITY_HOST, or set it to https://login.microsoftonline.com, https://login.microsoftonline.us or https://login.chinacloudapi.cn")
        })?;
        let expected = match &config.kind {
            CloudKind::Public => "login.microsoftonline.com".to_owned(),
            CloudKind::UsGov => "login.microsoftonline.us".to_owned(),
            CloudKind::China => "login.chinacloudapi.cn".to_owned(),
            CloudKind::Custom(c) => c
                .authority_host
                .host_str()
                .map(|h| match c.authority_host.port() {
                    Some(p) => format!("{h}:{p}"),
                    None => h.to_owned(),
                })
                .unwrap_or_default()
                .to_ascii_lowercase(),
        };
        if host != expected {
            return Err(self
                .error(
                    span,
                    format!(
                        "AZURE_AUTHORITY_HOST is {value}, but the configured cloud's Entra ID authority is https://{expected}"
                    ),
                )
                .with_hint(
                    "a token from one cloud does not work in another: unset AZURE_AUTHORITY_HOST or make [cloud] name match it",
                ));
        }
        Ok(config)
    }

    fn cloud_from_file(
        &self,
        raw: Option<Spanned<RawCloud>>,
        authority_env: Option<&str>,
    ) -> Result<CloudConfig, SourceError> {
        // Without a cloud name in the file, AZURE_AUTHORITY_HOST picks a named cloud.
        let from_env = || -> Result<CloudKind, SourceError> {
            let Some(value) = authority_env else {
                return Ok(CloudKind::Public);
            };
            let host = authority_host_of(value).map_err(|why| self.error(0..0, why))?;
            match host.as_str() {
                "login.microsoftonline.com" => Ok(CloudKind::Public),
                "login.microsoftonline.us" => Ok(CloudKind::UsGov),
                "login.chinacloudapi.cn" => Ok(CloudKind::China),
                _ => Err(self
                    .error(
                        0..0,
                        format!(
                            "AZURE_AUTHORITY_HOST is {value}, which is not the Entra ID authority of a cloud keyflip knows"
                        ),
                    )
                    .with_hint(
                        "for another cloud set [cloud] name = \"custom\" with arm_url and authority_host (docs/configuration.md)",
                    )),
            }
        };
        let Some(raw) = raw else {
            return Ok(CloudConfig {
                kind: from_env()?,
                ca_bundle: None,
            });
        };
        let table_span = raw.span();
        let raw = raw.into_inner();
        let ca_bundle = raw.ca_bundle.map(|p| self.path(p.into_inner()));
        let name = raw
            .name
            .as_ref()
            .map_or(RawCloudName::Public, |n| *n.get_ref());
        if name != RawCloudName::Custom {
            for (key, field) in [
                ("arm_url", &raw.arm_url),
                ("arm_audience", &raw.arm_audience),
                ("authority_host", &raw.authority_host),
                ("key_vault_suffix", &raw.key_vault_suffix),
                ("storage_suffix", &raw.storage_suffix),
                ("log_analytics_url", &raw.log_analytics_url),
                ("blob_endpoint", &raw.blob_endpoint),
            ] {
                if let Some(v) = field {
                    return Err(self
                        .error(v.span(), format!("{key} is only used with name = \"custom\""))
                        .with_hint(
                            "public, china and usgov have fixed endpoints; remove the key or set name = \"custom\"",
                        ));
                }
            }
        }
        let kind = match name {
            RawCloudName::Public if raw.name.is_none() => from_env()?,
            RawCloudName::Public => CloudKind::Public,
            RawCloudName::China => CloudKind::China,
            RawCloudName::Usgov => CloudKind::UsGov,
            RawCloudName::Custom => {
                let required = |field: &Option<Spanned<String>>, key: &str| {
                    field.clone().ok_or_else(|| {
                        self.error(table_span.clone(), format!("a custom cloud needs {key}"))
                            .with_hint(format!("add {key} = \"https://...\" to [cloud]"))
                    })
                };
                let arm = required(&raw.arm_url, "arm_url")?;
                let arm_url = self.https_url(&arm, "arm_url")?;
                let authority = required(&raw.authority_host, "authority_host")?;
                let authority_host = self.https_url(&authority, "authority_host")?;
                let arm_audience = match &raw.arm_audience {
                    Some(a) => a.get_ref().trim_end_matches('/').to_owned(),
                    None => arm_url.as_str().trim_end_matches('/').to_owned(),
                };
                let suffix = |v: &Option<Spanned<String>>| {
                    v.as_ref()
                        .map(|s| s.get_ref().trim_start_matches('.').to_owned())
                };
                let log_analytics_url = raw
                    .log_analytics_url
                    .as_ref()
                    .map(|v| self.https_url(v, "log_analytics_url"))
                    .transpose()?;
                CloudKind::Custom(Box::new(CustomCloud {
                    arm_url,
                    arm_audience,
                    authority_host,
                    key_vault_suffix: suffix(&raw.key_vault_suffix),
                    storage_suffix: suffix(&raw.storage_suffix),
                    log_analytics_url,
                    blob_endpoint: raw
                        .blob_endpoint
                        .as_ref()
                        .map(|p| self.blob_pattern(p))
                        .transpose()?,
                }))
            }
        };
        Ok(CloudConfig { kind, ca_bundle })
    }
}

/// The lower-case `host[:port]` of an authority given as `https://host/` or `host`
/// (Microsoft's SDKs accept both); plain `http` is refused.
fn authority_host_of(value: &str) -> Result<String, String> {
    let with_scheme = if value.contains("://") {
        value.to_owned()
    } else {
        format!("https://{value}")
    };
    let url = Url::parse(&with_scheme)
        .map_err(|e| format!("AZURE_AUTHORITY_HOST={value} is not a URL: {e}"))?;
    if url.scheme() != "https" {
        return Err(format!(
            "AZURE_AUTHORITY_HOST={value} is not https; keyflip never sends a credential over plain HTTP"
        ));
    }
    let host = url
        .host_str()
        .ok_or_else(|| format!("AZURE_AUTHORITY_HOST={value} names no host"))?
        .to_ascii_lowercase();
    Ok(match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashMap;

    use super::*;

    pub(super) fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    pub(super) fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::parse("k.toml", text, Path::new("/etc/kf"), &env_of(env))
    }

    pub(super) fn source_error(text: &str, env: &[(&str, &str)]) -> SourceError {
        match parse(text, env) {
            Err(ConfigError::Invalid(e)) => *e,
            other => panic!("expected a positioned error, got {other:?}"),
        }
    }

    #[test]
    fn azure_authority_host_picks_or_checks_the_cloud() {
        let kind = |text: &str, host: &str| parse(text, &[("AZURE_AUTHORITY_HOST", host)]);
        // No cloud name in the file: the authority picks the named cloud.
        for (host, expected) in [
            ("https://login.microsoftonline.us/", CloudKind::UsGov),
            ("login.chinacloudapi.cn", CloudKind::China),
            ("https://LOGIN.microsoftonline.com", CloudKind::Public),
        ] {
            assert_eq!(kind("", host).unwrap().cloud.kind, expected, "{host}");
            assert_eq!(
                kind("[cloud]\nca_bundle = \"ca.pem\"\n", host)
                    .unwrap()
                    .cloud
                    .kind,
                expected
            );
        }
        // A name in the file must agree with it.
        assert_eq!(
            kind(
                "[cloud]\nname = \"usgov\"\n",
                "https://login.microsoftonline.us"
            )
            .unwrap()
            .cloud
            .kind,
            CloudKind::UsGov
        );
        let e = source_error(
            "[cloud]\nname = \"china\"\n",
            &[("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.us")],
        );
        assert_eq!(e.line, 2);
        assert!(
            e.message.contains("https://login.chinacloudapi.cn"),
            "{}",
            e.message
        );
        // Unknown authorities and plain http are refused.
        let e = source_error("", &[("AZURE_AUTHORITY_HOST", "https://login.example.org")]);
        assert!(e.hint.unwrap().contains("custom"));
        let e = source_error(
            "",
            &[("AZURE_AUTHORITY_HOST", "http://login.microsoftonline.com")],
        );
        assert!(e.message.contains("not https"), "{}", e.message);
        // A custom cloud's authority, port included, must be the one named.
        let custom = "[cloud]\nname = \"custom\"\narm_url = \"https://127.0.0.1:4443/\"\nauthority_host = \"https://127.0.0.1:4443\"\n";
        assert!(kind(custom, "https://127.0.0.1:4443/").is_ok());
        assert!(kind(custom, "https://127.0.0.1:9999/").is_err());
    }

    #[test]
    fn the_default_chain_and_certificates_are_credential_kinds() {
        let c = parse("[credential]\nkind = \"default\"\n", &[]).unwrap();
        assert_eq!(
            c.credential,
            CredentialConfig::Default {
                managed_identity_client_id: None,
                links: crate::azure::chain::LinkKind::ALL.to_vec(),
            }
        );
        let c = parse(
            "[credential]\nkind = \"default\"\nclient_id = \"mi\"\n",
            &[("AZURE_TOKEN_CREDENTIALS", "prod")],
        )
        .unwrap();
        assert!(matches!(
            c.credential,
            CredentialConfig::Default { managed_identity_client_id: Some(ref id), ref links } if id == "mi" && links.len() == 3
        ));
        let e = source_error(
            "[credential]\nkind = \"default\"\n",
            &[("AZURE_TOKEN_CREDENTIALS", "browser")],
        );
        assert!(
            e.message.contains("AZURE_TOKEN_CREDENTIALS=browser"),
            "{}",
            e.message
        );

        let c = parse(
            "[credential]\nkind = \"client-certificate\"\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_certificate_file = \"cert.pem\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            c.credential,
            CredentialConfig::ClientCertificate {
                tenant_id: "t".into(),
                client_id: "c".into(),
                certificate_file: "/etc/kf/cert.pem".into(),
            }
        );
        let c = parse(
            "[credential]\nkind = \"client-certificate\"\n",
            &[
                ("AZURE_TENANT_ID", "t"),
                ("AZURE_CLIENT_ID", "c"),
                (
                    "AZURE_CLIENT_CERTIFICATE_PATH",
                    "/run/credentials/keyflip.service/cert",
                ),
            ],
        )
        .unwrap();
        assert!(matches!(
            c.credential,
            CredentialConfig::ClientCertificate { ref certificate_file, .. } if certificate_file.ends_with("keyflip.service/cert")
        ));
        let e = source_error(
            "[credential]\nkind = \"client-certificate\"\ntenant_id = \"t\"\nclient_id = \"c\"\n",
            &[],
        );
        assert!(e.hint.unwrap().contains("AZURE_CLIENT_CERTIFICATE_PATH"));
        let e = source_error(
            "[credential]\nkind = \"client-secret\"\nclient_certificate_file = \"c.pem\"\n",
            &[],
        );
        assert!(e.message.contains("not used with kind = \"client-secret\""));
    }

    #[test]
    fn an_empty_file_means_public_cloud_and_managed_identity() {
        let c = parse("", &[("STATE_DIRECTORY", "/var/lib/a:/var/lib/b")]).unwrap();
        assert_eq!(c.cloud.kind, CloudKind::Public);
        assert_eq!(
            c.credential,
            CredentialConfig::ManagedIdentity { client_id: None }
        );
        assert_eq!(c.plans_dir, PathBuf::from(DEFAULT_PLANS_DIR));
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/a"));
        // One rule for the plans directory: the file, then $KEYFLIP_PLANS_DIR.
        let env = &[("KEYFLIP_PLANS_DIR", "/srv/plans")];
        assert_eq!(
            parse("", env).unwrap().plans_dir,
            PathBuf::from("/srv/plans")
        );
        assert_eq!(
            parse("plans_dir = \"/etc/kf/p\"\n", env).unwrap().plans_dir,
            PathBuf::from("/etc/kf/p")
        );
        assert_eq!(
            parse("", &[]).unwrap().state_dir,
            PathBuf::from(DEFAULT_STATE_DIR)
        );
    }

    #[test]
    fn unknown_keys_point_at_line_and_column() {
        let e = source_error("plans_dir = \"p\"\n[cloud]\n  nmae = \"public\"\n", &[]);
        assert_eq!((e.file.as_str(), e.line, e.column), ("k.toml", 3, 3));
        assert!(e.message.contains("unknown field `nmae`"), "{}", e.message);

        let e = source_error("[daemon]\nwhatever = 1\n", &[]);
        assert_eq!(e.line, 2);
        let e = source_error("[credential]\nkind = \"password\"\n", &[]);
        assert!(e.message.contains("unknown variant"), "{}", e.message);
        assert_eq!(e.line, 2);
    }

    /// The error a daemon logs on a rejected SIGHUP reload is this one, so the mistyped
    /// secret reaches neither the terminal nor the journal's log.
    #[test]
    fn a_mistyped_secret_line_is_never_echoed() {
        for text in [
            "[credential]\nkind = \"client-secret\"\nclient_secret = \"Xy7-s3cr3t-V4lue\"\n",
            "[credential]\nkind = \"client-secret\"\nXy7-s3cr3t-V4lue\n",
            "[daemon]\npark_after_failures = \"Xy7-s3cr3t-V4lue\"\n",
        ] {
            let e = parse(text, &[]).unwrap_err().to_string();
            assert!(!e.contains("s3cr3t"), "{e}");
            assert!(
                e.contains("<value hidden>") || e.contains("<line hidden>"),
                "{e}"
            );
        }
    }

    #[test]
    fn relative_paths_resolve_against_the_file() {
        let c = parse(
            "plans_dir = \"plans\"\nstate_dir = \"/srv/kf\"\n[cloud]\nca_bundle = \"ca.pem\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.plans_dir, PathBuf::from("/etc/kf/plans"));
        assert_eq!(c.state_dir, PathBuf::from("/srv/kf"));
        assert_eq!(c.cloud.ca_bundle, Some(PathBuf::from("/etc/kf/ca.pem")));
    }

    #[test]
    fn custom_clouds_need_https_endpoints() {
        let c = parse(
            "[cloud]\nname = \"custom\"\narm_url = \"https://arm.local:8443/\"\nauthority_host = \"https://login.local\"\nkey_vault_suffix = \".vault.local\"\n",
            &[],
        )
        .unwrap();
        let CloudKind::Custom(custom) = c.cloud.kind else {
            panic!("expected custom")
        };
        assert_eq!(custom.arm_audience, "https://arm.local:8443");
        assert_eq!(custom.key_vault_suffix.as_deref(), Some("vault.local"));

        let e = source_error(
            "[cloud]\nname = \"custom\"\narm_url = \"http://arm.local\"\nauthority_host = \"https://l\"\n",
            &[],
        );
        assert_eq!(e.line, 3);
        assert!(e.message.contains("must use https"), "{}", e.message);

        let e = source_error("[cloud]\nname = \"custom\"\n", &[]);
        assert!(e.message.contains("needs arm_url"), "{}", e.message);

        // User-info would displace the bearer token; a query would ride on every call.
        for (arm, why) in [
            ("https://user:pw@arm.local/", "user name or password"),
            ("https://arm.local/?x=1", "query"),
            ("https://arm.local/#f", "fragment"),
        ] {
            let e = source_error(
                &format!(
                    "[cloud]\nname = \"custom\"\narm_url = \"{arm}\"\nauthority_host = \"https://l\"\n"
                ),
                &[],
            );
            assert_eq!(e.line, 3, "{arm}");
            assert!(e.message.contains(why), "{arm}: {}", e.message);
        }
        let e = source_error(
            "[cloud]\nname = \"custom\"\narm_url = \"https://a\"\nauthority_host = \"https://u@l\"\n",
            &[],
        );
        assert_eq!(e.line, 4);

        let e = source_error("[cloud]\nname = \"china\"\narm_url = \"https://x\"\n", &[]);
        assert!(e.message.contains("only used with name = \"custom\""));
    }

    #[test]
    fn blob_endpoint_patterns_name_the_account_once_over_https() {
        let custom = |pattern: &str| {
            parse(
                &format!(
                    "[cloud]\nname = \"custom\"\narm_url = \"https://a/\"\nauthority_host = \"https://l\"\nblob_endpoint = \"{pattern}\"\n"
                ),
                &[],
            )
        };
        for good in [
            "https://{account}.blob.stack.local/",
            "https://127.0.0.1:47443/{account}/",
        ] {
            let c = custom(good).unwrap_or_else(|e| panic!("{good}: {e}"));
            let CloudKind::Custom(c) = c.cloud.kind else {
                panic!("custom")
            };
            assert_eq!(c.blob_endpoint.as_deref(), Some(good));
        }
        for (bad, why) in [
            ("https://blob.stack.local/", "exactly once"),
            ("https://{account}.{account}.x/", "exactly once"),
            ("http://{account}.blob.stack.local/", "https"),
            ("https://x{account}.blob.stack.local/", "first label"),
            ("https://{account}.blob.stack.local/?sv=1", "query"),
        ] {
            match custom(bad) {
                Err(ConfigError::Invalid(e)) => {
                    assert_eq!(e.line, 5, "{bad}");
                    assert!(e.message.contains(why), "{bad}: {}", e.message);
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
        let e = source_error("[cloud]\nblob_endpoint = \"https://{account}.x/\"\n", &[]);
        assert!(
            e.message.contains("only used with name = \"custom\""),
            "{}",
            e.message
        );
    }

    #[test]
    fn missing_default_file_gives_defaults_but_a_named_one_is_an_error() {
        let env = env_of(&[]);
        let absent = PathBuf::from("/nonexistent/keyflip.toml");
        let defaults = Config::load_from(
            &ConfigPath {
                path: absent.clone(),
                explicit: false,
            },
            &env,
        )
        .unwrap();
        assert_eq!(defaults.source, None);
        let err = Config::load_from(
            &ConfigPath {
                path: absent,
                explicit: true,
            },
            &env,
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err}");
        assert_eq!(
            ConfigPath::resolve(None, &env_of(&[("KEYFLIP_CONFIG", "/x.toml")])).path,
            PathBuf::from("/x.toml")
        );
    }

    #[test]
    fn the_shipped_examples_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/examples");
        let load = |name: &str| {
            let path = ConfigPath {
                path: dir.join(name),
                explicit: true,
            };
            Config::load_from(&path, &env_of(&[])).unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        let production = load("keyflip.toml");
        assert_eq!(production.cloud.kind, CloudKind::Public);
        assert_eq!(
            production.credential,
            CredentialConfig::ManagedIdentity { client_id: None }
        );
        let twin = load("keyflip-twin.toml");
        let CloudKind::Custom(custom) = &twin.cloud.kind else {
            panic!("the twin example is a custom cloud")
        };
        assert_eq!(custom.arm_url.as_str(), "https://127.0.0.1:47443/");
        assert_eq!(
            twin.cloud.ca_bundle,
            Some(PathBuf::from("/tmp/keyflip-twin/ca.pem"))
        );
        assert!(matches!(
            &twin.credential,
            CredentialConfig::ClientSecret { secret: ClientSecretSource::File(p), .. }
                if p == Path::new("/tmp/keyflip-twin/principals/keyflip-operator.secret")
        ));
        assert_eq!(twin.plans_dir, dir.join("../../rotation-plans"));
    }
}
