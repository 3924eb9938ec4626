"""No API route reaches the Kubernetes client: by imports, and at run time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.kube import KubeClient, KubeOnEventLoopError
from tests.support.kubeapi import KubeCluster

REPO = Path(__file__).resolve().parents[2]


def test_import_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run(
        [str(lint)], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "API code never reaches the Kubernetes client" in proc.stdout


async def test_client_refuses_to_run_on_the_event_loop(kube_cluster: KubeCluster) -> None:
    with KubeClient.from_platform(
        kube_cluster.url, kube_cluster.ca_pem, kube_cluster.token, allow_local=True
    ) as kube:
        with pytest.raises(KubeOnEventLoopError):
            kube.version()
        with pytest.raises(KubeOnEventLoopError):
            kube.core.list_namespace()
