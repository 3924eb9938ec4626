"""The configure step against the real kube-apiserver (behind the EKS front): what it keeps of
an existing aws-auth ConfigMap, and how it fails when the cluster says no."""

from __future__ import annotations

import asyncio
import json

import yaml

from tests.conftest import Api
from tests.eks.conftest import eks_body, provider_of, raw_credentials, wait_until
from tests.eks.eks_front import EksFront
from tests.support.kubeapi import KubeCluster
from tests.support.moto_server import MotoServer
from workers.eks import eks_provision

OTHER_ROLE = {
    "rolearn": "arn:aws:iam::111122223333:role/ops-admins",
    "username": "ops:{{SessionName}}",
    "groups": ["system:masters"],
}


async def _run_to_the_end(admin: Api, name: str) -> int:
    project = await admin.create_project()
    response = await admin.post(f"/api/v1/projects/{project['id']}/clusters/eks", eks_body(name))
    assert response.status_code == 201, response.text
    cluster_id: int = response.json()["cluster_id"]

    async def one_step_then_finished() -> bool:
        # assume_role, create_stack, poll_stack, configure (again while the token controller
        # has not filled the token Secret yet)
        provider = provider_of(cluster_id)
        if provider.step not in ("done", "failed"):
            # On a thread, as in a worker: the Kubernetes client refuses the event loop's.
            await asyncio.to_thread(eks_provision, provider.id, provider.run_seq)
        return provider_of(cluster_id).step in ("done", "failed")

    await wait_until(one_step_then_finished)
    return cluster_id


def _apply_aws_auth(kube_cluster: KubeCluster, data: dict[str, str]) -> None:
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "aws-auth", "namespace": "kube-system"},
        "data": data,
    }
    kube_cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))


async def test_existing_aws_auth_mappings_are_kept(
    admin: Api,
    eks_env: dict[str, str],
    eks_front: EksFront,
    eks_name: str,
    moto: MotoServer,
    kube_cluster: KubeCluster,
) -> None:
    map_users = "- userarn: arn:aws:iam::111122223333:user/alice\n  username: alice\n"
    _apply_aws_auth(kube_cluster, {"mapRoles": yaml.safe_dump([OTHER_ROLE]), "mapUsers": map_users})

    cluster_id = await _run_to_the_end(admin, eks_name)

    assert provider_of(cluster_id).step == "done"
    data = kube_cluster.kubectl_json("get", "configmap", "aws-auth", "-n", "kube-system")["data"]
    roles = yaml.safe_load(data["mapRoles"])
    assert roles[0] == OTHER_ROLE
    assert len(roles) == 2
    assert roles[1]["groups"] == ["system:bootstrappers", "system:nodes"]
    assert data["mapUsers"] == map_users


async def test_malformed_aws_auth_is_not_overwritten(
    admin: Api,
    eks_env: dict[str, str],
    eks_front: EksFront,
    eks_name: str,
    moto: MotoServer,
    kube_cluster: KubeCluster,
) -> None:
    _apply_aws_auth(kube_cluster, {"mapRoles": "rolearn: [not, a, list"})

    cluster_id = await _run_to_the_end(admin, eks_name)

    provider = provider_of(cluster_id)
    assert (provider.step, provider.error_code) == ("failed", "InvalidAwsAuthConfigMap")
    assert raw_credentials(cluster_id) == (None, None, None, None)
    data = kube_cluster.kubectl_json("get", "configmap", "aws-auth", "-n", "kube-system")["data"]
    assert data["mapRoles"] == "rolearn: [not, a, list"


async def test_cluster_refusing_the_role_errors_as_unauthorized(
    admin: Api,
    eks_env: dict[str, str],
    eks_front: EksFront,
    eks_name: str,
    moto: MotoServer,
) -> None:
    # The front authenticates the token but the role has no access to this cluster.
    eks_front.admin_role_arns.clear()

    cluster_id = await _run_to_the_end(admin, eks_name)

    provider = provider_of(cluster_id)
    assert (provider.step, provider.error_code) == ("failed", "unauthorized")
    assert eks_front.rejected >= 1
    assert raw_credentials(cluster_id) == (None, None, None, None)
    view = (await admin.get(f"/api/v1/clusters/{cluster_id}/provisioning")).json()
    assert view["status"] == "errored"
    assert view["error"]["code"] == "unauthorized"
