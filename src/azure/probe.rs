//! Does a storage key work on the data plane? One SharedKey-signed Get Account
//! Information request (`GET {blob}/?restype=account&comp=properties`) answers it.
//!
//! The request goes to the blob endpoint ARM reports for the account, only when it is
//! the cloud's HTTPS endpoint of that account (`Cloud::blob_endpoints`; the probe
//! pipeline's origin policy refuses anything else too), is sent once
//! (verification budgets and retries belong to the caller) and its answer is
//! classified as a [`ProbeOutcome`]. Probes never fail with an error: an unreachable
//! endpoint is an outcome too.

use std::fmt;

use azure_core::http::headers::HeaderName;
use azure_core::http::{Context, Method, Request};
use url::Url;

use super::error::ServiceError;
use super::http::{Failure, Operation};
use super::shared_key::Signing;
use super::storage::StorageAccount;
use super::{Azure, Error};
use crate::secret::StorageKey;

/// What a probe found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The service accepted the key.
    Works,
    /// The service does not accept this key (wrong, just regenerated, or the clock is
    /// skewed: see the detail).
    Rejected,
    /// The account has `allowSharedKeyAccess=false`: no key works.
    SharedKeysDisabled,
    /// The network or the account's firewall refused keyflip before the key was judged.
    Refused,
    /// Anything else; the detail says what came back.
    Other,
}

impl fmt::Display for ProbeOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProbeOutcome::Works => "works",
            ProbeOutcome::Rejected => "rejected",
            ProbeOutcome::SharedKeysDisabled => "shared keys disabled",
            ProbeOutcome::Refused => "refused by network or firewall",
            ProbeOutcome::Other => "other",
        })
    }
}

/// A probe's outcome and the evidence for it. Never holds the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub outcome: ProbeOutcome,
    pub status: Option<u16>,
    /// The service's error code (`x-ms-error-code`), when it sent one.
    pub code: Option<String>,
    pub request_id: Option<String>,
    pub detail: String,
}

const PROBE: Operation = Operation {
    name: "blob.getAccountInformation",
    action: None,
    idempotent: true,
    retry_on: super::http::RETRY_STATUSES,
};

impl Azure {
    /// Probes `key` against the account's blob endpoint (from [`Azure::storage_account`]).
    pub async fn probe_account_key(
        &self,
        account: &StorageAccount,
        key: &StorageKey,
    ) -> Result<Probe, Error> {
        let endpoint = account.blob_endpoint.as_ref().ok_or_else(|| {
            Error::Invalid(format!(
                "ARM reports no blob endpoint for {}; is it a blob-capable account?",
                account.id
            ))
        })?;
        // Checked when the account was read; again here for accounts built elsewhere.
        self.cloud()
            .blob_endpoints
            .check(account.name(), endpoint)
            .map_err(|why| {
                Error::Invalid(format!(
                    "refusing to sign a request for {}'s blob endpoint {}{}: {why}",
                    account.id,
                    super::origin::shown_origin(endpoint),
                    endpoint.path()
                ))
            })?;
        Ok(self.probe_shared_key(endpoint, account.name(), key).await)
    }

    /// Probes `key` for `account` at `blob_endpoint` (e.g. `https://acct.blob.core.windows.net/`).
    pub async fn probe_shared_key(
        &self,
        blob_endpoint: &Url,
        account: &str,
        key: &StorageKey,
    ) -> Probe {
        let mut url = blob_endpoint.clone();
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        url.set_query(Some("restype=account&comp=properties"));
        let ctx = Context::new().with_value(Signing {
            account: account.to_owned(),
            key: key.clone(),
        });
        let request = Request::new(url, Method::Get);
        let target = blob_endpoint.as_str();
        let probe = match self.probe.send_once(&PROBE, target, &ctx, request).await {
            Ok(answer) => Probe {
                outcome: ProbeOutcome::Works,
                status: Some(answer.status),
                code: None,
                request_id: answer.call.request_id,
                detail: "the service accepted the key".into(),
            },
            Err(Failure::Status {
                status,
                headers,
                body,
                call,
            }) => {
                let service = ServiceError::parse(&body);
                let code = headers
                    .get_optional_str(&HeaderName::from_static("x-ms-error-code"))
                    .map(str::to_owned)
                    .or(service.code.clone());
                let message = service.message.unwrap_or_default();
                Probe {
                    outcome: classify(status, code.as_deref(), &message),
                    status: Some(status),
                    code,
                    request_id: call.request_id,
                    detail: first_line(&message),
                }
            }
            Err(Failure::Transport { error, call }) => {
                use azure_core::error::ErrorKind;
                let outcome = match error.kind() {
                    ErrorKind::Connection | ErrorKind::Io => ProbeOutcome::Refused,
                    _ => ProbeOutcome::Other,
                };
                Probe {
                    outcome,
                    status: None,
                    code: None,
                    request_id: call.request_id,
                    detail: error.to_string(),
                }
            }
        };
        tracing::debug!(operation = PROBE.name, target, outcome = %probe.outcome, status = probe.status, code = probe.code.as_deref(), request_id = probe.request_id.as_deref(), "shared key probed");
        probe
    }
}

/// Maps a refusal to an outcome. Azure answers a bad signature with 403
/// `AuthenticationFailed` and a firewall block with 403 `AuthorizationFailure` ("This
/// request is not authorized..."); Azurite answers a bad signature with
/// `AuthorizationFailure` but the authentication message, so the message decides.
pub(crate) fn classify(status: u16, code: Option<&str>, message: &str) -> ProbeOutcome {
    let is = |c: &str| code.is_some_and(|code| code.eq_ignore_ascii_case(c));
    match status {
        403 if is("AuthenticationFailed") => ProbeOutcome::Rejected,
        403 if is("KeyBasedAuthenticationNotPermitted") => ProbeOutcome::SharedKeysDisabled,
        403 if is("AuthorizationFailure") && message.contains("failed to authenticate") => {
            ProbeOutcome::Rejected
        }
        403 if is("AuthorizationFailure") => ProbeOutcome::Refused,
        _ => ProbeOutcome::Other,
    }
}

fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or_default().trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_azure_and_azurite_refusals() {
        let c = classify;
        assert_eq!(
            c(
                403,
                Some("AuthenticationFailed"),
                "Server failed to authenticate the request."
            ),
            ProbeOutcome::Rejected
        );
        assert_eq!(
            c(
                403,
                Some("AuthorizationFailure"),
                "Server failed to authenticate the request. Make sure..."
            ),
            ProbeOutcome::Rejected
        );
        assert_eq!(
            c(
                403,
                Some("AuthorizationFailure"),
                "This request is not authorized to perform this operation."
            ),
            ProbeOutcome::Refused
        );
        assert_eq!(
            c(
                403,
                Some("KeyBasedAuthenticationNotPermitted"),
                "Key based authentication is not permitted on this storage account."
            ),
            ProbeOutcome::SharedKeysDisabled
        );
        assert_eq!(c(500, Some("InternalError"), ""), ProbeOutcome::Other);
        assert_eq!(c(400, None, ""), ProbeOutcome::Other);
    }
}
