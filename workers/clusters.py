"""Actors for clusters: the connectivity check and deleting a cluster with what we created."""

from __future__ import annotations

import dramatiq
import structlog

from app.clusters.connection import Connection, connection_of
from app.clusters.models import Cluster, ClusterStatus
from app.core.db import session_scope, utcnow
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

# Transient Kubernetes failures (unreachable, timeout, 429, 5xx) are retried by Dramatiq with
# backoff, a few times; anything else (4xx, TLS, SSRF refusal) is final at once.
MAX_TRANSIENT_RETRIES = 5
MIN_BACKOFF_MS = 1_000
MAX_BACKOFF_MS = 30_000


def is_transient(exception: BaseException) -> bool:
    return isinstance(exception, KubeError) and exception.transient


def retry_transient(retries: int, exception: BaseException) -> bool:
    """Dramatiq `retry_when`: only transient failures, a bounded number of times."""
    return is_transient(exception) and retries < MAX_TRANSIENT_RETRIES


def namespace_spec(row: ProjectNamespace) -> provisioner.NamespaceSpec:
    return provisioner.NamespaceSpec(
        namespace=row.namespace,
        project_id=row.project_id,
        cluster_id=row.cluster_id,
        environment=row.environment,
        environment_slug=environment_slug(row.environment),
        cluster_role=row.cluster_role,
    )


_STATUS_FOR_CODE = {
    "unauthorized": ClusterStatus.unauthorized,
    "forbidden": ClusterStatus.forbidden,
}


def _probe(connection: Connection, managed: bool) -> tuple[str | None, str | None]:
    """(Kubernetes version, error code or None)."""
    version = None
    try:
        with connection.client() as kube:
            version = kube.version().git_version
            if managed:
                # Managed clusters need cluster-wide rights (namespaces, RBAC): check one.
                kube.core.list_namespace(limit=1)
    except (KubeError, UnsafeURLError) as exc:
        return version, exc.code
    return version, None


@dramatiq.actor(max_retries=0)
def check_cluster(cluster_id: int) -> None:
    """Connect to the cluster, record its Kubernetes version and status."""
    with session_scope() as session:
        cluster = session.get(Cluster, cluster_id)
        if cluster is None or not cluster.enabled or cluster.status == ClusterStatus.deleting:
            return
        connection = connection_of(cluster)
        managed = cluster.managed
    if connection is None:
        return
    version, code = _probe(connection, managed)
    with session_scope() as session:
        cluster = session.get(Cluster, cluster_id)
        if cluster is None or not cluster.enabled or cluster.status == ClusterStatus.deleting:
            return
        cluster.last_checked_at = utcnow()
        if version is not None:
            cluster.kubernetes_version = version
        if code is None:
            cluster.status = ClusterStatus.connected
            cluster.error_code = None
        else:
            cluster.status = _STATUS_FOR_CODE.get(code, ClusterStatus.unreachable)
            cluster.error_code = code
    log.info("cluster_checked", cluster_id=cluster_id, error_code=code)


@dramatiq.actor(retry_when=retry_transient, min_backoff=MIN_BACKOFF_MS, max_backoff=MAX_BACKOFF_MS)
def delete_cluster(cluster_id: int) -> None:
    """Delete the namespaces clusterport created in the cluster, then the cluster record."""
    with session_scope() as session:
        cluster = session.get(Cluster, cluster_id)
        if cluster is None or cluster.status != ClusterStatus.deleting:
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
            # The cluster stays `deleting` with the code; deleting again retries, `force` skips.
            with session_scope() as session:
                cluster = session.get(Cluster, cluster_id)
                if cluster is not None:
                    cluster.error_code = exc.code
            if is_transient(exc):
                raise
            return
    with session_scope() as session:
        cluster = session.get(Cluster, cluster_id)
        if cluster is not None and cluster.status == ClusterStatus.deleting:
            session.delete(cluster)
