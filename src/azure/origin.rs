//! Where each Azure client may send requests, enforced in one place.
//!
//! Every pipeline keyflip builds (ARM, each Key Vault `SecretClient`, each
//! workspace a consumer lives in, the SharedKey probe) has an [`OriginPolicy`] as its first per-call
//! policy. It refuses, before any token is attached or any signature computed, a
//! request whose URL is not HTTPS, carries user-info, or is not on the
//! [`Destination`] the client was built for. So every URL keyflip or the SDK follows
//! from an answer (Key Vault's `nextLink` in the SDK pager, ARM's `nextLink`,
//! `Location` and `Azure-AsyncOperation`, a workspace API's paging, a blob endpoint
//! from ARM)
//! is checked by the same code, and a token or signature never leaves its origin.
//! This is the Azure SDK guideline for bearer tokens ("only send a token to the
//! endpoint it was requested for"), applied to keyflip's own followers too.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use azure_core::error::ErrorKind;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Request};
use url::Url;

use super::cloud::BlobEndpoints;

/// Where one client may send requests.
#[derive(Clone, Debug)]
pub(crate) enum Destination {
    /// Exactly one origin (scheme, host, port): ARM, a vault, a consumer's workspace.
    Origin(url::Origin),
    /// The cloud's storage blob endpoints (the SharedKey probe, which serves every
    /// account).
    Blob(BlobEndpoints),
}

impl Destination {
    /// The origin of `url`, which must be HTTPS.
    pub(crate) fn origin_of(url: &Url) -> Destination {
        Destination::Origin(url.origin())
    }

    fn admits(&self, url: &Url) -> Result<(), String> {
        match self {
            Destination::Origin(origin) if url.origin() == *origin => Ok(()),
            Destination::Origin(_) => Err("it is another origin".to_owned()),
            Destination::Blob(blob) => blob.admits_any(url),
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Origin(origin) => f.write_str(&origin.ascii_serialization()),
            Destination::Blob(blob) => write!(f, "{blob}"),
        }
    }
}

/// A request [`OriginPolicy`] refused. It travels inside an `azure_core::Error`
/// (kind `Other`, never retried) and becomes [`super::Error::ForeignOrigin`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "refused to send a {service} request to {found} ({reason}): keyflip sends this client's requests, and the token or signature they carry, only to {allowed} over HTTPS"
)]
pub struct Refused {
    pub service: &'static str,
    /// Scheme, host and port of the refused URL (never its path or query, which may
    /// hold a signature).
    pub found: String,
    pub allowed: String,
    pub reason: String,
}

/// The per-call policy that keeps a client on its [`Destination`].
#[derive(Debug)]
pub(crate) struct OriginPolicy {
    service: &'static str,
    destination: Destination,
}

impl OriginPolicy {
    pub fn policy(service: &'static str, destination: Destination) -> Arc<dyn Policy> {
        Arc::new(OriginPolicy {
            service,
            destination,
        })
    }

    /// Why `url` may not be sent to, if it may not.
    pub fn check(&self, url: &Url) -> Result<(), Refused> {
        let refuse = |reason: String| Refused {
            service: self.service,
            found: shown_origin(url),
            allowed: self.destination.to_string(),
            reason,
        };
        if url.scheme() != "https" {
            return Err(refuse(format!("{} is not HTTPS", url.scheme())));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(refuse("the URL carries user-info".to_owned()));
        }
        self.destination.admits(url).map_err(refuse)
    }
}

/// `scheme://host[:port]` of a URL, for messages.
pub(crate) fn shown_origin(url: &Url) -> String {
    match url.host_str() {
        Some(host) => match url.port() {
            Some(port) => format!("{}://{host}:{port}", url.scheme()),
            None => format!("{}://{host}", url.scheme()),
        },
        None => format!("{}:", url.scheme()),
    }
}

#[async_trait]
impl Policy for OriginPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        if let Err(refused) = self.check(request.url()) {
            tracing::warn!(service = self.service, found = %refused.found, allowed = %refused.allowed, reason = %refused.reason, "request to a foreign origin refused");
            return Err(azure_core::Error::new(ErrorKind::Other, refused));
        }
        match next.split_first() {
            Some((first, rest)) => first.send(ctx, request, rest).await,
            None => Err(azure_core::Error::with_message(
                ErrorKind::Other,
                "the origin policy is the last policy of its pipeline",
            )),
        }
    }
}

/// The refusal inside an SDK error, if that is what it is.
pub(crate) fn refused(error: &azure_core::Error) -> Option<&Refused> {
    error.downcast_ref::<Refused>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allowed: &str) -> OriginPolicy {
        OriginPolicy {
            service: "ARM",
            destination: Destination::origin_of(&Url::parse(allowed).unwrap()),
        }
    }

    #[test]
    fn only_the_clients_own_https_origin_passes() {
        let p = policy("https://management.azure.com/");
        let ok = |u: &str| p.check(&Url::parse(u).unwrap());
        assert!(ok("https://management.azure.com/subscriptions/x?api-version=1").is_ok());
        assert!(ok("https://MANAGEMENT.azure.com:443/x").is_ok());
        for (bad, why) in [
            ("https://evil.example/x", "another origin"),
            ("http://management.azure.com/x", "not HTTPS"),
            ("https://management.azure.com:8443/x", "another origin"),
            (
                "https://management.azure.com.evil.example/x",
                "another origin",
            ),
            ("https://user:pw@management.azure.com/x", "user-info"),
        ] {
            let e = ok(bad).unwrap_err();
            assert!(e.reason.contains(why), "{bad}: {e}");
            assert!(!e.found.contains("/x"), "{e:?}");
            assert!(
                e.to_string().contains("https://management.azure.com"),
                "{e}"
            );
        }
    }
}
