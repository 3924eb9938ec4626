"""Environment scopes: which of a project's clusters serves an environment.

A scope is `*` (every environment), a prefix pattern such as `review/*`, or one environment
name. The most specific matching scope wins: an exact name, then the longest prefix, then `*`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


def scope_matches(scope: str, environment: str) -> bool:
    if scope == "*":
        return True
    if scope.endswith("*"):
        return environment.startswith(scope[:-1])
    return scope == environment


def specificity(scope: str) -> tuple[int, int]:
    """Sort key: exact names above patterns, longer patterns above shorter ones."""
    if scope.endswith("*"):
        return (0, len(scope) - 1)
    return (1, len(scope))


def pick_for_environment(candidates: Iterable[tuple[str, T]], environment: str) -> T | None:
    """The item whose scope matches `environment` most specifically, from (scope, item) pairs."""
    matching = [
        (specificity(scope), item)
        for scope, item in candidates
        if scope_matches(scope, environment)
    ]
    if not matching:
        return None
    return max(matching, key=lambda pair: pair[0])[1]
