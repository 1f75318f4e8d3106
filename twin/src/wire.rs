//! The request as the twin's handlers see it, and response builders.
//!
//! A [`Req`] is read once per request: the method, the path exactly as sent (still
//! percent-encoded, which SharedKey signs), the raw and decoded query, the headers and
//! the whole body. Under HTTP/2 the URI arrives in absolute form, so only its path
//! and query are used, never the authority.

use axum::body::{Body, Bytes};
use axum::http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use axum::http::{HeaderMap, Method, Response, StatusCode, request::Parts};
use serde_json::Value;

pub(crate) type Resp = Response<Body>;

/// The client's address, put into each request's extensions by the server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub std::net::SocketAddr);

#[derive(Debug)]
pub(crate) struct Req {
    /// Where the request came from (for `CallerIpAddress` in resource logs).
    pub peer: Option<std::net::SocketAddr>,
    pub method: Method,
    pub path: String,
    pub query_raw: String,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// `host[:port]` the client addressed (HTTP/2 `:authority`, else `Host`).
    pub authority: Option<String>,
}

impl Req {
    pub fn new(parts: Parts, body: Bytes) -> Self {
        let (path, query_raw) = match parts.uri.path_and_query() {
            Some(pq) => (pq.path().to_string(), pq.query().unwrap_or("").to_string()),
            None => ("/".to_string(), String::new()),
        };
        let query = url::form_urlencoded::parse(query_raw.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let authority = parts
            .uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| {
                parts
                    .headers
                    .get("host")
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned)
            });
        Self {
            peer: parts.extensions.get::<Peer>().map(|p| p.0),
            authority,
            method: parts.method,
            path,
            query_raw,
            query,
            headers: parts.headers,
            body,
        }
    }

    /// A query parameter by name (case-insensitive, like ARM and Key Vault).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Path segments with empty ones dropped (so `//` and a trailing `/` are harmless).
    pub fn segments(&self) -> Vec<&str> {
        self.path.split('/').filter(|s| !s.is_empty()).collect()
    }

    /// The token of an `Authorization: Bearer` header.
    pub fn bearer(&self) -> Option<&str> {
        let v = self.header("authorization")?;
        let (scheme, token) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    }

    /// Whether the body is declared as JSON (`application/json`, any parameters).
    pub fn is_json(&self) -> bool {
        self.header("content-type")
            .and_then(|c| c.split(';').next())
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    }
}

/// A response with a body and content type.
pub(crate) fn body(status: u16, content_type: &str, body: impl Into<Body>) -> Resp {
    let mut r = Response::new(body.into());
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    r
}

pub(crate) fn json(status: u16, v: &Value) -> Resp {
    body(status, "application/json; charset=utf-8", v.to_string())
}

pub(crate) fn empty(status: u16) -> Resp {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r
}

/// Sets a header unless the value is not a valid header value.
pub(crate) fn set_header(r: &mut Resp, name: &str, value: &str) {
    if let (Ok(n), Ok(v)) = (
        HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(value),
    ) {
        r.headers_mut().insert(n, v);
    }
}

pub(crate) fn with_header(mut r: Resp, name: &str, value: &str) -> Resp {
    set_header(&mut r, name, value);
    r
}

/// Escapes text for an XML element (quotes stay as they are, as Azure sends them).
pub(crate) fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes text for a double-quoted XML attribute.
pub(crate) fn xml_attr(s: &str) -> String {
    xml_escape(s).replace('"', "&quot;")
}

/// Whether a string looks like a GUID (used to recognise tenant ids in paths).
pub(crate) fn is_guid(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::parse_str(s).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    fn req(uri: &str) -> Req {
        let (parts, ()) = Request::builder()
            .uri(uri)
            .header("Authorization", "Bearer abc.def.ghi")
            .body(())
            .expect("request")
            .into_parts();
        Req::new(parts, Bytes::new())
    }

    #[test]
    fn absolute_form_uris_route_on_path_only() {
        let r = req("https://127.0.0.1:1/subscriptions//x/?api-version=2024-01-01&$expand=kerb");
        assert_eq!(r.path, "/subscriptions//x/");
        assert_eq!(r.segments(), vec!["subscriptions", "x"]);
        assert_eq!(r.param("API-VERSION"), Some("2024-01-01"));
        assert_eq!(r.param("$expand"), Some("kerb"));
        assert_eq!(r.bearer(), Some("abc.def.ghi"));
    }

    #[test]
    fn xml_is_escaped() {
        assert_eq!(xml_escape("a<b>&'\""), "a&lt;b&gt;&amp;'\"");
        assert_eq!(xml_attr("a\"&"), "a&quot;&amp;");
    }
}
