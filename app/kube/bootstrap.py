"""Give clusterport an account in a cluster the user can already reach with kubectl.

`clusterport clusters add --context CONTEXT` (like `argocd cluster add`) calls this with the
user's own kubeconfig credentials: it creates a ServiceAccount, binds it to a ClusterRole and
returns the API URL, CA and a long-lived token of that account for registration.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.config.config_exception import ConfigException

from app.kube.client import KubeClient
from app.kube.errors import KubeNotFoundError

# Managed clusters: clusterport creates namespaces, service accounts, RoleBindings to any
# ClusterRole, and installs add-ons and deployments, so it needs every right (as the account
# `argocd cluster add` makes). Unmanaged clusters: the built-in read-only `view` role.
MANAGER_CLUSTER_ROLE = "clusterport-manager"
MANAGER_RULES: list[dict[str, Any]] = [
    {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
    {"nonResourceURLs": ["*"], "verbs": ["*"]},
]
READER_CLUSTER_ROLE = "view"
SA_TOKEN_TYPE = "kubernetes.io/service-account-token"  # noqa: S105 (a Secret type)


class KubeconfigError(Exception):
    """The kubeconfig or its context cannot be used; the message says why (no secrets)."""


@dataclass(frozen=True)
class ClusterAccess:
    api_url: str
    ca_pem: str | None
    token: str
    cluster_role: str
    service_account: str


def client_from_kubeconfig(path: Path | None, context: str | None) -> tuple[KubeClient, Any, str]:
    """A client with the user's credentials of `context` (exec plugins included), its
    configuration (host and CA file) and the context's name (the current one by default)."""
    configuration = k8s.Configuration()
    try:
        if context is None:
            _contexts, active = k8s_config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
                config_file=str(path) if path else None
            )
            context = str(active["name"])
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(path) if path else None,
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
    except ConfigException as exc:
        raise KubeconfigError(str(exc).splitlines()[0][:300]) from None
    except FileNotFoundError:
        raise KubeconfigError(
            f"no kubeconfig at {path or '$KUBECONFIG / ~/.kube/config'}"
        ) from None
    configuration.retries = False
    return KubeClient(k8s.ApiClient(configuration)), configuration, context


def grant_access(
    kube: KubeClient,
    configuration: Any,
    *,
    managed: bool,
    namespace: str,
    name: str,
    token_wait: float = 60.0,
) -> ClusterAccess:
    """Create (or keep) the ServiceAccount, its ClusterRoleBinding and token Secret. Idempotent."""
    cluster_role = MANAGER_CLUSTER_ROLE if managed else READER_CLUSTER_ROLE
    labels = {"app.kubernetes.io/managed-by": "clusterport"}
    if _absent(kube.core.read_namespaced_service_account, name, namespace):
        kube.core.create_namespaced_service_account(
            namespace, {"metadata": {"name": name, "labels": labels}}
        )
    if managed:
        role = {"metadata": {"name": cluster_role, "labels": labels}, "rules": MANAGER_RULES}
        if _absent(kube.rbac.read_cluster_role, cluster_role):
            kube.rbac.create_cluster_role(role)
        else:
            kube.rbac.replace_cluster_role(cluster_role, role)
    binding_name = f"{name}-{namespace}"
    binding = {
        "metadata": {"name": binding_name, "labels": labels},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": cluster_role,
        },
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
    }
    current = _read(kube.rbac.read_cluster_role_binding, binding_name)
    if current is not None and current.role_ref.name != cluster_role:
        # roleRef cannot change in place: managed <-> unmanaged replaces the binding.
        kube.rbac.delete_cluster_role_binding(binding_name)
        current = None
    if current is None:
        kube.rbac.create_cluster_role_binding(binding)
    else:
        kube.rbac.replace_cluster_role_binding(binding_name, binding)
    secret_name = f"{name}-token"
    if _absent(kube.core.read_namespaced_secret, secret_name, namespace):
        kube.core.create_namespaced_secret(
            namespace,
            {
                "metadata": {
                    "name": secret_name,
                    "labels": labels,
                    "annotations": {"kubernetes.io/service-account.name": name},
                },
                "type": SA_TOKEN_TYPE,
            },
        )
    token = _wait_for_token(kube, secret_name, namespace, token_wait)
    return ClusterAccess(
        api_url=str(configuration.host).rstrip("/"),
        ca_pem=_ca_pem(configuration),
        token=token,
        cluster_role=cluster_role,
        service_account=f"{namespace}/{name}",
    )


def _read(read: Any, *args: str) -> Any | None:
    try:
        return read(*args)
    except KubeNotFoundError:
        return None


def _absent(read: Any, *args: str) -> bool:
    return _read(read, *args) is None


def _wait_for_token(kube: KubeClient, secret: str, namespace: str, limit: float) -> str:
    """The token controller (kube-controller-manager) fills the Secret within seconds."""
    deadline = time.monotonic() + limit
    while True:
        data = kube.core.read_namespaced_secret(secret, namespace).data or {}
        if data.get("token"):
            return base64.b64decode(data["token"]).decode()
        if time.monotonic() > deadline:
            raise KubeconfigError(
                f"the cluster did not fill the token Secret {namespace}/{secret} within "
                f"{limit:.0f}s: is kube-controller-manager (its token controller) running?"
            )
        time.sleep(0.5)


def _ca_pem(configuration: Any) -> str | None:
    if not configuration.verify_ssl or not configuration.ssl_ca_cert:
        return None
    return Path(configuration.ssl_ca_cert).read_text()
