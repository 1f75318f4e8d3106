//! Checks for the kinds of value plans hold: required keys, durations, HTTPS URLs,
//! Azure resource ids of a given type, names with Azure's character rules. Each
//! reports at the value's span with a hint and returns `None` on error, so the caller
//! can go on and find the next problem.

use std::ops::Range;
use std::time::Duration;

use toml::Spanned;
use url::Url;

use super::duration::{self, DurationError};
use super::parse::Diagnostics;
use super::raw::Text;
use crate::resource_id::ResourceId;

/// The value of a required key, or an error at the table's span naming the key.
pub(crate) fn required<'a, T>(
    field: &'a Option<Spanned<T>>,
    key: &str,
    section: &str,
    table: &Range<usize>,
    example: &str,
    d: &mut Diagnostics<'_>,
) -> Option<&'a Spanned<T>> {
    if field.is_none() {
        d.error(
            table.clone(),
            format!("{section} is missing `{key}`"),
            format!("add {key} = {example}"),
        );
    }
    field.as_ref()
}

/// A duration between `min` and `max` inclusive.
pub(super) fn duration_in(
    value: &Text,
    key: &str,
    min: Duration,
    max: Duration,
    d: &mut Diagnostics<'_>,
) -> Option<Duration> {
    let parsed = match duration::parse(value.get_ref()) {
        Ok(parsed) => parsed,
        Err(err) => {
            d.error(value.span(), format!("{key}: {err}"), DurationError::HINT);
            return None;
        }
    };
    if parsed < min || parsed > max {
        d.error(
            value.span(),
            format!("{key} {} is out of range", duration::Display(parsed)),
            format!(
                "{key} must be between {} and {}",
                duration::Display(min),
                duration::Display(max)
            ),
        );
        return None;
    }
    Some(parsed)
}

/// An integer between `min` and `max` inclusive.
pub(crate) fn integer_in(
    value: &Spanned<i64>,
    key: &str,
    min: i64,
    max: i64,
    d: &mut Diagnostics<'_>,
) -> Option<u32> {
    let n = *value.get_ref();
    match u32::try_from(n) {
        Ok(ok) if (min..=max).contains(&n) => Some(ok),
        _ => {
            d.error(
                value.span(),
                format!("{key} = {n} is out of range"),
                format!("{key} must be between {min} and {max}"),
            );
            None
        }
    }
}

/// An `https://` URL with a host and no query, fragment or credentials, returned
/// without a trailing slash (`https://kv.vault.azure.net/` and
/// `https://kv.vault.azure.net` name the same vault, and ids must not differ).
pub(crate) fn https_url(
    value: &Text,
    key: &str,
    example: &str,
    d: &mut Diagnostics<'_>,
) -> Option<String> {
    let url = parse_url(value, key, example, d)?;
    if url.scheme() != "https" {
        d.error(
            value.span(),
            format!("{key} must be an https URL, found `{}:`", url.scheme()),
            format!("keyflip sends keys only over TLS; write {key} = \"{example}\""),
        );
        return None;
    }
    Some(url.as_str().trim_end_matches('/').to_owned())
}

/// A URL for notifications: https anywhere, plain http only to this machine.
pub(super) fn webhook_url(value: &Text, d: &mut Diagnostics<'_>) -> Option<Url> {
    let example = "https://hooks.example.com/keyflip";
    let url = parse_url(value, "webhook", example, d)?;
    let loopback = matches!(url.host(), Some(url::Host::Domain("localhost")))
        || matches!(url.host(), Some(url::Host::Ipv4(ip)) if ip.is_loopback())
        || matches!(url.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback());
    match url.scheme() {
        "https" => Some(url),
        "http" if loopback => Some(url),
        scheme => {
            d.error(
                value.span(),
                format!("webhook must be an https URL, found `{scheme}:`"),
                "plain http is accepted only for localhost and 127.0.0.1",
            );
            None
        }
    }
}

fn parse_url(value: &Text, key: &str, example: &str, d: &mut Diagnostics<'_>) -> Option<Url> {
    let text = value.get_ref().trim();
    let url = match Url::parse(text) {
        Ok(url) => url,
        Err(err) => {
            d.error(
                value.span(),
                format!("{key} `{text}` is not a URL: {err}"),
                format!("write a full URL, e.g. {key} = \"{example}\""),
            );
            return None;
        }
    };
    let problem = if url.host().is_none() {
        Some("has no host")
    } else if url.query().is_some() || url.fragment().is_some() {
        Some("has a query or fragment")
    } else if !url.username().is_empty() || url.password().is_some() {
        Some("carries credentials")
    } else {
        None
    };
    if let Some(problem) = problem {
        d.error(
            value.span(),
            format!("{key} `{text}` {problem}"),
            format!("write a plain URL, e.g. {key} = \"{example}\""),
        );
        return None;
    }
    Some(url)
}

/// An Azure resource id whose type is `expected` (e.g. `Microsoft.Storage/storageAccounts`).
pub(crate) fn arm_id(
    value: &Text,
    key: &str,
    expected: &str,
    d: &mut Diagnostics<'_>,
) -> Option<ResourceId> {
    let example = format!(
        "\"/subscriptions/<subscription-id>/resourceGroups/<group>/providers/{expected}/<name>\""
    );
    let id: ResourceId = match value.get_ref().trim().parse() {
        Ok(id) => id,
        Err(err) => {
            d.error(
                value.span(),
                format!("{key}: {err}"),
                format!("write {key} = {example}"),
            );
            return None;
        }
    };
    if !id.is_type(expected) {
        d.error(
            value.span(),
            format!(
                "{key} is a {} id, expected a {expected} id",
                id.resource_type()
            ),
            format!("write {key} = {example}"),
        );
        return None;
    }
    Some(id)
}

/// A name made of `allowed` characters, `min..=max` long. `rule` describes the
/// characters for the hint.
pub(crate) fn name(
    value: &Text,
    key: &str,
    allowed: impl Fn(char) -> bool,
    (min, max): (usize, usize),
    rule: &str,
    d: &mut Diagnostics<'_>,
) -> Option<String> {
    let text = value.get_ref();
    let length = text.chars().count();
    if (min..=max).contains(&length) && text.chars().all(allowed) {
        return Some(text.clone());
    }
    d.error(
        value.span(),
        format!("{key} `{text}` is not a valid name"),
        format!("{key} takes {min} to {max} characters: {rule}"),
    );
    None
}

/// Marks a value that was reported as invalid.
pub(crate) struct Invalid;

/// Checks an optional value: `Ok(None)` when absent, `Ok(Some(_))` when valid and
/// `Err(Invalid)` when reported, so callers check everything before giving up.
pub(crate) fn optional<T, U>(
    field: &Option<T>,
    check: impl FnOnce(&T) -> Option<U>,
) -> Result<Option<U>, Invalid> {
    match field {
        None => Ok(None),
        Some(value) => check(value).map(Some).ok_or(Invalid),
    }
}
