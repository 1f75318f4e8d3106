"""azure-ai-ml's MLClient against the twin's ML workspace and datastores.

MLClient is pointed at the twin as a custom cloud, so it asks for tokens with the
scope ``{arm_url}/.default``, as it would for a sovereign cloud. Promises checked:
the workspace names its storage account; datastores list and get without their key
(write-only) and with it only through listSecrets (``include_secrets=True``);
create_or_update stores a new account key that listSecrets then returns and the
twin's state holds; begin_sync_keys runs the resync LRO to completion, after which
the workspace's listKeys returns the account's newest key; the reader is refused
secrets and resync with AuthorizationFailed.
"""

import pytest
from azure.ai.ml import MLClient
from azure.ai.ml.entities import (
    AccountKeyConfiguration,
    AzureBlobDatastore,
    AzureFileDatastore,
    SasTokenConfiguration,
)
from azure.core.exceptions import HttpResponseError

from conftest import ACCOUNT, WORKSPACE

BLOB_DATASTORES = {"workspaceblobstore", "training_data", "feature_snapshots", "external_reference", "public_samples"}


def ml_client(ep, sub, rg, cred):
    arm = ep["arm_url"]
    return MLClient(
        cred,
        sub,
        rg,
        WORKSPACE,
        cloud="Custom",
        cloud_metadata={
            "azure_portal": arm,
            "resource_manager": arm,
            "active_directory": ep["authority_host"],
            "aml_resource_id": arm,
            "storage_endpoint": "core.windows.net",
            "registry_discovery_endpoint": arm,
        },
        connection_verify=ep["ca_pem_path"],
        enable_telemetry=False,
        show_progress=False,
    )


@pytest.fixture(scope="module")
def ml(ep, sub, rg, operator):
    return ml_client(ep, sub, rg, operator)


def workspace_state(admin):
    return admin.state()["ml_workspaces"][WORKSPACE]


def test_the_workspace_names_its_storage_account(ep, ml):
    ws = ml.workspaces.get(WORKSPACE)
    assert ws.name == WORKSPACE
    assert ws.id == ep["ml_workspaces"][WORKSPACE]["id"]
    assert ws.storage_account == ep["storage_accounts"][ACCOUNT]["id"]


def test_datastores_list_and_get_without_their_key(ml, admin):
    listed = {d.name: d for d in ml.datastores.list()}
    assert set(listed) == set(workspace_state(admin)["datastores"])
    assert BLOB_DATASTORES <= set(listed)
    assert ml.datastores.get_default().name == "workspaceblobstore"

    ds = ml.datastores.get("training_data")
    assert isinstance(ds, AzureBlobDatastore)
    assert ds.account_name == ACCOUNT
    assert ds.container_name == "training-data"
    assert isinstance(ds.credentials, AccountKeyConfiguration)
    assert ds.credentials.account_key is None


def test_get_with_secrets_returns_the_stored_key(ml, admin):
    ds = ml.datastores.get("feature_snapshots", include_secrets=True)
    stored = workspace_state(admin)["datastores"]["feature_snapshots"]["key"]
    assert ds.credentials.account_key == stored


def test_create_or_update_stores_a_new_account_key(ml, rg, storage_client, operator, admin, recorder):
    result = storage_client(operator).storage_accounts.regenerate_key(rg, ACCOUNT, {"keyName": "key2"})
    key2 = {k["keyName"]: k["value"] for k in result["keys"]}["key2"]
    ds = ml.datastores.get("training_data")
    ds.credentials = AccountKeyConfiguration(account_key=key2)

    updated = ml.datastores.create_or_update(ds)
    assert updated.name == "training_data"
    assert updated.credentials.account_key is None  # the answer never carries the key
    assert workspace_state(admin)["datastores"]["training_data"]["key"] == key2
    assert ml.datastores.get("training_data", include_secrets=True).credentials.account_key == key2
    # The other datastores keep theirs.
    assert workspace_state(admin)["datastores"]["feature_snapshots"]["key"] != key2


def test_a_file_share_datastore_takes_a_new_key_too(ml, admin):
    ds = ml.datastores.get("workspaceworkingdirectory")
    assert isinstance(ds, AzureFileDatastore)
    assert ds.file_share_name.startswith("code-")
    key2 = admin.account()["key2"]
    ds.credentials = AccountKeyConfiguration(account_key=key2)
    ml.datastores.create_or_update(ds)
    assert workspace_state(admin)["datastores"]["workspaceworkingdirectory"]["key"] == key2
    again = ml.datastores.get("workspaceworkingdirectory", include_secrets=True)
    assert again.credentials.account_key == key2


def test_a_sas_datastore_reveals_its_token_only_through_list_secrets(ml, admin):
    ds = ml.datastores.get("public_samples")
    assert isinstance(ds.credentials, SasTokenConfiguration)
    assert ds.credentials.sas_token is None
    stored = workspace_state(admin)["datastores"]["public_samples"]["sasToken"]
    assert ml.datastores.get("public_samples", include_secrets=True).credentials.sas_token == stored


def test_create_or_update_makes_a_new_datastore(ml, admin):
    key1 = admin.account()["key1"]
    ds = AzureBlobDatastore(
        name="conformance_new",
        account_name=ACCOUNT,
        container_name="raw",
        credentials=AccountKeyConfiguration(account_key=key1),
    )
    created = ml.datastores.create_or_update(ds)
    assert created.name == "conformance_new"
    state = workspace_state(admin)["datastores"]["conformance_new"]
    assert (state["accountName"], state["key"], state["isDefault"]) == (ACCOUNT, key1, False)


def test_sync_keys_caches_the_newest_account_key(ml, rg, storage_client, operator, admin):
    admin.advance(2)  # the regenerated key is strictly the newest
    result = storage_client(operator).storage_accounts.regenerate_key(rg, ACCOUNT, {"keyName": "key1"})
    key1 = {k["keyName"]: k["value"] for k in result["keys"]}["key1"]
    assert ml.workspaces.get_keys(WORKSPACE).user_storage_key != key1

    seq = admin.last_seq()
    poller = ml.workspaces.begin_sync_keys(WORKSPACE)
    poller.result()
    assert poller.status().lower() == "succeeded"
    # The SDK followed the 202's Location until the twin answered 200.
    log = [(r["operation"], r["status"]) for r in admin.requests_since(seq)]
    assert log[0] == ("ml.workspace.resyncKeys", 202)
    assert log[-1] == ("ml.operation.poll", 200)
    assert set(log[1:-1]) <= {("ml.operation.poll", 202)}
    assert workspace_state(admin)["userStorageKey"] == key1
    assert ml.workspaces.get_keys(WORKSPACE).user_storage_key == key1


def test_the_reader_is_refused_secrets_and_resync(ep, sub, rg, reader, admin):
    ml = ml_client(ep, sub, rg, reader)
    # Reader may read the datastore...
    assert ml.datastores.get("training_data").account_name == ACCOUNT
    before = workspace_state(admin)["userStorageKey"]
    ws_id = ep["ml_workspaces"][WORKSPACE]["id"]
    for call, action in (
        (lambda: ml.datastores.get("training_data", include_secrets=True), "workspaces/datastores/listSecrets/action"),
        (lambda: ml.workspaces.begin_sync_keys(WORKSPACE).result(), "workspaces/resyncKeys/action"),
        (lambda: ml.workspaces.get_keys(WORKSPACE), "workspaces/listKeys/action"),
    ):
        with pytest.raises(HttpResponseError) as err:
            call()
        assert err.value.status_code == 403
        assert err.value.error.code == "AuthorizationFailed"
        # Spelled as Azure spells the operation (issue 12).
        assert f"Microsoft.MachineLearningServices/{action}" in err.value.error.message
        assert ws_id.lower() in err.value.error.message.lower()
    assert workspace_state(admin)["userStorageKey"] == before
