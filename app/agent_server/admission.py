"""Admission control for new agent connections: IP allow/deny lists and token buckets."""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict

from app.agent_server.config import Networks


class TokenBuckets:
    """One bucket per key (token hash or source address), bounded in number of keys."""

    def __init__(self, rate: float, burst: int, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> float:
        """0 if admitted, else seconds until the next connection attempt can be."""
        return self._update(key, consume=True)

    def wait(self, key: str) -> float:
        """Like `take`, without spending a token: for buckets that only count failures."""
        return self._update(key, consume=False)

    def _update(self, key: str, *, consume: bool) -> float:
        now = time.monotonic()
        tokens, stamp = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - stamp) * self.rate)
        wait = 0.0
        if tokens >= 1:
            if consume:
                tokens -= 1
        else:
            wait = (1 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        # Oldest keys go first: they are the ones whose buckets have refilled the most.
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait


def client_address(peer: str, forwarded_for: str | None, trusted: Networks) -> str:
    """The client's address: the peer's, unless the peer is a trusted proxy; then the nearest
    address in X-Forwarded-For that is not a trusted proxy (entries further left are written
    by the client and cannot be believed)."""
    if not forwarded_for or not _in(peer, trusted):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",")]
    for hop in reversed(hops):
        if not _in(hop, trusted):
            return hop if _parse(hop) is not None else peer
    return hops[0] if _parse(hops[0]) is not None else peer


def _parse(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _in(address: str, networks: Networks) -> bool:
    ip = _parse(address)
    return ip is not None and any(ip in net for net in networks)


def address_allowed(address: str, allow: Networks, deny: Networks) -> bool:
    ip = _parse(address)
    if ip is None:
        return False
    if any(ip in net for net in deny):
        return False
    return not allow or any(ip in net for net in allow)
