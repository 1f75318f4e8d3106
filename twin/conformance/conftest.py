"""Shared fixtures for the twin's conformance suite.

The suite drives a running keyflip-twin with Microsoft's own Python SDKs and the
Azure CLI. It reads everything from the twin's ``endpoints.json`` (path in
``KEYFLIP_TWIN_ENDPOINTS``) and trusts only the twin's CA. The run is offline by construction: a guard installed
here refuses any connection or name lookup that is not the loopback interface, so an
SDK that tried to reach Azure, even one that swallowed the error, fails the test
that caused it, naming the host (see ``offline/sitecustomize.py``).

Tests change the twin's state (they regenerate keys and write secrets), so none of
them assumes the demo world's starting values: each reads the state it depends on
from the admin API first, and compares against that.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import pytest
import requests

ARM_SCOPE = "https://management.azure.com/.default"
VAULT_SCOPE = "https://vault.azure.net/.default"
OPERATOR = "keyflip-operator"
READER = "keyflip-reader"
ACCOUNT = "stdatasci001"
VAULT = "kv-datasci"
WORKSPACE = "mlw-datasci"


def _load_endpoints() -> Dict[str, Any]:
    path = os.environ.get("KEYFLIP_TWIN_ENDPOINTS")
    if not path:
        raise pytest.UsageError(
            "KEYFLIP_TWIN_ENDPOINTS is not set: it must name the endpoints.json of a "
            "running keyflip-twin (cargo test -p keyflip-twin --test wire conformance "
            "starts one and sets it)"
        )
    return json.loads(Path(path).read_text())


ENDPOINTS = _load_endpoints()


# --- offline guard -----------------------------------------------------------------

OFFLINE_DIR = Path(__file__).resolve().parent / "offline"


_OWN_LOG = not os.environ.get("KEYFLIP_OFFLINE_LOG")


def _install_offline_guard() -> Path:
    """Install the loopback-only guard here and name its log for child processes."""
    log = os.environ.get("KEYFLIP_OFFLINE_LOG")
    if not log:
        fd, log = tempfile.mkstemp(prefix="keyflip-offline-", suffix=".log")
        os.close(fd)
        os.environ["KEYFLIP_OFFLINE_LOG"] = log
    spec = importlib.util.spec_from_file_location("keyflip_offline_guard", OFFLINE_DIR / "sitecustomize.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return Path(log)


OFFLINE_LOG = _install_offline_guard()


def _offline_lines() -> List[str]:
    try:
        return OFFLINE_LOG.read_text().splitlines()
    except FileNotFoundError:
        return []


@pytest.fixture(autouse=True)
def stays_offline():
    """Fail a test during which anything tried to leave the machine, even if swallowed."""
    before = len(_offline_lines())
    yield
    attempts = _offline_lines()[before:]
    assert not attempts, "tried to reach beyond 127.0.0.1: " + "; ".join(attempts)


def pytest_sessionfinish(session, exitstatus):
    # Also catches attempts made while setting up wider-scoped fixtures.
    attempts = _offline_lines()
    if attempts:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter:
            reporter.write_line("tried to reach beyond 127.0.0.1: " + "; ".join(attempts), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if _OWN_LOG:
        OFFLINE_LOG.unlink(missing_ok=True)


# --- environment -------------------------------------------------------------------

def pytest_configure(config):
    ca = ENDPOINTS["ca_pem_path"]
    if not ca:
        raise pytest.UsageError("endpoints.json has no ca_pem_path: start the twin with a state directory")
    # Trust the twin's CA and nothing else (requests, and so MSAL, read this).
    os.environ["REQUESTS_CA_BUNDLE"] = ca
    # Nothing may reach the SDKs from the developer's own Azure set-up.
    for name in list(os.environ):
        if name.startswith(("AZURE_", "IDENTITY_", "MSI_")) or name == "CURL_CA_BUNDLE":
            del os.environ[name]


@pytest.fixture(scope="session")
def ep() -> Dict[str, Any]:
    return ENDPOINTS


@pytest.fixture(scope="session")
def ca(ep) -> str:
    return ep["ca_pem_path"]


@pytest.fixture(scope="session")
def sub(ep) -> str:
    (only,) = ep["subscriptions"].keys()
    return only


@pytest.fixture(scope="session")
def rg(ep) -> str:
    # /subscriptions/{sub}/resourceGroups/{rg}/providers/...
    return ep["storage_accounts"][ACCOUNT]["id"].split("/")[4]


def credential_for(ep: Dict[str, Any], principal: str, secret: Optional[str] = None):
    from azure.identity import ClientSecretCredential

    p = ep["principals"][principal]
    return ClientSecretCredential(
        ep["tenant_id"],
        p["client_id"],
        secret if secret is not None else p["client_secret"],
        authority=ep["authority_host"],
        disable_instance_discovery=True,
        connection_verify=ep["ca_pem_path"],
    )


@pytest.fixture(scope="session")
def operator(ep):
    return credential_for(ep, OPERATOR)


@pytest.fixture(scope="session")
def reader(ep):
    return credential_for(ep, READER)


def jwt_claims(token: str) -> Dict[str, Any]:
    """The payload of a JWT, without checking it (the twin checks its own tokens)."""
    payload = token.split(".")[1]
    payload += "=" * (-len(payload) % 4)
    return json.loads(base64.urlsafe_b64decode(payload))


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# --- the admin API -------------------------------------------------------------------

class Admin:
    """The twin's admin API: state snapshots, the request log, settings, the clock."""

    def __init__(self, ep: Dict[str, Any]):
        self.url = ep["admin"]["url"]
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {ep['admin']['token']}"
        self.session.verify = ep["ca_pem_path"]

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        r = self.session.request(method, f"{self.url}{path}", json=body, timeout=10)
        assert r.status_code == 200, f"admin {method} {path}: {r.status_code} {r.text}"
        return r.json()

    def state(self) -> Dict[str, Any]:
        return self._call("GET", "/state")

    def account(self, name: str = ACCOUNT) -> Dict[str, Any]:
        return self.state()["storage_accounts"][name]

    def settings(self, **patch) -> Dict[str, Any]:
        return self._call("PATCH", "/settings", patch) if patch else self._call("GET", "/settings")

    def clock(self) -> Dict[str, Any]:
        return self._call("GET", "/clock")

    def advance(self, secs: float) -> Dict[str, Any]:
        return self._call("POST", "/clock", {"advance_secs": secs})

    def federated_token(self, principal: str) -> str:
        """A client assertion from the principal's federated credential (a workload's token)."""
        return self._call("POST", "/federated-token", {"principal": principal})["token"]

    def last_seq(self) -> int:
        log = self._call("GET", "/requests")
        return log[-1]["seq"] if log else 0

    def requests_since(self, seq: int) -> List[Dict[str, Any]]:
        return self._call("GET", f"/requests?since={seq}")


@pytest.fixture(scope="session")
def admin(ep) -> Admin:
    return Admin(ep)


class Recorder:
    """An azure-core ``raw_request_hook`` that keeps what the SDK put on the wire."""

    def __init__(self):
        self.requests: List[Any] = []

    def __call__(self, pipeline_request) -> None:
        self.requests.append(pipeline_request.http_request)

    @property
    def urls(self) -> List[str]:
        return [r.url for r in self.requests]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def arm_kwargs(ep) -> Dict[str, Any]:
    """What every ARM management client needs to talk to the twin."""
    return {
        "base_url": ep["arm_url"],
        "credential_scopes": [ARM_SCOPE],
        "connection_verify": ep["ca_pem_path"],
    }


@pytest.fixture(scope="session")
def storage_client(ep, sub) -> Callable[[Any], Any]:
    from azure.mgmt.storage import StorageManagementClient

    return lambda cred: StorageManagementClient(cred, sub, **arm_kwargs(ep))
