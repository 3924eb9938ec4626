"""Fixtures for tests of the Kubernetes wrapper: clients, scratch namespaces, and the two ways
a cluster is reached (`reach`: direct, or through a real agent server and agent)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.agent_server.config import get_agent_server_settings
from app.kube import KubeClient
from tests.agents.conftest import Processes, processes, tls  # noqa: F401 (fixtures)
from tests.agents.support import AgentServerProc, Process
from tests.kube.helpers import Reach
from tests.support.kubeapi import KubeCluster, unique_name


@pytest.fixture
def kube(kube_cluster: KubeCluster) -> Iterator[KubeClient]:
    """A wrapper client with the cluster's admin token."""
    with KubeClient.from_platform(
        kube_cluster.url, kube_cluster.ca_pem, kube_cluster.token, allow_local=True
    ) as client:
        yield client


@pytest.fixture
def scratch_namespace(kube_cluster: KubeCluster) -> Iterator[str]:
    """A namespace of its own for one test, deleted afterwards."""
    name = unique_name("t")
    kube_cluster.kubectl("create", "namespace", name)
    yield name
    kube_cluster.kubectl("delete", "namespace", name, "--wait=false")


def _through_agent(
    procs: Processes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Reach]:
    def start_server() -> AgentServerProc:
        server = procs.server()
        monkeypatch.setenv("CLUSTERPORT_AGENT_PROXY_INTERNAL_URL", server.proxy_url)
        monkeypatch.setenv("CLUSTERPORT_AGENT_TLS_CA_FILE", str(procs.tls.cert))
        get_agent_server_settings.cache_clear()
        return server

    def start_agent(server: AgentServerProc, token: str, kubeconfig: Path) -> Process:
        return procs.agent(server.agent_url, token, kubeconfig)

    yield Reach("via_agent", tmp_path, start_server, start_agent)
    get_agent_server_settings.cache_clear()


@pytest.fixture(params=["direct", "via_agent"])
def reach(
    request: pytest.FixtureRequest,
    processes: Processes,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Reach]:
    """Every test that takes it runs twice: clusters reached directly, and through a real agent
    server and agent. Through an agent, the worker is told only the agent server's proxy URL."""
    if request.param == "direct":
        yield Reach("direct", tmp_path)
    else:
        yield from _through_agent(processes, tmp_path, monkeypatch)


@pytest.fixture
def via_agent(
    processes: Processes,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Reach]:
    """Clusters reached only through a real agent server and agent."""
    yield from _through_agent(processes, tmp_path, monkeypatch)
