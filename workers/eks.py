"""Actors for EKS provisioning: one step per run, and the reconciler that restarts stalled ones."""

from __future__ import annotations

import threading
from typing import Any

import dramatiq
import structlog
from dramatiq.middleware import Middleware

import app.models  # noqa: F401  (every table, so foreign keys resolve in a worker process)
from app.core.db import session_scope
from app.core.jobs import enqueue_after_commit
from app.providers.aws import provisioning
from app.providers.aws.settings import get_eks_settings

log = structlog.get_logger(__name__)


@dramatiq.actor(queue_name="eks", max_retries=5, min_backoff=5_000, max_backoff=300_000)
def eks_provision(provider_id: int, run_seq: int) -> None:
    """Run one provisioning step; the next one is queued (with its delay) after commit."""
    with session_scope() as session:
        following = provisioning.run_step(session, provider_id, run_seq)
        if following is not None:
            enqueue_after_commit(
                session,
                eks_provision,
                following.provider_id,
                following.run_seq,
                delay_ms=int(following.delay_seconds * 1000) or None,
            )


@dramatiq.actor(queue_name="eks", max_retries=0)
def eks_reconcile() -> None:
    """Queue again every unfinished provisioning whose next step is overdue; end hopeless ones."""
    with session_scope() as session:
        provisioning.fail_overdue(session)
        runs = provisioning.stalled_runs(session)
        for run in runs:
            enqueue_after_commit(session, eks_provision, run.provider_id, run.run_seq)
    if runs:
        log.info("eks_reconciled", requeued=len(runs))


class EksReconcilerMiddleware(Middleware):
    """Sends `eks_reconcile` when a worker boots and then on a schedule from a timer thread.

    The timer only enqueues; the reconciling runs on a worker thread like any job. Several
    worker processes each sending it is harmless: the `run_seq` check drops duplicate runs.
    """

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="eks-reconciler", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        interval = get_eks_settings().reconcile_interval_seconds
        while True:
            try:
                eks_reconcile.send()
            except Exception as exc:  # the broker may be briefly away; try next time
                log.warning("eks_reconcile_send_failed", error=type(exc).__name__)
            if self._stop.wait(interval):
                return


dramatiq.get_broker().add_middleware(EksReconcilerMiddleware())
