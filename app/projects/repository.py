"""Queries for projects."""

from __future__ import annotations

from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.clusters.models import Cluster
from app.core.pagination import PageParams, paginate_query
from app.projects.models import Project


async def get(session: AsyncSession, project_id: int) -> Project | None:
    return await session.get(Project, project_id)


async def get_by_name(session: AsyncSession, name: str) -> Project | None:
    return (await session.execute(select(Project).where(Project.name == name))).scalar_one_or_none()


async def list_page(
    session: AsyncSession, params: PageParams, only_id: int | None = None
) -> list[Project]:
    query = select(Project)
    if only_id is not None:
        query = query.where(Project.id == only_id)
    return list((await session.scalars(paginate_query(query, Project.id, params))).all())


async def has_clusters(session: AsyncSession, project_id: int) -> bool:
    return bool(await session.scalar(select(exists().where(Cluster.project_id == project_id))))


async def existing_ids(session: AsyncSession, project_ids: set[int]) -> set[int]:
    if not project_ids:
        return set()
    query = select(Project.id).where(Project.id.in_(project_ids))
    return {int(project_id) for project_id in (await session.scalars(query)).all()}
