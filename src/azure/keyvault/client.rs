//! The Key Vault client behind [`super`]: one `SecretClient` per vault (cached), and
//! SDK calls run with keyflip's retry rules and mapped to [`Error`] like every other
//! Azure call.

use std::future::Future;
use std::sync::Arc;

use azure_core::error::ErrorKind;
use azure_core::http::Response;
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use url::Url;

use super::super::budget::Class;
use super::super::error::{Call, request_id, retry_after};
use super::super::http::{Operation, client_options, retrying, status_error};
use super::super::{Azure, Error};

pub(super) fn check_vault(vault: &Url) -> Result<(), Error> {
    if vault.scheme() == "https" && vault.host().is_some() && vault.query().is_none() {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "'{vault}' is not a Key Vault URL: expected https://<vault>.vault.azure.net/ (or the vault URL of your cloud)"
        )))
    }
}

/// Why one attempt of an SDK call failed.
enum Attempt {
    Failed(azure_core::Error),
    /// Interrupted while waiting for the vault's budget: nothing was sent.
    Interrupted,
    /// The vault's budget had nothing left for a caller that may not wait for it.
    Deferred,
}

/// The vault part of a call target (`{vault}/secrets/{name}[/{version}]`): the scope
/// of its Key Vault budget.
fn vault_of(target: &str) -> &str {
    let target = target.strip_suffix("/secrets").unwrap_or(target);
    target.rfind("/secrets/").map_or(target, |i| &target[..i])
}

impl Azure {
    pub(super) fn vault_client(&self, vault: &Url) -> Result<Arc<SecretClient>, Error> {
        check_vault(vault)?;
        let key = vault.as_str().trim_end_matches('/').to_owned();
        let mut cache = self.vaults.lock().map_err(|_| {
            Error::Invalid("the Key Vault client cache was poisoned by a panic".into())
        })?;
        if let Some(client) = cache.get(&key) {
            return Ok(client.clone());
        }
        let client = SecretClient::new(
            &key,
            self.credential.clone(),
            Some(SecretClientOptions {
                client_options: client_options(
                    &self.http,
                    "Key Vault",
                    super::super::origin::Destination::origin_of(vault),
                ),
                verify_challenge_resource: Some(self.cloud.verify_vault_challenge(vault)),
                ..Default::default()
            }),
        )
        .map_err(|e| Error::Invalid(format!("cannot make a Key Vault client for {key}: {e}")))?;
        let client = Arc::new(client);
        cache.insert(key, client.clone());
        Ok(client)
    }

    /// The audience Key Vault tokens are for, as far as the cloud says.
    fn vault_audience(&self) -> String {
        self.cloud
            .key_vault_audience()
            .unwrap_or_else(|| "Key Vault (from the vault's challenge)".into())
    }

    /// Runs an SDK call that answers with a model, with keyflip's retry rules and
    /// error mapping.
    pub(super) async fn kv<T, F, Fut>(
        &self,
        op: &Operation,
        target: &str,
        call: F,
    ) -> Result<T, Error>
    where
        T: serde::de::DeserializeOwned,
        F: Fn() -> Fut,
        Fut: Future<Output = azure_core::Result<Response<T>>>,
    {
        let response = self.kv_retry(op, target, call).await?;
        let rid = request_id(response.headers());
        tracing::debug!(
            operation = op.name,
            target,
            status = u16::from(response.status()),
            request_id = rid.as_deref(),
            "azure call answered"
        );
        response.into_model().map_err(|e| Error::BadResponse {
            call: Call {
                operation: op.name,
                target: target.to_owned(),
                request_id: rid,
            }
            .into(),
            status: 200,
            detail: format!("the body does not have the expected shape ({:?})", e.kind()),
        })
    }

    /// Runs an SDK call through the shared retry loop ([`retrying`]): retried only
    /// when `op` is idempotent, like every ARM call.
    pub(super) async fn kv_retry<R, F, Fut>(
        &self,
        op: &Operation,
        target: &str,
        call: F,
    ) -> Result<R, Error>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = azure_core::Result<R>>,
    {
        // Secret creates and everything else have separate per-vault budgets.
        let class = if op.name == super::SET.name {
            Class::KeyVaultWrite
        } else {
            Class::KeyVaultRead
        };
        let vault = vault_of(target);
        let interrupted = || Error::Interrupted {
            call: Call {
                operation: op.name,
                target: target.to_owned(),
                request_id: None,
            }
            .into(),
            sent: false,
        };
        retrying(
            op,
            target,
            (&self.options.retry, &self.interrupt),
            |_| async {
                if let Some(budgets) = &self.budgets
                    && crate::azure::budget::is_deferrable()
                {
                    // A deferrable caller does not wait for the budget: it is told so.
                    if budgets.acquire_now(class, false, vault).is_err() {
                        return Err(Attempt::Deferred);
                    }
                } else if let Some(budgets) = &self.budgets {
                    tokio::select! {
                        () = budgets.acquire(class, false, vault) => {}
                        () = self.interrupt.cancelled() => return Err(Attempt::Interrupted),
                    }
                }
                call().await.map_err(Attempt::Failed)
            },
            |failure| match failure {
                Attempt::Failed(error) => match error.kind() {
                    ErrorKind::HttpResponse {
                        status,
                        raw_response,
                        ..
                    } if op.retry_on.contains(&u16::from(*status)) => {
                        Some(raw_response.as_ref().and_then(|r| retry_after(r.headers())))
                    }
                    ErrorKind::Io | ErrorKind::Connection => Some(None),
                    _ => None,
                },
                Attempt::Interrupted | Attempt::Deferred => None,
            },
            |failure, attempts| match failure {
                Attempt::Failed(error) => self.kv_error(op, target, error, attempts),
                Attempt::Interrupted => interrupted(),
                Attempt::Deferred => Error::Deferred {
                    call: Call {
                        operation: op.name,
                        target: target.to_owned(),
                        request_id: None,
                    }
                    .into(),
                },
            },
            |_| interrupted(),
        )
        .await
    }

    fn kv_error(
        &self,
        op: &Operation,
        target: &str,
        error: azure_core::Error,
        attempts: u32,
    ) -> Error {
        let mut call = Call {
            operation: op.name,
            target: target.to_owned(),
            request_id: None,
        };
        match error.kind() {
            ErrorKind::HttpResponse {
                status,
                raw_response,
                ..
            } => {
                let (headers, body) = match raw_response {
                    Some(r) => (r.headers().clone(), r.body().to_vec()),
                    None => (Default::default(), Vec::new()),
                };
                call.request_id = request_id(&headers);
                status_error(
                    op,
                    &self.vault_audience(),
                    call,
                    u16::from(*status),
                    &headers,
                    &body,
                    attempts,
                )
            }
            ErrorKind::Connection => Error::Network {
                call: call.into(),
                sent: false,
                detail: error.to_string(),
            },
            ErrorKind::Io => Error::Network {
                call: call.into(),
                sent: true,
                detail: error.to_string(),
            },
            ErrorKind::Credential => Error::credential(&self.vault_audience(), &error),
            ErrorKind::Other => {
                let fallback = format!("{call}: {error}");
                Error::refused(call, &error, fallback)
            }
            ErrorKind::DataConversion => Error::BadResponse {
                call: call.into(),
                status: 200,
                detail: "the answer could not be read as Key Vault JSON".into(),
            },
            #[allow(unreachable_patterns)] // ErrorKind may grow (it has the `http` feature).
            _ => Error::Invalid(format!("{call}: {error}")),
        }
    }
}
