"""Queries for clusters."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.clusters.models import Cluster, KubernetesPlatform
from app.core.pagination import PageParams, paginate_query


async def get(session: AsyncSession, project_id: int, cluster_id: int) -> Cluster | None:
    query = select(Cluster).where(Cluster.id == cluster_id, Cluster.project_id == project_id)
    return (await session.execute(query)).unique().scalar_one_or_none()


LIST_COLUMNS = (
    *(column for column in Cluster.__table__.columns),
    KubernetesPlatform.api_url,
    KubernetesPlatform.ca_pem,
    KubernetesPlatform.authorization_type,
    KubernetesPlatform.namespace_prefix,
)


async def list_page(session: AsyncSession, project_id: int, params: PageParams) -> list[Row[Any]]:
    """Plain rows, not ORM objects: lists are the hot path and never change what they read."""
    query = (
        select(*LIST_COLUMNS)
        .select_from(Cluster)
        .outerjoin(KubernetesPlatform)
        .where(Cluster.project_id == project_id)
    )
    return list((await session.execute(paginate_query(query, Cluster.id, params))).all())


async def name_taken(
    session: AsyncSession, project_id: int, *, name: str, exclude_id: int | None = None
) -> bool:
    query = select(Cluster.id).where(Cluster.project_id == project_id, Cluster.name == name)
    if exclude_id is not None:
        query = query.where(Cluster.id != exclude_id)
    return (await session.scalar(query)) is not None


async def scope_taken(
    session: AsyncSession, project_id: int, *, scope: str, exclude_id: int | None = None
) -> bool:
    query = select(Cluster.id).where(
        Cluster.project_id == project_id, Cluster.environment_scope == scope
    )
    if exclude_id is not None:
        query = query.where(Cluster.id != exclude_id)
    return (await session.scalar(query)) is not None


async def list_enabled(session: AsyncSession, project_id: int) -> list[Cluster]:
    query = select(Cluster).where(Cluster.project_id == project_id, Cluster.enabled.is_(True))
    return list((await session.execute(query)).unique().scalars().all())
