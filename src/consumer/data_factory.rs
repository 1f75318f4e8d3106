//! A Data Factory linked service that holds the key (`[[data_factory]]`): an
//! `AzureBlobStorage`, `AzureFileStorage`, `AzureTableStorage` or legacy `AzureStorage`
//! linked service whose connection string holds it, or an `AzureBlobFS` (Data Lake
//! Storage Gen2) one whose `accountKey` does.
//!
//! Data Factory never returns a `SecureString`'s value (it reads back as
//! `**********`), so what such a linked service holds comes from keyflip's journal: the
//! fingerprint of the key keyflip last wrote and the `etag` Azure gave that write
//! ([`crate::journal::WriteMark`]). While the linked service still carries that etag,
//! it holds that key; once the etag changed, someone else wrote it and it is unknown
//! (as any write-only consumer keyflip never wrote), which does not block a rotation. A
//! bind is a conditional read-modify-write (`If-Match`, see
//! [`crate::azure::datafactory`]) that replaces the credential with a SecureString (a
//! connection string for the account, or the key for `accountKey`) and keeps the rest
//! of the linked service. Verification checks the etag is still keyflip's write of
//! that key; it cannot check the value itself, nor that Data Factory connects with it
//! (no API tests a linked service's credentials). A plain-text credential is read like
//! any other value. A linked service whose credential is an `AzureKeyVaultSecret`
//! reference is no consumer of the key: it reads that secret, which is the consumer
//! (the recommended setup). Id: `datafactory:{factory_arm_id}/linkedservices/{name}`.

pub(crate) mod discover;
mod doctor;

use std::fmt;
use std::ops::Range;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use toml::Spanned;
use toml::de::DeValue;

pub use doctor::{DataFactoryFacts, DataFactorySeen, LinkedServiceFacts};

use super::value::{self, SecretFormat, account_key};
use super::{
    Capabilities, Confirmation, ConsumerId, Entry, Held, Kind, ONE_PLAN, Permission, Profile,
    Section, Seen, Table, entries, listed_twice, names,
};
use crate::azure::datafactory::{Credential, LinkedService};
use crate::azure::roles::{Action, actions};
use crate::azure::{self, Azure, Cloud};
use crate::doctor::report::{Resource, Service};
use crate::key::KeyName;
use crate::plan::Plan;
use crate::plan::fragment::{Diagnostics, Text, arm_id, required};
use crate::resource_id::ResourceId;
use crate::rotation::EngineError;
use crate::rotation::machine::{Failure, FailureKind, Holding, MissingPermission};
use crate::rotation::observe::{Basis, Lacking, denied, of, unknown};
use crate::rotation::step::Ctx;
use crate::secret::{Fingerprint, StorageKey};

pub(super) const PROFILE: Profile = Profile {
    prefix: "datafactory",
    form: "datafactory:{factory_arm_id}/linkedservices/{name}",
    label: "Data Factory linked service",
    word: "data factory",
    capabilities: Capabilities::NONE,
    case_sensitive: false,
    parse: |rest| LinkedServiceId::parse(rest).map(|id| ConsumerId::DataFactory(Box::new(id))),
    listed_twice,
    in_two_plans: ONE_PLAN,
    confirmed_by: Some("by its etag (Data Factory never returns a SecureString's value)"),
};

pub(super) const SECTION: Section = Section {
    key: "data_factory",
    parse: parse_tables,
    summarize,
    render: discover::render,
    report_order: 4,
};

/// `doctor`'s name for a factory as a permission scope.
pub(crate) const RESOURCE: Resource = Resource {
    name: "data_factory",
    label: "data factory",
};

/// The id of a linked service: its factory's ARM id and its name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LinkedServiceId {
    factory: ResourceId,
    name: String,
}

impl LinkedServiceId {
    pub fn new(factory: &ResourceId, name: &str) -> LinkedServiceId {
        LinkedServiceId {
            factory: factory.clone(),
            name: name.to_owned(),
        }
    }

    fn parse(rest: &str) -> Option<LinkedServiceId> {
        let (factory, name) = rest.rsplit_once("/linkedservices/")?;
        let factory: ResourceId = factory.parse().ok()?;
        (factory.is_type("Microsoft.DataFactory/factories") && !name.is_empty())
            .then(|| LinkedServiceId::new(&factory, name))
    }

    pub(super) fn short(&self) -> String {
        format!("{}/{}", self.factory.name(), self.name)
    }
}

impl fmt::Display for LinkedServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/linkedservices/{}", self.factory, self.name)
    }
}

/// A `[[data_factory]]` table: linked services of one factory that hold the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataFactoryLinkedServices {
    pub factory: ResourceId,
    pub linked_services: Vec<String>,
}

impl DataFactoryLinkedServices {
    pub fn ids(&self) -> Vec<ConsumerId> {
        self.linked_services
            .iter()
            .map(|n| ConsumerId::DataFactory(Box::new(LinkedServiceId::new(&self.factory, n))))
            .collect()
    }
}

/// The table as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataFactory {
    factory: Option<Text>,
    linked_services: Option<Spanned<Vec<Text>>>,
}

fn parse_tables(
    value: Spanned<DeValue<'_>>,
    d: &mut Diagnostics<'_>,
) -> Vec<(Entry, Range<usize>)> {
    entries::<RawDataFactory>(value, SECTION.key, d, |raw, d| {
        table(raw, d).map(Entry::DataFactory)
    })
}

fn table(
    raw: &Spanned<RawDataFactory>,
    d: &mut Diagnostics<'_>,
) -> Option<DataFactoryLinkedServices> {
    let (span, r) = (raw.span(), raw.get_ref());
    let section = "[[data_factory]]";
    let factory = required(
        &r.factory,
        "factory",
        section,
        &span,
        "\"/subscriptions/…/providers/Microsoft.DataFactory/factories/<name>\"",
        d,
    )
    .and_then(|v| arm_id(v, "factory", "Microsoft.DataFactory/factories", d));
    let list = required(
        &r.linked_services,
        "linked_services",
        section,
        &span,
        "[\"ls_storage\"]",
        d,
    )?;
    if list.get_ref().is_empty() {
        d.error(
            list.span(),
            "`linked_services` is empty",
            "name the linked services that hold the key",
        );
        return None;
    }
    // The spec's pattern, less the characters it forbids anywhere:
    // ^[A-Za-z0-9_][^<>*#.%&:\\+?/]*$.
    let names = names(
        Some(list),
        "linked_services",
        |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ' '),
        260,
        "letters, digits, `_`, `-` and spaces",
        d,
    );
    Some(DataFactoryLinkedServices {
        factory: factory?,
        linked_services: names?,
    })
}

fn summarize(entries: &[&Entry]) -> String {
    let n: usize = entries
        .iter()
        .map(|e| match e {
            Entry::DataFactory(t) => t.linked_services.len(),
            _ => 0,
        })
        .sum();
    format!(
        "{n} Data Factory linked service{}",
        if n == 1 { "" } else { "s" }
    )
}

impl Table for DataFactoryLinkedServices {
    fn claims(&self) -> Vec<(ConsumerId, bool)> {
        self.ids().into_iter().map(|id| (id, true)).collect()
    }

    fn permissions(&self) -> Vec<Permission> {
        vec![Permission {
            scope: self.factory.to_string(),
            resource: RESOURCE,
            actions: vec![actions::DF_LINKED_READ, actions::DF_LINKED_WRITE],
        }]
    }

    async fn consumers(
        &self,
        _ctx: &Ctx<'_>,
        _lacking: &Lacking,
        _missing: &mut Vec<MissingPermission>,
    ) -> Result<Vec<ConsumerId>, EngineError> {
        Ok(self.ids())
    }

    fn covers(&self, id: &ConsumerId) -> bool {
        self.ids().contains(id)
    }

    fn token(&self, cloud: &Cloud) -> (Service, Result<String, String>) {
        (Service::ARM, Ok(cloud.arm_audience.clone()))
    }

    async fn examine(&self, azure: &Azure, plan: &Plan, token: Result<(), String>) -> Seen {
        Seen::DataFactory(doctor::read(azure, plan, self, token).await)
    }
}

/// What a linked service holds, as far as keyflip can tell. Reusable by discovery
/// (without a journal, a SecureString is always unknown there).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// The fingerprint of the account key it holds (read, or known from the etag of
    /// keyflip's last write).
    Key(Fingerprint),
    /// It holds a key keyflip cannot see; the words say why.
    Unknown(String),
    /// It cannot be rotated as listed; the words say why and what to do.
    Unusable(String),
}

/// What `ls` holds, for the account `account`. `mark` is keyflip's last write of it
/// (the fingerprint written and the etag Azure gave the write), when there is one.
pub fn found(
    ls: &LinkedService,
    account: &str,
    mark: Option<(Fingerprint, &str)>,
    fingerprint: impl Fn(&StorageKey) -> Fingerprint,
) -> Found {
    let name = &ls.name;
    if !ls.is_storage() {
        return Found::Unusable(format!(
            "{name} is a {} linked service, which holds no storage account key: remove it from the plan",
            ls.service_type
        ));
    }
    if !ls.other_secrets.is_empty() {
        return Found::Unusable(format!(
            "{name} holds other SecureStrings ({}) that Data Factory never returns, so keyflip cannot write it back without destroying them: move its credential to Key Vault (an AzureKeyVaultSecret reference) and list that secret under [[key_vault]]",
            ls.other_secrets.join(", ")
        ));
    }
    match &ls.credential {
        Credential::KeyVault { store, secret, .. } => Found::Unusable(format!(
            "{name} reads Key Vault secret {secret} through linked service {store}: that secret is the consumer (list it under [[key_vault]]); remove {name} from linked_services"
        )),
        Credential::Other(why) => Found::Unusable(format!(
            "{name}: {why}; keyflip rotates only linked services that store the account key: remove it from the plan"
        )),
        Credential::Text(text) => {
            let named = text.expose().split(';').find_map(|part| {
                let (k, v) = part.split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("AccountName")
                    .then(|| v.trim().to_owned())
            });
            if let Some(other) = named.filter(|n| !n.eq_ignore_ascii_case(account)) {
                return Found::Unusable(format!(
                    "{name}'s connection string is for account {other}, not {account}: remove it from the plan"
                ));
            }
            match account_key(text) {
                Some(key) => Found::Key(fingerprint(&key)),
                None => Found::Unusable(format!(
                    "{name}'s connection string holds no account key: remove it from the plan"
                )),
            }
        }
        Credential::SecureString => match mark {
            None => Found::Unknown(
                "keyflip has not written it, and Data Factory never returns a SecureString's value"
                    .into(),
            ),
            Some((fp, etag)) if ls.etag.as_deref() == Some(etag) => Found::Key(fp),
            Some((_, etag)) => Found::Unknown(format!(
                "it was changed after keyflip wrote it (etag {} now, {etag} after keyflip's write), and Data Factory never returns a SecureString's value",
                ls.etag.as_deref().unwrap_or("none")
            )),
        },
    }
}

/// A linked service of the plan.
#[derive(Clone, Debug)]
pub(crate) struct Target<'p> {
    factory: &'p ResourceId,
    id: LinkedServiceId,
}

pub(super) fn resolve<'p>(plan: &'p Plan, id: &LinkedServiceId) -> Option<Target<'p>> {
    let consumer = ConsumerId::DataFactory(Box::new(id.clone()));
    plan.consumers.iter().find_map(|e| match e {
        Entry::DataFactory(t) if t.covers(&consumer) => Some(Target {
            factory: &t.factory,
            id: id.clone(),
        }),
        _ => None,
    })
}

impl Target<'_> {
    fn consumer(&self) -> ConsumerId {
        ConsumerId::DataFactory(Box::new(self.id.clone()))
    }

    /// What it holds now, with keyflip's journal for a SecureString.
    async fn found(&self, ctx: &Ctx<'_>) -> Result<Found, azure::Error> {
        let ls = match ctx
            .azure()
            .linked_service(self.factory, &self.id.name)
            .await
        {
            Ok(ls) => {
                // A bind that follows writes from this read (its etag guards it).
                ctx.read_linked_service(&self.consumer(), ls.clone());
                ls
            }
            Err(azure::Error::NotFound { .. }) => {
                return Ok(Found::Unusable(format!(
                    "factory {} has no linked service {}: check the name in the plan",
                    self.factory.name(),
                    self.id.name
                )));
            }
            Err(e) => return Err(e),
        };
        let mark = match ctx.write_mark(&self.consumer()) {
            Ok(mark) => mark,
            Err(e) => {
                return Err(azure::Error::Invalid(format!(
                    "cannot read keyflip's last write of it from the journal: {e}"
                )));
            }
        };
        Ok(found(
            &ls,
            ctx.plan.storage_account.name(),
            mark.as_ref().map(|m| (m.fingerprint, m.mark.as_str())),
            |k| ctx.fingerprint(k),
        ))
    }
}

impl Kind for Target<'_> {
    fn read_permission(&self) -> (String, Action) {
        (self.factory.to_string(), actions::DF_LINKED_READ)
    }

    async fn held(&self, ctx: &Ctx<'_>) -> Result<Held, azure::Error> {
        Ok(match self.found(ctx).await? {
            Found::Key(fp) => Held::Key(fp),
            Found::Unknown(_) => Held::WriteOnly,
            Found::Unusable(why) => Held::NoKey(why),
        })
    }

    /// From the linked service's form, and for a SecureString keyflip's journal and
    /// the etag, as the module docs say.
    async fn observe(
        &self,
        ctx: &Ctx<'_>,
        _id: &ConsumerId,
        basis: &Basis,
    ) -> Result<(Holding, Option<MissingPermission>), EngineError> {
        let (scope, action) = self.read_permission();
        let unread = || unknown(format!("keyflip may not read it: it lacks {action}"));
        if basis.lacks_now(&scope, &action) {
            return Ok((unread(), None));
        }
        let found = self.found(ctx).await;
        // Sent before the permission check answered: unread if the check says it may not.
        if basis.lacks(&scope, &action).await? {
            return Ok((unread(), None));
        }
        match found {
            Ok(Found::Key(fp)) => Ok((of(fp, basis.keys().await?), None)),
            Ok(Found::Unknown(why)) => Ok((unknown(why), None)),
            Ok(Found::Unusable(fix)) => Ok((Holding::Unusable { fix }, None)),
            Err(e) => match denied(&e, &action, &scope) {
                Some(m) => Ok((unknown(format!("keyflip may not read it: {e}")), Some(m))),
                None => Err(e.into()),
            },
        }
    }

    async fn write(
        &self,
        ctx: &Ctx<'_>,
        _key: KeyName,
        value: &StorageKey,
    ) -> Result<(), azure::Error> {
        let address = ctx.address().await?;
        let etag = ctx
            .azure()
            .set_linked_service_secret_from(
                self.factory,
                &self.id.name,
                ctx.take_read_linked_service(&self.consumer()),
                |property| {
                    if property == "accountKey" {
                        value.clone()
                    } else {
                        value::format(SecretFormat::ConnectionString, &address, value)
                    }
                },
            )
            .await?;
        ctx.record_write_mark(&self.consumer(), ctx.fingerprint(value), etag)
            .map_err(|e| {
                azure::Error::Invalid(format!(
                    "the linked service was written, but the journal could not record the etag that proves it: {e}"
                ))
            })
    }

    /// The etag must still be that of keyflip's write: a linked service someone else
    /// wrote since is not confirmed, whatever it holds (`Kind::held` reports it as
    /// unreadable, which would otherwise pass). With it, [`Kind::held`] gives the key
    /// that write held, which is then compared (`None`). What this cannot check: the
    /// value itself (Data Factory returns it masked) and whether Data Factory connects
    /// with it.
    async fn confirm_write(
        &self,
        ctx: &Ctx<'_>,
        _bound_at: Option<DateTime<Utc>>,
    ) -> Option<Confirmation> {
        match self.found(ctx).await {
            Ok(Found::Key(_)) => {
                tracing::info!(
                    rotation = ctx.rotation_id,
                    linked_service = %self.id,
                    "verified by etag: the linked service is still keyflip's write; not checked: the value itself (Data Factory returns SecureStrings masked) and whether Data Factory connects with it"
                );
                None
            }
            Ok(Found::Unknown(why) | Found::Unusable(why)) => Some(Confirmation::Mismatch(
                Failure::new(FailureKind::WrongValue, why),
            )),
            Err(e) => Some(Confirmation::Unreadable(e)),
        }
    }

    fn read_call(&self) -> String {
        format!(
            "GET {}/linkedservices/{} (the secret reads back masked: keyflip compares the etag with its journal)",
            self.factory, self.id.name
        )
    }

    fn write_calls(&self, key: KeyName) -> Vec<String> {
        let url = format!("{}/linkedservices/{}", self.factory, self.id.name);
        vec![
            format!("GET {url}"),
            format!(
                "PUT {url} with If-Match: <etag> (its credential a SecureString holding {key}; a 412 starts over)"
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_the_factory_and_the_linked_service() {
        let f = "/subscriptions/s/resourceGroups/g/providers/Microsoft.DataFactory/factories/adf";
        let text = format!("{f}/linkedservices/ls blob_1");
        let id = LinkedServiceId::parse(&text).unwrap();
        assert_eq!(id.to_string(), text);
        assert_eq!(id.short(), "adf/ls blob_1");
        assert_eq!(
            LinkedServiceId::parse(&format!("{f}/linkedservices/")),
            None
        );
        assert_eq!(
            LinkedServiceId::parse(
                "/subscriptions/s/resourceGroups/g/providers/Microsoft.Web/sites/x/linkedservices/y"
            ),
            None
        );
    }
}
