"""kubectl exec, cp, attach, logs -f and port-forward through the agent, for real: kubectl ->
clusterport proxy -> tunnel -> agent -> kube-apiserver -> kwok's kubelet API (exec runs a local
command, port-forward reaches a local address, logs and attach follow a local file), and back;
also through a second agent-server replica that routes to the one holding the agent.

Large inputs in both directions exercise the tunnel's flow control on upgraded connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import re
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.agents.conftest import AgentSetup, Processes
from tests.agents.support import AgentServerProc, Process
from tests.agents.test_agent_proxy import write_kubeconfig
from tests.support.kubeapi import KubeCluster, unique_name

pytestmark = pytest.mark.timeout(600)


@dataclass
class KwokPod:
    namespace: str
    name: str


@pytest.fixture
def kwok_pod(kube_cluster: KubeCluster) -> Iterator[KwokPod]:
    """A Running pod on the cluster's kwok node (127.0.0.1): exec runs a local command, and
    port-forward reaches the cluster's loopback target (GET answers `forwarded <path>`, POST
    echoes its body)."""
    if kube_cluster.exec_workdir is None or kube_cluster.forward_target is None:
        pytest.skip("pods run through kwok only on the cluster of scripts/kube-up")
    namespace = unique_name("exec")
    kube_cluster.kubectl("create", "namespace", namespace)
    try:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "target", "namespace": namespace},
            "spec": {"containers": [{"name": "main", "image": "registry.invalid/none:1"}]},
        }
        kube_cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
        kube_cluster.kubectl(
            "wait", "-n", namespace, "--for=condition=Ready", "pod/target", "--timeout=120s"
        )
        yield KwokPod(namespace, "target")
    finally:
        kube_cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


async def run_kubectl(kube: Any, config: Path, *args: str, stdin: bytes) -> tuple[int, bytes, str]:
    proc = await asyncio.create_subprocess_exec(
        kube.kubectl_path,
        "--kubeconfig",
        str(config),
        *args,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 300)
    assert proc.returncode is not None
    return proc.returncode, out, err.decode(errors="replace")


async def test_kubectl_exec_round_trips_through_the_agent(
    connected: tuple[AgentSetup, AgentServerProc, Process],
    kube_cluster: Any,
    kwok_pod: KwokPod,
    tmp_path: Path,
) -> None:
    setup, server, _agent = connected
    config = write_kubeconfig(setup, server, tmp_path / "kc", setup.developer_token)
    target = ["-n", kwok_pod.namespace, kwok_pod.name]

    code, out, err = await run_kubectl(
        kube_cluster, config, "exec", *target, "--", "sh", "-c", "echo out; echo err >&2", stdin=b""
    )
    assert code == 0, err
    assert out == b"out\n"
    assert "err" in err

    # More than the tunnel's window (256 KiB) each way: flow control carries it intact. (Not
    # much more: kubectl's WebSocket heartbeat gives up when a pong waits behind more queued
    # stdin than a loaded 2-core machine relays in 6 s.)
    # (`head -c`, not `cat`: kwok's local exec does not pass the end of stdin on, so `cat`
    # would wait for ever, directly or through the agent alike.)
    big = random.Random(5).randbytes(1024) * 320  # 320 KiB
    code, out, err = await run_kubectl(
        kube_cluster, config, "exec", "-i", *target, "--", "head", "-c", str(len(big)), stdin=big
    )
    assert code == 0, err
    assert hashlib.sha256(out).hexdigest() == hashlib.sha256(big).hexdigest()

    code, _, err = await run_kubectl(
        kube_cluster, config, "exec", *target, "--", "sh", "-c", "exit 3", stdin=b""
    )
    # kwok reports a command's exit status as an error text rather than kubelet's exit code.
    assert code != 0 and "exit status 3" in err, err
    assert "Traceback" not in server.process.log()


async def test_kubectl_port_forward_round_trips_through_the_agent(
    connected: tuple[AgentSetup, AgentServerProc, Process],
    kube_cluster: KubeCluster,
    kwok_pod: KwokPod,
    tmp_path: Path,
) -> None:
    setup, server, _agent = connected
    config = write_kubeconfig(setup, server, tmp_path / "kc", setup.developer_token)
    forward = await asyncio.create_subprocess_exec(
        kube_cluster.kubectl_path,
        "--kubeconfig",
        str(config),
        "port-forward",
        "-n",
        kwok_pod.namespace,
        f"pod/{kwok_pod.name}",
        "--address=127.0.0.1",
        ":80",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert forward.stdout is not None
        line = await asyncio.wait_for(forward.stdout.readline(), 120)
        match = re.match(rb"Forwarding from 127\.0\.0\.1:(\d+) -> 80", line)
        assert match, line
        url = f"http://127.0.0.1:{match.group(1).decode()}"
        assert await asyncio.to_thread(_fetch, f"{url}/hello") == b"forwarded /hello"
        # Far more than the tunnel's window each way: the target echoes the body.
        big = random.Random(7).randbytes(2 * 1024 * 1024)
        assert await asyncio.to_thread(_fetch, f"{url}/echo", big) == big
    finally:
        forward.terminate()
        await forward.wait()
    assert "Traceback" not in server.process.log()


def _fetch(url: str, body: bytes | None = None) -> bytes:
    request = urllib.request.Request(url, data=body, method="GET" if body is None else "POST")
    with urllib.request.urlopen(request, timeout=120) as response:
        data: bytes = response.read()
    return data


async def _follow_until(
    kube_cluster: KubeCluster, config: Path, marker: str, *args: str
) -> tuple[int | None, str]:
    """Start a following kubectl (`logs -f`, `attach`), add a line with `marker` to the pod log
    until kubectl prints it (attach starts at the end of the log, so a line written before it
    is ready is not shown), then stop kubectl. Returns kubectl's exit status and its output."""
    proc = await asyncio.create_subprocess_exec(
        kube_cluster.kubectl_path,
        "--kubeconfig",
        str(config),
        *args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        for attempt in range(120):
            kube_cluster.append_pod_log(f"{marker} {attempt}")
            with contextlib.suppress(TimeoutError):
                while True:
                    line = await asyncio.wait_for(proc.stdout.readline(), 1)
                    if not line:
                        break
                    seen.append(line.decode(errors="replace"))
                    if marker in seen[-1]:
                        return proc.returncode, "".join(seen)
            if proc.stdout.at_eof():
                break
        return proc.returncode, "".join(seen)
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()


async def test_logs_follow_and_attach_stream_through_the_agent(
    connected: tuple[AgentSetup, AgentServerProc, Process],
    kube_cluster: KubeCluster,
    kwok_pod: KwokPod,
    tmp_path: Path,
) -> None:
    setup, server, _agent = connected
    config = write_kubeconfig(setup, server, tmp_path / "kc", setup.developer_token)
    target = ["-n", kwok_pod.namespace, kwok_pod.name]
    marker = unique_name("followed")
    code, out = await _follow_until(kube_cluster, config, marker, "logs", "-f", *target)
    assert code is None and marker in out, out  # still following when the line came
    marker = unique_name("attached")
    code, out = await _follow_until(kube_cluster, config, marker, "attach", *target)
    assert code is None and marker in out, out
    assert "Traceback" not in server.process.log()


async def test_kubectl_cp_from_a_pod_through_the_agent(
    connected: tuple[AgentSetup, AgentServerProc, Process],
    kube_cluster: KubeCluster,
    kwok_pod: KwokPod,
    tmp_path: Path,
) -> None:
    """`kubectl cp` from a pod is `tar cf -` over exec. (Into a pod it is `tar xf -`, which
    waits for the end of stdin that kwok's local exec never passes on; stdin through the agent
    is covered by the exec test above.)"""
    assert kube_cluster.exec_workdir is not None
    setup, server, _agent = connected
    config = write_kubeconfig(setup, server, tmp_path / "kc", setup.developer_token)
    remote = unique_name("cp")
    # kwok runs the pod's side on this machine, in its exec directory.
    (kube_cluster.exec_workdir / remote).write_bytes(random.Random(3).randbytes(300_000))
    back = tmp_path / "download.bin"
    pod = f"{kwok_pod.namespace}/{kwok_pod.name}"
    try:
        code, _, err = await run_kubectl(
            kube_cluster, config, "cp", f"{pod}:{remote}", str(back), stdin=b""
        )
        assert code == 0, err
        assert back.read_bytes() == (kube_cluster.exec_workdir / remote).read_bytes()
    finally:
        (kube_cluster.exec_workdir / remote).unlink()


async def test_exec_reaches_an_agent_held_by_another_replica(
    connected: tuple[AgentSetup, AgentServerProc, Process],
    processes: Processes,
    kube_cluster: KubeCluster,
    kwok_pod: KwokPod,
    tmp_path: Path,
) -> None:
    setup, holder, _agent = connected
    other = processes.server()  # the agent is not connected here: the upgrade is routed
    config = write_kubeconfig(setup, other, tmp_path / "kc", setup.developer_token)
    data = random.Random(11).randbytes(1024) * 320  # 320 KiB, more than one tunnel window
    code, out, err = await run_kubectl(
        kube_cluster,
        config,
        "exec",
        "-i",
        "-n",
        kwok_pod.namespace,
        kwok_pod.name,
        "--",
        "head",
        "-c",
        str(len(data)),
        stdin=data,
    )
    assert code == 0, err
    assert hashlib.sha256(out).digest() == hashlib.sha256(data).digest()
    assert "Traceback" not in other.process.log() + holder.process.log()


async def test_a_refused_upgrade_is_an_ordinary_answer(
    connected: tuple[AgentSetup, AgentServerProc, Process], kube_cluster: Any, tmp_path: Path
) -> None:
    setup, server, _agent = connected
    config = write_kubeconfig(setup, server, tmp_path / "kc", setup.developer_token)
    code, _out, err = await run_kubectl(
        kube_cluster, config, "exec", "-n", "default", "no-such-pod", "--", "true", stdin=b""
    )
    assert code != 0
    assert "NotFound" in err or "not found" in err, err
    assert "Traceback" not in server.process.log()
    assert await setup.connections()  # the agent stays connected
