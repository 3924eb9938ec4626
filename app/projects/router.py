"""HTTP routes for projects."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, status

from app.auth.dependencies import PrincipalDep, SessionDep
from app.core.pagination import Page, PageParams, make_page, page_params
from app.projects import repository, service
from app.projects.schemas import ProjectCreate, ProjectRead

router = APIRouter(prefix="/api/v1/projects", tags=["projects"])


@router.post("", status_code=status.HTTP_201_CREATED, operation_id="create_project")
async def create_project(
    data: ProjectCreate, session: SessionDep, principal: PrincipalDep
) -> ProjectRead:
    """Create a project (instance admin)."""
    return ProjectRead.model_validate(await service.create(session, principal, data))


@router.get("", operation_id="list_projects")
async def list_projects(
    session: SessionDep,
    principal: PrincipalDep,
    params: Annotated[PageParams, Depends(page_params)],
) -> Page[ProjectRead]:
    """Projects this token can see: all for an admin, its own for a project token."""
    rows = await repository.list_page(
        session, params, only_id=None if principal.is_admin else principal.project_id
    )
    items, cursor = make_page(rows, params)
    return Page(items=[ProjectRead.model_validate(p) for p in items], next_cursor=cursor)


@router.get("/{project_id}", operation_id="get_project")
async def get_project(project_id: int, session: SessionDep, principal: PrincipalDep) -> ProjectRead:
    return ProjectRead.model_validate(await service.get_visible(session, principal, project_id))


@router.delete(
    "/{project_id}", status_code=status.HTTP_204_NO_CONTENT, operation_id="delete_project"
)
async def delete_project(project_id: int, session: SessionDep, principal: PrincipalDep) -> None:
    """Delete an empty project (instance admin)."""
    await service.delete(session, principal, project_id)
