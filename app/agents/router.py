"""HTTP routes for a project's agents, their tokens and their live connections."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Query, status

from app.agents import repository, service
from app.agents.schemas import (
    AgentAccessEntry,
    AgentAccessRead,
    AgentAccessUpdate,
    AgentConnectionRead,
    AgentCreate,
    AgentRead,
    AgentTokenCreate,
    AgentTokenCreated,
    AgentTokenRead,
    AgentUpdate,
)
from app.auth.dependencies import PrincipalDep, SessionDep
from app.auth.models import Role
from app.core.errors import BadRequestError
from app.core.pagination import Page, PageParams, make_page, page_params

router = APIRouter(prefix="/api/v1/projects/{project_id}/agents", tags=["agents"])
Params = Annotated[PageParams, Depends(page_params)]


@router.post("", status_code=status.HTTP_201_CREATED, operation_id="create_agent")
async def create_agent(
    project_id: int, data: AgentCreate, session: SessionDep, principal: PrincipalDep
) -> AgentRead:
    """Register an agent (maintainer). Its name is a DNS label, unique in the project. With
    `config_source_id`, its environments are declared in that source's
    `.clusterport/agents/<name>/config.yaml`."""
    agent = await service.create(session, principal, project_id, data.name)
    if data.config_source_id is not None:
        agent = await service.set_config_source(
            session, principal, project_id, agent.id, data.config_source_id
        )
    return AgentRead.of(agent)


@router.get("", operation_id="list_agents")
async def list_agents(
    project_id: int, session: SessionDep, principal: PrincipalDep, params: Params
) -> Page[AgentRead]:
    principal.require_project(project_id, Role.reporter)
    items, cursor = make_page(await repository.list_page(session, project_id, params), params)
    return Page(items=[AgentRead.of(a) for a in items], next_cursor=cursor)


@router.get("/{agent_id}", operation_id="get_agent")
async def get_agent(
    project_id: int, agent_id: int, session: SessionDep, principal: PrincipalDep
) -> AgentRead:
    return AgentRead.of(await service.get(session, principal, project_id, agent_id, Role.reporter))


@router.patch("/{agent_id}", operation_id="update_agent")
async def update_agent(
    project_id: int,
    agent_id: int,
    data: AgentUpdate,
    session: SessionDep,
    principal: PrincipalDep,
) -> AgentRead:
    """Name (or, with null, stop reading) the GitOps source holding the agent's configuration
    file (maintainer). The file is read at once; `config` shows how that went."""
    agent = await service.get(session, principal, project_id, agent_id, Role.maintainer)
    if "config_source_id" in data.model_fields_set:
        agent = await service.set_config_source(
            session, principal, project_id, agent.id, data.config_source_id
        )
    return AgentRead.of(agent)


@router.delete("/{agent_id}", status_code=status.HTTP_204_NO_CONTENT, operation_id="delete_agent")
async def delete_agent(
    project_id: int, agent_id: int, session: SessionDep, principal: PrincipalDep
) -> None:
    """Delete an agent (maintainer): its tokens are revoked and its connections close within a
    second on every agent-server replica."""
    await service.delete(session, principal, project_id, agent_id)


@router.post(
    "/{agent_id}/tokens", status_code=status.HTTP_201_CREATED, operation_id="create_agent_token"
)
async def create_agent_token(
    project_id: int,
    agent_id: int,
    data: AgentTokenCreate,
    session: SessionDep,
    principal: PrincipalDep,
) -> AgentTokenCreated:
    """Create an agent token (maintainer); the token is in this response only."""
    token, raw = await service.create_token(
        session, principal, project_id, agent_id, name=data.name, expires_at=data.expires_at
    )
    return AgentTokenCreated(**AgentTokenRead.of(token).model_dump(), token=raw)


@router.get("/{agent_id}/tokens", operation_id="list_agent_tokens")
async def list_agent_tokens(
    project_id: int, agent_id: int, session: SessionDep, principal: PrincipalDep, params: Params
) -> Page[AgentTokenRead]:
    agent = await service.get(session, principal, project_id, agent_id, Role.reporter)
    items, cursor = make_page(await repository.list_tokens(session, agent.id, params), params)
    return Page(items=[AgentTokenRead.of(t) for t in items], next_cursor=cursor)


@router.delete(
    "/{agent_id}/tokens/{token_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="revoke_agent_token",
)
async def revoke_agent_token(
    project_id: int, agent_id: int, token_id: int, session: SessionDep, principal: PrincipalDep
) -> None:
    """Revoke a token (maintainer); its live connections close within a second."""
    await service.revoke_token(session, principal, project_id, agent_id, token_id)


@router.get("/{agent_id}/connections", operation_id="list_agent_connections")
async def list_agent_connections(
    project_id: int,
    agent_id: int,
    session: SessionDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=100, description="Items per page.")] = 20,
    cursor: Annotated[
        str | None, Query(max_length=36, description="`next_cursor` of the previous page.")
    ] = None,
) -> Page[AgentConnectionRead]:
    """Live connections of the agent: replica, versions, connected at, last heartbeat."""
    return await _connections_page(session, principal, project_id, agent_id, limit, cursor)


async def _connections_page(
    session: SessionDep,
    principal: PrincipalDep,
    project_id: int | None,
    agent_id: int,
    limit: int,
    cursor: str | None,
) -> Page[AgentConnectionRead]:
    # Connection ids are UUIDs, so the cursor is one too (the other lists' cursors are ids).
    after = None
    if cursor is not None:
        try:
            after = str(UUID(cursor))
        except ValueError:
            raise BadRequestError(
                "The cursor is not one this API returned.", code="invalid_cursor"
            ) from None
    rows = await service.connections(
        session, principal, project_id, agent_id, limit=limit, after=after
    )
    page = rows[:limit]
    next_cursor = page[-1].id if len(rows) > limit else None
    return Page(items=[AgentConnectionRead.of(r) for r in page], next_cursor=next_cursor)


@router.get("/{agent_id}/access", operation_id="get_agent_access")
async def get_agent_access(
    project_id: int, agent_id: int, session: SessionDep, principal: PrincipalDep
) -> AgentAccessRead:
    """Who may use the agent's Kubernetes API proxy, and as whom (maintainer)."""
    agent, rows = await service.access(session, principal, project_id, agent_id)
    return AgentAccessRead(agent_id=agent.id, entries=[AgentAccessEntry.of(r) for r in rows])


@router.put("/{agent_id}/access", operation_id="set_agent_access")
async def set_agent_access(
    project_id: int,
    agent_id: int,
    data: AgentAccessUpdate,
    session: SessionDep,
    principal: PrincipalDep,
) -> AgentAccessRead:
    """Replace the agent's proxy access list (maintainer). Proxy access is off until the list
    has an entry for the caller's project; another project's entry shares the agent with it."""
    rows = await service.set_access(session, principal, project_id, agent_id, data.entries)
    return AgentAccessRead(agent_id=agent_id, entries=[AgentAccessEntry.of(r) for r in rows])


# Instance-level agents (admin): clusters of every project may be reached through them.
instance_router = APIRouter(prefix="/api/v1/agents", tags=["agents"])


@instance_router.post("", status_code=status.HTTP_201_CREATED, operation_id="create_instance_agent")
async def create_instance_agent(
    data: AgentCreate, session: SessionDep, principal: PrincipalDep
) -> AgentRead:
    """Register an instance-level agent (admin)."""
    if data.config_source_id is not None:
        raise BadRequestError(
            "Only an agent of a project reads its configuration from a GitOps source.",
            code="config_source_needs_project",
        )
    return AgentRead.of(await service.create(session, principal, None, data.name))


@instance_router.get("", operation_id="list_instance_agents")
async def list_instance_agents(
    session: SessionDep, principal: PrincipalDep, params: Params
) -> Page[AgentRead]:
    principal.require_admin()
    items, cursor = make_page(await repository.list_page(session, None, params), params)
    return Page(items=[AgentRead.of(a) for a in items], next_cursor=cursor)


@instance_router.post(
    "/{agent_id}/tokens",
    status_code=status.HTTP_201_CREATED,
    operation_id="create_instance_agent_token",
)
async def create_instance_agent_token(
    agent_id: int, data: AgentTokenCreate, session: SessionDep, principal: PrincipalDep
) -> AgentTokenCreated:
    """Create a token for an instance-level agent (admin); shown in this response only."""
    token, raw = await service.create_token(
        session, principal, None, agent_id, name=data.name, expires_at=data.expires_at
    )
    return AgentTokenCreated(**AgentTokenRead.of(token).model_dump(), token=raw)


@instance_router.delete(
    "/{agent_id}/tokens/{token_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="revoke_instance_agent_token",
)
async def revoke_instance_agent_token(
    agent_id: int, token_id: int, session: SessionDep, principal: PrincipalDep
) -> None:
    await service.revoke_token(session, principal, None, agent_id, token_id)


@instance_router.get("/{agent_id}/connections", operation_id="list_instance_agent_connections")
async def list_instance_agent_connections(
    agent_id: int,
    session: SessionDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=100, description="Items per page.")] = 20,
    cursor: Annotated[
        str | None, Query(max_length=36, description="`next_cursor` of the previous page.")
    ] = None,
) -> Page[AgentConnectionRead]:
    return await _connections_page(session, principal, None, agent_id, limit, cursor)


@instance_router.get("/{agent_id}/access", operation_id="get_instance_agent_access")
async def get_instance_agent_access(
    agent_id: int, session: SessionDep, principal: PrincipalDep
) -> AgentAccessRead:
    agent, rows = await service.access(session, principal, None, agent_id)
    return AgentAccessRead(agent_id=agent.id, entries=[AgentAccessEntry.of(r) for r in rows])


@instance_router.put("/{agent_id}/access", operation_id="set_instance_agent_access")
async def set_instance_agent_access(
    agent_id: int, data: AgentAccessUpdate, session: SessionDep, principal: PrincipalDep
) -> AgentAccessRead:
    """Replace an instance-level agent's proxy access list (admin): an entry per project that
    may use its proxy."""
    rows = await service.set_access(session, principal, None, agent_id, data.entries)
    return AgentAccessRead(agent_id=agent_id, entries=[AgentAccessEntry.of(r) for r in rows])
