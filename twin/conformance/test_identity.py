"""azure-identity against the twin's Entra ID and managed identity endpoints.

Promises checked: ClientSecretCredential gets tokens for ARM and Key Vault from the
twin's authority (no instance discovery), the tokens name the principal, tenant and
audience asked for, a wrong secret is refused with Entra's AADSTS code, and
ManagedIdentityCredential (App Service form) gets a token for the world's default
identity or for the identity selected by client id or resource id;
WorkloadIdentityCredential exchanges a federated (service account) token for the
principal it was issued for, and not for another; CertificateCredential signs its
client assertion with the certificate registered on the principal (twin/worlds/certs)
and gets a token, while a certificate not registered on the app is refused with
AADSTS700027.
"""

import time
from pathlib import Path

import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import ManagedIdentityCredential, WorkloadIdentityCredential

from conftest import ARM_SCOPE, OPERATOR, READER, VAULT_SCOPE, credential_for, jwt_claims


def test_client_secret_credential_gets_an_arm_token_naming_the_principal(ep, admin):
    # A fresh credential: a cached token would carry the clock offset of its minting.
    token = credential_for(ep, OPERATOR).get_token(ARM_SCOPE)
    claims = jwt_claims(token.token)
    p = ep["principals"][OPERATOR]
    assert claims["aud"] == ep["arm_audience"]
    assert claims["tid"] == ep["tenant_id"]
    assert claims["oid"] == p["object_id"]
    assert claims["appid"] == p["client_id"]
    assert claims["iss"] == f"https://sts.windows.net/{ep['tenant_id']}/"
    # The SDK computes its expiry from expires_in on the host clock; the token's exp is
    # on the twin clock, which tests may have moved ahead of the host's.
    offset = admin.clock()["offset_ms"] / 1000
    assert abs(claims["exp"] - offset - token.expires_on) <= 2
    assert token.expires_on > time.time()


def test_client_secret_credential_gets_a_vault_token_for_another_principal(ep, reader):
    claims = jwt_claims(reader.get_token(VAULT_SCOPE).token)
    assert claims["aud"] == "https://vault.azure.net"
    assert claims["oid"] == ep["principals"][READER]["object_id"]


def test_a_wrong_client_secret_is_refused_with_aadsts7000215(ep):
    cred = credential_for(ep, OPERATOR, secret="not-the-secret")
    with pytest.raises(ClientAuthenticationError) as err:
        cred.get_token(ARM_SCOPE)
    assert "AADSTS7000215" in str(err.value)


def test_an_unknown_scope_is_refused(ep, operator):
    with pytest.raises(ClientAuthenticationError) as err:
        operator.get_token("https://unknown.example.invalid/.default")
    assert "AADSTS500011" in str(err.value)


@pytest.fixture
def app_service_identity(ep, monkeypatch):
    monkeypatch.setenv("IDENTITY_ENDPOINT", ep["managed_identity"]["endpoint"])
    monkeypatch.setenv("IDENTITY_HEADER", ep["managed_identity"]["header"])


def test_managed_identity_credential_gets_the_default_identity(ep, app_service_identity, admin):
    seq = admin.last_seq()
    token = ManagedIdentityCredential(connection_verify=ep["ca_pem_path"]).get_token(ARM_SCOPE)
    claims = jwt_claims(token.token)
    assert claims["aud"] == ep["arm_audience"]
    assert claims["oid"] == ep["principals"][OPERATOR]["object_id"]
    assert token.expires_on == claims["exp"]
    ops = [(r["operation"], r["status"]) for r in admin.requests_since(seq)]
    assert ops == [("msi.token", 200)]


def test_managed_identity_credential_selects_an_identity_by_client_id(ep, app_service_identity):
    p = ep["principals"][READER]
    cred = ManagedIdentityCredential(client_id=p["client_id"], connection_verify=ep["ca_pem_path"])
    claims = jwt_claims(cred.get_token(VAULT_SCOPE).token)
    assert claims["aud"] == "https://vault.azure.net"
    assert claims["oid"] == p["object_id"]


def test_managed_identity_credential_selects_an_identity_by_resource_id(ep, sub, rg, app_service_identity):
    # The twin matches a user-assigned identity's resource id by its last segment.
    resource_id = (
        f"/subscriptions/{sub}/resourceGroups/{rg}/providers/"
        f"Microsoft.ManagedIdentity/userAssignedIdentities/{READER}"
    )
    cred = ManagedIdentityCredential(
        identity_config={"resource_id": resource_id}, connection_verify=ep["ca_pem_path"]
    )
    claims = jwt_claims(cred.get_token(ARM_SCOPE).token)
    assert claims["oid"] == ep["principals"][READER]["object_id"]


def test_managed_identity_with_the_wrong_header_is_refused(ep, monkeypatch):
    monkeypatch.setenv("IDENTITY_ENDPOINT", ep["managed_identity"]["endpoint"])
    monkeypatch.setenv("IDENTITY_HEADER", "not-the-header")
    with pytest.raises(ClientAuthenticationError):
        ManagedIdentityCredential(connection_verify=ep["ca_pem_path"]).get_token(ARM_SCOPE)


def test_workload_identity_credential_exchanges_a_federated_token(ep, admin, tmp_path):
    # A Kubernetes service account token, as the twin's federated credential expects it.
    assertion = admin.federated_token(OPERATOR)
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text(assertion)
    p = ep["principals"][OPERATOR]
    cred = WorkloadIdentityCredential(
        tenant_id=ep["tenant_id"],
        client_id=p["client_id"],
        token_file_path=str(token_file),
        authority=ep["authority_host"],
        disable_instance_discovery=True,
        connection_verify=ep["ca_pem_path"],
    )
    claims = jwt_claims(cred.get_token(ARM_SCOPE).token)
    assert (claims["oid"], claims["aud"]) == (p["object_id"], ep["arm_audience"])


def test_workload_identity_with_another_principals_assertion_is_refused(ep, admin, tmp_path):
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text(admin.federated_token(OPERATOR))
    cred = WorkloadIdentityCredential(
        tenant_id=ep["tenant_id"],
        client_id=ep["principals"][READER]["client_id"],
        token_file_path=str(token_file),
        authority=ep["authority_host"],
        disable_instance_discovery=True,
        connection_verify=ep["ca_pem_path"],
    )
    with pytest.raises(ClientAuthenticationError) as err:
        cred.get_token(ARM_SCOPE)
    assert "AADSTS70021" in str(err.value)


# --- client certificates -------------------------------------------------------------

CERTS = Path(__file__).resolve().parent.parent / "worlds" / "certs"


def certificate_credential(ep, principal, pem):
    from azure.identity import CertificateCredential

    return CertificateCredential(
        ep["tenant_id"],
        ep["principals"][principal]["client_id"],
        certificate_path=str(CERTS / pem),
        authority=ep["authority_host"],
        disable_instance_discovery=True,
        connection_verify=ep["ca_pem_path"],
    )


def test_certificate_credential_gets_a_token_with_the_registered_certificate(ep, admin):
    seq = admin.last_seq()
    cred = certificate_credential(ep, OPERATOR, "keyflip-operator.pem")
    claims = jwt_claims(cred.get_token(ARM_SCOPE).token)
    assert claims["oid"] == ep["principals"][OPERATOR]["object_id"]
    assert claims["appidacr"] == "2", "a certificate, not a secret"
    ops = [(r["operation"], r["status"]) for r in admin.requests_since(seq)]
    assert ("entra.token", 200) in ops, ops


def test_certificate_credential_with_an_unregistered_certificate_is_refused(ep):
    cred = certificate_credential(ep, OPERATOR, "unregistered.pem")
    with pytest.raises(ClientAuthenticationError) as err:
        cred.get_token(ARM_SCOPE)
    assert "AADSTS700027" in str(err.value)


def test_certificate_credential_for_an_app_without_that_certificate_is_refused(ep):
    cred = certificate_credential(ep, READER, "keyflip-operator.pem")
    with pytest.raises(ClientAuthenticationError) as err:
        cred.get_token(ARM_SCOPE)
    assert "AADSTS700027" in str(err.value)
