"""Queries for EKS provider records and project external IDs."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.clusters.models import Cluster
from app.providers.aws.models import AwsExternalId, EksProvider


async def get_with_cluster(
    session: AsyncSession, cluster_id: int
) -> tuple[Cluster, EksProvider] | None:
    query = (
        select(Cluster, EksProvider)
        .join(EksProvider, EksProvider.cluster_id == Cluster.id)
        .where(Cluster.id == cluster_id)
    )
    row = (await session.execute(query)).unique().one_or_none()
    return (row[0], row[1]) if row is not None else None


async def external_id(session: AsyncSession, project_id: int) -> AwsExternalId | None:
    return await session.get(AwsExternalId, project_id)
