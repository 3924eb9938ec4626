"""What an environment may own: namespace defaulting, refusing other namespaces and
cluster-scoped kinds unless allowed, and unknown kinds."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from app.gitops_engine.manifests import ManifestError, ObjectRef

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "clusterport"
ENVIRONMENT_LABEL = "clusterport.dev/environment"

# (group, kind) -> namespaced, for kinds every cluster serves. Discovery adds the rest.
BUILTIN_SCOPES: dict[tuple[str, str], bool] = {
    ("", "Namespace"): False,
    ("", "Node"): False,
    ("", "PersistentVolume"): False,
    ("", "ConfigMap"): True,
    ("", "Secret"): True,
    ("", "Service"): True,
    ("", "ServiceAccount"): True,
    ("", "PersistentVolumeClaim"): True,
    ("", "Pod"): True,
    ("", "LimitRange"): True,
    ("", "ResourceQuota"): True,
    ("apps", "Deployment"): True,
    ("apps", "StatefulSet"): True,
    ("apps", "DaemonSet"): True,
    ("apps", "ReplicaSet"): True,
    ("batch", "Job"): True,
    ("batch", "CronJob"): True,
    ("networking.k8s.io", "Ingress"): True,
    ("networking.k8s.io", "NetworkPolicy"): True,
    ("networking.k8s.io", "IngressClass"): False,
    ("policy", "PodDisruptionBudget"): True,
    ("autoscaling", "HorizontalPodAutoscaler"): True,
    ("rbac.authorization.k8s.io", "Role"): True,
    ("rbac.authorization.k8s.io", "RoleBinding"): True,
    ("rbac.authorization.k8s.io", "ClusterRole"): False,
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): False,
    ("apiextensions.k8s.io", "CustomResourceDefinition"): False,
    ("storage.k8s.io", "StorageClass"): False,
    ("scheduling.k8s.io", "PriorityClass"): False,
}


@dataclass(frozen=True)
class Target:
    """Where an environment deploys and what it may touch beyond its namespace."""

    namespace: str
    environment_id: int
    allow_cluster_scoped: bool = False
    # Other namespaces objects may name (besides the target's); `*` allows any.
    extra_namespaces: tuple[str, ...] = ()

    def namespace_allowed(self, namespace: str) -> bool:
        return (
            namespace == self.namespace
            or "*" in self.extra_namespaces
            or namespace in self.extra_namespaces
        )


def _crd_scopes(objects: list[dict[str, Any]]) -> dict[tuple[str, str], bool]:
    """Kinds that CustomResourceDefinitions in the same render define."""
    scopes: dict[tuple[str, str], bool] = {}
    for obj in objects:
        if obj.get("kind") != "CustomResourceDefinition":
            continue
        spec = obj.get("spec") or {}
        names = spec.get("names") or {}
        if isinstance(spec.get("group"), str) and isinstance(names.get("kind"), str):
            scopes[(spec["group"], names["kind"])] = spec.get("scope") != "Cluster"
    return scopes


@dataclass
class Prepared:
    objects: list[dict[str, Any]] = field(default_factory=list)

    @property
    def refs(self) -> list[ObjectRef]:
        return [ObjectRef.of(o) for o in self.objects]


def prepare(
    objects: list[dict[str, Any]],
    target: Target,
    discovered: Mapping[tuple[str, str], bool] | None = None,
) -> Prepared:
    """Objects ready to apply: the target namespace filled in where none is given, the
    clusterport labels added. Raises `ManifestError` for an unknown kind, a namespace other
    than the allowed ones, a cluster-scoped kind when not allowed, or a duplicate object."""
    scopes = {**BUILTIN_SCOPES, **(discovered or {}), **_crd_scopes(objects)}
    prepared = Prepared()
    seen: set[ObjectRef] = set()
    for original in objects:
        obj = copy.deepcopy(original)
        group = str(obj["apiVersion"]).rpartition("/")[0]
        kind = str(obj["kind"])
        namespaced = scopes.get((group, kind))
        meta = obj["metadata"]
        label = f"{kind}/{meta['name']}"
        if namespaced is None:
            raise ManifestError(
                "unknown_kind", f"{label}: the cluster serves no kind {kind} in {obj['apiVersion']}"
            )
        if namespaced:
            namespace = meta.get("namespace") or target.namespace
            if not target.namespace_allowed(namespace):
                raise ManifestError(
                    "namespace_not_allowed",
                    f"{label}: namespace {namespace!r} is not the environment's "
                    f"({target.namespace!r})",
                )
            meta["namespace"] = namespace
        else:
            if not target.allow_cluster_scoped:
                raise ManifestError(
                    "cluster_scoped_not_allowed",
                    f"{label}: cluster-scoped kinds are not allowed in this environment",
                )
            meta.pop("namespace", None)
        labels = meta.get("labels")
        if not isinstance(labels, dict):
            labels = meta["labels"] = {}
        labels[MANAGED_BY_LABEL] = MANAGED_BY
        labels[ENVIRONMENT_LABEL] = str(target.environment_id)
        ref = ObjectRef.of(obj)
        if ref in seen:
            raise ManifestError("duplicate_object", f"{ref}: the object is rendered twice")
        seen.add(ref)
        prepared.objects.append(obj)
    return prepared
