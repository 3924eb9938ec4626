"""Reusable field types for request payloads (Kubernetes names, environment scopes, PEM)."""

from __future__ import annotations

import re
from typing import Annotated

from cryptography import x509
from pydantic import AfterValidator, StringConstraints

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
    AfterValidator(lambda v: v if "*" not in v else _raise("must not contain '*'")),
]
CertificatePEM = Annotated[str, StringConstraints(max_length=65536), AfterValidator(_ca_pem)]


def _raise(message: str) -> str:
    raise ValueError(message)
