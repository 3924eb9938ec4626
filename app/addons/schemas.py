"""Request and response bodies for add-ons and the catalogue."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.addons.catalogue import CatalogueEntry
from app.addons.errors import error_message
from app.addons.models import AddonStatus, ClusterAddon
from app.clusters.schemas import ErrorInfo


class AddonPut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    values: dict[str, Any] = Field(
        default_factory=dict,
        description="Helm values, checked against the add-on's `values_schema` (the entry's "
        "defaults are merged under them). Stored encrypted and never shown again.",
    )


class CatalogueEntryRead(BaseModel):
    name: str
    title: str
    description: str
    chart: str
    version: str
    repository: str | None
    namespace: str
    values_schema: dict[str, Any]
    default_values: dict[str, Any]

    @classmethod
    def of(cls, entry: CatalogueEntry) -> CatalogueEntryRead:
        return cls(
            name=entry.name,
            title=entry.title,
            description=entry.description,
            chart=entry.chart,
            version=entry.version,
            repository=entry.repository,
            namespace=entry.namespace,
            values_schema=entry.values_schema,
            default_values=entry.default_values,
        )


class CatalogueRead(BaseModel):
    items: list[CatalogueEntryRead]


class AddonRead(BaseModel):
    name: str
    title: str | None = Field(description="From the catalogue; null if the entry was removed.")
    status: AddonStatus
    error: ErrorInfo | None = Field(
        description="Why the last operation failed (`errored`) or why the add-on is `degraded`."
    )
    chart: str | None
    version: str | None = Field(description="The chart version asked for (or offered).")
    installed_version: str | None
    namespace: str | None = Field(description="The Helm release's namespace.")
    operation: str | None
    operation_started_at: datetime | None
    job_name: str | None = Field(
        description="The install Job in namespace `clusterport-addons`; its pod is named "
        "`<job_name>-<5 characters>` and labelled `job-name=<job_name>`."
    )
    finished_at: datetime | None
    health_checked_at: datetime | None

    @classmethod
    def of(cls, entry: CatalogueEntry | None, row: ClusterAddon | None) -> AddonRead:
        if row is None:
            assert entry is not None
            return cls(
                name=entry.name,
                title=entry.title,
                status=AddonStatus.installable,
                error=None,
                chart=entry.chart,
                version=entry.version,
                installed_version=None,
                namespace=entry.namespace,
                operation=None,
                operation_started_at=None,
                job_name=None,
                finished_at=None,
                health_checked_at=None,
            )
        return cls(
            name=row.name,
            title=entry.title if entry is not None else None,
            status=AddonStatus(row.status),
            error=ErrorInfo(code=row.error_code, message=error_message(row.error_code))
            if row.error_code
            else None,
            chart=row.chart,
            version=row.chart_version,
            installed_version=row.installed_version,
            namespace=row.release_namespace,
            operation=row.operation,
            operation_started_at=row.operation_started_at,
            job_name=row.job_name,
            finished_at=row.finished_at,
            health_checked_at=row.health_checked_at,
        )


class AddonList(BaseModel):
    items: list[AddonRead]
