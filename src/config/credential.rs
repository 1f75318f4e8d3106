//! `[credential]`: which Entra ID credential keyflip uses, completed from the standard
//! `AZURE_*` environment variables, and how a client secret is read (only when a
//! credential is built, and never from a file anyone else can read: see
//! [`super::private_file`]).

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;
use zeroize::Zeroizing;

use super::private_file::{PrivateFileError, check_private_file};
use super::{ConfigError, Ctx, Env};
use crate::diagnostic::SourceError;

/// How keyflip authenticates to Entra ID. Exactly one, chosen in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialConfig {
    /// System-assigned, or user-assigned when `client_id` is set.
    ManagedIdentity {
        client_id: Option<String>,
    },
    WorkloadIdentity {
        tenant_id: String,
        client_id: String,
        token_file: PathBuf,
    },
    ClientSecret {
        tenant_id: String,
        client_id: String,
        secret: ClientSecretSource,
    },
    AzureCli {
        tenant_id: Option<String>,
    },
    /// A certificate (PEM with its private key) registered on the app registration.
    ClientCertificate {
        tenant_id: String,
        client_id: String,
        certificate_file: PathBuf,
    },
    /// The chain Microsoft's SDKs call `DefaultAzureCredential`
    /// ([`crate::azure::chain`]): environment, workload identity, managed identity,
    /// Azure CLI. Each link reads the `AZURE_*` variables when the credential is built.
    Default {
        /// The user-assigned managed identity (else `AZURE_CLIENT_ID`).
        managed_identity_client_id: Option<String>,
        /// The links to try, narrowed by `AZURE_TOKEN_CREDENTIALS`.
        links: Vec<crate::azure::chain::LinkKind>,
    },
}

/// Where a client secret comes from. The value itself is read only when needed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientSecretSource {
    File(PathBuf),
    /// `AZURE_CLIENT_SECRET`.
    Environment,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCredential {
    kind: Spanned<RawCredentialKind>,
    tenant_id: Option<Spanned<String>>,
    client_id: Option<Spanned<String>>,
    client_secret_file: Option<Spanned<PathBuf>>,
    federated_token_file: Option<Spanned<PathBuf>>,
    client_certificate_file: Option<Spanned<PathBuf>>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum RawCredentialKind {
    ManagedIdentity,
    WorkloadIdentity,
    ClientSecret,
    AzureCli,
    ClientCertificate,
    Default,
}

impl RawCredentialKind {
    fn as_str(self) -> &'static str {
        match self {
            RawCredentialKind::ManagedIdentity => "managed-identity",
            RawCredentialKind::WorkloadIdentity => "workload-identity",
            RawCredentialKind::ClientSecret => "client-secret",
            RawCredentialKind::AzureCli => "azure-cli",
            RawCredentialKind::ClientCertificate => "client-certificate",
            RawCredentialKind::Default => "default",
        }
    }
}

impl Ctx<'_> {
    pub(super) fn credential(
        &self,
        raw: Option<Spanned<RawCredential>>,
        env: Env,
    ) -> Result<CredentialConfig, SourceError> {
        let Some(raw) = raw else {
            return Ok(CredentialConfig::ManagedIdentity {
                client_id: env("AZURE_CLIENT_ID"),
            });
        };
        let raw = raw.into_inner();
        let kind = *raw.kind.get_ref();
        let kind_span = raw.kind.span();

        // Refuse keys the chosen kind would silently ignore.
        let unused: [(&str, Option<std::ops::Range<usize>>, bool); 5] = [
            (
                "tenant_id",
                raw.tenant_id.as_ref().map(Spanned::span),
                !matches!(
                    kind,
                    RawCredentialKind::ManagedIdentity | RawCredentialKind::Default
                ),
            ),
            (
                "client_id",
                raw.client_id.as_ref().map(Spanned::span),
                kind != RawCredentialKind::AzureCli,
            ),
            (
                "client_secret_file",
                raw.client_secret_file.as_ref().map(Spanned::span),
                kind == RawCredentialKind::ClientSecret,
            ),
            (
                "federated_token_file",
                raw.federated_token_file.as_ref().map(Spanned::span),
                kind == RawCredentialKind::WorkloadIdentity,
            ),
            (
                "client_certificate_file",
                raw.client_certificate_file.as_ref().map(Spanned::span),
                kind == RawCredentialKind::ClientCertificate,
            ),
        ];
        for (key, span, allowed) in unused {
            if let (Some(span), false) = (span, allowed) {
                return Err(self
                    .error(
                        span,
                        format!("{key} is not used with kind = \"{}\"", kind.as_str()),
                    )
                    .with_hint("remove it, or choose the credential kind that uses it"));
            }
        }

        let from_file_or_env = |field: &Option<Spanned<String>>, var: &str| {
            field
                .as_ref()
                .map(|v| v.get_ref().clone())
                .or_else(|| env(var))
        };
        let needed = |value: Option<String>, key: &str, var: &str| {
            value.ok_or_else(|| {
                self.error(
                    kind_span.clone(),
                    format!("kind = \"{}\" needs {key}", kind.as_str()),
                )
                .with_hint(format!(
                    "set {key} in [credential] or the {var} environment variable"
                ))
            })
        };
        let tenant = from_file_or_env(&raw.tenant_id, "AZURE_TENANT_ID");
        let client = from_file_or_env(&raw.client_id, "AZURE_CLIENT_ID");
        Ok(match kind {
            RawCredentialKind::ManagedIdentity => {
                CredentialConfig::ManagedIdentity { client_id: client }
            }
            RawCredentialKind::AzureCli => CredentialConfig::AzureCli { tenant_id: tenant },
            RawCredentialKind::Default => {
                let links = crate::azure::chain::LinkKind::selected_by(
                    env("AZURE_TOKEN_CREDENTIALS").as_deref(),
                )
                .map_err(|why| {
                    self.error(kind_span.clone(), why).with_hint(
                        "unset AZURE_TOKEN_CREDENTIALS to try every link, or fix its value",
                    )
                })?;
                CredentialConfig::Default {
                    // Only the file's value here: the chain reads AZURE_CLIENT_ID itself.
                    managed_identity_client_id: raw.client_id.map(Spanned::into_inner),
                    links,
                }
            }
            RawCredentialKind::ClientCertificate => {
                let file = raw
                    .client_certificate_file
                    .map(|p| self.path(p.into_inner()))
                    .or_else(|| env("AZURE_CLIENT_CERTIFICATE_PATH").map(PathBuf::from));
                CredentialConfig::ClientCertificate {
                    tenant_id: needed(tenant, "tenant_id", "AZURE_TENANT_ID")?,
                    client_id: needed(client, "client_id", "AZURE_CLIENT_ID")?,
                    certificate_file: needed(
                        file.map(|p| p.display().to_string()),
                        "client_certificate_file",
                        "AZURE_CLIENT_CERTIFICATE_PATH",
                    )?
                    .into(),
                }
            }
            RawCredentialKind::WorkloadIdentity => {
                let token_file = raw
                    .federated_token_file
                    .map(|p| self.path(p.into_inner()))
                    .or_else(|| env("AZURE_FEDERATED_TOKEN_FILE").map(PathBuf::from));
                CredentialConfig::WorkloadIdentity {
                    tenant_id: needed(tenant, "tenant_id", "AZURE_TENANT_ID")?,
                    client_id: needed(client, "client_id", "AZURE_CLIENT_ID")?,
                    token_file: needed(
                        token_file.map(|p| p.display().to_string()),
                        "federated_token_file",
                        "AZURE_FEDERATED_TOKEN_FILE",
                    )?
                    .into(),
                }
            }
            RawCredentialKind::ClientSecret => {
                let secret = match raw.client_secret_file {
                    Some(p) => ClientSecretSource::File(self.path(p.into_inner())),
                    None if env("AZURE_CLIENT_SECRET").is_some() => ClientSecretSource::Environment,
                    None => {
                        return Err(self
                            .error(kind_span, "kind = \"client-secret\" needs a secret")
                            .with_hint(
                                "set client_secret_file in [credential] (a file only keyflip's user can read), or the AZURE_CLIENT_SECRET environment variable",
                            ));
                    }
                };
                CredentialConfig::ClientSecret {
                    tenant_id: needed(tenant, "tenant_id", "AZURE_TENANT_ID")?,
                    client_id: needed(client, "client_id", "AZURE_CLIENT_ID")?,
                    secret,
                }
            }
        })
    }
}

impl ClientSecretSource {
    /// Reads the secret. A file must be private ([`check_private_file`]); surrounding
    /// whitespace (a trailing newline from `echo`) is dropped.
    pub fn read(&self, env: Env) -> Result<Zeroizing<String>, ConfigError> {
        let (value, origin) = match self {
            ClientSecretSource::File(path) => {
                let shown = path.display().to_string();
                let io = |source| ConfigError::SecretFile {
                    path: shown.clone(),
                    source,
                };
                check_private_file(path, "client secret", env).map_err(|e| match e {
                    PrivateFileError::Io(source) => io(source),
                    PrivateFileError::TooOpen(e) => e,
                })?;
                let value = Zeroizing::new(
                    crate::input::read_text(path, crate::input::MAX_SECRET_BYTES)
                        .map_err(|e| io(std::io::Error::other(e)))?,
                );
                (value, format!("file {shown}"))
            }
            ClientSecretSource::Environment => (
                Zeroizing::new(
                    env("AZURE_CLIENT_SECRET").ok_or(ConfigError::SecretNotInEnvironment)?,
                ),
                "AZURE_CLIENT_SECRET".to_owned(),
            ),
        };
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return Err(ConfigError::EmptySecret { origin });
        }
        Ok(Zeroizing::new(trimmed.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{env_of, parse, source_error};
    use super::*;

    #[test]
    fn environment_fills_what_the_file_leaves_out() {
        let text = "[credential]\nkind = \"client-secret\"\nclient_id = \"from-file\"\nclient_secret_file = \"secret\"\n";
        let c = parse(
            text,
            &[("AZURE_TENANT_ID", "t-env"), ("AZURE_CLIENT_ID", "c-env")],
        )
        .unwrap();
        assert_eq!(
            c.credential,
            CredentialConfig::ClientSecret {
                tenant_id: "t-env".into(),
                client_id: "from-file".into(),
                secret: ClientSecretSource::File("/etc/kf/secret".into()),
            }
        );

        let e = source_error(text, &[]);
        assert!(e.message.contains("needs tenant_id"), "{}", e.message);
        assert!(e.hint.unwrap().contains("AZURE_TENANT_ID"));

        let c = parse(
            "[credential]\nkind = \"workload-identity\"\n",
            &[
                ("AZURE_TENANT_ID", "t"),
                ("AZURE_CLIENT_ID", "c"),
                ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/token"),
            ],
        )
        .unwrap();
        assert_eq!(
            c.credential,
            CredentialConfig::WorkloadIdentity {
                tenant_id: "t".into(),
                client_id: "c".into(),
                token_file: "/var/run/token".into()
            }
        );

        let c = parse(
            "[credential]\nkind = \"client-secret\"\ntenant_id = \"t\"\nclient_id = \"c\"\n",
            &[("AZURE_CLIENT_SECRET", "s")],
        )
        .unwrap();
        assert!(matches!(
            c.credential,
            CredentialConfig::ClientSecret {
                secret: ClientSecretSource::Environment,
                ..
            }
        ));
    }

    #[test]
    fn keys_the_kind_ignores_are_refused() {
        let e = source_error(
            "[credential]\nkind = \"managed-identity\"\nclient_secret_file = \"x\"\n",
            &[],
        );
        assert_eq!(e.line, 3);
        assert!(
            e.message
                .contains("not used with kind = \"managed-identity\"")
        );
    }

    #[test]
    fn secret_files_must_be_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "hunter2\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let source = ClientSecretSource::File(path.clone());
        let err = source.read(&env_of(&[])).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("chmod 600 {}", path.display())),
            "{err}"
        );
        assert!(!err.to_string().contains("hunter2"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(source.read(&env_of(&[])).unwrap().as_str(), "hunter2");
    }

    #[test]
    fn files_systemd_loaded_as_credentials_are_accepted() {
        use std::os::unix::fs::PermissionsExt as _;
        // systemd's LoadCredential= makes the file 0400 with an ACL for the service's
        // user, which stat shows as 0440; only the service reaches the directory.
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("credentials/keyflip.service");
        std::fs::create_dir_all(&creds).unwrap();
        let path = creds.join("client-secret");
        std::fs::write(&path, "hunter2").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o440)).unwrap();
        let source = ClientSecretSource::File(path.clone());
        assert!(
            source.read(&env_of(&[])).is_err(),
            "outside the credentials directory"
        );
        let env = [("CREDENTIALS_DIRECTORY", creds.to_str().unwrap())];
        assert_eq!(source.read(&env_of(&env)).unwrap().as_str(), "hunter2");
        // Another service's credentials directory does not count.
        let other = dir.path().join("credentials/other.service");
        std::fs::create_dir_all(&other).unwrap();
        let env = [("CREDENTIALS_DIRECTORY", other.to_str().unwrap())];
        assert!(source.read(&env_of(&env)).is_err());
    }
}
