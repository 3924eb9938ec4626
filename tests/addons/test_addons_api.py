"""Add-ons end to end: API, RabbitMQ, worker, kube-apiserver (+ scheduler and kwok for pods),
the install pod's exact command run for real with helm, and kubectl to check the cluster."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from app.addons.helm import NAMESPACE
from tests.addons.conftest import DemoCatalogue, run_install_pod_command
from tests.conftest import Api
from tests.kube.helpers import Project, wait_for
from tests.support.kubeapi import KubeCluster

pytestmark = pytest.mark.usefixtures("allow_local_network", "worker")

BUSY = {"scheduled", "installing", "updating", "uninstalling"}


async def _addon(api: Api, base: str, name: str) -> dict[str, Any]:
    response = await api.get(f"{base}/{name}")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


async def _settled(api: Api, base: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = await wait_for(
        lambda: _addon(api, base, name), lambda a: a["status"] not in BUSY, "the add-on worker"
    )
    return result


async def _job(kube_cluster: KubeCluster, name: str) -> dict[str, Any]:
    async def fetch() -> dict[str, Any] | None:
        got = kube_cluster.kubectl("get", "job", name, "-n", NAMESPACE, "-o", "json", check=False)
        if got.returncode != 0:
            return None
        import json

        found: dict[str, Any] = json.loads(got.stdout)
        return found

    job: dict[str, Any] = await wait_for(fetch, lambda j: j is not None, f"job {name}")
    return job


def _error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    return error


async def test_bad_input_is_refused_with_a_code(
    admin: Api, kube_cluster: KubeCluster, test_catalogue: DemoCatalogue
) -> None:
    name = test_catalogue.add()
    project = await Project.create(admin)
    cluster = await project.connected_cluster(kube_cluster)
    base = f"{project.base}/clusters/{cluster['id']}/addons"

    _error(await admin.request("PUT", f"{base}/no-such-addon", json={}), 404, "unknown_addon")
    _error(await admin.get(f"{base}/no-such-addon"), 404, "unknown_addon")

    secret = "do-not-echo-this-secret-value"
    error = _error(
        await admin.request(
            "PUT", f"{base}/{name}", json={"values": {"replicas": secret, "typo": 1}}
        ),
        422,
        "invalid_values",
    )
    assert {d["field"] for d in error["details"]} == {"replicas", "(values)"}
    assert secret not in str(error)
    # Nothing was recorded or started.
    assert (await _addon(admin, base, name))["status"] == "installable"
    assert (
        kube_cluster.kubectl(
            "get", "job", f"install-{name}", "-n", NAMESPACE, check=False
        ).returncode
        != 0
    )

    _error(await admin.delete(f"{base}/{name}"), 409, "addon_not_installed")

    reporter = admin.as_token(await admin.create_project_token(project.id, "reporter"))
    _error(await reporter.request("PUT", f"{base}/{name}", json={}), 403, "forbidden")
    listed = await reporter.get(base)
    assert listed.status_code == 200
    statuses = {a["name"]: a["status"] for a in listed.json()["items"]}
    assert statuses[name] == "installable"
    assert statuses["ingress-nginx"] == "installable"

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"https://127.0.0.1:{s.getsockname()[1]}"
    down = await project.add_cluster(kube_cluster, url=closed, environment_scope="down")
    assert (await project.checked_cluster(down["id"]))["status"] == "unreachable"
    _error(
        await admin.request("PUT", f"{project.base}/clusters/{down['id']}/addons/{name}", json={}),
        409,
        "cluster_unreachable",
    )


async def test_install_pod_that_never_starts_times_out(
    admin: Api, kube_cluster: KubeCluster, test_catalogue: DemoCatalogue, addon_settings: Any
) -> None:
    name = test_catalogue.add()
    addon_settings.start_timeout_seconds = 2.0
    addon_settings.installer_node_selector = {"clusterport.test/nowhere": "true"}
    project = await Project.create(admin)
    cluster = await project.connected_cluster(kube_cluster)
    base = f"{project.base}/clusters/{cluster['id']}/addons"

    response = await admin.request("PUT", f"{base}/{name}", json={"values": {"replicas": 1}})
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "scheduled"
    _error(
        await admin.request("PUT", f"{base}/{name}", json={}), 409, "addon_operation_in_progress"
    )
    _error(await admin.delete(f"{base}/{name}"), 409, "addon_operation_in_progress")

    addon = await _settled(admin, base, name)
    assert addon["status"] == "errored", addon
    assert addon["error"]["code"] in ("install_pod_unschedulable", "install_pod_not_started")
    assert addon["error"]["message"]
    assert addon["job_name"] == f"install-{name}"
    # The Job that could not start was removed (its pods go with it).
    await wait_for(
        lambda: _job_absent(kube_cluster, f"install-{name}"), bool, "the Job to be deleted"
    )
    # What it needed is there: the service account, its binding and the values Secret.
    kube_cluster.kubectl("get", "serviceaccount", f"install-{name}", "-n", NAMESPACE)
    binding = kube_cluster.kubectl_json(
        "get", "clusterrolebinding", f"clusterport-addons:install-{name}"
    )
    assert binding["roleRef"]["name"] == "cluster-admin"
    kube_cluster.kubectl("get", "secret", f"values-{name}", "-n", NAMESPACE)

    # Another attempt may start now.
    addon_settings.installer_node_selector = {}
    again = await admin.request("PUT", f"{base}/{name}", json={})
    assert again.status_code == 202, again.text


async def _job_absent(kube_cluster: KubeCluster, name: str) -> bool:
    got = kube_cluster.kubectl("get", "job", name, "-n", NAMESPACE, check=False)
    return got.returncode != 0


async def test_install_upgrade_uninstall(
    admin: Api,
    kube_cluster: KubeCluster,
    test_catalogue: DemoCatalogue,
    helm_bin: str,
    tmp_path: Path,
) -> None:
    name = test_catalogue.add()
    project = await Project.create(admin)
    cluster = await project.connected_cluster(kube_cluster)
    base = f"{project.base}/clusters/{cluster['id']}/addons"

    response = await admin.request(
        "PUT", f"{base}/{name}", json={"values": {"replicas": 1, "password": "pa55-w0rd-xyz"}}
    )
    assert response.status_code == 202, response.text
    job = await _job(kube_cluster, f"install-{name}")
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == f"install-{name}"

    # What the pod runs, for real, as the Job's service account.
    ran = run_install_pod_command(kube_cluster, helm_bin, f"install-{name}", tmp_path)
    assert ran.returncode == 0, ran.stderr
    deployment = kube_cluster.kubectl_json("get", "deployment", name, "-n", name)
    assert deployment["spec"]["replicas"] == 1
    config = kube_cluster.kubectl_json("get", "configmap", f"{name}-config", "-n", name)
    assert config["data"]["greeting"] == "hello"

    addon = await _settled(admin, base, name)
    assert addon["status"] == "installed", addon
    assert addon["installed_version"] == "0.1.0"

    # Upgrade: new values, same pinned chart.
    response = await admin.request("PUT", f"{base}/{name}", json={"values": {"replicas": 2}})
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "updating"
    await wait_for(
        lambda: _job_of_operation(kube_cluster, f"install-{name}", "upgrade"),
        bool,
        "the upgrade Job",
    )
    ran = run_install_pod_command(kube_cluster, helm_bin, f"install-{name}", tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert kube_cluster.kubectl_json("get", "deployment", name, "-n", name)["spec"]["replicas"] == 2
    addon = await _settled(admin, base, name)
    assert addon["status"] == "installed", addon
    assert addon["operation"] == "upgrade"

    # Uninstall.
    response = await admin.delete(f"{base}/{name}")
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "uninstalling"
    await _job(kube_cluster, f"uninstall-{name}")
    ran = run_install_pod_command(kube_cluster, helm_bin, f"uninstall-{name}", tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert kube_cluster.kubectl("get", "deployment", name, "-n", name, check=False).returncode != 0
    addon = await _settled(admin, base, name)
    assert addon["status"] == "uninstalled", addon
    assert addon["installed_version"] is None
    _error(await admin.delete(f"{base}/{name}"), 409, "addon_not_installed")

    events = (await admin.get(f"{project.base}/audit-events")).json()["items"]
    actions = [e["action"] for e in events if e["target_type"] == "addon"]
    assert actions == ["addon.install", "addon.upgrade", "addon.uninstall"]
    assert "pa55-w0rd-xyz" not in str(events)


async def _job_of_operation(kube_cluster: KubeCluster, name: str, operation: str) -> bool:
    got = kube_cluster.kubectl(
        "get",
        "job",
        name,
        "-n",
        NAMESPACE,
        "-o",
        "jsonpath={.metadata.annotations.clusterport\\.dev/operation}",
        check=False,
    )
    return got.returncode == 0 and got.stdout.startswith(f"{operation}-")
