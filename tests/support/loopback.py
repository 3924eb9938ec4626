"""Pytest plugin: the test process may connect only to loopback.

An audit hook refuses any Python-level `socket.connect` to another address, so a worker that
would dial a cluster URL from a test (a public address of an SSRF test, an endpoint moto's EKS
returns) fails at once instead of sending a packet. C-level clients (libpq) and subprocesses
are not covered; those connect to loopback by construction.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from typing import Any

import pytest

_ALLOWED_NAMES = {"localhost"}


class NonLoopbackConnectError(OSError):
    pass


def _is_loopback(host: str) -> bool:
    if host in _ALLOWED_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event != "socket.connect":
        return
    sock, address = args
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    host = str(address[0])
    if not _is_loopback(host):
        raise NonLoopbackConnectError(f"tests may only connect to loopback, not {host}")


def pytest_configure(config: pytest.Config) -> None:
    # Audit hooks cannot be removed; installing one per process is enough.
    if not getattr(sys, "_clusterport_loopback_guard", False):
        sys.addaudithook(_audit)
        sys._clusterport_loopback_guard = True  # type: ignore[attr-defined]
