"""azure-mgmt-storage against the twin's storage accounts.

Promises checked: get_properties describes the account as the twin's state has it
(endpoint, shared-key setting, key creation times); list_keys (sent with
``$expand=kerb``, as the SDK does) returns both keys with FULL permissions;
regenerate_key changes only the named key and moves only its keyCreationTime; the
reader principal is refused listKeys and regenerateKey with ARM's
AuthorizationFailed, naming the action and the scope, and changes nothing; a token
for another audience, or one past its expiry on the twin clock, is refused with
ARM's 401 codes and a challenge.
"""

from datetime import datetime

import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError

from conftest import ACCOUNT, OPERATOR, VAULT_SCOPE, credential_for


def parse_time(value):
    """ARM's times (7 fractional digits) or the SDK's datetimes, as aware datetimes."""
    if isinstance(value, datetime):
        return value
    head, _, frac = value.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00")


def keys_by_name(result):
    return {k["keyName"]: k for k in result["keys"]}


def test_get_properties_describes_the_account(ep, rg, storage_client, operator, admin):
    props = storage_client(operator).storage_accounts.get_properties(rg, ACCOUNT)
    state = admin.account()
    assert props.id == ep["storage_accounts"][ACCOUNT]["id"]
    assert props.name == ACCOUNT
    assert props.type == "Microsoft.Storage/storageAccounts"
    assert props.properties.primary_endpoints.blob == ep["storage_accounts"][ACCOUNT]["blob_endpoint"]
    assert props.properties.allow_shared_key_access is state["allowSharedKeyAccess"]
    assert props.properties.provisioning_state == "Succeeded"
    kct = props.properties.key_creation_time
    assert parse_time(kct.key1) == parse_time(state["keyCreationTime"]["key1"])
    assert parse_time(kct.key2) == parse_time(state["keyCreationTime"]["key2"])


def test_list_keys_with_kerb_expand_returns_both_keys(rg, storage_client, operator, admin, recorder):
    result = storage_client(operator).storage_accounts.list_keys(
        rg, ACCOUNT, expand="kerb", raw_request_hook=recorder
    )
    assert any("$expand=kerb" in url for url in recorder.urls), recorder.urls
    state = admin.account()
    keys = keys_by_name(result)
    assert set(keys) == {"key1", "key2"}
    for name in ("key1", "key2"):
        assert keys[name]["value"] == state[name]
        assert keys[name]["permissions"] == "FULL"
        assert parse_time(keys[name]["creationTime"]) == parse_time(state["keyCreationTime"][name])


def test_regenerate_key_changes_only_that_key(rg, storage_client, operator, admin):
    client = storage_client(operator)
    before = admin.account()
    # Move the twin clock so the new creation time is strictly later at any resolution.
    admin.advance(5)
    result = client.storage_accounts.regenerate_key(rg, ACCOUNT, {"keyName": "key2"})
    keys = keys_by_name(result)
    after = admin.account()
    assert keys["key2"]["value"] != before["key2"]
    assert keys["key2"]["value"] == after["key2"]
    assert keys["key1"]["value"] == before["key1"] == after["key1"]
    assert keys["key2"]["permissions"] == "FULL"

    props = client.storage_accounts.get_properties(rg, ACCOUNT).properties.key_creation_time
    assert parse_time(props.key2) > parse_time(before["keyCreationTime"]["key2"])
    assert parse_time(props.key1) == parse_time(before["keyCreationTime"]["key1"])
    listed = keys_by_name(client.storage_accounts.list_keys(rg, ACCOUNT))
    assert listed["key2"]["value"] == after["key2"]


def test_the_reader_is_refused_keys_with_authorization_failed(ep, rg, storage_client, reader, admin):
    client = storage_client(reader)
    # Reader may read the account...
    assert client.storage_accounts.get_properties(rg, ACCOUNT).name == ACCOUNT
    before = admin.account()
    scope = ep["storage_accounts"][ACCOUNT]["id"]
    # ...but not its keys, and may not regenerate them.
    for call, action in (
        (lambda: client.storage_accounts.list_keys(rg, ACCOUNT), "listKeys/action"),
        (
            lambda: client.storage_accounts.regenerate_key(rg, ACCOUNT, {"keyName": "key1"}),
            "regenerateKey/action",
        ),
    ):
        with pytest.raises(HttpResponseError) as err:
            call()
        assert err.value.status_code == 403
        assert err.value.error.code == "AuthorizationFailed"
        message = err.value.error.message
        assert f"Microsoft.Storage/storageAccounts/{action}" in message
        assert f"over scope '{scope}'" in message
    after = admin.account()
    assert (after["key1"], after["key2"]) == (before["key1"], before["key2"])


def test_an_unknown_account_is_not_found(rg, storage_client, operator):
    with pytest.raises(ResourceNotFoundError) as err:
        storage_client(operator).storage_accounts.get_properties(rg, "stdoesnotexist")
    assert err.value.error.code == "ResourceNotFound"


class FixedScope:
    """A credential that answers every request with a token for one scope."""

    def __init__(self, cred, scope):
        self.cred, self.scope = cred, scope

    def get_token(self, *scopes, **kwargs):
        return self.cred.get_token(self.scope)

    def get_token_info(self, *scopes, options=None):
        return self.cred.get_token_info(self.scope)


def test_a_token_for_another_audience_is_refused(rg, storage_client, operator):
    client = storage_client(FixedScope(operator, VAULT_SCOPE))
    with pytest.raises(ClientAuthenticationError) as err:
        client.storage_accounts.list_keys(rg, ACCOUNT)
    assert err.value.status_code == 401
    assert err.value.error.code == "InvalidAuthenticationTokenAudience"
    assert err.value.response.headers["WWW-Authenticate"].startswith("Bearer authorization_uri=")


def test_an_expired_token_is_refused(ep, rg, storage_client, admin):
    saved = admin.settings()
    # Longer than azure-core's 300 s refresh window, so the SDK keeps the token.
    admin.settings(token_lifetime_secs=400)
    try:
        client = storage_client(credential_for(ep, OPERATOR))
        assert len(client.storage_accounts.list_keys(rg, ACCOUNT)["keys"]) == 2
        admin.advance(401)
        # The SDK still holds the token (its clock did not move); the twin's did.
        with pytest.raises(ClientAuthenticationError) as err:
            client.storage_accounts.list_keys(rg, ACCOUNT)
        assert err.value.error.code == "ExpiredAuthenticationToken"
    finally:
        admin.settings(**saved)
