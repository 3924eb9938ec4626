"""Actors for add-ons: run an operation's steps, check installed ones for drift and health.

The cluster is reached only through `connection_of(cluster).client()`, like every worker, so
add-ons work for whichever way clusterport reaches the cluster.
"""

from __future__ import annotations

from datetime import timedelta

import dramatiq
import structlog
from sqlalchemy.orm import Session

from app.addons import installer, operations, repository
from app.addons.settings import get_addon_settings
from app.clusters.models import Cluster
from app.core.db import session_scope, utcnow
from app.core.jobs import enqueue_after_commit
from app.core.ssrf import UnsafeURLError
from app.kube import KubeError
from workers.clusters import Connection, connection_of

log = structlog.get_logger(__name__)


def _connection(session: Session, cluster_id: int) -> Connection | None:
    cluster = session.get(Cluster, cluster_id)
    return connection_of(cluster) if cluster is not None else None


@dramatiq.actor(max_retries=0)
def run_addon_operation(addon_id: int, run_seq: int) -> None:
    """One step of an install, upgrade or uninstall; the next is queued (delayed) after commit."""
    s = get_addon_settings()
    with session_scope() as session:
        run = operations.load(session, addon_id, run_seq, s)
        if run is None:
            return
        connection = _connection(session, run.cluster_id)
    if connection is None:
        outcome = operations.Outcome("failed", code="no_credentials")
    else:
        try:
            with connection.client() as kube:
                outcome = operations.step(kube, run, utcnow(), s)
        except (KubeError, UnsafeURLError) as exc:
            outcome = operations.kube_failure(exc)
    with session_scope() as session:
        following = operations.record(session, run, outcome, utcnow(), s)
        if following is not None:
            enqueue_after_commit(
                session,
                run_addon_operation,
                following.addon_id,
                following.run_seq,
                delay_ms=int(following.delay_seconds * 1000) or None,
            )
        elif outcome.kind == "succeeded" and run.spec.operation != "uninstall":
            enqueue_after_commit(
                session,
                check_addon_health,
                addon_id,
                delay_ms=int(s.health_interval_seconds * 1000),
            )


@dramatiq.actor(max_retries=0)
def check_addon_health(addon_id: int) -> None:
    """Compare the release in the cluster with what was asked and check its workloads; the add-on
    is `degraded` (with a code) or `installed`. Queues the next check."""
    s = get_addon_settings()
    with session_scope() as session:
        check = operations.load_health_check(session, addon_id, utcnow())
        if check is None:
            return
        connection = _connection(session, check.cluster_id)
    if connection is None:
        code: str | None = "no_credentials"
    else:
        try:
            with connection.client() as kube:
                code = installer.health_code(
                    kube, check.release, check.namespace, check.version, check.values
                )
        except (KubeError, UnsafeURLError) as exc:
            code = exc.code
    with session_scope() as session:
        delay = operations.record_health(session, check, code, utcnow(), s)
        if delay is not None:
            enqueue_after_commit(session, check_addon_health, addon_id, delay_ms=int(delay * 1000))


@dramatiq.actor(max_retries=0)
def reconcile_addons() -> None:
    """Queue again operations and health checks whose next run never happened. Meant to be
    called periodically (see `repository.operations_pending_without_live_job`)."""
    s = get_addon_settings()
    now = utcnow()
    stall = timedelta(seconds=s.stall_after_seconds)
    with session_scope() as session:
        runs = repository.operations_pending_without_live_job(session, now=now, stall_after=stall)
        for addon_id, seq in runs:
            enqueue_after_commit(session, run_addon_operation, addon_id, seq)
        checks = repository.health_checks_overdue(session, now=now, stall_after=stall)
        for addon_id in checks:
            enqueue_after_commit(session, check_addon_health, addon_id)
    if runs or checks:
        log.info("addons_reconciled", operations=len(runs), health_checks=len(checks))
