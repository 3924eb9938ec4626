"""Rules for creating EKS clusters and reading their provisioning state (no AWS call here)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import record_audit
from app.auth.models import Role
from app.auth.principal import Principal
from app.clusters.models import Cluster, ClusterStatus, ProviderType
from app.clusters.service import check_unique
from app.core.errors import NotFoundError
from app.core.jobs import actor_named, enqueue_after_commit
from app.projects.service import get_visible
from app.providers.aws import repository
from app.providers.aws.models import AwsExternalId, EksProvider, Step
from app.providers.aws.schemas import EksClusterCreate


async def project_external_id(session: AsyncSession, principal: Principal, project_id: int) -> str:
    """The project's external ID, generated on first use (maintainer: it goes in IAM)."""
    principal.require_project(project_id, Role.maintainer)
    await get_visible(session, principal, project_id)
    return await _external_id(session, project_id)


async def _external_id(session: AsyncSession, project_id: int) -> str:
    existing = await repository.external_id(session, project_id)
    if existing is not None:
        return existing.external_id
    record = AwsExternalId(
        project_id=project_id,
        external_id=f"clusterport-{secrets.token_urlsafe(24)}",
        created_at=datetime.now(UTC),
    )
    session.add(record)
    await session.flush()  # a concurrent first use fails here with 409 instead of a second ID
    return record.external_id


async def create(
    session: AsyncSession, principal: Principal, project_id: int, data: EksClusterCreate
) -> tuple[Cluster, EksProvider]:
    """Record the cluster and its provider, and queue the first provisioning step."""
    principal.require_project(project_id, Role.maintainer)
    await get_visible(session, principal, project_id)
    # The same name and environment scope rules as every other cluster of the project.
    await check_unique(session, project_id, data.name, data.environment_scope, None)
    aws = data.aws
    # Always the project's own: a caller-chosen ID would let one project assume roles that
    # trust another project's ID (the confused deputy the external ID exists to stop).
    external_id = await _external_id(session, project_id)
    cluster = Cluster(
        project_id=project_id,
        name=data.name,
        environment_scope=data.environment_scope,
        managed=data.managed,
        provider_type=ProviderType.aws,
        status=ClusterStatus.provisioning,
    )
    session.add(cluster)
    await session.flush()
    now = datetime.now(UTC)
    provider = EksProvider(
        cluster_id=cluster.id,
        role_arn=aws.role_arn,
        external_id=external_id,
        region=aws.region,
        kubernetes_version=aws.kubernetes_version,
        node_count=aws.node_count,
        instance_type=aws.instance_type,
        key_name=aws.key_name,
        vpc_id=aws.vpc_id,
        subnet_ids=list(aws.subnet_ids),
        security_group_id=aws.security_group_id,
        service_role_arn=aws.service_role_arn,
        eks_cluster_name=data.name,
        step=Step.assume_role,
        run_seq=0,
        next_run_at=now,
        started_at=now,
        step_started_at=now,
    )
    session.add(provider)
    await session.flush()
    record_audit(
        session,
        principal,
        "cluster.create",
        "cluster",
        cluster.id,
        project_id=project_id,
        details={"name": cluster.name, "provider": "aws", "region": aws.region},
    )
    enqueue_after_commit(session, actor_named("eks_provision"), provider.id, provider.run_seq)
    return cluster, provider


async def provisioning(
    session: AsyncSession, principal: Principal, cluster_id: int
) -> tuple[Cluster, EksProvider]:
    """A cluster's provisioning record, for anyone who can see its project."""
    found = await repository.get_with_cluster(session, cluster_id)
    if found is None:
        raise NotFoundError("The cluster does not exist or was not provisioned by clusterport.")
    principal.require_project(found[0].project_id, Role.reporter)
    return found
