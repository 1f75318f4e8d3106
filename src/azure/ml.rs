//! Azure Machine Learning workspaces through ARM (`Microsoft.MachineLearningServices`,
//! api-version 2024-04-01): read the workspace, read its cached storage key, and force
//! it to re-read keys (`resyncKeys`, a long-running operation).
//!
//! `listKeys` also returns Application Insights, container registry and notebook
//! secrets; only `userStorageKey` is kept (as a [`StorageKey`]), the rest is dropped
//! unparsed. `userStorageResourceId` is also accepted as `userStorageArmId`, the name
//! newer API versions use.

use std::time::Duration;

use azure_core::http::Method;
use serde::Deserialize;

use super::arm::Body;
use super::http::{Answer, Operation, json};
use super::roles::actions;
use super::{Azure, Error};
use crate::resource_id::ResourceId;
use crate::secret::StorageKey;

pub(crate) const API: &str = "2024-04-01";

/// What keyflip needs to know about an ML workspace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workspace {
    pub id: ResourceId,
    /// The workspace's default storage account: the one `userStorageKey` belongs to.
    pub storage_account: Option<ResourceId>,
    pub key_vault: Option<ResourceId>,
}

/// The workspace's cached copy of its storage account key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkspaceKeys {
    pub user_storage_key: Option<StorageKey>,
    pub user_storage_resource_id: Option<ResourceId>,
}

pub(crate) fn check_type(id: &ResourceId) -> Result<(), Error> {
    if id.is_type("Microsoft.MachineLearningServices/workspaces") {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{id} is a {}, not an Azure ML workspace (Microsoft.MachineLearningServices/workspaces)",
            id.resource_type()
        )))
    }
}

/// A resource id inside an answer, or a [`Error::BadResponse`] naming the field.
pub(crate) fn answer_id(
    answer: &Answer,
    field: &str,
    value: Option<String>,
) -> Result<Option<ResourceId>, Error> {
    match value.filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|e| Error::BadResponse {
            call: answer.call.clone().into(),
            status: answer.status,
            detail: format!("{field}: {e}"),
        }),
    }
}

const GET: Operation = Operation::read("ml.workspace.get", actions::ML_WORKSPACE_READ);
const LIST_KEYS: Operation =
    Operation::read("ml.workspace.listKeys", actions::ML_WORKSPACE_LIST_KEYS);
const RESYNC: Operation =
    Operation::write("ml.workspace.resyncKeys", actions::ML_WORKSPACE_RESYNC_KEYS);

impl Azure {
    pub async fn ml_workspace(&self, id: &ResourceId) -> Result<Workspace, Error> {
        #[derive(Deserialize)]
        struct Wire {
            #[serde(default)]
            properties: Props,
        }
        #[derive(Deserialize, Default)]
        #[serde(rename_all = "camelCase")]
        struct Props {
            storage_account: Option<String>,
            key_vault: Option<String>,
        }
        check_type(id)?;
        let url = self.arm.url(id.as_str(), "", API)?;
        let answer = self
            .arm
            .call(&GET, id.as_str(), Method::Get, &url, Body::None)
            .await?;
        let wire: Wire = json(&answer, "an ML workspace")?;
        Ok(Workspace {
            id: id.clone(),
            storage_account: answer_id(
                &answer,
                "properties.storageAccount",
                wire.properties.storage_account,
            )?,
            key_vault: answer_id(&answer, "properties.keyVault", wire.properties.key_vault)?,
        })
    }

    pub async fn ml_workspace_keys(&self, id: &ResourceId) -> Result<WorkspaceKeys, Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire {
            user_storage_key: Option<String>,
            user_storage_resource_id: Option<String>,
            user_storage_arm_id: Option<String>,
        }
        check_type(id)?;
        let url = self.arm.url(id.as_str(), "/listKeys", API)?;
        let answer = self
            .arm
            .call(&LIST_KEYS, id.as_str(), Method::Post, &url, Body::None)
            .await?;
        let wire: Wire = json(&answer, "the workspace's keys")?;
        Ok(WorkspaceKeys {
            user_storage_key: wire
                .user_storage_key
                .filter(|k| !k.is_empty())
                .map(StorageKey::new),
            user_storage_resource_id: answer_id(
                &answer,
                "userStorageResourceId",
                wire.user_storage_resource_id.or(wire.user_storage_arm_id),
            )?,
        })
    }

    /// Makes the workspace re-read its storage key now rather than within the hour,
    /// and waits up to `deadline` for it to finish.
    pub async fn resync_ml_workspace_keys(
        &self,
        id: &ResourceId,
        deadline: Duration,
    ) -> Result<(), Error> {
        check_type(id)?;
        let url = self.arm.url(id.as_str(), "/resyncKeys", API)?;
        self.arm
            .post_long_running(&RESYNC, id.as_str(), &url, deadline)
            .await?;
        tracing::info!(operation = RESYNC.name, target = %id, "workspace keys resynced");
        Ok(())
    }
}
