"""Webhook deliveries: who sent them (GitLab, GitHub, generic HMAC), are they authentic, and
which push they describe. Pure functions of headers and the raw body."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.core.errors import BadRequestError, UnauthorizedError

ZERO_SHA = "0" * 40
GENERIC_SIGNATURE_HEADER = "x-clusterport-signature"
GENERIC_DELIVERY_HEADER = "x-clusterport-delivery"


class BadSignatureError(UnauthorizedError):
    code = "bad_signature"
    message = "The webhook signature or token does not match this hook's secret."


@dataclass(frozen=True)
class Push:
    """What a delivery asks for. `commit` is None for events that deploy nothing (a ping, a
    deleted branch); `kind` says which."""

    provider: str
    event: str
    delivery_key: str
    ref: str | None
    commit: str | None
    kind: str  # push | ping | deleted | ignored


def _hmac_ok(secret: str, body: bytes, header: str | None) -> bool:
    if not header or not header.startswith("sha256="):
        return False
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), header.strip().encode())


def _json(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequestError("The body is not JSON.", code="invalid_payload") from None
    if not isinstance(payload, dict):
        raise BadRequestError("The body is not a JSON object.", code="invalid_payload")
    return payload


def _sha(value: Any) -> str | None:
    if (
        isinstance(value, str)
        and len(value) in (40, 64)
        and all(c in "0123456789abcdef" for c in value)
    ):
        return value
    return None


def _delivery_key(value: str | None, body: bytes) -> str:
    # A sender without delivery ids: the body's hash is its identity (a replay is the same body).
    return (value or "sha256:" + hashlib.sha256(body).hexdigest())[:128]


def parse(headers: Mapping[str, str], body: bytes, secret: str) -> Push:
    """Verify a delivery and read it. Raises `BadSignatureError` (401) for a wrong token or
    signature, before the body is parsed; `BadRequestError` for a body we cannot read."""
    if "x-gitlab-event" in headers:
        token = headers.get("x-gitlab-token", "")
        if not hmac.compare_digest(token.encode(), secret.encode()):
            raise BadSignatureError()
        return _gitlab(headers, body)
    if "x-github-event" in headers:
        if not _hmac_ok(secret, body, headers.get("x-hub-signature-256")):
            raise BadSignatureError()
        return _github(headers, body)
    if not _hmac_ok(secret, body, headers.get(GENERIC_SIGNATURE_HEADER)):
        raise BadSignatureError()
    return _generic(headers, body)


def _push(provider: str, event: str, key: str, ref: Any, after: Any) -> Push:
    ref = ref if isinstance(ref, str) and ref.startswith("refs/") else None
    if ref is None:
        raise BadRequestError("The push names no ref.", code="invalid_payload")
    if after == ZERO_SHA:
        return Push(provider, event, key, ref, None, "deleted")
    commit = _sha(after)
    if commit is None:
        raise BadRequestError("The push names no commit.", code="invalid_payload")
    return Push(provider, event, key, ref, commit, "push")


def _gitlab(headers: Mapping[str, str], body: bytes) -> Push:
    event = headers["x-gitlab-event"]
    key = _delivery_key(headers.get("x-gitlab-event-uuid"), body)
    if event not in ("Push Hook", "Tag Push Hook"):
        return Push("gitlab", event[:64], key, None, None, "ignored")
    payload = _json(body)
    after = payload.get("checkout_sha") or payload.get("after")
    return _push("gitlab", event, key, payload.get("ref"), after or ZERO_SHA)


def _github(headers: Mapping[str, str], body: bytes) -> Push:
    event = headers["x-github-event"]
    key = _delivery_key(headers.get("x-github-delivery"), body)
    if event == "ping":
        return Push("github", event, key, None, None, "ping")
    if event != "push":
        return Push("github", event[:64], key, None, None, "ignored")
    payload = _json(body)
    if payload.get("deleted") is True:
        return Push("github", event, key, payload.get("ref"), None, "deleted")
    return _push("github", event, key, payload.get("ref"), payload.get("after"))


def _generic(headers: Mapping[str, str], body: bytes) -> Push:
    payload = _json(body)
    key = _delivery_key(headers.get(GENERIC_DELIVERY_HEADER), body)
    return _push("generic", "push", key, payload.get("ref"), payload.get("commit"))
