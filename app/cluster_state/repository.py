"""Queries for the cluster resources cache (statements usable from sync and async sessions)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, Update, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app.cluster_state.models import ClusterResourceCache as Entry
from app.core.reconcile import PendingWork


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
        .values(refresh_requested_at=now, retry_at=None, reconcile_attempts=0)
    )


def stalled(session: Session, due_before: datetime) -> list[Entry]:
    """Entries with a refresh claimed before `due_before` that never finished."""
    query = (
        select(Entry)
        .where(
            Entry.refresh_requested_at.is_not(None),
            func.coalesce(Entry.retry_at, Entry.refresh_requested_at) < due_before,
        )
        .order_by(Entry.id)
        .limit(500)
        .with_for_update(skip_locked=True)
    )
    return list(session.scalars(query))


def _job(entry: Entry) -> tuple[str, tuple[int, str, str]]:
    return "refresh_cluster_resources", (entry.cluster_id, entry.kind, entry.namespace)


def _give_up(entry: Entry, code: str) -> None:
    # Reported like a failed refresh; the next request after ERROR_TTL asks again.
    entry.refresh_requested_at = None
    entry.error_code = code
    entry.error_at = datetime.now(UTC)


PENDING = PendingWork("cluster_resources", stalled, _job, _give_up)
