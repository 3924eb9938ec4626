"""Request and response bodies for project namespaces."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.clusters.errors import error_message
from app.clusters.schemas import LAST_ERROR, RETRY_AT, STATUS_SEMANTICS, ErrorInfo
from app.core.validation import EnvironmentName
from app.namespaces.models import NamespaceStatus, ProjectNamespace

# ClusterRole names are path segments: lowercase DNS-subdomain characters, plus ':' as in
# `system:aggregate-to-edit`.
ClusterRoleName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, pattern=r"^[a-z0-9]([-a-z0-9.:]{0,251}[a-z0-9])?$"),
]


class NamespaceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    environment: EnvironmentName
    cluster_role: ClusterRoleName = Field(
        default="admin",
        description="ClusterRole the namespace's service account is bound to in its namespace.",
    )


class NamespaceRead(BaseModel):
    id: int
    cluster_id: int
    project_id: int
    environment: str
    namespace: str
    service_account_name: str
    cluster_role: str
    status: NamespaceStatus = Field(
        description="`provisioning` and `deleting` are pending; `ready` is the goal; `failed` "
        "is final with `error` (POST the environment again to repair, or DELETE)."
        + STATUS_SEMANTICS
    )
    error: ErrorInfo | None = Field(description="The final failure's code and our message.")
    last_error: ErrorInfo | None = LAST_ERROR
    retry_at: datetime | None = RETRY_AT
    last_synced_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: ProjectNamespace) -> NamespaceRead:
        return cls(
            id=row.id,
            cluster_id=row.cluster_id,
            project_id=row.project_id,
            environment=row.environment,
            namespace=row.namespace,
            service_account_name=row.service_account_name,
            cluster_role=row.cluster_role,
            status=NamespaceStatus(row.status),
            error=ErrorInfo(code=row.error_code, message=error_message(row.error_code))
            if row.error_code
            else None,
            last_error=ErrorInfo(code=row.last_error, message=error_message(row.last_error))
            if row.last_error
            else None,
            retry_at=row.retry_at,
            last_synced_at=row.last_synced_at,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class Kubeconfig(BaseModel):
    """A kubeconfig (JSON is valid kubeconfig YAML): save it and use `kubectl --kubeconfig`."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    api_version: str = Field(default="v1", alias="apiVersion")
    kind: str = "Config"
    clusters: list[dict[str, Any]]
    users: list[dict[str, Any]]
    contexts: list[dict[str, Any]]
    current_context: str = Field(alias="current-context")
