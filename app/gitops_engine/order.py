"""Dependency order: Namespaces and CRDs first (then wait until the CRDs are established),
then RBAC, configuration, services, workloads and everything else."""

from __future__ import annotations

from typing import Any

_PHASE_OF_KIND: dict[str, int] = {
    "Namespace": 0,
    "CustomResourceDefinition": 0,
    "ServiceAccount": 1,
    "ClusterRole": 1,
    "Role": 1,
    "ClusterRoleBinding": 1,
    "RoleBinding": 1,
    "PriorityClass": 2,
    "StorageClass": 2,
    "ResourceQuota": 2,
    "LimitRange": 2,
    "NetworkPolicy": 2,
    "ConfigMap": 2,
    "Secret": 2,
    "PersistentVolume": 2,
    "PersistentVolumeClaim": 2,
    "Service": 3,
    "DaemonSet": 4,
    "Deployment": 4,
    "StatefulSet": 4,
    "ReplicaSet": 4,
    "Pod": 4,
    "Job": 4,
    "CronJob": 4,
    "HorizontalPodAutoscaler": 5,
    "PodDisruptionBudget": 5,
    "Ingress": 5,
}
_LAST = 6  # custom resources and kinds we do not know: after everything they may depend on


def phase(obj: dict[str, Any]) -> int:
    return _PHASE_OF_KIND.get(str(obj["kind"]), _LAST)


def waves(objects: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Objects in apply order, in waves. The first wave holds Namespaces and CRDs: the applier
    waits until its CRDs are established before the next wave (custom resources need them)."""
    ordered = sorted(objects, key=lambda o: (phase(o), str(o["kind"]), _name(o)))
    first = [o for o in ordered if phase(o) == 0]
    rest = [o for o in ordered if phase(o) != 0]
    return [w for w in (first, rest) if w]


def _name(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj["metadata"]
    return (str(meta.get("namespace") or ""), str(meta["name"]))


def prune_order(kinds_and_refs: list[Any]) -> list[Any]:
    """Objects to delete in reverse dependency order (workloads before their config, the
    namespaces and CRDs last). Items are `ObjectRef`s."""
    return sorted(
        kinds_and_refs,
        key=lambda ref: (-_PHASE_OF_KIND.get(ref.kind, _LAST), ref.kind, ref.namespace, ref.name),
    )
