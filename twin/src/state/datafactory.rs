//! Data Factories and their linked services as the twin holds them.
//!
//! A linked service keeps its `properties` as last written, secrets included; what a
//! client reads back is masked (`SecureString` values become `**********`, as in
//! Microsoft's examples and SDK recordings). Every write gives the resource a new
//! `etag` in the service's format (`xxxxxxxx-0000-0000-0000-{unix seconds, hex}0000`,
//! as observed in Microsoft's examples; the time part is not a documented contract).

use std::collections::BTreeMap;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::web::{BuildCtx, Place};
use crate::clock::azure_time;
use crate::world::{DataFactorySpec, LinkedServiceSpec};

/// What a `SecureString` reads back as.
pub(crate) const MASK: &str = "**********";

#[derive(Debug, Clone)]
pub(crate) struct LinkedService {
    pub name: String,
    /// `properties` as last written (secrets in full, no `encryptedCredential`).
    pub properties: Map<String, Value>,
    pub etag: String,
    pub modified: DateTime<Utc>,
    /// Set when a `SecureString` was written: the `encryptedCredential` clients see.
    pub encrypted_credential: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Factory {
    pub name: String,
    pub id: String,
    pub subscription: String,
    pub group: String,
    pub location: String,
    pub created: DateTime<Utc>,
    pub etag: String,
    /// Lower-case name → linked service.
    pub linked_services: BTreeMap<String, LinkedService>,
    /// The counter part of the next etag.
    pub etag_seq: u32,
}

impl Factory {
    /// A fresh etag for a write at `now`.
    pub fn next_etag(&mut self, now: DateTime<Utc>) -> String {
        self.etag_seq = self.etag_seq.wrapping_add(1);
        etag(self.etag_seq, now)
    }

    /// Stores a write: new etag, modification time and credential id.
    pub fn write(&mut self, name: &str, properties: Map<String, Value>, now: DateTime<Utc>) {
        let etag = self.next_etag(now);
        let encrypted_credential =
            has_secure_string(&Value::Object(properties.clone())).then(|| credential(&self.name));
        self.linked_services.insert(
            name.to_ascii_lowercase(),
            LinkedService {
                name: name.to_string(),
                properties,
                etag,
                modified: now,
                encrypted_credential,
            },
        );
    }
}

fn etag(seq: u32, now: DateTime<Utc>) -> String {
    let secs = u32::try_from(now.timestamp().max(0)).unwrap_or(u32::MAX);
    format!("{seq:08x}-0000-0000-0000-{secs:08x}0000")
}

/// An `encryptedCredential` shaped like the service's (base64 of a small JSON
/// document naming a credential id); a new id on every write of a secret.
fn credential(factory: &str) -> String {
    let doc = format!(
        "{{\r\n  \"Version\": \"2017-11-30\",\r\n  \"ProtectionMode\": \"Key\",\r\n  \"SecretContentType\": \"Plaintext\",\r\n  \"CredentialId\": \"{}_{}\"\r\n}}",
        factory.to_ascii_uppercase(),
        uuid::Uuid::new_v4()
    );
    base64::engine::general_purpose::STANDARD.encode(doc)
}

fn has_secure_string(v: &Value) -> bool {
    match v {
        Value::Object(m) => {
            m.get("type").and_then(Value::as_str) == Some("SecureString")
                || m.values().any(has_secure_string)
        }
        Value::Array(a) => a.iter().any(has_secure_string),
        _ => false,
    }
}

/// `v` with every `SecureString` value replaced by the mask.
pub(crate) fn masked(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let secure = m.get("type").and_then(Value::as_str) == Some("SecureString");
            Value::Object(
                m.iter()
                    .map(|(k, x)| {
                        if secure && k == "value" {
                            (k.clone(), json!(MASK))
                        } else {
                            (k.clone(), masked(x))
                        }
                    })
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(masked).collect()),
        other => other.clone(),
    }
}

/// The LinkedServiceResource a client reads.
pub(crate) fn resource_json(f: &Factory, ls: &LinkedService) -> Value {
    let mut props = masked(&Value::Object(ls.properties.clone()));
    if let (Some(cred), Some(tp)) = (
        &ls.encrypted_credential,
        props
            .get_mut("typeProperties")
            .and_then(Value::as_object_mut),
    ) {
        tp.insert("encryptedCredential".into(), json!(cred));
    }
    json!({
        "id": format!("{}/linkedservices/{}", f.id, ls.name),
        "name": ls.name,
        "type": "Microsoft.DataFactory/factories/linkedservices",
        "properties": props,
        "etag": ls.etag,
    })
}

/// The `properties` of a world's linked service.
fn properties(ls: &LinkedServiceSpec, cx: &BuildCtx<'_>) -> Result<Map<String, Value>, String> {
    let ty = ls.service_type.get_ref().as_str();
    let mut tp = Map::new();
    if let Some(v) = &ls.key_vault {
        tp.insert("baseUrl".into(), json!((cx.vault_url)(v.get_ref())));
    } else {
        let secret = match (&ls.value, &ls.value_from, &ls.key_vault_secret) {
            (Some(v), _, _) => json!({"type": "SecureString", "value": v}),
            (_, Some(f), _) => json!({"type": "SecureString", "value": (cx.value_of)(f)?}),
            (_, _, Some(r)) => {
                let mut s = json!({
                    "type": "AzureKeyVaultSecret",
                    "store": {"referenceName": r.linked_service.get_ref(), "type": "LinkedServiceReference"},
                    "secretName": r.secret,
                });
                if let (Some(v), Some(o)) = (&r.version, s.as_object_mut()) {
                    o.insert("secretVersion".into(), json!(v));
                }
                s
            }
            _ => {
                return Err(format!(
                    "linked service {} has no secret",
                    ls.name.get_ref()
                ));
            }
        };
        if let Some(a) = &ls.account {
            tp.insert(
                "url".into(),
                json!(format!("https://{}.dfs.core.windows.net/", a.get_ref())),
            );
        }
        tp.insert(ls.secret_property().into(), secret);
    }
    let mut p = Map::new();
    p.insert("type".into(), json!(ty));
    p.insert("annotations".into(), json!([]));
    if let Some(d) = &ls.description {
        p.insert("description".into(), json!(d));
    }
    p.insert("typeProperties".into(), Value::Object(tp));
    Ok(p)
}

/// Builds one of the world's factories.
pub(crate) fn build(
    spec: &DataFactorySpec,
    place: Place,
    cx: &BuildCtx<'_>,
) -> Result<Factory, String> {
    let seed = u32::from_str_radix(&crate::entropy::hex32()[..6], 16).unwrap_or(0);
    let mut f = Factory {
        name: spec.name.get_ref().clone(),
        id: place.id,
        subscription: place.subscription,
        group: place.group,
        location: place.location,
        created: cx.now,
        etag: etag(seed, cx.now),
        linked_services: BTreeMap::new(),
        etag_seq: seed.wrapping_add(1),
    };
    for ls in &spec.linked_services {
        let p = properties(ls, cx)?;
        f.write(ls.name.get_ref(), p, cx.now);
    }
    Ok(f)
}

/// The state snapshot of one factory (secrets in full: the twin's fake keys).
pub(crate) fn snapshot(f: &Factory) -> Value {
    let ls: Map<String, Value> = f
        .linked_services
        .values()
        .map(|l| {
            (
                l.name.clone(),
                json!({
                    "type": l.properties.get("type"),
                    "properties": l.properties,
                    "etag": l.etag,
                    "lastModified": azure_time(l.modified),
                }),
            )
        })
        .collect();
    json!({"id": f.id, "linkedServices": ls})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_strings_are_masked_wherever_they_are() {
        let v = json!({"type": "AzureBlobStorage", "typeProperties": {
            "connectionString": {"type": "SecureString", "value": "AccountKey=SECRET"},
            "sasToken": {"type": "AzureKeyVaultSecret", "secretName": "kept", "store": {"referenceName": "kv", "type": "LinkedServiceReference"}},
            "nested": [{"type": "SecureString", "value": "ALSO"}],
        }});
        let m = masked(&v);
        let text = m.to_string();
        assert!(!text.contains("SECRET") && !text.contains("ALSO"), "{text}");
        assert_eq!(m["typeProperties"]["connectionString"]["value"], MASK);
        assert_eq!(m["typeProperties"]["sasToken"]["secretName"], "kept");
        assert!(has_secure_string(&v));
        assert!(!has_secure_string(&m["typeProperties"]["sasToken"]));
    }

    #[test]
    fn etags_change_and_carry_the_write_time() {
        let t = DateTime::parse_from_rfc3339("2018-06-16T00:37:35Z")
            .expect("time")
            .with_timezone(&Utc);
        // Microsoft's LinkedServices_Create example: etag ...-5b245bcf0000 at that time.
        assert_eq!(etag(0x0a0062d4, t), "0a0062d4-0000-0000-0000-5b245bcf0000");
        assert_ne!(etag(1, t), etag(2, t));
    }
}
