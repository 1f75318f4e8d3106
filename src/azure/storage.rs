//! Storage accounts through ARM (`Microsoft.Storage`, api-version 2024-01-01): read the
//! account, list keys, regenerate one key, patch `allowSharedKeyAccess`/`keyPolicy`.
//!
//! `regenerateKey` is the one call keyflip cannot take back, so it is sent exactly once
//! and never retried here. When its outcome is ambiguous (no answer, a reset, a 5xx, an
//! answer that does not parse) keyflip reads `listKeys` and the account's
//! `keyCreationTime` and compares them with what the caller observed before, then
//! answers with a [`RegenerateOutcome`]: it happened (with the new keys), it did not,
//! or it is still unknown. Keys are parsed straight into [`StorageKey`]s; nothing else
//! keeps a copy.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use url::Url;

use super::arm::{Arm, Body};
use super::cloud::BlobEndpoints;
use super::http::{Answer, Failure, Operation, json};
use super::roles::actions;
use super::{Azure, Error};
use crate::key::KeyName;
use crate::resource_id::ResourceId;
use crate::secret::{Fingerprint, StorageKey};
use azure_core::http::{Context, Method};

const API: &str = "2024-01-01";

/// What keyflip needs to know about a storage account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageAccount {
    pub id: ResourceId,
    /// `properties.primaryEndpoints.blob`, where the SharedKey probe goes.
    pub blob_endpoint: Option<Url>,
    pub key1_created: Option<DateTime<Utc>>,
    pub key2_created: Option<DateTime<Utc>>,
    /// `None` means Azure's default, which allows shared keys.
    pub allow_shared_key_access: Option<bool>,
    pub key_expiration_days: Option<u32>,
    pub(crate) provisioning_state: Option<String>,
}

impl StorageAccount {
    pub fn name(&self) -> &str {
        self.id.name()
    }
    pub fn shared_key_allowed(&self) -> bool {
        self.allow_shared_key_access != Some(false)
    }
    pub fn key_created(&self, key: KeyName) -> Option<DateTime<Utc>> {
        match key {
            KeyName::Key1 => self.key1_created,
            KeyName::Key2 => self.key2_created,
        }
    }
}

/// One account key. `kerb1`/`kerb2` are not kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountKey {
    pub name: KeyName,
    pub value: StorageKey,
    pub created: Option<DateTime<Utc>>,
    /// `permissions` is `Full` (Azure also writes `FULL`) rather than `Read`.
    pub(crate) full_permission: bool,
}

/// Both account keys, as `listKeys` or `regenerateKey` returned them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountKeys {
    key1: AccountKey,
    key2: AccountKey,
}

impl AccountKeys {
    pub fn get(&self, name: KeyName) -> &AccountKey {
        match name {
            KeyName::Key1 => &self.key1,
            KeyName::Key2 => &self.key2,
        }
    }
    pub fn value(&self, name: KeyName) -> &StorageKey {
        &self.get(name).value
    }
}

/// What the caller knew about the key before asking Azure to regenerate it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyBefore {
    pub fingerprint: Fingerprint,
    pub created: Option<DateTime<Utc>>,
}

/// The three possible answers to "regenerate this key".
#[derive(Debug)]
pub enum RegenerateOutcome {
    /// Azure regenerated the key. These are both keys as they are now.
    Happened(AccountKeys),
    /// The key was not regenerated; `Error::is_transient` says whether trying again
    /// later may work.
    DidNotHappen(Error),
    /// The call failed ambiguously and reading the keys back failed too. The caller
    /// must find out (later) before sending it again.
    Unknown { cause: Error, reconciliation: Error },
}

/// Whether a key's creation time moved from `before` (`None`: not known then, so no
/// evidence either way). Times less than a second apart are the same: Azure's
/// `keyCreationTime` and `listKeys`' `creationTime` are set together but may be
/// written with different precision, and a regeneration is decided by the key's
/// fingerprint; the time only flags an inconsistent view.
pub(crate) fn creation_changed(before: Option<DateTime<Utc>>, now: Option<DateTime<Utc>>) -> bool {
    match (before, now) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(b), Some(n)) => (n - b).abs() >= chrono::TimeDelta::seconds(1),
    }
}

/// Changes to make to a storage account.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StorageAccountPatch {
    pub allow_shared_key_access: Option<bool>,
    pub key_expiration_days: Option<u32>,
}

fn check_type(id: &ResourceId) -> Result<(), Error> {
    if id.is_type("Microsoft.Storage/storageAccounts") {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{id} is a {}, not a storage account (Microsoft.Storage/storageAccounts)",
            id.resource_type()
        )))
    }
}

const GET: Operation = Operation::read("storage.get", actions::STORAGE_READ);
const LIST_KEYS: Operation = Operation::read("storage.listKeys", actions::STORAGE_LIST_KEYS);
const REGENERATE: Operation = Operation {
    name: "storage.regenerateKey",
    action: Some(actions::STORAGE_REGENERATE_KEY),
    idempotent: false,
    retry_on: super::http::RETRY_STATUSES,
};
const PATCH: Operation = Operation::write("storage.patch", actions::STORAGE_WRITE);

impl Azure {
    pub async fn storage_account(&self, id: &ResourceId) -> Result<StorageAccount, Error> {
        check_type(id)?;
        let url = self.arm.url(id.as_str(), "", API)?;
        let answer = self
            .arm
            .call(&GET, id.as_str(), Method::Get, &url, Body::None)
            .await?;
        parse_account(id, &answer, &self.cloud().blob_endpoints)
    }

    pub async fn storage_keys(&self, id: &ResourceId) -> Result<AccountKeys, Error> {
        check_type(id)?;
        let url = self.arm.url(id.as_str(), "/listKeys", API)?;
        let answer = self
            .arm
            .call(&LIST_KEYS, id.as_str(), Method::Post, &url, Body::None)
            .await?;
        parse_keys(&answer)
    }

    /// Regenerates `key` once. `before` is what the caller last observed of it; it is
    /// how an ambiguous failure is reconciled. Never retried: see the module docs.
    pub async fn regenerate_storage_key(
        &self,
        id: &ResourceId,
        key: KeyName,
        before: KeyBefore,
    ) -> RegenerateOutcome {
        if let Err(e) = check_type(id) {
            return RegenerateOutcome::DidNotHappen(e);
        }
        let url = match self.arm.url(id.as_str(), "/regenerateKey", API) {
            Ok(url) => url,
            Err(e) => return RegenerateOutcome::DidNotHappen(e),
        };
        let body = serde_json::json!({ "keyName": key.as_str() });
        let request = Arm::request(Method::Post, &url, &Body::Json(&body));
        let sender = self.arm.sender();
        let cause = match sender
            .send_once(&REGENERATE, id.as_str(), &Context::new(), request)
            .await
        {
            Ok(answer) => match parse_keys(&answer) {
                Ok(keys) => {
                    tracing::info!(operation = REGENERATE.name, target = %id, key = %key, status = answer.status, request_id = answer.call.request_id.as_deref(), "storage key regenerated");
                    return RegenerateOutcome::Happened(keys);
                }
                // A 2xx we cannot read: it almost surely happened, but ask Azure.
                Err(e) => e,
            },
            Err(failure) => {
                let ambiguous = match &failure {
                    Failure::Status { status, .. } => *status >= 500 || *status == 408,
                    Failure::Transport { error, .. } => {
                        // A connection that was never made carried no request.
                        !matches!(
                            error.kind(),
                            azure_core::error::ErrorKind::Connection
                                | azure_core::error::ErrorKind::Credential
                                | azure_core::error::ErrorKind::Other
                        )
                    }
                };
                let error = sender.error(&REGENERATE, failure, 1);
                if !ambiguous {
                    tracing::info!(operation = REGENERATE.name, target = %id, key = %key, error = %error, "storage key not regenerated");
                    return RegenerateOutcome::DidNotHappen(error);
                }
                error
            }
        };
        tracing::warn!(operation = REGENERATE.name, target = %id, key = %key, error = %cause, "regenerateKey outcome unknown; reading the keys back to find out");
        self.reconcile_regenerate(id, key, before, cause).await
    }

    async fn reconcile_regenerate(
        &self,
        id: &ResourceId,
        key: KeyName,
        before: KeyBefore,
        cause: Error,
    ) -> RegenerateOutcome {
        // Give a request that is still in flight inside Azure a moment to land.
        tokio::time::sleep(self.options.reconcile_delay).await;
        let read_back = async {
            Ok::<_, Error>((
                self.storage_keys(id).await?,
                self.storage_account(id).await?,
            ))
        };
        let (keys, account) = match read_back.await {
            Ok(both) => both,
            Err(reconciliation) => {
                return RegenerateOutcome::Unknown {
                    cause,
                    reconciliation,
                };
            }
        };
        let now_fp = self.fingerprinter.fingerprint(keys.value(key));
        let created_changed = creation_changed(before.created, account.key_created(key));
        let outcome = match (now_fp != before.fingerprint, created_changed) {
            (true, _) => RegenerateOutcome::Happened(keys),
            (false, false) => RegenerateOutcome::DidNotHappen(cause),
            (false, true) => RegenerateOutcome::Unknown {
                reconciliation: Error::Invalid(format!(
                    "{id}: keyCreationTime.{key} changed but the key's value did not; Azure's view is inconsistent, read it again later"
                )),
                cause,
            },
        };
        tracing::info!(operation = REGENERATE.name, target = %id, key = %key, happened = matches!(outcome, RegenerateOutcome::Happened(_)), "regenerateKey reconciled");
        outcome
    }

    /// PATCHes the account and returns it as it is afterwards.
    pub async fn patch_storage_account(
        &self,
        id: &ResourceId,
        patch: &StorageAccountPatch,
    ) -> Result<StorageAccount, Error> {
        check_type(id)?;
        let mut properties = serde_json::Map::new();
        if let Some(allow) = patch.allow_shared_key_access {
            properties.insert("allowSharedKeyAccess".into(), allow.into());
        }
        if let Some(days) = patch.key_expiration_days {
            properties.insert(
                "keyPolicy".into(),
                serde_json::json!({ "keyExpirationPeriodInDays": days }),
            );
        }
        let body = serde_json::json!({ "properties": properties });
        let url = self.arm.url(id.as_str(), "", API)?;
        let answer = self
            .arm
            .call(&PATCH, id.as_str(), Method::Patch, &url, Body::Json(&body))
            .await?;
        parse_account(id, &answer, &self.cloud().blob_endpoints)
    }
}

#[derive(Deserialize)]
struct WireAccount {
    #[serde(default)]
    properties: WireAccountProperties,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WireAccountProperties {
    primary_endpoints: Option<WireEndpoints>,
    key_creation_time: Option<WireKeyTimes>,
    allow_shared_key_access: Option<bool>,
    key_policy: Option<WireKeyPolicy>,
    provisioning_state: Option<String>,
}

#[derive(Deserialize)]
struct WireEndpoints {
    blob: Option<String>,
}

#[derive(Deserialize)]
struct WireKeyTimes {
    key1: Option<DateTime<Utc>>,
    key2: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireKeyPolicy {
    key_expiration_period_in_days: u32,
}

/// The account in `answer`. Its blob endpoint must be one `endpoints` allows: keyflip
/// signs requests for it and writes it into connection strings, so an endpoint that
/// is not HTTPS or not this cloud's endpoint of this account is refused here.
fn parse_account(
    id: &ResourceId,
    answer: &Answer,
    endpoints: &BlobEndpoints,
) -> Result<StorageAccount, Error> {
    let wire: WireAccount = json(answer, "a storage account")?;
    let p = wire.properties;
    let refuse = |detail: String| Error::BadResponse {
        call: answer.call.clone().into(),
        status: answer.status,
        detail,
    };
    let blob_endpoint = match p.primary_endpoints.and_then(|e| e.blob) {
        None => None,
        Some(text) => {
            let url = Url::parse(&text)
                .map_err(|e| refuse(format!("primaryEndpoints.blob is not a URL: {e}")))?;
            endpoints.check(id.name(), &url).map_err(|why| {
                refuse(format!(
                    "primaryEndpoints.blob is {}{}, which keyflip refuses because {why}; no SharedKey-signed request was sent (if this endpoint is right, configure it in [cloud])",
                    super::origin::shown_origin(&url),
                    url.path()
                ))
            })?;
            Some(url)
        }
    };
    let (key1_created, key2_created) = p
        .key_creation_time
        .map_or((None, None), |t| (t.key1, t.key2));
    Ok(StorageAccount {
        id: id.clone(),
        blob_endpoint,
        key1_created,
        key2_created,
        allow_shared_key_access: p.allow_shared_key_access,
        key_expiration_days: p.key_policy.map(|k| k.key_expiration_period_in_days),
        provisioning_state: p.provisioning_state,
    })
}

/// `{"keys":[{"keyName","value","permissions","creationTime"}]}` into both keys.
/// The wire types have no `Debug`, so a value cannot be printed by accident.
fn parse_keys(answer: &Answer) -> Result<AccountKeys, Error> {
    #[derive(Deserialize)]
    struct Keys {
        keys: Vec<WireKey>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct WireKey {
        key_name: String,
        value: String,
        permissions: Option<String>,
        creation_time: Option<DateTime<Utc>>,
    }
    let wire: Keys = json(answer, "a list of storage account keys")?;
    let (mut key1, mut key2) = (None, None);
    for k in wire.keys {
        let Ok(name) = k.key_name.parse::<KeyName>() else {
            continue; // kerb1/kerb2
        };
        let key = AccountKey {
            name,
            value: StorageKey::new(k.value),
            created: k.creation_time,
            full_permission: k.permissions.is_none_or(|p| p.eq_ignore_ascii_case("full")),
        };
        match name {
            KeyName::Key1 => key1 = Some(key),
            KeyName::Key2 => key2 = Some(key),
        }
    }
    match (key1, key2) {
        (Some(key1), Some(key2)) => Ok(AccountKeys { key1, key2 }),
        _ => Err(Error::BadResponse {
            call: answer.call.clone().into(),
            status: answer.status,
            detail: "the key list lacks key1 or key2".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::AzureOptions;
    use crate::azure::error::Call;
    use crate::azure::mock::{Mock, Reply, ok, status};

    fn answer(body: &str) -> Answer {
        Answer {
            status: 200,
            headers: Default::default(),
            body: body.as_bytes().to_vec().into(),
            call: Call {
                operation: "t",
                target: "t".into(),
                request_id: None,
            },
        }
    }

    #[test]
    fn parses_microsofts_example_account() {
        // Trimmed from StorageAccountGetProperties.json (azure-rest-api-specs, 2024-01-01).
        let body = r#"{"id":"/subscriptions/s/resourceGroups/res9407/providers/Microsoft.Storage/storageAccounts/sto8596","kind":"Storage","name":"sto8596","properties":{"keyCreationTime":{"key1":"2021-03-18T04:42:22.4322836Z","key2":"2021-03-18T04:42:22.4322836Z"},"primaryEndpoints":{"blob":"https://sto8596.blob.core.windows.net/"},"provisioningState":"Succeeded","keyPolicy":{"keyExpirationPeriodInDays":20},"allowSharedKeyAccess":false}}"#;
        let id: ResourceId = "/subscriptions/s/resourceGroups/res9407/providers/Microsoft.Storage/storageAccounts/sto8596".parse().unwrap();
        let public = BlobEndpoints::Suffix {
            suffix: "core.windows.net".into(),
            dns_zones: true,
        };
        let a = parse_account(&id, &answer(body), &public).unwrap();
        assert_eq!(
            a.blob_endpoint.as_ref().unwrap().host_str(),
            Some("sto8596.blob.core.windows.net")
        );
        // The same answer with its endpoint moved is refused, and says where and why.
        for (moved, why) in [
            ("http://sto8596.blob.core.windows.net/", "not HTTPS"),
            (
                "https://collector.example/",
                "https://sto8596.blob.core.windows.net/",
            ),
        ] {
            let body = body.replace("https://sto8596.blob.core.windows.net/", moved);
            let e = parse_account(&id, &answer(&body), &public).unwrap_err();
            assert!(e.to_string().contains(why), "{e}");
            assert!(
                e.to_string()
                    .contains("no SharedKey-signed request was sent"),
                "{e}"
            );
        }
        assert_eq!(
            a.key1_created.unwrap().to_rfc3339(),
            "2021-03-18T04:42:22.432283600+00:00"
        );
        assert_eq!(a.key_expiration_days, Some(20));
        assert!(!a.shared_key_allowed());
    }

    #[test]
    fn parses_keys_case_insensitively_and_skips_kerberos_keys() {
        let body = r#"{"keys":[{"keyName":"key1","value":"AAAA","permissions":"FULL"},{"keyName":"kerb1","value":"BBBB","permissions":"Full"},{"keyName":"KEY2","value":"CCCC","permissions":"Read","creationTime":"2024-01-01T00:00:00Z"}]}"#;
        let keys = parse_keys(&answer(body)).unwrap();
        assert_eq!(keys.value(KeyName::Key1).expose(), "AAAA");
        assert!(keys.get(KeyName::Key1).full_permission);
        assert!(!keys.get(KeyName::Key2).full_permission);
        assert!(keys.get(KeyName::Key2).created.is_some());
        let err =
            parse_keys(&answer(r#"{"keys":[{"keyName":"key1","value":"AAAA"}]}"#)).unwrap_err();
        assert!(err.to_string().contains("lacks key1 or key2"), "{err}");
        let err = parse_keys(&answer(r#"{"keys":"AAAA-secret"}"#)).unwrap_err();
        assert!(!err.to_string().contains("AAAA-secret"), "{err}");
    }

    const ID: &str =
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/acct";

    fn keys(key1: &str) -> Reply {
        ok(&format!(
            r#"{{"keys":[{{"keyName":"key1","value":"{key1}","permissions":"FULL"}},{{"keyName":"key2","value":"KEY2","permissions":"FULL"}}]}}"#
        ))
    }

    fn account(key1_created: &str) -> Reply {
        ok(&format!(
            r#"{{"properties":{{"keyCreationTime":{{"key1":"{key1_created}","key2":null}}}}}}"#
        ))
    }

    /// Regenerates key1, which was `OLD` created at `T0`, against scripted answers.
    async fn regenerate(replies: Vec<Reply>) -> (RegenerateOutcome, usize) {
        let mock = Mock::new(replies);
        let azure = Azure::for_tests(
            mock.clone(),
            AzureOptions {
                reconcile_delay: std::time::Duration::ZERO,
                ..Default::default()
            },
        );
        let before = KeyBefore {
            fingerprint: azure.fingerprint(&StorageKey::new("OLD".into())),
            created: Some("2024-01-01T00:00:00Z".parse().unwrap()),
        };
        let outcome = azure
            .regenerate_storage_key(&ID.parse().unwrap(), KeyName::Key1, before)
            .await;
        let regenerates = mock
            .sent()
            .iter()
            .filter(|s| s.url.contains("/regenerateKey"))
            .count();
        assert_eq!(regenerates, 1, "regenerateKey must be sent exactly once");
        (outcome, mock.sent().len())
    }

    const T0: &str = "2024-01-01T00:00:00Z";
    const T1: &str = "2024-06-01T00:00:00Z";

    #[tokio::test]
    async fn a_clean_answer_is_the_outcome() {
        let (outcome, sent) = regenerate(vec![keys("NEW")]).await;
        assert!(
            matches!(outcome, RegenerateOutcome::Happened(k) if k.value(KeyName::Key1).expose() == "NEW")
        );
        assert_eq!(sent, 1);
    }

    #[tokio::test]
    async fn a_5xx_is_reconciled_from_the_keys() {
        let err500 = || {
            status(
                500,
                &[],
                r#"{"error":{"code":"InternalError","message":"m"}}"#,
            )
        };
        // The keys changed: it happened.
        let (outcome, _) = regenerate(vec![err500(), keys("NEW"), account(T1)]).await;
        assert!(
            matches!(outcome, RegenerateOutcome::Happened(k) if k.value(KeyName::Key1).expose() == "NEW")
        );
        // Nothing changed: it did not.
        let (outcome, _) = regenerate(vec![err500(), keys("OLD"), account(T0)]).await;
        assert!(
            matches!(
                outcome,
                RegenerateOutcome::DidNotHappen(Error::Server { status: 500, .. })
            ),
            "{outcome:?}"
        );
        // Same value but a new creation time: Azure contradicts itself.
        let (outcome, _) = regenerate(vec![err500(), keys("OLD"), account(T1)]).await;
        assert!(
            matches!(outcome, RegenerateOutcome::Unknown { .. }),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn an_unreadable_answer_or_a_reset_is_reconciled_too() {
        let (outcome, _) = regenerate(vec![ok("{not json"), keys("NEW"), account(T1)]).await;
        assert!(
            matches!(outcome, RegenerateOutcome::Happened(_)),
            "{outcome:?}"
        );
        let (outcome, _) = regenerate(vec![Reply::Io, keys("OLD"), account(T0)]).await;
        assert!(
            matches!(
                outcome,
                RegenerateOutcome::DidNotHappen(Error::Network { sent: true, .. })
            ),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn a_failed_reconciliation_leaves_the_outcome_unknown() {
        let forbidden = || {
            status(
                403,
                &[],
                r#"{"error":{"code":"AuthorizationFailed","message":"no"}}"#,
            )
        };
        let (outcome, _) = regenerate(vec![Reply::Io, forbidden(), forbidden()]).await;
        match outcome {
            RegenerateOutcome::Unknown {
                cause,
                reconciliation,
            } => {
                assert!(matches!(cause, Error::Network { .. }), "{cause}");
                assert!(
                    matches!(reconciliation, Error::Forbidden { .. }),
                    "{reconciliation}"
                );
            }
            other => panic!("expected Unknown, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn definite_refusals_are_not_reconciled() {
        for code in [400u16, 403, 404, 409, 429] {
            let (outcome, sent) = regenerate(vec![status(code, &[], "{}")]).await;
            assert!(
                matches!(outcome, RegenerateOutcome::DidNotHappen(_)),
                "{code}: {outcome:?}"
            );
            assert_eq!(sent, 1, "{code}: nothing but the regenerate was sent");
        }
    }
}
