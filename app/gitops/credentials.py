"""Which credential goes with a source's URL, checked before anything is stored.

https (or http where local networks are allowed) takes an optional token; ssh:// takes a deploy
key (an unencrypted OpenSSH private key) and the server's host keys, both required: git over ssh
never trusts a host key on first use here.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.serialization import load_ssh_private_key

from app.core.errors import UnprocessableError

# Key types a known_hosts line may name (OpenSSH's, including security keys and certificates).
_KEY_TYPE_PREFIXES = ("ssh-", "ecdsa-", "sk-")


@dataclass(frozen=True)
class Credentials:
    token: str | None
    deploy_key: str | None
    known_hosts: str | None


def is_ssh(url: str) -> bool:
    return urlsplit(url).scheme.lower() == "ssh"


def checked(url: str, credentials: Credentials) -> Credentials:
    """The credentials to store for `url`; a coded 422 when they do not fit it."""
    if not is_ssh(url):
        if credentials.deploy_key is not None or credentials.known_hosts is not None:
            raise UnprocessableError(
                "A deploy key and known hosts are for ssh:// URLs only.",
                code="deploy_key_needs_ssh",
            )
        return credentials
    if credentials.token is not None:
        raise UnprocessableError(
            "A token is for https URLs; an ssh:// source reads with its deploy key.",
            code="token_not_for_ssh",
        )
    if credentials.deploy_key is None:
        raise UnprocessableError(
            "An ssh:// source needs a deploy key (an OpenSSH private key).",
            code="deploy_key_required",
        )
    if not credentials.known_hosts or not credentials.known_hosts.strip():
        raise UnprocessableError(
            "An ssh:// source needs the server's host keys (`ssh-keyscan -p PORT HOST` prints "
            "them).",
            code="known_hosts_required",
        )
    _check_key(credentials.deploy_key)
    _check_known_hosts(credentials.known_hosts)
    return credentials


def _check_key(text: str) -> None:
    try:
        load_ssh_private_key(text.strip().encode() + b"\n", password=None)
    except (ValueError, TypeError, binascii.Error, UnicodeError):
        # Never the key itself in the answer.
        raise UnprocessableError(
            "The deploy key is not an unencrypted OpenSSH private key.", code="invalid_deploy_key"
        ) from None


def _check_known_hosts(text: str) -> None:
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if fields[0].startswith("@"):  # @cert-authority / @revoked marker
            fields = fields[1:]
        valid = len(fields) >= 3 and fields[1].startswith(_KEY_TYPE_PREFIXES)
        if valid:
            try:
                base64.b64decode(fields[2], validate=True)
            except (binascii.Error, ValueError):
                valid = False
        if not valid:
            raise UnprocessableError(
                f"known_hosts line {number} is not `host key-type base64-key`.",
                code="invalid_known_hosts",
            )
