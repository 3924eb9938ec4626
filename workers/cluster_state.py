"""Actor that refreshes one entry of the cluster resources cache."""

from __future__ import annotations

import dramatiq

from app.cluster_state.reader import read_resources
from app.cluster_state.repository import select_entry
from app.cluster_state.schemas import ResourceKind
from app.clusters.models import Cluster
from app.core.db import session_scope, utcnow
from app.core.ssrf import UnsafeURLError
from app.kube import KubeError
from workers.clusters import connection_of


@dramatiq.actor(max_retries=0)
def refresh_cluster_resources(cluster_id: int, kind: str, namespace: str) -> None:
    """Read the objects from the cluster and store our summary of them with the time read.
    No retries: the next request that finds the entry stale asks again."""
    with session_scope() as session:
        cluster = session.get(Cluster, cluster_id)
        connection = connection_of(cluster) if cluster is not None else None
    if connection is None:
        return
    values: dict[str, object]
    try:
        with connection.client() as kube:
            items, truncated = read_resources(kube, ResourceKind(kind), namespace or None)
        values = {"items": items, "truncated": truncated, "read_at": utcnow(), "error_code": None}
    except (KubeError, UnsafeURLError) as exc:
        values = {"error_code": exc.code, "error_at": utcnow()}
    with session_scope() as session:
        entry = session.scalar(select_entry(cluster_id, kind, namespace))
        if entry is None:
            return
        for field, value in values.items():
            setattr(entry, field, value)
        entry.refresh_requested_at = None
