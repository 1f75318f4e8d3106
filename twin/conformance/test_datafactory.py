"""azure-mgmt-datafactory against the twin's Data Factory.

Promises checked: factories.get and linked_services.list_by_factory/get deserialize
into the SDK's typed models (AzureBlobStorage, AzureKeyVault, SecureString,
AzureKeyVaultSecretReference); a SecureString reads back as ``**********`` while
the twin holds the real value; create_or_update stores a new secret, answers masked
and changes the etag; get with ``etag=..., match_condition=IfModified`` sends
If-None-Match and returns None on 304; create_or_update with
``match_condition=IfNotModified`` and a stale etag is refused with
ResourceModifiedError (412); the reader may read (masked) but not write.
"""

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceModifiedError

from conftest import ACCOUNT, arm_kwargs

FACTORY = "adf-datasci"
BLOB = "ls_stdatasci001_blob"
BLOB_KV = "ls_stdatasci001_blob_kv"
MASK = "**********"


@pytest.fixture(scope="module")
def df_client(ep, sub):
    from azure.mgmt.datafactory import DataFactoryManagementClient

    return lambda cred: DataFactoryManagementClient(cred, sub, **arm_kwargs(ep))


def blob_service(models, connection_string: str):
    """An AzureBlobStorage linked service with a SecureString connection string.

    azure-mgmt-datafactory 10.0.0 does not set the ``type`` discriminator of flattened
    linked-service models built from keywords (the service refuses a linked service
    without one, and so does the twin), so it is set here.
    """
    ls = models.AzureBlobStorageLinkedService(
        type_properties=models.AzureBlobStorageLinkedServiceTypeProperties(
            connection_string=models.SecureString(value=connection_string)
        )
    )
    ls.type = "AzureBlobStorage"
    return models.LinkedServiceResource(properties=ls)


def held(admin, name):
    return admin.state()["data_factories"][FACTORY]["linkedServices"][name]


def test_factory_and_linked_services_deserialize(ep, rg, df_client, operator, admin, recorder):
    from azure.mgmt.datafactory import models

    client = df_client(operator)
    factory = client.factories.get(rg, FACTORY, raw_request_hook=recorder)
    assert factory.id == ep["data_factories"][FACTORY]["id"]
    assert factory.properties.provisioning_state == "Succeeded"
    assert "api-version=2018-06-01" in recorder.urls[0], recorder.urls

    by_name = {ls.name: ls for ls in client.linked_services.list_by_factory(rg, FACTORY)}
    assert set(by_name) == {"ls_kv_datasci", BLOB, BLOB_KV}
    blob = by_name[BLOB]
    assert isinstance(blob.properties, models.AzureBlobStorageLinkedService)
    secret = blob.properties.type_properties.connection_string
    assert secret == {"type": "SecureString", "value": MASK}
    assert blob.etag == held(admin, BLOB)["etag"]
    kv = by_name[BLOB_KV].properties.type_properties.connection_string
    assert kv["type"] == "AzureKeyVaultSecret"
    assert kv["secretName"] == "stdatasci001-connection-string"
    assert kv["store"]["referenceName"] == "ls_kv_datasci"
    vault = by_name["ls_kv_datasci"].properties
    assert isinstance(vault, models.AzureKeyVaultLinkedService)
    assert vault.type_properties.base_url == ep["key_vaults"]["kv-datasci"]["url"]

    # What the service holds is the real connection string (visible only to tests;
    # other tests regenerate keys, so only its form is checked).
    value = held(admin, BLOB)["properties"]["typeProperties"]["connectionString"]["value"]
    assert value.startswith(f"DefaultEndpointsProtocol=https;AccountName={ACCOUNT};AccountKey=")


def test_create_or_update_stores_the_secret_and_answers_masked(rg, df_client, operator, admin):
    from azure.mgmt.datafactory import models

    client = df_client(operator)
    before = client.linked_services.get(rg, FACTORY, BLOB)
    new = blob_service(models, "DefaultEndpointsProtocol=https;AccountName=x;AccountKey=FROMSDK")
    out = client.linked_services.create_or_update(rg, FACTORY, "ls_from_sdk", new)
    assert out.name == "ls_from_sdk"
    assert out.properties.type_properties.connection_string == {"type": "SecureString", "value": MASK}
    assert held(admin, "ls_from_sdk")["properties"]["typeProperties"]["connectionString"]["value"].endswith(
        "AccountKey=FROMSDK"
    )
    # Without the discriminator the linked service is refused, and nothing is stored.
    untyped = models.LinkedServiceResource(
        properties=models.AzureBlobStorageLinkedService(
            type_properties=models.AzureBlobStorageLinkedServiceTypeProperties(connection_string="x")
        )
    )
    with pytest.raises(HttpResponseError) as e:
        client.linked_services.create_or_update(rg, FACTORY, "ls_untyped", untyped)
    assert e.value.status_code == 400
    assert "ls_untyped" not in admin.state()["data_factories"][FACTORY]["linkedServices"]
    # Conditional GET: the current etag answers 304, which the SDK returns as None.
    assert client.linked_services.get(
        rg, FACTORY, BLOB, etag=before.etag, match_condition=MatchConditions.IfModified
    ) is None


def test_a_stale_etag_is_refused(rg, df_client, operator, admin):
    from azure.mgmt.datafactory import models

    client = df_client(operator)
    current = client.linked_services.get(rg, FACTORY, BLOB_KV)
    props = current.properties
    updated = client.linked_services.create_or_update(
        rg,
        FACTORY,
        BLOB_KV,
        models.LinkedServiceResource(properties=props),
        etag=current.etag,
        match_condition=MatchConditions.IfNotModified,
    )
    assert updated.etag != current.etag
    with pytest.raises(ResourceModifiedError) as e:
        client.linked_services.create_or_update(
            rg,
            FACTORY,
            BLOB_KV,
            models.LinkedServiceResource(properties=props),
            etag=current.etag,
            match_condition=MatchConditions.IfNotModified,
        )
    assert e.value.status_code == 412
    assert held(admin, BLOB_KV)["etag"] == updated.etag


def test_the_reader_reads_masked_and_may_not_write(rg, df_client, reader, admin):
    from azure.mgmt.datafactory import models

    client = df_client(reader)
    blob = client.linked_services.get(rg, FACTORY, BLOB)
    assert blob.properties.type_properties.connection_string["value"] == MASK
    before = held(admin, BLOB)
    with pytest.raises(HttpResponseError) as e:
        client.linked_services.create_or_update(
            rg,
            FACTORY,
            BLOB,
            blob_service(models, "x"),
        )
    assert e.value.status_code == 403
    assert e.value.error.code == "AuthorizationFailed"
    assert "'Microsoft.DataFactory/factories/linkedServices/write'" in e.value.error.message
    assert held(admin, BLOB) == before
