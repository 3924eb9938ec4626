"""scripts/kube-up and kube-down leave nothing running: a second cluster, owned by a process that
dies, is stopped by kube-up's watchdog, including a command still running through kubectl exec."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.kubeapi import SCRIPTS, tools_bin_dir, unique_name

DEADLINE_SECONDS = 60


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for(check: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_the_cluster_stops_when_its_owner_exits(tmp_path: Path) -> None:
    state = tmp_path / "cluster"
    owner = subprocess.Popen(["sleep", "600"])
    env = {
        **os.environ,
        "CLUSTERPORT_TOOLS_DIR": str(tools_bin_dir().parent.parent),
        "CLUSTERPORT_KUBE_OWNER_PID": str(owner.pid),
    }
    kubectl = [str(tools_bin_dir() / "kubectl"), "--kubeconfig", str(state / "kubeconfig")]
    exec_: subprocess.Popen[bytes] | None = None
    try:
        up = subprocess.run(
            [str(SCRIPTS / "kube-up"), str(state)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert up.returncode == 0, up.stderr
        pids = {p.stem: int(p.read_text()) for p in state.glob("*.pid")}
        assert set(pids) == {
            "etcd",
            "apiserver",
            "controller-manager",
            "scheduler",
            "kwok",
            "watchdog",
        }

        pod = unique_name("pod")
        subprocess.run(
            [*kubectl, "apply", "-f", "-"],
            input=json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": pod, "namespace": "default"},
                    "spec": {"containers": [{"name": "main", "image": "registry.invalid/x:1"}]},
                }
            ),
            text=True,
            capture_output=True,
            check=True,
            timeout=60,
        )
        subprocess.run(
            [*kubectl, "wait", "--for=condition=Ready", f"pod/{pod}", "--timeout=60s"],
            capture_output=True,
            check=True,
            timeout=90,
        )
        # A command kwok runs for `kubectl exec` and that would outlive kwok if left alone.
        exec_ = subprocess.Popen(
            [*kubectl, "exec", pod, "--", "sh", "-c", "echo $$ > child.pid; exec sleep 600"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        child_pid_file = state / "exec" / "child.pid"
        wait_for(lambda: child_pid_file.is_file() and child_pid_file.read_text().strip(), "exec")
        pids["exec"] = int(child_pid_file.read_text())
        assert all(alive(pid) for pid in pids.values())

        owner.kill()
        owner.wait()

        wait_for(lambda: not any(alive(pid) for pid in pids.values()), "everything to stop")
        assert not list(state.glob("*.pid"))
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        subprocess.run(
            [str(SCRIPTS / "kube-down"), str(state)], capture_output=True, timeout=60, check=False
        )
        if exec_ is not None:
            exec_.kill()
            exec_.wait()
