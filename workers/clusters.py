"""Actors for clusters: the connectivity check and deleting a cluster with what we created."""

from __future__ import annotations

from datetime import timedelta

import dramatiq
import structlog
from dramatiq.middleware import CurrentMessage

from app.addons import operations as addon_operations
from app.clusters.connection import Connection, connection_of
from app.clusters.models import Cluster, ClusterStatus
from app.core.db import session_scope, utcnow
from app.core.jobs import actor_named, enqueue_after_commit
from app.core.outages import (
    MAX_BACKOFF_MS,
    MIN_BACKOFF_MS,
    backoff_ms,
    is_transient,
    retry_at,
    retry_limit,
    retry_transient,
)
from app.core.reconcile import RetryState
from app.core.settings import get_settings
from app.core.ssrf import UnsafeURLError
from app.kube import KubeError
from app.namespaces import provisioner
from app.namespaces.models import ProjectNamespace
from app.namespaces.naming import environment_slug

log = structlog.get_logger(__name__)
# Reaching a cluster: `connection_of(cluster).client()` (app/clusters/connection.py).
__all__ = [
    "MAX_BACKOFF_MS",
    "MIN_BACKOFF_MS",
    "Connection",
    "check_cluster",
    "connection_of",
    "delete_cluster",
    "is_transient",
    "namespace_spec",
    "retry_transient",
]

# Codes of cluster failures that say nothing about our credentials.
TRANSIENT_CODES = frozenset({"unreachable", "timeout", "rate_limited", "server_error"})
# A kube-apiserver that is starting answers 401 or 403 until its authenticators and RBAC
# caches are loaded: right after the cluster was unreachable, such an answer is tried again
# this many times before it counts.
AUTH_RETRIES_AFTER_OUTAGE = 3
# How often a cluster being deleted looks again at the add-on uninstalls it waits for.
ADDONS_WAIT_MS = 2000


def will_retry(exc: KubeError | UnsafeURLError, last_error: str | None) -> bool:
    """Whether the running job is retried after `exc` (the record stays pending) or the
    failure is final. `last_error` is the record's code of the failure being retried."""
    message = CurrentMessage.get_current_message()
    if message is None or message.options.get("retries", 0) >= retry_limit():
        return False
    if is_transient(exc):
        return True
    if exc.code in ("unauthorized", "forbidden") and last_error in TRANSIENT_CODES:
        tried = message.options.get("auth_retries", 0)
        if tried < AUTH_RETRIES_AFTER_OUTAGE:
            message.options["auth_retries"] = tried + 1  # kept by the retried message
            return True
    return False


def retry_later(record: RetryState, exc: KubeError | UnsafeURLError) -> dramatiq.Retry:
    """Note the failure on the record, still pending, and the Retry to raise."""
    message = CurrentMessage.get_current_message()
    retries = message.options.get("retries", 0) if message is not None else 0
    # An auth answer retried after an outage keeps the outage's code: it is the cause.
    code = exc.code if is_transient(exc) or record.last_error is None else record.last_error
    record.retrying(code, retry_at(retries))
    return dramatiq.Retry(delay=backoff_ms(retries))


def namespace_spec(row: ProjectNamespace) -> provisioner.NamespaceSpec:
    return provisioner.NamespaceSpec(
        namespace=row.namespace,
        project_id=row.project_id,
        cluster_id=row.cluster_id,
        environment=row.environment,
        environment_slug=environment_slug(row.environment),
        cluster_role=row.cluster_role,
        pod_security=get_settings().namespace_pod_security,
    )


class CheckFailedError(KubeError):
    code = "internal_error"
    message = "The connectivity check failed unexpectedly."


_STATUS_FOR_CODE = {
    "unauthorized": ClusterStatus.unauthorized,
    "forbidden": ClusterStatus.forbidden,
}


def _probe(
    connection: Connection, managed: bool
) -> tuple[str | None, KubeError | UnsafeURLError | None]:
    """(Kubernetes version, the failure or None)."""
    version = None
    try:
        with connection.client() as kube:
            version = kube.version().git_version
            if managed:
                # Managed clusters need cluster-wide rights (namespaces, RBAC): check one.
                kube.core.list_namespace(limit=1)
    except (KubeError, UnsafeURLError) as exc:
        return version, exc
    except Exception:
        # A bug of ours must not leave the cluster `connecting` for ever.
        log.exception("cluster_check_failed")
        return version, CheckFailedError()
    return version, None


def _checkable(cluster: Cluster | None) -> bool:
    return cluster is not None and cluster.enabled and cluster.status != ClusterStatus.deleting


@dramatiq.actor(retry_when=retry_transient, min_backoff=MIN_BACKOFF_MS, max_backoff=MAX_BACKOFF_MS)
def check_cluster(cluster_id: int) -> None:
    """Connect to the cluster, record its Kubernetes version and status. Transient failures
    keep the status (`connecting` on a new cluster) with `last_error` and `retry_at` while
    they are retried; the final outcome is `connected` or a failed status with its code."""
    with session_scope() as session:
        cluster = session.get(Cluster, cluster_id)
        if cluster is None or not _checkable(cluster):
            return
        connection = connection_of(cluster)
        managed = cluster.managed
        if connection is None:
            # No token (dropped when the address changed): say so instead of staying connecting.
            cluster.status = ClusterStatus.unauthorized
            cluster.error_code = "no_credentials"
            cluster.last_checked_at = utcnow()
            cluster.settled()
            return
    version, error = _probe(connection, managed)
    retry: dramatiq.Retry | None = None
    with session_scope() as session:
        cluster = session.get(Cluster, cluster_id)
        if cluster is None or not _checkable(cluster):
            return
        cluster.last_checked_at = utcnow()
        if version is not None:
            cluster.kubernetes_version = version
        if error is None:
            cluster.status = ClusterStatus.connected
            cluster.error_code = None
            cluster.settled()
        elif will_retry(error, cluster.last_error):
            retry = retry_later(cluster, error)
        else:
            cluster.status = _STATUS_FOR_CODE.get(error.code, ClusterStatus.unreachable)
            cluster.error_code = error.code
            cluster.settled()
    if retry is not None:
        raise retry
    log.info("cluster_checked", cluster_id=cluster_id, error_code=error.code if error else None)


@dramatiq.actor(retry_when=retry_transient, min_backoff=MIN_BACKOFF_MS, max_backoff=MAX_BACKOFF_MS)
def delete_cluster(cluster_id: int, addons_started: bool = False) -> None:
    """Uninstall the cluster's add-ons (waiting for those runs), delete the namespaces
    clusterport created in the cluster, then the cluster record."""
    with session_scope() as session:
        cluster = session.get(Cluster, cluster_id)
        if cluster is None or cluster.status != ClusterStatus.deleting:
            return
        removal = addon_operations.remove_for_cluster(session, cluster_id, start=not addons_started)
        for addon_id, run_seq in removal.started:
            enqueue_after_commit(session, actor_named("run_addon_operation"), addon_id, run_seq)
        if removal.started or removal.busy:
            # Waiting on its own schedule, not stalled: the reconciler leaves it alone meanwhile.
            cluster.retry_at = utcnow() + timedelta(milliseconds=ADDONS_WAIT_MS)
            cluster.reconcile_attempts = 0
            enqueue_after_commit(session, delete_cluster, cluster_id, True, delay_ms=ADDONS_WAIT_MS)
            return
        if removal.failed:
            cluster.status = ClusterStatus.errored
            cluster.error_code = "addon_uninstall_failed"
            cluster.settled()
            log.warning("cluster_delete_failed", cluster_id=cluster_id, addons=removal.failed)
            return
        connection = connection_of(cluster)
        rows = session.query(ProjectNamespace).filter_by(cluster_id=cluster_id).all()
        specs = [namespace_spec(row) for row in rows]
    if specs and connection is not None:
        try:
            with connection.client() as kube:
                for spec in specs:
                    provisioner.remove(kube, spec)
        except (KubeError, UnsafeURLError) as exc:
            retry: dramatiq.Retry | None = None
            with session_scope() as session:
                cluster = session.get(Cluster, cluster_id)
                if cluster is None or cluster.status != ClusterStatus.deleting:
                    return
                if will_retry(exc, cluster.last_error):
                    retry = retry_later(cluster, exc)
                elif is_transient(exc):
                    # Out of quick retries: the reconciler takes over with a longer backoff.
                    cluster.retrying(exc.code, utcnow())
                    return
                else:
                    # Final: `errored` with the code; deleting again retries, `force` skips.
                    cluster.status = ClusterStatus.errored
                    cluster.error_code = exc.code
                    cluster.settled()
            if retry is not None:
                raise retry from None
            log.warning("cluster_delete_failed", cluster_id=cluster_id, error_code=exc.code)
            return
    with session_scope() as session:
        cluster = session.get(Cluster, cluster_id)
        if cluster is not None and cluster.status == ClusterStatus.deleting:
            session.delete(cluster)
