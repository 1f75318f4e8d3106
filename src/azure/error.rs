//! The error type of the Azure boundary, and how HTTP answers become errors.
//!
//! Promises: every variant says which call failed ([`Call`]: operation, target and
//! Azure's request id), what was expected and what to do next; [`Error::is_transient`]
//! tells callers whether retrying later can help, so nobody matches on message text.
//! No error ever carries a response body verbatim: only the `code` and `message` Azure
//! puts in its error envelope, and for bodies that do not parse, only where the parse
//! failed. (A `listKeys` body that fails to parse still holds key values, and
//! serde_json's messages quote the offending value.)

use std::fmt;
use std::time::Duration;

use azure_core::http::headers::Headers;

use super::roles::{Action, BuiltinRole, role_granting};
use crate::config::ConfigError;

/// Which call failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// keyflip's name for the operation, e.g. `storage.regenerateKey`.
    pub operation: &'static str,
    /// What it was aimed at: a resource id, vault URL and secret name, workspace URL and
    /// scope, or blob endpoint. Never a value.
    pub target: String,
    /// Azure's id for the request (`x-ms-request-id`), for support tickets.
    pub request_id: Option<String>,
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.operation, self.target)?;
        if let Some(id) = &self.request_id {
            write!(f, " (request id {id})")?;
        }
        Ok(())
    }
}

/// What Azure said when it refused with 403, plus keyflip's hint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// The action that was missing: from Azure's answer when it names one, otherwise
    /// the action keyflip knows the operation needs.
    pub action: Option<Action>,
    /// The scope Azure checked, when it says.
    pub scope: Option<String>,
    /// The narrowest built-in role that grants `action`.
    pub role: Option<&'static BuiltinRole>,
    pub code: Option<String>,
    pub message: Option<String>,
    /// Advice for permission systems that are not Azure RBAC (a workspace's own ACLs).
    pub advice: Option<String>,
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.action {
            Some(action) => write!(f, "the principal lacks {action}")?,
            None => f.write_str("the principal lacks a permission")?,
        }
        if let Some(scope) = &self.scope {
            write!(f, " on {scope}")?;
        }
        if let Some(code) = &self.code {
            write!(f, " ({code})")?;
        }
        match (self.role, &self.advice) {
            (Some(role), _) => write!(
                f,
                "; the built-in role {role} grants it: assign it to keyflip's identity at that scope"
            ),
            (None, Some(advice)) => write!(f, "; {advice}"),
            (None, None) => Ok(()),
        }
    }
}

/// An error at the Azure boundary.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot get an Entra ID token for {audience}: {detail}; check [credential] in keyflip.toml and that the identity exists in the tenant"
    )]
    Credential {
        audience: String,
        detail: String,
        transient: bool,
    },
    #[error(
        "{call}: HTTP 401, the service did not accept keyflip's token for audience {audience}{}; check that [cloud] points at the right cloud and the credential's tenant",
        code_and_message(.code, .message)
    )]
    Unauthorized {
        call: Box<Call>,
        audience: String,
        code: Option<String>,
        message: Option<String>,
    },
    #[error("{call}: HTTP 403, permission denied: {denial}")]
    Forbidden {
        call: Box<Call>,
        denial: Box<Denial>,
    },
    #[error(
        "{call}: HTTP 404, {call_target} was not found{}; check the name in the plan and that it exists in this subscription",
        code_and_message(.code, .message),
        call_target = .call.target
    )]
    NotFound {
        call: Box<Call>,
        code: Option<String>,
        message: Option<String>,
    },
    #[error(
        "{call}: throttled (HTTP 429) after {attempts} attempt(s){}; Azure limits request rates per subscription, try again later",
        .retry_after.map(|d| format!(", Azure asked to wait {}s", d.as_secs())).unwrap_or_default()
    )]
    Throttled {
        call: Box<Call>,
        attempts: u32,
        retry_after: Option<Duration>,
    },
    #[error("{call}: network error{}: {detail}", if *.sent { "" } else { " before the request was sent" })]
    Network {
        call: Box<Call>,
        /// False when the connection could not even be made: the request never left.
        sent: bool,
        detail: String,
    },
    #[error(
        "{call}: Azure failed with HTTP {status} after {attempts} attempt(s){}",
        code_and_message(.code, .message)
    )]
    Server {
        call: Box<Call>,
        status: u16,
        code: Option<String>,
        message: Option<String>,
        attempts: u32,
    },
    #[error(
        "{call}: Azure rejected the request with HTTP {status}{}",
        code_and_message(.code, .message)
    )]
    Rejected {
        call: Box<Call>,
        status: u16,
        code: Option<String>,
        message: Option<String>,
    },
    #[error("{call}: unexpected answer (HTTP {status}): {detail}")]
    BadResponse {
        call: Box<Call>,
        status: u16,
        detail: String,
    },
    #[error(
        "{call}: the long-running operation ended with status {status}{}",
        code_and_message(.code, .message)
    )]
    OperationFailed {
        call: Box<Call>,
        status: String,
        code: Option<String>,
        message: Option<String>,
    },
    #[error(
        "{call}: the long-running operation had not finished after {}s; it may still complete in Azure",
        .waited.as_secs()
    )]
    Deadline { call: Box<Call>, waited: Duration },
    #[error(
        "{call}: {refused}; an answer from Azure pointed elsewhere (nextLink, Location, Azure-AsyncOperation or an endpoint) and nothing was sent there"
    )]
    ForeignOrigin {
        call: Box<Call>,
        refused: Box<super::origin::Refused>,
    },
    /// The process is stopping (a signal, a daemon shutdown): the call gave up a wait.
    /// With `sent` false its request never left, so it had no effect; with `sent` true
    /// Azure accepted it and only the wait for its end was given up.
    #[error("{call}: interrupted {}", if *.sent { "while waiting for the operation to finish; it may still complete in Azure" } else { "before the request was sent; nothing was changed" })]
    Interrupted { call: Box<Call>, sent: bool },
    /// A deferrable call (a rotation's unlisted-consumer check) that the shared budget
    /// could not take at once: never sent (see `budget::deferrable`).
    #[error("{call}: not sent, {}", super::budget::DEFERRED)]
    Deferred { call: Box<Call> },
    #[error("{context}: {rejected}")]
    Certificate {
        /// The call, or the token request, that met the certificate.
        context: String,
        rejected: Box<super::cloud::CertificateRejected>,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Invalid(String),
}

fn code_and_message(code: &Option<String>, message: &Option<String>) -> String {
    match (code, message) {
        (Some(c), Some(m)) => format!(" ({c}: {m})"),
        (Some(c), None) => format!(" ({c})"),
        (None, Some(m)) => format!(" ({m})"),
        (None, None) => String::new(),
    }
}

impl Error {
    /// True when the call stopped because keyflip is being interrupted.
    pub(crate) fn is_interrupted(&self) -> bool {
        matches!(self, Error::Interrupted { .. })
    }

    /// The error of a token request, or a certificate refusal when that is why it
    /// failed (the credential wraps the transport's error).
    pub(crate) fn credential(audience: &str, error: &azure_core::Error) -> Error {
        match super::cloud::certificate_rejected(error) {
            Some(rejected) => Error::Certificate {
                context: format!("token request for {audience}"),
                rejected: Box::new(rejected.clone()),
            },
            None => Error::Credential {
                audience: audience.to_owned(),
                transient: super::credential::is_network_failure(error),
                detail: error.to_string(),
            },
        }
    }

    /// The error of a transport failure of kind `Other`: a refused origin or
    /// certificate, or `fallback`.
    pub(crate) fn refused(call: Call, error: &azure_core::Error, fallback: String) -> Error {
        if let Some(refused) = super::origin::refused(error) {
            return Error::ForeignOrigin {
                call: call.into(),
                refused: Box::new(refused.clone()),
            };
        }
        match super::cloud::certificate_rejected(error) {
            Some(rejected) => Error::Certificate {
                context: call.to_string(),
                rejected: Box::new(rejected.clone()),
            },
            None => Error::Invalid(fallback),
        }
    }

    /// True when the same call may succeed later without anyone changing anything:
    /// throttling, network trouble, server errors, an operation still running. False
    /// when a person must act (permissions, configuration, a missing resource, a
    /// request Azure refuses, an answer keyflip cannot read).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Throttled { .. }
            | Error::Network { .. }
            | Error::Server { .. }
            | Error::Deferred { .. }
            | Error::Deadline { .. } => true,
            Error::Credential { transient, .. } => *transient,
            Error::Unauthorized { .. }
            | Error::Forbidden { .. }
            | Error::NotFound { .. }
            | Error::Rejected { .. }
            | Error::BadResponse { .. }
            | Error::OperationFailed { .. }
            | Error::ForeignOrigin { .. }
            | Error::Certificate { .. }
            | Error::Interrupted { .. }
            | Error::Config(_)
            | Error::Invalid(_) => false,
        }
    }

    /// How long Azure asked to wait, when it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Throttled { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The failed call, for every variant that has one.
    pub fn call(&self) -> Option<&Call> {
        match self {
            Error::Unauthorized { call, .. }
            | Error::Forbidden { call, .. }
            | Error::NotFound { call, .. }
            | Error::Throttled { call, .. }
            | Error::Network { call, .. }
            | Error::Server { call, .. }
            | Error::Rejected { call, .. }
            | Error::BadResponse { call, .. }
            | Error::OperationFailed { call, .. }
            | Error::ForeignOrigin { call, .. }
            | Error::Interrupted { call, .. }
            | Error::Deferred { call }
            | Error::Deadline { call, .. } => Some(call),
            Error::Credential { .. }
            | Error::Certificate { .. }
            | Error::Config(_)
            | Error::Invalid(_) => None,
        }
    }

    /// The denial, when this is a 403.
    pub fn denial(&self) -> Option<&Denial> {
        match self {
            Error::Forbidden { denial, .. } => Some(denial),
            _ => None,
        }
    }

    /// The HTTP status Azure answered with, when there was an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Unauthorized { .. } => Some(401),
            Error::Forbidden { .. } => Some(403),
            Error::NotFound { .. } => Some(404),
            Error::Throttled { .. } => Some(429),
            Error::Server { status, .. }
            | Error::Rejected { status, .. }
            | Error::BadResponse { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// `code` and `message` from any of the error envelopes keyflip meets: ARM and Key
/// Vault (`{"error":{"code","message","innererror":{"code"}}}`), a workspace's REST
/// API 2.0 (`{"error_code","message"}`), Entra ID (`{"error","error_description"}`), App
/// Service settings (`{"Code","Message"}`), and the Blob service's XML (`<Code>`,
/// `<Message>`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ServiceError {
    pub code: Option<String>,
    pub message: Option<String>,
    /// Key Vault's `innererror.code` (e.g. `ForbiddenByRbac`).
    pub(crate) inner_code: Option<String>,
}

impl ServiceError {
    pub fn parse(body: &[u8]) -> ServiceError {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
            let s = |v: &serde_json::Value| v.as_str().map(str::to_owned);
            if let Some(e) = v.get("error").filter(|e| e.is_object()) {
                return ServiceError {
                    code: e.get("code").and_then(s),
                    message: e.get("message").and_then(s),
                    inner_code: e
                        .get("innererror")
                        .or_else(|| e.get("innerError"))
                        .and_then(|i| i.get("code"))
                        .and_then(s),
                };
            }
            // App Service answers settings errors in its own shape, capitalized:
            // `{"Code", "Message", "Details", ...}`.
            return ServiceError {
                code: v
                    .get("error_code")
                    .or_else(|| v.get("code"))
                    .or_else(|| v.get("error"))
                    .or_else(|| v.get("Code"))
                    .and_then(s),
                message: v
                    .get("message")
                    .or_else(|| v.get("error_description"))
                    .or_else(|| v.get("Message"))
                    .and_then(s),
                inner_code: None,
            };
        }
        let text = String::from_utf8_lossy(body);
        let tag = |name: &str| {
            let open = format!("<{name}>");
            let start = text.find(&open)? + open.len();
            let end = text[start..].find(&format!("</{name}>"))? + start;
            Some(text[start..end].trim().to_owned())
        };
        ServiceError {
            code: tag("Code"),
            message: tag("Message"),
            inner_code: None,
        }
    }

    /// The most specific code: Key Vault puts the useful one in `innererror`.
    pub(crate) fn best_code(&self) -> Option<String> {
        self.inner_code.clone().or_else(|| self.code.clone())
    }

    /// The action and scope named in a 403 message. ARM writes `... perform action
    /// 'A' over scope 'S' ...`; Key Vault writes `Action: 'A'` and `Resource: 'S'`.
    fn action_and_scope(&self) -> (Option<String>, Option<String>) {
        let Some(m) = &self.message else {
            return (None, None);
        };
        let quoted_after = |marker: &str| {
            let start = m.find(marker)? + marker.len();
            let end = m[start..].find('\'')? + start;
            Some(m[start..end].to_owned())
        };
        (
            quoted_after("perform action '").or_else(|| quoted_after("Action: '")),
            quoted_after("over scope '").or_else(|| quoted_after("Resource: '")),
        )
    }
}

/// Builds the 403 denial: Azure's own statement of the missing action when it gives
/// one (data action when `expected` is one), else the action keyflip expected.
pub(crate) fn denial(service: &ServiceError, expected: Option<&Action>) -> Denial {
    let (named, scope) = service.action_and_scope();
    let action = match (named, expected) {
        (Some(name), Some(Action::Data(_))) => Some(Action::Data(name.into())),
        (Some(name), _) => Some(if name.contains("/secrets/") && name.contains("KeyVault") {
            Action::Data(name.into())
        } else {
            Action::Control(name.into())
        }),
        (None, expected) => expected.cloned(),
    };
    Denial {
        role: action.as_ref().and_then(role_granting),
        action,
        scope,
        code: service.best_code(),
        message: service.message.clone(),
        advice: None,
    }
}

/// The wait Azure asks for: `retry-after-ms` / `x-ms-retry-after-ms` (milliseconds),
/// else `Retry-After` (seconds or an HTTP date).
pub(crate) fn retry_after(headers: &Headers) -> Option<Duration> {
    for name in ["retry-after-ms", "x-ms-retry-after-ms"] {
        if let Some(ms) = headers
            .get_optional_str(&azure_core::http::headers::HeaderName::from_static(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            return Some(Duration::from_millis(ms));
        }
    }
    let v = headers.get_optional_str(&azure_core::http::headers::RETRY_AFTER)?;
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// Azure's request id from whichever header the service uses.
pub(crate) fn request_id(headers: &Headers) -> Option<String> {
    [
        "x-ms-request-id",
        "x-request-id",
        "x-ms-correlation-request-id",
    ]
    .iter()
    .find_map(|n| {
        headers
            .get_optional_str(&azure_core::http::headers::HeaderName::from_static(n))
            .map(str::to_owned)
    })
}

/// Describes a JSON parse failure without quoting the input (see the module docs).
pub(crate) fn json_problem(e: &serde_json::Error, expected: &str) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Io => "could not be read",
        Category::Syntax => "is not valid JSON",
        Category::Data => "does not have the expected shape",
        Category::Eof => "ended early",
    };
    format!(
        "the body {what} (line {}, column {}); expected {expected}",
        e.line(),
        e.column()
    )
}

#[cfg(test)]
mod tests {
    use super::super::roles::actions;
    use super::*;

    #[test]
    fn parses_every_envelope() {
        let arm = ServiceError::parse(br#"{"error":{"code":"ResourceNotFound","message":"gone"}}"#);
        assert_eq!(arm.code.as_deref(), Some("ResourceNotFound"));
        let kv = ServiceError::parse(
            br#"{"error":{"code":"Forbidden","message":"m","innererror":{"code":"ForbiddenByRbac"}}}"#,
        );
        assert_eq!(kv.best_code().as_deref(), Some("ForbiddenByRbac"));
        let dbx = ServiceError::parse(br#"{"error_code":"PERMISSION_DENIED","message":"no"}"#);
        assert_eq!(dbx.code.as_deref(), Some("PERMISSION_DENIED"));
        let xml = ServiceError::parse(
            b"<?xml version=\"1.0\"?><Error><Code>AuthenticationFailed</Code><Message>Server failed</Message></Error>",
        );
        assert_eq!(xml.code.as_deref(), Some("AuthenticationFailed"));
        let web = ServiceError::parse(
            br#"{"Code":"BadRequest","Message":"The parameter properties has an invalid value.","Target":null,"Details":[],"Innererror":null}"#,
        );
        assert_eq!(
            (web.code.as_deref(), web.message.as_deref()),
            (
                Some("BadRequest"),
                Some("The parameter properties has an invalid value.")
            )
        );
        assert_eq!(ServiceError::parse(b"not json"), ServiceError::default());
    }

    #[test]
    fn a_403_names_the_action_scope_and_role() {
        let arm = ServiceError::parse(
            br#"{"error":{"code":"AuthorizationFailed","message":"The client 'x' with object id 'x' does not have authorization to perform action 'Microsoft.Storage/storageAccounts/regeneratekey/action' over scope '/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/a' or the scope is invalid."}}"#,
        );
        let d = denial(&arm, Some(&actions::STORAGE_LIST_KEYS));
        assert_eq!(d.action, Some(actions::STORAGE_REGENERATE_KEY));
        assert_eq!(
            d.scope.as_deref(),
            Some(
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/a"
            )
        );
        let shown = d.to_string();
        assert!(
            shown.contains("Storage Account Key Operator Service Role"),
            "{shown}"
        );

        let kv = ServiceError::parse(
            br#"{"error":{"code":"Forbidden","message":"Caller is not authorized.\r\nAction: 'Microsoft.KeyVault/vaults/secrets/setSecret/action'\r\nResource: '/subscriptions/s/x/secrets/n'\r\n","innererror":{"code":"ForbiddenByRbac"}}}"#,
        );
        let d = denial(&kv, None);
        assert_eq!(d.action, Some(actions::KV_SECRET_SET));
        assert_eq!(d.role.map(|r| r.name), Some("Key Vault Secrets Officer"));

        // No action in the body: fall back to what the operation needs.
        let d = denial(
            &ServiceError::default(),
            Some(&actions::ML_WORKSPACE_LIST_KEYS),
        );
        assert_eq!(d.role.map(|r| r.name), Some("Contributor"));
    }

    #[test]
    fn retry_after_reads_all_three_headers() {
        let mut h = Headers::new();
        h.insert("retry-after", "7");
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert("x-ms-retry-after-ms", "1500");
        assert_eq!(retry_after(&h), Some(Duration::from_millis(1500)));
        let mut h = Headers::new();
        h.insert("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        assert_eq!(retry_after(&Headers::new()), None);
    }

    #[test]
    fn json_problems_never_quote_the_input() {
        let secret = "c2VjcmV0LWtleS12YWx1ZQ==";
        let body = format!(r#"{{"keys":"{secret}"}}"#);
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Keys {
            keys: Vec<String>,
        }
        let e = serde_json::from_str::<Keys>(&body).unwrap_err();
        assert!(e.to_string().contains(secret), "serde_json quotes values");
        let shown = json_problem(&e, "a key list");
        assert!(!shown.contains(secret), "{shown}");
        assert!(shown.contains("expected a key list"));
    }
}
