"""Throttling as Microsoft's clients meet it.

Promises checked: when the twin's ARM write bucket or a vault's bucket is empty, the
SDK gets 429 with a Retry-After it honours, retries by itself and succeeds, and the
request log shows the refusal followed by the success.
"""

import pytest
from azure.keyvault.secrets import SecretClient

from conftest import ACCOUNT, VAULT


@pytest.fixture
def tight(admin):
    """Restore the twin's settings after a test narrows them."""
    saved = admin.settings()
    yield admin
    admin.settings(**saved)


def statuses(admin, seq, operation):
    return [r["status"] for r in admin.requests_since(seq) if r["operation"] == operation]


def test_arm_writes_are_retried_after_429(rg, storage_client, operator, tight):
    client = storage_client(operator)
    client.storage_accounts.list_keys(rg, ACCOUNT)  # the token is cached before the bucket shrinks
    tight.settings(arm_write_burst=1, arm_write_refill_per_sec=1.0)
    seq = tight.last_seq()
    for _ in range(2):
        keys = client.storage_accounts.list_keys(rg, ACCOUNT)
        assert len(keys["keys"]) == 2
    assert statuses(tight, seq, "storage.listKeys") == [200, 429, 200]


def test_key_vault_reads_are_retried_after_429(ep, operator, tight):
    client = SecretClient(
        vault_url=ep["key_vaults"][VAULT]["url"],
        credential=operator,
        verify_challenge_resource=False,
        connection_verify=ep["ca_pem_path"],
    )
    client.get_secret("stdatasci001-key")  # past the challenge before the bucket shrinks
    tight.settings(keyvault_read_burst=1, keyvault_read_refill_per_sec=1.0)
    seq = tight.last_seq()
    values = {client.get_secret("stdatasci001-key").value for _ in range(2)}
    assert len(values) == 1
    assert statuses(tight, seq, "keyvault.get") == [200, 429, 200]
