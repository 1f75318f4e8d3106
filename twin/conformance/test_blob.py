"""azure-storage-blob's own SharedKey signer against the twin's Blob data plane.

Promises checked: a request signed with either current key is accepted (account and
container paths, Get Account Information and List Containers); a wrong key is
refused 403 AuthenticationFailed; after regenerate_key the old value is refused at
once, and the new value is refused until the propagation delay has passed on the
twin clock, then accepted; the operator cannot turn shared keys off (no write role).
"""

import base64
import os

import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.storage.blob import BlobServiceClient

from conftest import ACCOUNT

# The demo world's containers of stdatasci001 (twin/worlds/demo.toml).
DEMO_CONTAINERS = ["azureml-blobstore-5e1f0a2b", "curated", "feature-snapshots", "public-samples", "raw", "training-data"]


def service(ep, key, account=ACCOUNT):
    return BlobServiceClient(
        ep["storage_accounts"][account]["blob_endpoint"],
        credential={"account_name": account, "account_key": key},
        connection_verify=ep["ca_pem_path"],
        # One attempt: a refusal must surface as it is, not after retries.
        retry_total=0,
    )


def refusal(call):
    """The storage error a refused call raises (the SDK maps 403 to an auth error)."""
    with pytest.raises((ClientAuthenticationError, HttpResponseError)) as err:
        call()
    return err.value


def test_either_current_key_is_accepted(ep, admin):
    state = admin.account()
    for name in ("key1", "key2"):
        info = service(ep, state[name]).get_account_information()
        assert info["sku_name"] == "Standard_LRS"
        assert info["account_kind"] == "StorageV2"
        assert info["is_hns_enabled"] is False


def test_container_paths_and_list_containers_are_signed_alike(ep, admin):
    client = service(ep, admin.account()["key1"])
    assert [c.name for c in client.list_containers()] == DEMO_CONTAINERS
    # The container path puts the account twice in the canonicalized resource.
    info = client.get_container_client("training-data").get_account_information()
    assert info["account_kind"] == "StorageV2"
    assert [c.name for c in client.list_containers(name_starts_with="feature")] == ["feature-snapshots"]


def test_list_containers_pages_through_next_marker(ep, admin):
    client = service(ep, admin.account()["key2"])
    pages = [[c.name for c in page] for page in client.list_containers(results_per_page=2).by_page()]
    assert [len(p) for p in pages] == [2, 2, 2]
    flat = [n for p in pages for n in p]
    assert flat == DEMO_CONTAINERS


def test_a_blob_path_gets_account_information(ep, admin):
    blob = service(ep, admin.account()["key1"]).get_blob_client("raw", "some/dir/file name.csv")
    assert blob.get_account_information()["sku_name"] == "Standard_LRS"


def test_a_wrong_key_is_refused_with_authentication_failed(ep):
    wrong = base64.b64encode(os.urandom(64)).decode()
    err = refusal(lambda: service(ep, wrong).get_account_information())
    assert err.status_code == 403
    assert err.error_code == "AuthenticationFailed"
    assert "Server failed to authenticate the request" in err.message


def test_after_regenerate_the_old_value_is_refused(ep, rg, storage_client, operator, admin):
    old = admin.account()["key2"]
    assert service(ep, old).get_account_information()["sku_name"] == "Standard_LRS"
    result = storage_client(operator).storage_accounts.regenerate_key(rg, ACCOUNT, {"keyName": "key2"})
    new = {k["keyName"]: k["value"] for k in result["keys"]}["key2"]
    err = refusal(lambda: service(ep, old).get_account_information())
    assert (err.status_code, err.error_code) == (403, "AuthenticationFailed")
    # Propagation delay 0 in the demo world: the new value works at once.
    assert service(ep, new).get_account_information()["account_kind"] == "StorageV2"


def test_a_new_key_is_refused_until_it_has_propagated(ep, rg, storage_client, operator, admin):
    admin.settings(propagation_delay_secs=30.0)
    try:
        result = storage_client(operator).storage_accounts.regenerate_key(rg, ACCOUNT, {"keyName": "key2"})
        new = {k["keyName"]: k["value"] for k in result["keys"]}["key2"]
        err = refusal(lambda: service(ep, new).get_account_information())
        assert (err.status_code, err.error_code) == (403, "AuthenticationFailed")
        # key1 is untouched and still works meanwhile.
        assert service(ep, admin.account()["key1"]).get_account_information()["sku_name"]
        admin.advance(31)
        assert service(ep, new).get_account_information()["account_kind"] == "StorageV2"
    finally:
        admin.settings(propagation_delay_secs=0.0)


def test_the_operator_may_not_turn_shared_keys_off(ep, rg, storage_client, operator, admin):
    # Key Operator and Reader hold no storageAccounts/write: the PATCH is refused and
    # the data plane keeps accepting keys.
    client = storage_client(operator).storage_accounts
    err = refusal(lambda: client.update(rg, ACCOUNT, {"properties": {"allowSharedKeyAccess": False}}))
    assert (err.status_code, err.error.code) == (403, "AuthorizationFailed")
    assert "Microsoft.Storage/storageAccounts/write" in err.error.message
    assert admin.account()["allowSharedKeyAccess"] is True
    assert service(ep, admin.account()["key1"]).get_account_information()["sku_name"]
