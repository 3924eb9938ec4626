"""Queries for agents, agent tokens and live connections."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.agents.models import Agent, AgentConnection, AgentServerReplica, AgentToken
from app.core.pagination import PageParams, paginate_query


async def get(session: AsyncSession, project_id: int, agent_id: int) -> Agent | None:
    query = select(Agent).where(Agent.id == agent_id, Agent.project_id == project_id)
    return await session.scalar(query)


async def list_page(session: AsyncSession, project_id: int, params: PageParams) -> list[Agent]:
    query = paginate_query(select(Agent).where(Agent.project_id == project_id), Agent.id, params)
    return list((await session.scalars(query)).all())


async def name_taken(session: AsyncSession, project_id: int, name: str) -> bool:
    query = select(Agent.id).where(Agent.project_id == project_id, Agent.name == name)
    return (await session.scalar(query)) is not None


async def get_token(session: AsyncSession, agent_id: int, token_id: int) -> AgentToken | None:
    query = select(AgentToken).where(AgentToken.id == token_id, AgentToken.agent_id == agent_id)
    return await session.scalar(query)


async def list_tokens(session: AsyncSession, agent_id: int, params: PageParams) -> list[AgentToken]:
    query = paginate_query(
        select(AgentToken).where(AgentToken.agent_id == agent_id), AgentToken.id, params
    )
    return list((await session.scalars(query)).all())


async def count_active_tokens(session: AsyncSession, agent_id: int, now: datetime) -> int:
    query = select(func.count(AgentToken.id)).where(
        AgentToken.agent_id == agent_id,
        AgentToken.revoked_at.is_(None),
        or_(AgentToken.expires_at.is_(None), AgentToken.expires_at > now),
    )
    return int(await session.scalar(query) or 0)


async def lock_agent(session: AsyncSession, agent_id: int) -> None:
    """Serialise token creation per agent so the active-token limit holds under concurrency."""
    await session.execute(select(Agent.id).where(Agent.id == agent_id).with_for_update())


async def live_connections(
    session: AsyncSession,
    agent_id: int,
    now: datetime,
    dead_after: float,
    *,
    limit: int,
    after: str | None = None,
) -> list[AgentConnection]:
    """Connections held by live replicas, by id (at most `limit` + 1, for the next cursor)."""
    cutoff = now - timedelta(seconds=dead_after)
    query = (
        select(AgentConnection)
        .join(AgentServerReplica, AgentServerReplica.name == AgentConnection.replica)
        .where(AgentConnection.agent_id == agent_id, AgentServerReplica.heartbeat_at >= cutoff)
    )
    if after is not None:
        query = query.where(AgentConnection.id > after)
    query = query.order_by(AgentConnection.id).limit(limit + 1)
    return list((await session.scalars(query)).all())
