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
        now = time.monotonic()
        tokens, stamp = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - stamp) * self.rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        # Oldest keys go first: they are the ones whose buckets have refilled the most.
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait


def address_allowed(address: str, allow: Networks, deny: Networks) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in net for net in deny):
        return False
    return not allow or any(ip in net for net in allow)
