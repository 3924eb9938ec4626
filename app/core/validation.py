"""Reusable field types for request payloads (Kubernetes names, environment scopes, PEM)."""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime
from typing import Annotated

from cryptography import x509
from pydantic import AfterValidator, AwareDatetime, StringConstraints

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SCOPE = re.compile(r"^(\*|[a-zA-Z0-9_./-]+(/\*)?)$")


def _dns_label(value: str) -> str:
    if len(value) > 63 or not _DNS_LABEL.match(value):
        raise ValueError(
            "must be a DNS label: at most 63 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit"
        )
    return value


def _environment_scope(value: str) -> str:
    if not _SCOPE.match(value) or "//" in value or value.startswith("/"):
        raise ValueError(
            "must be '*', an environment name such as 'production', or a prefix pattern such "
            "as 'review/*'"
        )
    return value


# Control characters, format characters (bidi overrides and isolates, zero-width joiners) and
# line or paragraph separators make a name display differently from what it is.
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _visible_text(value: str) -> str:
    if any(unicodedata.category(char) in _INVISIBLE for char in value):
        raise ValueError("must not contain control, bidirectional-override or invisible characters")
    return value


def _utc(value: datetime) -> datetime:
    # Year 9999 with a negative offset is past the largest datetime once in UTC.
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range") from None


def _ca_pem(value: str) -> str:
    try:
        certificates = x509.load_pem_x509_certificates(value.encode())
    except ValueError:
        raise ValueError("must be one or more PEM-encoded X.509 certificates") from None
    if not certificates:
        raise ValueError("must contain at least one certificate")
    return value.strip() + "\n"


DNSLabel = Annotated[str, StringConstraints(strip_whitespace=True), AfterValidator(_dns_label)]
EnvironmentScope = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=255),
    AfterValidator(_environment_scope),
]
EnvironmentName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=255),
    AfterValidator(_visible_text),
    AfterValidator(lambda v: v if "*" not in v else _raise("must not contain '*'")),
]
# A free-text name (tokens): printable, no control or bidi-override characters.
DisplayName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=255),
    AfterValidator(_visible_text),
]
# A time with an offset, kept in UTC; times beyond the calendar's end in UTC are refused.
UTCDatetime = Annotated[AwareDatetime, AfterValidator(_utc)]
CertificatePEM = Annotated[str, StringConstraints(max_length=65536), AfterValidator(_ca_pem)]


def _raise(message: str) -> str:
    raise ValueError(message)
