"""Rules for project namespaces on managed clusters; the cluster work happens in actors."""

from __future__ import annotations

import base64

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import record_audit
from app.auth.models import Role
from app.auth.principal import Principal
from app.clusters import repository as clusters_repository
from app.clusters import service as clusters_service
from app.clusters.models import Cluster, ClusterStatus
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
    row = await repository.get(session, cluster_id, namespace_id, with_token=with_token)
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
    if cluster.platform is None:
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
    platform = cluster.platform
    if platform is None:
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
    entry: dict[str, object] = {"server": platform.api_url}
    if platform.ca_pem:
        entry["certificate-authority-data"] = base64.b64encode(platform.ca_pem.encode()).decode()
    # Unique per project, cluster and namespace, so several of these files merge
    # (KUBECONFIG=a:b) without one user or cluster entry replacing another.
    cluster_name = f"clusterport-{project_id}-{cluster.name}"
    name = f"{cluster_name}-{row.namespace}"
    return Kubeconfig(
        clusters=[{"name": cluster_name, "cluster": entry}],
        users=[{"name": name, "user": {"token": row.service_account_token}}],
        contexts=[
            {
                "name": name,
                "context": {"cluster": cluster_name, "user": name, "namespace": row.namespace},
            }
        ],
        current_context=name,
    )


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
    chosen = pick_for_environment(((c.environment_scope, c) for c in clusters), environment)
    if chosen is None:
        raise NotFoundError(
            f"No enabled cluster of the project covers environment {environment!r}.",
            code="no_cluster_for_environment",
        )
    return chosen
