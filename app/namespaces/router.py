"""HTTP routes for project namespaces on a cluster, and the cluster for an environment."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, status

from app.auth.dependencies import PrincipalDep, SessionDep
from app.auth.models import Role
from app.clusters import service as clusters_service
from app.clusters.schemas import ClusterRead
from app.core.pagination import Page, PageParams, make_page, page_params
from app.core.validation import EnvironmentName
from app.namespaces import repository, service
from app.namespaces.schemas import Kubeconfig, NamespaceCreate, NamespaceRead

router = APIRouter(
    prefix="/api/v1/projects/{project_id}/clusters/{cluster_id}/namespaces", tags=["namespaces"]
)
environments_router = APIRouter(prefix="/api/v1/projects/{project_id}", tags=["namespaces"])


@router.post("", status_code=status.HTTP_202_ACCEPTED, operation_id="create_namespace")
async def create_namespace(
    project_id: int,
    cluster_id: int,
    data: NamespaceCreate,
    session: SessionDep,
    principal: PrincipalDep,
) -> NamespaceRead:
    """Create the project's namespace for an environment (maintainer): a worker creates the
    namespace, service account, token Secret and RoleBinding. For an existing one, it repairs
    them. Watch `status` (provisioning, ready, failed with an error code)."""
    row = await service.create_or_repair(session, principal, project_id, cluster_id, data)
    return NamespaceRead.of(row)


@router.get("", operation_id="list_namespaces")
async def list_namespaces(
    project_id: int,
    cluster_id: int,
    session: SessionDep,
    principal: PrincipalDep,
    params: Annotated[PageParams, Depends(page_params)],
) -> Page[NamespaceRead]:
    await clusters_service.get(session, principal, project_id, cluster_id, Role.reporter)
    rows, cursor = make_page(
        await repository.list_page(session, project_id, cluster_id, params), params
    )
    return Page(items=[NamespaceRead.of(r) for r in rows], next_cursor=cursor)


@router.get("/{namespace_id}", operation_id="get_namespace")
async def get_namespace(
    project_id: int,
    cluster_id: int,
    namespace_id: int,
    session: SessionDep,
    principal: PrincipalDep,
) -> NamespaceRead:
    _, row = await service.get(
        session, principal, project_id, cluster_id, namespace_id, Role.reporter
    )
    return NamespaceRead.of(row)


@router.delete(
    "/{namespace_id}", status_code=status.HTTP_202_ACCEPTED, operation_id="delete_namespace"
)
async def delete_namespace(
    project_id: int,
    cluster_id: int,
    namespace_id: int,
    session: SessionDep,
    principal: PrincipalDep,
) -> NamespaceRead:
    """Delete the namespace from the cluster (only if clusterport owns it), then the record."""
    row = await service.delete(session, principal, project_id, cluster_id, namespace_id)
    return NamespaceRead.of(row)


@router.get("/{namespace_id}/kubeconfig", operation_id="get_namespace_kubeconfig")
async def get_namespace_kubeconfig(
    project_id: int,
    cluster_id: int,
    namespace_id: int,
    session: SessionDep,
    principal: PrincipalDep,
) -> Kubeconfig:
    """A kubeconfig for the namespace's service account (maintainer). It holds a token: keep
    it secret. Every download is audited."""
    return await service.kubeconfig(session, principal, project_id, cluster_id, namespace_id)


@environments_router.get("/cluster-for-environment", operation_id="get_cluster_for_environment")
async def get_cluster_for_environment(
    project_id: int,
    environment: Annotated[EnvironmentName, Query(description="e.g. `review/app-1`.")],
    session: SessionDep,
    principal: PrincipalDep,
) -> ClusterRead:
    """The enabled cluster whose environment scope matches most specifically
    (`review/app-1` before `review/*` before `*`)."""
    cluster = await service.cluster_for_environment(session, principal, project_id, environment)
    return await clusters_service.describe(session, cluster)
