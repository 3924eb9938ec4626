"""Jobs through a transactional outbox: a job commits with the change that asks for it.

`enqueue_after_commit` adds a row to `outbox_jobs` in the caller's transaction. After the commit
the same process sends those rows to the broker and deletes them (the fast path, as quick as
sending directly); a rollback drops them with the rest of the transaction. Rows the fast path
could not send (broker down, process killed in between) are sent by `relay_outbox`, which
workers run periodically. Delivery is at least once: actors are idempotent.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import anyio
import dramatiq
import structlog
from sqlalchemy import JSON, Integer, String, delete, event, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, Session, mapped_column

from app.core.db import Base, IntPK, get_async_engine, get_engine, utcnow
from app.core.logging import correlation_id
from app.core.outages import BROKER, is_broker_outage, is_database_outage, outages

_KEY = "clusterport.pending_jobs"
_READY = "clusterport.committed_jobs"
RELAY_BATCH = 500
log = structlog.get_logger(__name__)


class OutboxJob(Base):
    """A job committed but not yet handed to the broker."""

    __tablename__ = "outbox_jobs"

    id: Mapped[IntPK]
    actor_name: Mapped[str] = mapped_column(String(255))
    args: Mapped[list[Any]] = mapped_column(JSON)
    # Message options (the correlation id) and the delay asked for, counted from created_at.
    options: Mapped[dict[str, Any]] = mapped_column(JSON)
    delay_ms: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


def enqueue_after_commit(
    session: Session | AsyncSession,
    actor: dramatiq.Actor[Any, Any],
    *args: Any,
    delay_ms: int | None = None,
) -> None:
    """Send `actor.send(*args)` once `session` commits (and surely, later, if the broker is
    away then); a rollback drops it."""
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    if not sync.in_transaction():
        sync.begin()  # so that a rollback, even before any SQL, is seen and drops the job
    job = OutboxJob(
        actor_name=actor.actor_name,
        args=list(args),
        options={"correlation_id": correlation_id.get()},
        delay_ms=delay_ms,
        created_at=utcnow(),
    )
    sync.add(job)
    sync.info.setdefault(_KEY, []).append(job)


def _drop_pending(session: Session, *_: Any) -> None:
    session.info.pop(_KEY, None)


def _mark_committed(session: Session) -> None:
    session.info.setdefault(_READY, []).extend(session.info.pop(_KEY, []))


# Only jobs of a committed transaction are sent; a rollback forgets the ones it undoes.
event.listen(Session, "after_soft_rollback", _drop_pending)
event.listen(Session, "after_commit", _mark_committed)


def _send(job: OutboxJob, now: datetime) -> None:
    options = {k: v for k, v in job.options.items() if v is not None}
    if job.delay_ms:
        remaining = job.created_at + timedelta(milliseconds=job.delay_ms) - now
        if remaining > timedelta(0):
            options["delay"] = int(remaining.total_seconds() * 1000)
    dramatiq.get_broker().get_actor(job.actor_name).send_with_options(
        args=tuple(job.args), **options
    )


def _send_all(jobs: list[OutboxJob]) -> list[int]:
    """Send in order; stop at the first broker failure. Returns the ids of the jobs sent."""
    sent: list[int] = []
    now = utcnow()
    for job in jobs:
        try:
            _send(job, now)
        except Exception as exc:
            if not is_broker_outage(exc):
                raise
            outages.down(BROKER, exc)
            break
        sent.append(job.id)
        log.debug("job_enqueued", actor=job.actor_name)
    else:
        outages.up(BROKER)
    return sent


def flush_jobs(session: Session) -> None:
    """Send the jobs `session` committed and delete their outbox rows."""
    jobs = session.info.pop(_READY, [])
    if jobs:
        sent = _send_all(jobs)
        if sent:
            with get_engine().connect() as connection:
                connection.execute(delete(OutboxJob).where(OutboxJob.id.in_(sent)))
                connection.commit()


async def flush_jobs_async(session: AsyncSession) -> None:
    jobs = session.sync_session.info.pop(_READY, [])
    if jobs:
        # Publishing with confirms blocks on the broker round trip: keep it off the event loop.
        sent = await anyio.to_thread.run_sync(_send_all, jobs)
        if sent:
            _sent_rows.add(sent)


class _SentRows:
    """Outbox rows the API has sent, deleted in batches off the request path: one DELETE for
    all the requests of a few milliseconds. Rows whose deletion is lost (the process dies, the
    database is away) are sent once more by the relay; actors are idempotent."""

    BATCH_WAIT_SECONDS = 0.05

    def __init__(self) -> None:
        self._ids: list[int] = []
        self._task: asyncio.Task[None] | None = None

    def add(self, ids: list[int]) -> None:
        self._ids.extend(ids)
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._delete_batches())

    async def _delete_batches(self) -> None:
        engine = get_async_engine().execution_options(isolation_level="AUTOCOMMIT")
        while self._ids:
            await asyncio.sleep(self.BATCH_WAIT_SECONDS)
            ids, self._ids = self._ids, []
            try:
                async with engine.connect() as connection:
                    await connection.execute(delete(OutboxJob).where(OutboxJob.id.in_(ids)))
            except Exception as exc:
                if not is_database_outage(exc):
                    log.exception("outbox_delete_failed")


_sent_rows = _SentRows()


def relay_outbox(older_than: timedelta) -> int:
    """Send outbox rows older than `older_than` (their fast path failed or never ran) and
    delete them. Concurrent relays skip each other's rows (Postgres row locks; SQLite has a
    single writer). Returns how many were sent."""
    with Session(get_engine()) as session, session.begin():
        jobs = list(
            session.scalars(
                select(OutboxJob)
                .where(OutboxJob.created_at < utcnow() - older_than)
                .order_by(OutboxJob.id)
                .limit(RELAY_BATCH)
                .with_for_update(skip_locked=True)
            )
        )
        if not jobs:
            return 0
        sent = _send_all(jobs)
        if sent:
            session.execute(delete(OutboxJob).where(OutboxJob.id.in_(sent)))
    if sent:
        log.info("outbox_relayed", jobs=len(sent))
    return len(sent)


def actor_named(name: str) -> dramatiq.Actor[Any, Any]:
    """An actor by its name, so API code can enqueue a job without importing the worker
    module (and, through it, the Kubernetes client; see .importlinter)."""
    actor: dramatiq.Actor[Any, Any] = dramatiq.get_broker().get_actor(name)
    return actor
