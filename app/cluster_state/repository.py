"""Queries for the cluster resources cache (statements usable from sync and async sessions)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, Update, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.cluster_state.models import ClusterResourceCache as Entry


def _key(cluster_id: int, kind: str, namespace: str) -> list[ColumnElement[bool]]:
    return [Entry.cluster_id == cluster_id, Entry.kind == kind, Entry.namespace == namespace]


def select_entry(cluster_id: int, kind: str, namespace: str) -> Select[Entry]:
    return select(Entry).where(*_key(cluster_id, kind, namespace))


async def ensure_entry(session: AsyncSession, cluster_id: int, kind: str, namespace: str) -> None:
    """Create the entry's row unless it exists (concurrent callers do not fail)."""
    values: dict[str, Any] = {
        "cluster_id": cluster_id,
        "kind": kind,
        "namespace": namespace,
        "truncated": False,
    }
    # Postgres and SQLite, the two databases clusterport runs on, spell it the same way.
    dialect: Any = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    await session.execute(dialect.insert(Entry).values(values).on_conflict_do_nothing())


async def evict_namespaced(session: AsyncSession, cluster_id: int, keep: int) -> None:
    """Keep only the `keep` newest per-namespace entries of a cluster: `?namespace=` is user
    input, and every distinct value would otherwise add a row for good."""
    newest = (
        select(Entry.id)
        .where(Entry.cluster_id == cluster_id, Entry.namespace != "")
        .order_by(Entry.id.desc())
        .limit(keep)
    )
    await session.execute(
        delete(Entry).where(
            Entry.cluster_id == cluster_id,
            Entry.namespace != "",
            Entry.id.not_in(newest.scalar_subquery()),
        )
    )


def claim_refresh(
    cluster_id: int, kind: str, namespace: str, now: datetime, stale_before: datetime
) -> Update:
    """Mark a refresh as requested unless another request did so after `stale_before`. The
    row lock makes concurrent claims wait and then match nothing: one refresh is enqueued."""
    return (
        update(Entry)
        .where(
            *_key(cluster_id, kind, namespace),
            or_(Entry.refresh_requested_at.is_(None), Entry.refresh_requested_at < stale_before),
        )
        .values(refresh_requested_at=now)
    )
