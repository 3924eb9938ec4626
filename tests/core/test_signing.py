"""Internal credentials: signed, short-lived, bound to a purpose, with rotatable keys."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from app.core.signing import InvalidCredentialError, sign, verify

KEY_A = "a" * 32 + "-first-signing-key"
KEY_B = "b" * 32 + "-second-signing-key"


@pytest.fixture
def signing_keys(settings: Any) -> Iterator[Any]:
    saved = settings.signing_keys
    yield settings
    settings.signing_keys = saved


def test_round_trip_and_purpose() -> None:
    raw = sign("agent-proxy/worker", {"agent": 7}, ttl_seconds=60)
    assert raw.startswith("cpi_")
    verified = verify(raw, "agent-proxy/worker", "agent-proxy/namespace")
    assert (verified.purpose, verified.claims) == ("agent-proxy/worker", {"agent": 7})
    with pytest.raises(InvalidCredentialError) as wrong:
        verify(raw, "agent-proxy/namespace")
    assert wrong.value.code == "wrong_purpose"


def test_forged_tampered_and_expired_are_refused() -> None:
    raw = sign("p", {"agent": 1}, ttl_seconds=60)
    body, _, signature = raw.partition(".")
    forged_body = sign("p", {"agent": 2}, ttl_seconds=60).partition(".")[0]
    for bad in (f"{forged_body}.{signature}", f"{body}.AAAA", "cpi_garbage", "cpt_x", raw + "x"):
        with pytest.raises(InvalidCredentialError) as refused:
            verify(bad, "p")
        assert refused.value.code == "invalid_credential"
    expired = sign("p", {}, ttl_seconds=-1)
    with pytest.raises(InvalidCredentialError) as late:
        verify(expired, "p")
    assert late.value.code == "credential_expired"
    assert verify(sign("p", {}, ttl_seconds=2), "p").claims == {}


def test_rotation_first_key_signs_every_key_verifies(signing_keys: Any) -> None:
    derived = sign("p", {"n": 1}, ttl_seconds=60)  # from the encryption keys
    signing_keys.signing_keys = [SecretStr(KEY_A)]
    with pytest.raises(InvalidCredentialError):
        verify(derived, "p")
    old = sign("p", {"n": 2}, ttl_seconds=60)
    signing_keys.signing_keys = [SecretStr(KEY_B), SecretStr(KEY_A)]
    assert verify(old, "p").claims == {"n": 2}
    new = sign("p", {"n": 3}, ttl_seconds=60)
    signing_keys.signing_keys = [SecretStr(KEY_B)]
    assert verify(new, "p").claims == {"n": 3}
    with pytest.raises(InvalidCredentialError):
        verify(old, "p")


def test_short_or_placeholder_signing_keys_refused_at_start(signing_keys: Any) -> None:
    from app.core.crypto import EncryptionKeyError, validate_keys

    for bad in ("change-me", "too-short"):
        signing_keys.signing_keys = [SecretStr(bad)]
        with pytest.raises(EncryptionKeyError, match="CLUSTERPORT_SIGNING_KEYS"):
            validate_keys(signing_keys)
    signing_keys.signing_keys = [SecretStr(KEY_A)]
    validate_keys(signing_keys)
