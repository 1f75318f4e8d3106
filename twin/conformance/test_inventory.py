"""Microsoft's clients list what an inventory needs from the twin.

Promises checked: azure-mgmt-storage's storage_accounts.list(), azure-mgmt-web's
web_apps.list() and list_slots(), azure-mgmt-datafactory's factories.list() (each a
subscription-wide GET .../providers/{type}) and azure-keyvault-secrets'
list_properties_of_secrets() (GET {vault}/secrets, paged) parse the twin's answers
into the resources its state holds, and a listed secret carries no value.
"""

from azure.keyvault.secrets import SecretClient

from conftest import ACCOUNT, VAULT, arm_kwargs


def test_storage_accounts_list_by_subscription(ep, storage_client, operator):
    names = sorted(a.name for a in storage_client(operator).storage_accounts.list())
    assert ACCOUNT in names
    assert names == sorted(ep["storage_accounts"])


def test_sites_and_slots_list(ep, sub, rg, operator):
    from azure.mgmt.web import WebSiteManagementClient

    client = WebSiteManagementClient(operator, sub, **arm_kwargs(ep))
    sites = list(client.web_apps.list())
    assert sorted(s.name for s in sites) == sorted(ep["web_apps"])
    site = sites[0]
    assert site.kind == ep["web_apps"][site.name]["kind"]
    slots = list(client.web_apps.list_slots(rg, site.name))
    assert [s.name for s in slots] == [f"{site.name}/{n}" for n in ep["web_apps"][site.name]["slots"]]


def test_factories_list(ep, sub, operator):
    from azure.mgmt.datafactory import DataFactoryManagementClient

    client = DataFactoryManagementClient(operator, sub, **arm_kwargs(ep))
    assert sorted(f.name for f in client.factories.list()) == sorted(ep["data_factories"])


def test_vault_secrets_list_without_values(ep, operator, admin):
    # azure-keyvault-secrets keeps the vault's challenge in a process-wide cache; forget
    # it afterwards so test_keyvault still sees its first request meet the challenge.
    from azure.keyvault.secrets._shared import http_challenge_cache

    try:
        list_without_values(ep, operator, admin)
    finally:
        http_challenge_cache.clear()


def list_without_values(ep, operator, admin):
    client = SecretClient(
        vault_url=ep["key_vaults"][VAULT]["url"],
        credential=operator,
        verify_challenge_resource=False,
        connection_verify=ep["ca_pem_path"],
    )
    listed = {p.name: p for p in client.list_properties_of_secrets(max_page_size=1)}
    state = admin.state()["key_vaults"][VAULT]["secrets"]
    assert sorted(listed) == sorted(state)
    for name, props in listed.items():
        assert props.enabled is True
        assert props.content_type == state[name][-1]["contentType"]
        assert not hasattr(props, "value")
