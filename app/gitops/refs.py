"""Which git refs a source follows: a branch, a tag, or a tag pattern."""

from __future__ import annotations

import fnmatch
import re

_REF = re.compile(r"^[A-Za-z0-9._/*-]+$")


def normalize_ref(value: str) -> str:
    """`main` -> `refs/heads/main`; full names (`refs/tags/v1.*`) stay as they are."""
    value = value.strip()
    if not _REF.match(value) or ".." in value or value.endswith("/") or "//" in value:
        raise ValueError("must be a branch name, a full ref (refs/tags/v1.0) or a tag pattern")
    if value.startswith("refs/"):
        if not value.startswith(("refs/heads/", "refs/tags/")):
            raise ValueError("must be under refs/heads/ or refs/tags/")
    else:
        value = f"refs/heads/{value}"
    if "*" in value and not value.startswith("refs/tags/"):
        raise ValueError("patterns are for tags only (refs/tags/v*)")
    return value


def is_pattern(ref: str) -> bool:
    return "*" in ref


def ref_matches(followed: str, pushed: str) -> bool:
    if is_pattern(followed):
        return fnmatch.fnmatchcase(pushed, followed)
    return pushed == followed
