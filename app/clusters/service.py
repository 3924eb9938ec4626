"""Rules for registering, changing and removing user-provided clusters."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.addons.models import BUSY as ADDON_BUSY
from app.addons.models import ClusterAddon
from app.agents import repository as agents_repository
from app.agents.settings import get_agents_settings
from app.audit.service import record_audit
from app.auth.models import Role
from app.auth.principal import Principal
from app.clusters import repository
from app.clusters.models import Cluster, ClusterStatus, KubernetesPlatform, ProviderType
from app.clusters.schemas import ClusterCreate, ClusterRead, ClusterUpdate
from app.core.db import utcnow
from app.core.errors import ConflictError, ForbiddenError, NotFoundError
from app.core.jobs import actor_named, enqueue_after_commit
from app.core.settings import get_settings
from app.core.ssrf import resolve_target_async
from app.namespaces.models import ProjectNamespace
from app.projects.service import get_visible


async def get(
    session: AsyncSession,
    principal: Principal,
    project_id: int | None,
    cluster_id: int,
    role: Role,
    *,
    modify: bool = False,
) -> Cluster:
    """A cluster the project may use: its own or an instance-level one (`project_id` None:
    instance-level only, for admins). Instance-level clusters are read-only for projects: they
    use them (namespaces, cluster state) but only an admin changes them (`modify`)."""
    principal.require_project(project_id, role)
    cluster = await repository.get(session, project_id, cluster_id, usable=True)
    if cluster is None:
        raise NotFoundError("The cluster does not exist.", code="cluster_not_found")
    if modify and cluster.project_id != project_id:
        raise ForbiddenError(
            "Instance-level clusters are read-only here; an admin changes them under "
            "/api/v1/clusters.",
            code="instance_cluster_read_only",
        )
    return cluster


async def describe(session: AsyncSession, cluster: Cluster) -> ClusterRead:
    """The API's view of a cluster, with whether its agent is connected now."""
    return ClusterRead.of(cluster, await connected_agents(session, [cluster.agent_id]))


async def connected_agents(session: AsyncSession, agent_ids: Iterable[int | None]) -> set[int]:
    dead_after = get_agents_settings().agent_replica_dead_after
    return await agents_repository.connected_agent_ids(session, agent_ids, utcnow(), dead_after)


async def check_unique(
    session: AsyncSession,
    project_id: int | None,
    name: str | None,
    scope: str | None,
    exclude: int | None,
) -> None:
    if name is not None and await repository.name_taken(
        session, project_id, name=name, exclude_id=exclude
    ):
        raise ConflictError(f"The project has a cluster named {name!r}.", code="cluster_name_taken")
    if scope is not None and await repository.scope_taken(
        session, project_id, scope=scope, exclude_id=exclude
    ):
        raise ConflictError(
            f"The project has a cluster for environment scope {scope!r}.",
            code="environment_scope_taken",
        )


async def _check_url(url: str) -> None:
    await resolve_target_async(url, allow_local=get_settings().allow_local_network)


def _enqueue_check(session: AsyncSession, cluster: Cluster) -> None:
    enqueue_after_commit(session, actor_named("check_cluster"), cluster.id)


async def create(
    session: AsyncSession, principal: Principal, project_id: int | None, data: ClusterCreate
) -> Cluster:
    """Register a cluster of the project, or an instance-level one (`project_id` None, admin)."""
    principal.require_project(project_id, Role.maintainer)
    if project_id is not None:
        await get_visible(session, principal, project_id)
    await check_unique(session, project_id, data.name, data.environment_scope, None)
    cluster = Cluster(
        project_id=project_id,
        name=data.name,
        environment_scope=data.environment_scope,
        enabled=data.enabled,
        managed=data.managed,
        provider_type=ProviderType.user,
        status=ClusterStatus.connecting if data.enabled else ClusterStatus.disabled,
        platform=None,  # set below for direct clusters; None: never loaded lazily (async)
    )
    details: dict[str, object] = {"name": data.name}
    if data.kubernetes is not None:
        await _check_url(data.kubernetes.api_url)
        cluster.platform = KubernetesPlatform(
            api_url=data.kubernetes.api_url,
            ca_pem=data.kubernetes.ca_pem,
            token=data.kubernetes.token.get_secret_value(),
            authorization_type=data.kubernetes.authorization_type,
            namespace_prefix=data.kubernetes.namespace_prefix,
        )
        details["api_url"] = data.kubernetes.api_url
    else:
        # The project's own agents or instance-level ones: another project's agent is as
        # unknown as a missing one.
        agent = await agents_repository.get(session, project_id, data.agent_id or 0, usable=True)
        if agent is None:
            raise NotFoundError("The agent does not exist.", code="agent_not_found")
        cluster.agent_id = agent.id
        details["agent_id"] = agent.id
    session.add(cluster)
    await session.flush()
    record_audit(
        session,
        principal,
        "cluster.create",
        "cluster",
        cluster.id,
        project_id=project_id,
        details=details,
    )
    if cluster.enabled:
        _enqueue_check(session, cluster)
    return cluster


async def update(
    session: AsyncSession,
    principal: Principal,
    project_id: int | None,
    cluster_id: int,
    data: ClusterUpdate,
) -> Cluster:
    cluster = await get(session, principal, project_id, cluster_id, Role.maintainer, modify=True)
    changes = data.model_dump(exclude_unset=True, exclude={"kubernetes"})
    await check_unique(
        session, project_id, changes.get("name"), changes.get("environment_scope"), cluster.id
    )
    recheck = False
    dropped_token = False
    for field, value in changes.items():
        if value is not None:
            setattr(cluster, field, value)
    if "enabled" in changes:
        recheck = True
    if data.kubernetes is not None:
        platform = cluster.platform
        if cluster.agent_id is not None:
            raise ConflictError(
                "This cluster is reached through an agent; it has no API URL or token.",
                code="cluster_via_agent",
            )
        if platform is None or cluster.provider_type != ProviderType.user:
            raise ConflictError(
                "This cluster's connection is managed by its provider.", code="not_user_cluster"
            )
        k8s = data.kubernetes.model_dump(exclude_unset=True)
        if k8s.get("api_url") is not None:
            await _check_url(k8s["api_url"])
        # The stored token was given for one address and CA: never send it anywhere else.
        moved = (k8s.get("api_url") is not None and k8s["api_url"] != platform.api_url) or (
            "ca_pem" in k8s and k8s["ca_pem"] != platform.ca_pem
        )
        for field, value in k8s.items():
            if value is None and field != "ca_pem":
                continue
            if field == "token":
                value = data.kubernetes.token.get_secret_value() if data.kubernetes.token else None
            setattr(platform, field, value)
        if moved and data.kubernetes.token is None:
            platform.token = None
            dropped_token = True
        recheck = recheck or bool({"api_url", "ca_pem", "token"} & k8s.keys())
    if dropped_token:
        # Nothing to check with until a token for the new address is given.
        cluster.status = ClusterStatus.unauthorized if cluster.enabled else ClusterStatus.disabled
        cluster.error_code = "no_credentials"
    elif recheck:
        cluster.status = ClusterStatus.connecting if cluster.enabled else ClusterStatus.disabled
        cluster.error_code = None
        cluster.settled()
        if cluster.enabled:
            _enqueue_check(session, cluster)
    record_audit(
        session,
        principal,
        "cluster.update",
        "cluster",
        cluster.id,
        project_id=project_id,
        details={
            "fields": sorted(
                set(changes)
                | set(data.kubernetes.model_dump(exclude_unset=True) if data.kubernetes else {})
            ),
            "token_dropped": dropped_token,
        },
    )
    await session.flush()
    return cluster


async def request_check(
    session: AsyncSession, principal: Principal, project_id: int | None, cluster_id: int
) -> Cluster:
    cluster = await get(session, principal, project_id, cluster_id, Role.developer, modify=True)
    if not cluster.enabled:
        raise ConflictError("The cluster is disabled.", code="cluster_disabled")
    if cluster.status == ClusterStatus.deleting:
        raise ConflictError("The cluster is being deleted.", code="cluster_deleting")
    if cluster.platform is None and cluster.agent_id is None:
        raise ConflictError(
            "The cluster has no connection yet (it is being provisioned).",
            code="cluster_not_ready",
        )
    # The answer shows the check under way, not the result of the previous one.
    cluster.status = ClusterStatus.connecting
    cluster.error_code = None
    await session.flush()
    _enqueue_check(session, cluster)
    return cluster


async def delete(
    session: AsyncSession,
    principal: Principal,
    project_id: int | None,
    cluster_id: int,
    *,
    force: bool = False,
) -> bool:
    """Remove the cluster. When clusterport installed add-ons or created namespaces in it, a
    worker uninstalls and deletes them first and then the record (the cluster shows `deleting`
    meanwhile): returns True then. `force` removes the record at once and leaves the cluster as
    it is."""
    cluster = await get(session, principal, project_id, cluster_id, Role.maintainer, modify=True)
    record_audit(
        session,
        principal,
        "cluster.delete",
        "cluster",
        cluster_id,
        project_id=project_id,
        details={"name": cluster.name, "force": force},
    )
    created_in_cluster = await session.scalar(
        select(ProjectNamespace.id).where(ProjectNamespace.cluster_id == cluster_id).limit(1)
    )
    addons = (
        await session.scalars(select(ClusterAddon).where(ClusterAddon.cluster_id == cluster_id))
    ).all()
    if not force and any(addon.status in ADDON_BUSY for addon in addons):
        raise ConflictError(
            "An add-on operation is under way on this cluster: wait for it to finish, or delete "
            "with force=true to leave the cluster as it is.",
            code="addon_operation_in_progress",
        )
    if force or (created_in_cluster is None and not any(a.holds_a_release for a in addons)):
        await session.delete(cluster)
        return False
    cluster.status = ClusterStatus.deleting
    cluster.error_code = None
    cluster.settled()
    enqueue_after_commit(session, actor_named("delete_cluster"), cluster.id)
    return True
