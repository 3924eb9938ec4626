"""Reactive cache reads: a fresh entry is returned, otherwise one refresh is queued.

A request never calls the cluster. When the cached list is missing or older than the TTL, the
first request claims the refresh (a conditional UPDATE, so concurrent requests enqueue one job)
and everyone gets 202 with Retry-After until the worker has stored the new list.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.models import Role
from app.auth.principal import Principal
from app.cluster_state import repository
from app.cluster_state.schemas import RefreshPending, ResourceKind, ResourceList
from app.clusters import service as clusters_service
from app.clusters.errors import error_message
from app.clusters.models import ClusterStatus
from app.core.db import utcnow
from app.core.errors import ConflictError, ForbiddenError, ServiceUnavailableError
from app.core.jobs import actor_named, enqueue_after_commit
from app.namespaces.models import ProjectNamespace

TTL = timedelta(seconds=30)
# A failed refresh is reported for this long before a request may queue another one.
ERROR_TTL = timedelta(seconds=10)
# A claimed refresh that has not finished after this long (lost job, dead worker) is re-queued.
REFRESH_LEASE = timedelta(seconds=60)
RETRY_AFTER_SECONDS = 2
# Per-namespace lists kept per cluster (all kinds together); the oldest go first.
MAX_NAMESPACED_ENTRIES = 100


async def _require_own_namespace(
    session: AsyncSession, project_id: int, cluster_id: int, namespace: str | None
) -> None:
    """An instance-level cluster serves many projects: each reads only its own namespaces."""
    owned = namespace is not None and await session.scalar(
        select(ProjectNamespace.id).where(
            ProjectNamespace.cluster_id == cluster_id,
            ProjectNamespace.project_id == project_id,
            ProjectNamespace.namespace == namespace,
        )
    )
    if not owned:
        raise ForbiddenError(
            "On an instance-level cluster, read one of your project's namespaces.",
            code="namespace_not_yours",
        )


async def read(
    session: AsyncSession,
    principal: Principal,
    project_id: int,
    cluster_id: int,
    kind: ResourceKind,
    namespace: str | None,
) -> ResourceList | RefreshPending:
    cluster = await clusters_service.get(session, principal, project_id, cluster_id, Role.reporter)
    if not cluster.enabled or cluster.status == ClusterStatus.deleting:
        raise ConflictError("The cluster is disabled or being deleted.", code="cluster_disabled")
    if kind is ResourceKind.namespaces:
        namespace = None
    if cluster.project_id is None and not principal.is_admin:
        await _require_own_namespace(session, project_id, cluster_id, namespace)
    key = (cluster_id, kind.value, namespace or "")
    now = utcnow()
    entry = await session.scalar(repository.select_entry(*key))
    if entry is not None:
        if entry.read_at is not None and entry.read_at > now - TTL:
            return ResourceList(
                kind=kind,
                namespace=namespace,
                read_at=entry.read_at,
                truncated=entry.truncated,
                items=entry.items or [],
            )
        if entry.error_code and entry.error_at is not None and entry.error_at > now - ERROR_TTL:
            raise ServiceUnavailableError(
                error_message(entry.error_code),
                code=f"cluster_{entry.error_code}",
                headers={"Retry-After": str(int(ERROR_TTL.total_seconds()))},
            )
    else:
        if namespace:
            await repository.evict_namespaced(session, cluster_id, MAX_NAMESPACED_ENTRIES - 1)
        await repository.ensure_entry(session, *key)
    claimed = await session.execute(
        repository.claim_refresh(*key, now=now, stale_before=now - REFRESH_LEASE)
    )
    if claimed.rowcount == 1:  # type: ignore[attr-defined]
        enqueue_after_commit(session, actor_named("refresh_cluster_resources"), *key)
    return RefreshPending(retry_after=RETRY_AFTER_SECONDS)
