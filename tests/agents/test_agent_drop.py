"""A watch through an agent that disconnects ends with an error naming the hop, and the next
request gets the typed 503 at once."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

from tests.agents.conftest import AgentSetup, Processes
from tests.agents.support import AgentServerProc, Process
from tests.agents.test_agent_proxy import https, kubectl, write_kubeconfig
from tests.support.kubeapi import unique_name


async def test_watch_ends_with_an_error_when_the_agent_drops(
    connected: tuple[AgentSetup, AgentServerProc, Process],
    processes: Processes,
    kube_cluster: Any,
    tmp_path: Path,
) -> None:
    setup, server, agent = connected
    config = write_kubeconfig(setup, server, tmp_path / "kc", setup.developer_token)
    namespace = unique_name("drop")
    kube_cluster.kubectl("create", "namespace", namespace)
    kube_cluster.kubectl("create", "configmap", "first", "-n", namespace)
    watch = await asyncio.create_subprocess_exec(
        kube_cluster.kubectl_path,
        "--kubeconfig",
        str(config),
        "get",
        "configmaps",
        "-n",
        namespace,
        "-w",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert watch.stdout is not None and watch.stderr is not None
        seen = b""
        while b"first" not in seen:
            chunk = await asyncio.wait_for(watch.stdout.read(1024), 30)
            assert chunk, "the watch ended before listing anything"
            seen += chunk
        agent.stop(signal.SIGKILL)  # no goodbye: the tunnel is simply gone
        code = await asyncio.wait_for(watch.wait(), 30)
        stderr = (await watch.stderr.read()).decode()
    finally:
        if watch.returncode is None:
            watch.kill()
            await watch.wait()
    # kubectl prints the ERROR event's Status: the hop and what happened.
    assert code != 0, stderr
    assert f"agent {setup.agent_id} disconnected" in stderr, stderr

    # A client that tries again is told at once, with the typed Status.
    async with https(server) as http:
        response = await http.get(
            f"{server.proxy_url}/k8s-proxy/agents/{setup.agent_id}/api/v1/namespaces",
            headers={"Authorization": f"Bearer {setup.developer_token}"},
        )
    assert response.status_code == 503
    body = response.json()
    assert body["kind"] == "Status"
    assert body["details"]["causes"][0]["reason"] == "agent_not_connected"
    got = kubectl(kube_cluster, config, "get", "configmaps", "-n", namespace, "-w")
    assert got.returncode != 0
    assert "ServiceUnavailable" in got.stderr or "agent" in got.stderr, got.stderr
