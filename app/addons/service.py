"""Rules for add-ons: values are checked, one operation runs at a time, workers do the rest."""

from __future__ import annotations

import json

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.addons import repository
from app.addons.catalogue import CatalogueEntry, catalogue, merged_values, validate_values
from app.addons.models import BUSY, AddonStatus, ClusterAddon, Operation, operation_fields
from app.addons.schemas import AddonPut
from app.audit.service import record_audit
from app.auth.models import Role
from app.auth.principal import Principal
from app.clusters import service as clusters_service
from app.clusters.errors import error_message as cluster_error_message
from app.clusters.models import Cluster, ClusterStatus
from app.core.db import utcnow
from app.core.errors import ConflictError, NotFoundError, UnprocessableError
from app.core.jobs import actor_named, enqueue_after_commit

# Cluster states in which no add-on operation is accepted (the worker could not reach it).
_UNUSABLE = {
    ClusterStatus.unreachable,
    ClusterStatus.unauthorized,
    ClusterStatus.forbidden,
    ClusterStatus.errored,
    ClusterStatus.provisioning,
}


def entry_for(name: str) -> CatalogueEntry:
    entry = catalogue().get(name)
    if entry is None:
        raise NotFoundError(f"There is no add-on {name!r} in the catalogue.", code="unknown_addon")
    return entry


async def get(
    session: AsyncSession,
    principal: Principal,
    project_id: int,
    cluster_id: int,
    name: str,
    role: Role,
) -> tuple[CatalogueEntry | None, ClusterAddon | None]:
    """The catalogue entry and the record; 404 when neither exists."""
    await clusters_service.get(session, principal, project_id, cluster_id, role)
    row = await repository.find(session, cluster_id, name)
    entry = catalogue().get(name)
    if row is None and entry is None:
        entry_for(name)
    return entry, row


async def list_addons(
    session: AsyncSession, principal: Principal, project_id: int, cluster_id: int
) -> list[tuple[CatalogueEntry | None, ClusterAddon | None]]:
    """Every catalogue entry (installable unless recorded) and every recorded add-on."""
    await clusters_service.get(session, principal, project_id, cluster_id, Role.reporter)
    rows = {row.name: row for row in await repository.list_for_cluster(session, cluster_id)}
    entries = catalogue()
    names = sorted(set(entries) | set(rows))
    return [(entries.get(name), rows.get(name)) for name in names]


def _check_cluster(cluster: Cluster) -> None:
    if not cluster.enabled:
        raise ConflictError("The cluster is disabled.", code="cluster_disabled")
    if cluster.status == ClusterStatus.deleting:
        raise ConflictError("The cluster is being deleted.", code="cluster_deleting")
    if cluster.platform is None and cluster.agent_id is None:
        raise ConflictError("The cluster has no connection yet.", code="cluster_not_connected")
    if cluster.status in _UNUSABLE:
        reason = cluster_error_message(cluster.error_code) if cluster.error_code else ""
        raise ConflictError(
            f"The cluster is {cluster.status}; run a check once it is reachable. {reason}".strip(),
            code="cluster_unreachable",
        )


def _busy(row: ClusterAddon) -> ConflictError:
    return ConflictError(
        f"The add-on is {row.status}: wait for that operation to finish.",
        code="addon_operation_in_progress",
    )


def _start(session: AsyncSession, principal: Principal, row: ClusterAddon, action: str) -> None:
    record_audit(
        session,
        principal,
        action,
        "addon",
        row.id,
        project_id=row.project_id,
        details={
            "cluster_id": row.cluster_id,
            "addon": row.name,
            "chart": row.chart,
            "version": row.chart_version,
        },
    )
    enqueue_after_commit(session, actor_named("run_addon_operation"), row.id, row.run_seq)


async def put(
    session: AsyncSession,
    principal: Principal,
    project_id: int,
    cluster_id: int,
    name: str,
    data: AddonPut,
) -> ClusterAddon:
    """Install the add-on, or upgrade it (new values or a newer pinned version)."""
    cluster = await clusters_service.get(
        session, principal, project_id, cluster_id, Role.maintainer
    )
    entry = entry_for(name)
    problems = validate_values(entry, data.values)
    if problems:
        raise UnprocessableError(
            "The values do not match the add-on's values schema.",
            code="invalid_values",
            details=problems,
        )
    _check_cluster(cluster)
    values = json.dumps(merged_values(entry, data.values), sort_keys=True)
    asked = {
        "chart": entry.chart_ref(),
        "chart_version": entry.version,
        "release_namespace": entry.namespace,
        "values_json": values,
    }
    row = await repository.find(session, cluster_id, name)
    if row is None:
        row = ClusterAddon(
            cluster_id=cluster_id,
            project_id=project_id,
            name=name,
            run_seq=1,
            **asked,
            **operation_fields(Operation.install, AddonStatus.scheduled),
        )
        try:
            async with session.begin_nested():
                session.add(row)
        except IntegrityError:
            # A concurrent request recorded it first: its operation is the one under way.
            raise ConflictError(
                "Another request is installing this add-on.", code="addon_operation_in_progress"
            ) from None
        _start(session, principal, row, "addon.install")
        return row
    if row.status in BUSY:
        raise _busy(row)
    upgrade = row.holds_a_release
    operation, status = (
        (Operation.upgrade, AddonStatus.updating)
        if upgrade
        else (Operation.install, AddonStatus.scheduled)
    )
    if not await repository.claim(
        session, row.id, row.run_seq, {**asked, **operation_fields(operation, status)}
    ):
        await session.refresh(row)
        raise _busy(row)
    await session.refresh(row)
    _start(session, principal, row, f"addon.{operation.value}")
    return row


async def uninstall(
    session: AsyncSession, principal: Principal, project_id: int, cluster_id: int, name: str
) -> ClusterAddon:
    cluster = await clusters_service.get(
        session, principal, project_id, cluster_id, Role.maintainer
    )
    row = await repository.find(session, cluster_id, name)
    if row is None or row.status == AddonStatus.uninstalled:
        if row is None:
            entry_for(name)  # 404 for a name the catalogue does not know either
        raise ConflictError(
            "The add-on is not installed on this cluster.", code="addon_not_installed"
        )
    if row.status in BUSY:
        raise _busy(row)
    _check_cluster(cluster)
    fields = operation_fields(Operation.uninstall, AddonStatus.uninstalling)
    if not await repository.claim(session, row.id, row.run_seq, fields):
        await session.refresh(row)
        raise _busy(row)
    await session.refresh(row)
    _start(session, principal, row, "addon.uninstall")
    return row


async def request_check(
    session: AsyncSession, principal: Principal, project_id: int, cluster_id: int, name: str
) -> ClusterAddon:
    """Queue a drift and health check of an installed add-on now."""
    await clusters_service.get(session, principal, project_id, cluster_id, Role.developer)
    row = await repository.find(session, cluster_id, name)
    if row is None or row.status not in (AddonStatus.installed, AddonStatus.degraded):
        if row is None:
            entry_for(name)
        raise ConflictError(
            "The add-on is not installed on this cluster.", code="addon_not_installed"
        )
    row.next_health_check_at = utcnow()
    enqueue_after_commit(session, actor_named("check_addon_health"), row.id)
    return row


def catalogue_entries() -> list[CatalogueEntry]:
    return sorted(catalogue().values(), key=lambda e: e.name)
