//! A small Blob service client for the coordination container: Entra bearer token
//! (audience `https://storage.azure.com`), over keyflip's one HTTPS transport and
//! `azure_core` pipeline, never an account key.
//!
//! Only the calls coordination needs (Microsoft Learn, Blob service REST API: "Create
//! Container", "Get Blob", "Put Blob", "Lease Blob"; spec
//! `specification/storage/data-plane/Microsoft.BlobStorage` in
//! Azure/azure-rest-api-specs): conditional reads and writes by ETag, and lease
//! acquire, renew, release and break. A write that names a lease id succeeds only
//! while that lease is the blob's, and one with `If-Match` only while the blob is
//! unchanged: the two together are keyflip's fencing (see `docs/ARCHITECTURE.md`,
//! "Replicas").
//!
//! Promises: reads, lease calls and container creation are retried on transient
//! answers (a lease acquire carries the proposed id, so a retried acquire that already
//! landed succeeds again); a conditional `Put Blob` is sent once, and the caller
//! resolves an unclear outcome by reading the blob back.

use azure_core::http::headers::{HeaderName, Headers};
use azure_core::http::{Method, Request};
use url::Url;

use super::error::{CoordError, classify};
use crate::azure::{Answer, Operation, RETRY_STATUSES, Sender};

/// The Blob service version keyflip speaks (bearer tokens need 2017-11-09 or later).
pub(crate) const API_VERSION: &str = "2023-11-03";
/// The Entra ID resource for Azure Storage, in every cloud (Microsoft Learn,
/// "Authorize access to blobs using Microsoft Entra ID").
pub const STORAGE_AUDIENCE: &str = "https://storage.azure.com";

/// A blob's entity tag, as the service sent it (quotes included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ETag(pub String);

/// A lease id (a GUID keyflip proposes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseId(pub String);

/// What a write requires of the blob.
#[derive(Clone, Debug, Default)]
pub struct Conditions<'a> {
    /// The lease the writer holds (`x-ms-lease-id`).
    pub lease: Option<&'a LeaseId>,
    /// Write only over this version (`If-Match`).
    pub if_match: Option<&'a ETag>,
    /// Write only if the blob does not exist (`If-None-Match: *`).
    pub if_none: bool,
}

/// A lease length: 15 to 60 seconds, or infinite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseDuration {
    Seconds(u32),
    Infinite,
}

impl LeaseDuration {
    fn header(self) -> String {
        match self {
            LeaseDuration::Seconds(s) => s.to_string(),
            LeaseDuration::Infinite => "-1".to_owned(),
        }
    }
}

/// A blob as read: its content, version and whether a lease is on it now.
#[derive(Clone, Debug)]
pub struct BlobRead {
    pub body: Vec<u8>,
    pub etag: ETag,
    pub leased: bool,
}

/// The text of every `<tag>...</tag>` in a List Blobs answer (its elements carry no
/// attributes and do not nest in themselves; a self-closed `<tag />` is empty).
fn elements<'a>(xml: &'a str, tag: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut rest = xml;
    std::iter::from_fn(move || {
        let start = rest.find(&open)? + open.len();
        let end = rest[start..].find(&close)? + start;
        let text = &rest[start..end];
        rest = &rest[end + close.len()..];
        Some(text)
    })
}

/// One blob of a List Blobs answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    /// Its entity tag as listed (List Blobs gives it without the quotes Get Blob's
    /// `ETag` header has).
    pub etag: String,
    /// `Content-Length` (0 when the answer lacks it).
    pub len: u64,
    /// Whether someone holds its lease now (`LeaseState` leased or breaking, as
    /// [`BlobRead::leased`]).
    pub leased: bool,
    /// Its metadata, by name (empty unless listed with `include=metadata`).
    pub metadata: Vec<(String, String)>,
}

/// The blobs of a List Blobs answer (`<Blob>` elements: `Name`, then `Properties` and
/// `Metadata`, whose elements are the metadata names).
fn listed(xml: &str) -> Vec<Listed> {
    elements(xml, "Blob")
        .filter_map(|blob| {
            let name = unescape(elements(blob, "Name").next()?);
            let properties = elements(blob, "Properties").next().unwrap_or_default();
            let len = elements(properties, "Content-Length")
                .next()
                .and_then(|l| l.trim().parse().ok())
                .unwrap_or(0);
            let leased = matches!(
                elements(properties, "LeaseState").next().map(str::trim),
                Some("leased" | "breaking")
            );
            let metadata = elements(blob, "Metadata")
                .next()
                .map(|m| {
                    [super::document::SUMMARY_METADATA]
                        .iter()
                        .filter_map(|n| {
                            elements(m, n)
                                .next()
                                .map(|v| ((*n).to_owned(), unescape(v)))
                        })
                        .collect()
                })
                .unwrap_or_default();
            Some(Listed {
                name,
                etag: elements(properties, "Etag")
                    .next()
                    .unwrap_or_default()
                    .trim_matches('"')
                    .to_owned(),
                len,
                leased,
                metadata,
            })
        })
        .collect()
}

/// XML's five predefined entities (blob names keyflip writes never need them).
fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// The coordination container, reached with a bearer token.
#[derive(Clone)]
pub struct BlobClient {
    sender: Sender,
    /// `https://host/[account/]container/` (always with the trailing slash).
    container: Url,
}

fn op(name: &'static str, idempotent: bool) -> Operation {
    Operation {
        name,
        action: None,
        idempotent,
        retry_on: RETRY_STATUSES,
    }
}

fn header<'h>(headers: &'h Headers, name: &'static str) -> Option<&'h str> {
    headers.get_optional_str(&HeaderName::from_static(name))
}

impl BlobClient {
    /// `endpoint` is the account's blob endpoint (`https://acct.blob.core.windows.net/`,
    /// or path-style `https://127.0.0.1:10000/acct/`).
    /// `container` is a valid container name (checked with the configuration).
    pub(crate) fn new(sender: Sender, endpoint: &Url, container: &str) -> Self {
        let mut url = endpoint.clone();
        let base = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base}/{container}/"));
        url.set_query(None);
        BlobClient {
            sender,
            container: url,
        }
    }

    /// The configured container, with tokens for `audience` from `azure`'s credential
    /// ([`STORAGE_AUDIENCE`] in keyflip; tests try others).
    pub fn for_audience(
        azure: &crate::azure::Azure,
        audience: &str,
        config: &crate::config::CoordinationConfig,
    ) -> Self {
        Self::new(
            azure.bearer_sender(audience, &config.blob_endpoint),
            &config.blob_endpoint,
            &config.container,
        )
    }

    pub(crate) fn container_url(&self) -> &Url {
        &self.container
    }

    fn url(&self, blob: &str, query: Option<&str>) -> Result<Url, CoordError> {
        let mut url = self.container.join(blob).map_err(|e| CoordError::Format {
            blob: blob.to_owned(),
            detail: format!("not a blob name: {e}"),
        })?;
        url.set_query(query);
        Ok(url)
    }

    fn request(url: &Url, method: Method) -> Request {
        let mut request = Request::new(url.clone(), method);
        request.insert_header("x-ms-version", API_VERSION);
        request.insert_header(
            "x-ms-date",
            httpdate::fmt_http_date(std::time::SystemTime::now()),
        );
        request
    }

    async fn send(
        &self,
        operation: Operation,
        blob: &str,
        make: impl Fn() -> Request,
    ) -> Result<Answer, CoordError> {
        let target = format!("{}{blob}", self.container);
        self.sender
            .send(&operation, &target, make)
            .await
            .map_err(|e| classify(blob, e))
    }

    /// Creates the container unless it exists.
    pub async fn ensure_container(&self) -> Result<(), CoordError> {
        let mut url = self.container.clone();
        url.set_query(Some("restype=container"));
        let result = self
            .send(op("blob.createContainer", true), "", || {
                let mut r = Self::request(&url, Method::Put);
                r.insert_header("content-length", "0");
                r
            })
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(CoordError::Azure(crate::azure::Error::Rejected { status: 409, .. })) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The blob's content and ETag, or `None` when it does not exist.
    pub async fn get(&self, blob: &str) -> Result<Option<(Vec<u8>, ETag)>, CoordError> {
        Ok(self.read(blob).await?.map(|r| (r.body, r.etag)))
    }

    /// The blob's content, ETag and lease state, or `None` when it does not exist.
    pub async fn read(&self, blob: &str) -> Result<Option<BlobRead>, CoordError> {
        let url = self.url(blob, None)?;
        match self
            .send(op("blob.get", true), blob, || {
                Self::request(&url, Method::Get)
            })
            .await
        {
            Ok(answer) => {
                let etag = header(&answer.headers, "etag").ok_or_else(|| CoordError::Format {
                    blob: blob.to_owned(),
                    detail: "the answer has no ETag".into(),
                })?;
                // "leased" while someone holds it (also while it is breaking); "available",
                // "expired" or "broken" otherwise (Get Blob, `x-ms-lease-state`).
                let leased = matches!(
                    header(&answer.headers, "x-ms-lease-state"),
                    Some("leased" | "breaking")
                );
                Ok(Some(BlobRead {
                    body: answer.body.to_vec(),
                    etag: ETag(etag.to_owned()),
                    leased,
                }))
            }
            Err(CoordError::Azure(crate::azure::Error::NotFound { .. })) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The names of the container's blobs starting with `prefix`, every page (List
    /// Blobs, 5,000 a page).
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, CoordError> {
        Ok(self
            .list_blobs(prefix, false)
            .await?
            .into_iter()
            .map(|b| b.name)
            .collect())
    }

    /// The container's blobs starting with `prefix` with their length, lease state and
    /// metadata, every page (List Blobs with `include=metadata`, 5,000 a page).
    pub async fn list_with_metadata(&self, prefix: &str) -> Result<Vec<Listed>, CoordError> {
        self.list_blobs(prefix, true).await
    }

    async fn list_blobs(&self, prefix: &str, metadata: bool) -> Result<Vec<Listed>, CoordError> {
        let mut names = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let mut url = self.container.clone();
            {
                // Not `Send`: built and dropped before the request is awaited.
                let mut query = url::form_urlencoded::Serializer::new(String::new());
                query
                    .append_pair("restype", "container")
                    .append_pair("comp", "list")
                    .append_pair("prefix", prefix);
                if metadata {
                    query.append_pair("include", "metadata");
                }
                if let Some(m) = &marker {
                    query.append_pair("marker", m);
                }
                url.set_query(Some(&query.finish()));
            }
            let answer = match self
                .send(op("blob.list", true), prefix, || {
                    Self::request(&url, Method::Get)
                })
                .await
            {
                Ok(answer) => answer,
                // No container yet: nothing was ever recorded.
                Err(CoordError::Azure(crate::azure::Error::NotFound { .. })) => return Ok(names),
                Err(e) => return Err(e),
            };
            let body = String::from_utf8_lossy(&answer.body);
            names.extend(listed(&body));
            marker = elements(&body, "NextMarker")
                .next()
                .map(unescape)
                .filter(|m| !m.is_empty());
            if marker.is_none() {
                return Ok(names);
            }
        }
    }

    /// Writes a block blob under `conditions`, with no metadata (Put Blob replaces
    /// whatever metadata the blob had); returns its new ETag. Sent once: after a
    /// network error the caller reads the blob back to learn whether it landed.
    pub async fn put(
        &self,
        blob: &str,
        body: &[u8],
        conditions: &Conditions<'_>,
    ) -> Result<ETag, CoordError> {
        self.put_with(blob, body, &[], conditions).await
    }

    /// [`BlobClient::put`] with `metadata` (`x-ms-meta-NAME: VALUE`, names lower-case
    /// C# identifiers, values ASCII) in the same request, so the blob's content and
    /// metadata change together or not at all.
    pub async fn put_with(
        &self,
        blob: &str,
        body: &[u8],
        metadata: &[(&str, &str)],
        conditions: &Conditions<'_>,
    ) -> Result<ETag, CoordError> {
        let url = self.url(blob, None)?;
        let answer = self
            .send(op("blob.put", false), blob, || {
                let mut r = Self::request(&url, Method::Put);
                r.insert_header("x-ms-blob-type", "BlockBlob");
                r.insert_header("content-type", "application/json");
                r.insert_header("content-length", body.len().to_string());
                for (name, value) in metadata {
                    r.insert_header(format!("x-ms-meta-{name}"), (*value).to_owned());
                }
                if let Some(lease) = conditions.lease {
                    r.insert_header("x-ms-lease-id", lease.0.clone());
                }
                if let Some(etag) = conditions.if_match {
                    r.insert_header("if-match", etag.0.clone());
                }
                if conditions.if_none {
                    r.insert_header("if-none-match", "*");
                }
                r.set_body(body.to_vec());
                r
            })
            .await?;
        header(&answer.headers, "etag")
            .map(|e| ETag(e.to_owned()))
            .ok_or_else(|| CoordError::Format {
                blob: blob.to_owned(),
                detail: "the write's answer has no ETag".into(),
            })
    }

    async fn lease(
        &self,
        name: &'static str,
        blob: &str,
        headers: &[(&'static str, String)],
    ) -> Result<Answer, CoordError> {
        let url = self.url(blob, Some("comp=lease"))?;
        self.send(op(name, true), blob, || {
            let mut r = Self::request(&url, Method::Put);
            r.insert_header("content-length", "0");
            for (n, v) in headers {
                r.insert_header(*n, v.clone());
            }
            r
        })
        .await
    }

    /// Acquires the blob's lease with `proposed` as its id (acquiring again with the
    /// id already held succeeds and restarts the lease). 409 `LeaseAlreadyPresent`
    /// becomes [`CoordError::Held`].
    pub async fn acquire(
        &self,
        blob: &str,
        duration: LeaseDuration,
        proposed: &LeaseId,
    ) -> Result<LeaseId, CoordError> {
        let answer = self
            .lease(
                "blob.lease.acquire",
                blob,
                &[
                    ("x-ms-lease-action", "acquire".into()),
                    ("x-ms-lease-duration", duration.header()),
                    ("x-ms-proposed-lease-id", proposed.0.clone()),
                ],
            )
            .await?;
        Ok(LeaseId(
            header(&answer.headers, "x-ms-lease-id")
                .unwrap_or(&proposed.0)
                .to_owned(),
        ))
    }

    /// Renews a held lease; [`CoordError::Lost`] when it is no longer this id's.
    pub async fn renew(&self, blob: &str, lease: &LeaseId) -> Result<(), CoordError> {
        self.lease(
            "blob.lease.renew",
            blob,
            &[
                ("x-ms-lease-action", "renew".into()),
                ("x-ms-lease-id", lease.0.clone()),
            ],
        )
        .await
        .map(drop)
    }

    /// Releases a held lease so another replica can take it at once.
    pub async fn release(&self, blob: &str, lease: &LeaseId) -> Result<(), CoordError> {
        self.lease(
            "blob.lease.release",
            blob,
            &[
                ("x-ms-lease-action", "release".into()),
                ("x-ms-lease-id", lease.0.clone()),
            ],
        )
        .await
        .map(drop)
    }

    /// Breaks whoever's lease after `period` seconds (0: now); returns the seconds
    /// until it is broken. An operator's tool, never used by the rotation path.
    pub async fn break_lease(&self, blob: &str, period: u32) -> Result<u32, CoordError> {
        let answer = self
            .lease(
                "blob.lease.break",
                blob,
                &[
                    ("x-ms-lease-action", "break".into()),
                    ("x-ms-lease-break-period", period.to_string()),
                ],
            )
            .await?;
        Ok(header(&answer.headers, "x-ms-lease-time")
            .and_then(|t| t.parse().ok())
            .unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_answers_give_names_and_the_next_marker() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="https://a/" ContainerName="k"><Prefix>accounts/</Prefix><Blobs><Blob><Name>accounts/ab.json</Name><Properties><Etag>0x1</Etag></Properties></Blob><Blob><Name>accounts/c&amp;d.json</Name></Blob></Blobs><NextMarker>2!x</NextMarker></EnumerationResults>"#;
        let names: Vec<String> = elements(xml, "Name").map(unescape).collect();
        assert_eq!(names, ["accounts/ab.json", "accounts/c&d.json"]);
        assert_eq!(elements(xml, "NextMarker").next(), Some("2!x"));
        assert_eq!(elements("<NextMarker />", "NextMarker").next(), None);
    }

    #[test]
    fn listings_with_metadata_give_length_lease_and_the_summary() {
        // Shaped as Microsoft Learn's "List Blobs" sample answer (version 2023-11-03).
        let xml = r#"<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="https://a/" ContainerName="k"><Prefix>accounts/</Prefix><Blobs><Blob><Name>accounts/ab.json</Name><Properties><Creation-Time>Sun, 06 Dec 2026 10:00:00 GMT</Creation-Time><Etag>0x1</Etag><Content-Length>1234</Content-Length><Content-Type>application/json</Content-Type><BlobType>BlockBlob</BlobType><LeaseStatus>locked</LeaseStatus><LeaseState>leased</LeaseState><LeaseDuration>fixed</LeaseDuration></Properties><Metadata><keyflipsummary>eyJ2Ijox+fQ==</keyflipsummary><other>x</other></Metadata></Blob><Blob><Name>accounts/cd.json</Name><Properties><Content-Length>7</Content-Length><LeaseState>available</LeaseState></Properties><Metadata /></Blob></Blobs><NextMarker /></EnumerationResults>"#;
        let blobs = listed(xml);
        assert_eq!(blobs.len(), 2);
        assert_eq!(blobs[0].name, "accounts/ab.json");
        assert_eq!(blobs[0].len, 1234);
        assert_eq!(blobs[0].etag, "0x1");
        assert!(blobs[0].leased);
        assert_eq!(
            blobs[0].metadata,
            [("keyflipsummary".to_owned(), "eyJ2Ijox+fQ==".to_owned())]
        );
        assert_eq!(blobs[1].name, "accounts/cd.json");
        assert_eq!(blobs[1].len, 7);
        assert!(!blobs[1].leased);
        assert!(blobs[1].metadata.is_empty());
    }

    #[test]
    fn lease_durations_use_the_service_spelling() {
        assert_eq!(LeaseDuration::Seconds(15).header(), "15");
        assert_eq!(LeaseDuration::Infinite.header(), "-1");
    }
}
