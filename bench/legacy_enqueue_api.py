"""`clusterport api` with jobs sent straight to the broker after commit, without the outbox:
the baseline of bench/outbox.py. The swap happens before any service module binds the name.
"""

from __future__ import annotations

import sys
from typing import Any

import anyio
import dramatiq
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

import app.core.jobs as jobs
from app.core.logging import correlation_id


def enqueue_after_commit(
    session: Session | AsyncSession,
    actor: dramatiq.Actor[Any, Any],
    *args: Any,
    delay_ms: int | None = None,
) -> None:
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    if not sync.in_transaction():
        sync.begin()
    options: dict[str, Any] = {"correlation_id": correlation_id.get()}
    if delay_ms is not None:
        options["delay"] = delay_ms
    # The outbox's commit and rollback listeners move and drop this list as they do its rows.
    sync.info.setdefault(jobs._KEY, []).append((actor, args, options))


def _send(items: list[tuple[dramatiq.Actor[Any, Any], tuple[Any, ...], dict[str, Any]]]) -> None:
    for actor, args, options in items:
        actor.send_with_options(args=args, **options)


async def flush_jobs_async(session: AsyncSession) -> None:
    items = session.sync_session.info.pop(jobs._READY, [])
    if items:
        await anyio.to_thread.run_sync(_send, items)


jobs.enqueue_after_commit = enqueue_after_commit  # type: ignore[assignment]
jobs.flush_jobs_async = flush_jobs_async

if __name__ == "__main__":
    from app.cli import main

    sys.exit(main(["api"]))
