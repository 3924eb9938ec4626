"""Database plumbing: the declarative base, column types, engines and sessions.

Postgres in production, a SQLite file in the embedded default; both are built by the same
Alembic revisions. The API uses async sessions, actors use sync ones; either way one unit of work
is one transaction, committed by the caller (the request dependency or `session_scope`).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from sqlalchemy import BigInteger, DateTime, Dialect, Integer, MetaData, Text, create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.types import TypeDecorator
from starlette.requests import Request

from app.core import crypto
from app.core.settings import get_settings

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp, also on SQLite (which stores it without the offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class EncryptedString(TypeDecorator[str]):
    """A secret, stored encrypted with the current key; see `clusterport reencrypt`."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return crypto.encrypt_secret(value) if value is not None else None

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        return crypto.decrypt_secret(value) if value is not None else None


BigIntId = BigInteger().with_variant(Integer(), "sqlite")
IntPK = Annotated[int, mapped_column(BigIntId, primary_key=True, autoincrement=True)]


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime()}


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


def sync_url(url: str) -> str:
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg"):
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    if parsed.drivername.startswith("sqlite"):
        return parsed.set(drivername="sqlite").render_as_string(hide_password=False)
    return url


def async_url(url: str) -> str:
    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite"):
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    return sync_url(url)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _engine_options(url: str) -> dict[str, Any]:
    if make_url(url).drivername.startswith("sqlite"):
        return {}
    # No pre-ping: it would add a round trip to every request; recycle old connections instead.
    return {"pool_size": 20, "max_overflow": 20, "pool_recycle": 1800}


@functools.cache
def get_engine(url: str | None = None) -> Engine:
    url = sync_url(url or get_settings().effective_database_url())
    engine = create_engine(url, **_engine_options(url))
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


@functools.cache
def get_async_engine(url: str | None = None) -> AsyncEngine:
    url = async_url(url or get_settings().effective_database_url())
    engine = create_async_engine(url, **_engine_options(url))
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


@functools.cache
def _async_sessions() -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(get_async_engine(), expire_on_commit=False)


@functools.cache
def _autocommit_sessions() -> async_sessionmaker[AsyncSession]:
    engine = get_async_engine().execution_options(isolation_level="AUTOCOMMIT")
    return async_sessionmaker(engine, expire_on_commit=False)


@functools.cache
def _sync_sessions() -> sessionmaker[Session]:
    return sessionmaker(get_engine(), expire_on_commit=False)


async def dispose_engines() -> None:
    if get_async_engine.cache_info().currsize:
        await get_async_engine().dispose()
    if get_engine.cache_info().currsize:
        get_engine().dispose()
    for cached in (
        get_engine,
        get_async_engine,
        _async_sessions,
        _autocommit_sessions,
        _sync_sessions,
    ):
        cached.cache_clear()


def async_session() -> AsyncSession:
    return _async_sessions()()


@contextmanager
def session_scope() -> Iterator[Session]:
    """One unit of work for an actor: commit on success (then send its jobs), else roll back."""
    from app.core.jobs import flush_jobs

    with _sync_sessions()() as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        flush_jobs(session)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """Request dependency: one transaction per request, committed after the handler returns.

    GET and HEAD requests read without BEGIN/COMMIT (autocommit): that saves two round trips
    on every read. Their only writes are single statements (a token's last-used stamp, a cache
    refresh claim) that are atomic on their own.
    """
    from app.core.jobs import flush_jobs_async
    from app.core.outages import DATABASE, outages

    read_only = request.method in ("GET", "HEAD")
    async with (_autocommit_sessions() if read_only else _async_sessions())() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise
        outages.up(DATABASE)
        await flush_jobs_async(session)
