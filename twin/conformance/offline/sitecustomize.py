"""Keeps a Python process on the loopback interface.

Imported by the conformance suite, and by every Python process it starts with this
directory on ``PYTHONPATH`` (Python imports ``sitecustomize`` at start-up), so the
Azure CLI runs under the same rule. Any name lookup or connection that is not
loopback is refused with ``OSError`` and recorded, one line per attempt, in the file
named by ``KEYFLIP_OFFLINE_LOG``: an SDK that swallows the error (a version check, a
telemetry upload, cloud metadata discovery) is still caught, because the suite fails
any test during which a line was added.
"""

import ipaddress
import os
import socket

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


def is_loopback(host) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return False
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _refuse(what: str):
    log = os.environ.get("KEYFLIP_OFFLINE_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"pid {os.getpid()}: {what}\n")
    raise OSError(f"keyflip conformance runs offline: refused {what}")


_real_getaddrinfo = socket.getaddrinfo
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _getaddrinfo(host, *args, **kwargs):
    if host is not None and not is_loopback(host):
        _refuse(f"name lookup of {host!r}")
    return _real_getaddrinfo(host, *args, **kwargs)


def _check(sock, address):
    if sock.family in (socket.AF_INET, socket.AF_INET6) and not is_loopback(address[0]):
        _refuse(f"connection to {address!r}")


def _connect(self, address):
    _check(self, address)
    return _real_connect(self, address)


def _connect_ex(self, address):
    _check(self, address)
    return _real_connect_ex(self, address)


if not getattr(socket, "_keyflip_offline", False):
    socket.getaddrinfo = _getaddrinfo
    socket.socket.connect = _connect
    socket.socket.connect_ex = _connect_ex
    socket._keyflip_offline = True
