"""azure-keyvault-secrets against the twin's Key Vault.

Promises checked: the SDK's first request meets the 401 challenge and the SDK then
authenticates with the token the challenge asked for; set_secret makes a new
32-hex version each time; get_secret returns the latest (the SDK's trailing-slash
form) or a given version; list_properties_of_secret_versions lists every version and
no value; update_secret_properties changes attributes and tags, and a disabled
version can no longer be read; the reader (Key Vault Secrets User) reads but is
refused writes with ForbiddenByRbac. Every write is checked against the twin's state.
"""

import re

import pytest
from azure.core.exceptions import HttpResponseError
from azure.keyvault.secrets import SecretClient

from conftest import VAULT, unique

HEX32 = re.compile(r"^[0-9a-f]{32}$")


def secret_client(ep, cred):
    return SecretClient(
        vault_url=ep["key_vaults"][VAULT]["url"],
        credential=cred,
        verify_challenge_resource=False,
        connection_verify=ep["ca_pem_path"],
    )


def versions_in_state(admin, name):
    return admin.state()["key_vaults"][VAULT]["secrets"].get(name, [])


def test_set_get_versions_and_update_through_the_challenge(ep, operator, admin):
    name = unique("conformance")
    client = secret_client(ep, operator)
    seq = admin.last_seq()

    first = client.set_secret(name, "value-one", content_type="text/plain", tags={"CredentialId": "key1"})
    assert HEX32.match(first.properties.version)
    assert first.id == f"{ep['base_url']}/secrets/{name}/{first.properties.version}"
    assert first.value == "value-one"
    assert first.properties.content_type == "text/plain"
    assert first.properties.tags == {"CredentialId": "key1"}
    assert first.properties.enabled is True

    # The first request carried no token and met the challenge; the retry succeeded.
    log = [r for r in admin.requests_since(seq) if name in r["path"]]
    assert [(r["status"], r["principal"]) for r in log[:2]] == [(401, None), (200, "keyflip-operator")]
    assert log[1]["operation"] == "keyvault.set"

    second = client.set_secret(name, "value-two")
    assert second.properties.version != first.properties.version
    state = versions_in_state(admin, name)
    assert [v["value"] for v in state] == ["value-one", "value-two"]
    assert [v["version"] for v in state] == [first.properties.version, second.properties.version]

    latest = client.get_secret(name)
    assert (latest.value, latest.properties.version) == ("value-two", second.properties.version)
    old = client.get_secret(name, first.properties.version)
    assert old.value == "value-one"
    assert old.properties.tags == {"CredentialId": "key1"}

    # One version a page: the SDK must follow the twin's absolute nextLink.
    pages = []
    listed = list(
        client.list_properties_of_secret_versions(
            name, max_page_size=1, raw_response_hook=lambda r: pages.append(r.http_response.json())
        )
    )
    assert sorted(p.version for p in listed) == sorted(v["version"] for v in state)
    assert all(p.name == name for p in listed)
    assert len(pages) >= 2
    assert pages[0]["nextLink"].startswith(ep["base_url"])
    assert all("value" not in item for page in pages for item in page["value"])

    updated = client.update_secret_properties(
        name, first.properties.version, enabled=False, tags={"retired": "yes"}
    )
    assert updated.version == first.properties.version
    assert updated.enabled is False
    assert updated.tags == {"retired": "yes"}
    state = versions_in_state(admin, name)
    assert (state[0]["enabled"], state[0]["tags"]) == (False, {"retired": "yes"})
    assert state[1]["enabled"] is True

    with pytest.raises(HttpResponseError) as err:
        client.get_secret(name, first.properties.version)
    assert err.value.status_code == 403
    assert err.value.error.code == "Forbidden"
    assert "SecretDisabled" in str(err.value)
    # The current version is untouched.
    assert client.get_secret(name).value == "value-two"


def test_the_demo_secret_holds_what_the_state_says(ep, operator, admin):
    state = versions_in_state(admin, "stdatasci001-key")
    current = secret_client(ep, operator).get_secret("stdatasci001-key")
    assert current.value == state[-1]["value"]
    assert current.properties.version == state[-1]["version"]
    assert current.properties.content_type == "text/plain"


def test_the_reader_reads_but_may_not_write(ep, reader, admin):
    client = secret_client(ep, reader)
    before = versions_in_state(admin, "stdatasci001-key")
    assert client.get_secret("stdatasci001-key").value == before[-1]["value"]

    with pytest.raises(HttpResponseError) as err:
        client.set_secret("stdatasci001-key", "not-allowed")
    assert err.value.status_code == 403
    assert err.value.error.code == "Forbidden"
    assert "ForbiddenByRbac" in str(err.value)
    assert "Microsoft.KeyVault/vaults/secrets/setSecret/action" in err.value.error.message
    assert versions_in_state(admin, "stdatasci001-key") == before


def test_an_unknown_secret_is_not_found(ep, operator):
    from azure.core.exceptions import ResourceNotFoundError

    with pytest.raises(ResourceNotFoundError) as err:
        secret_client(ep, operator).get_secret(unique("absent"))
    assert err.value.error.code == "SecretNotFound"
