//! SharedKey request signing for the Blob service (Microsoft Learn, "Authorize with
//! Shared Key": learn.microsoft.com/rest/api/storageservices/authorize-with-shared-key), the
//! way Microsoft's SDKs do it, with `ring`'s HMAC-SHA256.
//!
//! The string to sign is the verb, eleven standard headers (Content-Length empty when
//! zero, Date empty because `x-ms-date` is used), every `x-ms-*` header lowercased and
//! sorted, then `/{account}{path}` and the query parameters sorted by lowercased name
//! with decoded values. Because the path is used as sent, path-style endpoints
//! (Azurite, keyflip-twin: `https://host/{account}/`) work unchanged. Signing runs as a
//! per-try pipeline policy, after the pipeline has added `x-ms-client-request-id`, so
//! every header that is sent is the header that was signed.

use std::collections::BTreeMap;
use std::sync::Arc;

use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, HttpClient, Request};
use ring::hmac;
use url::Url;

use super::http::{RetryPolicy, Sender};
use crate::secret::{KeyFormatError, StorageKey};

/// The Blob REST version keyflip sends (Get Account Information needs 2018-03-28+).
pub const BLOB_API_VERSION: &str = "2023-11-03";

/// The standard headers, in string-to-sign order.
const STANDARD_HEADERS: [&str; 11] = [
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
];

/// The SharedKey string to sign for a request. `headers` are (name, value) pairs in
/// any case and order.
pub fn string_to_sign<'a>(
    method: &str,
    url: &Url,
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    account: &str,
) -> String {
    let headers: BTreeMap<String, &str> = headers
        .into_iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v))
        .collect();
    let mut out = String::with_capacity(256);
    out.push_str(&method.to_ascii_uppercase());
    out.push('\n');
    for name in STANDARD_HEADERS {
        let value = headers.get(name).copied().unwrap_or("");
        // Since version 2015-02-21 a zero Content-Length is signed as empty.
        if !(name == "content-length" && value == "0") {
            out.push_str(value);
        }
        out.push('\n');
    }
    for (name, value) in headers.range("x-ms-".to_owned()..) {
        if !name.starts_with("x-ms-") {
            break;
        }
        out.push_str(name);
        out.push(':');
        out.push_str(value.trim());
        out.push('\n');
    }
    out.push('/');
    out.push_str(account);
    out.push_str(url.path());
    let mut query: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in url.query_pairs() {
        query
            .entry(name.to_ascii_lowercase())
            .or_default()
            .push(value.into_owned());
    }
    for (name, mut values) in query {
        values.sort();
        out.push('\n');
        out.push_str(&name);
        out.push(':');
        out.push_str(&values.join(","));
    }
    out
}

/// `Base64(HMAC-SHA256(Base64Decode(key), string_to_sign))`.
pub fn signature(key: &StorageKey, string_to_sign: &str) -> Result<String, KeyFormatError> {
    use base64::Engine as _;
    let bytes = key.decode()?;
    let tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, &bytes),
        string_to_sign.as_bytes(),
    );
    Ok(base64::engine::general_purpose::STANDARD.encode(tag.as_ref()))
}

/// The account and key a request is signed with, passed to [`SharedKeyPolicy`]
/// through the request's `Context`.
#[derive(Clone)]
pub(crate) struct Signing {
    pub account: String,
    pub key: StorageKey,
}

/// Sets `x-ms-date` and `x-ms-version`, then signs. Refuses to send unsigned.
#[derive(Debug)]
struct SharedKeyPolicy;

#[async_trait::async_trait]
impl Policy for SharedKeyPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        use azure_core::error::{Error, ErrorKind};
        let signing = ctx.value::<Signing>().ok_or_else(|| {
            Error::with_message(ErrorKind::Other, "no SharedKey signing key in the context")
        })?;
        request.insert_header(
            "x-ms-date",
            httpdate::fmt_http_date(std::time::SystemTime::now()),
        );
        request.insert_header("x-ms-version", BLOB_API_VERSION);
        let method = request.method().to_string();
        let text = string_to_sign(
            &method,
            request.url(),
            request
                .headers()
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str())),
            &signing.account,
        );
        let sig = signature(&signing.key, &text)
            .map_err(|e| Error::with_message(ErrorKind::Other, e.to_string()))?;
        request.insert_header(
            "authorization",
            format!("SharedKey {}:{sig}", signing.account),
        );
        next[0].send(ctx, request, &next[1..]).await
    }
}

/// A sender that signs each try with the key in its `Context`. Probes are single
/// attempts, so it never retries.
/// The probe's sender: SharedKey-signed requests only to `endpoints`, the cloud's
/// blob endpoints.
pub(crate) fn sender(http: &Arc<dyn HttpClient>, endpoints: super::cloud::BlobEndpoints) -> Sender {
    Sender::with_policies(
        http,
        vec![Arc::new(SharedKeyPolicy)],
        "SharedKey",
        super::http::Service {
            name: "Blob",
            destination: super::origin::Destination::Blob(endpoints),
        },
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV_KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    fn sign(url: &str, headers: &[(&str, &str)]) -> (String, String) {
        let url = Url::parse(url).unwrap();
        let text = string_to_sign("GET", &url, headers.iter().copied(), "devstoreaccount1");
        let sig = signature(&StorageKey::new(DEV_KEY.into()), &text).unwrap();
        (text, sig)
    }

    const HEADERS_2026: [(&str, &str); 2] = [
        ("x-ms-version", "2023-11-03"),
        ("x-ms-date", "Mon, 01 Jun 2026 00:00:00 GMT"),
    ];

    #[test]
    fn contracts_f1_vector_get_account_information() {
        let (text, sig) = sign(
            "https://devstoreaccount1.blob.core.windows.net/?restype=account&comp=properties",
            &HEADERS_2026,
        );
        assert_eq!(
            text,
            "GET\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:Mon, 01 Jun 2026 00:00:00 GMT\nx-ms-version:2023-11-03\n/devstoreaccount1/\ncomp:properties\nrestype:account"
        );
        assert_eq!(sig, "gA1eEDrecd1EKQwTnWN6G4GeF21XRKK+hIyY9lVnZ6g=");
    }

    #[test]
    fn contracts_f1_vector_list_containers() {
        let (_, sig) = sign(
            "https://devstoreaccount1.blob.core.windows.net/?comp=list&maxresults=1",
            &HEADERS_2026,
        );
        assert_eq!(sig, "/D24KO7UTy02bMK7SK0D1N9Hxh5yyIxBsPSzPBRMdQ8=");
    }

    #[test]
    fn python_sdk_vector_with_zero_content_length_and_encoded_path() {
        // Computed with the Python azure-storage-blob signer
        // (azure/storage/blob/_shared/authentication.py, SharedKeyCredentialPolicy).
        let url = Url::parse("https://myaccount.blob.core.windows.net/mycontainer/my%20blob.txt?restype=container&comp=metadata&timeout=20").unwrap();
        let text = string_to_sign(
            "GET",
            &url,
            [
                ("x-ms-date", "Sun, 11 Oct 2009 21:49:13 GMT"),
                ("x-ms-version", "2009-09-19"),
                ("Content-Length", "0"),
            ],
            "myaccount",
        );
        assert!(
            text.ends_with(
                "/myaccount/mycontainer/my%20blob.txt\ncomp:metadata\nrestype:container\ntimeout:20"
            ),
            "{text}"
        );
        assert_eq!(
            signature(&StorageKey::new(DEV_KEY.into()), &text).unwrap(),
            "JqESl4DR8v7PNJSxh5ri9GQ1iOqlH2YUKe4q2LneMAI="
        );
    }

    #[test]
    fn path_style_urls_name_the_account_twice_and_other_headers_are_ignored() {
        let url =
            Url::parse("https://127.0.0.1:10000/acct/?restype=account&comp=properties").unwrap();
        let text = string_to_sign(
            "get",
            &url,
            [
                ("X-MS-Client-Request-Id", " id "),
                ("user-agent", "keyflip"),
                ("x-ms-date", "d"),
                ("Content-Type", "text/plain"),
            ],
            "acct",
        );
        assert!(text.starts_with("GET\n\n\n\n\n"), "{text}");
        assert!(text.contains("\ntext/plain\n"), "{text}");
        assert!(
            text.contains("x-ms-client-request-id:id\nx-ms-date:d\n/acct/acct/\n"),
            "{text}"
        );
        assert!(!text.contains("keyflip"), "{text}");
    }

    #[test]
    fn a_key_that_is_not_base64_is_an_error() {
        assert!(signature(&StorageKey::new("%%%".into()), "x").is_err());
    }
}
