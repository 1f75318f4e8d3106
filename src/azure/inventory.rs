//! What a subscription holds, for discovery: the subscriptions the principal can see
//! and, per subscription, its ML workspaces, key vaults and storage accounts, each
//! through its resource provider's `List` by subscription (`GET
//! /subscriptions/{s}/providers/{Namespace}/{type}`), every page.
//!
//! Promises: reads only; each list is one logical call (paged), so a subscription with
//! 500 accounts and 50 vaults costs a handful of calls, not one per resource; ARM
//! lists only what the principal may read, so a list never fails for one resource it
//! may not see. Vault URLs come from the vault's own `vaultUri`, so sovereign clouds,
//! private endpoints and keyflip-twin need no naming rule.

use serde::Deserialize;
use url::Url;

use super::error::Call;
use super::http::Operation;
use super::ml::{self, Workspace};
use super::roles::actions;
use super::{Azure, Error};
use crate::resource_id::ResourceId;

/// A resource id a list returned, or a [`Error::BadResponse`] naming the list.
fn listed_id(op: &Operation, scope: &str, field: &str, text: &str) -> Result<ResourceId, Error> {
    text.parse()
        .map_err(|e| bad(op, scope, format!("{field}: {e}")))
}

fn bad(op: &Operation, scope: &str, detail: String) -> Error {
    Error::BadResponse {
        call: Call {
            operation: op.name,
            target: scope.to_owned(),
            request_id: None,
        }
        .into(),
        status: 200,
        detail,
    }
}

/// An optional resource id field of a listed resource.
fn optional_id(
    op: &Operation,
    scope: &str,
    field: &str,
    text: Option<String>,
) -> Result<Option<ResourceId>, Error> {
    text.filter(|t| !t.is_empty())
        .map(|t| listed_id(op, scope, field, &t))
        .transpose()
}

const SUBSCRIPTIONS_API: &str = "2022-12-01";
const KEY_VAULT_API: &str = "2023-07-01";
const STORAGE_API: &str = "2023-05-01";

const LIST_SUBSCRIPTIONS: Operation =
    Operation::read("arm.subscriptions.list", actions::SUBSCRIPTIONS_READ);
const LIST_WORKSPACES: Operation = Operation::read("ml.workspace.list", actions::ML_WORKSPACE_READ);
const LIST_VAULTS: Operation = Operation::read("keyvault.vault.list", actions::KV_VAULT_READ);
const LIST_ACCOUNTS: Operation = Operation::read("storage.list", actions::STORAGE_READ);
const LIST_SITES: Operation = Operation::read("web.site.list", actions::WEB_SITE_READ);
const LIST_SLOTS: Operation = Operation::read("web.slot.list", actions::WEB_SLOT_READ);
const LIST_FACTORIES: Operation =
    Operation::read("datafactory.factory.list", actions::DF_FACTORY_READ);

/// A key vault as its list names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultSummary {
    pub id: ResourceId,
    /// The data-plane URL, without a trailing slash.
    pub url: Url,
}

impl Azure {
    /// The ids of every subscription the principal holds a role in.
    pub async fn subscriptions(&self) -> Result<Vec<String>, Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire {
            subscription_id: String,
        }
        let url = self.arm.url("/subscriptions", "", SUBSCRIPTIONS_API)?;
        let items: Vec<Wire> = self
            .arm
            .list(
                &LIST_SUBSCRIPTIONS,
                "/subscriptions",
                url,
                "a page of subscriptions",
            )
            .await?;
        Ok(items.into_iter().map(|s| s.subscription_id).collect())
    }

    /// The ML workspaces of a subscription, each with its own storage account.
    pub async fn ml_workspaces_in(&self, subscription: &str) -> Result<Vec<Workspace>, Error> {
        #[derive(Deserialize)]
        struct Wire {
            id: String,
            #[serde(default)]
            properties: Props,
        }
        #[derive(Deserialize, Default)]
        #[serde(rename_all = "camelCase")]
        struct Props {
            storage_account: Option<String>,
            key_vault: Option<String>,
        }
        let scope = format!(
            "/subscriptions/{subscription}/providers/Microsoft.MachineLearningServices/workspaces"
        );
        let url = self.arm.url(&scope, "", ml::API)?;
        let items: Vec<Wire> = self
            .arm
            .list(&LIST_WORKSPACES, &scope, url, "a page of ML workspaces")
            .await?;
        let op = &LIST_WORKSPACES;
        items
            .into_iter()
            .map(|wire| {
                Ok(Workspace {
                    id: listed_id(op, &scope, "id", &wire.id)?,
                    storage_account: optional_id(
                        op,
                        &scope,
                        "properties.storageAccount",
                        wire.properties.storage_account,
                    )?,
                    key_vault: optional_id(
                        op,
                        &scope,
                        "properties.keyVault",
                        wire.properties.key_vault,
                    )?,
                })
            })
            .collect()
    }

    /// The key vaults of a subscription, with their data-plane URLs.
    pub async fn key_vaults_in(&self, subscription: &str) -> Result<Vec<VaultSummary>, Error> {
        #[derive(Deserialize)]
        struct Wire {
            id: String,
            #[serde(default)]
            properties: Props,
        }
        #[derive(Deserialize, Default)]
        #[serde(rename_all = "camelCase")]
        struct Props {
            vault_uri: Option<String>,
        }
        let scope = format!("/subscriptions/{subscription}/providers/Microsoft.KeyVault/vaults");
        let url = self.arm.url(&scope, "", KEY_VAULT_API)?;
        let items: Vec<Wire> = self
            .arm
            .list(&LIST_VAULTS, &scope, url, "a page of key vaults")
            .await?;
        let op = &LIST_VAULTS;
        let mut out = Vec::new();
        for wire in items {
            let id = listed_id(op, &scope, "id", &wire.id)?;
            // A vault without a URI (still being created) cannot be read yet.
            let Some(uri) = wire.properties.vault_uri else {
                continue;
            };
            let url = Url::parse(uri.trim_end_matches('/')).map_err(|e| {
                bad(
                    op,
                    &scope,
                    format!("properties.vaultUri '{uri}' is not a URL: {e}"),
                )
            })?;
            out.push(VaultSummary { id, url });
        }
        Ok(out)
    }

    /// The storage accounts of a subscription.
    pub async fn storage_accounts_in(&self, subscription: &str) -> Result<Vec<ResourceId>, Error> {
        #[derive(Deserialize)]
        struct Wire {
            id: String,
        }
        let scope =
            format!("/subscriptions/{subscription}/providers/Microsoft.Storage/storageAccounts");
        let url = self.arm.url(&scope, "", STORAGE_API)?;
        let items: Vec<Wire> = self
            .arm
            .list(&LIST_ACCOUNTS, &scope, url, "a page of storage accounts")
            .await?;
        items
            .iter()
            .map(|w| listed_id(&LIST_ACCOUNTS, &scope, "id", &w.id))
            .collect()
    }
    /// The App Service sites (web and Function apps) of a subscription
    /// (`WebApps_List`).
    pub async fn web_sites_in(&self, subscription: &str) -> Result<Vec<ResourceId>, Error> {
        let scope = format!("/subscriptions/{subscription}/providers/Microsoft.Web/sites");
        self.ids_in(&LIST_SITES, &scope, super::web::API, "a page of sites")
            .await
    }

    /// The deployment slots of a site, by name (`WebApps_ListSlots`).
    pub async fn web_slots(&self, site: &ResourceId) -> Result<Vec<String>, Error> {
        let scope = format!("{site}/slots");
        let ids = self
            .ids_in(&LIST_SLOTS, &scope, super::web::API, "a page of slots")
            .await?;
        Ok(ids.iter().map(|id| id.name().to_owned()).collect())
    }

    /// The Data Factories of a subscription (`Factories_List`).
    pub async fn data_factories_in(&self, subscription: &str) -> Result<Vec<ResourceId>, Error> {
        let scope =
            format!("/subscriptions/{subscription}/providers/Microsoft.DataFactory/factories");
        self.ids_in(
            &LIST_FACTORIES,
            &scope,
            super::datafactory::API,
            "a page of data factories",
        )
        .await
    }

    /// The ids a list at `scope` returns, every page.
    async fn ids_in(
        &self,
        op: &Operation,
        scope: &str,
        api: &str,
        what: &str,
    ) -> Result<Vec<ResourceId>, Error> {
        #[derive(Deserialize)]
        struct Wire {
            id: String,
        }
        let url = self.arm.url(scope, "", api)?;
        let items: Vec<Wire> = self.arm.list(op, scope, url, what).await?;
        items
            .iter()
            .map(|w| listed_id(op, scope, "id", &w.id))
            .collect()
    }
}
