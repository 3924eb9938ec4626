"""Database and broker outages: how to recognise them, retry through them and log them once.

A connection error to Postgres or RabbitMQ is not a bug: work that hit one is retried with a
bounded backoff, a request that hit one answers 503, and each outage is logged once when it
starts and once when it ends (not a traceback per request or per job).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta

import dramatiq
import psycopg
import structlog
from dramatiq.errors import BrokerError
from pika.exceptions import AMQPError
from sqlalchemy import exc as sa_exc

from app.core.settings import get_settings

log = structlog.get_logger(__name__)

DATABASE = "database"
BROKER = "broker"

# Transient failures are retried by Dramatiq `retry_limit` times with exponential backoff from
# here up to `retry_max_backoff_seconds` (settings); a record still pending after that belongs
# to the reconciler.
MIN_BACKOFF_MS = 500
# Dramatiq's own backoff (for failures an actor does not handle, as database errors) stays
# below this. Actors declare `retry_when=retry_transient, min_backoff=MIN_BACKOFF_MS,
# max_backoff=MAX_BACKOFF_MS`.
MAX_BACKOFF_MS = 10_000


def is_database_outage(exc: BaseException) -> bool:
    """A lost or refused database connection (not a constraint violation or a bad query)."""
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        exc = exc.orig if exc.orig is not None else exc
    if isinstance(exc, sa_exc.TimeoutError):  # no pooled connection came free in time
        return True
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) or (
        isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError)
    )


def is_broker_outage(exc: BaseException) -> bool:
    return isinstance(exc, BrokerError | AMQPError)


def is_outage(exc: BaseException) -> bool:
    return is_database_outage(exc) or is_broker_outage(exc)


def is_transient(exc: BaseException) -> bool:
    """Worth running again unchanged: an outage of ours, or an error that says so itself
    (`transient = True`, as Kubernetes timeouts, 429s and 5xx do; see app/kube/errors.py)."""
    return (
        isinstance(exc, dramatiq.Retry) or bool(getattr(exc, "transient", False)) or is_outage(exc)
    )


def retry_limit() -> int:
    return get_settings().retry_limit


def max_backoff_ms() -> int:
    return int(get_settings().retry_max_backoff_seconds * 1000)


def retry_transient(retries: int, exc: BaseException) -> bool:
    """Dramatiq `retry_when` for every actor: transient failures, a bounded number of times."""
    return is_transient(exc) and retries < retry_limit()


def backoff_ms(retries: int) -> int:
    """The delay before retry number `retries + 1` (the same curve Dramatiq uses, no jitter)."""
    return int(min(MIN_BACKOFF_MS * 2**retries, max_backoff_ms()))


def retry_at(retries: int) -> datetime:
    return datetime.now(UTC) + timedelta(milliseconds=backoff_ms(retries))


class OutageLog:
    """Logs `<what>_unavailable` once when an outage starts and `<what>_available` when a
    later call succeeds; calls in between log nothing."""

    def __init__(self) -> None:
        self._down: dict[str, float] = {}
        self._lock = threading.Lock()

    def down(self, what: str, exc: BaseException) -> None:
        with self._lock:
            if what in self._down:
                return
            self._down[what] = time.monotonic()
        log.warning(f"{what}_unavailable", error=type(exc).__name__)

    def up(self, what: str) -> None:
        if what not in self._down:  # the common case, without taking the lock
            return
        with self._lock:
            started = self._down.pop(what, None)
        if started is not None:
            log.warning(f"{what}_available", outage_seconds=round(time.monotonic() - started, 1))


outages = OutageLog()

# pika logs a dropped connection at ERROR before Dramatiq reconnects and publishes again: an
# idle publishing connection the broker has closed is normal, and a real outage is logged once
# by `outages`. These are the loggers it uses for that.
_PIKA_CONNECTION_LOGGERS = (
    "pika.adapters.base_connection",
    "pika.adapters.blocking_connection",
    "pika.adapters.utils.io_services_utils",
    "pika.adapters.utils.connection_workflow",
    "pika.connection",
)


class _PikaConnectionNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def quiet_pika_connection_logs() -> None:
    for name in _PIKA_CONNECTION_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _PikaConnectionNoise) for f in logger.filters):
            logger.addFilter(_PikaConnectionNoise())
