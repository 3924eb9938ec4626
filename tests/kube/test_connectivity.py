"""Connectivity checks through the API and a worker on RabbitMQ, against a real apiserver."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from tests.conftest import Api
from tests.kube.helpers import Project, Reach, limited_token, wait_for
from tests.support.kubeapi import K8S_VERSION, KubeCluster, unique_name

pytestmark = pytest.mark.usefixtures("allow_local_network", "worker")


async def test_connected_with_version(admin: Api, kube_cluster: KubeCluster, reach: Reach) -> None:
    project = await Project.create(admin, reach)
    cluster = await project.connected_cluster(kube_cluster)
    assert cluster["error"] is None
    assert cluster["connection"] == reach.kind
    if reach.via_agent:
        assert cluster["kubernetes"] is None
        assert cluster["agent"] == {"id": next(iter(reach.agents)), "connected": True}
    else:
        assert cluster["agent"] is None
    assert cluster["last_checked_at"] is not None
    if kube_cluster.source == "local":
        assert cluster["kubernetes_version"] == K8S_VERSION
    else:
        assert cluster["kubernetes_version"].startswith("v1.")


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"https://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("bad_token", "unauthorized", "unauthorized"),
        ("wrong_ca", "unreachable", "tls_error"),
        ("closed_port", "unreachable", "unreachable"),
        ("no_rbac", "forbidden", "forbidden"),
    ],
)
async def test_failures_end_in_status_with_code(
    admin: Api, kube_cluster: KubeCluster, test_ca_pem: str, case: str, status: str, code: str
) -> None:
    project = await Project.create(admin)
    options: dict[str, Any] = {
        "bad_token": {"token": "expired-or-revoked"},
        "wrong_ca": {"ca_pem": test_ca_pem},
        "closed_port": {"url": _closed_port_url()},
        "no_rbac": {"token": limited_token(kube_cluster)},
    }[case]
    created = await project.add_cluster(kube_cluster, **options)
    cluster = await project.checked_cluster(created["id"])
    assert cluster["status"] == status
    assert cluster["error"]["code"] == code
    assert cluster["error"]["message"]  # our fixed text
    if case == "no_rbac":
        # The token authenticates (the version is read) but may not manage the cluster.
        assert cluster["kubernetes_version"] is not None


async def test_revoked_token_then_fixed_on_demand(admin: Api, kube_cluster: KubeCluster) -> None:
    project = await Project.create(admin)
    sa_name = unique_name("revoked")
    token = limited_token(kube_cluster, "get,list:namespaces", name=sa_name)
    cluster = await project.connected_cluster(kube_cluster, token=token)
    base = f"{project.base}/clusters/{cluster['id']}"

    # Revoke the token: delete its service account, and wait until the apiserver (which caches
    # successful authentications for a few seconds) refuses it, then ask for a check.
    kube_cluster.kubectl("delete", "serviceaccount", sa_name, "-n", "default")
    await wait_for(
        lambda: asyncio.to_thread(
            kube_cluster.kubectl, "auth", "whoami", "--token", token, check=False
        ),
        lambda proc: proc.returncode != 0,
        "the apiserver to refuse the revoked token",
    )
    checked = await admin.post(f"{base}/check")
    assert checked.status_code == 202
    # The answer shows the check under way, not the previous result.
    assert (checked.json()["status"], checked.json()["error"]) == ("connecting", None)
    cluster = await wait_for(
        lambda: project.cluster(cluster["id"]),
        lambda c: c["status"] not in ("connected", "connecting"),
        "recheck",
    )
    assert (cluster["status"], cluster["error"]["code"]) == ("unauthorized", "unauthorized")

    # A new token through PATCH queues a new check on its own.
    patched = await admin.patch(base, {"kubernetes": {"token": kube_cluster.token}})
    assert patched.status_code == 200
    cluster = await wait_for(
        lambda: project.cluster(cluster["id"]), lambda c: c["status"] == "connected", "recheck"
    )
    assert cluster["error"] is None


async def test_ssrf_checked_again_at_connect_time(
    admin: Api, kube_cluster: KubeCluster, settings: Any
) -> None:
    project = await Project.create(admin)
    cluster = await project.connected_cluster(kube_cluster)
    # The operator turns local networks off: the worker refuses to dial the stored URL.
    settings.allow_local_network = False
    assert (await admin.post(f"{project.base}/clusters/{cluster['id']}/check")).status_code == 202
    cluster = await wait_for(
        lambda: project.cluster(cluster["id"]),
        lambda c: c["status"] not in ("connected", "connecting"),
        "recheck",
    )
    assert (cluster["status"], cluster["error"]["code"]) == ("unreachable", "unsafe_url")
