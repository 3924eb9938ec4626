"""Encryption of secrets at rest with rotatable keys: the first key encrypts, every key decrypts."""

from __future__ import annotations

import base64
import functools
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from app.core.settings import PLACEHOLDER_KEYS, Settings, get_settings


class EncryptionKeyError(RuntimeError):
    """Raised at start-up when no usable encryption key is configured."""


class SecretDecryptionError(RuntimeError):
    """A stored secret could not be decrypted with any configured key."""


def generate_key() -> str:
    return Fernet.generate_key().decode()


def private_data_dir(data_dir: Path, database: Path) -> None:
    """The embedded data dir is readable by its owner only (0700), the database file too (0600),
    also when they already exist from an earlier, more open version."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    os.close(os.open(database, os.O_WRONLY | os.O_CREAT, 0o600))
    # SQLite creates its -wal and -shm files with the database file's mode.
    database.chmod(0o600)


def ensure_embedded_key(data_dir: Path) -> str:
    """Return the embedded-mode key, creating it (mode 0600) on first start."""
    path = data_dir / "encryption.key"
    if not path.exists():
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(generate_key())
    return path.read_text().strip()


def validate_keys(settings: Settings) -> None:
    """Refuse to start with no key, a placeholder key or a malformed key."""
    keys = [key.get_secret_value() for key in settings.encryption_keys]
    if not keys:
        raise EncryptionKeyError(
            "CLUSTERPORT_ENCRYPTION_KEYS is not set. Generate a key with "
            "`clusterport keys generate` and set it (comma-separate several to rotate)."
        )
    for index, key in enumerate(keys):
        if key.lower() in PLACEHOLDER_KEYS:
            raise EncryptionKeyError(f"CLUSTERPORT_ENCRYPTION_KEYS entry {index} is a placeholder.")
        try:
            Fernet(key)
        except (ValueError, TypeError):
            raise EncryptionKeyError(
                f"CLUSTERPORT_ENCRYPTION_KEYS entry {index} is not a valid Fernet key "
                "(32 url-safe base64-encoded bytes)."
            ) from None
        if _low_entropy(base64.urlsafe_b64decode(key)):
            raise EncryptionKeyError(
                f"CLUSTERPORT_ENCRYPTION_KEYS entry {index} is not random (all zeros, a repeated "
                "pattern or typed text); generate one with `clusterport keys generate`."
            )
    for index, secret in enumerate(settings.signing_keys):
        key = secret.get_secret_value()
        if key.lower() in PLACEHOLDER_KEYS or len(key) < 32:
            raise EncryptionKeyError(
                f"CLUSTERPORT_SIGNING_KEYS entry {index} is a placeholder or shorter than 32 "
                "characters (`clusterport keys generate` prints a good one)."
            )


def _low_entropy(raw: bytes) -> bool:
    """True for keys no random generator would produce.

    32 random bytes hold about 30 distinct values and a byte >= 0x80 with near certainty
    (the chance of either test failing is below 1e-9); zeros, repeated patterns and keys
    typed as text (base64 of ASCII) fail them.
    """
    return len(set(raw)) < 16 or max(raw) < 0x80


@functools.cache
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


def _current() -> MultiFernet:
    keys = tuple(key.get_secret_value() for key in get_settings().encryption_keys)
    if not keys:
        raise EncryptionKeyError("No encryption key is configured.")
    return _fernet(keys)


def encrypt_secret(plaintext: str) -> str:
    return _current().encrypt(plaintext.encode()).decode()


def decrypt_secret(ciphertext: str) -> str:
    try:
        return _current().decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        raise SecretDecryptionError("A stored secret cannot be decrypted with any key.") from None


def rotate_secret(ciphertext: str) -> str:
    """Re-encrypt with the first key (a no-op in meaning, a change in key)."""
    try:
        return _current().rotate(ciphertext.encode()).decode()
    except InvalidToken:
        raise SecretDecryptionError("A stored secret cannot be decrypted with any key.") from None
