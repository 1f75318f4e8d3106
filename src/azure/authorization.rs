//! What keyflip's own identity may do at a scope, from the Authorization permissions
//! API (`Microsoft.Authorization/permissions`, api-version 2022-04-01), and which
//! required actions are missing with the built-in role that would grant each.
//!
//! The API answers for the caller (the token's principal), so no principal id is
//! needed; it works at any scope (resource group or resource). Matching rules and the
//! role table are in [`super::roles`].

use serde::Deserialize;

use super::http::Operation;
use super::roles::{Action, BuiltinRole, missing_actions, role_granting};
use super::{Azure, Error};

pub use super::roles::Permission;

const API: &str = "2022-04-01";

/// Listing one's own permissions needs no particular role.
const LIST: Operation = Operation {
    name: "authorization.permissions",
    action: None,
    idempotent: true,
    retry_on: super::http::RETRY_STATUSES,
};

/// A required action nobody granted, with a role that would.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingAction {
    pub action: Action,
    pub role: Option<&'static BuiltinRole>,
}

impl Azure {
    /// keyflip's effective permissions at `scope`: a resource id or a resource group id
    /// (`/subscriptions/{s}/resourceGroups/{g}`). Follows `nextLink`.
    pub async fn permissions(&self, scope: &str) -> Result<Vec<Permission>, Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire {
            #[serde(default)]
            actions: Vec<String>,
            #[serde(default)]
            not_actions: Vec<String>,
            #[serde(default)]
            data_actions: Vec<String>,
            #[serde(default)]
            not_data_actions: Vec<String>,
        }
        if !scope.starts_with("/subscriptions/") {
            return Err(Error::Invalid(format!(
                "'{scope}' is not an Azure scope; expected /subscriptions/<id>/resourceGroups/<group>[/providers/...]"
            )));
        }
        let url = self
            .arm
            .url(scope, "/providers/Microsoft.Authorization/permissions", API)?;
        let wire: Vec<Wire> = self
            .arm
            .list(&LIST, scope, url, "a page of permissions")
            .await?;
        Ok(wire
            .into_iter()
            .map(|w| Permission {
                actions: w.actions,
                not_actions: w.not_actions,
                data_actions: w.data_actions,
                not_data_actions: w.not_data_actions,
            })
            .collect())
    }

    /// The actions in `required` that keyflip's identity lacks at `scope`.
    pub async fn missing_permissions(
        &self,
        scope: &str,
        required: &[Action],
    ) -> Result<Vec<MissingAction>, Error> {
        let granted = self.permissions(scope).await?;
        Ok(missing_actions(&granted, required)
            .into_iter()
            .map(|a| MissingAction {
                role: role_granting(a),
                action: a.clone(),
            })
            .collect())
    }
}
