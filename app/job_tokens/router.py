"""HTTP routes for CI job credentials."""

from __future__ import annotations

from fastapi import APIRouter, status

from app.auth.dependencies import PrincipalDep, SessionDep
from app.job_tokens import service
from app.job_tokens.schemas import JobTokenCreate, JobTokenCreated

router = APIRouter(prefix="/api/v1/projects/{project_id}/job-tokens", tags=["job tokens"])


@router.post("", status_code=status.HTTP_201_CREATED, operation_id="create_job_token")
async def create_job_token(
    project_id: int, data: JobTokenCreate, session: SessionDep, principal: PrincipalDep
) -> JobTokenCreated:
    """A short-lived credential for a CI job deploying to one environment (developer): a
    kubeconfig with a context per agent whose access list admits the project and environment,
    and the usual `KUBE_*` variables. With `access_as: impersonate` the job acts as
    `clusterport:ci_job:<id>` with the groups `clusterport:project:<project id>` and
    `clusterport:environment:<environment slug>`; the cluster's RBAC decides."""
    return await service.create(session, principal, project_id, data)


@router.delete("/{job_id}", status_code=status.HTTP_204_NO_CONTENT, operation_id="revoke_job_token")
async def revoke_job_token(
    project_id: int, job_id: int, session: SessionDep, principal: PrincipalDep
) -> None:
    """Revoke a job credential (developer); the proxy refuses it within two seconds."""
    await service.revoke(session, principal, project_id, job_id)
