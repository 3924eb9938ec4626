"""`clusterport clusters add --context`: clusterport's account is made in the real cluster with
the user's kubeconfig, and registration errors come back as one line saying what to do."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.agents.support import free_port
from tests.conftest import Api
from tests.support.kubeapi import KubeCluster, unique_name

CLUSTERPORT = str(Path(sys.executable).with_name("clusterport"))


@pytest.fixture
def api_process(tmp_path: Path) -> Iterator[str]:
    """`clusterport api` on this session's database, local cluster URLs refused."""
    port = free_port()
    env = {
        **os.environ,
        "CLUSTERPORT_API_PORT": str(port),
        "CLUSTERPORT_HEALTH_PORT": str(free_port()),
        "CLUSTERPORT_ALLOW_LOCAL_NETWORK": "false",
    }
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [CLUSTERPORT, "api"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/docs").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(30)


def add(kube: KubeCluster, api: str, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLUSTERPORT, "clusters", "add", "--kubeconfig", str(kube.kubeconfig), *args],
        env={
            "PATH": os.environ["PATH"],
            "CLUSTERPORT_API_URL": f"{api}/api/v1",
            "CLUSTERPORT_TOKEN": token,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.timeout(300)
async def test_unmanaged_account_is_read_only_and_errors_say_what_to_do(
    admin: Api, kube_cluster: KubeCluster, api_process: str
) -> None:
    project = await admin.create_project("adding")
    token = await admin.create_project_token(project["id"])
    account = unique_name("cp")
    result = add(
        kube_cluster,
        api_process,
        token,
        "--project",
        str(project["id"]),
        "--unmanaged",
        "--service-account",
        account,
        "--namespace",
        "default",
    )
    # The API refuses the loopback URL of the test cluster, and says how to allow it.
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "unsafe_url" in result.stderr
    assert "CLUSTERPORT_ALLOW_LOCAL_NETWORK=true" in result.stderr
    # The account was made with the user's credentials, bound to the read-only `view` role.
    binding = kube_cluster.kubectl_json("get", "clusterrolebinding", f"{account}-default")
    assert binding["roleRef"]["name"] == "view"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": "default"}
    ]
    can = kube_cluster.kubectl(
        "auth",
        "can-i",
        "create",
        "namespaces",
        f"--as=system:serviceaccount:default:{account}",
        check=False,
    )
    assert can.stdout.strip() == "no"
    secret = kube_cluster.kubectl_json("get", "secret", f"{account}-token", "-n", "default")
    assert secret["data"]["token"]  # filled by the token controller, read by the command

    # A project the token cannot see: one line, with the hint.
    result = add(
        kube_cluster,
        api_process,
        token,
        "--project",
        "999999",
        "--unmanaged",
        "--service-account",
        account,
        "--namespace",
        "default",
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "registering the cluster failed" in result.stderr
    # A context that does not exist.
    result = add(kube_cluster, api_process, token, "--project", "1", "--context", "nope")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "kubeconfig:" in result.stderr and "nope" in result.stderr
