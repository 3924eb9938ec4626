"""HTTP route for cached cluster state (pods, deployments, services, namespaces)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status
from fastapi.responses import JSONResponse

from app.auth.dependencies import PrincipalDep, SessionDep
from app.cluster_state import service
from app.cluster_state.schemas import RefreshPending, ResourceKind, ResourceList
from app.core.validation import DNSLabel

router = APIRouter(
    prefix="/api/v1/projects/{project_id}/clusters/{cluster_id}", tags=["cluster state"]
)


@router.get(
    "/resources",
    operation_id="list_cluster_resources",
    response_model=ResourceList,
    responses={
        status.HTTP_202_ACCEPTED: {
            "model": RefreshPending,
            "description": "No fresh copy yet: a refresh is queued; ask again after Retry-After.",
        }
    },
)
async def list_cluster_resources(
    project_id: int,
    cluster_id: int,
    kind: ResourceKind,
    session: SessionDep,
    principal: PrincipalDep,
    namespace: Annotated[
        DNSLabel | None, Query(description="Only this namespace (ignored for namespaces).")
    ] = None,
) -> ResourceList | JSONResponse:
    """Objects of one kind as last read from the cluster (`read_at` says when). Requests never
    reach the cluster: a missing or stale list is refreshed by a worker (202 meanwhile)."""
    result = await service.read(session, principal, project_id, cluster_id, kind, namespace)
    if isinstance(result, RefreshPending):
        return JSONResponse(
            result.model_dump(),
            status_code=status.HTTP_202_ACCEPTED,
            headers={"Retry-After": str(result.retry_after)},
        )
    return result
