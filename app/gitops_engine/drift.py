"""Drift: does a live object still hold what was applied? Every field the desired object sets
must have the same value live (the cluster may add fields; it may not change or drop ours)."""

from __future__ import annotations

from typing import Any

# Set by the API server on every object; never part of what we apply.
_IGNORED_METADATA = frozenset(
    {"uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink"}
)


def _contains(desired: Any, live: Any) -> bool:
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return False
        return all(k in live and _contains(v, live[k]) for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(live, list) or len(desired) != len(live):
            return False
        return all(_contains(d, v) for d, v in zip(desired, live, strict=True))
    return bool(desired == live)


def is_drifted(desired: dict[str, Any], live: dict[str, Any] | None) -> bool:
    """True when the object is gone or a field we set differs."""
    if live is None:
        return True
    wanted = {k: v for k, v in desired.items() if k not in ("status",)}
    meta = {k: v for k, v in (wanted.get("metadata") or {}).items() if k not in _IGNORED_METADATA}
    wanted["metadata"] = meta
    return not _contains(wanted, live)
