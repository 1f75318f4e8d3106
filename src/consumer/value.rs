//! How a consumer stores the key, for the kinds that store it as text (secrets): the
//! raw base64 key, or a storage connection string. Writing
//! builds the value straight into a [`StorageKey`]; reading takes the key back out of
//! either form. No function here returns or logs a value in the clear.

use url::Url;

use crate::plan::fragment::{Diagnostics, Text};
use crate::secret::StorageKey;

/// How a consumer stores the key (`format` in the plan).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretFormat {
    /// The base64 key alone.
    RawKey,
    /// `DefaultEndpointsProtocol=https;AccountName=…;AccountKey=…;EndpointSuffix=…`.
    ConnectionString,
}

impl SecretFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            SecretFormat::RawKey => "raw-key",
            SecretFormat::ConnectionString => "connection-string",
        }
    }

    /// The Key Vault content type used when the plan sets none.
    pub(crate) fn default_content_type(self) -> &'static str {
        match self {
            SecretFormat::RawKey => "text/plain",
            SecretFormat::ConnectionString => "application/x-azure-storage-connection-string",
        }
    }
}

/// A plan's `format = "…"`.
pub(crate) fn secret_format(value: &Text, d: &mut Diagnostics<'_>) -> Option<SecretFormat> {
    match value.get_ref().as_str() {
        "raw-key" => Some(SecretFormat::RawKey),
        "connection-string" => Some(SecretFormat::ConnectionString),
        other => {
            d.error(
                value.span(),
                format!("unknown format `{other}`"),
                "format is \"raw-key\" (the key alone) or \"connection-string\"",
            );
            None
        }
    }
}

/// What a connection string needs to know about the account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AccountAddress {
    pub name: String,
    pub blob_endpoint: Option<Url>,
}

/// The value a consumer in `format` stores for `key`. A connection string names the
/// account's endpoints the way Azure's portal does for standard hosts
/// (`EndpointSuffix=core.windows.net` when the blob host is
/// `{account}.blob.{suffix}`), and with an explicit `BlobEndpoint=` otherwise (custom
/// domains, emulators, keyflip-twin).
pub(crate) fn format(
    format: SecretFormat,
    account: &AccountAddress,
    key: &StorageKey,
) -> StorageKey {
    match format {
        SecretFormat::RawKey => key.clone(),
        SecretFormat::ConnectionString => {
            let endpoint = match &account.blob_endpoint {
                Some(url) => {
                    let standard = format!("{}.blob.", account.name.to_ascii_lowercase());
                    match url
                        .host_str()
                        .and_then(|h| h.strip_prefix(standard.as_str()))
                    {
                        Some(suffix) if url.port().is_none() && !suffix.is_empty() => {
                            format!("EndpointSuffix={suffix}")
                        }
                        _ => format!("BlobEndpoint={url}"),
                    }
                }
                None => "EndpointSuffix=core.windows.net".to_owned(),
            };
            let mut value = String::with_capacity(160 + key.expose().len());
            value.push_str("DefaultEndpointsProtocol=https;AccountName=");
            value.push_str(&account.name);
            value.push_str(";AccountKey=");
            value.push_str(key.expose());
            value.push(';');
            value.push_str(&endpoint);
            StorageKey::new(value)
        }
    }
}

/// The account key inside a stored value: the value itself for a raw key, the
/// `AccountKey=` part of a connection string (recognized whatever the plan says, so a
/// consumer stored in the other format is still read right). `None` when a connection
/// string has no account key (a SAS connection string).
pub fn account_key(value: &StorageKey) -> Option<StorageKey> {
    let text = value.expose().trim();
    if !text.contains(';') && !text.contains("AccountKey=") {
        return Some(StorageKey::new(text.to_owned()));
    }
    text.split(';').find_map(|part| {
        let (name, rest) = part.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("AccountKey")
            .then(|| StorageKey::new(rest.trim().to_owned()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    fn account(endpoint: &str) -> AccountAddress {
        AccountAddress {
            name: "stdatasci001".into(),
            blob_endpoint: Some(Url::parse(endpoint).unwrap()),
        }
    }

    #[test]
    fn connection_strings_use_the_suffix_for_standard_hosts_and_the_endpoint_otherwise() {
        let key = StorageKey::new(KEY.into());
        let standard = format(
            SecretFormat::ConnectionString,
            &account("https://stdatasci001.blob.core.windows.net/"),
            &key,
        );
        assert_eq!(
            standard.expose(),
            format!(
                "DefaultEndpointsProtocol=https;AccountName=stdatasci001;AccountKey={KEY};EndpointSuffix=core.windows.net"
            )
        );
        let twin = format(
            SecretFormat::ConnectionString,
            &account("https://127.0.0.1:47443/stdatasci001/"),
            &key,
        );
        assert!(
            twin.expose()
                .ends_with(";BlobEndpoint=https://127.0.0.1:47443/stdatasci001/"),
            "{}",
            twin.expose()
        );
        assert_eq!(account_key(&standard), Some(key.clone()));
        assert_eq!(account_key(&twin), Some(key.clone()));
        assert_eq!(
            format(
                SecretFormat::RawKey,
                &account("https://x.blob.core.windows.net"),
                &key
            ),
            key
        );
    }

    #[test]
    fn the_account_key_is_read_from_either_form() {
        let key = StorageKey::new(KEY.into());
        assert_eq!(
            account_key(&StorageKey::new(format!(" {KEY}\n"))),
            Some(key.clone())
        );
        let cs = StorageKey::new(format!(
            "BlobEndpoint=https://h/a/;accountkey={KEY};AccountName=a"
        ));
        assert_eq!(account_key(&cs), Some(key));
        let sas =
            StorageKey::new("BlobEndpoint=https://h/;SharedAccessSignature=sv=1&sig=x".into());
        assert_eq!(account_key(&sas), None);
    }
}
