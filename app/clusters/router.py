"""HTTP routes for a project's clusters."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from app.auth.dependencies import PrincipalDep, SessionDep
from app.auth.models import Role
from app.clusters import repository, service
from app.clusters.schemas import ClusterCreate, ClusterRead, ClusterSummary, ClusterUpdate
from app.core.pagination import Page, PageParams, make_page, page_params

router = APIRouter(prefix="/api/v1/projects/{project_id}/clusters", tags=["clusters"])


@router.post("", status_code=status.HTTP_201_CREATED, operation_id="create_cluster")
async def create_cluster(
    project_id: int, data: ClusterCreate, session: SessionDep, principal: PrincipalDep
) -> ClusterRead:
    """Register an existing cluster (maintainer); a connectivity check is queued."""
    cluster = await service.create(session, principal, project_id, data)
    return await service.describe(session, cluster)


@router.get("", operation_id="list_clusters")
async def list_clusters(
    project_id: int,
    session: SessionDep,
    principal: PrincipalDep,
    params: Annotated[PageParams, Depends(page_params)],
) -> Page[ClusterSummary]:
    principal.require_project(project_id, Role.reporter)
    items, cursor = make_page(await repository.list_page(session, project_id, params), params)
    connected = await service.connected_agents(session, (row.agent_id for row in items))
    return Page(items=ClusterSummary.of_rows(items, connected), next_cursor=cursor)


@router.get("/{cluster_id}", operation_id="get_cluster")
async def get_cluster(
    project_id: int, cluster_id: int, session: SessionDep, principal: PrincipalDep
) -> ClusterRead:
    cluster = await service.get(session, principal, project_id, cluster_id, Role.reporter)
    return await service.describe(session, cluster)


@router.patch("/{cluster_id}", operation_id="update_cluster")
async def update_cluster(
    project_id: int,
    cluster_id: int,
    data: ClusterUpdate,
    session: SessionDep,
    principal: PrincipalDep,
) -> ClusterRead:
    """Change a cluster (maintainer); connection changes queue a new check."""
    cluster = await service.update(session, principal, project_id, cluster_id, data)
    return await service.describe(session, cluster)


@router.post(
    "/{cluster_id}/check", status_code=status.HTTP_202_ACCEPTED, operation_id="check_cluster"
)
async def check_cluster(
    project_id: int, cluster_id: int, session: SessionDep, principal: PrincipalDep
) -> ClusterRead:
    """Queue a connectivity check (developer)."""
    cluster = await service.request_check(session, principal, project_id, cluster_id)
    return await service.describe(session, cluster)


@router.delete(
    "/{cluster_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="delete_cluster",
    responses={
        202: {
            "description": "Uninstalling add-ons and deleting what clusterport created in the "
            "cluster, then the record."
        }
    },
)
async def delete_cluster(
    project_id: int,
    cluster_id: int,
    session: SessionDep,
    principal: PrincipalDep,
    force: Annotated[
        bool, Query(description="Remove the record without cleaning up the cluster.")
    ] = False,
) -> Response:
    """Remove a cluster (maintainer): at once (204), or after its add-ons are uninstalled and its
    namespaces deleted (202); 409 `addon_operation_in_progress` while an add-on operation runs."""
    deferred = await service.delete(session, principal, project_id, cluster_id, force=force)
    code = status.HTTP_202_ACCEPTED if deferred else status.HTTP_204_NO_CONTENT
    return Response(status_code=code)


# Instance-level clusters: registered and changed by admins, usable by every project (and
# shown, read-only, in every project's list). Same rules and bodies as a project's clusters.
instance_router = APIRouter(prefix="/api/v1/clusters", tags=["clusters"])


@instance_router.post(
    "", status_code=status.HTTP_201_CREATED, operation_id="create_instance_cluster"
)
async def create_instance_cluster(
    data: ClusterCreate, session: SessionDep, principal: PrincipalDep
) -> ClusterRead:
    """Register an instance-level cluster (admin), direct or through an instance-level agent."""
    cluster = await service.create(session, principal, None, data)
    return await service.describe(session, cluster)


@instance_router.get("", operation_id="list_instance_clusters")
async def list_instance_clusters(
    session: SessionDep,
    principal: PrincipalDep,
    params: Annotated[PageParams, Depends(page_params)],
) -> Page[ClusterSummary]:
    principal.require_admin()
    items, cursor = make_page(await repository.list_page(session, None, params), params)
    connected = await service.connected_agents(session, (row.agent_id for row in items))
    return Page(items=ClusterSummary.of_rows(items, connected), next_cursor=cursor)


@instance_router.patch("/{cluster_id}", operation_id="update_instance_cluster")
async def update_instance_cluster(
    cluster_id: int, data: ClusterUpdate, session: SessionDep, principal: PrincipalDep
) -> ClusterRead:
    cluster = await service.update(session, principal, None, cluster_id, data)
    return await service.describe(session, cluster)


@instance_router.post(
    "/{cluster_id}/check",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="check_instance_cluster",
)
async def check_instance_cluster(
    cluster_id: int, session: SessionDep, principal: PrincipalDep
) -> ClusterRead:
    cluster = await service.request_check(session, principal, None, cluster_id)
    return await service.describe(session, cluster)


@instance_router.delete(
    "/{cluster_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="delete_instance_cluster",
    responses={202: {"description": "Deleting what clusterport created in it, then the record."}},
)
async def delete_instance_cluster(
    cluster_id: int,
    session: SessionDep,
    principal: PrincipalDep,
    force: Annotated[
        bool, Query(description="Remove the record without cleaning up the cluster.")
    ] = False,
) -> Response:
    deferred = await service.delete(session, principal, None, cluster_id, force=force)
    return Response(status_code=status.HTTP_202_ACCEPTED if deferred else 204)
