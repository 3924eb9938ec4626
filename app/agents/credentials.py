"""Credentials for the agent server's Kubernetes API proxy that clusterport signs itself.

Four kinds, all signed with `app.core.signing` (no database row, nothing to leak at rest):
- a worker's: short-lived, acts with the agent's own rights (connectivity checks, namespaces,
  cluster state, add-ons, deployments), never given to a user;
- a namespace kubeconfig's: names one project namespace; the proxy looks the namespace up and
  impersonates its service account, so the cluster's RBAC limits it as it limits a direct
  kubeconfig. Deleting the namespace record revokes it;
- a routed request's: one agent-server replica passes a request it authorized to the replica
  holding the agent's tunnel with this assertion (agent, the caller's identity in the cluster,
  a few seconds of validity) instead of the caller's own token;
- a CI job's: names a job token row (revocable), at most an hour; the proxy checks the row and
  the agent's access list for the job's project and environment on each agent.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.core.signing import InvalidCredentialError, sign, verify

WORKER_PURPOSE = "agent-proxy/worker"
NAMESPACE_PURPOSE = "agent-proxy/namespace"
ROUTED_PURPOSE = "agent-proxy/routed"
JOB_PURPOSE = "agent-proxy/ci-job"
# Refreshed before every request (see KubeClient.through_agent): a minute is plenty.
WORKER_TTL_SECONDS = 60.0
# Checked once when the routed request arrives, a hop later.
ROUTED_TTL_SECONDS = 15.0


@dataclass(frozen=True, slots=True)
class Acting:
    """Who a request through the proxy acts as: the headers to add (impersonation), the
    credential its reads are counted under, and who its writes are audited as (None: a
    worker's, which its own records account for)."""

    headers: tuple[tuple[str, str], ...]
    credential: str
    actor: str | None = None
    project_id: int | None = None


@dataclass(frozen=True, slots=True)
class ProxyGrant:
    """What a valid credential allows: the agent, and the namespace record for a kubeconfig."""

    agent_id: int | None  # None: a CI job's, for whichever agents admit its project
    namespace_id: int | None = None
    # A routed request's identity, decided by the replica that authorized it.
    acting: Acting | None = None
    job_id: int | None = None


def worker_credential(agent_id: int) -> str:
    return sign(WORKER_PURPOSE, {"agent": agent_id}, ttl_seconds=WORKER_TTL_SECONDS)


def namespace_credential(agent_id: int, namespace_id: int, ttl_seconds: float) -> str:
    return sign(
        NAMESPACE_PURPOSE, {"agent": agent_id, "namespace": namespace_id}, ttl_seconds=ttl_seconds
    )


def job_credential(job_id: int, ttl_seconds: float) -> str:
    return sign(JOB_PURPOSE, {"job": job_id}, ttl_seconds=ttl_seconds)


def routed_credential(agent_id: int, acting: Acting) -> str:
    claims = {
        "agent": agent_id,
        "headers": [list(pair) for pair in acting.headers],
        "credential": acting.credential,
        "actor": acting.actor,
        "project": acting.project_id,
    }
    return sign(ROUTED_PURPOSE, claims, ttl_seconds=ROUTED_TTL_SECONDS)


def read_grant(raw: str) -> ProxyGrant:
    """The grant of a worker, namespace or routed credential; `InvalidCredentialError`
    otherwise."""
    verified = verify(raw, WORKER_PURPOSE, NAMESPACE_PURPOSE, ROUTED_PURPOSE, JOB_PURPOSE)
    claims = verified.claims
    try:
        if verified.purpose == JOB_PURPOSE:
            return ProxyGrant(None, job_id=int(claims["job"]))
        agent_id = int(claims["agent"])
        if verified.purpose == ROUTED_PURPOSE:
            headers = tuple((str(name), str(value)) for name, value in claims["headers"])
            actor, project = claims["actor"], claims["project"]
            acting = Acting(
                headers,
                str(claims["credential"]),
                None if actor is None else str(actor),
                None if project is None else int(project),
            )
            return ProxyGrant(agent_id, acting=acting)
        namespace_id = int(claims["namespace"]) if verified.purpose == NAMESPACE_PURPOSE else None
    except (KeyError, TypeError, ValueError):
        raise InvalidCredentialError("invalid_credential") from None
    return ProxyGrant(agent_id, namespace_id)
