"""Reads the cluster state the resources cache holds, reduced to our own summary of each object
(never the raw response). Workers only."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app.cluster_state.schemas import ResourceKind
from app.kube import KubeClient

MAX_ITEMS = 500


def _when(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _common(obj: Any) -> dict[str, Any]:
    meta = obj.metadata
    return {
        "name": meta.name,
        "namespace": meta.namespace,
        "created_at": _when(meta.creation_timestamp),
    }


def _pod(obj: Any) -> dict[str, Any]:
    statuses = (obj.status.container_statuses if obj.status else None) or []
    return {
        **_common(obj),
        "phase": obj.status.phase if obj.status else None,
        "node": obj.spec.node_name if obj.spec else None,
        "containers": len(obj.spec.containers) if obj.spec else 0,
        "ready_containers": sum(1 for s in statuses if s.ready),
        "restarts": sum(s.restart_count or 0 for s in statuses),
    }


def _deployment(obj: Any) -> dict[str, Any]:
    status = obj.status
    return {
        **_common(obj),
        "replicas": obj.spec.replicas if obj.spec else None,
        "ready_replicas": (status.ready_replicas or 0) if status else 0,
        "updated_replicas": (status.updated_replicas or 0) if status else 0,
        "available_replicas": (status.available_replicas or 0) if status else 0,
    }


def _service(obj: Any) -> dict[str, Any]:
    spec = obj.spec
    return {
        **_common(obj),
        "type": spec.type if spec else None,
        "cluster_ip": spec.cluster_ip if spec else None,
        "ports": [
            {"port": p.port, "protocol": p.protocol, "name": p.name}
            for p in ((spec.ports if spec else None) or [])
        ],
    }


def _namespace(obj: Any) -> dict[str, Any]:
    return {**_common(obj), "phase": obj.status.phase if obj.status else None}


def read_resources(
    kube: KubeClient, kind: ResourceKind, namespace: str | None
) -> tuple[list[dict[str, Any]], bool]:
    """Summaries of up to MAX_ITEMS objects, and whether the list was cut there."""
    if kind is ResourceKind.namespaces:
        result = kube.core.list_namespace(limit=MAX_ITEMS)
        summarize = _namespace
    else:
        group, summarize, noun = {
            ResourceKind.pods: (kube.core, _pod, "pod"),
            ResourceKind.deployments: (kube.apps, _deployment, "deployment"),
            ResourceKind.services: (kube.core, _service, "service"),
        }[kind]
        if namespace:
            result = getattr(group, f"list_namespaced_{noun}")(namespace, limit=MAX_ITEMS)
        else:
            result = getattr(group, f"list_{noun}_for_all_namespaces")(limit=MAX_ITEMS)
    truncated = bool(result.metadata and result.metadata.var_continue)
    return [summarize(item) for item in result.items], truncated
