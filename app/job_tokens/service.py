"""Rules for CI job credentials: short-lived, one environment, revocable, and a kubeconfig with
a context per agent whose access list admits the project and that environment."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.agent_server.config import get_agent_server_settings
from app.agents.credentials import job_credential
from app.audit.service import record_audit
from app.auth.models import Role
from app.auth.principal import Principal
from app.clusters.scope import scope_matches
from app.core.db import utcnow
from app.core.errors import ConflictError, NotFoundError
from app.job_tokens import repository
from app.job_tokens.models import JobToken
from app.job_tokens.schemas import JobTokenCreate, JobTokenCreated
from app.namespaces.schemas import Kubeconfig
from app.projects.service import get_visible


async def create(
    session: AsyncSession, principal: Principal, project_id: int, data: JobTokenCreate
) -> JobTokenCreated:
    """A credential for a CI job (developer and up; audited)."""
    principal.require_project(project_id, Role.developer)
    await get_visible(session, principal, project_id)
    agent_ids = [
        entry.agent_id
        for entry in await repository.access_entries(session, project_id)
        if entry.environments is None
        or any(scope_matches(scope, data.environment) for scope in entry.environments)
    ]
    if not agent_ids:
        raise ConflictError(
            f"No agent's access list admits project {project_id} for environment "
            f"{data.environment!r}: a maintainer of the agent's project adds an entry for it "
            "(PUT .../agents/<id>/access).",
            code="no_agent_access",
        )
    now = utcnow()
    row = JobToken(
        project_id=project_id,
        environment=data.environment,
        role=principal.role.value,
        created_by=principal.audit_name,
        created_at=now,
        expires_at=now + timedelta(seconds=data.ttl_seconds),
    )
    session.add(row)
    await session.flush()
    record_audit(
        session,
        principal,
        "job_token.create",
        "job_token",
        row.id,
        project_id=project_id,
        details={"environment": data.environment, "ttl_seconds": data.ttl_seconds},
    )
    token = job_credential(row.id, data.ttl_seconds)
    namespaces = await repository.namespaces_by_agent(
        session, project_id, data.environment, agent_ids
    )
    settings = get_agent_server_settings()
    ca_pem = settings.agent_tls_ca_file.read_text() if settings.agent_tls_ca_file else ""
    user = f"clusterport-job-{row.id}"
    clusters, contexts = [], []
    for agent_id in agent_ids:
        name = f"clusterport-agent-{agent_id}"
        entry: dict[str, object] = {
            "server": f"{settings.public_proxy_url}/k8s-proxy/agents/{agent_id}"
        }
        if ca_pem:
            entry["certificate-authority-data"] = base64.b64encode(ca_pem.encode()).decode()
        clusters.append({"name": name, "cluster": entry})
        context: dict[str, object] = {"cluster": name, "user": user}
        if agent_id in namespaces:
            context["namespace"] = namespaces[agent_id]
        contexts.append({"name": name, "context": context})
    kubeconfig = Kubeconfig(
        clusters=clusters,
        users=[{"name": user, "user": {"token": token}}],
        contexts=contexts,
        current_context=contexts[0]["name"],
    )
    first = agent_ids[0]
    variables = {
        # JSON is valid kubeconfig YAML.
        "KUBECONFIG": json.dumps(kubeconfig.model_dump(), indent=2),
        "KUBE_URL": str(clusters[0]["cluster"]["server"]),  # type: ignore[index]
        "KUBE_TOKEN": token,
        "KUBE_NAMESPACE": namespaces.get(first, ""),
        "KUBE_CA_PEM": ca_pem,
    }
    return JobTokenCreated(
        id=row.id,
        project_id=project_id,
        environment=row.environment,
        expires_at=row.expires_at,
        token=token,
        kubeconfig=kubeconfig,
        variables=variables,
    )


async def revoke(session: AsyncSession, principal: Principal, project_id: int, job_id: int) -> None:
    """Revoke (developer and up); the proxy refuses the credential within two seconds."""
    principal.require_project(project_id, Role.developer)
    row = await repository.get(session, project_id, job_id)
    if row is None:
        raise NotFoundError("The job token does not exist.", code="job_token_not_found")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        record_audit(
            session, principal, "job_token.revoke", "job_token", row.id, project_id=project_id
        )
