"""Queries for project namespaces."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, undefer

from app.core.pagination import PageParams, paginate_query
from app.core.reconcile import PendingWork
from app.namespaces.models import NamespaceStatus, ProjectNamespace


async def get(
    session: AsyncSession,
    project_id: int,
    cluster_id: int,
    namespace_id: int,
    *,
    with_token: bool = False,
) -> ProjectNamespace | None:
    # The project too: an instance-level cluster holds namespaces of many projects.
    query = select(ProjectNamespace).where(
        ProjectNamespace.id == namespace_id,
        ProjectNamespace.cluster_id == cluster_id,
        ProjectNamespace.project_id == project_id,
    )
    if with_token:
        query = query.options(undefer(ProjectNamespace.service_account_token))
    return await session.scalar(query)


async def find(
    session: AsyncSession, cluster_id: int, project_id: int, environment: str
) -> ProjectNamespace | None:
    return await session.scalar(
        select(ProjectNamespace).where(
            ProjectNamespace.cluster_id == cluster_id,
            ProjectNamespace.project_id == project_id,
            ProjectNamespace.environment == environment,
        )
    )


async def namespace_taken(session: AsyncSession, cluster_id: int, namespace: str) -> bool:
    query = select(ProjectNamespace.id).where(
        ProjectNamespace.cluster_id == cluster_id, ProjectNamespace.namespace == namespace
    )
    return (await session.scalar(query)) is not None


async def list_page(
    session: AsyncSession, project_id: int, cluster_id: int, params: PageParams
) -> list[ProjectNamespace]:
    query = paginate_query(
        select(ProjectNamespace).where(
            ProjectNamespace.cluster_id == cluster_id, ProjectNamespace.project_id == project_id
        ),
        ProjectNamespace.id,
        params,
    )
    return list((await session.scalars(query)).all())


def stalled(session: Session, due_before: datetime) -> list[ProjectNamespace]:
    """Namespaces being provisioned or deleted whose job was due before `due_before` and has
    not finished (the message was lost, or retried until it gave up)."""
    query = (
        select(ProjectNamespace)
        .where(
            ProjectNamespace.status.in_([NamespaceStatus.provisioning, NamespaceStatus.deleting]),
            func.coalesce(ProjectNamespace.retry_at, ProjectNamespace.updated_at) < due_before,
        )
        .order_by(ProjectNamespace.id)
        .limit(500)
        .with_for_update(skip_locked=True)
    )
    return list(session.scalars(query))


def _job(row: ProjectNamespace) -> tuple[str, tuple[int]]:
    if row.status == NamespaceStatus.deleting:
        return "remove_namespace", (row.id,)
    return "ensure_namespace", (row.id,)


def _give_up(row: ProjectNamespace, code: str) -> None:
    row.status = NamespaceStatus.failed
    row.error_code = code


PENDING = PendingWork("namespace", stalled, _job, _give_up)
