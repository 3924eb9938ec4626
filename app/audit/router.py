"""HTTP routes for reading the audit trail."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from sqlalchemy import select

from app.audit.models import AuditEvent
from app.audit.schemas import AuditEventRead
from app.auth.dependencies import PrincipalDep, SessionDep
from app.auth.models import Role
from app.core.pagination import Page, PageParams, make_page, page_params, paginate_query

router = APIRouter(tags=["audit"])
Paging = Annotated[PageParams, Depends(page_params)]


async def _page(
    session: SessionDep, project_id: int | None, params: PageParams
) -> Page[AuditEventRead]:
    query = select(AuditEvent)
    if project_id is not None:
        query = query.where(AuditEvent.project_id == project_id)
    rows = list((await session.scalars(paginate_query(query, AuditEvent.id, params))).all())
    items, cursor = make_page(rows, params)
    return Page(items=[AuditEventRead.model_validate(e) for e in items], next_cursor=cursor)


@router.get("/api/v1/projects/{project_id}/audit-events", operation_id="list_project_audit_events")
async def list_project_audit_events(
    project_id: int, session: SessionDep, principal: PrincipalDep, params: Paging
) -> Page[AuditEventRead]:
    """The project's audit trail, oldest first (maintainer)."""
    principal.require_project(project_id, Role.maintainer)
    return await _page(session, project_id, params)


@router.get("/api/v1/audit-events", operation_id="list_audit_events")
async def list_audit_events(
    session: SessionDep, principal: PrincipalDep, params: Paging
) -> Page[AuditEventRead]:
    """The whole instance's audit trail (admin)."""
    principal.require_admin()
    return await _page(session, None, params)
