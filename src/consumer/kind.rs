//! What a consumer kind is made of, whatever the kind: its [`Profile`] (names, id form,
//! [`Capabilities`]), the steps of one of its consumers ([`Kind`], implemented by the
//! kind's `Target`) and what its plan table does ([`Table`]). The kind modules implement
//! these; `consumer/mod.rs` lists the kinds and dispatches to them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use std::ops::Range;

use toml::Spanned;
use toml::de::DeValue;

use super::{ConsumerId, Entry, Seen};
use crate::azure::keyvault::SecretVersion;
use crate::azure::roles::Action;
use crate::azure::{self, Azure, Cloud};
use crate::doctor::report::{Resource, Service};
use crate::key::KeyName;
use crate::plan::Plan;
use crate::plan::fragment::{Diagnostics, Text, name, tables_of};
use crate::resource_id::ResourceId;
use crate::rotation::EngineError;
use crate::rotation::machine::{Failure, Holding, MissingPermission};
use crate::rotation::observe::{Basis, Lacking};
use crate::rotation::step::Ctx;
use crate::secret::{Fingerprint, StorageKey};

/// What keyflip knows about a kind without asking its module, one constant per kind.
pub(crate) struct Profile {
    /// The id's prefix: `keyvault` in `keyvault:…`.
    pub(super) prefix: &'static str,
    /// The id's form, for errors: `keyvault:{vault_url}/secrets/{name}`.
    pub(super) form: &'static str,
    /// `Key Vault secret`, as in `Key Vault secret kv-datasci/x`.
    pub(super) label: &'static str,
    /// `key vault`, for `doctor`'s narrow columns.
    pub(super) word: &'static str,
    pub(super) capabilities: Capabilities,
    /// Whether the service tells two names apart by case.
    pub(super) case_sensitive: bool,
    /// Reads the part of an id after the prefix.
    pub(super) parse: fn(&str) -> Option<ConsumerId>,
    pub(super) listed_twice: fn(&ConsumerId, &ConsumerId) -> String,
    pub(super) in_two_plans: &'static str,
    /// How a write is confirmed when the value cannot be read back, for reports
    /// (`by its timestamp (...)`); `None`: verified by reading the value back.
    pub(super) confirmed_by: Option<&'static str>,
}

/// The usual plan error for an id listed twice.
pub(crate) fn listed_twice(id: &ConsumerId, _first: &ConsumerId) -> String {
    format!("consumer `{id}` is listed twice")
}

/// The usual hint for a consumer in two plans.
pub(crate) const ONE_PLAN: &str = "a consumer can hold only one account's key: keep it in one plan";

/// What a consumer's kind means for the rotation: the machine and the executor act on
/// these, never on the kind, so a new kind with the same needs changes neither. They
/// travel with each
/// [`ConsumerRef`](crate::rotation::machine::ConsumerRef) in the journal; rows written before they did get
/// their kind's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Capabilities {
    /// Each write adds a version and older versions stay readable, so a value that
    /// leaked (or that a rollback abandoned) is disabled in it afterwards (Key Vault).
    #[serde(default)]
    pub(crate) keeps_old_versions: bool,
    /// Binding it makes Azure pick the key it takes, the account's newest as far as
    /// keyflip knows (an ML workspace's `resyncKeys`): a route that swaps to an older
    /// existing standby would leave it behind. Such a bind cannot be steered back, so
    /// the machine issues it only once every other consumer was bound and verified,
    /// and nothing rolls back after it
    /// ([`steered_by_azure`](crate::rotation::machine::steered_by_azure)).
    #[serde(default)]
    pub(crate) takes_newest_key_on_resync: bool,
    /// Bound only once every other bind of its batch has answered, and not at all
    /// when the rotation turned back meanwhile: its write cannot be steered back (a
    /// resync), or disturbs its users (an app restart).
    #[serde(default)]
    pub(crate) bind_last: bool,
}

impl Capabilities {
    pub(crate) const NONE: Capabilities = Capabilities {
        keeps_old_versions: false,
        takes_newest_key_on_resync: false,
        bind_last: false,
    };
}

/// The last path segment of a URL or resource id, for short names.
pub(crate) fn last_segment(text: &str) -> &str {
    text.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(text)
}

/// A resource's short name: its ARM id's name when the plan gives the id, else its
/// URL's ([`url_name`]).
pub(crate) fn resource_name(id: Option<&ResourceId>, url: &str) -> String {
    id.map_or_else(|| url_name(url), |id| id.name().to_owned())
}

/// A short name for a vault or workspace URL: the last path segment of a path-style
/// URL (`https://host/keyvault/kv-datasci`), else the host's first label
/// (`https://kv-datasci.vault.azure.net` → `kv-datasci`).
pub(crate) fn url_name(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => match u
            .path_segments()
            .and_then(|mut s| s.rfind(|p| !p.is_empty()))
        {
            Some(last) => last.to_owned(),
            None => u
                .host_str()
                .and_then(|h| h.split('.').next())
                .unwrap_or(url)
                .to_owned(),
        },
        Err(_) => url.to_owned(),
    }
}

/// What a consumer holds, as far as Azure tells.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Held {
    /// The fingerprint of the account key in it.
    Key(Fingerprint),
    /// It holds no account key (a SAS, another credential type); the reason says which.
    NoKey(String),
    /// Its value cannot be read back.
    WriteOnly,
}

/// Whether keyflip's write is what a consumer whose value cannot be read holds.
#[derive(Debug)]
pub(crate) enum Confirmation {
    Confirmed,
    /// It is not; the reason says why (the kind: the value is not confirmed).
    Mismatch(Failure),
    /// Azure could not be asked.
    Unreadable(azure::Error),
}

/// One consumer's steps: what it holds, writing it, confirming a write, disabling old
/// versions, and the calls a dry run lists. Every kind implements it for its
/// [`Target`](super::Target); only the defaults are shared.
pub(crate) trait Kind {
    /// The read behind [`Kind::held`] as (scope, action), so that observation skips
    /// a read whose permission is known missing and names the permission when Azure
    /// refuses it.
    fn read_permission(&self) -> (String, Action);

    /// What it holds now.
    async fn held(&self, ctx: &Ctx<'_>) -> Result<Held, azure::Error>;

    /// What observation reports for a consumer holding no account key: one that does
    /// not store the key cannot be rotated as listed, and the fix says so.
    fn holding_without_key(&self, why: String) -> Holding {
        Holding::Unusable {
            fix: format!(
                "{why}; keyflip rotates only consumers that store the account key: remove it from the plan"
            ),
        }
    }

    /// What observation reports it holds, and the permission its read lacked. `basis`
    /// gives the fingerprints of key1 and key2 and the permissions found missing, once
    /// known: the read goes out before (see `rotation::observe`).
    async fn observe(
        &self,
        ctx: &Ctx<'_>,
        _id: &ConsumerId,
        basis: &Basis,
    ) -> Result<(Holding, Option<MissingPermission>), EngineError> {
        crate::rotation::observe::by_reading(self, ctx, basis).await
    }

    /// Reads ahead, while other steps run, what [`Kind::write`] would read first, and
    /// keeps it in `ctx` for the write (reads only; most kinds read nothing ahead).
    async fn prepare_write(&self, _ctx: &Ctx<'_>) {}

    /// Writes `value`, the value of `key`.
    async fn write(
        &self,
        ctx: &Ctx<'_>,
        key: KeyName,
        value: &StorageKey,
    ) -> Result<(), azure::Error>;

    /// For a kind whose value cannot be read back: whether it holds what keyflip wrote
    /// at `bound_at`. A kind may also check here what the value alone cannot show (an
    /// App Service connection string's key on the data plane). `None`: compare what
    /// it holds (the default).
    async fn confirm_write(
        &self,
        _ctx: &Ctx<'_>,
        _bound_at: Option<DateTime<Utc>>,
    ) -> Option<Confirmation> {
        None
    }

    /// Disables every enabled version holding one of `fingerprints`; the versions
    /// disabled. Kinds without versions have nothing to do.
    async fn disable_versions(
        &self,
        _ctx: &Ctx<'_>,
        _fingerprints: &[Fingerprint],
    ) -> Result<Vec<String>, azure::Error> {
        Ok(Vec::new())
    }

    /// What writing it does besides changing the value, in words a dry run shows
    /// before anything is written (`restarts func-x (...)`); `None` for most kinds.
    /// Binds with the same words are counted together.
    fn write_effect(&self) -> Option<String> {
        None
    }

    /// The call [`Kind::held`] sends, for a dry run's listing.
    fn read_call(&self) -> String;

    /// The calls [`Kind::write`] sends.
    fn write_calls(&self, key: KeyName) -> Vec<String>;

    /// The calls [`Kind::disable_versions`] sends.
    fn disable_calls(&self) -> Vec<String> {
        Vec::new()
    }
}

/// What a plan's consumer table does, beside its consumers' own steps ([`Kind`]).
pub(crate) trait Table {
    /// Every id the table names, each with whether it is a consumer in its own right
    /// (an ML workspace that is not resynced is named, so it cannot be listed twice,
    /// but is no consumer).
    fn claims(&self) -> Vec<(ConsumerId, bool)>;

    /// The actions a rotation needs, by scope.
    fn permissions(&self) -> Vec<Permission>;

    /// The consumers it stands for now, in order. Reads Azure for the ones found at
    /// rotation time; a read refused with 403 adds the missing permission and finds
    /// nothing.
    async fn consumers(
        &self,
        ctx: &Ctx<'_>,
        lacking: &Lacking,
        missing: &mut Vec<MissingPermission>,
    ) -> Result<Vec<ConsumerId>, EngineError>;

    /// Whether `id` is one of its consumers, listed or discovered.
    fn covers(&self, id: &ConsumerId) -> bool;

    /// What it finds at rotation time, in words (`datastores`), if anything.
    fn discovers(&self) -> Option<&'static str> {
        None
    }

    /// The calls observing it sends besides reading what each consumer holds (a
    /// discovery), for a dry run's listing.
    fn observe_calls(&self) -> Vec<String> {
        Vec::new()
    }

    /// The service its calls need a token for, and the token's audience (or why the
    /// audience is unknown), for `doctor`.
    fn token(&self, cloud: &Cloud) -> (Service, Result<String, String>);

    /// Everything `doctor` reads about it; `token` says whether its service's token
    /// could be acquired (the reason why not).
    async fn examine(&self, azure: &Azure, plan: &Plan, token: Result<(), String>) -> Seen;

    /// Every version of what it stores, oldest first, for drift watch (versions
    /// keyflip did not write). `None` for kinds that keep no versions.
    async fn versions(
        &self,
        _azure: &Azure,
    ) -> Option<(ConsumerId, Result<Vec<SecretVersion>, azure::Error>)> {
        None
    }
}

/// Actions needed at one scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Permission {
    pub scope: String,
    /// What the scope is, for `doctor`.
    pub resource: Resource,
    pub actions: Vec<Action>,
}

/// Reads every table of a consumer section: each deserialized (`T`, the raw table),
/// then validated by `validate`; errors go to the diagnostics.
pub(crate) fn entries<T: for<'de> Deserialize<'de>>(
    value: Spanned<DeValue<'_>>,
    key: &str,
    d: &mut Diagnostics<'_>,
    validate: impl Fn(&Spanned<T>, &mut Diagnostics<'_>) -> Option<Entry>,
) -> Vec<(Entry, Range<usize>)> {
    tables_of::<T>(value, key, d)
        .iter()
        .filter_map(|raw| validate(raw, d).map(|entry| (entry, raw.span())))
        .collect()
}

/// A plan table's list of names (`key = [...]`), each valid and listed once (ignoring
/// case, as the services do); an absent list is empty.
pub(crate) fn names(
    list: Option<&Spanned<Vec<Text>>>,
    key: &str,
    allowed: fn(char) -> bool,
    max: usize,
    rule: &str,
    d: &mut Diagnostics<'_>,
) -> Option<Vec<String>> {
    let Some(list) = list else {
        return Some(Vec::new());
    };
    let mut out: Vec<String> = Vec::new();
    let mut ok = true;
    for item in list.get_ref() {
        let Some(n) = name(item, key, allowed, (1, max), rule, d) else {
            ok = false;
            continue;
        };
        if out.iter().any(|seen| seen.eq_ignore_ascii_case(&n)) {
            d.error(
                item.span(),
                format!("`{n}` is listed twice in {key}"),
                "remove the repeated name",
            );
            ok = false;
        }
        out.push(n);
    }
    ok.then_some(out)
}

/// A URL the plan gave (validated when the plan was read), as a [`url::Url`].
pub(crate) fn plan_url(plan: &Plan, text: &str) -> Result<url::Url, EngineError> {
    url::Url::parse(text).map_err(|e| EngineError::Plan {
        plan: plan.name.clone(),
        detail: format!("'{text}' is not a URL: {e}"),
    })
}
