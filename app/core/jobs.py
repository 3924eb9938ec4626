"""Enqueue Dramatiq jobs only once the transaction that asked for them has committed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anyio
import dramatiq
import structlog
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app.core.logging import correlation_id

_KEY = "clusterport.pending_jobs"
_READY = "clusterport.committed_jobs"
log = structlog.get_logger(__name__)


@dataclass
class PendingJob:
    actor: dramatiq.Actor[Any, Any]
    args: tuple[Any, ...]
    options: dict[str, Any] = field(default_factory=dict)


def _pending(session: Session) -> list[PendingJob]:
    pending: list[PendingJob] = session.info.setdefault(_KEY, [])
    return pending


def enqueue_after_commit(
    session: Session | AsyncSession,
    actor: dramatiq.Actor[Any, Any],
    *args: Any,
    delay_ms: int | None = None,
) -> None:
    """Buffer `actor.send(*args)` until `session` commits; a rollback drops it."""
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    if not sync.in_transaction():
        sync.begin()  # so that a rollback, even before any SQL, is seen and drops the job
    options: dict[str, Any] = {"correlation_id": correlation_id.get()}
    if delay_ms is not None:
        options["delay"] = delay_ms
    _pending(sync).append(PendingJob(actor, args, options))


def _drop_pending(session: Session, *_: Any) -> None:
    session.info.pop(_KEY, None)


def _mark_committed(session: Session) -> None:
    session.info.setdefault(_READY, []).extend(session.info.pop(_KEY, []))


# Only jobs of a committed transaction are sent; a rollback forgets the ones it undoes.
event.listen(Session, "after_soft_rollback", _drop_pending)
event.listen(Session, "after_commit", _mark_committed)


def _send_all(jobs: list[PendingJob]) -> None:
    for job in jobs:
        job.actor.send_with_options(args=job.args, **job.options)
        log.debug("job_enqueued", actor=job.actor.actor_name)


def flush_jobs(session: Session) -> None:
    jobs = session.info.pop(_READY, [])
    if jobs:
        _send_all(jobs)


async def flush_jobs_async(session: AsyncSession) -> None:
    jobs = session.sync_session.info.pop(_READY, [])
    if jobs:
        # Publishing with confirms blocks on the broker round trip: keep it off the event loop.
        await anyio.to_thread.run_sync(_send_all, jobs)


def actor_named(name: str) -> dramatiq.Actor[Any, Any]:
    """An actor by its name, so API code can enqueue a job without importing the worker
    module (and, through it, the Kubernetes client; see .importlinter)."""
    actor: dramatiq.Actor[Any, Any] = dramatiq.get_broker().get_actor(name)
    return actor
