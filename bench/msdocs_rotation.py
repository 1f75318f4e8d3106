"""The demo account's key rotation scripted the way Microsoft's documentation describes
it, with Microsoft's Python SDKs, one call after another. keyflip-bench runs it on the
same twin as keyflip and compares wall time and ARM writes.

The steps follow Microsoft Learn:
- "Manage storage account access keys" and the Key Vault dual-key rotation tutorial
  (tutorial-rotation-dual): find which key the secret holds (listKeys), regenerate the
  other one, store it in Key Vault with a CredentialId tag;
- "Regenerate storage account access keys" for Azure Machine Learning
  (how-to-change-storage-access-key): update every datastore that uses the account
  with the new key, then sync the workspace's keys (`begin_sync_keys`);
- Databricks-backed secret scopes: `POST /api/2.0/secrets/put` with the new value;
- then regenerate the key consumers left (the old one).

Nothing is verified: the documentation does not say how. Prints one JSON object:
{"seconds": wall time from the first Azure call to the last answer}.

Usage: python msdocs_rotation.py ENDPOINTS_JSON   (REQUESTS_CA_BUNDLE = the twin's CA)
"""

import json
import sys
import time

import requests
from azure.ai.ml import MLClient
from azure.ai.ml.entities import AccountKeyConfiguration
from azure.identity import ClientSecretCredential
from azure.keyvault.secrets import SecretClient
from azure.mgmt.storage import StorageManagementClient

ACCOUNT = "stdatasci001"
VAULT = "kv-datasci"
WORKSPACE = "mlw-datasci"
DATABRICKS = "dbw-datasci"
SCOPE = "datasci"
ARM_SCOPE = "https://management.azure.com/.default"
DATABRICKS_SCOPE = "2ff814a6-3304-4ab8-85cb-cd0e6f879c1d/.default"


def main() -> None:
    ep = json.load(open(sys.argv[1]))
    ca = ep["ca_pem_path"]
    p = ep["principals"]["keyflip-operator"]
    cred = ClientSecretCredential(
        ep["tenant_id"],
        p["client_id"],
        p["client_secret"],
        authority=ep["authority_host"],
        disable_instance_discovery=True,
        connection_verify=ca,
    )
    account_id = ep["storage_accounts"][ACCOUNT]["id"]
    sub, rg = account_id.split("/")[2], account_id.split("/")[4]
    arm = ep["arm_url"]
    storage = StorageManagementClient(
        cred, sub, base_url=arm, credential_scopes=[ARM_SCOPE], connection_verify=ca
    )
    vault = SecretClient(
        ep["key_vaults"][VAULT]["url"], cred, verify_challenge_resource=False, connection_verify=ca
    )
    ml = MLClient(
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
        connection_verify=ca,
        enable_telemetry=False,
        show_progress=False,
    )
    blob = ep["storage_accounts"][ACCOUNT]["blob_endpoint"]

    started = time.monotonic()
    # Which key is in use: the one the Key Vault secret holds.
    keys = {k["keyName"]: k["value"] for k in storage.storage_accounts.list_keys(rg, ACCOUNT)["keys"]}
    current = vault.get_secret(f"{ACCOUNT}-key").value
    active = next(name for name, value in keys.items() if value == current)
    standby = "key2" if active == "key1" else "key1"

    # Regenerate the key nobody uses.
    regenerated = storage.storage_accounts.regenerate_key(rg, ACCOUNT, {"keyName": standby})
    new = {k["keyName"]: k["value"] for k in regenerated["keys"]}[standby]

    # Key Vault: the raw key and the connection string, tagged with the key's name.
    vault.set_secret(f"{ACCOUNT}-key", new, content_type="text/plain", tags={"CredentialId": standby})
    connection = f"DefaultEndpointsProtocol=https;AccountName={ACCOUNT};AccountKey={new};BlobEndpoint={blob}"
    vault.set_secret(
        f"{ACCOUNT}-connection-string", connection, content_type="text/plain", tags={"CredentialId": standby}
    )

    # Azure ML: every datastore on the account that uses its key, then the workspace.
    for ds in ml.datastores.list():
        if getattr(ds, "account_name", None) != ACCOUNT:
            continue
        if not isinstance(ds.credentials, AccountKeyConfiguration):
            continue
        ds.credentials = AccountKeyConfiguration(account_key=new)
        ml.datastores.create_or_update(ds)
    ml.workspaces.begin_sync_keys(WORKSPACE).result()

    # Databricks-backed secret scope.
    token = cred.get_token(DATABRICKS_SCOPE).token
    r = requests.post(
        f"{ep['databricks_workspaces'][DATABRICKS]['url']}/api/2.0/secrets/put",
        json={"scope": SCOPE, "key": f"{ACCOUNT}-key", "string_value": new},
        headers={"Authorization": f"Bearer {token}"},
        verify=ca,
        timeout=30,
    )
    r.raise_for_status()

    # Retire the key consumers left.
    storage.storage_accounts.regenerate_key(rg, ACCOUNT, {"keyName": active})
    print(json.dumps({"seconds": time.monotonic() - started}))


if __name__ == "__main__":
    main()
