"""azure-mgmt-authorization against the twin's permissions and role definitions.

Promises checked: the permissions of a resource group and of a resource are the
union of the caller's roles that apply there (Reader on the group everywhere below
it; Storage Account Key Operator only on its account); what the permissions API says
a principal may do is exactly what ARM then lets it do (listKeys, both principals);
role definitions by id carry the built-in role's name, type and actions.
"""

import fnmatch

import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.authorization import AuthorizationManagementClient

from conftest import ACCOUNT, arm_kwargs

READER_ROLE = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
KEY_OPERATOR_ROLE = "81a9662b-bebf-436f-a333-f67b29880f12"
SECRETS_USER_ROLE = "4633458b-17de-408a-b874-0445c86b69e6"
LIST_KEYS = "Microsoft.Storage/storageAccounts/listkeys/action"
REGENERATE = "Microsoft.Storage/storageAccounts/regeneratekey/action"


def authz(ep, sub, cred):
    return AuthorizationManagementClient(cred, sub, **arm_kwargs(ep))


def allows(permissions, action):
    """Azure's rule: some entry grants the action and none of its notActions takes it away."""

    def matches(patterns, a):
        return any(fnmatch.fnmatchcase(a.lower(), p.lower()) for p in patterns or [])

    return any(matches(p.actions, action) and not matches(p.not_actions, action) for p in permissions)


def account_permissions(client, rg):
    return list(
        client.permissions.list_for_resource(rg, "Microsoft.Storage", "", "storageAccounts", ACCOUNT)
    )


def test_group_permissions_are_the_readers_only(ep, sub, rg, operator):
    perms = list(authz(ep, sub, operator).permissions.list_for_resource_group(rg))
    assert [p.actions for p in perms] == [["*/read"]]
    assert allows(perms, "Microsoft.Storage/storageAccounts/read")
    assert not allows(perms, LIST_KEYS)


def test_account_permissions_add_the_key_operator_role(ep, sub, rg, operator):
    perms = account_permissions(authz(ep, sub, operator), rg)
    actions = sorted(a for p in perms for a in p.actions)
    assert actions == sorted(["*/read", LIST_KEYS, REGENERATE])
    assert allows(perms, LIST_KEYS) and allows(perms, REGENERATE)
    assert not allows(perms, "Microsoft.Storage/storageAccounts/write")


@pytest.mark.parametrize("who", ["operator", "reader"])
def test_permissions_predict_what_arm_allows(request, ep, sub, rg, storage_client, who):
    cred = request.getfixturevalue(who)
    predicted = allows(account_permissions(authz(ep, sub, cred), rg), LIST_KEYS)
    try:
        storage_client(cred).storage_accounts.list_keys(rg, ACCOUNT)
        allowed = True
    except HttpResponseError as err:
        assert err.error.code == "AuthorizationFailed"
        allowed = False
    assert allowed == predicted
    assert allowed == (who == "operator")


def test_role_definitions_by_id(ep, sub, rg, reader):
    client = authz(ep, sub, reader)
    rid = f"/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{KEY_OPERATOR_ROLE}"
    role = client.role_definitions.get_by_id(rid)
    assert role.id == rid
    assert role.name == KEY_OPERATOR_ROLE
    assert role.role_name == "Storage Account Key Operator Service Role"
    assert role.role_type == "BuiltInRole"
    assert role.type == "Microsoft.Authorization/roleDefinitions"
    assert sorted(role.permissions[0].actions) == sorted([LIST_KEYS, REGENERATE])

    scope = ep["key_vaults"]["kv-datasci"]["id"]
    user = client.role_definitions.get(scope, SECRETS_USER_ROLE)
    assert user.role_name == "Key Vault Secrets User"
    assert "Microsoft.KeyVault/vaults/secrets/getSecret/action" in user.permissions[0].data_actions
    assert "Microsoft.KeyVault/vaults/secrets/setSecret/action" not in user.permissions[0].data_actions

    reader_role = client.role_definitions.get(f"/subscriptions/{sub}/resourceGroups/{rg}", READER_ROLE)
    assert (reader_role.role_name, reader_role.permissions[0].actions) == ("Reader", ["*/read"])


def test_an_unknown_role_definition_is_not_found(ep, sub, operator):
    with pytest.raises(HttpResponseError) as err:
        authz(ep, sub, operator).role_definitions.get(
            f"/subscriptions/{sub}", "00000000-0000-0000-0000-000000000000"
        )
    assert err.value.status_code == 404
    assert err.value.error.code == "RoleDefinitionDoesNotExist"
