"""The configure step's work inside a new EKS cluster: node role mapping, our service account."""

from __future__ import annotations

import base64
from typing import Any

import yaml

from app.kube import KubeClient
from app.kube.errors import KubeConflictError, KubeNotFoundError
from app.providers.aws.errors import ProvisioningError

NAMESPACE = "kube-system"
AWS_AUTH = "aws-auth"
SERVICE_ACCOUNT = "clusterport"
TOKEN_SECRET = "clusterport-token"  # noqa: S105 (the Secret's name)
CLUSTER_ROLE_BINDING = "clusterport-admin"
NODE_GROUPS = ["system:bootstrappers", "system:nodes"]


def node_role_entry(node_role_arn: str) -> dict[str, Any]:
    """The mapRoles entry that lets nodes with this instance role join the cluster."""
    return {
        "rolearn": node_role_arn,
        "username": "system:node:{{EC2PrivateDNSName}}",
        "groups": list(NODE_GROUPS),
    }


def map_node_role(kube: KubeClient, node_role_arn: str) -> None:
    """Add the node role to the aws-auth ConfigMap, keeping every other mapping there."""
    try:
        current = kube.core.read_namespaced_config_map(AWS_AUTH, NAMESPACE)
    except KubeNotFoundError:
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": AWS_AUTH, "namespace": NAMESPACE},
            "data": {"mapRoles": yaml.safe_dump([node_role_entry(node_role_arn)])},
        }
        try:
            kube.core.create_namespaced_config_map(NAMESPACE, body)
            return
        except KubeConflictError:
            # Made meanwhile (EKS makes it for managed node groups): merge into it.
            current = kube.core.read_namespaced_config_map(AWS_AUTH, NAMESPACE)
    data = dict(current.data or {})
    try:
        roles = yaml.safe_load(data.get("mapRoles") or "[]") or []
    except yaml.YAMLError as exc:
        raise ProvisioningError("InvalidAwsAuthConfigMap") from exc
    if not isinstance(roles, list):
        # Someone else's broken mapping: rewriting it could lock nodes or users out.
        raise ProvisioningError("InvalidAwsAuthConfigMap")
    if any(isinstance(r, dict) and r.get("rolearn") == node_role_arn for r in roles):
        return
    data["mapRoles"] = yaml.safe_dump([*roles, node_role_entry(node_role_arn)])
    # resourceVersion makes a concurrent edit fail with a conflict instead of being lost.
    kube.core.replace_namespaced_config_map(
        AWS_AUTH,
        NAMESPACE,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": AWS_AUTH,
                "namespace": NAMESPACE,
                "resourceVersion": current.metadata.resource_version,
            },
            "data": data,
        },
    )


def _create(call: Any, *args: Any) -> None:
    try:
        call(*args)
    except KubeConflictError:
        pass  # already there from an earlier run of this step


def ensure_service_account(kube: KubeClient) -> str | None:
    """Make clusterport's service account, its cluster-admin binding and token Secret.

    Returns the token, or None while the token controller has not filled the Secret yet (the
    caller tries again later instead of waiting here).
    """
    _create(
        kube.core.create_namespaced_service_account,
        NAMESPACE,
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": SERVICE_ACCOUNT, "namespace": NAMESPACE},
        },
    )
    _create(
        kube.rbac.create_cluster_role_binding,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": CLUSTER_ROLE_BINDING},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cluster-admin",
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}
            ],
        },
    )
    _create(
        kube.core.create_namespaced_secret,
        NAMESPACE,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/service-account-token",
            "metadata": {
                "name": TOKEN_SECRET,
                "namespace": NAMESPACE,
                "annotations": {"kubernetes.io/service-account.name": SERVICE_ACCOUNT},
            },
        },
    )
    secret = kube.core.read_namespaced_secret(TOKEN_SECRET, NAMESPACE)
    encoded = (secret.data or {}).get("token")
    if not encoded:
        return None
    return base64.b64decode(encoded).decode()
