"""FastAPI dependencies: the database session and the authenticated principal."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Principal
from app.auth.service import authenticate
from app.core.db import get_session
from app.core.errors import UnauthorizedError

# scope="function": the session commits after the handler returns and before the response is
# sent, so a failed commit becomes an error response instead of a lost write.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


async def get_principal(request: Request, session: SessionDep) -> Principal:
    header = request.headers.get("authorization")
    if not header:
        raise UnauthorizedError()
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise UnauthorizedError(
            "Use `Authorization: Bearer <token>`.", code="invalid_authorization"
        )
    return await authenticate(session, value.strip())


PrincipalDep = Annotated[Principal, Depends(get_principal)]
