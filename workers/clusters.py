"""Actors for clusters: the connectivity check."""

from __future__ import annotations

import dramatiq


@dramatiq.actor(max_retries=3)
def check_cluster(cluster_id: int) -> None:
    """Connect to the cluster, record its Kubernetes version and status (see app/kube)."""
    raise NotImplementedError("replaced by the Kubernetes client integration")
