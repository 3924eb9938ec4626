"""Queries for sources, environments and deployments (API side, async)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, undefer

from app.core.db import utcnow
from app.core.pagination import PageParams, paginate_query
from app.gitops.models import (
    Deployment,
    DeploymentObject,
    DeploymentStatus,
    GitOpsEnvironment,
    GitSource,
)


async def get_source(session: AsyncSession, project_id: int, source_id: int) -> GitSource | None:
    return await session.scalar(
        select(GitSource).where(GitSource.id == source_id, GitSource.project_id == project_id)
    )


async def source_has_token(session: AsyncSession, source_id: int) -> bool:
    query = select(GitSource.token.is_not(None)).where(GitSource.id == source_id)
    return bool(await session.scalar(query))


async def source_for_hook(session: AsyncSession, hook_id: str) -> GitSource | None:
    return await session.scalar(
        select(GitSource)
        .where(GitSource.hook_id == hook_id)
        .options(undefer(GitSource.webhook_secret))
    )


async def list_sources(
    session: AsyncSession, project_id: int, params: PageParams
) -> list[GitSource]:
    query = paginate_query(
        select(GitSource).where(GitSource.project_id == project_id), GitSource.id, params
    )
    return list((await session.scalars(query)).all())


async def sources_with_token(session: AsyncSession, source_ids: list[int]) -> set[int]:
    """Which of the sources have a token (without loading or decrypting any)."""
    query = select(GitSource.id).where(GitSource.id.in_(source_ids), GitSource.token.is_not(None))
    return set((await session.scalars(query)).all())


async def source_name_taken(session: AsyncSession, project_id: int, name: str) -> bool:
    query = select(GitSource.id).where(GitSource.project_id == project_id, GitSource.name == name)
    return (await session.scalar(query)) is not None


async def get_environment(
    session: AsyncSession, project_id: int, environment_id: int
) -> GitOpsEnvironment | None:
    return await session.scalar(
        select(GitOpsEnvironment).where(
            GitOpsEnvironment.id == environment_id, GitOpsEnvironment.project_id == project_id
        )
    )


async def environment_name_taken(session: AsyncSession, project_id: int, name: str) -> bool:
    query = select(GitOpsEnvironment.id).where(
        GitOpsEnvironment.project_id == project_id, GitOpsEnvironment.name == name
    )
    return (await session.scalar(query)) is not None


async def list_environments(
    session: AsyncSession, project_id: int, params: PageParams
) -> list[GitOpsEnvironment]:
    query = paginate_query(
        select(GitOpsEnvironment).where(GitOpsEnvironment.project_id == project_id),
        GitOpsEnvironment.id,
        params,
    )
    return list((await session.scalars(query)).all())


async def get_deployment(
    session: AsyncSession, project_id: int, deployment_id: int
) -> Deployment | None:
    return await session.scalar(
        select(Deployment).where(
            Deployment.id == deployment_id, Deployment.project_id == project_id
        )
    )


async def list_deployments(
    session: AsyncSession, environment_id: int, params: PageParams
) -> list[Deployment]:
    """Newest first is what a history view wants, but pages go by ascending id like every
    other list; `cursor` works the same."""
    query = paginate_query(
        select(Deployment).where(Deployment.environment_id == environment_id),
        Deployment.id,
        params,
    )
    return list((await session.scalars(query)).all())


async def deployment_objects(session: AsyncSession, deployment_id: int) -> list[DeploymentObject]:
    query = (
        select(DeploymentObject)
        .where(DeploymentObject.deployment_id == deployment_id)
        .order_by(DeploymentObject.id)
    )
    return list((await session.scalars(query)).all())


def pending_deployments_without_live_job(
    session: Session, *, stale_after: timedelta = timedelta(minutes=2)
) -> list[tuple[int, int, str]]:
    """(deployment id, environment id, status) of deployments that are queued or running but
    whose record has not moved for `stale_after`: their job was lost (a crash, a lost message).
    Every step stamps `updated_at`, and health polls do it every few hundred milliseconds. The
    periodic reconciler calls `resume_deployment` for each (it is idempotent)."""
    cutoff = utcnow() - stale_after
    rows = session.execute(
        select(Deployment.id, Deployment.environment_id, Deployment.status).where(
            Deployment.status.in_([DeploymentStatus.queued, DeploymentStatus.running]),
            Deployment.updated_at < cutoff,
        )
    )
    return [(r[0], r[1], r[2]) for r in rows]


def sources_with_stale_poll(session: Session) -> list[int]:
    """Ids of polled sources not polled for two intervals: their poll chain was lost (a crash,
    a lost message). The periodic reconciler enqueues `poll_source` for each."""
    now = utcnow()
    rows = session.execute(
        select(
            GitSource.id,
            GitSource.poll_interval_seconds,
            GitSource.last_polled_at,
            GitSource.created_at,
        ).where(GitSource.poll_interval_seconds > 0)
    )
    return [
        source_id
        for source_id, interval, polled, created in rows
        if now - (polled or created) > timedelta(seconds=2 * interval + 60)
    ]
