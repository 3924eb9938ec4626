"""Credentials for the agent server's Kubernetes API proxy that clusterport signs itself.

Two kinds, both signed with `app.core.signing` (no database row, nothing to leak at rest):
- a worker's: short-lived, acts with the agent's own rights (connectivity checks, namespaces,
  cluster state, add-ons, deployments), never given to a user;
- a namespace kubeconfig's: names one project namespace; the proxy looks the namespace up and
  impersonates its service account, so the cluster's RBAC limits it as it limits a direct
  kubeconfig. Deleting the namespace record revokes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.core.signing import InvalidCredentialError, sign, verify

WORKER_PURPOSE = "agent-proxy/worker"
NAMESPACE_PURPOSE = "agent-proxy/namespace"
# Refreshed before every request (see KubeClient.through_agent): a minute is plenty.
WORKER_TTL_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class ProxyGrant:
    """What a valid credential allows: the agent, and the namespace record for a kubeconfig."""

    agent_id: int
    namespace_id: int | None = None


def worker_credential(agent_id: int) -> str:
    return sign(WORKER_PURPOSE, {"agent": agent_id}, ttl_seconds=WORKER_TTL_SECONDS)


def namespace_credential(agent_id: int, namespace_id: int, ttl_seconds: float) -> str:
    return sign(
        NAMESPACE_PURPOSE, {"agent": agent_id, "namespace": namespace_id}, ttl_seconds=ttl_seconds
    )


def read_grant(raw: str) -> ProxyGrant:
    """The grant of a worker or namespace credential; `InvalidCredentialError` otherwise."""
    verified = verify(raw, WORKER_PURPOSE, NAMESPACE_PURPOSE)
    claims = verified.claims
    try:
        agent_id = int(claims["agent"])
        namespace_id = int(claims["namespace"]) if verified.purpose == NAMESPACE_PURPOSE else None
    except (KeyError, TypeError, ValueError):
        raise InvalidCredentialError("invalid_credential") from None
    return ProxyGrant(agent_id, namespace_id)
