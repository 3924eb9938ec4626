"""Add-ons end to end: API, RabbitMQ, worker, kube-apiserver (+ scheduler and kwok for pods),
the install pod's exact command run for real with helm, and kubectl to check the cluster."""

from __future__ import annotations

import json
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.addons.helm import NAMESPACE
from tests.addons.conftest import DemoCatalogue, helm_env, run_install_pod_command, sse_events
from tests.agents.conftest import processes, tls  # noqa: F401 (fixtures of `reach`)
from tests.conftest import Api
from tests.kube.conftest import reach  # noqa: F401 (direct, and through a real agent)
from tests.kube.helpers import Project, Reach, wait_for
from tests.support.kubeapi import POD_FAILS_LABEL, KubeCluster

# Each test runs helm for real once or more (helm --wait takes seconds on a loaded machine).
pytestmark = [pytest.mark.usefixtures("allow_local_network", "worker"), pytest.mark.timeout(300)]

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
    _error(await reporter.request("PUT", f"{base}/{name}", json={}), 403, "insufficient_role")
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


class Gate:
    """Holds install pods Pending (a node selector no node matches) until the test has run the
    pod's command for real and put its output in the pod log kwok serves; then lets the pod be
    scheduled. kwok then completes it, or fails it when it has POD_FAILS_LABEL."""

    def __init__(self, kube_cluster: KubeCluster, addon_settings: Any) -> None:
        self.kube = kube_cluster
        self.settings = addon_settings
        self.node = kube_cluster.kubectl(
            "get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"
        ).stdout.strip()

    def close(self) -> None:
        self.settings.installer_node_selector = {GATE_LABEL: uuid.uuid4().hex[:12]}

    def open(self) -> None:
        value = self.settings.installer_node_selector[GATE_LABEL]
        self.kube.kubectl("label", "node", self.node, f"{GATE_LABEL}={value}", "--overwrite")

    def remove(self) -> None:
        self.kube.kubectl("label", "node", self.node, f"{GATE_LABEL}-", check=False)


GATE_LABEL = "clusterport.test/addon-gate"


@pytest.fixture
def gate(kube_cluster: KubeCluster, addon_settings: Any) -> Iterator[Gate]:
    if kube_cluster.pod_log is None:
        pytest.fail("this test needs the kwok-backed cluster of scripts/kube-up", pytrace=False)
    g = Gate(kube_cluster, addon_settings)
    yield g
    g.remove()


def _run_and_log(
    kube_cluster: KubeCluster, helm_bin: str, job: str, workdir: Path
) -> subprocess.CompletedProcess[str]:
    """The pod's command, run for real; its output becomes what kwok serves as the pod's log."""
    try:
        ran = run_install_pod_command(kube_cluster, helm_bin, job, workdir)
    except subprocess.TimeoutExpired:
        state = kube_cluster.kubectl("get", "pods,deploy,rs", "-A", "-o", "wide").stdout
        raise AssertionError(f"helm did not finish; the cluster:\n{state}") from None
    for line in (ran.stdout + ran.stderr).splitlines():
        kube_cluster.append_pod_log(line)
    return ran


async def _installed_logs(api: Api, base: str, name: str) -> list[dict[str, str]]:
    response = await api.get(f"{base}/{name}/logs")
    assert response.status_code == 200, response.text
    return sse_events(response.text)


async def test_install_upgrade_uninstall(
    admin: Api,
    kube_cluster: KubeCluster,
    test_catalogue: DemoCatalogue,
    helm_bin: str,
    tmp_path: Path,
    gate: Gate,
    reach: Reach,  # noqa: F811 (the fixture imported above)
) -> None:
    name = test_catalogue.add()
    project = await Project.create(admin, reach)
    cluster = await project.connected_cluster(kube_cluster)
    assert cluster["connection"] == reach.kind
    base = f"{project.base}/clusters/{cluster['id']}/addons"
    password = "pa55-w0rd-xyz"

    gate.close()
    response = await admin.request(
        "PUT", f"{base}/{name}", json={"values": {"replicas": 1, "password": password}}
    )
    assert response.status_code == 202, response.text
    job = await _job(kube_cluster, f"install-{name}")
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == f"install-{name}"
    # The worker records `installing` once the API server answered the Job's creation, which
    # can come a moment after the Job is visible here (through an agent, one hop later).
    await wait_for(
        lambda: _addon(admin, base, name), lambda a: a["status"] == "installing", "installing"
    )

    # What the pod runs, for real, as the Job's service account.
    ran = _run_and_log(kube_cluster, helm_bin, f"install-{name}", tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert password in ran.stdout  # the chart's NOTES print it
    deployment = kube_cluster.kubectl_json("get", "deployment", name, "-n", name)
    assert deployment["spec"]["replicas"] == 1
    config = kube_cluster.kubectl_json("get", "configmap", f"{name}-config", "-n", name)
    assert config["data"]["greeting"] == "hello"
    gate.open()

    addon = await _settled(admin, base, name)
    assert addon["status"] == "installed", addon
    assert addon["installed_version"] == "0.1.0"
    lines = [e["data"] for e in await _installed_logs(admin, base, name) if e["event"] == "log"]
    assert f'{name} is installed; it greets with "hello".' in lines, "\n".join(lines)
    assert "Log in with: [redacted]" in lines
    assert password not in str(lines)

    # The release is there as asked: the check keeps it installed.
    checked = await admin.post(f"{base}/{name}/check")
    assert checked.status_code == 202, checked.text
    addon = await wait_for(
        lambda: _addon(admin, base, name), lambda a: a["health_checked_at"], "the health check"
    )
    assert addon["status"] == "installed", addon

    # Upgrade: new values, same pinned chart.
    gate.close()
    response = await admin.request("PUT", f"{base}/{name}", json={"values": {"replicas": 2}})
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "updating"
    _error(
        await admin.request("PUT", f"{base}/{name}", json={}), 409, "addon_operation_in_progress"
    )
    await wait_for(
        lambda: _job_of_operation(kube_cluster, f"install-{name}", "upgrade"),
        bool,
        "the upgrade Job",
    )
    ran = _run_and_log(kube_cluster, helm_bin, f"install-{name}", tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert kube_cluster.kubectl_json("get", "deployment", name, "-n", name)["spec"]["replicas"] == 2
    gate.open()
    addon = await _settled(admin, base, name)
    assert addon["status"] == "installed", addon
    assert addon["operation"] == "upgrade"

    # Uninstall.
    gate.close()
    response = await admin.delete(f"{base}/{name}")
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "uninstalling"
    await _job(kube_cluster, f"uninstall-{name}")
    ran = _run_and_log(kube_cluster, helm_bin, f"uninstall-{name}", tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert kube_cluster.kubectl("get", "deployment", name, "-n", name, check=False).returncode != 0
    gate.open()
    addon = await _settled(admin, base, name)
    assert addon["status"] == "uninstalled", addon
    assert addon["installed_version"] is None
    _error(await admin.delete(f"{base}/{name}"), 409, "addon_not_installed")
    # What the install needed is cleaned up with it.
    for kind, ns_name in (
        ("serviceaccount", f"install-{name}"),
        ("secret", f"values-{name}"),
    ):
        got = kube_cluster.kubectl("get", kind, ns_name, "-n", NAMESPACE, check=False)
        assert got.returncode != 0, kind
    got = kube_cluster.kubectl(
        "get", "clusterrolebinding", f"clusterport-addons:install-{name}", check=False
    )
    assert got.returncode != 0

    events = (await admin.get(f"{project.base}/audit-events")).json()["items"]
    actions = [e["action"] for e in events if e["target_type"] == "addon"]
    assert actions == ["addon.install", "addon.upgrade", "addon.uninstall"]
    assert password not in str(events)


async def test_deleting_a_cluster_uninstalls_its_addons_first(
    admin: Api,
    kube_cluster: KubeCluster,
    test_catalogue: DemoCatalogue,
    helm_bin: str,
    tmp_path: Path,
    gate: Gate,
) -> None:
    name = test_catalogue.add()
    project = await Project.create(admin)
    cluster = await project.connected_cluster(kube_cluster)
    cluster_url = f"{project.base}/clusters/{cluster['id']}"
    base = f"{cluster_url}/addons"

    gate.close()
    response = await admin.request("PUT", f"{base}/{name}", json={"values": {"replicas": 1}})
    assert response.status_code == 202, response.text
    await _job(kube_cluster, f"install-{name}")
    # An operation under way: the cluster cannot be deleted (unless forced) until it ends.
    _error(await admin.delete(cluster_url), 409, "addon_operation_in_progress")
    assert _run_and_log(kube_cluster, helm_bin, f"install-{name}", tmp_path).returncode == 0
    gate.open()
    assert (await _settled(admin, base, name))["status"] == "installed"

    gate.close()
    deleted = await admin.delete(cluster_url)
    assert deleted.status_code == 202, deleted.text
    assert (await admin.get(cluster_url)).json()["status"] == "deleting"
    _error(await admin.request("PUT", f"{base}/{name}", json={}), 409, "cluster_deleting")
    await _job(kube_cluster, f"uninstall-{name}")
    ran = _run_and_log(kube_cluster, helm_bin, f"uninstall-{name}", tmp_path)
    assert ran.returncode == 0, ran.stderr
    gate.open()

    async def gone() -> bool:
        status: int = (await admin.get(cluster_url)).status_code
        return status == 404

    await wait_for(gone, bool, "the cluster record to go once its add-on is uninstalled")
    assert kube_cluster.kubectl("get", "deployment", name, "-n", name, check=False).returncode != 0
    events = (await admin.get(f"{project.base}/audit-events")).json()["items"]
    actions = [e["action"] for e in events if e["target_type"] in ("addon", "cluster")]
    assert actions.index("addon.install") < actions.index("cluster.delete"), actions


async def test_failing_install_pod_ends_errored_with_code_and_log(
    admin: Api,
    kube_cluster: KubeCluster,
    test_catalogue: DemoCatalogue,
    helm_bin: str,
    tmp_path: Path,
    gate: Gate,
    addon_settings: Any,
) -> None:
    name = test_catalogue.add()
    project = await Project.create(admin)
    cluster = await project.connected_cluster(kube_cluster)
    base = f"{project.base}/clusters/{cluster['id']}/addons"

    gate.close()
    addon_settings.installer_pod_labels = {POD_FAILS_LABEL: "true"}
    response = await admin.request(
        "PUT", f"{base}/{name}", json={"values": {"fail": True, "password": "s3cret-pw"}}
    )
    assert response.status_code == 202, response.text
    await _job(kube_cluster, f"install-{name}")
    ran = _run_and_log(kube_cluster, helm_bin, f"install-{name}", tmp_path)
    assert ran.returncode != 0
    assert "the demo chart was asked to fail" in ran.stderr
    gate.open()

    addon = await _settled(admin, base, name)
    assert addon["status"] == "errored", addon
    lines = [e["data"] for e in await _installed_logs(admin, base, name) if e["event"] == "log"]
    assert addon["error"]["code"] == "chart_render_failed", "\n".join(lines)
    assert addon["error"]["message"] == "The chart's templates failed to render with these values."
    assert any("the demo chart was asked to fail" in line for line in lines), lines
    # Nothing was installed; the failed Job stays for its log until its TTL.
    assert kube_cluster.kubectl("get", "deployment", name, "-n", name, check=False).returncode != 0
    job = kube_cluster.kubectl_json("get", "job", f"install-{name}", "-n", NAMESPACE)
    assert any(c["type"] == "Failed" for c in job["status"]["conditions"])

    # Fixed values install over the failed attempt (its Job is replaced).
    failed_key = _operation_key(kube_cluster, f"install-{name}")
    addon_settings.installer_pod_labels = {}
    gate.close()
    response = await admin.request("PUT", f"{base}/{name}", json={"values": {"fail": False}})
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "scheduled"
    await wait_for(
        lambda: _job_of_operation(kube_cluster, f"install-{name}", "install", failed_key),
        bool,
        "the new install Job",
    )
    ran = _run_and_log(kube_cluster, helm_bin, f"install-{name}", tmp_path)
    assert ran.returncode == 0, ran.stderr
    gate.open()
    addon = await _settled(admin, base, name)
    assert addon["status"] == "installed", addon


async def test_drift_and_health_report_degraded(
    admin: Api,
    kube_cluster: KubeCluster,
    test_catalogue: DemoCatalogue,
    helm_bin: str,
    tmp_path: Path,
    gate: Gate,
) -> None:
    name = test_catalogue.add()
    project = await Project.create(admin)
    cluster = await project.connected_cluster(kube_cluster)
    base = f"{project.base}/clusters/{cluster['id']}/addons"
    gate.close()
    assert (await admin.request("PUT", f"{base}/{name}", json={})).status_code == 202
    await _job(kube_cluster, f"install-{name}")
    assert _run_and_log(kube_cluster, helm_bin, f"install-{name}", tmp_path).returncode == 0
    gate.open()
    assert (await _settled(admin, base, name))["status"] == "installed"

    async def check(expected: str) -> dict[str, Any]:
        before = (await _addon(admin, base, name))["health_checked_at"]
        assert (await admin.post(f"{base}/{name}/check")).status_code == 202
        result: dict[str, Any] = await wait_for(
            lambda: _addon(admin, base, name),
            lambda a: a["health_checked_at"] != before,
            "the health check",
        )
        assert result["status"] == expected, result
        return result

    await check("installed")
    # The release's Deployment is deleted behind clusterport's back.
    kube_cluster.kubectl("delete", "deployment", name, "-n", name)
    degraded = await check("degraded")
    assert degraded["error"]["code"] == "workload_missing"
    # Someone upgrades the release by hand with other values: drift.
    ran = _helm_upgrade_by_hand(kube_cluster, helm_bin, test_catalogue, name, tmp_path)
    assert ran.returncode == 0, ran.stderr
    degraded = await check("degraded")
    assert degraded["error"]["code"] == "values_drift"
    # Installing again puts back what was asked: healthy again.
    gate.close()
    assert (await admin.request("PUT", f"{base}/{name}", json={})).status_code == 202
    await wait_for(
        lambda: _job_of_operation(kube_cluster, f"install-{name}", "upgrade"), bool, "the Job"
    )
    assert _run_and_log(kube_cluster, helm_bin, f"install-{name}", tmp_path).returncode == 0
    gate.open()
    assert (await _settled(admin, base, name))["status"] == "installed"
    await check("installed")


def _helm_upgrade_by_hand(
    kube_cluster: KubeCluster, helm_bin: str, catalogue: DemoCatalogue, name: str, tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    values = tmp_path / "other.yaml"
    values.write_text("replicas: 3\n")
    return subprocess.run(
        [
            *(helm_bin, "upgrade", name, "demo", "--repo", catalogue.repository),
            *("--version", "0.1.0", "-n", name, "-f", str(values)),
        ],
        env=helm_env(tmp_path / "home", kube_cluster.kubeconfig),
        capture_output=True,
        text=True,
        check=False,
    )


def _operation_key(kube_cluster: KubeCluster, name: str) -> str | None:
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
    return got.stdout if got.returncode == 0 else None


async def _job_of_operation(
    kube_cluster: KubeCluster, name: str, operation: str, previous: str | None = None
) -> bool:
    """The Job of that name exists for an operation of that kind, other than `previous`."""
    key = _operation_key(kube_cluster, name)
    return key is not None and key.startswith(f"{operation}-") and key != previous
