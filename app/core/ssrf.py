"""Guard against server-side request forgery through user-supplied cluster URLs.

A URL is checked when it is stored and again when it is dialled: the host is resolved, every
address must be public, and the caller connects to the returned (pinned) address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from app.core.errors import UnprocessableError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Every block of the IANA IPv4 and IPv6 Special-Purpose Address Registries, plus multicast,
# the deprecated IPv6 site-local block and class E. Checked explicitly instead of trusting
# `ipaddress.is_global`, whose tables lag the registries (3fff::/20 and 5f00::/16 are recent).
# The NAT64 well-known prefix, 6to4 and IPv4-mapped/compatible forms are judged by the IPv4
# address they carry instead (see `_embedded_ipv4`).
_SPECIAL_PURPOSE = tuple(
    ipaddress.ip_network(block)
    for block in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.31.196.0/24",
        "192.52.193.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "192.175.48.0/24",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "64:ff9b:1::/48",
        "100::/64",
        "100:0:0:1::/64",
        "2001::/23",
        "2001:db8::/32",
        "2620:4f:8000::/48",
        "3fff::/20",
        "5f00::/16",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
)
# Cloud instance metadata endpoints hand out credentials: refused even when an operator allows
# local networks (EC2/EKS IMDS, ECS task and EKS Pod Identity endpoints).
_METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "169.254.170.23", "fd00:ec2::254", "fd00:ec2::23")
)


class UnsafeURLError(UnprocessableError):
    code = "unsafe_url"
    message = "The URL is not allowed."


@dataclass(frozen=True)
class ResolvedTarget:
    scheme: str
    host: str
    port: int
    address: str

    @property
    def pinned_netloc(self) -> str:
        """`address:port` for the connection, with IPv6 addresses bracketed."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    # IPv4-compatible form (::a.b.c.d), deprecated but still parsed by resolvers.
    if int(ip) >> 32 == 0 and int(ip) > 1:
        return ipaddress.IPv4Address(int(ip))
    return None


def is_public_address(ip: IPAddress) -> bool:
    """True only for globally routable unicast addresses (and not ones hiding a local one)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return False
        embedded = _embedded_ipv4(ip)
        if embedded is not None and not is_public_address(embedded):
            return False
    if any(ip in block for block in _SPECIAL_PURPOSE if block.version == ip.version):
        return False
    # Belt and braces: `is_global` is False for what the list above may miss.
    return ip.is_global and not ip.is_multicast


def is_metadata_address(ip: IPAddress) -> bool:
    """A cloud metadata endpoint, directly or inside an IPv6 form that carries it."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
        embedded = _embedded_ipv4(ip)
        if embedded is not None and embedded in _METADATA:
            return True
    return ip in _METADATA


def _parse(url: str, allowed_schemes: tuple[str, ...]) -> tuple[str, str, int]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeURLError("The URL cannot be parsed.", code="invalid_url") from None
    scheme = parts.scheme.lower()
    if scheme not in allowed_schemes:
        raise UnsafeURLError(
            f"The URL must use {' or '.join(allowed_schemes)}.", code="invalid_url_scheme"
        )
    # ssh names the account (`ssh://git@host/...`); a password never belongs in a URL.
    if parts.password is not None or (parts.username is not None and scheme != "ssh"):
        raise UnsafeURLError("The URL must not contain credentials.", code="invalid_url")
    host = parts.hostname
    if not host:
        raise UnsafeURLError("The URL has no host.", code="invalid_url")
    if port is None:
        port = {"https": 443, "wss": 443, "ssh": 22}.get(scheme, 80)
    elif port == 0:
        raise UnsafeURLError("The URL's port must be between 1 and 65535.", code="invalid_url")
    return scheme, host, port


def _check_addresses(host: str, infos: list[str], allow_local: bool) -> str:
    if not infos:
        raise UnsafeURLError("The URL's host does not resolve.", code="unresolvable_host")
    addresses = [ipaddress.ip_address(info.split("%", 1)[0]) for info in infos]
    for ip in addresses:
        if is_metadata_address(ip):
            raise UnsafeURLError(
                "The URL resolves to a cloud metadata address, which is never allowed.",
                code="unsafe_url",
            )
    if not allow_local:
        for ip in addresses:
            if not is_public_address(ip):
                raise UnsafeURLError(
                    "The URL resolves to a loopback, private, link-local or otherwise "
                    "non-public address; set CLUSTERPORT_ALLOW_LOCAL_NETWORK=true to allow it.",
                    code="unsafe_url",
                )
    return str(addresses[0])


def _addresses(infos: Sequence[tuple[Any, ...]]) -> list[str]:
    return [str(info[4][0]) for info in infos]


def resolve_target(
    url: str, *, allow_local: bool, allowed_schemes: tuple[str, ...] = ("https",)
) -> ResolvedTarget:
    """Resolve and check `url` (blocking DNS); use from workers."""
    scheme, host, port = _parse(url, allowed_schemes)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise UnsafeURLError("The URL's host does not resolve.", code="unresolvable_host") from None
    return ResolvedTarget(
        scheme, host, port, _check_addresses(host, _addresses(infos), allow_local)
    )


async def resolve_target_async(
    url: str, *, allow_local: bool, allowed_schemes: tuple[str, ...] = ("https",)
) -> ResolvedTarget:
    """Resolve and check `url` without blocking the event loop; use from requests."""
    scheme, host, port = _parse(url, allowed_schemes)
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout=5
        )
    except (socket.gaierror, UnicodeError, TimeoutError):
        raise UnsafeURLError("The URL's host does not resolve.", code="unresolvable_host") from None
    return ResolvedTarget(
        scheme, host, port, _check_addresses(host, _addresses(infos), allow_local)
    )
