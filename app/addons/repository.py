"""Queries for add-ons, including the ones the reconciler uses to find lost work."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app.addons.models import BUSY, AddonStatus, ClusterAddon


async def find(session: AsyncSession, cluster_id: int, name: str) -> ClusterAddon | None:
    return await session.scalar(
        select(ClusterAddon).where(ClusterAddon.cluster_id == cluster_id, ClusterAddon.name == name)
    )


async def list_for_cluster(session: AsyncSession, cluster_id: int) -> list[ClusterAddon]:
    query = select(ClusterAddon).where(ClusterAddon.cluster_id == cluster_id)
    return list((await session.scalars(query.order_by(ClusterAddon.name))).all())


async def claim(
    session: AsyncSession, addon_id: int, observed_seq: int, values: dict[str, Any]
) -> bool:
    """Start a new operation on the record unless one is under way or the record changed since
    it was read (a concurrent request): one conditional UPDATE, so exactly one request wins."""
    result = await session.execute(
        update(ClusterAddon)
        .where(
            ClusterAddon.id == addon_id,
            ClusterAddon.run_seq == observed_seq,
            ClusterAddon.status.not_in([s.value for s in BUSY]),
        )
        .values(run_seq=observed_seq + 1, **values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]


async def log_view(session: AsyncSession, addon_id: int) -> Row[str, int, str | None] | None:
    """Status, run number and stored log tail: what the log stream polls."""
    query = select(ClusterAddon.status, ClusterAddon.run_seq, ClusterAddon.log_tail).where(
        ClusterAddon.id == addon_id
    )
    return (await session.execute(query)).first()


def operations_pending_without_live_job(
    session: Session, *, now: datetime, stall_after: timedelta
) -> list[tuple[int, int]]:
    """(add-on id, run_seq) of operations under way whose next run was due more than
    `stall_after` ago and never happened (a lost message, a crashed worker). Enqueue
    `run_addon_operation(id, run_seq)` for each; a duplicate is dropped by the run_seq check."""
    rows = session.execute(
        select(ClusterAddon.id, ClusterAddon.run_seq).where(
            ClusterAddon.status.in_([s.value for s in BUSY]),
            ClusterAddon.next_run_at < now - stall_after,
        )
    ).all()
    return [(addon_id, seq) for addon_id, seq in rows]


def health_checks_overdue(session: Session, *, now: datetime, stall_after: timedelta) -> list[int]:
    """Ids of installed (or degraded) add-ons whose periodic drift and health check is overdue
    by more than `stall_after`. Enqueue `check_addon_health(id)` for each."""
    rows = session.execute(
        select(ClusterAddon.id).where(
            ClusterAddon.status.in_([AddonStatus.installed.value, AddonStatus.degraded.value]),
            ClusterAddon.next_health_check_at < now - stall_after,
        )
    ).all()
    return [addon_id for (addon_id,) in rows]
