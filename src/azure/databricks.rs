//! Azure Databricks Secrets API 2.0: list scopes (with their backend), put a secret
//! into a Databricks-backed scope, list a scope's secrets (to read
//! `last_updated_timestamp`; values cannot be read back outside a cluster).
//!
//! Requests carry an Entra ID token for the AzureDatabricks application
//! ([`DATABRICKS_AUDIENCE`]). Databricks permissions are
//! scope ACLs, not Azure RBAC, so a 403 says which ACL to grant instead of a role.
//! Key Vault-backed scopes cannot be written here (Databricks answers `BAD_REQUEST`):
//! rotate their vault secret instead.

use azure_core::http::{Method, Request};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use url::Url;

use super::http::{Operation, json};
use super::{Azure, Error};
use crate::secret::StorageKey;

/// The Entra ID application id of Azure Databricks: tokens for its REST API carry this
/// audience in every cloud.
pub const DATABRICKS_AUDIENCE: &str = "2ff814a6-3304-4ab8-85cb-cd0e6f879c1d";

/// Where a scope keeps its secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScopeBackend {
    Databricks,
    AzureKeyVault {
        /// The vault's ARM resource id and URL, as Databricks reports them.
        resource_id: Option<String>,
        dns_name: Option<String>,
    },
    Other(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretScope {
    pub name: String,
    pub backend: ScopeBackend,
}

/// A secret's key (its name in the scope) and when it last changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabricksSecret {
    pub key: String,
    pub last_updated: Option<DateTime<Utc>>,
}

const LIST_SCOPES: Operation = Operation {
    name: "databricks.scopes.list",
    action: None,
    idempotent: true,
    retry_on: super::http::RETRY_STATUSES,
};
const PUT: Operation = Operation {
    name: "databricks.secrets.put",
    action: None,
    idempotent: true,
    retry_on: super::http::RETRY_STATUSES,
};
const LIST_SECRETS: Operation = Operation {
    name: "databricks.secrets.list",
    action: None,
    idempotent: true,
    retry_on: super::http::RETRY_STATUSES,
};

fn api_url(workspace: &Url, path: &str) -> Result<Url, Error> {
    if workspace.scheme() != "https" || workspace.query().is_some() {
        return Err(Error::Invalid(format!(
            "'{workspace}' is not a Databricks workspace URL: expected https://adb-<id>.<n>.azuredatabricks.net"
        )));
    }
    let text = format!(
        "{}/api/2.0/secrets/{path}",
        workspace.as_str().trim_end_matches('/')
    );
    Url::parse(&text).map_err(|e| Error::Invalid(format!("'{text}' is not a URL: {e}")))
}

fn check_key(what: &str, value: &str) -> Result<(), Error> {
    if !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "'{value}' is not a Databricks secret {what}: expected 1-128 letters, digits, '-', '_' and '.'"
        )))
    }
}

/// Replaces a bare 403 with the scope ACL that would fix it.
fn explain_denial(error: Error, scope: Option<&str>, needs: &str) -> Error {
    match error {
        Error::Forbidden { call, mut denial } => {
            denial.action = None;
            denial.role = None;
            denial.advice = Some(match scope {
                Some(scope) => format!(
                    "grant keyflip's service principal {needs} on the secret scope '{scope}' (databricks secrets put-acl {scope} <application-id> {needs}), and make sure it is a user of the workspace"
                ),
                None => "make keyflip's service principal a user of the workspace".to_owned(),
            });
            Error::Forbidden { call, denial }
        }
        other => other,
    }
}

impl Azure {
    pub async fn databricks_scopes(&self, workspace: &Url) -> Result<Vec<SecretScope>, Error> {
        #[derive(Deserialize)]
        struct Wire {
            #[serde(default)]
            scopes: Vec<WireScope>,
        }
        #[derive(Deserialize)]
        struct WireScope {
            name: String,
            backend_type: Option<String>,
            keyvault_metadata: Option<WireVault>,
        }
        #[derive(Deserialize)]
        struct WireVault {
            resource_id: Option<String>,
            dns_name: Option<String>,
        }
        let url = api_url(workspace, "scopes/list")?;
        let answer = self
            .databricks(workspace)?
            .send(&LIST_SCOPES, workspace.as_str(), || get(&url))
            .await
            .map_err(|e| explain_denial(e, None, "READ"))?;
        let wire: Wire = json(&answer, "a list of secret scopes")?;
        Ok(wire
            .scopes
            .into_iter()
            .map(|s| SecretScope {
                backend: match s.backend_type.as_deref().unwrap_or("DATABRICKS") {
                    "DATABRICKS" => ScopeBackend::Databricks,
                    "AZURE_KEYVAULT" => ScopeBackend::AzureKeyVault {
                        resource_id: s
                            .keyvault_metadata
                            .as_ref()
                            .and_then(|m| m.resource_id.clone()),
                        dns_name: s.keyvault_metadata.and_then(|m| m.dns_name),
                    },
                    other => ScopeBackend::Other(other.to_owned()),
                },
                name: s.name,
            })
            .collect())
    }

    /// Writes (or overwrites) `key` in a Databricks-backed `scope`.
    pub async fn databricks_put_secret(
        &self,
        workspace: &Url,
        scope: &str,
        key: &str,
        value: &StorageKey,
    ) -> Result<(), Error> {
        check_key("scope", scope)?;
        check_key("key", key)?;
        let url = api_url(workspace, "put")?;
        let target = format!("{workspace} scope {scope} key {key}");
        self.databricks(workspace)?
            .send(&PUT, &target, || {
                let body = serde_json::json!({
                    "scope": scope,
                    "key": key,
                    "string_value": value.expose(),
                });
                let mut request = Request::new(url.clone(), Method::Post);
                request.insert_header("accept", "application/json");
                request.insert_header("content-type", "application/json");
                request.set_body(body.to_string());
                request
            })
            .await
            .map_err(|e| explain_denial(e, Some(scope), "WRITE"))?;
        tracing::info!(operation = PUT.name, target = %target, "databricks secret written");
        Ok(())
    }

    /// The secrets in `scope`, with their last-update times.
    pub async fn databricks_secrets(
        &self,
        workspace: &Url,
        scope: &str,
    ) -> Result<Vec<DatabricksSecret>, Error> {
        #[derive(Deserialize)]
        struct Wire {
            #[serde(default)]
            secrets: Vec<WireSecret>,
        }
        #[derive(Deserialize)]
        struct WireSecret {
            key: String,
            /// Milliseconds since the epoch; Databricks' docs show it quoted, the SDK
            /// models it as a number: both are accepted.
            last_updated_timestamp: Option<serde_json::Value>,
        }
        check_key("scope", scope)?;
        let mut url = api_url(workspace, "list")?;
        url.query_pairs_mut().append_pair("scope", scope);
        let target = format!("{workspace} scope {scope}");
        let answer = self
            .databricks(workspace)?
            .send(&LIST_SECRETS, &target, || get(&url))
            .await
            .map_err(|e| explain_denial(e, Some(scope), "READ"))?;
        let wire: Wire = json(&answer, "a list of secrets")?;
        wire.secrets
            .into_iter()
            .map(|s| {
                let last_updated = match &s.last_updated_timestamp {
                    None | Some(serde_json::Value::Null) => None,
                    Some(v) => Some(millis(v).ok_or_else(|| Error::BadResponse {
                        call: answer.call.clone().into(),
                        status: answer.status,
                        detail: format!("last_updated_timestamp of secret '{}' is not milliseconds since the epoch", s.key),
                    })?),
                };
                Ok(DatabricksSecret { key: s.key, last_updated })
            })
            .collect()
    }
}

fn get(url: &Url) -> Request {
    let mut request = Request::new(url.clone(), Method::Get);
    request.insert_header("accept", "application/json");
    request
}

fn millis(v: &serde_json::Value) -> Option<DateTime<Utc>> {
    let ms = match v {
        serde_json::Value::Number(n) => n.as_i64()?,
        serde_json::Value::String(s) => s.parse().ok()?,
        _ => return None,
    };
    DateTime::from_timestamp_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_may_be_numbers_or_strings() {
        let t = DateTime::from_timestamp_millis(1_520_467_595_000).unwrap();
        assert_eq!(millis(&serde_json::json!(1_520_467_595_000i64)), Some(t));
        assert_eq!(millis(&serde_json::json!("1520467595000")), Some(t));
        assert_eq!(millis(&serde_json::json!("yesterday")), None);
    }

    /// Each workspace has its own sender, whose token goes to that workspace only: a
    /// request built for another origin (a paging link, say) never leaves.
    #[tokio::test]
    async fn a_workspace_sender_sends_only_to_its_workspace() {
        use super::super::mock::{Mock, ok};
        let mock = Mock::new(vec![ok(r#"{"scopes":[]}"#), ok("{}")]);
        let http: std::sync::Arc<dyn azure_core::http::HttpClient> = mock.clone();
        let azure = Azure::for_tests(http, super::super::AzureOptions::default());
        let a = Url::parse("https://adb-1.1.azuredatabricks.net/").unwrap();
        let b = Url::parse("https://adb-2.2.azuredatabricks.net/").unwrap();
        azure.databricks_scopes(&a).await.unwrap();
        let err = azure
            .databricks(&a)
            .unwrap()
            .send(&LIST_SCOPES, "t", || {
                get(&api_url(&b, "scopes/list").unwrap())
            })
            .await
            .err()
            .unwrap();
        assert!(matches!(err, Error::ForeignOrigin { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("https://adb-2.2.azuredatabricks.net"),
            "{err}"
        );
        let sent = mock.sent();
        assert_eq!(sent.len(), 1);
        assert!(sent[0].url.starts_with("https://adb-1.1."), "{sent:?}");
        assert_eq!(
            sent[0].header("authorization"),
            Some("Bearer unit-test-token")
        );
    }

    #[test]
    fn urls_keep_a_path_prefix() {
        let ws = Url::parse("https://127.0.0.1:4443/databricks/dbw-datasci/").unwrap();
        assert_eq!(
            api_url(&ws, "scopes/list").unwrap().as_str(),
            "https://127.0.0.1:4443/databricks/dbw-datasci/api/2.0/secrets/scopes/list"
        );
        assert!(api_url(&Url::parse("http://x").unwrap(), "put").is_err());
        assert!(check_key("scope", "kv-datasci").is_ok());
        assert!(check_key("scope", "a b").is_err());
    }
}
