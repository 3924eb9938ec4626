"""Token generation and hashing, shared by API tokens (`cpt_`) and agent tokens (`cpa_`)."""

from __future__ import annotations

import hashlib
import secrets


def generate_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    # Tokens carry 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(token.encode()).hexdigest()


def display_prefix(token: str) -> str:
    return token[:12]
