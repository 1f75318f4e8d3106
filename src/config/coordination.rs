//! `[coordination]`: several keyflip replicas share one blob container (leases and
//! the shared journal, see `crate::coordination`). Absent, keyflip runs alone with
//! its local journal and OS locks.
//!
//! Promises: the endpoint is https (a bearer token never travels in clear); the
//! container name follows Azure's rules (3–63 lower-case letters, digits and single
//! hyphens, starting and ending with a letter or digit); the lease length is within
//! the service's 15–60 seconds; the coordination account's name is known, so a plan
//! that would rotate its keys can be refused.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use url::Url;

use super::Ctx;
use crate::diagnostic::SourceError;

pub const DEFAULT_LEASE_SECONDS: u32 = 30;

/// Settings of the shared coordination store, resolved and validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoordinationConfig {
    /// The blob endpoint of the coordination account, ending in `/`
    /// (`https://acct.blob.core.windows.net/`, or path-style `https://host:port/acct/`).
    pub blob_endpoint: Url,
    /// The coordination account's name (from the endpoint).
    pub account_name: String,
    pub container: String,
    /// The lease length (15–60 s).
    pub lease: Duration,
    /// This replica's name in leases, the shared journal and `status`.
    pub replica: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCoordination {
    blob_endpoint: Option<Spanned<String>>,
    container: Option<Spanned<String>>,
    lease_seconds: Option<Spanned<i64>>,
    replica: Option<Spanned<String>>,
}

/// The account name in a blob endpoint: the first label of `acct.blob.<suffix>`, or
/// the first path segment of a path-style endpoint (an IP or `localhost` host, as
/// Azurite and the twin serve it).
pub fn account_of_endpoint(url: &Url) -> Option<String> {
    let host = url.host_str()?;
    let path_style = url
        .host()
        .is_some_and(|h| !matches!(h, url::Host::Domain(_)))
        || host.eq_ignore_ascii_case("localhost");
    if path_style {
        let first = url.path_segments()?.find(|s| !s.is_empty())?;
        return Some(first.to_ascii_lowercase());
    }
    let (name, rest) = host.split_once('.')?;
    rest.to_ascii_lowercase()
        .starts_with("blob.")
        .then(|| name.to_ascii_lowercase())
}

fn valid_container(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

impl Ctx<'_> {
    pub(super) fn coordination(
        &self,
        raw: Spanned<RawCoordination>,
        hostname: Option<String>,
    ) -> Result<CoordinationConfig, SourceError> {
        let span = raw.span();
        let raw = raw.into_inner();
        let endpoint = raw.blob_endpoint.ok_or_else(|| {
            self.error(span.clone(), "[coordination] needs blob_endpoint")
                .with_hint("add blob_endpoint = \"https://<account>.blob.core.windows.net/\"")
        })?;
        let mut blob_endpoint = self.https_url(&endpoint, "blob_endpoint")?;
        if !blob_endpoint.path().ends_with('/') {
            let path = format!("{}/", blob_endpoint.path());
            blob_endpoint.set_path(&path);
        }
        if blob_endpoint.query().is_some() {
            return Err(self
                .error(endpoint.span(), "blob_endpoint must not carry a query (a SAS token?)")
                .with_hint("keyflip authenticates with its Entra ID credential; remove everything after '?'"));
        }
        let account_name = account_of_endpoint(&blob_endpoint).ok_or_else(|| {
            self.error(
                endpoint.span(),
                format!(
                    "cannot tell the storage account from blob_endpoint '{}'",
                    endpoint.get_ref()
                ),
            )
            .with_hint(
                "write the account's blob endpoint, https://<account>.blob.core.windows.net/",
            )
        })?;
        let container = raw.container.ok_or_else(|| {
            self.error(span.clone(), "[coordination] needs container")
                .with_hint("add container = \"keyflip\" (created on first use)")
        })?;
        if !valid_container(container.get_ref()) {
            return Err(self
                .error(
                    container.span(),
                    format!("container '{}' is not a valid container name", container.get_ref()),
                )
                .with_hint("use 3 to 63 lower-case letters, digits and single hyphens, starting and ending with a letter or digit"));
        }
        let lease = match &raw.lease_seconds {
            None => DEFAULT_LEASE_SECONDS,
            Some(v) => u32::try_from(*v.get_ref())
                .ok()
                .filter(|s| (15..=60).contains(s))
                .ok_or_else(|| {
                    self.error(
                        v.span(),
                        format!(
                            "lease_seconds is {}; it must be between 15 and 60",
                            v.get_ref()
                        ),
                    )
                    .with_hint(
                        "Azure Blob leases last 15 to 60 seconds; 30 suits most installations",
                    )
                })?,
        };
        let replica = match raw.replica {
            Some(r) if !r.get_ref().trim().is_empty() => r.into_inner().trim().to_owned(),
            Some(r) => {
                return Err(self
                    .error(r.span(), "replica must not be empty")
                    .with_hint("name this replica, or remove the key to use the host name"));
            }
            None => hostname.unwrap_or_else(|| "keyflip".to_owned()),
        };
        Ok(CoordinationConfig {
            blob_endpoint,
            account_name,
            container: container.into_inner(),
            lease: Duration::from_secs(u64::from(lease)),
            replica,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{parse, source_error};

    #[test]
    fn a_full_section_parses_and_defaults_apply() {
        let c = parse(
            "[coordination]\nblob_endpoint = \"https://stcoord.blob.core.windows.net\"\ncontainer = \"keyflip\"\n",
            &[("HOSTNAME", "vm-a")],
        )
        .unwrap();
        let c = c.coordination.unwrap();
        assert_eq!(
            c.blob_endpoint.as_str(),
            "https://stcoord.blob.core.windows.net/"
        );
        assert_eq!(c.account_name, "stcoord");
        assert_eq!(c.lease, Duration::from_secs(30));
        assert_eq!(c.replica, "vm-a");
        let c = parse(
            "[coordination]\nblob_endpoint = \"https://127.0.0.1:10000/devacct\"\ncontainer = \"k-1\"\nlease_seconds = 15\nreplica = \"pod-0\"\n",
            &[],
        )
        .unwrap()
        .coordination
        .unwrap();
        assert_eq!(c.account_name, "devacct");
        assert_eq!(c.replica, "pod-0");
        assert_eq!(c.lease, Duration::from_secs(15));
        assert!(parse("", &[]).unwrap().coordination.is_none());
    }

    #[test]
    fn bad_values_name_the_key_and_the_fix() {
        let cases = [
            (
                "blob_endpoint = \"http://a.blob.core.windows.net/\"\ncontainer = \"k\"",
                "must use https",
            ),
            ("container = \"keyflip\"", "needs blob_endpoint"),
            (
                "blob_endpoint = \"https://a.blob.core.windows.net/\"",
                "needs container",
            ),
            (
                "blob_endpoint = \"https://a.blob.core.windows.net/\"\ncontainer = \"Key_Flip\"",
                "not a valid container name",
            ),
            (
                "blob_endpoint = \"https://a.blob.core.windows.net/\"\ncontainer = \"keyflip\"\nlease_seconds = 90",
                "between 15 and 60",
            ),
            (
                "blob_endpoint = \"https://a.blob.core.windows.net/?sv=1\"\ncontainer = \"keyflip\"",
                "query",
            ),
            (
                "blob_endpoint = \"https://example.com/\"\ncontainer = \"keyflip\"",
                "cannot tell the storage account",
            ),
            (
                "blob_endpoint = \"https://a.blob.core.windows.net/\"\ncontainer = \"keyflip\"\naccount_key = \"x\"",
                "account_key",
            ),
        ];
        for (body, expected) in cases {
            let e = source_error(&format!("[coordination]\n{body}\n"), &[]);
            assert!(e.to_string().contains(expected), "{body}: {e}");
        }
    }
}
