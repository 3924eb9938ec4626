"""Project namespaces end to end: API, RabbitMQ, worker, kube-apiserver, checked with kubectl."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from app.namespaces.naming import ROLE_BINDING, SERVICE_ACCOUNT, TOKEN_SECRET, namespace_name
from tests.conftest import Api
from tests.kube.helpers import Project, Reach, limited_token, wait_for
from tests.support.kubeapi import KubeCluster

pytestmark = pytest.mark.usefixtures("allow_local_network", "worker")


async def _namespace(api: Api, path: str) -> dict[str, Any]:
    response = await api.get(path)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


async def _settled(api: Api, path: str) -> dict[str, Any]:
    result: dict[str, Any] = await wait_for(
        lambda: _namespace(api, path),
        lambda ns: ns["status"] != "provisioning",
        "the namespace worker",
    )
    return result


async def test_lifecycle(
    admin: Api, kube_cluster: KubeCluster, tmp_path: Path, reach: Reach
) -> None:
    project = await Project.create(admin, reach)
    cluster = await project.connected_cluster(kube_cluster)
    base = f"{project.base}/clusters/{cluster['id']}/namespaces"

    created = await admin.post(base, {"environment": "review/app-1"})
    assert created.status_code == 202, created.text
    body = created.json()
    assert body["status"] == "provisioning"
    path = f"{base}/{body['id']}"
    ns = await _settled(admin, path)
    assert ns["status"] == "ready", ns
    name = ns["namespace"]
    assert name == namespace_name(None, project.name, project.id, "review/app-1")

    labels = kube_cluster.kubectl_json("get", "namespace", name)["metadata"]["labels"]
    assert labels["clusterport.io/project-id"] == str(project.id)
    assert labels["clusterport.io/cluster-id"] == str(cluster["id"])
    kube_cluster.kubectl("get", "serviceaccount", SERVICE_ACCOUNT, "-n", name)
    kube_cluster.kubectl("get", "secret", TOKEN_SECRET, "-n", name)
    binding = kube_cluster.kubectl_json("get", "rolebinding", ROLE_BINDING, "-n", name)
    assert binding["roleRef"]["name"] == "admin"

    # The kubeconfig works with kubectl, inside the namespace only.
    response = await admin.get(f"{path}/kubeconfig")
    assert response.status_code == 200, response.text
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(response.text)
    document = json.loads(response.text)
    assert document["contexts"][0]["context"]["namespace"] == name
    # Names carry the project, cluster and namespace, so kubeconfigs merge.
    expected = f"clusterport-{project.id}-{cluster['name']}-{name}"
    assert document["current-context"] == expected
    assert document["users"][0]["name"] == expected
    assert document["clusters"][0]["name"] == f"clusterport-{project.id}-{cluster['name']}"
    as_sa = [kube_cluster.kubectl_path, "--kubeconfig", str(kubeconfig)]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*as_sa, *args], capture_output=True, text=True, timeout=60, check=False
        )

    made = run("create", "configmap", "from-sa", "--from-literal=a=b")
    assert made.returncode == 0, made.stderr
    assert kube_cluster.kubectl_json("get", "configmap", "from-sa", "-n", name)["data"] == {
        "a": "b"
    }
    assert run("get", "secrets", "-n", "kube-system").returncode != 0

    # Drift: remove the binding by hand; asking again repairs it (same record, 202).
    kube_cluster.kubectl("delete", "rolebinding", ROLE_BINDING, "-n", name)
    again = await admin.post(base, {"environment": "review/app-1", "cluster_role": "edit"})
    assert again.status_code == 202
    assert again.json()["id"] == body["id"]
    assert (await _settled(admin, path))["status"] == "ready"
    binding = kube_cluster.kubectl_json("get", "rolebinding", ROLE_BINDING, "-n", name)
    assert binding["roleRef"]["name"] == "edit"

    listed = (await admin.get(base)).json()
    assert [n["id"] for n in listed["items"]] == [body["id"]]

    deleted = await admin.delete(path)
    assert deleted.status_code == 202
    assert deleted.json()["status"] == "deleting"
    await wait_for(
        lambda: admin.get(path), lambda r: r.status_code == 404, "the namespace record to go"
    )
    assert kube_cluster.namespace_state(name) != "active"


async def test_foreign_namespace_is_a_conflict(admin: Api, kube_cluster: KubeCluster) -> None:
    project = await Project.create(admin)
    cluster = await project.connected_cluster(kube_cluster)
    name = namespace_name(None, project.name, project.id, "production")
    kube_cluster.kubectl("create", "namespace", name)
    base = f"{project.base}/clusters/{cluster['id']}/namespaces"

    created = await admin.post(base, {"environment": "production"})
    ns = await _settled(admin, f"{base}/{created.json()['id']}")

    assert ns["status"] == "failed"
    assert ns["error"]["code"] == "conflict"
    labels = kube_cluster.kubectl_json("get", "namespace", name)["metadata"].get("labels", {})
    assert "clusterport.io/project-id" not in labels
    sas = kube_cluster.kubectl_json("get", "serviceaccounts", "-n", name)["items"]
    assert SERVICE_ACCOUNT not in {sa["metadata"]["name"] for sa in sas}
    kubeconfig = await admin.get(f"{base}/{ns['id']}/kubeconfig")
    assert (kubeconfig.status_code, kubeconfig.json()["error"]["code"]) == (
        409,
        "namespace_not_ready",
    )

    # Deleting our record leaves their namespace alone.
    assert (await admin.delete(f"{base}/{ns['id']}")).status_code == 202
    await wait_for(
        lambda: admin.get(f"{base}/{ns['id']}"), lambda r: r.status_code == 404, "record removal"
    )
    assert kube_cluster.namespace_state(name) == "active"


async def test_rbac_failure_halfway_leaves_nothing(
    admin: Api, kube_cluster: KubeCluster, reach: Reach
) -> None:
    project = await Project.create(admin, reach)
    # Enough to pass the check and create namespaces, not to create Secrets or RoleBindings.
    token = limited_token(
        kube_cluster, "get,list,create,patch,delete:namespaces", "get,create,patch:serviceaccounts"
    )
    cluster = await project.connected_cluster(kube_cluster, token=token)
    base = f"{project.base}/clusters/{cluster['id']}/namespaces"

    created = await admin.post(base, {"environment": "staging"})
    ns = await _settled(admin, f"{base}/{created.json()['id']}")

    assert (ns["status"], ns["error"]["code"]) == ("failed", "forbidden")
    assert kube_cluster.namespace_state(ns["namespace"]) != "active"


async def test_bad_input(admin: Api, kube_cluster: KubeCluster) -> None:
    project = await Project.create(admin)
    cluster = await project.add_cluster(kube_cluster, environment_scope="review/*")
    base = f"{project.base}/clusters/{cluster['id']}/namespaces"

    out_of_scope = await admin.post(base, {"environment": "production"})
    assert (out_of_scope.status_code, out_of_scope.json()["error"]["code"]) == (
        422,
        "environment_out_of_scope",
    )
    bad_role = await admin.post(base, {"environment": "review/x", "cluster_role": "Admin Role"})
    assert bad_role.status_code == 422
    wildcard = await admin.post(base, {"environment": "review/*"})
    assert wildcard.status_code == 422
    missing = await admin.get(f"{base}/999999")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "namespace_not_found")

    reporter = admin.as_token(await admin.create_project_token(project.id, "reporter"))
    assert (await reporter.post(base, {"environment": "review/x"})).status_code == 403
    assert (await reporter.get(base)).status_code == 200

    unmanaged = await project.add_cluster(kube_cluster, managed=False, environment_scope="prod")
    refused = await admin.post(
        f"{project.base}/clusters/{unmanaged['id']}/namespaces", {"environment": "prod"}
    )
    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "cluster_not_managed")


async def test_kubeconfig_needs_maintainer(admin: Api, kube_cluster: KubeCluster) -> None:
    project = await Project.create(admin)
    cluster = await project.connected_cluster(kube_cluster)
    base = f"{project.base}/clusters/{cluster['id']}/namespaces"
    created = await admin.post(base, {"environment": "dev"})
    ns = await _settled(admin, f"{base}/{created.json()['id']}")
    assert ns["status"] == "ready"

    developer = admin.as_token(await admin.create_project_token(project.id, "developer"))
    refused = await developer.get(f"{base}/{ns['id']}/kubeconfig")
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "insufficient_role")
    maintainer = admin.as_token(await admin.create_project_token(project.id, "maintainer"))
    assert (await maintainer.get(f"{base}/{ns['id']}/kubeconfig")).status_code == 200
    # The namespace record itself never shows the token.
    shown = await developer.get(f"{base}/{ns['id']}")
    assert "service_account_token" not in shown.json()
