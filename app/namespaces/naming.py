"""Names clusterport gives to what it creates in a cluster for a project environment."""

from __future__ import annotations

import hashlib
import re

_NOT_ALNUM = re.compile(r"[^a-z0-9]+")
ENV_SLUG_MAX = 24
PREFIX_MAX = 38  # prefix + "-" + environment slug fits a 63-character DNS label

SERVICE_ACCOUNT = "clusterport-deployer"
TOKEN_SECRET = f"{SERVICE_ACCOUNT}-token"
ROLE_BINDING = SERVICE_ACCOUNT


def slugify(value: str, limit: int) -> str:
    """Lowercase letters, digits and single dashes, at most `limit` characters."""
    return _NOT_ALNUM.sub("-", value.lower()).strip("-")[:limit].strip("-")


def environment_slug(environment: str) -> str:
    """A DNS-safe slug of the environment name that different names never share: when the slug
    is not the name itself (`review/app-1`, `Prod`, a long name), a short hash is added."""
    slug = slugify(environment, ENV_SLUG_MAX)
    if slug == environment and slug:
        return slug
    digest = hashlib.sha256(environment.encode()).hexdigest()[:6]
    return f"{slugify(environment, ENV_SLUG_MAX - 7) or 'env'}-{digest}"


def namespace_name(prefix: str | None, project_name: str, project_id: int, environment: str) -> str:
    """`<prefix>-<environment slug>`, where the prefix defaults to `<project>-<project id>`."""
    base = prefix or f"{slugify(project_name, PREFIX_MAX - 1 - len(str(project_id)))}-{project_id}"
    base = slugify(base, PREFIX_MAX) or str(project_id)
    return f"{base}-{environment_slug(environment)}"
