"""Queries for agents, agent tokens and live connections."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.agents.models import (
    Agent,
    AgentAccess,
    AgentConnection,
    AgentServerReplica,
    AgentToken,
)
from app.core.pagination import PageParams, paginate_query


def _owned_by(project_id: int | None) -> ColumnElement[bool]:
    return Agent.project_id.is_(None) if project_id is None else Agent.project_id == project_id


async def get(
    session: AsyncSession, project_id: int | None, agent_id: int, *, usable: bool = False
) -> Agent | None:
    """The project's own agent (instance-level for None); with `usable`, also an
    instance-level agent, which any project's clusters may be reached through."""
    level = _owned_by(project_id)
    if usable:
        level = or_(level, Agent.project_id.is_(None))
    return await session.scalar(select(Agent).where(Agent.id == agent_id, level))


async def list_page(
    session: AsyncSession, project_id: int | None, params: PageParams
) -> list[Agent]:
    query = paginate_query(select(Agent).where(_owned_by(project_id)), Agent.id, params)
    return list((await session.scalars(query)).all())


async def name_taken(session: AsyncSession, project_id: int | None, name: str) -> bool:
    query = select(Agent.id).where(_owned_by(project_id), Agent.name == name)
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


async def revoke_all_tokens(session: AsyncSession, agent_id: int, now: datetime) -> list[int]:
    """Revoke the agent's unrevoked tokens; returns their ids."""
    result = await session.execute(
        update(AgentToken)
        .where(AgentToken.agent_id == agent_id, AgentToken.revoked_at.is_(None))
        .values(revoked_at=now)
        .returning(AgentToken.id)
    )
    return sorted(int(token_id) for token_id in result.scalars())


async def forget_orphan_tokens(session: AsyncSession, revoked_before: datetime) -> None:
    """Drop revoked tokens of deleted agents once every replica has long seen the revocation."""
    await session.execute(
        delete(AgentToken).where(
            AgentToken.agent_id.is_(None), AgentToken.revoked_at < revoked_before
        )
    )


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


async def connected_agent_ids(
    session: AsyncSession, agent_ids: Iterable[int | None], now: datetime, dead_after: float
) -> set[int]:
    """Of these agents, the ones with a live connection on a live replica."""
    wanted = {agent_id for agent_id in agent_ids if agent_id is not None}
    if not wanted:
        return set()
    cutoff = now - timedelta(seconds=dead_after)
    query = (
        select(AgentConnection.agent_id)
        .join(AgentServerReplica, AgentServerReplica.name == AgentConnection.replica)
        .where(AgentConnection.agent_id.in_(wanted), AgentServerReplica.heartbeat_at >= cutoff)
        .distinct()
    )
    return {int(agent_id) for agent_id in (await session.scalars(query)).all()}


async def access_entries(session: AsyncSession, agent_id: int) -> list[AgentAccess]:
    """The agent's access list; the admin entry first, then by project."""
    query = (
        select(AgentAccess)
        .where(AgentAccess.agent_id == agent_id)
        .order_by(AgentAccess.project_id.is_not(None), AgentAccess.project_id)
    )
    return list((await session.scalars(query)).all())


async def replace_access(
    session: AsyncSession, agent_id: int, rows: list[dict[str, object]]
) -> None:
    await session.execute(delete(AgentAccess).where(AgentAccess.agent_id == agent_id))
    if rows:
        await session.execute(insert(AgentAccess), [{"agent_id": agent_id, **r} for r in rows])
