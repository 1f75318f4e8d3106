//! Azure ML datastores through ARM: list (every page), get, update the account key in
//! place, and read the stored secret (`listSecrets`).
//!
//! Promises: a datastore is updated in place: GET the resource, replace only
//! `properties.credentials.secrets` with the new key, PUT the whole object back, so
//! fields keyflip does not model survive untouched (they are kept as JSON). It is never
//! deleted and re-created (re-registering a name in a soft-delete vault fails). A
//! [`Datastore`] holds no secret: `GET` does not return one, and any secret field a
//! service returns anyway is stripped on arrival.

use std::fmt;

use azure_core::http::Method;
use serde_json::Value;

use super::arm::Body;
use super::http::{Answer, Operation, json};
use super::ml::{API, check_type};
use super::roles::actions;
use super::{Azure, Error};
use crate::resource_id::ResourceId;
use crate::secret::StorageKey;

/// A datastore as ARM describes it, minus secrets.
#[derive(Clone, PartialEq)]
pub struct Datastore {
    pub name: String,
    /// `AzureBlob`, `AzureFile`, `AzureDataLakeGen2`, ...
    pub(crate) datastore_type: String,
    /// `AccountKey`, `Sas`, `ServicePrincipal`, `None`, ...
    pub(crate) credentials_type: String,
    pub(crate) account_name: Option<String>,
    /// The storage DNS suffix, e.g. `core.windows.net`.
    pub endpoint: Option<String>,
    pub(crate) subscription_id: Option<String>,
    pub resource_group: Option<String>,
    pub(crate) is_default: bool,
    /// The whole resource as returned, for writing it back unchanged.
    resource: Value,
}

impl fmt::Debug for Datastore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Datastore")
            .field("name", &self.name)
            .field("datastore_type", &self.datastore_type)
            .field("credentials_type", &self.credentials_type)
            .field("account_name", &self.account_name)
            .field("is_default", &self.is_default)
            .finish_non_exhaustive()
    }
}

impl Datastore {
    pub(crate) fn uses_account_key(&self) -> bool {
        self.credentials_type.eq_ignore_ascii_case("AccountKey")
    }

    /// Whether this datastore reads from `account`: same account name and, where the
    /// datastore records them, the same subscription, resource group and endpoint
    /// suffix (`storage_suffix` from the cloud, when known).
    pub(crate) fn refers_to(&self, account: &ResourceId, storage_suffix: Option<&str>) -> bool {
        let same = |mine: &Option<String>, theirs: &str| {
            mine.as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(theirs))
        };
        self.account_name
            .as_deref()
            .is_some_and(|n| n.eq_ignore_ascii_case(account.name()))
            && same(&self.subscription_id, account.subscription())
            && same(&self.resource_group, account.resource_group())
            && storage_suffix.is_none_or(|s| same(&self.endpoint, s))
    }

    /// The resource as JSON (no secrets), e.g. for reports.
    pub fn resource(&self) -> &Value {
        &self.resource
    }
}

/// What `listSecrets` returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatastoreSecret {
    AccountKey(StorageKey),
    /// A SAS token (derived from an account key, so also secret).
    Sas(StorageKey),
    /// Another kind of secret (service principal, certificate); not read.
    Other {
        secrets_type: String,
    },
}

fn check_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "'{name}' is not a datastore name: expected letters, digits, '-' and '_', starting with a letter or digit"
        )))
    }
}

const LIST: Operation = Operation::read("ml.datastore.list", actions::ML_DATASTORE_READ);
const GET: Operation = Operation::read("ml.datastore.get", actions::ML_DATASTORE_READ);
const PUT: Operation = Operation::write("ml.datastore.put", actions::ML_DATASTORE_WRITE);
const LIST_SECRETS: Operation = Operation::read(
    "ml.datastore.listSecrets",
    actions::ML_DATASTORE_LIST_SECRETS,
);

impl Azure {
    pub async fn ml_datastores(&self, workspace: &ResourceId) -> Result<Vec<Datastore>, Error> {
        check_type(workspace)?;
        let url = self.arm.url(workspace.as_str(), "/datastores", API)?;
        let items: Vec<Value> = self
            .arm
            .list(&LIST, workspace.as_str(), url, "a page of datastores")
            .await?;
        items
            .into_iter()
            .map(|v| parse(v).map_err(|detail| bad(workspace, 200, detail)))
            .collect()
    }

    /// The workspace's datastores that read `account` with an account key: the ones a
    /// rotation of that account must update.
    pub async fn ml_account_key_datastores(
        &self,
        workspace: &ResourceId,
        account: &ResourceId,
    ) -> Result<Vec<Datastore>, Error> {
        let suffix = self.cloud.storage_suffix.clone();
        Ok(self
            .ml_datastores(workspace)
            .await?
            .into_iter()
            .filter(|d| d.uses_account_key() && d.refers_to(account, suffix.as_deref()))
            .collect())
    }

    pub async fn ml_datastore(
        &self,
        workspace: &ResourceId,
        name: &str,
    ) -> Result<Datastore, Error> {
        check_type(workspace)?;
        check_name(name)?;
        let target = format!("{workspace}/datastores/{name}");
        let url = self.arm.url(&target, "", API)?;
        let answer = self
            .arm
            .call(&GET, &target, Method::Get, &url, Body::None)
            .await?;
        parse_answer(&answer)
    }

    /// Makes the datastore hold `key`: GET, replace the secrets, PUT back in place.
    /// Refuses a datastore whose credentials are not an account key.
    pub async fn set_ml_datastore_key(
        &self,
        workspace: &ResourceId,
        name: &str,
        key: &StorageKey,
    ) -> Result<Datastore, Error> {
        self.set_ml_datastore_key_from(workspace, name, None, key)
            .await
    }

    /// As [`Azure::set_ml_datastore_key`], starting from `listed`, the body a list of
    /// the workspace's datastores just returned, when there is one: the GET is then
    /// skipped (ARM's datastore list returns each datastore whole, as its GET does).
    pub async fn set_ml_datastore_key_from(
        &self,
        workspace: &ResourceId,
        name: &str,
        listed: Option<Datastore>,
        key: &StorageKey,
    ) -> Result<Datastore, Error> {
        let current = match listed {
            Some(listed) if listed.name == name => listed,
            _ => self.ml_datastore(workspace, name).await?,
        };
        if !current.uses_account_key() {
            return Err(Error::Invalid(format!(
                "datastore {name} in {workspace} uses {} credentials, not an account key; keyflip only rotates account-key datastores",
                current.credentials_type
            )));
        }
        let mut body = current.resource;
        // parse() found credentials.credentialsType, so credentials is an object.
        if let Some(credentials) = body
            .pointer_mut("/properties/credentials")
            .and_then(Value::as_object_mut)
        {
            credentials.insert(
                "secrets".into(),
                serde_json::json!({ "secretsType": "AccountKey", "key": key.expose() }),
            );
        }
        let target = format!("{workspace}/datastores/{name}");
        let url = self.arm.url(&target, "", API)?;
        let answer = self
            .arm
            .call(&PUT, &target, Method::Put, &url, Body::Json(&body))
            .await;
        drop(body); // holds the key; release it before anything else happens
        let updated = parse_answer(&answer?)?;
        tracing::info!(operation = PUT.name, target = %target, "datastore key updated");
        Ok(updated)
    }

    /// The secret the datastore stores (for finding out which key it holds).
    pub async fn ml_datastore_secret(
        &self,
        workspace: &ResourceId,
        name: &str,
    ) -> Result<DatastoreSecret, Error> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire {
            secrets_type: String,
            key: Option<String>,
            sas_token: Option<String>,
        }
        check_type(workspace)?;
        check_name(name)?;
        let target = format!("{workspace}/datastores/{name}");
        let url = self.arm.url(&target, "/listSecrets", API)?;
        let answer = self
            .arm
            .call(&LIST_SECRETS, &target, Method::Post, &url, Body::None)
            .await?;
        let wire: Wire = json(&answer, "a datastore secret")?;
        let missing = |field: &str| Error::BadResponse {
            call: answer.call.clone().into(),
            status: answer.status,
            detail: format!(
                "secretsType is {} but {field} is missing",
                wire.secrets_type
            ),
        };
        Ok(match wire.secrets_type.as_str() {
            t if t.eq_ignore_ascii_case("AccountKey") => DatastoreSecret::AccountKey(
                StorageKey::new(wire.key.clone().ok_or_else(|| missing("key"))?),
            ),
            t if t.eq_ignore_ascii_case("Sas") => DatastoreSecret::Sas(StorageKey::new(
                wire.sas_token.clone().ok_or_else(|| missing("sasToken"))?,
            )),
            other => DatastoreSecret::Other {
                secrets_type: other.to_owned(),
            },
        })
    }
}

fn bad(target: &ResourceId, status: u16, detail: String) -> Error {
    Error::BadResponse {
        call: super::Call {
            operation: LIST.name,
            target: target.to_string(),
            request_id: None,
        }
        .into(),
        status,
        detail,
    }
}

fn parse_answer(answer: &Answer) -> Result<Datastore, Error> {
    let value: Value = json(answer, "a datastore")?;
    parse(value).map_err(|detail| Error::BadResponse {
        call: answer.call.clone().into(),
        status: answer.status,
        detail,
    })
}

/// Reads the modelled fields and strips any secret values from the resource.
fn parse(mut resource: Value) -> Result<Datastore, String> {
    if let Some(secrets) = resource
        .pointer_mut("/properties/credentials/secrets")
        .and_then(Value::as_object_mut)
    {
        secrets.retain(|k, _| k == "secretsType");
    }
    let text = |pointer: &str| {
        resource
            .pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let name = text("/name").ok_or("a datastore has no name")?;
    Ok(Datastore {
        datastore_type: text("/properties/datastoreType")
            .ok_or_else(|| format!("datastore {name} has no properties.datastoreType"))?,
        credentials_type: text("/properties/credentials/credentialsType").ok_or_else(|| {
            format!("datastore {name} has no properties.credentials.credentialsType")
        })?,
        account_name: text("/properties/accountName"),
        endpoint: text("/properties/endpoint"),
        subscription_id: text("/properties/subscriptionId"),
        resource_group: text("/properties/resourceGroup"),
        is_default: resource
            .pointer("/properties/isDefault")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        name,
        resource,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Value {
        // From Datastore/get.json (azure-rest-api-specs, 2024-04-01), plus fields the
        // service adds that keyflip does not model, and a key a service should not send.
        serde_json::json!({
            "id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/w/datastores/training_data",
            "name": "training_data",
            "type": "Microsoft.MachineLearningServices/workspaces/datastores",
            "properties": {
                "description": "d", "tags": {"team": "ds"}, "isDefault": false, "properties": null,
                "credentials": {"credentialsType": "AccountKey", "secrets": {"secretsType": "AccountKey", "key": "LEAKED"}},
                "datastoreType": "AzureBlob", "accountName": "stdatasci001", "containerName": "training",
                "endpoint": "core.windows.net", "protocol": "https", "serviceDataAccessAuthIdentity": "None",
                "futureField": {"nested": [1, 2]}
            },
            "systemData": {"createdBy": "x"}
        })
    }

    #[test]
    fn keeps_unknown_fields_and_strips_secrets() {
        let ds = parse(example()).unwrap();
        assert!(ds.uses_account_key());
        assert_eq!(ds.resource()["properties"]["futureField"]["nested"][1], 2);
        assert_eq!(
            ds.resource()["properties"]["credentials"]["secrets"],
            serde_json::json!({"secretsType": "AccountKey"})
        );
        assert!(!format!("{ds:?}").contains("LEAKED"));
    }

    #[test]
    fn matches_its_storage_account() {
        let ds = parse(example()).unwrap();
        let acct = |s: &str| -> ResourceId { s.parse().unwrap() };
        let mine = acct(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/STDATASCI001",
        );
        let other = acct(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/stother",
        );
        assert!(ds.refers_to(&mine, Some("core.windows.net")));
        assert!(ds.refers_to(&mine, None));
        assert!(!ds.refers_to(&mine, Some("core.chinacloudapi.cn")));
        assert!(!ds.refers_to(&other, None));
    }

    #[test]
    fn names_are_checked_before_they_reach_a_url() {
        assert!(check_name("workspaceblobstore").is_ok());
        for bad in ["", "../x", "a/b", "_x", "a?b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
