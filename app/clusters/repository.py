"""Queries for clusters."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app.clusters.models import Cluster, ClusterStatus, KubernetesPlatform
from app.core.pagination import PageParams, paginate_query
from app.core.reconcile import PendingWork


def owned_by(project_id: int | None) -> ColumnElement[bool]:
    """The project's own clusters; instance-level ones for None."""
    if project_id is None:
        return Cluster.project_id.is_(None)
    return Cluster.project_id == project_id


def usable_by(project_id: int | None) -> ColumnElement[bool]:
    """The project's own clusters and the instance-level ones every project may use."""
    if project_id is None:
        return Cluster.project_id.is_(None)
    return or_(Cluster.project_id == project_id, Cluster.project_id.is_(None))


async def get(
    session: AsyncSession, project_id: int | None, cluster_id: int, *, usable: bool = False
) -> Cluster | None:
    """An own cluster, or with `usable` also an instance-level one."""
    level = usable_by(project_id) if usable else owned_by(project_id)
    query = select(Cluster).where(Cluster.id == cluster_id, level)
    return (await session.execute(query)).unique().scalar_one_or_none()


LIST_COLUMNS = (
    *(column for column in Cluster.__table__.columns),
    KubernetesPlatform.api_url,
    KubernetesPlatform.ca_pem,
    KubernetesPlatform.authorization_type,
    KubernetesPlatform.namespace_prefix,
)


async def list_page(
    session: AsyncSession, project_id: int | None, params: PageParams
) -> list[Row[Any]]:
    """The clusters a project may use (its own and the instance-level ones), or the
    instance-level ones for None. Plain rows, not ORM objects: lists are the hot path and
    never change what they read."""
    query = (
        select(*LIST_COLUMNS)
        .select_from(Cluster)
        .outerjoin(KubernetesPlatform)
        .where(usable_by(project_id))
    )
    connection = await session.connection()
    return list((await connection.execute(paginate_query(query, Cluster.id, params))).all())


async def name_taken(
    session: AsyncSession, project_id: int | None, *, name: str, exclude_id: int | None = None
) -> bool:
    query = select(Cluster.id).where(owned_by(project_id), Cluster.name == name)
    if exclude_id is not None:
        query = query.where(Cluster.id != exclude_id)
    return (await session.scalar(query)) is not None


async def scope_taken(
    session: AsyncSession, project_id: int | None, *, scope: str, exclude_id: int | None = None
) -> bool:
    query = select(Cluster.id).where(owned_by(project_id), Cluster.environment_scope == scope)
    if exclude_id is not None:
        query = query.where(Cluster.id != exclude_id)
    return (await session.scalar(query)) is not None


async def list_enabled(session: AsyncSession, project_id: int) -> list[Cluster]:
    """Enabled clusters the project may use: its own and the instance-level ones."""
    query = select(Cluster).where(usable_by(project_id), Cluster.enabled.is_(True))
    return list((await session.execute(query)).unique().scalars().all())


def stalled(session: Session, due_before: datetime) -> list[Cluster]:
    """Clusters being checked or deleted whose job was due before `due_before` and has not
    finished (the message was lost, or retried until it gave up)."""
    query = (
        select(Cluster)
        .where(
            Cluster.status.in_([ClusterStatus.connecting, ClusterStatus.deleting]),
            func.coalesce(Cluster.retry_at, Cluster.updated_at) < due_before,
        )
        .order_by(Cluster.id)
        .limit(500)
        .with_for_update(skip_locked=True, of=Cluster)
    )
    return list(session.scalars(query).unique())


def _job(cluster: Cluster) -> tuple[str, tuple[int]]:
    if cluster.status == ClusterStatus.deleting:
        return "delete_cluster", (cluster.id,)
    return "check_cluster", (cluster.id,)


def _give_up(cluster: Cluster, code: str) -> None:
    # A check that never finished leaves the cluster unreachable; a deletion, errored (deleting
    # again, or with `force`, is the way out).
    if cluster.status == ClusterStatus.connecting:
        cluster.status = ClusterStatus.unreachable
    else:
        cluster.status = ClusterStatus.errored
    cluster.error_code = code


PENDING = PendingWork("cluster", stalled, _job, _give_up)
