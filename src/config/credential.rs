//! `[credential]`: which Entra ID credential keyflip uses, completed from the standard
//! `AZURE_*` environment variables, and how a client secret is read (only when a
//! credential is built, and never from a file that group or others can read).

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;
use zeroize::Zeroizing;

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
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum RawCredentialKind {
    ManagedIdentity,
    WorkloadIdentity,
    ClientSecret,
    AzureCli,
}

impl RawCredentialKind {
    fn as_str(self) -> &'static str {
        match self {
            RawCredentialKind::ManagedIdentity => "managed-identity",
            RawCredentialKind::WorkloadIdentity => "workload-identity",
            RawCredentialKind::ClientSecret => "client-secret",
            RawCredentialKind::AzureCli => "azure-cli",
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
        let unused: [(&str, Option<std::ops::Range<usize>>, bool); 4] = [
            (
                "tenant_id",
                raw.tenant_id.as_ref().map(Spanned::span),
                kind != RawCredentialKind::ManagedIdentity,
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
    /// Reads the secret. A file must not be readable by group or others; surrounding
    /// whitespace (a trailing newline from `echo`) is dropped.
    pub fn read(&self, env: Env) -> Result<Zeroizing<String>, ConfigError> {
        use std::os::unix::fs::PermissionsExt as _;
        let (value, origin) = match self {
            ClientSecretSource::File(path) => {
                let shown = path.display().to_string();
                let io = |source| ConfigError::SecretFile {
                    path: shown.clone(),
                    source,
                };
                let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
                if mode & 0o077 != 0 {
                    return Err(ConfigError::SecretFileTooOpen {
                        path: shown,
                        mode: mode & 0o777,
                    });
                }
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
}
