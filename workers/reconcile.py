"""The periodic work every worker does: relay the outbox, and reconcile pending records.

`PENDING_WORK` lists each domain's query of records whose pending state has no live job; a
new domain with a pending state adds its repository's `PENDING` here. Add-ons, GitOps
deployments and EKS provisioning track their steps their own way and have their own reconciling
actors, sent on the schedule of `_schedule()`.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import dramatiq
import structlog
from dramatiq.middleware import Middleware

from app.cluster_state import repository as cluster_state_repository
from app.clusters import repository as clusters_repository
from app.core.db import session_scope, utcnow
from app.core.jobs import relay_outbox
from app.core.outages import (
    BROKER,
    DATABASE,
    MAX_BACKOFF_MS,
    MIN_BACKOFF_MS,
    is_broker_outage,
    is_database_outage,
    outages,
    retry_transient,
)
from app.core.reconcile import PendingWork, reconcile
from app.core.settings import get_settings
from app.namespaces import repository as namespaces_repository
from app.providers.aws.settings import get_eks_settings
from workers.addons import reconcile_addons
from workers.eks import eks_reconcile
from workers.gitops import reconcile_gitops

log = structlog.get_logger(__name__)

PENDING_WORK: list[PendingWork] = [
    clusters_repository.PENDING,
    namespaces_repository.PENDING,
    cluster_state_repository.PENDING,
]


@dramatiq.actor(retry_when=retry_transient, min_backoff=MIN_BACKOFF_MS, max_backoff=MAX_BACKOFF_MS)
def reconcile_pending() -> None:
    """Queue again, with backoff, every pending record whose job is overdue; end the ones
    that stayed stuck through several attempts in their final failed state."""
    grace = timedelta(seconds=get_settings().reconcile_grace_seconds)
    with session_scope() as session:
        touched = reconcile(session, PENDING_WORK, utcnow(), grace)
    if touched:
        log.info("reconciled", records=touched)


class PeriodicWorkMiddleware(Middleware):
    """A timer thread per worker process: relays outbox rows the API could not send, and
    sends `reconcile_pending` on a schedule. Several worker processes doing both is harmless:
    relays skip rows another one holds, and the reconciler skips locked and recently queued
    records."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="periodic-work", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        settings = get_settings()
        schedule = _schedule()
        due = [time.monotonic()] * len(schedule)  # each actor is sent once at boot
        while not self._stop.is_set():
            try:
                relay_outbox(timedelta(seconds=settings.outbox_relay_after_seconds))
                outages.up(DATABASE)
                for index, (actor, interval) in enumerate(schedule):
                    if time.monotonic() >= due[index]:
                        actor.send()
                        due[index] = time.monotonic() + interval
            except Exception as exc:  # logged once per outage; the next round tries again
                if is_database_outage(exc):
                    outages.down(DATABASE, exc)
                elif is_broker_outage(exc):
                    outages.down(BROKER, exc)
                else:
                    log.exception("periodic_work_failed")
            self._stop.wait(settings.outbox_relay_interval_seconds)


def _schedule() -> list[tuple[dramatiq.Actor[Any, Any], float]]:
    """The reconciling actors and how often (seconds) each is sent."""
    every = get_settings().reconcile_interval_seconds
    return [
        (reconcile_pending, every),
        (reconcile_addons, every),
        (reconcile_gitops, every),
        (eks_reconcile, get_eks_settings().reconcile_interval_seconds),
    ]


dramatiq.get_broker().add_middleware(PeriodicWorkMiddleware())
