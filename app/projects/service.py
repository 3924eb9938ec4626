"""Rules for projects."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import record_audit
from app.auth.models import Role
from app.auth.principal import Principal
from app.core.errors import ConflictError, NotFoundError
from app.projects import repository
from app.projects.models import Project
from app.projects.schemas import ProjectCreate


async def get_visible(session: AsyncSession, principal: Principal, project_id: int) -> Project:
    principal.require_project(project_id, Role.reporter)
    project = await repository.get(session, project_id)
    if project is None:
        raise NotFoundError("The project does not exist or you cannot see it.")
    return project


async def create(session: AsyncSession, principal: Principal, data: ProjectCreate) -> Project:
    principal.require_admin()
    if await repository.get_by_name(session, data.name) is not None:
        raise ConflictError(f"A project named {data.name!r} exists.", code="project_name_taken")
    project = Project(name=data.name, description=data.description)
    session.add(project)
    await session.flush()
    record_audit(session, principal, "project.create", "project", project.id, project_id=project.id)
    return project


async def delete(session: AsyncSession, principal: Principal, project_id: int) -> None:
    principal.require_admin()
    project = await get_visible(session, principal, project_id)
    if await repository.has_clusters(session, project_id):
        raise ConflictError(
            "Delete the project's clusters first, so that what clusterport created in them "
            "is cleaned up.",
            code="project_not_empty",
        )
    await session.delete(project)
    record_audit(session, principal, "project.delete", "project", project_id, project_id=project_id)
