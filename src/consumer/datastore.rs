//! An Azure ML datastore that stores the account key. Its workspace's
//! `[[ml_workspace]]` table names the datastores (`datastores = [...]`) or asks for
//! every account-key datastore on the plan's account, found at rotation time
//! (`discover = true`).
//!
//! A bind updates it in place (GET, replace the key, PUT, which the service
//! validates; the first bind after a discovery PUTs the body the list returned, with
//! no GET); what it holds is the key `listSecrets` returns. A datastore with other
//! credentials (a SAS, a service principal) cannot be rotated as listed. A discovered
//! datastore is not in the plan file; its id carries its workspace and name, so a
//! resumed rotation reaches it without discovering again. Id:
//! `datastore:{workspace_arm_id}/datastores/{name}`.

mod doctor;

use std::fmt;
use std::ops::Range;

use toml::Spanned;

pub use doctor::{DatastoreFacts, DatastoreSeen, DatastoresFacts, Selection};
pub(super) use doctor::{check as doctor_check, read as doctor_read};

use super::workspace::MlWorkspace;
use super::{Capabilities, ConsumerId, Entry, Held, Kind, ONE_PLAN, Profile, listed_twice};
use crate::azure;
use crate::azure::datastore::DatastoreSecret;
use crate::azure::roles::{Action, actions};
use crate::key::KeyName;
use crate::plan::Plan;
use crate::plan::fragment::{Diagnostics, Text, name};
use crate::resource_id::ResourceId;
use crate::rotation::EngineError;
use crate::rotation::machine::MissingPermission;
use crate::rotation::observe::{Lacking, denied};
use crate::rotation::step::Ctx;
use crate::secret::StorageKey;

pub(super) const PROFILE: Profile = Profile {
    prefix: "datastore",
    form: "datastore:{workspace_arm_id}/datastores/{name}",
    label: "ML datastore",
    word: "datastore",
    capabilities: Capabilities::NONE,
    case_sensitive: false,
    parse: |rest| DatastoreId::parse(rest).map(|id| ConsumerId::Datastore(Box::new(id))),
    listed_twice,
    in_two_plans: ONE_PLAN,
    confirmed_by: None,
};

/// The id of a datastore: its workspace's ARM id and its name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DatastoreId {
    workspace: ResourceId,
    name: String,
}

impl DatastoreId {
    pub fn new(workspace: &ResourceId, name: &str) -> DatastoreId {
        DatastoreId {
            workspace: workspace.clone(),
            name: name.to_owned(),
        }
    }

    fn parse(rest: &str) -> Option<DatastoreId> {
        let (workspace, name) = rest.rsplit_once("/datastores/")?;
        let workspace = workspace.parse().ok()?;
        (!name.is_empty()).then(|| DatastoreId::new(&workspace, name))
    }

    pub(super) fn short(&self) -> String {
        format!("{}/{}", self.workspace.name(), self.name)
    }

    /// The ML workspace the datastore belongs to.
    pub fn workspace(&self) -> &ResourceId {
        &self.workspace
    }
}

impl fmt::Display for DatastoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/datastores/{}", self.workspace, self.name)
    }
}

/// Which datastores of a workspace follow the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Datastores {
    Named(Vec<String>),
    /// Every datastore of the workspace on this account with account-key credentials,
    /// found at rotation time.
    Discover,
}

impl Datastores {
    /// The actions updating them needs at their workspace.
    pub(super) fn permissions(&self) -> Vec<Action> {
        let any = match self {
            Datastores::Named(names) => !names.is_empty(),
            Datastores::Discover => true,
        };
        if any {
            vec![
                actions::ML_DATASTORE_READ,
                actions::ML_DATASTORE_WRITE,
                actions::ML_DATASTORE_LIST_SECRETS,
            ]
        } else {
            Vec::new()
        }
    }

    /// In a few words, after "ML workspace mlw and".
    pub(super) fn summary(&self) -> String {
        match self {
            Datastores::Discover => "its account-key datastores".to_owned(),
            Datastores::Named(names) => format!(
                "{} named datastore{}",
                names.len(),
                if names.len() == 1 { "" } else { "s" }
            ),
        }
    }
}

/// `datastores = [...]` or `discover = true` of an `[[ml_workspace]]` table at `span`:
/// one of the two, not both, and each name once.
pub(super) fn selection(
    span: &Range<usize>,
    datastores: Option<&Spanned<Vec<Text>>>,
    discover: Option<&Spanned<bool>>,
    d: &mut Diagnostics<'_>,
) -> Option<Datastores> {
    let discovers = discover.is_some_and(|v| *v.get_ref());
    match (datastores, discovers) {
        (Some(_), true) => {
            let at = discover.map_or(span.clone(), |v| v.span());
            d.error(
                at,
                "`datastores` and `discover = true` are both set",
                "name the datastores, or set discover = true to follow every key-based datastore on this account, not both",
            );
            None
        }
        (None, true) => Some(Datastores::Discover),
        (Some(list), false) => names_in(list, d).map(Datastores::Named),
        (None, false) => {
            d.error(
                span.clone(),
                "[[ml_workspace]] names no datastores",
                "add datastores = [\"training_data\"], or discover = true for every key-based datastore on this account",
            );
            None
        }
    }
}

fn names_in(list: &Spanned<Vec<Text>>, d: &mut Diagnostics<'_>) -> Option<Vec<String>> {
    if list.get_ref().is_empty() {
        d.error(
            list.span(),
            "`datastores` is empty",
            "name at least one datastore, or use discover = true",
        );
        return None;
    }
    let mut names: Vec<String> = Vec::new();
    let mut ok = true;
    for item in list.get_ref() {
        let Some(n) = name(
            item,
            "datastore",
            |c| c.is_ascii_alphanumeric() || c == '_',
            (1, 255),
            "letters, digits and `_`",
            d,
        ) else {
            ok = false;
            continue;
        };
        if names.iter().any(|seen| seen.eq_ignore_ascii_case(&n)) {
            d.error(
                item.span(),
                format!("datastore `{n}` is listed twice"),
                "remove the repeated name",
            );
            ok = false;
        }
        names.push(n);
    }
    ok.then_some(names)
}

/// The names of `ws`'s datastores that follow the key now: the named ones, or those
/// discovery finds (sorted by name). A discovery refused with 403 adds the missing
/// permission and finds nothing.
pub(super) async fn names(
    ctx: &Ctx<'_>,
    ws: &MlWorkspace,
    lacking: &Lacking,
    missing: &mut Vec<MissingPermission>,
) -> Result<Vec<String>, EngineError> {
    match &ws.datastores {
        Datastores::Named(names) => Ok(names.clone()),
        Datastores::Discover => {
            let scope = ws.workspace.to_string();
            if lacking.has(&scope, &actions::ML_DATASTORE_READ) {
                return Ok(Vec::new());
            }
            match ctx
                .azure()
                .ml_account_key_datastores(&ws.workspace, &ctx.plan.storage_account)
                .await
            {
                Ok(found) => {
                    let mut names: Vec<String> = found
                        .into_iter()
                        .map(|d| {
                            let name = d.name.clone();
                            // The first bind PUTs this body without a GET.
                            ctx.listed_datastore(format!("{}/{name}", ws.workspace), d);
                            name
                        })
                        .collect();
                    names.sort();
                    Ok(names)
                }
                Err(e) => match denied(&e, &actions::ML_DATASTORE_READ, &scope) {
                    Some(m) => {
                        missing.push(m);
                        Ok(Vec::new())
                    }
                    None => Err(e.into()),
                },
            }
        }
    }
}

/// Whether `id` is one of `ws`'s datastores that follow the key.
pub(super) fn covers(ws: &MlWorkspace, id: &DatastoreId) -> bool {
    id.workspace == ws.workspace
        && match &ws.datastores {
            Datastores::Named(names) => names.contains(&id.name),
            Datastores::Discover => true,
        }
}

/// What observing `ws`'s datastores sends beside reading each.
pub(super) fn observe_calls(ws: &MlWorkspace) -> Vec<String> {
    match ws.datastores {
        Datastores::Discover => vec![format!(
            "GET {}/datastores (discover account-key datastores)",
            ws.workspace
        )],
        Datastores::Named(_) => Vec::new(),
    }
}

/// A datastore of a workspace of the plan.
#[derive(Clone, Debug)]
pub(crate) struct Target<'p> {
    workspace: &'p ResourceId,
    name: String,
}

/// The datastore, when its workspace is in the plan (named or not: a discovered one
/// is reached through its id).
pub(super) fn resolve<'p>(plan: &'p Plan, id: &DatastoreId) -> Option<Target<'p>> {
    plan.consumers.iter().find_map(|e| match e {
        Entry::MlWorkspace(ws) if ws.workspace == id.workspace => Some(Target {
            workspace: &ws.workspace,
            name: id.name.clone(),
        }),
        _ => None,
    })
}

impl Kind for Target<'_> {
    fn read_permission(&self) -> (String, Action) {
        (
            self.workspace.to_string(),
            actions::ML_DATASTORE_LIST_SECRETS,
        )
    }

    async fn held(&self, ctx: &Ctx<'_>) -> Result<Held, azure::Error> {
        match ctx
            .azure()
            .ml_datastore_secret(self.workspace, &self.name)
            .await?
        {
            DatastoreSecret::AccountKey(key) => Ok(Held::Key(ctx.fingerprint(&key))),
            DatastoreSecret::Sas(_) => Ok(Held::NoKey(
                "it uses a SAS token, not an account key".into(),
            )),
            DatastoreSecret::Other { secrets_type } => Ok(Held::NoKey(format!(
                "it uses {secrets_type} credentials, not an account key"
            ))),
        }
    }

    async fn write(
        &self,
        ctx: &Ctx<'_>,
        _key: KeyName,
        value: &StorageKey,
    ) -> Result<(), azure::Error> {
        let listed = ctx.take_listed_datastore(&format!("{}/{}", self.workspace, self.name));
        ctx.azure()
            .set_ml_datastore_key_from(self.workspace, &self.name, listed, value)
            .await?;
        Ok(())
    }

    fn read_call(&self) -> String {
        format!(
            "POST {}/datastores/{}/listSecrets",
            self.workspace, self.name
        )
    }

    fn write_calls(&self, key: KeyName) -> Vec<String> {
        vec![
            format!("GET {}/datastores/{}", self.workspace, self.name),
            format!(
                "PUT {}/datastores/{} (credentials.secrets.key = {key}, validated by the service)",
                self.workspace, self.name
            ),
        ]
    }
}
