//! The reading half of `doctor`: everything it asks Azure about one plan, gathered
//! into an [`Observed`] value that [`super::assess`] judges without further IO.
//!
//! Promises: only reads. Every call here is a GET or one of the read-only POSTs
//! (`listKeys`, `listSecrets`, the permissions API's GET, Blob Get Account
//! Information); nothing is written, regenerated, resynced or disabled. Independent
//! reads run concurrently; a read whose token could not be acquired is not sent. Key
//! values are fingerprinted where they are read and dropped at once.

use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use futures::future::join_all;
use url::Url;

use super::report::{Resource, Service};
use crate::azure::authorization::MissingAction;
use crate::azure::databricks::{DatabricksSecret as DbxSecret, ScopeBackend, SecretScope};
use crate::azure::datastore::DatastoreSecret;
use crate::azure::keyvault::SecretVersion;
use crate::azure::ml::Workspace;
use crate::azure::probe::Probe;
use crate::azure::roles::{Action, actions};
use crate::azure::storage::StorageAccount;
use crate::azure::{Azure, DATABRICKS_AUDIENCE, Error};
use crate::key::KeyName;
use crate::plan::{DatabricksSecret, Datastores, KeyVaultSecret, MlWorkspace, Plan};
use crate::secret::{Fingerprint, StorageKey};

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
    let mut out = vec![(
        plan.storage_account.to_string(),
        Resource::StorageAccount,
        vec![
            actions::STORAGE_READ,
            actions::STORAGE_LIST_KEYS,
            actions::STORAGE_REGENERATE_KEY,
        ],
    )];
    let mut seen = std::collections::HashSet::new();
    seen.insert(plan.storage_account.as_str().to_ascii_lowercase());
    for ws in &plan.ml_workspaces {
        if !seen.insert(ws.workspace.as_str().to_ascii_lowercase()) {
            continue;
        }
        let mut needed = vec![actions::ML_WORKSPACE_READ, actions::ML_WORKSPACE_LIST_KEYS];
        if plan.ml_workspaces.iter().any(|w| {
            w.resync
                && w.workspace
                    .as_str()
                    .eq_ignore_ascii_case(ws.workspace.as_str())
        }) {
            needed.push(actions::ML_WORKSPACE_RESYNC_KEYS);
        }
        needed.extend([
            actions::ML_DATASTORE_READ,
            actions::ML_DATASTORE_WRITE,
            actions::ML_DATASTORE_LIST_SECRETS,
        ]);
        out.push((ws.workspace.to_string(), Resource::MlWorkspace, needed));
    }
    for kv in &plan.key_vault {
        if let Some(id) = &kv.vault_id
            && seen.insert(id.as_str().to_ascii_lowercase())
        {
            out.push((
                id.to_string(),
                Resource::KeyVault,
                vec![
                    actions::KV_SECRET_GET,
                    actions::KV_SECRET_SET,
                    actions::KV_SECRET_READ_METADATA,
                    actions::KV_SECRET_UPDATE,
                ],
            ));
        }
    }
    out
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
            .map(|ws| workspace(azure, plan, ws, arm.clone())),
    );
    let secrets = join_all(
        plan.key_vault
            .iter()
            .map(|kv| secret(azure, kv, vault.clone())),
    );
    let databricks = join_all(
        plan.databricks
            .iter()
            .map(|d| databricks(azure, d, dbx.clone())),
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

async fn workspace(
    azure: &Azure,
    plan: &Plan,
    ws: &MlWorkspace,
    arm: Result<(), String>,
) -> WorkspaceSeen {
    if let Err(why) = arm {
        return WorkspaceSeen {
            plan: ws.clone(),
            workspace: Got::NotTried(why.clone()),
            cached_key: Got::NotTried(why.clone()),
            datastores: Got::NotTried(why),
        };
    }
    let id = &ws.workspace;
    let (workspace, cached_key) = if ws.resync {
        let (w, k) = futures::join!(azure.ml_workspace(id), azure.ml_workspace_keys(id));
        let k = k.map(|k| k.user_storage_key.as_ref().map(|v| azure.fingerprint(v)));
        (Got::from(w), Got::from(k))
    } else {
        let why = "resync = false";
        (Got::NotTried(why.into()), Got::NotTried(why.into()))
    };
    let datastores = async {
        let all = match azure.ml_datastores(id).await {
            Ok(all) => all,
            Err(e) => return Got::Failed(e),
        };
        let suffix = azure.cloud().storage_suffix.clone();
        let named = match &ws.datastores {
            Datastores::Named(names) => names.clone(),
            Datastores::Discover => Vec::new(),
        };
        let seen = futures::stream::iter(all.into_iter().map(|datastore| {
            let on_account = datastore.uses_account_key()
                && datastore.refers_to(&plan.storage_account, suffix.as_deref());
            let is_named = named
                .iter()
                .any(|n| n.eq_ignore_ascii_case(&datastore.name));
            async move {
                let key = if on_account || (is_named && datastore.uses_account_key()) {
                    match azure.ml_datastore_secret(id, &datastore.name).await {
                        Ok(DatastoreSecret::AccountKey(k)) => Got::Done(azure.fingerprint(&k)),
                        Ok(DatastoreSecret::Sas(_)) => {
                            Got::NotTried("it stores a SAS token".into())
                        }
                        Ok(DatastoreSecret::Other { secrets_type }) => {
                            Got::NotTried(format!("it stores a {secrets_type} secret"))
                        }
                        Err(e) => Got::Failed(e),
                    }
                } else {
                    Got::NotTried("not a key-based datastore on this account".into())
                };
                DatastoreSeen {
                    uses_account_key: datastore.uses_account_key(),
                    name: datastore.name,
                    datastore_type: datastore.datastore_type,
                    credentials_type: datastore.credentials_type,
                    account_name: datastore.account_name,
                    on_account,
                    key,
                }
            }
        }))
        .buffered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
        Got::Done(seen)
    };
    WorkspaceSeen {
        plan: ws.clone(),
        workspace,
        cached_key,
        datastores: datastores.await,
    }
}

async fn secret(azure: &Azure, kv: &KeyVaultSecret, vault: Result<(), String>) -> SecretSeen {
    let seen = |versions| SecretSeen {
        plan: kv.clone(),
        versions,
    };
    if let Err(why) = vault {
        return seen(Got::NotTried(why));
    }
    let url = match Url::parse(&kv.vault) {
        Ok(url) => url,
        Err(e) => {
            return seen(Got::Failed(Error::Invalid(format!(
                "'{}' is not a vault URL: {e}",
                kv.vault
            ))));
        }
    };
    let mut versions = match azure.secret_versions(&url, &kv.secret).await {
        Ok(v) => v,
        Err(e) => return seen(Got::Failed(e)),
    };
    versions.reverse(); // newest first
    let mut enabled_read = 0;
    let plan = versions.into_iter().map(|v| {
        let read = v.enabled && enabled_read < VERSIONS_READ;
        enabled_read += usize::from(read);
        (v, read)
    });
    let url = &url;
    let out = futures::stream::iter(plan.map(|(version, read)| async move {
        let key = if !version.enabled {
            Got::NotTried("disabled: its value cannot be read".into())
        } else if !read {
            Got::NotTried(format!(
                "older than the {VERSIONS_READ} newest enabled versions, not read"
            ))
        } else {
            match azure
                .get_secret(url, &kv.secret, Some(&version.version))
                .await
            {
                Ok(secret) => Got::Done(account_key(&secret.value).map(|k| azure.fingerprint(&k))),
                Err(e) => Got::Failed(e),
            }
        };
        (version, key)
    }))
    .buffered(CONCURRENCY)
    .collect::<Vec<_>>()
    .await;
    seen(Got::Done(out))
}

async fn databricks(
    azure: &Azure,
    d: &DatabricksSecret,
    dbx: Result<(), String>,
) -> DatabricksSeen {
    let seen = |scope, secrets| DatabricksSeen {
        plan: d.clone(),
        scope,
        secrets,
    };
    if let Err(why) = dbx {
        return seen(Got::NotTried(why.clone()), Got::NotTried(why));
    }
    let url = match Url::parse(&d.workspace_url) {
        Ok(url) => url,
        Err(e) => {
            let e = Error::Invalid(format!(
                "'{}' is not a Databricks workspace URL: {e}",
                d.workspace_url
            ));
            return seen(Got::Failed(e), Got::NotTried("see the scope".into()));
        }
    };
    let scope = match azure.databricks_scopes(&url).await {
        Ok(scopes) => scopes.into_iter().find(|s| s.name == d.scope),
        Err(e) => {
            return seen(
                Got::Failed(e),
                Got::NotTried("the scopes could not be listed".into()),
            );
        }
    };
    let secrets = match &scope {
        Some(SecretScope {
            backend: ScopeBackend::Databricks,
            ..
        }) => Got::from(azure.databricks_secrets(&url, &d.scope).await),
        Some(_) => Got::NotTried("the scope is not Databricks-backed".into()),
        None => Got::NotTried("the scope does not exist".into()),
    };
    seen(Got::Done(scope), secrets)
}

/// The account key inside a stored value: the value itself for a raw key, the
/// `AccountKey=` part of a connection string (whatever format the plan names, so a
/// secret stored in the other format is still recognised). `None` for a connection
/// string without an account key (a SAS connection string).
pub(super) fn account_key(value: &StorageKey) -> Option<StorageKey> {
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

    #[test]
    fn account_keys_come_out_of_raw_values_and_connection_strings() {
        let raw = StorageKey::new(format!("{KEY}\n"));
        assert_eq!(account_key(&raw), Some(StorageKey::new(KEY.into())));
        let conn = StorageKey::new(format!(
            "DefaultEndpointsProtocol=https;AccountName=st;AccountKey={KEY};BlobEndpoint=https://127.0.0.1:1/st/"
        ));
        assert_eq!(account_key(&conn), Some(StorageKey::new(KEY.into())));
        let sas = StorageKey::new(
            "BlobEndpoint=https://st.blob.core.windows.net/;SharedAccessSignature=sv=2022".into(),
        );
        assert_eq!(account_key(&sas), None);
    }

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
                // read, listKeys and the three datastore actions; no resync.
                (Resource::MlWorkspace, 5),
                // One vault, named twice in different case; the third has no vault_id.
                (Resource::KeyVault, 4),
            ]
        );
        assert!(!checks[1].2.contains(&actions::ML_WORKSPACE_RESYNC_KEYS));
    }
}
