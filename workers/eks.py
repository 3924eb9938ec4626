"""Actors for EKS provisioning: one step per run, and the reconciler that restarts stalled ones."""

from __future__ import annotations

import dramatiq
import structlog

import app.models  # noqa: F401  (every table, so foreign keys resolve in a worker process)
from app.core.db import session_scope
from app.core.jobs import enqueue_after_commit
from app.providers.aws import provisioning

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
