"""Actor that refreshes one entry of the cluster resources cache."""

from __future__ import annotations

import dramatiq

from app.cluster_state.reader import read_resources
from app.cluster_state.repository import select_entry
from app.cluster_state.schemas import ResourceKind
from app.clusters.models import Cluster
from app.core.db import session_scope, utcnow
from app.core.outages import MAX_BACKOFF_MS, MIN_BACKOFF_MS, retry_transient
from app.core.ssrf import UnsafeURLError
from app.kube import KubeError
from workers.clusters import Connection, connection_of


@dramatiq.actor(retry_when=retry_transient, min_backoff=MIN_BACKOFF_MS, max_backoff=MAX_BACKOFF_MS)
def refresh_cluster_resources(cluster_id: int, kind: str, namespace: str) -> None:
    """Read the objects from the cluster and store our summary of them with the time read.
    A failed read is stored as the entry's error (the next request that finds the entry
    stale asks again); only database and broker outages are retried here."""
    with session_scope() as session:
        cluster = session.get(Cluster, cluster_id)
        connection = connection_of(cluster) if cluster is not None else None
    values: dict[str, object]
    if connection is None:
        values = {"error_code": "no_credentials", "error_at": utcnow()}
    else:
        values = _read(connection, kind, namespace)
    with session_scope() as session:
        entry = session.scalar(select_entry(cluster_id, kind, namespace))
        if entry is None:
            return
        for field, value in values.items():
            setattr(entry, field, value)
        entry.refresh_requested_at = None
        entry.settled()


def _read(connection: Connection, kind: str, namespace: str) -> dict[str, object]:
    try:
        with connection.client() as kube:
            items, truncated = read_resources(kube, ResourceKind(kind), namespace or None)
    except (KubeError, UnsafeURLError) as exc:
        return {"error_code": exc.code, "error_at": utcnow()}
    return {"items": items, "truncated": truncated, "read_at": utcnow(), "error_code": None}
