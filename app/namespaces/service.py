"""Rules for project namespaces on managed clusters; the cluster work happens in actors."""

from __future__ import annotations

import base64

from sqlalchemy.ext.asyncio import AsyncSession

from app.agent_server.config import get_agent_server_settings
from app.agents.credentials import namespace_credential
from app.agents.settings import get_agents_settings
from app.audit.service import record_audit
from app.auth.models import Role
from app.auth.principal import Principal
from app.clusters import repository as clusters_repository
from app.clusters import service as clusters_service
from app.clusters.models import Cluster, ClusterStatus, KubernetesPlatform
from app.clusters.scope import pick_for_environment, scope_matches
from app.core.errors import ConflictError, NotFoundError, UnprocessableError
from app.core.jobs import actor_named, enqueue_after_commit
from app.namespaces import repository
from app.namespaces.models import NamespaceStatus, ProjectNamespace
from app.namespaces.naming import SERVICE_ACCOUNT, namespace_name
from app.namespaces.schemas import Kubeconfig, NamespaceCreate
from app.projects.service import get_visible


async def get(
    session: AsyncSession,
    principal: Principal,
    project_id: int,
    cluster_id: int,
    namespace_id: int,
    role: Role,
    *,
    with_token: bool = False,
) -> tuple[Cluster, ProjectNamespace]:
    cluster = await clusters_service.get(session, principal, project_id, cluster_id, role)
    row = await repository.get(session, project_id, cluster_id, namespace_id, with_token=with_token)
    if row is None:
        raise NotFoundError("The namespace does not exist.", code="namespace_not_found")
    return cluster, row


def _check_usable(cluster: Cluster, environment: str) -> None:
    if not cluster.managed:
        raise ConflictError(
            "clusterport does not manage namespaces on this cluster.", code="cluster_not_managed"
        )
    if not cluster.enabled:
        raise ConflictError("The cluster is disabled.", code="cluster_disabled")
    if cluster.status == ClusterStatus.deleting:
        raise ConflictError("The cluster is being deleted.", code="cluster_deleting")
    if cluster.platform is None and cluster.agent_id is None:
        raise ConflictError("The cluster has no connection yet.", code="cluster_not_connected")
    if not scope_matches(cluster.environment_scope, environment):
        raise UnprocessableError(
            f"The cluster's environment scope {cluster.environment_scope!r} does not cover "
            f"environment {environment!r}.",
            code="environment_out_of_scope",
        )


async def create_or_repair(
    session: AsyncSession,
    principal: Principal,
    project_id: int,
    cluster_id: int,
    data: NamespaceCreate,
) -> ProjectNamespace:
    """Record the namespace for (project, environment) and queue its creation; for one that
    exists already, queue a repair (and apply a changed ClusterRole)."""
    cluster = await clusters_service.get(
        session, principal, project_id, cluster_id, Role.maintainer
    )
    _check_usable(cluster, data.environment)
    row = await repository.find(session, cluster_id, project_id, data.environment)
    if row is not None:
        if row.status == NamespaceStatus.deleting:
            raise ConflictError("The namespace is being deleted.", code="namespace_deleting")
        row.cluster_role = data.cluster_role
        row.status = NamespaceStatus.provisioning
        row.error_code = None
        row.settled()
        action = "namespace.repair"
    else:
        project = await get_visible(session, principal, project_id)
        prefix = cluster.platform.namespace_prefix if cluster.platform else None
        name = namespace_name(prefix, project.name, project_id, data.environment)
        if await repository.namespace_taken(session, cluster_id, name):
            raise ConflictError(
                f"Namespace {name!r} is already recorded for another environment.",
                code="namespace_name_taken",
            )
        row = ProjectNamespace(
            cluster_id=cluster_id,
            project_id=project_id,
            environment=data.environment,
            namespace=name,
            service_account_name=SERVICE_ACCOUNT,
            cluster_role=data.cluster_role,
            status=NamespaceStatus.provisioning,
        )
        session.add(row)
        action = "namespace.create"
    await session.flush()
    record_audit(
        session,
        principal,
        action,
        "namespace",
        row.id,
        project_id=project_id,
        details={"cluster_id": cluster_id, "namespace": row.namespace, "role": row.cluster_role},
    )
    enqueue_after_commit(session, actor_named("ensure_namespace"), row.id)
    return row


async def delete(
    session: AsyncSession, principal: Principal, project_id: int, cluster_id: int, namespace_id: int
) -> ProjectNamespace:
    """Queue the removal of the namespace from the cluster; the record goes afterwards."""
    _, row = await get(session, principal, project_id, cluster_id, namespace_id, Role.maintainer)
    row.status = NamespaceStatus.deleting
    row.error_code = None
    row.settled()
    record_audit(
        session,
        principal,
        "namespace.delete",
        "namespace",
        row.id,
        project_id=project_id,
        details={"cluster_id": cluster_id, "namespace": row.namespace},
    )
    enqueue_after_commit(session, actor_named("remove_namespace"), row.id)
    return row


async def kubeconfig(
    session: AsyncSession, principal: Principal, project_id: int, cluster_id: int, namespace_id: int
) -> Kubeconfig:
    """A kubeconfig with the namespace's service account token (maintainer; audited)."""
    cluster, row = await get(
        session, principal, project_id, cluster_id, namespace_id, Role.maintainer, with_token=True
    )
    if row.status != NamespaceStatus.ready or not row.service_account_token:
        raise ConflictError(
            "The namespace is not ready yet; its token is stored once it is.",
            code="namespace_not_ready",
        )
    if cluster.agent_id is not None:
        entry, token = _through_agent(cluster.agent_id, row.id)
    elif cluster.platform is not None:
        entry, token = _direct(cluster.platform), row.service_account_token
    else:
        raise ConflictError("The cluster has no connection.", code="cluster_not_connected")
    record_audit(
        session,
        principal,
        "namespace.kubeconfig",
        "namespace",
        row.id,
        project_id=project_id,
        details={"cluster_id": cluster_id},
    )
    # Unique per project, cluster and namespace, so several of these files merge
    # (KUBECONFIG=a:b) without one user or cluster entry replacing another.
    cluster_name = f"clusterport-{project_id}-{cluster.name}"
    name = f"{cluster_name}-{row.namespace}"
    return Kubeconfig(
        clusters=[{"name": cluster_name, "cluster": entry}],
        users=[{"name": name, "user": {"token": token}}],
        contexts=[
            {
                "name": name,
                "context": {"cluster": cluster_name, "user": name, "namespace": row.namespace},
            }
        ],
        current_context=name,
    )


def _direct(platform: KubernetesPlatform) -> dict[str, object]:
    """The cluster's own API, with the service account's token."""
    entry: dict[str, object] = {"server": platform.api_url}
    if platform.ca_pem:
        entry["certificate-authority-data"] = _b64(platform.ca_pem.encode())
    return entry


def _through_agent(agent_id: int, namespace_id: int) -> tuple[dict[str, object], str]:
    """clusterport's proxy, with a credential for this namespace only: the proxy impersonates
    the namespace's service account, so the cluster's RBAC limits it as it limits a direct
    kubeconfig. It stops working when the namespace is deleted or its lifetime ends."""
    settings = get_agent_server_settings()
    entry: dict[str, object] = {
        "server": f"{settings.public_proxy_url}/k8s-proxy/agents/{agent_id}"
    }
    if settings.agent_tls_ca_file is not None:
        entry["certificate-authority-data"] = _b64(settings.agent_tls_ca_file.read_bytes())
    ttl = get_agents_settings().agent_kubeconfig_ttl_hours * 3600
    return entry, namespace_credential(agent_id, namespace_id, ttl)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def cluster_for_environment(
    session: AsyncSession, principal: Principal, project_id: int, environment: str
) -> Cluster:
    """The enabled cluster whose environment scope matches `environment` most specifically."""
    await get_visible(session, principal, project_id)
    clusters = [
        c
        for c in await clusters_repository.list_enabled(session, project_id)
        if c.status != ClusterStatus.deleting
    ]
    # The project's own clusters win; instance-level ones serve what they leave uncovered.
    chosen = pick_for_environment(
        ((c.environment_scope, c) for c in clusters if c.project_id is not None), environment
    ) or pick_for_environment(
        ((c.environment_scope, c) for c in clusters if c.project_id is None), environment
    )
    if chosen is None:
        raise NotFoundError(
            f"No enabled cluster of the project covers environment {environment!r}.",
            code="no_cluster_for_environment",
        )
    return chosen
