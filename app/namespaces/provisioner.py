"""The Kubernetes side of a project namespace: namespace, service account, token Secret and
RoleBinding, created idempotently (a second run repairs drift) and removed again. Workers only.

A namespace counts as ours only when its labels name clusterport, the project and the cluster;
any other namespace with the same name is a conflict and is never touched.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from app.kube import KubeClient
from app.kube.errors import KubeConflictError, KubeError, KubeNotFoundError
from app.namespaces.naming import ROLE_BINDING, SERVICE_ACCOUNT, TOKEN_SECRET

MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PROJECT = "clusterport.io/project-id"
LABEL_CLUSTER = "clusterport.io/cluster-id"
LABEL_ENVIRONMENT = "clusterport.io/environment"
ANNOTATION_ENVIRONMENT = "clusterport.io/environment-name"
SA_TOKEN_TYPE = "kubernetes.io/service-account-token"  # noqa: S105 (a Secret type)
# The token controller fills a new token Secret within a second or two. One still empty after
# this long was missed (the controller or apiserver restarted meanwhile): it is recreated, so
# the controller sees a new Secret to fill.
EMPTY_TOKEN_SECRET_GRACE = timedelta(seconds=10)


class NamespaceNotOursError(KubeConflictError):
    message = "A namespace with this name exists in the cluster and clusterport does not own it."


@dataclass(frozen=True)
class NamespaceSpec:
    namespace: str
    project_id: int
    cluster_id: int
    environment: str
    environment_slug: str
    cluster_role: str = "admin"
    # Pod Security Admission level enforced in the namespace (restricted, baseline, privileged).
    pod_security: str = "restricted"

    @property
    def labels(self) -> dict[str, str]:
        return {
            MANAGED_BY: "clusterport",
            LABEL_PROJECT: str(self.project_id),
            LABEL_CLUSTER: str(self.cluster_id),
            LABEL_ENVIRONMENT: self.environment_slug,
        }

    def owns(self, metadata: Any) -> bool:
        labels = metadata.labels or {}
        return all(
            labels.get(k) == self.labels[k] for k in (MANAGED_BY, LABEL_PROJECT, LABEL_CLUSTER)
        )


def _metadata(spec: NamespaceSpec, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "labels": spec.labels,
        "annotations": {ANNOTATION_ENVIRONMENT: spec.environment},
    }


def _namespace_metadata(spec: NamespaceSpec) -> dict[str, Any]:
    """The namespace also gets Pod Security Admission labels: enforced, warned and audited at
    the same level, against the cluster's latest policy version."""
    metadata = _metadata(spec, spec.namespace)
    for mode in ("enforce", "warn", "audit"):
        metadata["labels"][f"pod-security.kubernetes.io/{mode}"] = spec.pod_security
        metadata["labels"][f"pod-security.kubernetes.io/{mode}-version"] = "latest"
    return metadata


def _read(read: Any, *args: str) -> Any | None:
    try:
        return read(*args)
    except KubeNotFoundError:
        return None


def ensure(kube: KubeClient, spec: NamespaceSpec) -> str | None:
    """Create or repair everything; return the service account token, or None while the
    cluster's token controller has not filled the Secret yet (call again later).
    When any step fails, a namespace this call created is deleted again."""
    created = _ensure_namespace(kube, spec)
    try:
        sa_uid = _ensure_service_account(kube, spec)
        _ensure_token_secret(kube, spec, sa_uid)
        _ensure_role_binding(kube, spec)
        return _read_token(kube, spec)
    except KubeError:
        if created:
            _delete_namespace(kube, spec.namespace)
        raise


def _ensure_namespace(kube: KubeClient, spec: NamespaceSpec) -> bool:
    existing = _read(kube.core.read_namespace, spec.namespace)
    if existing is None:
        kube.core.create_namespace({"metadata": _namespace_metadata(spec)})
        return True
    if not spec.owns(existing.metadata):
        raise NamespaceNotOursError(409)
    if existing.metadata.deletion_timestamp is not None:
        # Ours but still being deleted from an earlier removal: not usable until it is gone.
        raise KubeConflictError(409)
    kube.core.patch_namespace(spec.namespace, {"metadata": _namespace_metadata(spec)})
    return False


def _ensure_service_account(kube: KubeClient, spec: NamespaceSpec) -> str:
    """Create or relabel the service account; return its uid."""
    body = {"metadata": _metadata(spec, SERVICE_ACCOUNT)}
    if _read(kube.core.read_namespaced_service_account, SERVICE_ACCOUNT, spec.namespace) is None:
        sa = kube.core.create_namespaced_service_account(spec.namespace, body)
    else:
        sa = kube.core.patch_namespaced_service_account(SERVICE_ACCOUNT, spec.namespace, body)
    return str(sa.metadata.uid)


def _ensure_token_secret(kube: KubeClient, spec: NamespaceSpec, sa_uid: str) -> None:
    metadata = _metadata(spec, TOKEN_SECRET)
    metadata["annotations"]["kubernetes.io/service-account.name"] = SERVICE_ACCOUNT
    existing = _read(kube.core.read_namespaced_secret, TOKEN_SECRET, spec.namespace)
    if existing is not None:
        annotations = existing.metadata.annotations or {}
        # The token controller records the account's uid; another uid means the account was
        # deleted and recreated, so the token in this Secret no longer authenticates.
        issued_for = annotations.get("kubernetes.io/service-account.uid")
        if (
            existing.type == SA_TOKEN_TYPE
            and annotations.get("kubernetes.io/service-account.name") == SERVICE_ACCOUNT
            and issued_for in (None, sa_uid)
            and not _left_empty(existing)
        ):
            return
        # Changed by hand, stale or never filled (type and annotations cannot be fixed in
        # place): replace it.
        kube.core.delete_namespaced_secret(TOKEN_SECRET, spec.namespace)
    kube.core.create_namespaced_secret(
        spec.namespace, {"metadata": metadata, "type": SA_TOKEN_TYPE}
    )


def _left_empty(secret: Any) -> bool:
    created = secret.metadata.creation_timestamp
    return (
        not (secret.data or {}).get("token")
        and created is not None
        and datetime.now(UTC) - created > EMPTY_TOKEN_SECRET_GRACE
    )


def _ensure_role_binding(kube: KubeClient, spec: NamespaceSpec) -> None:
    body = {
        "metadata": _metadata(spec, ROLE_BINDING),
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": spec.cluster_role,
        },
        "subjects": [
            {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": spec.namespace}
        ],
    }
    existing = _read(kube.rbac.read_namespaced_role_binding, ROLE_BINDING, spec.namespace)
    if existing is None:
        kube.rbac.create_namespaced_role_binding(spec.namespace, body)
        return
    ref = existing.role_ref
    if ref.kind != "ClusterRole" or ref.name != spec.cluster_role:
        # roleRef is immutable: a binding to another role is replaced.
        kube.rbac.delete_namespaced_role_binding(ROLE_BINDING, spec.namespace)
        kube.rbac.create_namespaced_role_binding(spec.namespace, body)
        return
    kube.rbac.replace_namespaced_role_binding(ROLE_BINDING, spec.namespace, body)


def _read_token(kube: KubeClient, spec: NamespaceSpec) -> str | None:
    secret = kube.core.read_namespaced_secret(TOKEN_SECRET, spec.namespace)
    token = (secret.data or {}).get("token")
    return base64.b64decode(token).decode() if token else None


def _delete_namespace(kube: KubeClient, name: str) -> None:
    try:
        kube.core.delete_namespace(name)
    except KubeNotFoundError:
        pass


def remove(kube: KubeClient, spec: NamespaceSpec) -> bool:
    """Delete the namespace (and so everything in it) when it is ours. Returns False when a
    namespace of that name exists but belongs to someone else (left untouched)."""
    existing = _read(kube.core.read_namespace, spec.namespace)
    if existing is None:
        return True
    if not spec.owns(existing.metadata):
        return False
    if existing.metadata.deletion_timestamp is None:
        _delete_namespace(kube, spec.namespace)
    return True
