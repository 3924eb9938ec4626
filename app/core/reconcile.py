"""Every pending state has an owner: records whose next step has no live job are queued again.

Each domain with a pending state keeps a `PendingWork` in its repository: the query for its
records that are pending and whose job is overdue, the actor that moves them on, and the final
state for one that cannot progress. One periodic actor (`workers/reconcile.py`) calls them all.
The records carry `RetryState`: while a step is being retried they stay in their pending state
with `last_error` and `retry_at`; a final failure is a state of its own (`failed`, `errored`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import String
from sqlalchemy.orm import Mapped, Session, mapped_column

from app.core.jobs import actor_named, enqueue_after_commit

log = structlog.get_logger(__name__)

# A record is queued again at most this many times, then it ends in its final failed state.
MAX_ATTEMPTS = 6
FIRST_BACKOFF = timedelta(seconds=5)
MAX_BACKOFF = timedelta(minutes=5)
STALLED = "stalled"  # the code of a record given up without a more precise one


class RetryState:
    """Columns of a record whose pending state is worked on by jobs."""

    # Our code of the failure being retried (the record is still pending); None when fine.
    last_error: Mapped[str | None] = mapped_column(String(64))
    # When the next attempt is due. A pending record past it (plus a grace) has lost its job.
    retry_at: Mapped[datetime | None]
    # How often the reconciler had to queue the step again; reset when the step completes.
    reconcile_attempts: Mapped[int] = mapped_column(default=0, server_default="0")

    def retrying(self, code: str, at: datetime) -> None:
        self.last_error = code
        self.retry_at = at

    def settled(self) -> None:
        """The step completed (successfully or with a final error)."""
        self.last_error = None
        self.retry_at = None
        self.reconcile_attempts = 0


@dataclass(frozen=True)
class PendingWork:
    """One domain's pending records, for the reconciler."""

    name: str
    # Records pending whose job was due before the given time and never finished.
    stalled: Callable[[Session, datetime], Sequence[Any]]
    # The actor name and arguments that move a record on.
    job: Callable[[Any], tuple[str, tuple[Any, ...]]]
    # Put a record that cannot progress in its final failed state with this code.
    give_up: Callable[[Any, str], None]


def _backoff(attempts: int) -> timedelta:
    if attempts == 0:
        return timedelta(0)
    delay: timedelta = min(FIRST_BACKOFF * 2 ** (attempts - 1), MAX_BACKOFF)
    return delay


def reconcile(
    session: Session, sources: Sequence[PendingWork], now: datetime, grace: timedelta
) -> int:
    """Queue again (with backoff) every stalled record of every source; end those that were
    queued again too often. Returns the number of records touched."""
    touched = 0
    for source in sources:
        for record in source.stalled(session, now - grace):
            touched += 1
            if record.reconcile_attempts >= MAX_ATTEMPTS:
                code = record.last_error or STALLED
                source.give_up(record, code)
                record.settled()
                # The one line this record's failure logs.
                log.warning("record_failed", kind=source.name, id=record.id, error_code=code)
                continue
            delay = _backoff(record.reconcile_attempts)
            record.reconcile_attempts += 1
            record.retry_at = now + delay
            actor_name, args = source.job(record)
            enqueue_after_commit(
                session,
                actor_named(actor_name),
                *args,
                delay_ms=int(delay.total_seconds() * 1000) or None,
            )
            log.info("record_requeued", kind=source.name, id=record.id, actor=actor_name)
    return touched
