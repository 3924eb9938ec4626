"""HTTP routes for access tokens: project tokens and instance admin tokens."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, status

from app.auth import repository, service
from app.auth.dependencies import PrincipalDep, SessionDep
from app.auth.models import Role
from app.auth.schemas import TokenCreate, TokenCreated, TokenRead
from app.core.pagination import Page, PageParams, make_page, page_params
from app.projects.service import get_visible

router = APIRouter(tags=["tokens"])
Paging = Annotated[PageParams, Depends(page_params)]


@router.post(
    "/api/v1/projects/{project_id}/tokens",
    status_code=status.HTTP_201_CREATED,
    operation_id="create_project_token",
)
async def create_project_token(
    project_id: int, data: TokenCreate, session: SessionDep, principal: PrincipalDep
) -> TokenCreated:
    """Create a project token (maintainer). The token is in this response only."""
    principal.require_project(project_id, Role.maintainer)
    await get_visible(session, principal, project_id)
    token, raw = await service.create_token(
        session,
        principal,
        project_id=project_id,
        name=data.name,
        role=data.role,
        expires_at=data.expires_at,
    )
    return TokenCreated(**TokenRead.model_validate(token).model_dump(), token=raw)


@router.get("/api/v1/projects/{project_id}/tokens", operation_id="list_project_tokens")
async def list_project_tokens(
    project_id: int, session: SessionDep, principal: PrincipalDep, params: Paging
) -> Page[TokenRead]:
    principal.require_project(project_id, Role.maintainer)
    await get_visible(session, principal, project_id)
    items, cursor = make_page(await repository.list_page(session, project_id, params), params)
    return Page(items=[TokenRead.model_validate(t) for t in items], next_cursor=cursor)


@router.delete(
    "/api/v1/projects/{project_id}/tokens/{token_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="revoke_project_token",
)
async def revoke_project_token(
    project_id: int, token_id: int, session: SessionDep, principal: PrincipalDep
) -> None:
    """Revoke a project token at once (idempotent)."""
    principal.require_project(project_id, Role.maintainer)
    await get_visible(session, principal, project_id)
    await service.revoke_token(session, principal, project_id=project_id, token_id=token_id)


@router.post(
    "/api/v1/admin/tokens", status_code=status.HTTP_201_CREATED, operation_id="create_admin_token"
)
async def create_admin_token(
    data: TokenCreate, session: SessionDep, principal: PrincipalDep
) -> TokenCreated:
    """Create an instance admin token (admin). `role` must be `admin`."""
    principal.require_admin()
    token, raw = await service.create_token(
        session,
        principal,
        project_id=None,
        name=data.name,
        role=data.role,
        expires_at=data.expires_at,
    )
    return TokenCreated(**TokenRead.model_validate(token).model_dump(), token=raw)


@router.get("/api/v1/admin/tokens", operation_id="list_admin_tokens")
async def list_admin_tokens(
    session: SessionDep, principal: PrincipalDep, params: Paging
) -> Page[TokenRead]:
    principal.require_admin()
    items, cursor = make_page(await repository.list_page(session, None, params), params)
    return Page(items=[TokenRead.model_validate(t) for t in items], next_cursor=cursor)


@router.delete(
    "/api/v1/admin/tokens/{token_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="revoke_admin_token",
)
async def revoke_admin_token(token_id: int, session: SessionDep, principal: PrincipalDep) -> None:
    principal.require_admin()
    await service.revoke_token(session, principal, project_id=None, token_id=token_id)
