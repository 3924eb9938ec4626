"""Rules for agents and their tokens: registration, token limit, show-once tokens, revocation."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from app.agents import repository
from app.agents.models import AGENT_TOKEN_PREFIX, Agent, AgentAccess, AgentConnection, AgentToken
from app.agents.schemas import AgentAccessEntry
from app.agents.settings import get_agents_settings
from app.audit.service import record_audit
from app.auth.models import Role
from app.auth.principal import Principal
from app.auth.tokens import display_prefix, generate_token, hash_token
from app.core.db import utcnow
from app.core.errors import BadRequestError, ConflictError, NotFoundError, UnprocessableError
from app.core.jobs import actor_named, enqueue_after_commit
from app.gitops import repository as gitops_repository
from app.gitops.models import GitOpsEnvironment
from app.projects import repository as projects
from app.projects.service import get_visible

# How long revoked tokens of a deleted agent are kept: far longer than replicas take to notice.
ORPHAN_TOKEN_TTL = timedelta(days=1)


async def get(
    session: AsyncSession, principal: Principal, project_id: int | None, agent_id: int, role: Role
) -> Agent:
    principal.require_project(project_id, role)
    agent = await repository.get(session, project_id, agent_id)
    if agent is None:
        raise NotFoundError("The agent does not exist.", code="agent_not_found")
    return agent


async def create(
    session: AsyncSession, principal: Principal, project_id: int | None, name: str
) -> Agent:
    """Register an agent of the project, or an instance-level one (`project_id` None, admin)."""
    principal.require_project(project_id, Role.maintainer)
    if project_id is not None:
        await get_visible(session, principal, project_id)
    if await repository.name_taken(session, project_id, name):
        raise ConflictError(f"The project has an agent named {name!r}.", code="agent_name_taken")
    agent = Agent(project_id=project_id, name=name)
    session.add(agent)
    await session.flush()
    record_audit(
        session,
        principal,
        "agent.create",
        "agent",
        agent.id,
        project_id=project_id,
        details={"name": name},
    )
    return agent


async def create_token(
    session: AsyncSession,
    principal: Principal,
    project_id: int | None,
    agent_id: int,
    *,
    name: str,
    expires_at: datetime | None,
) -> tuple[AgentToken, str]:
    agent = await get(session, principal, project_id, agent_id, Role.maintainer)
    now = utcnow()
    if expires_at is not None and expires_at <= now:
        raise BadRequestError("expires_at must be in the future.", code="invalid_expiry")
    await repository.lock_agent(session, agent.id)
    limit = get_agents_settings().agent_max_tokens
    if await repository.count_active_tokens(session, agent.id, now) >= limit:
        raise ConflictError(
            f"The agent already has {limit} active tokens; revoke one first.",
            code="too_many_tokens",
        )
    raw = generate_token(AGENT_TOKEN_PREFIX)
    token = AgentToken(
        agent_id=agent.id,
        name=name,
        token_hash=hash_token(raw),
        token_prefix=display_prefix(raw),
        expires_at=expires_at,
        created_at=now,
    )
    session.add(token)
    await session.flush()
    record_audit(
        session,
        principal,
        "agent_token.create",
        "agent_token",
        token.id,
        project_id=project_id,
        details={"agent_id": agent.id, "name": name},
    )
    return token, raw


async def revoke_token(
    session: AsyncSession,
    principal: Principal,
    project_id: int | None,
    agent_id: int,
    token_id: int,
) -> None:
    """Revoke; every agent-server replica closes the token's connections within a second."""
    agent = await get(session, principal, project_id, agent_id, Role.maintainer)
    token = await repository.get_token(session, agent.id, token_id)
    if token is None:
        raise NotFoundError("The agent token does not exist.", code="agent_token_not_found")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        record_audit(
            session,
            principal,
            "agent_token.revoke",
            "agent_token",
            token.id,
            project_id=project_id,
            details={"agent_id": agent.id},
        )


async def set_config_source(
    session: AsyncSession,
    principal: Principal,
    project_id: int,
    agent_id: int,
    source_id: int | None,
) -> Agent:
    """Read the agent's configuration from that GitOps source of the project from now on (a
    worker reads it at once), or stop (None): the environments it declared stay, as ordinary
    environments (maintainer)."""
    agent = await get(session, principal, project_id, agent_id, Role.maintainer)
    if (
        source_id is not None
        and await gitops_repository.get_source(session, project_id, source_id) is None
    ):
        raise NotFoundError("The source does not exist.", code="source_not_found")
    if source_id == agent.config_source_id:
        return agent
    agent.config_source_id = source_id
    agent.config_status = None if source_id is None else "pending"
    agent.config_commit = agent.config_error_code = agent.config_error = None
    agent.config_error_line = None
    agent.config_error_commit = None
    agent.config_checked_at = None
    if source_id is None:
        await session.execute(
            update(GitOpsEnvironment)
            .where(GitOpsEnvironment.configured_by_agent_id == agent.id)
            .values(configured_by_agent_id=None)
        )
    else:
        enqueue_after_commit(session, actor_named("load_agent_config"), agent.id)
    record_audit(
        session,
        principal,
        "agent.update",
        "agent",
        agent.id,
        project_id=project_id,
        details={"config_source_id": source_id},
    )
    await session.flush()
    return agent


async def delete(
    session: AsyncSession, principal: Principal, project_id: int, agent_id: int
) -> None:
    """Delete the agent (maintainer). Its tokens are revoked first, so every agent-server replica
    closes their connections within a second; the revoked rows outlive the agent for a day."""
    agent = await get(session, principal, project_id, agent_id, Role.maintainer)
    now = utcnow()
    revoked = await repository.revoke_all_tokens(session, agent.id, now)
    await repository.forget_orphan_tokens(session, revoked_before=now - ORPHAN_TOKEN_TTL)
    record_audit(
        session,
        principal,
        "agent.delete",
        "agent",
        agent.id,
        project_id=project_id,
        details={"name": agent.name, "revoked_token_ids": revoked},
    )
    await session.delete(agent)
    await session.flush()


async def connections(
    session: AsyncSession,
    principal: Principal,
    project_id: int | None,
    agent_id: int,
    *,
    limit: int,
    after: str | None,
) -> list[AgentConnection]:
    agent = await get(session, principal, project_id, agent_id, Role.reporter)
    dead_after = get_agents_settings().agent_replica_dead_after
    return await repository.live_connections(
        session, agent.id, utcnow(), dead_after, limit=limit, after=after
    )


async def access(
    session: AsyncSession, principal: Principal, project_id: int | None, agent_id: int
) -> tuple[Agent, list[AgentAccess]]:
    agent = await get(session, principal, project_id, agent_id, Role.maintainer)
    return agent, await repository.access_entries(session, agent.id)


async def set_access(
    session: AsyncSession,
    principal: Principal,
    project_id: int | None,
    agent_id: int,
    entries: list[AgentAccessEntry],
) -> list[AgentAccess]:
    """Replace the agent's proxy access list (maintainer of the agent's project, or admin for
    an instance-level agent). Replicas apply it within their 2-second authorization cache."""
    agent = await get(session, principal, project_id, agent_id, Role.maintainer)
    seen: set[int | None] = set()
    for entry in entries:
        if entry.project_id in seen:
            which = (
                "instance admin tokens"
                if entry.project_id is None
                else (f"project {entry.project_id}")
            )
            raise UnprocessableError(
                f"The access list has two entries for {which}; keep one.",
                code="duplicate_access_entry",
            )
        seen.add(entry.project_id)
        if entry.environments is not None and len(set(entry.environments)) != len(
            entry.environments
        ):
            raise UnprocessableError(
                f"The entry for project {entry.project_id} names an environment twice.",
                code="duplicate_environment",
            )
    wanted = {project for project in seen if project is not None}
    missing = sorted(wanted - await projects.existing_ids(session, wanted))
    if missing:
        raise UnprocessableError(
            f"No project has the id {missing[0]}; access can only be given to existing projects.",
            code="unknown_project",
        )
    await repository.lock_agent(session, agent.id)
    rows: list[dict[str, object]] = [
        {
            "project_id": entry.project_id,
            "min_role": entry.min_role,
            "access_as": entry.access_as.value,
            "environments": entry.environments,
        }
        for entry in entries
    ]
    await repository.replace_access(session, agent.id, rows)
    record_audit(
        session,
        principal,
        "agent.access.update",
        "agent",
        agent.id,
        project_id=project_id,
        details={"entries": rows},
    )
    return await repository.access_entries(session, agent.id)
