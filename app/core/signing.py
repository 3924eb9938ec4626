"""Short-lived credentials that clusterport's own processes give each other, signed with HMAC.

A signed credential says who may do what (`purpose`, a few `claims`) until when, and nothing
needs to be stored to check it: the receiver recomputes the signature with the shared key. The
keys are `CLUSTERPORT_SIGNING_KEYS` (comma-separated; the first signs, every one verifies, so a
key is rotated by putting the new one first), or, when unset, keys derived from
`CLUSTERPORT_ENCRYPTION_KEYS`, which every server process already has.

Format: `cpi_<payload>.<signature>`, both base64url; the payload is JSON with the purpose `p`,
the expiry `exp` (Unix seconds) and the claims `c`.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.core.settings import get_settings

PREFIX = "cpi_"
_DERIVE_LABEL = b"clusterport internal credential signing"


class InvalidCredentialError(Exception):
    """The credential is malformed, forged, expired or for another purpose."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def is_signed_credential(raw: str) -> bool:
    return raw.startswith(PREFIX)


def sign(purpose: str, claims: Mapping[str, Any], *, ttl_seconds: float) -> str:
    """A credential for `purpose` carrying `claims` (JSON values), valid for `ttl_seconds`."""
    payload = {"p": purpose, "exp": int(time.time() + ttl_seconds), "c": dict(claims)}
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    return f"{PREFIX}{body}.{_b64(_mac(_keys()[0], body))}"


@dataclass(frozen=True, slots=True)
class Verified:
    purpose: str
    claims: dict[str, Any]


def verify(raw: str, *purposes: str) -> Verified:
    """Purpose and claims of a valid credential for one of `purposes`;
    `InvalidCredentialError` otherwise."""
    if not raw.startswith(PREFIX):
        raise InvalidCredentialError("invalid_credential")
    body, _, signature = raw[len(PREFIX) :].partition(".")
    try:
        given = _unb64(signature)
    except ValueError:
        raise InvalidCredentialError("invalid_credential") from None
    if not any(hmac.compare_digest(_mac(key, body), given) for key in _keys()):
        raise InvalidCredentialError("invalid_credential")
    try:
        payload = json.loads(_unb64(body))
        expires, claims, granted = int(payload["exp"]), dict(payload["c"]), str(payload["p"])
    except (ValueError, KeyError, TypeError):
        raise InvalidCredentialError("invalid_credential") from None
    if granted not in purposes:
        raise InvalidCredentialError("wrong_purpose")
    if expires <= time.time():
        raise InvalidCredentialError("credential_expired")
    return Verified(granted, claims)


def _mac(key: bytes, body: str) -> bytes:
    return hmac.new(key, body.encode(), hashlib.sha256).digest()


def _keys() -> tuple[bytes, ...]:
    settings = get_settings()
    configured = tuple(k.get_secret_value() for k in settings.signing_keys)
    if configured:
        return _encoded(configured)
    source = tuple(k.get_secret_value() for k in settings.encryption_keys)
    if not source:
        raise RuntimeError("No signing or encryption key is configured.")
    return _derived(source)


@functools.cache
def _encoded(keys: tuple[str, ...]) -> tuple[bytes, ...]:
    return tuple(key.encode() for key in keys)


@functools.cache
def _derived(keys: tuple[str, ...]) -> tuple[bytes, ...]:
    # Not the encryption key itself: a signing key must never decrypt anything.
    return tuple(hmac.new(key.encode(), _DERIVE_LABEL, hashlib.sha256).digest() for key in keys)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError("not base64url") from exc
