//! SharedKey verification for the Blob service (Microsoft Learn, "Authorize with Shared Key"), path-style like
//! Azurite: the canonicalized resource is `/{account}` followed by the URL path as
//! sent, so a request to `https://127.0.0.1:P/acct/c` signs `/acct/acct/c`.
//!
//! The service sorts `x-ms-*` headers with a culture-aware collation in which hyphens
//! weigh almost nothing; Microsoft's Python SDK reproduces it with weight tables. The
//! twin accepts a signature computed under either plain byte order or the
//! hyphen-insensitive order, which agree for every ordinary header set.

use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::hmac;

/// How `x-ms-*` header names are ordered in the string to sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderOrder {
    Bytewise,
    /// Hyphens ignored first, byte order breaking ties.
    Collated,
}

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

fn header_value(headers: &HeaderMap, name: &str) -> String {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .collect();
    values.join(",")
}

/// Decodes `%XX` escapes; anything malformed stays as it was.
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(v) = u8::from_str_radix(hex, 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The string to sign for a request.
pub(crate) fn string_to_sign(
    method: &str,
    headers: &HeaderMap,
    account: &str,
    path: &str,
    query_raw: &str,
    order: HeaderOrder,
) -> String {
    let mut s = String::with_capacity(256);
    s.push_str(method);
    s.push('\n');
    for name in STANDARD_HEADERS {
        let mut v = header_value(headers, name);
        // Since 2015-02-21 a zero Content-Length is signed as empty.
        if name == "content-length" && v == "0" {
            v.clear();
        }
        s.push_str(&v);
        s.push('\n');
    }
    let mut ms: Vec<(String, String)> = headers
        .keys()
        .map(|k| k.as_str().to_ascii_lowercase())
        .filter(|k| k.starts_with("x-ms-"))
        .map(|k| {
            let v = header_value(headers, &k);
            (k, v)
        })
        .collect();
    ms.dedup_by(|a, b| a.0 == b.0);
    match order {
        HeaderOrder::Bytewise => ms.sort_by(|a, b| a.0.cmp(&b.0)),
        HeaderOrder::Collated => ms.sort_by(|a, b| {
            let strip = |x: &str| x.replace('-', "");
            strip(&a.0).cmp(&strip(&b.0)).then_with(|| a.0.cmp(&b.0))
        }),
    }
    for (k, v) in ms {
        s.push_str(&k);
        s.push(':');
        s.push_str(&v);
        s.push('\n');
    }
    s.push('/');
    s.push_str(account);
    s.push_str(path);
    let mut params: Vec<(String, Vec<String>)> = Vec::new();
    for pair in query_raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(k).to_ascii_lowercase();
        let v = percent_decode(v);
        match params.iter_mut().find(|(n, _)| *n == k) {
            Some((_, vs)) => vs.push(v),
            None => params.push((k, vec![v])),
        }
    }
    params.sort_by(|a, b| a.0.cmp(&b.0));
    for (k, mut vs) in params {
        vs.sort();
        s.push('\n');
        s.push_str(&k);
        s.push(':');
        s.push_str(&vs.join(","));
    }
    s
}

/// Base64 HMAC-SHA256 of `string_to_sign` under a base64 account key.
pub(crate) fn sign(key_b64: &str, string_to_sign: &str) -> Option<String> {
    let key = B64.decode(key_b64).ok()?;
    let tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, &key),
        string_to_sign.as_bytes(),
    );
    Some(B64.encode(tag.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const DEV_KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    #[test]
    fn contracts_f1_account_properties_vector() {
        let h = headers(&[
            ("x-ms-date", "Mon, 01 Jun 2026 00:00:00 GMT"),
            ("x-ms-version", "2023-11-03"),
        ]);
        let sts = string_to_sign(
            "GET",
            &h,
            "devstoreaccount1",
            "/",
            "restype=account&comp=properties",
            HeaderOrder::Bytewise,
        );
        assert_eq!(
            sts,
            "GET\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:Mon, 01 Jun 2026 00:00:00 GMT\nx-ms-version:2023-11-03\n/devstoreaccount1/\ncomp:properties\nrestype:account"
        );
        assert_eq!(
            sign(DEV_KEY, &sts).as_deref(),
            Some("gA1eEDrecd1EKQwTnWN6G4GeF21XRKK+hIyY9lVnZ6g=")
        );
    }

    #[test]
    fn contracts_f1_list_containers_vector() {
        let h = headers(&[
            ("x-ms-date", "Mon, 01 Jun 2026 00:00:00 GMT"),
            ("x-ms-version", "2023-11-03"),
        ]);
        let sts = string_to_sign(
            "GET",
            &h,
            "devstoreaccount1",
            "/",
            "comp=list&maxresults=1",
            HeaderOrder::Bytewise,
        );
        assert_eq!(
            sign(DEV_KEY, &sts).as_deref(),
            Some("/D24KO7UTy02bMK7SK0D1N9Hxh5yyIxBsPSzPBRMdQ8=")
        );
    }

    #[test]
    fn rust_azure_md_vector_with_encoded_path_and_zero_length() {
        let h = headers(&[
            ("x-ms-date", "Sun, 11 Oct 2009 21:49:13 GMT"),
            ("x-ms-version", "2009-09-19"),
            ("content-length", "0"),
        ]);
        let sts = string_to_sign(
            "GET",
            &h,
            "myaccount",
            "/mycontainer/my%20blob.txt",
            "restype=container&comp=metadata&timeout=20",
            HeaderOrder::Bytewise,
        );
        assert_eq!(
            sign(DEV_KEY, &sts).as_deref(),
            Some("JqESl4DR8v7PNJSxh5ri9GQ1iOqlH2YUKe4q2LneMAI=")
        );
    }

    #[test]
    fn path_style_signs_the_account_twice_and_the_orders_differ_only_around_hyphens() {
        let h = headers(&[
            ("x-ms-version", "v"),
            ("x-ms-date", "d"),
            ("x-ms-client-request-id", "c"),
        ]);
        let a = string_to_sign("HEAD", &h, "acct", "/acct/", "", HeaderOrder::Bytewise);
        assert!(
            a.ends_with("x-ms-client-request-id:c\nx-ms-date:d\nx-ms-version:v\n/acct/acct/"),
            "{a}"
        );
        assert_eq!(
            a,
            string_to_sign("HEAD", &h, "acct", "/acct/", "", HeaderOrder::Collated)
        );
        // Hyphens decide byte order here but not the collated order.
        let h = headers(&[("x-ms-a-c", "1"), ("x-ms-ab", "2")]);
        let bytewise = string_to_sign("GET", &h, "a", "/", "", HeaderOrder::Bytewise);
        let collated = string_to_sign("GET", &h, "a", "/", "", HeaderOrder::Collated);
        assert!(bytewise.contains("x-ms-a-c:1\nx-ms-ab:2\n"), "{bytewise}");
        assert!(collated.contains("x-ms-ab:2\nx-ms-a-c:1\n"), "{collated}");
    }

    #[test]
    fn query_values_are_decoded_grouped_and_sorted() {
        let h = HeaderMap::new();
        let s = string_to_sign(
            "GET",
            &h,
            "a",
            "/a/",
            "b=2&A=x%2Fy&b=1",
            HeaderOrder::Bytewise,
        );
        assert!(s.ends_with("/a/a/\na:x/y\nb:1,2"), "{s}");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }
}
