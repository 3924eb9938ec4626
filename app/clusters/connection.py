"""How a worker reaches a cluster: the one place that picks the transport for a cluster record.

`connection_of(cluster)` reads what is needed inside a session; `.client()`, outside it, gives
the same `KubeClient` (same API groups, same typed errors) for both kinds of cluster:
- `direct`: to the stored API URL with the stored token, through the SSRF guard;
- `via_agent`: to the agent server's Kubernetes API proxy with a short-lived credential signed
  by clusterport; the agent replays the requests against its own kube-apiserver. Deployments
  hand the agent the whole set of objects instead (`apply_in_cluster`, pull-based GitOps).
Every feature above (checks, namespaces, cluster state, add-ons, deployments) calls this and
never builds a client of its own, so it works on both kinds unchanged. Workers only.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from app.agent_server.config import get_agent_server_settings
from app.agents.credentials import worker_credential
from app.clusters.models import Cluster
from app.core.settings import get_settings
from app.kube import KubeClient
from app.kube.agent_apply import AgentApplyResult, apply_through_agent


@dataclass(frozen=True)
class DirectConnection:
    """The cluster's API URL, CA and token (a `direct` cluster)."""

    api_url: str
    ca_pem: str | None
    token: str

    def client(self) -> KubeClient:
        return KubeClient.from_platform(
            self.api_url, self.ca_pem, self.token, allow_local=get_settings().allow_local_network
        )


@dataclass(frozen=True)
class ViaAgentConnection:
    """The agent whose tunnel reaches the cluster (a `via_agent` cluster)."""

    agent_id: int

    def client(self) -> KubeClient:
        settings = get_agent_server_settings()
        ca_file = settings.agent_tls_ca_file
        return KubeClient.through_agent(
            settings.internal_proxy_url,
            self.agent_id,
            functools.partial(worker_credential, self.agent_id),
            ca_file=str(ca_file) if ca_file else None,
        )

    def apply_in_cluster(
        self, objects: list[dict[str, Any]], field_manager: str, wait_crds: float
    ) -> AgentApplyResult:
        """Pull-based apply: the agent applies `objects` in-cluster with its own identity.
        Raises `AgentApplyUnsupportedError` when the agent does not offer it."""
        settings = get_agent_server_settings()
        ca_file = settings.agent_tls_ca_file
        return apply_through_agent(
            settings.internal_proxy_url,
            self.agent_id,
            worker_credential(self.agent_id),
            objects,
            field_manager,
            wait_crds=wait_crds,
            ca_file=str(ca_file) if ca_file else None,
        )


Connection = DirectConnection | ViaAgentConnection


def connection_of(cluster: Cluster) -> Connection | None:
    """How to reach `cluster`; None when there is nothing to connect with yet (an EKS cluster
    still being provisioned)."""
    if cluster.agent_id is not None:
        return ViaAgentConnection(cluster.agent_id)
    platform = cluster.platform
    if platform is None or not platform.token:
        return None
    return DirectConnection(platform.api_url, platform.ca_pem, platform.token)
