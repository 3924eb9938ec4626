"""Deleting a cluster cleans up what clusterport created in it; environment scope selection."""

from __future__ import annotations

import pytest

from tests.conftest import Api
from tests.kube.helpers import Project, Reach, wait_for
from tests.support.kubeapi import KubeCluster


@pytest.mark.usefixtures("allow_local_network", "worker")
async def test_delete_cluster_removes_its_namespaces_first(
    admin: Api, kube_cluster: KubeCluster, reach: Reach
) -> None:
    project = await Project.create(admin, reach)
    cluster = await project.connected_cluster(kube_cluster)
    base = f"{project.base}/clusters/{cluster['id']}"
    names = []
    for environment in ("dev", "qa"):
        created = await admin.post(f"{base}/namespaces", {"environment": environment})
        path = f"{base}/namespaces/{created.json()['id']}"
        ns = await wait_for(
            lambda: admin.get(path),  # noqa: B023 (awaited before the loop moves on)
            lambda r: r.json()["status"] != "provisioning",
            "the namespace",
        )
        assert ns.json()["status"] == "ready"
        names.append(ns.json()["namespace"])
    # Someone else's namespace in the same cluster must survive.
    kube_cluster.kubectl("create", "namespace", f"{names[0]}-theirs")

    deleted = await admin.delete(base)
    assert deleted.status_code == 202
    await wait_for(lambda: admin.get(base), lambda r: r.status_code == 404, "cluster removal")

    for name in names:
        assert kube_cluster.namespace_state(name) != "active", f"{name} was left in the cluster"
    assert kube_cluster.namespace_state(f"{names[0]}-theirs") == "active"
    kube_cluster.kubectl("delete", "namespace", f"{names[0]}-theirs", "--wait=false")


@pytest.mark.usefixtures("allow_local_network")
async def test_delete_waits_for_cleanup_unless_forced(
    admin: Api, kube_cluster: KubeCluster
) -> None:
    from app.core.db import session_scope
    from app.namespaces.models import ProjectNamespace

    project = await Project.create(admin)
    cluster = await project.add_cluster(kube_cluster)
    # A namespace record as a worker would have left it (no worker runs in this test).
    with session_scope() as session:
        session.add(
            ProjectNamespace(
                cluster_id=cluster["id"],
                project_id=project.id,
                environment="dev",
                namespace="never-created",
                service_account_name="clusterport-deployer",
                status="ready",
            )
        )
    base = f"{project.base}/clusters/{cluster['id']}"
    assert (await admin.delete(base)).status_code == 202
    assert (await admin.get(base)).json()["status"] == "deleting"
    # Namespace changes are refused while the cluster goes away.
    refused = await admin.post(f"{base}/namespaces", {"environment": "dev2"})
    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "cluster_deleting")
    assert (await admin.delete(base, params={"force": "true"})).status_code == 204
    assert (await admin.get(base)).status_code == 404


@pytest.mark.usefixtures("allow_local_network")
async def test_most_specific_scope_wins(admin: Api, kube_cluster: KubeCluster) -> None:
    project = await Project.create(admin)
    ids = {}
    for scope in ("*", "review/*", "review/app-1"):
        ids[scope] = (await project.add_cluster(kube_cluster, environment_scope=scope))["id"]
    url = f"{project.base}/cluster-for-environment"

    async def chosen(environment: str) -> int:
        response = await admin.get(url, params={"environment": environment})
        assert response.status_code == 200, response.text
        return int(response.json()["id"])

    assert await chosen("review/app-1") == ids["review/app-1"]
    assert await chosen("review/app-2") == ids["review/*"]
    assert await chosen("production") == ids["*"]

    # Without the catch-all, an environment no scope covers has no cluster.
    await admin.delete(f"{project.base}/clusters/{ids['*']}")
    missing = await admin.get(url, params={"environment": "production"})
    assert (missing.status_code, missing.json()["error"]["code"]) == (
        404,
        "no_cluster_for_environment",
    )
    # Disabled clusters are never chosen.
    await admin.patch(f"{project.base}/clusters/{ids['review/app-1']}", {"enabled": False})
    assert await chosen("review/app-1") == ids["review/*"]
    assert (await admin.get(url, params={"environment": "review/*"})).status_code == 422
