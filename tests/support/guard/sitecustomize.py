"""Loaded by every Python process the tests start (through PYTHONPATH): loopback only.

An audit hook refuses any Python-level `socket.connect` to an address outside loopback, so a
`clusterport serve`, agent or agent-server subprocess of a test can never dial a public cluster
URL (an SSRF test's "allowed" address, an endpoint moto's EKS returns) either.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from typing import Any


class NonLoopbackConnectError(OSError):
    pass


def is_loopback(host: str) -> bool:
    if host == "localhost":
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
    if not is_loopback(host):
        raise NonLoopbackConnectError(f"tests may only connect to loopback, not {host}")


def install() -> None:
    # Audit hooks cannot be removed; one per process is enough.
    if not getattr(sys, "_clusterport_loopback_guard", False):
        sys.addaudithook(_audit)
        sys._clusterport_loopback_guard = True  # type: ignore[attr-defined]


install()
