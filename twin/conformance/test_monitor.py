"""Microsoft's Azure Monitor clients against the twin.

Promises checked: azure-monitor-query's LogsQueryClient, pointed at the twin's
``log_analytics`` endpoint with the Log Analytics audience, runs the usage-gate query
from twin/README.md and reads the answer (typed columns, datetimes parsed); a request
made with azure-storage-blob's own SharedKey signer shows up in it with Azure's
AuthenticationHash format once the ingestion delay has passed; a query outside the
subset is an HttpResponseError carrying Log Analytics' BadArgumentError; a token for
another audience is refused. azure-mgmt-monitor lists and reads the diagnostic setting
of the demo account's blob service and gets Azure's errors for a missing setting and a
write without the role.

The twin clock is moved by seconds only here: later files sign Blob requests with the
system clock, which the twin refuses once it is 15 minutes behind.
"""

import base64
import hashlib
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.monitor.query import LogsQueryClient, LogsQueryStatus
from azure.storage.blob import BlobServiceClient

from conftest import ACCOUNT, OPERATOR, READER, arm_kwargs, credential_for

WORKSPACE = "log-datasci"
README = Path(__file__).resolve().parents[1] / "README.md"


def usage_gate_query(**params) -> str:
    """The query under twin/README.md's usage-gate marker, parameters filled in."""
    text = README.read_text()
    block = text.split("<!-- usage-gate-query -->", 1)[1].split("```kusto", 1)[1].split("```", 1)[0]
    for name, value in params.items():
        block = block.replace("{" + name + "}", value)
    assert not re.search(r"\{[a-z_0-9]+\}", block), block
    return block


def logs_client(ep, principal=OPERATOR, audience=None):
    la = ep["log_analytics"]
    return LogsQueryClient(
        # A fresh credential: a token cached by another test may be past its expiry
        # on the twin clock.
        credential_for(ep, principal),
        endpoint=la["url"],
        audience=audience or la["audience"],
        connection_verify=ep["ca_pem_path"],
    )


def twin_now(admin) -> datetime:
    return datetime.fromisoformat(admin.clock()["now"].replace("Z", "+00:00"))


def test_logs_query_client_runs_the_usage_gate_query(ep, admin):
    key1 = admin.account()["key1"]
    start = twin_now(admin) - timedelta(seconds=5)
    blob = BlobServiceClient(
        ep["storage_accounts"][ACCOUNT]["blob_endpoint"],
        credential={"account_name": ACCOUNT, "account_key": key1},
        connection_verify=ep["ca_pem_path"],
        retry_total=0,
    )
    assert blob.get_account_information()["account_kind"] == "StorageV2"
    admin.advance(3)  # the demo world's ingestion delay is 2 s

    fingerprint = hashlib.sha256(base64.b64decode(key1)).hexdigest().upper()
    until = twin_now(admin) + timedelta(minutes=1)
    query = usage_gate_query(
        since=start.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        until=until.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        account=ACCOUNT,
        key_sha256=fingerprint,
    )
    client = logs_client(ep)
    result = client.query_workspace(ep["log_analytics_workspaces"][WORKSPACE]["workspace_id"], query, timespan=None)
    assert result.status == LogsQueryStatus.SUCCESS
    (table,) = result.tables
    assert table.name == "PrimaryResult"
    assert table.columns == [
        "CallerIpAddress",
        "UserAgentHeader",
        "OperationName",
        "AuthenticationType",
        "Requests",
        "FirstSeen",
        "LastSeen",
    ]
    assert table.columns_types == ["string", "string", "string", "string", "long", "datetime", "datetime"]
    ours = [row for row in table.rows if row["UserAgentHeader"].startswith("azsdk-python-storage-blob/")
            and row["CallerIpAddress"].startswith("127.0.0.1:")]
    assert ours, table.rows
    row = ours[0]
    assert row["OperationName"] == "GetAccountInformation"
    assert row["AuthenticationType"] == "AccountKey"
    assert row["Requests"] >= 1
    assert isinstance(row["FirstSeen"], datetime)
    assert start <= row["FirstSeen"] <= row["LastSeen"] <= until


def test_the_log_rows_carry_azures_authentication_hash(ep, admin):
    key2 = admin.account()["key2"]
    BlobServiceClient(
        ep["storage_accounts"][ACCOUNT]["blob_endpoint"],
        credential={"account_name": ACCOUNT, "account_key": key2},
        connection_verify=ep["ca_pem_path"],
        retry_total=0,
    ).get_account_information()
    admin.advance(3)
    client = logs_client(ep)
    result = client.query_workspace(
        ep["log_analytics_workspaces"][WORKSPACE]["workspace_id"],
        "StorageBlobLogs | where CallerIpAddress startswith '127.0.0.1:' and StatusCode == '200' "
        "| top 1 by TimeGenerated desc | project TimeGenerated, AuthenticationHash, TenantId, Type",
        timespan=timedelta(hours=1),
    )
    (row,) = result.tables[0].rows
    fingerprint = hashlib.sha256(base64.b64decode(key2)).hexdigest().upper()
    assert row["AuthenticationHash"] == f"key2({fingerprint})"
    assert row["TenantId"] == ep["log_analytics_workspaces"][WORKSPACE]["workspace_id"]
    assert row["Type"] == "StorageBlobLogs"
    assert row["TimeGenerated"].tzinfo is not None


def test_queries_outside_the_subset_and_foreign_tokens_are_refused(ep):
    workspace_id = ep["log_analytics_workspaces"][WORKSPACE]["workspace_id"]
    with pytest.raises(HttpResponseError) as err:
        logs_client(ep).query_workspace(workspace_id, "StorageBlobLogs | extend x = 1", timespan=None)
    assert err.value.status_code == 400
    assert err.value.error.code == "BadArgumentError"
    with pytest.raises(HttpResponseError) as err:
        logs_client(ep).query_workspace(workspace_id, "StorageBlobLogs | where", timespan=None)
    assert err.value.status_code == 400
    assert "SyntaxError" in str(err.value)
    # Without the audience the client asks for a token for the endpoint itself,
    # which is the twin's ARM: the query API refuses it, as Azure would.
    with pytest.raises(HttpResponseError) as err:
        logs_client(ep, audience=ep["base_url"]).query_workspace(workspace_id, "StorageBlobLogs | count", timespan=None)
    assert err.value.status_code == 403
    assert err.value.error.code == "InvalidTokenError"


def test_monitor_management_client_reads_the_diagnostic_settings(ep, sub, reader):
    from azure.mgmt.monitor import MonitorManagementClient

    client = MonitorManagementClient(reader, sub, **arm_kwargs(ep))
    blob_service = ep["storage_accounts"][ACCOUNT]["id"] + "/blobServices/default"
    (setting,) = list(client.diagnostic_settings.list(blob_service))
    assert setting.name == "blob-logs-to-log-datasci"
    assert setting.workspace_id == ep["log_analytics_workspaces"][WORKSPACE]["id"]
    assert sorted(log.category for log in setting.logs if log.enabled) == ["StorageDelete", "StorageRead", "StorageWrite"]
    same = client.diagnostic_settings.get(blob_service, "blob-logs-to-log-datasci")
    assert same.id == setting.id
    with pytest.raises(ResourceNotFoundError) as err:
        client.diagnostic_settings.get(blob_service, "nope")
    assert "doesn't exist" in str(err.value)
    queue_service = ep["storage_accounts"][ACCOUNT]["id"] + "/queueServices/default"
    with pytest.raises(HttpResponseError) as err:
        client.diagnostic_settings.create_or_update(
            queue_service,
            "queue-logs",
            {"workspace_id": setting.workspace_id, "logs": [{"category": "StorageWrite", "enabled": True}]},
        )
    assert err.value.status_code == 403
    assert "Microsoft.Insights/diagnosticSettings/write" in err.value.error.message
