"""Queries for access tokens."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Row, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.models import AccessToken
from app.core.pagination import PageParams, paginate_query


async def get_by_hash(
    session: AsyncSession, token_hash: str
) -> Row[int, str, str, int | None, datetime | None, datetime | None, datetime | None] | None:
    # Every request runs this: plain columns, no ORM identity map.
    query = select(
        AccessToken.id,
        AccessToken.name,
        AccessToken.role,
        AccessToken.project_id,
        AccessToken.expires_at,
        AccessToken.last_used_at,
        AccessToken.revoked_at,
    ).where(AccessToken.token_hash == token_hash)
    # Through the connection: a Core statement needs none of the ORM session's machinery.
    return (await (await session.connection()).execute(query)).one_or_none()


async def get(session: AsyncSession, token_id: int, project_id: int | None) -> AccessToken | None:
    query = select(AccessToken).where(AccessToken.id == token_id)
    query = query.where(
        AccessToken.project_id == project_id
        if project_id is not None
        else AccessToken.project_id.is_(None)
    )
    return (await session.execute(query)).scalar_one_or_none()


async def list_page(
    session: AsyncSession, project_id: int | None, params: PageParams
) -> list[AccessToken]:
    query = select(AccessToken).where(
        AccessToken.project_id == project_id
        if project_id is not None
        else AccessToken.project_id.is_(None)
    )
    return list((await session.scalars(paginate_query(query, AccessToken.id, params))).all())


async def touch(session: AsyncSession, token_id: int, when: datetime) -> None:
    await session.execute(
        update(AccessToken).where(AccessToken.id == token_id).values(last_used_at=when)
    )
