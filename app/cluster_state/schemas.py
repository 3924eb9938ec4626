"""Response bodies of the cluster resources cache."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel


class ResourceKind(enum.StrEnum):
    pods = "pods"
    deployments = "deployments"
    services = "services"
    namespaces = "namespaces"


class ResourceList(BaseModel):
    kind: ResourceKind
    namespace: str | None
    read_at: datetime
    truncated: bool
    items: list[dict[str, Any]]


class RefreshPending(BaseModel):
    status: Literal["refreshing"] = "refreshing"
    retry_after: int
