"""Why a fetch or render failed: a stable code and our own message (repository paths and line
numbers are the user's, never text from a cluster or a git server)."""

from __future__ import annotations


class SourceError(Exception):
    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")
