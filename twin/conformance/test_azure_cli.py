"""The Azure CLI (``az``, from ``.tools/az-venv``) against the twin.

Runs exactly the commands twin/README.md documents, in a throwaway
``AZURE_CONFIG_DIR``, under the same loopback-only guard as the SDKs. Promises
checked: ``az cloud register`` reads the twin's ``/metadata/endpoints``; a service
principal logs in and sees its subscription; ``az storage account keys list`` and
``renew`` agree with the twin's state (only the renewed key changes); ``az keyvault
secret set``/``show`` reach the path-based vault (through ``--vault-name HOST:PORT/keyvault/NAME``
and a ``/`` Key Vault DNS suffix, or through ``--id``); the reader is refused keys
with AuthorizationFailed; ``az functionapp config appsettings list/set`` (site and
slot) and ``az webapp config connection-string set/list`` read and replace the
settings the twin holds, marking sticky settings as ``slotSetting``, and the reader
is refused the settings list. (``az datafactory`` is an extension that does not
install from PyPI; test_datafactory.py covers ``linked-service show`` with the SDK.)
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import ACCOUNT, OFFLINE_DIR, OPERATOR, READER, VAULT, unique

REPO = Path(__file__).resolve().parents[2]
CLOUD = "KeyflipTwin"


def az_path() -> Path:
    path = Path(os.environ.get("KEYFLIP_AZ", REPO / ".tools/az-venv/bin/az"))
    if not path.exists():
        pytest.fail(f"{path} is missing: run .ci/setup, which installs the Azure CLI into .tools/az-venv")
    return path


def seed_version_check(exe: Path, config_dir: Path) -> None:
    """Tell a fresh profile it knows the CLI's version.

    Otherwise the first command in a new config directory asks
    azcliprod.blob.core.windows.net for the latest release (handle_version_update),
    which the offline guard refuses and reports.
    """
    python = exe.parent / "python"
    version = subprocess.run(
        [str(python), "-c", "from azure.cli.core import __version__; print(__version__)"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()
    local = {"local": version}
    (config_dir / "versionCheck.json").write_text(
        json.dumps({"versions": {"azure-cli": local, "core": local}, "update_time": ""})
    )


class Az:
    """One Azure CLI profile in its own config directory."""

    def __init__(self, ep, config_dir: Path):
        self.exe = az_path()
        seed_version_check(self.exe, config_dir)
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "IDENTITY_", "MSI_"))
        }
        self.env.update(
            AZURE_CONFIG_DIR=str(config_dir),
            REQUESTS_CA_BUNDLE=ep["ca_pem_path"],
            AZURE_CORE_COLLECT_TELEMETRY="false",
            AZURE_CORE_SURVEY_MESSAGE="false",
            AZURE_CORE_NO_COLOR="true",
            PYTHONPATH=str(OFFLINE_DIR),
        )

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.exe), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )

    def json(self, *args: str):
        done = self.run(*args, "--output", "json")
        assert done.returncode == 0, f"az {' '.join(args)} failed ({done.returncode}): {done.stderr}"
        return json.loads(done.stdout) if done.stdout.strip() else None


def logged_in(ep, tmp_path_factory, principal: str) -> Az:
    az = Az(ep, tmp_path_factory.mktemp(f"az-{principal}"))
    az.json("cloud", "register", "--name", CLOUD, "--endpoint-resource-manager", ep["arm_url"],
            "--suffix-keyvault-dns", "/")
    az.json("cloud", "set", "--name", CLOUD)
    # MSAL would otherwise ask login.microsoftonline.com to vouch for the authority.
    az.json("config", "set", "core.instance_discovery=false")
    p = ep["principals"][principal]
    az.json("login", "--service-principal", "--username", p["client_id"],
            "--password", p["client_secret"], "--tenant", ep["tenant_id"])
    return az


@pytest.fixture(scope="module")
def az(ep, tmp_path_factory) -> Az:
    return logged_in(ep, tmp_path_factory, OPERATOR)


def test_the_cloud_is_registered_from_the_twins_metadata(ep, az):
    cloud = az.json("cloud", "show", "--name", CLOUD)
    assert cloud["isActive"] is True
    assert cloud["endpoints"]["resourceManager"] == ep["arm_url"]
    # These come from /metadata/endpoints, not from the command line.
    assert cloud["endpoints"]["activeDirectory"] == ep["authority_host"]
    assert cloud["endpoints"]["activeDirectoryResourceId"] == "https://management.core.windows.net/"


def test_the_service_principal_sees_its_subscription(ep, sub, az):
    account = az.json("account", "show")
    assert account["id"] == sub
    assert account["name"] == ep["subscriptions"][sub]["display_name"]
    assert account["tenantId"] == ep["tenant_id"]
    assert account["user"] == {"name": ep["principals"][OPERATOR]["client_id"], "type": "servicePrincipal"}


def test_keys_list_and_renew(rg, az, admin):
    listed = {k["keyName"]: k for k in az.json("storage", "account", "keys", "list", "-g", rg, "-n", ACCOUNT)}
    before = admin.account()
    assert {n: k["value"] for n, k in listed.items()} == {"key1": before["key1"], "key2": before["key2"]}
    assert {k["permissions"] for k in listed.values()} == {"FULL"}

    renewed = {
        k["keyName"]: k["value"]
        for k in az.json("storage", "account", "keys", "renew", "-g", rg, "-n", ACCOUNT, "--key", "key2")
    }
    after = admin.account()
    assert renewed == {"key1": after["key1"], "key2": after["key2"]}
    assert after["key1"] == before["key1"]
    assert after["key2"] != before["key2"]


def test_keyvault_secret_set_and_show(ep, az, admin):
    vault = ep["key_vaults"][VAULT]["url"].removeprefix("https://")
    name = unique("az-cli")
    made = az.json("keyvault", "secret", "set", "--vault-name", vault, "--name", name, "--value", "from-az")
    version = made["id"].rsplit("/", 1)[1]
    assert made["id"] == f"{ep['base_url']}/secrets/{name}/{version}"
    assert made["value"] == "from-az"
    stored = admin.state()["key_vaults"][VAULT]["secrets"][name]
    assert [(v["version"], v["value"]) for v in stored] == [(version, "from-az")]

    shown = az.json("keyvault", "secret", "show", "--vault-name", vault, "--name", name)
    assert (shown["id"], shown["value"]) == (made["id"], "from-az")
    by_id = az.json("keyvault", "secret", "show", "--id", made["id"])
    assert by_id["value"] == "from-az"
    latest = az.json("keyvault", "secret", "show", "--id", f"{ep['base_url']}/secrets/{name}")
    assert latest["id"] == made["id"]


def test_the_reader_is_refused_keys(ep, rg, tmp_path_factory, admin):
    reader = logged_in(ep, tmp_path_factory, READER)
    before = admin.account()
    done = reader.run("storage", "account", "keys", "list", "-g", rg, "-n", ACCOUNT, "--output", "json")
    assert done.returncode != 0
    assert "AuthorizationFailed" in done.stderr
    assert "Microsoft.Storage/storageAccounts/listKeys/action" in done.stderr
    assert before["key1"] not in done.stdout + done.stderr


SITE = "func-datasci-ingest"


def test_functionapp_appsettings_list_and_set(rg, az, admin):
    before = admin.state()["web_apps"][SITE]
    listed = az.json("functionapp", "config", "appsettings", "list", "-g", rg, "-n", SITE)
    assert {s["name"]: s["value"] for s in listed} == before["appSettings"]
    sticky = {s["name"] for s in listed if s["slotSetting"]}
    assert sticky == set(before["slotConfigNames"]["appSettingNames"]) & set(before["appSettings"])
    assert "AzureWebJobsStorage" in sticky

    done = az.json("functionapp", "config", "appsettings", "set", "-g", rg, "-n", SITE,
                   "--settings", "FROM_AZ_CLI=1")
    # The CLI redacts values in what it prints after a set.
    assert {s["name"] for s in done} == set(before["appSettings"]) | {"FROM_AZ_CLI"}
    after = admin.state()["web_apps"][SITE]
    assert after["appSettings"] == dict(before["appSettings"], FROM_AZ_CLI="1")
    assert after["restarts"] == before["restarts"] + 1

    slot = az.json("functionapp", "config", "appsettings", "list", "-g", rg, "-n", SITE, "--slot", "staging")
    assert {s["name"]: s["value"] for s in slot} == after["slots"]["staging"]["appSettings"]


def test_webapp_connection_string_set_and_list(rg, az, admin):
    az.json("webapp", "config", "connection-string", "set", "-g", rg, "-n", SITE,
            "--connection-string-type", "Custom", "--settings", "FromAzCli=UseDevelopmentStorage=true")
    listed = az.json("webapp", "config", "connection-string", "list", "-g", rg, "-n", SITE)
    held = admin.state()["web_apps"][SITE]["connectionStrings"]
    assert {c["name"]: (c["value"], c["type"]) for c in listed} == {
        name: (c["value"], c["type"]) for name, c in held.items()
    }
    assert held["FromAzCli"] == {"value": "UseDevelopmentStorage=true", "type": "Custom"}


def test_the_reader_is_refused_app_settings(ep, rg, tmp_path_factory, admin):
    reader = logged_in(ep, tmp_path_factory, READER)
    secret = admin.state()["web_apps"][SITE]["appSettings"]["AzureWebJobsStorage"]
    done = reader.run("functionapp", "config", "appsettings", "list", "-g", rg, "-n", SITE, "--output", "json")
    assert done.returncode != 0
    assert "AuthorizationFailed" in done.stderr
    assert "Microsoft.Web/sites/config/list/action" in done.stderr
    assert secret not in done.stdout + done.stderr
