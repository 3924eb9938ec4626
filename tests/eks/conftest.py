"""Fixtures for the EKS provider tests: moto, the EKS front, the stand-in template, settings."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from app.aws.settings import get_aws_settings
from app.core.db import get_engine, session_scope
from app.providers.aws.models import EksProvider
from app.providers.aws.settings import get_eks_settings
from tests.eks.eks_front import EksFront, running_eks_front
from tests.support.kubeapi import KubeCluster, unique_name
from tests.support.moto_server import MotoServer, moto, moto_server

__all__ = ["moto", "moto_server"]

ROLE_ARN = "arn:aws:iam::111122223333:role/clusterport-provisioning"
SERVICE_ROLE_ARN = "arn:aws:iam::111122223333:role/eks-service"
STAND_IN_TEMPLATE = Path(__file__).parent / "templates" / "stand_in_cluster.yaml"
# Fast cadence for tests; each test still waits on state, never on time.
FAST_SETTINGS = {
    "CLUSTERPORT_EKS_POLL_INITIAL_DELAY_SECONDS": "0.2",
    "CLUSTERPORT_EKS_POLL_INTERVAL_SECONDS": "0.2",
    "CLUSTERPORT_EKS_RETRY_DELAY_SECONDS": "0.5",
    "CLUSTERPORT_EKS_STALL_AFTER_SECONDS": "1",
    "CLUSTERPORT_EKS_RECONCILE_INTERVAL_SECONDS": "1",
}


def eks_body(name: str, **aws: Any) -> dict[str, Any]:
    """A valid create request for an EKS cluster; keyword arguments override `aws` fields."""
    return {
        "name": name,
        "provider": "aws",
        "aws": {
            "role_arn": ROLE_ARN,
            "region": "eu-west-1",
            "kubernetes_version": "1.33",
            "node_count": 2,
            "instance_type": "t3.medium",
            "key_name": "ops",
            "vpc_id": "vpc-0123456789abcdef0",
            "subnet_ids": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"],
            "security_group_id": "sg-0123456789abcdef0",
            "service_role_arn": SERVICE_ROLE_ARN,
            **aws,
        },
    }


def write_stand_in_template(path: Path, front: EksFront) -> Path:
    """The stand-in template with outputs naming the EKS front on loopback and its CA."""
    path.write_text(
        STAND_IN_TEMPLATE.read_text()
        .replace("__ENDPOINT__", front.url)
        .replace("__CA_DATA__", front.ca_data)
    )
    return path


@pytest.fixture
def eks_name() -> str:
    """The cluster's name for one test (also the EKS cluster name the token is bound to)."""
    return unique_name("eks")


@pytest.fixture
def eks_front(kube_cluster: KubeCluster, eks_name: str) -> Iterator[EksFront]:
    """The EKS front for this test's cluster name, with the provisioning role as admin."""
    with running_eks_front(
        upstream_url=kube_cluster.url,
        upstream_ca_pem=kube_cluster.ca_pem,
        upstream_token=kube_cluster.token,
        cluster_name=eks_name,
    ) as front:
        front.admin_role_arns.add(ROLE_ARN)
        yield front


@pytest.fixture
def eks_env(
    moto: MotoServer,
    eks_front: EksFront,
    tmp_path: Path,
    allow_local_network: None,
    kube_cluster: KubeCluster,
) -> Iterator[dict[str, str]]:
    """Settings for a provisioning run against moto and the EKS front; yields the env it set."""
    template = write_stand_in_template(tmp_path / "stand_in.yaml", eks_front)
    env = {**FAST_SETTINGS, "CLUSTERPORT_EKS_TEMPLATE_PATH": str(template)}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        get_eks_settings.cache_clear()
        get_aws_settings.cache_clear()
        try:
            yield env
        finally:
            get_eks_settings.cache_clear()
            get_aws_settings.cache_clear()
            # What the configure step made in the shared test cluster.
            kube_cluster.kubectl(
                "delete",
                "-n",
                "kube-system",
                "configmap/aws-auth",
                "serviceaccount/clusterport",
                "secret/clusterport-token",
                "--ignore-not-found",
            )
            kube_cluster.kubectl(
                "delete", "clusterrolebinding/clusterport-admin", "--ignore-not-found"
            )


async def wait_until(check: Callable[[], Awaitable[bool]], *, seconds: float = 90) -> None:
    """Poll `check` until it holds; fail after a deadline (generous: CI machines are slow)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not await check():
        if loop.time() > deadline:
            raise AssertionError("condition not reached before the deadline")
        await asyncio.sleep(0.1)


def raw_credentials(cluster_id: int) -> tuple[Any, ...]:
    """The credential columns as stored, read past the ORM."""
    with get_engine().connect() as connection:
        row = connection.execute(
            text(
                "SELECT access_key_id, secret_access_key, session_token, credentials_expire_at "
                "FROM eks_providers WHERE cluster_id = :id"
            ),
            {"id": cluster_id},
        ).one()
    return tuple(row)


def provider_of(cluster_id: int) -> EksProvider:
    with session_scope() as session:
        provider = session.execute(
            select(EksProvider).where(EksProvider.cluster_id == cluster_id)
        ).scalar_one()
        session.expunge(provider)
    return provider
