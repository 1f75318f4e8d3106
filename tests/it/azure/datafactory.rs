//! Data Factory linked services against keyflip-twin: SecureStrings read back masked,
//! so what keyflip wrote is known only by the etag its write got; a write is
//! conditional on the etag it read, so another writer in between is never overwritten
//! blindly; a Key Vault reference is refused.

use keyflip::azure::datafactory::{Credential, MASK};
use keyflip::secret::StorageKey;
use serde_json::json;

use crate::support::engine::account_key;
use crate::support::twin::{ACCOUNT, DATA_FACTORY, LINKED_SERVICE, OPERATOR, TestTwin};

const DEPLOYER: &str = "deployer";

fn connection_string(twin: &TestTwin, key: &str) -> StorageKey {
    StorageKey::new(format!(
        "DefaultEndpointsProtocol=https;AccountName={ACCOUNT};AccountKey={key};BlobEndpoint={}",
        twin.endpoints.storage_accounts[ACCOUNT].blob_endpoint
    ))
}

fn stored(state: &serde_json::Value) -> &serde_json::Value {
    &state["data_factories"][DATA_FACTORY]["linkedServices"][LINKED_SERVICE]
}

#[tokio::test]
async fn secure_strings_read_back_masked_and_each_write_gets_a_new_etag() {
    let twin = TestTwin::start();
    let azure = twin.azure(OPERATOR);
    let factory = twin.factory_id(DATA_FACTORY);
    let before = azure
        .linked_service(&factory, LINKED_SERVICE)
        .await
        .unwrap();
    assert_eq!(before.credential, Credential::SecureString);
    assert_eq!(before.property, Some("connectionString"));
    let etag0 = before.etag.clone().expect("an etag");

    let (key1, key2) = twin.keys(ACCOUNT).await;
    let etag1 = azure
        .set_linked_service_secret(&factory, LINKED_SERVICE, |property| {
            assert_eq!(property, "connectionString");
            connection_string(&twin, &key2)
        })
        .await
        .unwrap();
    assert_ne!(etag1, etag0, "a write changes the etag");
    let after = azure
        .linked_service(&factory, LINKED_SERVICE)
        .await
        .unwrap();
    assert_eq!(after.etag.as_deref(), Some(etag1.as_str()));
    assert_eq!(after.credential, Credential::SecureString, "still masked");
    // What was stored: the new key, as a SecureString; the read never showed it.
    let state = twin.state().await;
    let tp = &stored(&state)["properties"]["typeProperties"];
    assert_eq!(tp["connectionString"]["type"], "SecureString");
    assert_eq!(
        account_key(tp["connectionString"]["value"].as_str().unwrap()),
        key2
    );
    assert!(
        !tp.to_string().contains(MASK),
        "the mask was not written back"
    );
    let reads: Vec<_> = twin.requests_for("datafactory.linkedService.put").await;
    assert_eq!(reads.len(), 1);
    assert!(!format!("{after:?}").contains(&key2) && !format!("{after:?}").contains(&key1));

    // The Key Vault-backed sibling is covered by its secret, and never written.
    let kv = azure
        .linked_service(&factory, "ls_stdatasci001_blob_kv")
        .await
        .unwrap();
    assert!(
        matches!(&kv.credential, Credential::KeyVault { store, secret, .. }
            if store == "ls_kv_datasci" && secret == "stdatasci001-connection-string"),
        "{:?}",
        kv.credential
    );
    let err = azure
        .set_linked_service_secret(&factory, "ls_stdatasci001_blob_kv", |_| {
            connection_string(&twin, &key2)
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("rotate that secret instead"), "{err}");
    assert_eq!(
        twin.requests_for("datafactory.linkedService.put")
            .await
            .len(),
        1,
        "nothing sent for the reference"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_between_keyflips_read_and_its_put_is_not_overwritten_blindly() {
    let factory_id = "/subscriptions/3c9e5b1d-2a4f-4e6b-9c8d-0f1e2d3c4b5a/resourceGroups/rg-datascience/providers/Microsoft.DataFactory/factories/adf-datasci";
    let twin = TestTwin::start_with(&format!(
        "[[principal]]\nname = \"{DEPLOYER}\"\nclient_id = \"7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d\"\nobject_id = \"8b2c3d4e-5f6a-4b7c-9d8e-0f1a2b3c4d5e\"\n\n[[role_assignment]]\nprincipal = \"{DEPLOYER}\"\nrole = \"Data Factory Contributor\"\nscope = \"{factory_id}\"\n"
    ));
    let factory = twin.factory_id(DATA_FACTORY);
    let (keyflip, deployer) = (twin.azure(OPERATOR), twin.azure(DEPLOYER));
    let (key1, key2) = twin.keys(ACCOUNT).await;
    // keyflip's PUTs wait 1.5 s before they are judged; the deployer's do not.
    twin.fault(
        json!({"operation": "datafactory.linkedService.put", "principal": OPERATOR,
        "count": 0, "action": {"kind": "latency", "ms": 1500}}),
    )
    .await;
    let (etag, deployed) = tokio::join!(
        keyflip.set_linked_service_secret(&factory, LINKED_SERVICE, |_| connection_string(
            &twin, &key2
        )),
        async {
            twin.fired("datafactory.linkedService.put", 1).await;
            deployer
                .set_linked_service_secret(&factory, LINKED_SERVICE, |_| {
                    connection_string(&twin, &key1)
                })
                .await
                .unwrap()
        }
    );
    let etag = etag.unwrap();
    assert_ne!(etag, deployed);
    let puts = twin.requests_for("datafactory.linkedService.put").await;
    let statuses: Vec<_> = puts
        .iter()
        .filter(|e| e["principal"] == OPERATOR)
        .map(|e| e["status"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(statuses, [412, 200], "refused once as stale, then written");
    let state = twin.state().await;
    let ls = stored(&state);
    assert_eq!(
        ls["etag"],
        etag.as_str(),
        "keyflip's write is the current one"
    );
    assert_eq!(
        account_key(
            ls["properties"]["typeProperties"]["connectionString"]["value"]
                .as_str()
                .unwrap()
        ),
        key2
    );
}
