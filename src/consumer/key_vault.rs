//! A Key Vault secret that holds the key (`[[key_vault]]`).
//!
//! A bind writes a new version: the value in the plan's format, its content type,
//! expiry and tags, plus keyflip's own `keyflip-key` and `keyflip-rotation` tags and
//! Microsoft's `CredentialId`. Older versions keep older values and stay readable by
//! version id, so after an incident, or a rollback, the versions holding the value that
//! must die are disabled ([`Capabilities::keeps_old_versions`]). What it holds is its
//! latest version. Id: `keyvault:{vault_url}/secrets/{name}`.

pub(crate) mod discover;
mod doctor;

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use chrono::TimeDelta;
use futures::StreamExt as _;
use serde::Deserialize;
use toml::Spanned;
use toml::de::DeValue;
use url::Url;

pub use doctor::{SecretFacts, SecretSeen, VersionFacts};

use super::value::{self, SecretFormat, secret_format};
use super::{
    Capabilities, ConsumerId, Entry, Held, Kind, ONE_PLAN, Permission, Profile, Section, Seen,
    Table, entries, last_segment, listed_twice, plan_url,
};
use crate::azure::keyvault::{NewSecretVersion, SecretVersion};
use crate::azure::roles::{Action, actions};
use crate::azure::{self, Azure, Cloud};
use crate::doctor::report::{Resource, Service};
use crate::key::KeyName;
use crate::plan::Plan;
use crate::plan::fragment::{
    Diagnostics, Text, arm_id, https_url, integer_in, name, optional, required,
};
use crate::resource_id::ResourceId;
use crate::rotation::EngineError;
use crate::rotation::machine::MissingPermission;
use crate::rotation::observe::Lacking;
use crate::rotation::step::Ctx;
use crate::secret::{Fingerprint, StorageKey};

pub(super) const PROFILE: Profile = Profile {
    prefix: "keyvault",
    form: "keyvault:{vault_url}/secrets/{name}",
    label: "Key Vault secret",
    word: "key vault",
    capabilities: Capabilities {
        keeps_old_versions: true,
        ..Capabilities::NONE
    },
    case_sensitive: false,
    parse: |rest| SecretId::parse(rest).map(|id| ConsumerId::KeyVault(Box::new(id))),
    listed_twice,
    in_two_plans: ONE_PLAN,
    confirmed_by: None,
};

pub(super) const SECTION: Section = Section {
    key: "key_vault",
    parse: parse_tables,
    summarize,
    render: discover::render,
    report_order: 1,
};

/// `doctor`'s name for Key Vault's data plane.
pub(crate) const SERVICE: Service = Service {
    name: "key_vault",
    label: "Key Vault",
};

/// `doctor`'s name for a vault as a permission scope.
pub(crate) const RESOURCE: Resource = Resource {
    name: "key_vault",
    label: "key vault",
};

/// The id of a Key Vault secret: the vault's URL (no trailing slash) and the name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SecretId {
    vault: String,
    secret: String,
}

impl SecretId {
    pub fn new(vault_url: &str, secret: &str) -> SecretId {
        SecretId {
            vault: vault_url.trim_end_matches('/').to_owned(),
            secret: secret.to_owned(),
        }
    }

    fn parse(rest: &str) -> Option<SecretId> {
        let (vault, secret) = rest.rsplit_once("/secrets/")?;
        (!vault.is_empty() && !secret.is_empty()).then(|| SecretId::new(vault, secret))
    }

    pub(super) fn short(&self) -> String {
        format!("{}/{}", last_segment(&self.vault), self.secret)
    }
}

impl fmt::Display for SecretId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/secrets/{}", self.vault, self.secret)
    }
}

/// A `[[key_vault]]` table: a Key Vault secret that holds the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyVaultSecret {
    /// Vault URL without a trailing slash, e.g. `https://kv-datasci.vault.azure.net`.
    pub vault: String,
    pub secret: String,
    pub format: SecretFormat,
    pub content_type: String,
    /// Each new version expires this many days after it is written.
    pub(crate) expires_after_days: Option<u32>,
    /// Tags written on each new version, besides keyflip's own `keyflip-*` tags.
    pub tags: BTreeMap<String, String>,
    /// The vault's ARM id, which lets keyflip check its role assignments.
    pub(crate) vault_id: Option<ResourceId>,
}

impl KeyVaultSecret {
    pub fn id(&self) -> ConsumerId {
        ConsumerId::KeyVault(Box::new(self.secret_id()))
    }

    fn secret_id(&self) -> SecretId {
        SecretId::new(&self.vault, &self.secret)
    }

    fn url(&self) -> Result<Url, azure::Error> {
        Url::parse(&self.vault)
            .map_err(|e| azure::Error::Invalid(format!("'{}' is not a vault URL: {e}", self.vault)))
    }
}

/// The table as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeyVault {
    vault: Option<Text>,
    secret: Option<Text>,
    format: Option<Text>,
    content_type: Option<Text>,
    expires_after_days: Option<Spanned<i64>>,
    tags: Option<BTreeMap<Text, Text>>,
    vault_id: Option<Text>,
}

const KV_EXAMPLE: &str = "https://kv-datasci.vault.azure.net";

fn parse_tables(
    value: Spanned<DeValue<'_>>,
    d: &mut Diagnostics<'_>,
) -> Vec<(Entry, Range<usize>)> {
    entries::<RawKeyVault>(value, SECTION.key, d, |raw, d| {
        table(raw, d).map(Entry::KeyVault)
    })
}

fn table(raw: &Spanned<RawKeyVault>, d: &mut Diagnostics<'_>) -> Option<KeyVaultSecret> {
    let (span, r) = (raw.span(), raw.get_ref());
    let section = "[[key_vault]]";
    let vault = required(
        &r.vault,
        "vault",
        section,
        &span,
        &format!("\"{KV_EXAMPLE}\""),
        d,
    )
    .and_then(|v| https_url(v, "vault", KV_EXAMPLE, d));
    let secret = required(
        &r.secret,
        "secret",
        section,
        &span,
        "\"stdatasci001-key\"",
        d,
    )
    .and_then(|v| {
        name(
            v,
            "secret",
            |c| c.is_ascii_alphanumeric() || c == '-',
            (1, 127),
            "letters, digits and `-`",
            d,
        )
    });
    let format = required(&r.format, "format", section, &span, "\"raw-key\"", d)
        .and_then(|v| secret_format(v, d));
    let expires_after_days = optional(&r.expires_after_days, |v| {
        integer_in(v, "expires_after_days", 1, 36_500, d)
    });
    let vault_id = optional(&r.vault_id, |v| {
        arm_id(v, "vault_id", "Microsoft.KeyVault/vaults", d)
    });
    let tags = tags(r.tags.as_ref(), d);
    let (vault, secret, format, tags) = (vault?, secret?, format?, tags?);
    let (expires_after_days, vault_id) = (expires_after_days.ok()?, vault_id.ok()?);
    let content_type = r.content_type.as_ref().map_or_else(
        || format.default_content_type().to_owned(),
        |c| c.get_ref().clone(),
    );
    Some(KeyVaultSecret {
        vault,
        secret,
        format,
        content_type,
        expires_after_days,
        tags,
        vault_id,
    })
}

/// Key Vault's limit on tags per secret version ("Secret tags: up to 15", Microsoft
/// Learn, Azure Key Vault service limits).
pub(crate) const MAX_SECRET_TAGS: usize = 15;

/// The tags keyflip writes on every version it creates, besides the plan's.
pub(crate) const OWN_TAGS: [&str; 3] = ["keyflip-key", "keyflip-rotation", "CredentialId"];

fn tags(
    raw: Option<&BTreeMap<Text, Text>>,
    d: &mut Diagnostics<'_>,
) -> Option<BTreeMap<String, String>> {
    let mut ok = true;
    let mut tags = BTreeMap::new();
    for (key, value) in raw.into_iter().flatten() {
        let name = key.get_ref();
        if name.to_ascii_lowercase().starts_with("keyflip-") {
            d.error(
                key.span(),
                format!("tag `{name}` uses the reserved prefix `keyflip-`"),
                "keyflip writes its own keyflip-* tags on each version; choose another name",
            );
            ok = false;
        } else if name.eq_ignore_ascii_case("CredentialId") {
            // keyflip records the key here, as Microsoft's dual-key rotation sample does:
            // the plan's value would be overwritten.
            d.error(
                key.span(),
                format!("tag `{name}` is written by keyflip"),
                "keyflip sets CredentialId=key1|key2 on each version, as Microsoft's dual-key rotation sample does; choose another name",
            );
            ok = false;
        }
        tags.insert(name.clone(), value.get_ref().clone());
    }
    // Azure refuses a version with more than 15 tags (400 BadParameter), and the first
    // write comes after the standby key was regenerated: refuse the plan instead.
    let allowed = MAX_SECRET_TAGS - OWN_TAGS.len();
    if let Some(first_over) = raw.and_then(|r| r.keys().nth(allowed)) {
        d.error(
            first_over.span(),
            format!(
                "{} tags, but Key Vault allows at most {MAX_SECRET_TAGS} on a secret and keyflip writes {} of its own ({})",
                tags.len(),
                OWN_TAGS.len(),
                OWN_TAGS.join(", ")
            ),
            format!("keep at most {allowed} tags here"),
        );
        ok = false;
    }
    ok.then_some(tags)
}

fn summarize(entries: &[&Entry]) -> String {
    let n = entries.len();
    format!("{n} Key Vault secret{}", if n == 1 { "" } else { "s" })
}

impl Table for KeyVaultSecret {
    fn claims(&self) -> Vec<(ConsumerId, bool)> {
        vec![(self.id(), true)]
    }

    fn permissions(&self) -> Vec<Permission> {
        self.vault_id
            .iter()
            .map(|id| Permission {
                scope: id.to_string(),
                resource: RESOURCE,
                actions: vec![
                    actions::KV_SECRET_GET,
                    actions::KV_SECRET_SET,
                    actions::KV_SECRET_READ_METADATA,
                    actions::KV_SECRET_UPDATE,
                ],
            })
            .collect()
    }

    async fn consumers(
        &self,
        _ctx: &Ctx<'_>,
        _lacking: &Lacking,
        _missing: &mut Vec<MissingPermission>,
    ) -> Result<Vec<ConsumerId>, EngineError> {
        Ok(vec![self.id()])
    }

    fn covers(&self, id: &ConsumerId) -> bool {
        *id == self.id()
    }

    fn token(&self, cloud: &Cloud) -> (Service, Result<String, String>) {
        (
            SERVICE,
            cloud.key_vault_audience().ok_or_else(|| {
                "the cloud has no Key Vault suffix, so the audience is unknown; set key_vault_suffix in [cloud]".to_owned()
            }),
        )
    }

    async fn examine(&self, azure: &Azure, _plan: &Plan, token: Result<(), String>) -> Seen {
        Seen::KeyVault(doctor::read(azure, self, token).await)
    }

    async fn versions(
        &self,
        azure: &Azure,
    ) -> Option<(ConsumerId, Result<Vec<SecretVersion>, azure::Error>)> {
        let versions = match self.url() {
            Ok(url) => azure.secret_versions(&url, &self.secret).await,
            Err(e) => Err(e),
        };
        Some((self.id(), versions))
    }
}

/// A Key Vault secret of the plan, with its vault's URL.
#[derive(Clone, Debug)]
pub(crate) struct Target<'p> {
    secret: &'p KeyVaultSecret,
    vault: Url,
}

pub(super) fn resolve<'p>(
    plan: &'p Plan,
    id: &SecretId,
) -> Option<Result<Target<'p>, EngineError>> {
    plan.consumers
        .iter()
        .find_map(|e| match e {
            Entry::KeyVault(kv) if kv.secret_id() == *id => Some(kv),
            _ => None,
        })
        .map(|secret| plan_url(plan, &secret.vault).map(|vault| Target { secret, vault }))
}

impl Target<'_> {
    fn base(&self) -> String {
        format!(
            "{}/secrets/{}",
            self.vault.as_str().trim_end_matches('/'),
            self.secret.secret
        )
    }
}

impl Kind for Target<'_> {
    fn read_permission(&self) -> (String, Action) {
        let scope = self
            .secret
            .vault_id
            .as_ref()
            .map_or_else(|| self.vault.to_string(), ToString::to_string);
        (scope, actions::KV_SECRET_GET)
    }

    async fn held(&self, ctx: &Ctx<'_>) -> Result<Held, azure::Error> {
        let latest = ctx
            .azure()
            .get_secret(&self.vault, &self.secret.secret, None)
            .await?;
        Ok(match value::account_key(&latest.value) {
            Some(key) => Held::Key(ctx.fingerprint(&key)),
            None => Held::NoKey("its latest version holds no account key".into()),
        })
    }

    async fn write(
        &self,
        ctx: &Ctx<'_>,
        key: KeyName,
        value: &StorageKey,
    ) -> Result<(), azure::Error> {
        let secret = self.secret;
        let address = ctx.address().await?;
        let stored = value::format(secret.format, &address, value);
        let mut tags: BTreeMap<String, String> = secret.tags.clone();
        tags.insert("keyflip-key".into(), key.as_str().into());
        tags.insert("keyflip-rotation".into(), ctx.rotation_id.into());
        // Microsoft's dual-key rotation sample records the key here.
        tags.insert("CredentialId".into(), key.as_str().into());
        let expires = secret.expires_after_days.and_then(|days| {
            ctx.now()
                .checked_add_signed(TimeDelta::days(i64::from(days)))
        });
        ctx.azure()
            .set_secret(
                &self.vault,
                &secret.secret,
                NewSecretVersion {
                    value: &stored,
                    content_type: Some(secret.content_type.clone()),
                    tags,
                    expires,
                },
            )
            .await?;
        Ok(())
    }

    async fn disable_versions(
        &self,
        ctx: &Ctx<'_>,
        fingerprints: &[Fingerprint],
    ) -> Result<Vec<String>, azure::Error> {
        let azure = ctx.azure();
        let name = &self.secret.secret;
        let versions = azure.secret_versions(&self.vault, name).await?;
        // Each enabled version is read, and disabled if it holds a value that must
        // die, a few at a time (not one round trip per version, and not a burst that
        // draws the vault's 429s); results stay in version order.
        let mut checks = Vec::new();
        for version in versions.iter().filter(|v| v.enabled) {
            checks.push(async move {
                let value = azure
                    .get_secret(&self.vault, name, Some(&version.version))
                    .await?
                    .value;
                let held = value::account_key(&value).map(|k| ctx.fingerprint(&k));
                drop(value);
                if held.is_some_and(|fp| fingerprints.contains(&fp)) {
                    azure
                        .disable_secret_version(&self.vault, name, &version.version)
                        .await?;
                    Ok::<_, azure::Error>(Some(version.version.clone()))
                } else {
                    Ok(None)
                }
            });
        }
        let disabled = futures::stream::iter(checks)
            .buffered(azure::keyvault::VERSION_READS)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .filter_map(Result::transpose)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(disabled)
    }

    fn read_call(&self) -> String {
        format!("GET {}", self.base())
    }

    fn write_calls(&self, key: KeyName) -> Vec<String> {
        vec![format!(
            "PUT {} (a new version: {}, content type {}, tags keyflip-key={key}, keyflip-rotation, CredentialId={key})",
            self.base(),
            self.secret.format.as_str(),
            self.secret.content_type
        )]
    }

    fn disable_calls(&self) -> Vec<String> {
        let base = self.base();
        vec![
            format!("GET {base}/versions"),
            format!("GET {base}/<version> (each enabled version)"),
            format!(
                "PATCH {base}/<version> {{\"attributes\":{{\"enabled\":false}}}} (each holding a leaked value)"
            ),
        ]
    }
}
