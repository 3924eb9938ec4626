"""Keyset pagination with a stable order (ascending id) and an opaque cursor."""

from __future__ import annotations

import re
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel
from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute

from app.core.errors import BadRequestError

# Ids are 64-bit signed integers in the database.
MAX_ID = 2**63 - 1
_CURSOR = re.compile(r"[0-9]{1,19}")

T = TypeVar("T")
R = TypeVar("R", bound=Any)


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


class PageParams(BaseModel):
    limit: int
    after_id: int | None


async def page_params(
    limit: Annotated[int, Query(ge=1, le=100, description="Items per page.")] = 20,
    cursor: Annotated[
        str | None, Query(max_length=32, description="`next_cursor` of the previous page.")
    ] = None,
) -> PageParams:
    after_id = None
    if cursor is not None:
        # ASCII digits only: str.isdigit() also accepts '²', which int() then refuses.
        if not _CURSOR.fullmatch(cursor) or int(cursor) > MAX_ID:
            raise BadRequestError("The cursor is not one this API returned.", code="invalid_cursor")
        after_id = int(cursor)
    return PageParams(limit=limit, after_id=after_id)


def paginate_query(
    query: Select[R], id_column: InstrumentedAttribute[int], params: PageParams
) -> Select[R]:
    if params.after_id is not None:
        query = query.where(id_column > params.after_id)
    return query.order_by(id_column).limit(params.limit + 1)


def make_page(rows: list[T], params: PageParams, key: str = "id") -> tuple[list[T], str | None]:
    """Split the fetched rows (one more than the limit) into the page and the next cursor."""
    if len(rows) > params.limit:
        rows = rows[: params.limit]
        return rows, str(getattr(rows[-1], key))
    return rows, None
