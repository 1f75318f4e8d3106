//! Reading the consumers of a plan: an ML workspace (its cached key when resynced,
//! its datastores and the key each key-based one stores), a Key Vault secret (every
//! version, the newest enabled ones fingerprinted) and a Databricks secret (its scope
//! and when the secret last changed). Values are fingerprinted as they arrive.

use futures::StreamExt as _;
use url::Url;

use super::{
    CONCURRENCY, DatabricksSeen, DatastoreSeen, Got, SecretSeen, VERSIONS_READ, WorkspaceSeen,
};
use crate::azure::databricks::{ScopeBackend, SecretScope};
use crate::azure::datastore::DatastoreSecret;
use crate::azure::{Azure, Error};
use crate::plan::{DatabricksSecret, Datastores, KeyVaultSecret, MlWorkspace, Plan};
use crate::rotation::account_key;

pub(super) async fn workspace(
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

pub(super) async fn secret(
    azure: &Azure,
    kv: &KeyVaultSecret,
    vault: Result<(), String>,
) -> SecretSeen {
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

pub(super) async fn databricks(
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
