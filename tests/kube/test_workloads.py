"""Workloads on the local test cluster: kube-scheduler binds pods to kwok's fake node, and kwok
plays the kubelet (pod states, exec, logs, port-forward). Real kubectl against the real API."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from tests.support.kubeapi import POD_FAILS_LABEL, KubeCluster, unique_name

T = TypeVar("T")
DEADLINE_SECONDS = 60
IMAGE = "registry.invalid/never-pulled:1"  # kwok runs no container; nothing is pulled


@pytest.fixture
def cluster(kube_cluster: KubeCluster) -> KubeCluster:
    if kube_cluster.exec_workdir is None:
        pytest.skip("pods run through kwok only on the cluster of scripts/kube-up")
    return kube_cluster


@pytest.fixture
def namespace(cluster: KubeCluster) -> Iterator[str]:
    name = unique_name("w")
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")


def wait_until(probe: Callable[[], T | None], what: str) -> T:
    """Poll `probe` until it returns something other than None, with a deadline."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        result = probe()
        if result is not None:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def condition(obj: dict[str, Any], kind: str) -> str | None:
    for c in obj.get("status", {}).get("conditions") or []:
        if c["type"] == kind:
            status: str = c["status"]
            return status
    return None


def apply(cluster: KubeCluster, namespace: str, manifest: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))


def job(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": labels or {}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": IMAGE}],
                },
            },
        },
    }


def job_pods(cluster: KubeCluster, namespace: str, name: str) -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = cluster.kubectl_json(
        "get", "pods", "-n", namespace, "-l", f"job-name={name}"
    )["items"]
    return pods


def running_pod(cluster: KubeCluster, namespace: str) -> str:
    """A bare pod, once it is Ready."""
    name = unique_name("pod")
    apply(
        cluster,
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "main", "image": IMAGE}]},
        },
    )

    def ready() -> bool | None:
        pod = cluster.kubectl_json("get", "pod", name, "-n", namespace)
        return True if condition(pod, "Ready") == "True" else None

    wait_until(ready, f"pod {name} Ready")
    return name


def test_the_fake_node_is_ready_on_loopback(cluster: KubeCluster) -> None:
    node = cluster.kubectl_json("get", "node", "kwok-node")
    assert condition(node, "Ready") == "True"
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses == {"InternalIP": "127.0.0.1", "Hostname": "kwok-node"}
    # kwok renews the node's Lease, so the node lifecycle controller keeps the node Ready.
    lease = wait_until(
        lambda: (
            cluster.kubectl_json("get", "lease", "kwok-node", "-n", "kube-node-lease")
            if "kwok-node"
            in cluster.kubectl("get", "leases", "-n", "kube-node-lease", "-o", "name").stdout
            else None
        ),
        "the node's lease",
    )
    assert lease["spec"]["renewTime"]


def test_a_deployment_becomes_available(cluster: KubeCluster, namespace: str) -> None:
    cluster.kubectl(
        "create", "deployment", "web", f"--image={IMAGE}", "--replicas=2", "-n", namespace
    )

    def available() -> dict[str, Any] | None:
        deployment = cluster.kubectl_json("get", "deployment", "web", "-n", namespace)
        done = condition(deployment, "Available") == "True"
        return deployment if done and deployment["status"].get("readyReplicas") == 2 else None

    deployment = wait_until(available, "the deployment to become Available")
    assert deployment["status"]["availableReplicas"] == 2
    pods = cluster.kubectl_json("get", "pods", "-n", namespace, "-l", "app=web")["items"]
    assert [p["status"]["phase"] for p in pods] == ["Running", "Running"]
    assert {p["spec"]["nodeName"] for p in pods} == {"kwok-node"}


def test_a_job_completes(cluster: KubeCluster, namespace: str) -> None:
    apply(cluster, namespace, job("install"))

    def complete() -> dict[str, Any] | None:
        found = cluster.kubectl_json("get", "job", "install", "-n", namespace)
        return found if condition(found, "Complete") == "True" else None

    assert wait_until(complete, "the job to complete")["status"]["succeeded"] == 1
    [pod] = job_pods(cluster, namespace, "install")
    assert pod["status"]["phase"] == "Succeeded"
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0


def test_a_pod_marked_to_fail_ends_failed(cluster: KubeCluster, namespace: str) -> None:
    apply(cluster, namespace, job("broken", labels={POD_FAILS_LABEL: "true"}))

    def failed() -> dict[str, Any] | None:
        found = cluster.kubectl_json("get", "job", "broken", "-n", namespace)
        return found if condition(found, "Failed") == "True" else None

    assert wait_until(failed, "the job to fail")["status"].get("succeeded") is None
    [pod] = job_pods(cluster, namespace, "broken")
    assert pod["status"]["phase"] == "Failed"
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 1


def test_exec_runs_the_command_in_the_work_dir(cluster: KubeCluster, namespace: str) -> None:
    pod = running_pod(cluster, namespace)

    assert cluster.kubectl("exec", pod, "-n", namespace, "--", "echo", "hi").stdout == "hi\n"
    assert cluster.kubectl("exec", pod, "-n", namespace, "--", "pwd").stdout.strip() == str(
        cluster.exec_workdir
    )
    # kwok reports a command's failure as an internal error, not as the command's exit code.
    failing = cluster.kubectl("exec", pod, "-n", namespace, "--", "sh", "-c", "exit 3", check=False)
    assert failing.returncode != 0
    assert "exit status 3" in failing.stderr


def test_logs_print_the_pod_log(cluster: KubeCluster, namespace: str) -> None:
    pod = running_pod(cluster, namespace)
    line = unique_name("line")
    cluster.append_pod_log(line)

    logs = cluster.kubectl("logs", pod, "-n", namespace).stdout
    assert logs.splitlines()[-1] == line


def test_port_forward_reaches_the_loopback_target(cluster: KubeCluster, namespace: str) -> None:
    pod = running_pod(cluster, namespace)
    forward = subprocess.Popen(
        [
            cluster.kubectl_path,
            "--kubeconfig",
            str(cluster.kubeconfig),
            "port-forward",
            "-n",
            namespace,
            f"pod/{pod}",
            "--address=127.0.0.1",
            ":8080",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert forward.stdout is not None
        first = forward.stdout.readline()  # "Forwarding from 127.0.0.1:PORT -> 8080"
        match = re.match(r"Forwarding from 127\.0\.0\.1:(\d+) -> 8080", first)
        assert match, f"unexpected kubectl output {first!r}"
        url = f"http://127.0.0.1:{match.group(1)}/hello"
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.read() == b"forwarded /hello"
        request = urllib.request.Request(url, data=b"ping", method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.read() == b"ping"
    finally:
        forward.terminate()
        forward.communicate(timeout=30)
