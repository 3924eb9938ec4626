"""EKS provisioning end to end: API -> RabbitMQ -> worker -> moto (STS, CloudFormation) -> the
real kube-apiserver behind the EKS front (tests/eks/eks_front.py).

moto cannot create an EKS cluster from a template, so the stack is made from the stand-in
template (tests/eks/templates/stand_in_cluster.yaml): moto creates its IAM node role, and its
outputs name the EKS front on loopback and the front's CA. The configure step authenticates
with a real EKS token that the front verifies (signature, expiry, cluster name) against the
sessions moto's STS issued.
"""

from __future__ import annotations

import base64
from typing import Any

import yaml
from sqlalchemy import text

from app.core.db import get_engine
from tests.conftest import Api
from tests.eks.conftest import ROLE_ARN, eks_body, provider_of, raw_credentials, wait_until
from tests.eks.eks_front import EksFront
from tests.support.kubeapi import KubeCluster
from tests.support.moto_server import MotoServer, assumed_roles


async def test_eks_cluster_is_provisioned_and_connected(
    admin: Api,
    worker: Any,
    eks_env: dict[str, str],
    eks_front: EksFront,
    eks_name: str,
    moto: MotoServer,
    kube_cluster: KubeCluster,
) -> None:
    project = await admin.create_project()
    created = await admin.post(f"/api/v1/projects/{project['id']}/clusters/eks", eks_body(eks_name))
    assert created.status_code == 201, created.text
    body = created.json()
    cluster_id = body["cluster_id"]
    assert body["status"] == "provisioning"
    assert body["step"] == "assume_role"
    assert body["external_id"].startswith("clusterport-")

    async def finished() -> bool:
        response = await admin.get(f"/api/v1/clusters/{cluster_id}/provisioning")
        return bool(response.json()["step"] in ("done", "failed"))

    await wait_until(finished)

    view = (await admin.get(f"/api/v1/clusters/{cluster_id}/provisioning")).json()
    assert (view["status"], view["step"], view["error"]) == ("connected", "done", None)
    assert view["stack_name"] == f"clusterport-cluster-{cluster_id}"
    assert view["stack_status"] == "CREATE_COMPLETE"
    assert view["has_credentials"] is False
    assert view["finished_at"] is not None
    assert view["elapsed_seconds"] > 0
    assert raw_credentials(cluster_id) == (None, None, None, None)

    # AssumeRole used the project's external ID and a session name naming the cluster.
    sessions = [r for r in assumed_roles() if r.session_name == f"clusterport-cluster-{cluster_id}"]
    assert sessions
    assert {(r.role_arn, r.external_id) for r in sessions} == {(ROLE_ARN, view["external_id"])}
    # One stack, and the front let the assumed role in with an EKS token.
    assert moto.stack_names() == [f"clusterport-cluster-{cluster_id}"]
    assert eks_front.authenticated
    assert set(eks_front.authenticated) <= {r.arn for r in sessions}

    cluster = (await admin.get(f"/api/v1/projects/{project['id']}/clusters/{cluster_id}")).json()
    assert cluster["status"] == "connected"
    assert cluster["provider_type"] == "aws"
    assert cluster["kubernetes"]["api_url"] == eks_front.url
    assert cluster["kubernetes_version"].startswith("v1.")

    # The node instance role from the stack outputs is mapped in aws-auth.
    assert provider_of(cluster_id).stack_id is not None
    config_map = kube_cluster.kubectl_json("get", "configmap", "aws-auth", "-n", "kube-system")
    roles = yaml.safe_load(config_map["data"]["mapRoles"])
    assert len(roles) == 1
    assert roles[0]["rolearn"].startswith("arn:aws:iam::111122223333:role/")
    assert roles[0]["groups"] == ["system:bootstrappers", "system:nodes"]

    # clusterport's own service account token is stored encrypted and works on the cluster.
    with get_engine().connect() as connection:
        stored = connection.execute(
            text("SELECT token FROM kubernetes_platforms WHERE cluster_id = :id"),
            {"id": cluster_id},
        ).scalar_one()
    secret = kube_cluster.kubectl_json("get", "secret", "clusterport-token", "-n", "kube-system")
    sa_token = base64.b64decode(secret["data"]["token"]).decode()
    assert sa_token not in stored
    whoami = kube_cluster.kubectl("auth", "whoami", "--token", sa_token, "-o", "json")
    assert "system:serviceaccount:kube-system:clusterport" in whoami.stdout
    can = kube_cluster.kubectl("auth", "can-i", "create", "namespaces", "--token", sa_token)
    assert can.stdout.strip() == "yes"
