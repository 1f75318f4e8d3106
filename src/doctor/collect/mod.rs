//! The reading half of `doctor`: everything it asks Azure about one plan, gathered
//! into an [`Observed`] value that [`super::assess`] judges without further IO.
//!
//! Promises: only reads. Every call here is a GET or one of the read-only POSTs
//! (`listKeys`, `listSecrets`, the permissions API's GET, Blob Get Account
//! Information); nothing is written, regenerated, resynced or disabled. Independent
//! reads run concurrently; a read whose token could not be acquired is not sent. Key
//! values are fingerprinted where they are read and dropped at once. The consumers'
//! reads live in [`consumers`].

mod consumers;

use chrono::{DateTime, Utc};
use futures::future::join_all;

use super::report::{Resource, Service};
use crate::azure::authorization::MissingAction;
use crate::azure::databricks::{DatabricksSecret as DbxSecret, SecretScope};
use crate::azure::keyvault::SecretVersion;
use crate::azure::ml::Workspace;
use crate::azure::probe::Probe;
use crate::azure::roles::Action;
use crate::azure::storage::StorageAccount;
use crate::azure::{Azure, DATABRICKS_AUDIENCE, Error};
use crate::key::KeyName;
use crate::plan::{DatabricksSecret, KeyVaultSecret, MlWorkspace, Plan};
use crate::secret::Fingerprint;

/// How many of a secret's newest enabled versions are read and fingerprinted. A
/// secret rotated often has thousands of versions; reading them all would spend the
/// vault's request budget on versions nobody reads any more.
pub const VERSIONS_READ: usize = 25;

/// How many reads of one kind (secret versions, datastore secrets) run at once.
const CONCURRENCY: usize = 8;

/// The result of one read.
#[derive(Debug)]
pub enum Got<T> {
    Done(T),
    Failed(Error),
    /// Not attempted; the reason, for the report.
    NotTried(String),
}

impl<T> Got<T> {
    fn from(result: Result<T, Error>) -> Got<T> {
        match result {
            Ok(v) => Got::Done(v),
            Err(e) => Got::Failed(e),
        }
    }
    pub fn done(&self) -> Option<&T> {
        match self {
            Got::Done(v) => Some(v),
            _ => None,
        }
    }
}

/// Everything read about one plan.
#[derive(Debug)]
pub struct Observed {
    pub tokens: Vec<TokenSeen>,
    pub permissions: Vec<PermissionsSeen>,
    pub account: Got<StorageAccount>,
    /// Both keys, key1 first.
    pub keys: Got<Vec<KeySeen>>,
    pub workspaces: Vec<WorkspaceSeen>,
    pub secrets: Vec<SecretSeen>,
    pub databricks: Vec<DatabricksSeen>,
}

#[derive(Debug)]
pub struct TokenSeen {
    pub service: Service,
    pub audience: Option<String>,
    pub result: Got<()>,
    /// The credential that gave (or failed to give) the token, for people.
    pub credential: String,
}

#[derive(Debug)]
pub struct PermissionsSeen {
    pub scope: String,
    pub resource: Resource,
    pub required: Vec<Action>,
    pub missing: Got<Vec<MissingAction>>,
}

#[derive(Debug)]
pub struct KeySeen {
    pub name: KeyName,
    pub fingerprint: Fingerprint,
    pub created: Option<DateTime<Utc>>,
    pub probe: Got<Probe>,
}

#[derive(Debug)]
pub struct WorkspaceSeen {
    pub plan: MlWorkspace,
    /// Read only when the plan resyncs the workspace.
    pub workspace: Got<Workspace>,
    /// The fingerprint of the workspace's cached storage key (`None`: it has none).
    pub cached_key: Got<Option<Fingerprint>>,
    pub datastores: Got<Vec<DatastoreSeen>>,
}

/// What `doctor` needs of a datastore (never a secret).
#[derive(Debug)]
pub struct DatastoreSeen {
    pub name: String,
    pub datastore_type: String,
    pub credentials_type: String,
    pub account_name: Option<String>,
    pub uses_account_key: bool,
    /// Whether it is a key-based datastore on the plan's account.
    pub on_account: bool,
    /// The fingerprint of its stored account key (read for key-based datastores on
    /// the account and for named ones).
    pub key: Got<Fingerprint>,
}

#[derive(Debug)]
pub struct SecretSeen {
    pub plan: KeyVaultSecret,
    /// Every version, newest first, each with the fingerprint of the account key its
    /// value holds (`None`: the value holds no account key).
    pub versions: Got<Vec<(SecretVersion, Got<Option<Fingerprint>>)>>,
}

#[derive(Debug)]
pub struct DatabricksSeen {
    pub plan: DatabricksSecret,
    pub scope: Got<Option<SecretScope>>,
    pub secrets: Got<Vec<DbxSecret>>,
}

/// The actions keyflip needs at each scope of `plan`, in report order, each scope once.
pub fn required_permissions(plan: &Plan) -> Vec<(String, Resource, Vec<Action>)> {
    crate::rotation::required_permissions(plan)
        .into_iter()
        .map(|(scope, actions)| {
            let resource = if scope.eq_ignore_ascii_case(plan.storage_account.as_str()) {
                Resource::StorageAccount
            } else if scope
                .to_ascii_lowercase()
                .contains("/providers/microsoft.keyvault/")
            {
                Resource::KeyVault
            } else {
                Resource::MlWorkspace
            };
            (scope, resource, actions)
        })
        .collect()
}

/// Reads everything `doctor` needs to know about `plan`.
pub async fn observe(azure: &Azure, plan: &Plan) -> Observed {
    let tokens = tokens(azure, plan).await;
    let usable = |service: Service| -> Result<(), String> {
        match tokens.iter().find(|t| t.service == service) {
            Some(TokenSeen {
                result: Got::Failed(_),
                ..
            }) => Err(format!("no {} token (see above)", service.label())),
            _ => Ok(()),
        }
    };
    let (arm, vault, dbx) = (
        usable(Service::Arm),
        usable(Service::KeyVault),
        usable(Service::Databricks),
    );
    let permissions = async {
        join_all(
            required_permissions(plan)
                .into_iter()
                .map(|(scope, resource, required)| {
                    let arm = arm.clone();
                    async move {
                        let missing = match arm {
                            Ok(()) => Got::from(azure.missing_permissions(&scope, &required).await),
                            Err(why) => Got::NotTried(why),
                        };
                        PermissionsSeen {
                            scope,
                            resource,
                            required,
                            missing,
                        }
                    }
                }),
        )
        .await
    };
    let storage = storage(azure, plan, arm.clone());
    let workspaces = join_all(
        plan.ml_workspaces
            .iter()
            .map(|ws| consumers::workspace(azure, plan, ws, arm.clone())),
    );
    let secrets = join_all(
        plan.key_vault
            .iter()
            .map(|kv| consumers::secret(azure, kv, vault.clone())),
    );
    let databricks = join_all(
        plan.databricks
            .iter()
            .map(|d| consumers::databricks(azure, d, dbx.clone())),
    );
    let (permissions, (account, keys), workspaces, secrets, databricks) =
        futures::join!(permissions, storage, workspaces, secrets, databricks);
    Observed {
        tokens,
        permissions,
        account,
        keys,
        workspaces,
        secrets,
        databricks,
    }
}

/// The audiences the plan needs, each asked for once, concurrently.
async fn tokens(azure: &Azure, plan: &Plan) -> Vec<TokenSeen> {
    let cloud = azure.cloud();
    let mut wanted = vec![(Service::Arm, Some(cloud.arm_audience.clone()))];
    if !plan.key_vault.is_empty() {
        wanted.push((Service::KeyVault, cloud.key_vault_audience()));
    }
    if !plan.databricks.is_empty() {
        wanted.push((Service::Databricks, Some(DATABRICKS_AUDIENCE.to_owned())));
    }
    join_all(wanted.into_iter().map(|(service, audience)| async move {
        let result = match &audience {
            Some(a) => Got::from(azure.check_token(a).await),
            None => Got::NotTried(
                "the cloud has no Key Vault suffix, so the audience is unknown; set key_vault_suffix in [cloud]".into(),
            ),
        };
        TokenSeen {
            service,
            audience,
            result,
            // After the request: the default chain has made its choice by now.
            credential: azure.credential_in_use(),
        }
    }))
    .await
}

async fn storage(
    azure: &Azure,
    plan: &Plan,
    arm: Result<(), String>,
) -> (Got<StorageAccount>, Got<Vec<KeySeen>>) {
    if let Err(why) = arm {
        return (Got::NotTried(why.clone()), Got::NotTried(why));
    }
    let id = &plan.storage_account;
    let (account, keys) = futures::join!(azure.storage_account(id), azure.storage_keys(id));
    let account = Got::from(account);
    let keys = match keys {
        Err(e) => Got::Failed(e),
        Ok(keys) => {
            let seen = join_all(KeyName::BOTH.map(|name| {
                let key = keys.get(name);
                let account = account.done();
                async move {
                    let probe = match account {
                        Some(a) => Got::from(azure.probe_account_key(a, &key.value).await),
                        None => Got::NotTried("the storage account could not be read".into()),
                    };
                    KeySeen {
                        name,
                        fingerprint: azure.fingerprint(&key.value),
                        created: key
                            .created
                            .or_else(|| account.and_then(|a| a.key_created(name))),
                        probe,
                    }
                }
            }))
            .await;
            Got::Done(seen)
        }
    };
    (account, keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_scope_is_checked_once_with_what_the_plan_needs() {
        let text = r#"storage_account = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/stacct"
[[key_vault]]
vault = "https://kv.vault.azure.net"
secret = "a"
format = "raw-key"
vault_id = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv"
[[key_vault]]
vault = "https://kv.vault.azure.net"
secret = "b"
format = "raw-key"
vault_id = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/KV"
[[key_vault]]
vault = "https://other.vault.azure.net"
secret = "c"
format = "raw-key"
[[ml_workspace]]
workspace = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/w"
resync = false
datastores = ["d"]
"#;
        let plan = crate::plan::parse(text, "t.toml").unwrap_or_else(|e| panic!("{e}"));
        let checks = required_permissions(&plan);
        let summary: Vec<(Resource, usize)> =
            checks.iter().map(|(_, r, a)| (*r, a.len())).collect();
        assert_eq!(
            summary,
            vec![
                (Resource::StorageAccount, 3),
                // The three datastore actions; no resync, so neither listKeys nor
                // resyncKeys (the workspace is not a consumer).
                (Resource::MlWorkspace, 3),
                // One vault, named twice in different case; the third has no vault_id.
                (Resource::KeyVault, 4),
            ]
        );
        assert!(
            !checks[1]
                .2
                .contains(&crate::azure::roles::actions::ML_WORKSPACE_RESYNC_KEYS)
        );
    }
}
