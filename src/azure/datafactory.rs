//! Azure Data Factory linked services through ARM (`Microsoft.DataFactory/factories`,
//! api-version 2018-06-01; spec
//! `specification/datafactory/resource-manager/Microsoft.DataFactory/stable/2018-06-01`):
//! read one (what it stores its storage credential in), and replace that credential.
//!
//! What a read never returns is a `SecureString`'s value: Data Factory masks it as
//! `**********` on every GET, list and PUT answer (Microsoft's `LinkedServices_Get`
//! example; the azure-mgmt-datafactory model: "The string value will be masked with
//! asterisks '*' during Get or List API calls"). So keyflip classifies a linked
//! service by the *form* of its credential ([`Credential`]) and learns what a
//! SecureString holds from its own journal and the resource's `etag`, which changes on
//! every write. A write is a read-modify-write made safe by that etag: GET, replace the
//! credential, PUT with `If-Match` (412 when someone wrote in between, then it starts
//! over from their version). Everything else in the linked service is sent back as
//! read; a linked service holding another SecureString is refused, because sending its
//! mask back would destroy it.

use azure_core::http::Method;
use serde_json::{Map, Value};

use super::arm::{Arm, Body};
use super::http::{Answer, Operation, RETRY_STATUSES, json};
use super::roles::actions;
use super::{Azure, Error};
use crate::resource_id::ResourceId;
use crate::secret::StorageKey;

pub(crate) const API: &str = "2018-06-01";

/// What Data Factory returns instead of a SecureString's value.
pub const MASK: &str = "**********";

/// How many times a write starts over after a 412 (someone wrote in between).
const ATTEMPTS: u32 = 3;

/// The linked service types that can hold a storage account key, and the property
/// that holds it: `accountKey` for Data Lake Storage Gen2 (`AzureBlobFS`), the
/// connection string for the others.
pub(crate) const STORAGE_TYPES: [(&str, &str); 5] = [
    ("AzureBlobStorage", "connectionString"),
    ("AzureBlobFS", "accountKey"),
    ("AzureFileStorage", "connectionString"),
    ("AzureTableStorage", "connectionString"),
    ("AzureStorage", "connectionString"),
];

/// How a linked service stores its storage credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    /// A `SecureString`: its value is never returned.
    SecureString,
    /// A plain string value (allowed by the spec; read back in full).
    Text(StorageKey),
    /// An `AzureKeyVaultSecret` reference: the secret `secret` of the vault behind the
    /// `AzureKeyVault` linked service `store`.
    KeyVault {
        store: String,
        secret: String,
        version: Option<String>,
    },
    /// No account key property: SAS, service principal, managed identity, or a
    /// credential an integration runtime encrypted. The words say which.
    Other(String),
}

/// A linked service as read (masked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkedService {
    pub name: String,
    /// `AzureBlobStorage`, ...
    pub service_type: String,
    pub etag: Option<String>,
    /// The property that holds the key (`connectionString`, `accountKey`), `None` for a
    /// type that holds no storage key.
    pub property: Option<&'static str>,
    pub credential: Credential,
    /// Other SecureStrings in `typeProperties`, by property name.
    pub(crate) other_secrets: Vec<String>,
    /// The whole resource's `properties` as read (secrets masked), for writing back.
    properties: Map<String, Value>,
}

impl LinkedService {
    /// Whether it is one of the [`STORAGE_TYPES`].
    pub(crate) fn is_storage(&self) -> bool {
        self.property.is_some()
    }

    /// A `typeProperties` field that is plain text: an `AzureKeyVault` linked
    /// service's `baseUrl` (its vault), an `AzureBlobFS` one's `url` (its account).
    pub fn text(&self, field: &str) -> Option<&str> {
        self.properties
            .get("typeProperties")
            .and_then(|tp| tp.get(field))
            .and_then(Value::as_str)
    }
}

const GET: Operation = Operation::read("datafactory.linkedService.get", actions::DF_LINKED_READ);
const LIST: Operation = Operation::read("datafactory.linkedService.list", actions::DF_LINKED_READ);
/// Conditional (`If-Match`), so a retry after an answer that was lost cannot overwrite
/// another write: it gets 412 and the write starts over.
const PUT: Operation = Operation {
    name: "datafactory.linkedService.put",
    action: Some(actions::DF_LINKED_WRITE),
    idempotent: true,
    retry_on: RETRY_STATUSES,
};

fn check_type(factory: &ResourceId) -> Result<(), Error> {
    if factory.is_type("Microsoft.DataFactory/factories") {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{factory} is a {}, not a Data Factory (Microsoft.DataFactory/factories)",
            factory.resource_type()
        )))
    }
}

/// The linked service in a `LinkedServiceResource`, or what is wrong with it.
fn classify(resource: &Value) -> Result<LinkedService, String> {
    let name = resource
        .get("name")
        .and_then(Value::as_str)
        .ok_or("it has no name")?
        .to_owned();
    let properties = resource
        .get("properties")
        .and_then(Value::as_object)
        .ok_or("it has no properties")?
        .clone();
    let service_type = properties
        .get("type")
        .and_then(Value::as_str)
        .ok_or("properties.type is missing")?
        .to_owned();
    let etag = resource
        .get("etag")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let property = STORAGE_TYPES
        .iter()
        .find(|(t, _)| t.eq_ignore_ascii_case(&service_type))
        .map(|(_, p)| *p);
    let empty = Map::new();
    let tp = properties
        .get("typeProperties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let other_secrets = tp
        .iter()
        .filter(|(k, v)| Some(k.as_str()) != property && secure(v))
        .map(|(k, _)| k.clone())
        .collect();
    let credential = match property {
        None => Credential::Other(format!("a {service_type} linked service")),
        Some(p) => credential_of(tp, p),
    };
    Ok(LinkedService {
        name,
        service_type,
        etag,
        property,
        credential,
        other_secrets,
        properties,
    })
}

fn secure(v: &Value) -> bool {
    v.get("type").and_then(Value::as_str) == Some("SecureString")
}

/// An `AzureKeyVaultSecret` reference.
fn key_vault_ref(v: &Value) -> Option<Credential> {
    if v.get("type").and_then(Value::as_str) != Some("AzureKeyVaultSecret") {
        return None;
    }
    let text = |pointer: &str| {
        v.pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    Some(Credential::KeyVault {
        store: text("/store/referenceName").unwrap_or_default(),
        secret: text("/secretName").unwrap_or_default(),
        version: text("/secretVersion"),
    })
}

/// How `typeProperties` stores the key that `property` should hold.
fn credential_of(tp: &Map<String, Value>, property: &str) -> Credential {
    let value = tp.get(property);
    if let Some(reference) = value.and_then(key_vault_ref) {
        return reference;
    }
    match value {
        Some(v) if secure(v) => return Credential::SecureString,
        Some(Value::String(s)) if property == "accountKey" || s.contains("AccountKey=") => {
            return Credential::Text(StorageKey::new(s.clone()));
        }
        _ => {}
    }
    // The documented Key Vault form: a connection string without the key, and the key
    // as a Key Vault reference in `accountKey`.
    if let Some(reference) = tp.get("accountKey").and_then(key_vault_ref) {
        return reference;
    }
    if tp.contains_key("encryptedCredential") {
        return Credential::Other(
            "its credential is encrypted by an integration runtime (encryptedCredential), which keyflip can neither read nor replace".into(),
        );
    }
    match value {
        Some(Value::String(_)) => Credential::Other(format!(
            "its {property} holds no account key (a SAS connection string?)"
        )),
        Some(_) => Credential::Other(format!(
            "its {property} is an expression keyflip does not evaluate"
        )),
        None => {
            let how = ["sasUri", "sasToken", "servicePrincipalId", "credential"]
                .iter()
                .find(|k| tp.contains_key(**k))
                .map_or("no account key (a managed identity?)".to_owned(), |k| {
                    format!("{k}, not an account key")
                });
            Credential::Other(format!("it authenticates with {how}"))
        }
    }
}

fn parse(answer: &Answer) -> Result<LinkedService, Error> {
    let v: Value = json(answer, "a linked service")?;
    classify(&v).map_err(|detail| Error::BadResponse {
        call: answer.call.clone().into(),
        status: answer.status,
        detail: format!("the linked service cannot be read: {detail}"),
    })
}

impl Azure {
    /// One linked service of a factory (its secrets masked).
    pub async fn linked_service(
        &self,
        factory: &ResourceId,
        name: &str,
    ) -> Result<LinkedService, Error> {
        check_type(factory)?;
        let target = format!("{factory}/linkedservices/{name}");
        let url = self.arm.url(&target, "", API)?;
        let answer = self
            .arm
            .call(&GET, &target, Method::Get, &url, Body::None)
            .await?;
        parse(&answer)
    }

    /// Every linked service of a factory (its secrets masked).
    pub async fn linked_services(&self, factory: &ResourceId) -> Result<Vec<LinkedService>, Error> {
        check_type(factory)?;
        let target = factory.to_string();
        let url = self.arm.url(&target, "/linkedservices", API)?;
        let items: Vec<Value> = self
            .arm
            .list(&LIST, &target, url, "a page of linked services")
            .await?;
        items
            .iter()
            .map(|v| {
                classify(v).map_err(|detail| Error::BadResponse {
                    call: super::error::Call {
                        operation: LIST.name,
                        target: target.clone(),
                        request_id: None,
                    }
                    .into(),
                    status: 200,
                    detail: format!("a linked service cannot be read: {detail}"),
                })
            })
            .collect()
    }

    /// Makes the linked service's storage credential a SecureString holding `value`
    /// (for `connectionString` a connection string, for `accountKey` the key), keeping
    /// everything else as read. Returns the resource's new etag. Refuses a linked
    /// service whose credential is not an account key it may replace (a Key Vault
    /// reference, another authentication, another SecureString beside it).
    pub async fn set_linked_service_secret(
        &self,
        factory: &ResourceId,
        name: &str,
        value: impl Fn(&str) -> StorageKey,
    ) -> Result<String, Error> {
        self.set_linked_service_secret_from(factory, name, None, value)
            .await
    }

    /// As [`Azure::set_linked_service_secret`], starting from `read`, the linked
    /// service as keyflip just read it, when there is one: the first attempt then
    /// sends no GET. Its etag still guards the PUT, so a change since that read is
    /// refused with 412 and the next attempt reads afresh.
    pub async fn set_linked_service_secret_from(
        &self,
        factory: &ResourceId,
        name: &str,
        mut read: Option<LinkedService>,
        value: impl Fn(&str) -> StorageKey,
    ) -> Result<String, Error> {
        let target = format!("{factory}/linkedservices/{name}");
        let url = self.arm.url(&target, "", API)?;
        for attempt in 1..=ATTEMPTS {
            let current = match read.take() {
                Some(ls) if ls.etag.is_some() => ls,
                _ => self.linked_service(factory, name).await?,
            };
            let property = writable(&current, name)?;
            let etag = current.etag.clone().ok_or_else(|| {
                Error::Invalid(format!(
                    "linked service {name} has no etag, so keyflip cannot write it without risking another writer's change"
                ))
            })?;
            let secret = value(property);
            let mut properties = current.properties;
            if let Some(Value::Object(tp)) = properties.get_mut("typeProperties") {
                tp.insert(
                    property.to_owned(),
                    serde_json::json!({"type": "SecureString", "value": secret.expose()}),
                );
                // The service encrypts the new secret itself and issues its own.
                tp.remove("encryptedCredential");
            }
            drop(secret);
            let body = serde_json::json!({ "properties": properties });
            drop(properties);
            let answer = self
                .arm
                .sender()
                .send(&PUT, &target, || {
                    let mut request = Arm::request(Method::Put, &url, &Body::Json(&body));
                    request.insert_header("if-match", etag.clone());
                    request
                })
                .await;
            drop(body); // holds the key
            match answer {
                Ok(answer) => {
                    let written = parse(&answer)?;
                    tracing::info!(operation = PUT.name, target = %target, attempt, "linked service credential replaced");
                    return written.etag.ok_or_else(|| Error::BadResponse {
                        call: answer.call.clone().into(),
                        status: answer.status,
                        detail: "the answer carries no etag".into(),
                    });
                }
                Err(e) if e.status() == Some(412) && attempt < ATTEMPTS => {
                    tracing::warn!(target = %target, attempt, "the linked service changed since keyflip read it (412); reading it again");
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Invalid(format!(
            "linked service {name} kept changing while keyflip wrote it ({ATTEMPTS} attempts, each refused with 412): another writer is active; retry when it is done"
        )))
    }
}

/// The property keyflip may replace in `ls`, or why it may not.
pub(crate) fn writable(ls: &LinkedService, name: &str) -> Result<&'static str, Error> {
    let refuse = |why: String| Err(Error::Invalid(format!("linked service {name}: {why}")));
    let Some(property) = ls.property else {
        return refuse(format!(
            "it is a {} linked service, which holds no storage account key",
            ls.service_type
        ));
    };
    if !ls.other_secrets.is_empty() {
        return refuse(format!(
            "it holds other SecureStrings ({}) that Data Factory never returns, so writing it back would destroy them",
            ls.other_secrets.join(", ")
        ));
    }
    match &ls.credential {
        Credential::SecureString | Credential::Text(_) => Ok(property),
        Credential::KeyVault { store, secret, .. } => refuse(format!(
            "it reads Key Vault secret {secret} through {store}; rotate that secret instead"
        )),
        Credential::Other(why) => refuse(why.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(tp: Value) -> Value {
        serde_json::json!({"name": "ls", "etag": "e1", "properties": {"type": "AzureBlobStorage", "typeProperties": tp}})
    }

    #[test]
    fn credentials_are_classified_by_form() {
        let ls = classify(&resource(serde_json::json!({
            "connectionString": {"type": "SecureString", "value": MASK},
            "encryptedCredential": "abc"
        })))
        .unwrap();
        assert_eq!(ls.credential, Credential::SecureString);
        assert_eq!(ls.property, Some("connectionString"));
        assert!(writable(&ls, "ls").is_ok());

        let ls = classify(&resource(serde_json::json!({
            "connectionString": {"type": "AzureKeyVaultSecret", "store": {"referenceName": "ls_kv", "type": "LinkedServiceReference"}, "secretName": "s"}
        })))
        .unwrap();
        assert!(
            matches!(&ls.credential, Credential::KeyVault { store, secret, version: None } if store == "ls_kv" && secret == "s")
        );
        assert!(
            writable(&ls, "ls")
                .unwrap_err()
                .to_string()
                .contains("rotate that secret")
        );

        // The documented Key Vault form: a connection string without the key, the key
        // in Key Vault.
        let ls = classify(&resource(serde_json::json!({
            "connectionString": "DefaultEndpointsProtocol=https;AccountName=a;",
            "accountKey": {"type": "AzureKeyVaultSecret", "store": {"referenceName": "kv"}, "secretName": "k"}
        })))
        .unwrap();
        assert!(
            matches!(ls.credential, Credential::KeyVault { .. }),
            "{:?}",
            ls.credential
        );

        let ls = classify(&resource(
            serde_json::json!({"sasUri": {"type": "SecureString", "value": MASK}}),
        ))
        .unwrap();
        assert!(matches!(&ls.credential, Credential::Other(w) if w.contains("sasUri")));
        assert_eq!(ls.other_secrets, ["sasUri"]);

        let ls = classify(&resource(
            serde_json::json!({"serviceEndpoint": "https://a.blob.core.windows.net"}),
        ))
        .unwrap();
        assert!(matches!(&ls.credential, Credential::Other(w) if w.contains("managed identity")));

        let ls = classify(&resource(serde_json::json!({
            "connectionString": {"type": "SecureString", "value": MASK},
            "sasToken": {"type": "SecureString", "value": MASK}
        })))
        .unwrap();
        assert!(
            writable(&ls, "ls")
                .unwrap_err()
                .to_string()
                .contains("sasToken")
        );

        let fs = serde_json::json!({"name": "g2", "properties": {"type": "AzureBlobFS", "typeProperties": {
            "url": "https://a.dfs.core.windows.net/", "accountKey": {"type": "SecureString", "value": MASK}}}});
        let ls = classify(&fs).unwrap();
        assert_eq!(
            (ls.property, &ls.credential),
            (Some("accountKey"), &Credential::SecureString)
        );

        let kv = serde_json::json!({"name": "kv", "properties": {"type": "AzureKeyVault", "typeProperties": {"baseUrl": "https://kv"}}});
        assert!(!classify(&kv).unwrap().is_storage());
    }
}
