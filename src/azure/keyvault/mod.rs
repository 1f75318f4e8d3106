//! Key Vault secrets through `azure_security_keyvault_secrets` (`SecretClient`): set a
//! new version (value, content type, tags, expiry), get the latest or a version, list
//! a vault's secrets and a secret's versions, disable a version, and fingerprint every
//! version's value.
//!
//! Promises: one `SecretClient` per vault URL, cached; the 401 challenge resource is
//! verified except for a custom cloud's loopback vault host; vault URLs may carry a path
//! prefix (`https://host/keyvault/{vault}`), which the SDK's request paths keep and
//! which keyflip's own id parsing handles (the SDK's `ResourceExt::resource_id()` does
//! not: it expects `secrets` as the first path segment). Calls are retried like other
//! idempotent calls; a retried `set` may leave an extra version holding the same value,
//! which is harmless because readers take the latest and disabling goes by fingerprint.
//! Values arrive as [`StorageKey`]s and leave only through [`StorageKey::expose`] into
//! the request body.

mod client;

use std::collections::{BTreeMap, HashMap};

use azure_core::http::RequestContent;
use azure_core::time::OffsetDateTime;
use azure_security_keyvault_secrets::models::{
    Secret, SecretAttributes, SecretClientGetSecretOptions,
    SecretClientUpdateSecretPropertiesOptions, SecretProperties, SetSecretParameters,
    UpdateSecretPropertiesParameters,
};
use chrono::{DateTime, Utc};
use futures::{StreamExt as _, TryStreamExt as _};
use url::Url;

use super::error::Call;
use super::http::Operation;
use super::roles::actions;
use super::{Azure, Error};
use crate::secret::{Fingerprint, StorageKey};

/// One version of a secret, without its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretVersion {
    pub name: String,
    pub version: String,
    pub enabled: bool,
    pub created: Option<DateTime<Utc>>,
    pub(crate) updated: Option<DateTime<Utc>>,
    pub expires: Option<DateTime<Utc>>,
    pub content_type: Option<String>,
    pub tags: BTreeMap<String, String>,
}

/// A secret of a vault as its list names it: the current version's attributes, no
/// value and no version id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretItem {
    pub name: String,
    pub enabled: bool,
    pub updated: Option<DateTime<Utc>>,
    pub content_type: Option<String>,
    /// Key Vault marks secrets that back a certificate as managed; they hold no
    /// storage key.
    pub managed: bool,
}

/// A version and its value.
#[derive(Clone, Debug)]
pub struct SecretValue {
    pub version: SecretVersion,
    pub value: StorageKey,
}

/// A new version to write.
#[derive(Clone, Debug)]
pub struct NewSecretVersion<'a> {
    pub value: &'a StorageKey,
    pub content_type: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub expires: Option<DateTime<Utc>>,
}

/// A version and the fingerprint of its value; `None` when the value could not be
/// read (a disabled version cannot be).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionFingerprint {
    pub version: SecretVersion,
    pub fingerprint: Option<Fingerprint>,
}

/// How many versions of one secret are read (or disabled) at once: enough that a
/// secret with a long history costs a few round trips rather than one per version,
/// few enough that one secret never takes a large share of the vault's budget (Key
/// Vault allows 4,000 secret transactions per 10 s per vault; see Microsoft Learn,
/// "Azure Key Vault service limits").
pub(crate) const VERSION_READS: usize = 8;

const SET: Operation = Operation::write("keyvault.setSecret", actions::KV_SECRET_SET);
const GET: Operation = Operation::read("keyvault.getSecret", actions::KV_SECRET_GET);
const LIST: Operation = Operation::read("keyvault.listVersions", actions::KV_SECRET_READ_METADATA);
const DISABLE: Operation = Operation::write("keyvault.disableVersion", actions::KV_SECRET_UPDATE);
const LIST_SECRETS: Operation =
    Operation::read("keyvault.listSecrets", actions::KV_SECRET_READ_METADATA);

fn check_name(what: &str, value: &str, max: usize) -> Result<(), Error> {
    if !value.is_empty()
        && value.len() <= max
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "'{value}' is not a Key Vault {what}: expected 1-{max} letters, digits and '-'"
        )))
    }
}

fn target(vault: &Url, name: &str, version: Option<&str>) -> String {
    let base = vault.as_str().trim_end_matches('/');
    match version {
        Some(v) => format!("{base}/secrets/{name}/{v}"),
        None => format!("{base}/secrets/{name}"),
    }
}

impl Azure {
    /// Writes a new version; it becomes the latest at once.
    pub async fn set_secret(
        &self,
        vault: &Url,
        name: &str,
        new: NewSecretVersion<'_>,
    ) -> Result<SecretVersion, Error> {
        check_name("secret name", name, 127)?;
        let client = self.vault_client(vault)?;
        let target = target(vault, name, None);
        let secret = self
            .kv(&SET, &target, || {
                let client = client.clone();
                let params = SetSecretParameters {
                    value: Some(new.value.expose().to_owned()),
                    content_type: new.content_type.clone(),
                    tags: Some(new.tags.clone().into_iter().collect::<HashMap<_, _>>()),
                    secret_attributes: new.expires.map(|expires| SecretAttributes {
                        expires: to_offset(expires),
                        ..Default::default()
                    }),
                };
                async move {
                    let content: RequestContent<SetSecretParameters> = params.try_into()?;
                    client.set_secret(name, content, None).await
                }
            })
            .await?;
        let version = version_of(
            &SET,
            &target,
            secret.id.as_deref(),
            secret.attributes.as_ref(),
            secret.content_type,
            secret.tags,
        )?;
        tracing::info!(operation = SET.name, target = %target, version = %version.version, "secret version written");
        Ok(version)
    }

    /// The latest version (`version: None`) or a given one, with its value.
    pub async fn get_secret(
        &self,
        vault: &Url,
        name: &str,
        version: Option<&str>,
    ) -> Result<SecretValue, Error> {
        check_name("secret name", name, 127)?;
        if let Some(v) = version {
            check_name("secret version", v, 64)?;
        }
        let client = self.vault_client(vault)?;
        let target = target(vault, name, version);
        let secret = self
            .kv(&GET, &target, || {
                let client = client.clone();
                let options = SecretClientGetSecretOptions {
                    secret_version: version.map(str::to_owned),
                    ..Default::default()
                };
                async move { client.get_secret(name, Some(options)).await }
            })
            .await?;
        let Secret {
            id,
            attributes,
            content_type,
            tags,
            value,
            ..
        } = secret;
        let version = version_of(
            &GET,
            &target,
            id.as_deref(),
            attributes.as_ref(),
            content_type,
            tags,
        )?;
        let value = value.ok_or_else(|| Error::BadResponse {
            call: Call {
                operation: GET.name,
                target: target.clone(),
                request_id: None,
            }
            .into(),
            status: 200,
            detail: "the secret has no value".into(),
        })?;
        Ok(SecretValue {
            version,
            value: StorageKey::new(value),
        })
    }

    /// Every version of a secret (no values), oldest first by creation time (which
    /// Key Vault keeps to the second).
    pub async fn secret_versions(
        &self,
        vault: &Url,
        name: &str,
    ) -> Result<Vec<SecretVersion>, Error> {
        check_name("secret name", name, 127)?;
        let client = self.vault_client(vault)?;
        let target = target(vault, name, None);
        let items: Vec<SecretProperties> = self
            .kv_retry(&LIST, &target, || {
                let client = client.clone();
                async move {
                    let pager = client.list_secret_properties_versions(name, None)?;
                    pager.try_collect::<Vec<_>>().await
                }
            })
            .await?;
        let mut versions = items
            .into_iter()
            .map(|p| {
                version_of(
                    &LIST,
                    &target,
                    p.id.as_deref(),
                    p.attributes.as_ref(),
                    p.content_type,
                    p.tags,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Stable: versions created within the same second keep the service's order.
        versions.sort_by_key(|v| v.created);
        tracing::debug!(operation = LIST.name, target = %target, versions = versions.len(), "secret versions listed");
        Ok(versions)
    }

    /// Every secret of the vault (no values), in the service's order: what discovery
    /// reads before fetching the values worth comparing.
    pub async fn list_secrets(&self, vault: &Url) -> Result<Vec<SecretItem>, Error> {
        let client = self.vault_client(vault)?;
        let target = format!("{}/secrets", vault.as_str().trim_end_matches('/'));
        let items: Vec<SecretProperties> = self
            .kv_retry(&LIST_SECRETS, &target, || {
                let client = client.clone();
                async move {
                    let pager = client.list_secret_properties(None)?;
                    pager.try_collect::<Vec<_>>().await
                }
            })
            .await?;
        let bad = |detail: String| Error::BadResponse {
            call: Call {
                operation: LIST_SECRETS.name,
                target: target.clone(),
                request_id: None,
            }
            .into(),
            status: 200,
            detail,
        };
        let secrets = items
            .into_iter()
            .map(|p| {
                let id = p.id.as_deref().unwrap_or_default();
                let name = parse_secret_name(id)
                    .ok_or_else(|| bad(format!("'{id}' is not a secret id (…/secrets/<name>)")))?;
                Ok(SecretItem {
                    name,
                    enabled: p
                        .attributes
                        .as_ref()
                        .and_then(|a| a.enabled)
                        .unwrap_or(true),
                    updated: from_offset(p.attributes.as_ref().and_then(|a| a.updated)),
                    content_type: p.content_type,
                    managed: p.managed.unwrap_or(false),
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        tracing::debug!(operation = LIST_SECRETS.name, target = %target, secrets = secrets.len(), "secrets listed");
        Ok(secrets)
    }

    /// Disables one version (it stays, but cannot be read).
    pub async fn disable_secret_version(
        &self,
        vault: &Url,
        name: &str,
        version: &str,
    ) -> Result<SecretVersion, Error> {
        check_name("secret name", name, 127)?;
        check_name("secret version", version, 64)?;
        let client = self.vault_client(vault)?;
        let target = target(vault, name, Some(version));
        let secret = self
            .kv(&DISABLE, &target, || {
                let client = client.clone();
                let params = UpdateSecretPropertiesParameters {
                    secret_attributes: Some(SecretAttributes {
                        enabled: Some(false),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                let options = SecretClientUpdateSecretPropertiesOptions {
                    secret_version: Some(version.to_owned()),
                    ..Default::default()
                };
                async move {
                    let content: RequestContent<UpdateSecretPropertiesParameters> =
                        params.try_into()?;
                    client
                        .update_secret_properties(name, content, Some(options))
                        .await
                }
            })
            .await?;
        let updated = version_of(
            &DISABLE,
            &target,
            secret.id.as_deref(),
            secret.attributes.as_ref(),
            secret.content_type,
            secret.tags,
        )?;
        tracing::info!(operation = DISABLE.name, target = %target, "secret version disabled");
        Ok(updated)
    }

    /// Every version with the fingerprint of its value: which version holds which key,
    /// without any value leaving this function.
    pub async fn secret_version_fingerprints(
        &self,
        vault: &Url,
        name: &str,
    ) -> Result<Vec<VersionFingerprint>, Error> {
        let versions = self.secret_versions(vault, name).await?;
        let mut reads = Vec::new();
        for version in versions {
            reads.push(async move {
                let fingerprint = if version.enabled {
                    let secret = self.get_secret(vault, name, Some(&version.version)).await?;
                    Some(self.fingerprint(&secret.value))
                } else {
                    None
                };
                Ok::<_, Error>(VersionFingerprint {
                    version,
                    fingerprint,
                })
            });
        }
        // A few at a time, in version order (see `VERSION_READS`).
        futures::stream::iter(reads)
            .buffered(VERSION_READS)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }
}

fn to_offset(t: DateTime<Utc>) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(t.timestamp()).ok()
}

fn from_offset(t: Option<OffsetDateTime>) -> Option<DateTime<Utc>> {
    t.and_then(|t| DateTime::from_timestamp(t.unix_timestamp(), t.nanosecond()))
}

/// Builds a [`SecretVersion`] from an SDK model, taking name and version from its id.
fn version_of(
    op: &Operation,
    target: &str,
    id: Option<&str>,
    attributes: Option<&SecretAttributes>,
    content_type: Option<String>,
    tags: Option<HashMap<String, String>>,
) -> Result<SecretVersion, Error> {
    let bad = |detail: String| Error::BadResponse {
        call: Call {
            operation: op.name,
            target: target.to_owned(),
            request_id: None,
        }
        .into(),
        status: 200,
        detail,
    };
    let id = id.ok_or_else(|| bad("the secret has no id".into()))?;
    let (name, version) = parse_secret_id(id).ok_or_else(|| {
        bad(format!(
            "'{id}' is not a secret version id (…/secrets/<name>/<version>)"
        ))
    })?;
    Ok(SecretVersion {
        name,
        version,
        enabled: attributes.and_then(|a| a.enabled).unwrap_or(true),
        created: from_offset(attributes.and_then(|a| a.created)),
        updated: from_offset(attributes.and_then(|a| a.updated)),
        expires: from_offset(attributes.and_then(|a| a.expires)),
        content_type,
        tags: tags.unwrap_or_default().into_iter().collect(),
    })
}

/// The name from a secret id without a version, `https://host[/prefix]/secrets/{name}`.
pub(crate) fn parse_secret_name(id: &str) -> Option<String> {
    let url = Url::parse(id).ok()?;
    let segments: Vec<&str> = url.path_segments()?.filter(|s| !s.is_empty()).collect();
    let at = segments.iter().rposition(|s| *s == "secrets")?;
    match segments.get(at + 1..)? {
        [name] => Some((*name).to_owned()),
        _ => None,
    }
}

/// `(name, version)` from `https://host[/prefix]/secrets/{name}/{version}`.
pub(crate) fn parse_secret_id(id: &str) -> Option<(String, String)> {
    let url = Url::parse(id).ok()?;
    let segments: Vec<&str> = url.path_segments()?.filter(|s| !s.is_empty()).collect();
    let at = segments.iter().rposition(|s| *s == "secrets")?;
    match segments.get(at + 1..)? {
        [name, version] => Some(((*name).to_owned(), (*version).to_owned())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::client::check_vault;
    use super::*;

    #[test]
    fn secret_ids_parse_with_and_without_a_path_prefix() {
        assert_eq!(
            parse_secret_id(
                "https://kv.vault.azure.net/secrets/storage-key/4387e9f3d6e14c459867679a90fd0f79"
            ),
            Some((
                "storage-key".into(),
                "4387e9f3d6e14c459867679a90fd0f79".into()
            ))
        );
        assert_eq!(
            parse_secret_id(
                "https://127.0.0.1:4443/keyvault/kv-datasci/secrets/k/abc?api-version=7.5"
            ),
            Some(("k".into(), "abc".into()))
        );
        assert_eq!(
            parse_secret_id("https://kv.vault.azure.net/secrets/k"),
            None
        );
        assert_eq!(parse_secret_id("not a url"), None);
        assert_eq!(
            parse_secret_name("https://127.0.0.1:4443/secrets/stdatasci001-key"),
            Some("stdatasci001-key".into())
        );
        assert_eq!(
            parse_secret_name("https://kv.vault.azure.net/secrets/k/abc"),
            None
        );
    }

    #[test]
    fn names_and_vault_urls_are_checked() {
        assert!(check_name("secret name", "storage-key-1", 127).is_ok());
        assert!(check_name("secret name", "../x", 127).is_err());
        assert!(check_name("secret name", "", 127).is_err());
        assert!(check_vault(&Url::parse("https://kv.vault.azure.net/").unwrap()).is_ok());
        assert!(check_vault(&Url::parse("http://kv.vault.azure.net/").unwrap()).is_err());
    }

    #[test]
    fn times_convert_both_ways() {
        let t = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        assert_eq!(from_offset(to_offset(t)), Some(t));
    }
}
