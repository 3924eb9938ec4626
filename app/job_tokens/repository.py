"""Queries for CI job credentials: their rows and the agents a job may use."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.agents.models import AgentAccess
from app.clusters.models import Cluster
from app.job_tokens.models import JobToken
from app.namespaces.models import NamespaceStatus, ProjectNamespace


async def get(session: AsyncSession, project_id: int, job_id: int) -> JobToken | None:
    query = select(JobToken).where(JobToken.id == job_id, JobToken.project_id == project_id)
    return await session.scalar(query)


async def access_entries(session: AsyncSession, project_id: int) -> list[AgentAccess]:
    """The project's entries in every agent's access list, by agent."""
    query = (
        select(AgentAccess)
        .where(AgentAccess.project_id == project_id)
        .order_by(AgentAccess.agent_id)
    )
    return list((await session.scalars(query)).all())


async def namespaces_by_agent(
    session: AsyncSession, project_id: int, environment: str, agent_ids: list[int]
) -> dict[int, str]:
    """The project's ready namespace for the environment on a cluster behind each agent."""
    if not agent_ids:
        return {}
    query = (
        select(Cluster.agent_id, ProjectNamespace.namespace)
        .join(Cluster, Cluster.id == ProjectNamespace.cluster_id)
        .where(
            ProjectNamespace.project_id == project_id,
            ProjectNamespace.environment == environment,
            ProjectNamespace.status == NamespaceStatus.ready,
            Cluster.agent_id.in_(agent_ids),
        )
        .order_by(ProjectNamespace.id)
    )
    found: dict[int, str] = {}
    for agent_id, namespace in (await session.execute(query)).all():
        if agent_id is not None:
            found.setdefault(int(agent_id), str(namespace))
    return found
