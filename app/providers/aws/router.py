"""HTTP routes for EKS clusters: create one, follow its provisioning, read the external ID."""

from __future__ import annotations

from fastapi import APIRouter, status

from app.auth.dependencies import PrincipalDep, SessionDep
from app.auth.models import Role
from app.providers.aws import service
from app.providers.aws.schemas import EksClusterCreate, EksProvisioningRead, ExternalIdRead

router = APIRouter(prefix="/api/v1", tags=["eks"])


@router.post(
    "/projects/{project_id}/clusters/eks",
    status_code=status.HTTP_201_CREATED,
    operation_id="create_eks_cluster",
)
async def create_eks_cluster(
    project_id: int, data: EksClusterCreate, session: SessionDep, principal: PrincipalDep
) -> EksProvisioningRead:
    """Create an EKS cluster in the customer's AWS account (maintainer); provisioning is queued."""
    cluster, provider = await service.create(session, principal, project_id, data)
    return EksProvisioningRead.of(cluster, provider, show_external_id=True)


@router.get("/clusters/{cluster_id}/provisioning", operation_id="get_cluster_provisioning")
async def get_cluster_provisioning(
    cluster_id: int, session: SessionDep, principal: PrincipalDep
) -> EksProvisioningRead:
    """Status, current step, timestamps and elapsed time of an EKS cluster's provisioning."""
    cluster, provider = await service.provisioning(session, principal, cluster_id)
    shown = principal.has_project_role(cluster.project_id, Role.maintainer)
    return EksProvisioningRead.of(cluster, provider, show_external_id=shown)


@router.get("/projects/{project_id}/eks/external-id", operation_id="get_eks_external_id")
async def get_eks_external_id(
    project_id: int, session: SessionDep, principal: PrincipalDep
) -> ExternalIdRead:
    """The external ID this project's provisioning roles must require (maintainer)."""
    external_id = await service.project_external_id(session, principal, project_id)
    return ExternalIdRead(project_id=project_id, external_id=external_id)
