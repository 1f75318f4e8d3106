"""azure-mgmt-web against the twin's App Service sites.

Promises checked: get and get_slot describe the Function app and its staging slot
(kind, type, SKU); list_application_settings(_slot) and list_connection_strings(_slot)
(POST .../list) return what the twin holds; update_application_settings(_slot) and
update_connection_strings(_slot) replace the whole collection, restart exactly the
site or slot written (visible in the state snapshot), and answer with the new
collection; list/update_slot_configuration_names round-trip; the reader is refused
the settings list and a settings write with ARM's AuthorizationFailed naming
Microsoft.Web/sites/config/list/action and .../config/write, and nothing changes.
"""

import pytest
from azure.core.exceptions import HttpResponseError

from conftest import ACCOUNT, arm_kwargs

SITE = "func-datasci-ingest"
SLOT = "staging"


@pytest.fixture(scope="module")
def web_client(ep, sub):
    from azure.mgmt.web import WebSiteManagementClient

    return lambda cred: WebSiteManagementClient(cred, sub, **arm_kwargs(ep))


def site_state(admin):
    return admin.state()["web_apps"][SITE]


def test_site_and_slot_describe_the_function_app(ep, rg, web_client, operator, recorder):
    client = web_client(operator)
    site = client.web_apps.get(rg, SITE, raw_request_hook=recorder)
    assert site.id == ep["web_apps"][SITE]["id"]
    assert site.kind == "functionapp"
    assert site.type == "Microsoft.Web/sites"
    assert site.properties.default_host_name == f"{SITE}.azurewebsites.net"
    assert site.properties.reserved is False
    assert "api-version=2025-05-01" in recorder.urls[0], recorder.urls
    slot = client.web_apps.get_slot(rg, SITE, SLOT)
    assert slot.name == f"{SITE}/{SLOT}"
    assert slot.type == "Microsoft.Web/sites/slots"
    assert ep["web_apps"][SITE]["slots"] == [SLOT]


def test_app_settings_list_and_whole_collection_update(ep, rg, web_client, operator, admin):
    client = web_client(operator)
    before = site_state(admin)
    listed = client.web_apps.list_application_settings(rg, SITE)
    assert listed.name == "appsettings"
    assert dict(listed.properties) == before["appSettings"]
    # Other tests regenerate keys, so only the form of the setting is checked here.
    assert listed.properties["AzureWebJobsStorage"].startswith(
        f"DefaultEndpointsProtocol=https;AccountName={ACCOUNT};AccountKey="
    )
    assert listed.properties["DATASCI_STORAGE_CONNECTION"].startswith(
        f"@Microsoft.KeyVault(SecretUri={ep['key_vaults']['kv-datasci']['url']}/secrets/"
    )

    from azure.mgmt.web.models import StringDictionary

    wanted = dict(listed.properties)
    wanted["FROM_AZURE_MGMT_WEB"] = "1"
    out = client.web_apps.update_application_settings(rg, SITE, StringDictionary(properties=wanted))
    assert dict(out.properties) == wanted
    after = site_state(admin)
    assert after["appSettings"] == wanted
    assert after["restarts"] == before["restarts"] + 1
    assert after["slots"][SLOT]["restarts"] == before["slots"][SLOT]["restarts"]
    # The whole collection: a setting left out is removed.
    del wanted["FROM_AZURE_MGMT_WEB"]
    client.web_apps.update_application_settings(rg, SITE, StringDictionary(properties=wanted))
    assert dict(client.web_apps.list_application_settings(rg, SITE).properties) == wanted


def test_slot_settings_are_the_slots_own(rg, web_client, operator, admin):
    from azure.mgmt.web.models import StringDictionary

    client = web_client(operator)
    before = site_state(admin)
    slot = client.web_apps.list_application_settings_slot(rg, SITE, SLOT)
    assert dict(slot.properties) == before["slots"][SLOT]["appSettings"]
    assert slot.properties["AzureWebJobsStorage"].startswith("@Microsoft.KeyVault(")
    wanted = dict(slot.properties, SLOT_ONLY="yes")
    out = client.web_apps.update_application_settings_slot(rg, SITE, SLOT, StringDictionary(properties=wanted))
    assert dict(out.properties) == wanted
    after = site_state(admin)
    assert after["slots"][SLOT]["appSettings"] == wanted
    assert after["slots"][SLOT]["restarts"] == before["slots"][SLOT]["restarts"] + 1
    assert after["restarts"] == before["restarts"]
    assert "SLOT_ONLY" not in after["appSettings"]


def test_connection_strings_site_and_slot(rg, web_client, operator, admin):
    from azure.mgmt.web.models import ConnectionStringDictionary, ConnStringValueTypePair

    client = web_client(operator)
    for slot in (None, SLOT):
        value = f"Server=tcp:db-{slot or 'production'};"
        strings = ConnectionStringDictionary(
            properties={"Db": ConnStringValueTypePair(value=value, type="SQLAzure")}
        )
        if slot:
            out = client.web_apps.update_connection_strings_slot(rg, SITE, slot, strings)
            listed = client.web_apps.list_connection_strings_slot(rg, SITE, slot)
        else:
            out = client.web_apps.update_connection_strings(rg, SITE, strings)
            listed = client.web_apps.list_connection_strings(rg, SITE)
        assert out.properties["Db"].value == value
        assert listed.name == "connectionstrings"
        assert {k: (v.value, v.type) for k, v in listed.properties.items()} == {"Db": (value, "SQLAzure")}
        held = site_state(admin)
        held = held["slots"][slot]["connectionStrings"] if slot else held["connectionStrings"]
        assert held == {"Db": {"value": value, "type": "SQLAzure"}}


def test_slot_configuration_names_round_trip(rg, web_client, operator):
    from azure.mgmt.web.models import SlotConfigNames, SlotConfigNamesResource

    client = web_client(operator)
    names = client.web_apps.list_slot_configuration_names(rg, SITE)
    assert "AzureWebJobsStorage" in names.properties.app_setting_names
    wanted = list(names.properties.app_setting_names) + ["FROM_SDK"]
    client.web_apps.update_slot_configuration_names(
        rg,
        SITE,
        SlotConfigNamesResource(
            properties=SlotConfigNames(
                app_setting_names=wanted,
                connection_string_names=list(names.properties.connection_string_names or []),
            )
        ),
    )
    again = client.web_apps.list_slot_configuration_names(rg, SITE)
    assert list(again.properties.app_setting_names) == wanted
    # Put it back as it was for the other tests.
    client.web_apps.update_slot_configuration_names(rg, SITE, names)


def test_the_reader_is_refused_settings_and_nothing_changes(ep, rg, web_client, reader, admin):
    from azure.mgmt.web.models import StringDictionary

    client = web_client(reader)
    assert client.web_apps.get(rg, SITE).kind == "functionapp"
    before = site_state(admin)
    with pytest.raises(HttpResponseError) as e:
        client.web_apps.list_application_settings(rg, SITE)
    assert e.value.status_code == 403
    assert e.value.error.code == "AuthorizationFailed"
    assert "'Microsoft.Web/sites/config/list/action'" in e.value.error.message
    assert f"{ep['web_apps'][SITE]['id']}/config/appsettings'" in e.value.error.message
    with pytest.raises(HttpResponseError) as e:
        client.web_apps.update_application_settings_slot(rg, SITE, SLOT, StringDictionary(properties={}))
    assert e.value.status_code == 403
    assert "'Microsoft.Web/sites/slots/config/write'" in e.value.error.message
    assert site_state(admin) == before
