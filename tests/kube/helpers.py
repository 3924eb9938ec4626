"""Helpers for end-to-end tests: register the test cluster through the API, wait for workers.

A cluster is registered `direct` (API URL, CA, token) or `via_agent`: then a real agent server
and a real agent (with a kubeconfig holding the token the test chose) stand between the worker
and the kube-apiserver, and the worker knows only the agent server's proxy URL.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.agents.support import AgentServerProc, Process
from tests.conftest import Api
from tests.support.kubeapi import KubeCluster, _write_kubeconfig, unique_name

DEADLINE_SECONDS = 60


async def wait_for(
    fetch: Callable[[], Awaitable[Any]], done: Callable[[Any], bool], what: str
) -> Any:
    """Poll `fetch` until `done(result)`, with a deadline (the work happens in a worker)."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        result = await fetch()
        if done(result):
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}; last: {result}"
        await asyncio.sleep(0.1)


async def metric(url: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` with `labels` that a process's /metrics shows."""
    async with httpx.AsyncClient(trust_env=False) as client:
        text = (await client.get(url, timeout=10)).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def agent_metrics_url(agent: Process) -> str:
    return f"http://127.0.0.1:{agent.env['CLUSTERPORT_AGENT_LIVENESS_PORT']}/metrics"


def limited_token(kube_cluster: KubeCluster, *rules: str, name: str | None = None) -> str:
    """A token of a new service account (in `default`) bound to a ClusterRole made of `rules`,
    each given as `verbs:resources` (e.g. `get,list:namespaces`)."""
    name = name or unique_name("limited")
    kube_cluster.kubectl("create", "serviceaccount", name, "-n", "default")
    if rules:
        args = ["create", "clusterrole", name]
        for rule in rules:
            verbs, resources = rule.split(":")
            args += [f"--verb={verbs}", f"--resource={resources}"]
        kube_cluster.kubectl(*args)
        kube_cluster.kubectl(
            "create",
            "clusterrolebinding",
            name,
            f"--clusterrole={name}",
            f"--serviceaccount=default:{name}",
        )
    return kube_cluster.kubectl("create", "token", name, "-n", "default").stdout.strip()


@dataclass
class Reach:
    """How the clusters of a test are registered: `direct` or `via_agent`. For `via_agent`,
    `start_server` / `start_agent` start real processes (the test's fixture stops them)."""

    kind: str
    tmp: Path
    start_server: Callable[[], AgentServerProc] | None = None
    start_agent: Callable[[AgentServerProc, str, Path], Process] | None = None
    server: AgentServerProc | None = None
    agents: dict[int, Process] = field(default_factory=dict)

    @property
    def via_agent(self) -> bool:
        return self.kind == "via_agent"

    async def fields(
        self, project: Project, kube_cluster: KubeCluster, token: str | None
    ) -> dict[str, Any]:
        """The part of a cluster's create body that says how to reach it. For `via_agent`: a new
        agent of the project, connected through a real agent in front of the kube-apiserver,
        whose kubeconfig holds `token` (the admin token when None)."""
        if not self.via_agent:
            return {}
        assert self.start_server is not None and self.start_agent is not None
        if self.server is None:
            self.server = await asyncio.to_thread(self.start_server)
        agent_id, agent_token = await project.add_agent()
        kubeconfig = self.tmp / f"agent-{agent_id}.kubeconfig"
        await asyncio.to_thread(
            _write_kubeconfig,
            kubeconfig,
            kube_cluster.url,
            kube_cluster.ca_pem,
            token or kube_cluster.token,
        )
        self.agents[agent_id] = self.start_agent(self.server, agent_token, kubeconfig)
        await project.wait_agent_connected(agent_id)
        return {"agent_id": agent_id}

    async def restart_agent(self, project: Project, agent_id: int) -> None:
        """Start the agent again (same token and kubeconfig) and wait until it is connected."""
        assert self.server is not None and self.start_agent is not None
        old = self.agents[agent_id]
        kubeconfig = Path(old.env["CLUSTERPORT_AGENT_KUBECONFIG"])
        token = old.env["CLUSTERPORT_AGENT_TOKEN"]
        self.agents[agent_id] = self.start_agent(self.server, token, kubeconfig)
        await project.wait_agent_connected(agent_id)


class Project:
    """A project with the test cluster registered through the API."""

    def __init__(self, api: Api, data: dict[str, Any], reach: Reach | None = None) -> None:
        self.api = api
        self.id: int = data["id"]
        self.name: str = data["name"]
        self.base = f"/api/v1/projects/{self.id}"
        self.reach = reach

    @classmethod
    async def create(cls, api: Api, reach: Reach | None = None) -> Project:
        return cls(api, await api.create_project(unique_name("p")), reach)

    async def add_agent(self) -> tuple[int, str]:
        """A new agent of the project and a token for it."""
        created = await self.api.post(f"{self.base}/agents", {"name": unique_name("a")})
        assert created.status_code == 201, created.text
        agent_id: int = created.json()["id"]
        token = await self.api.post(f"{self.base}/agents/{agent_id}/tokens", {"name": "t"})
        assert token.status_code == 201, token.text
        return agent_id, token.json()["token"]

    async def agent_connections(self, agent_id: int) -> list[dict[str, Any]]:
        response = await self.api.get(f"{self.base}/agents/{agent_id}/connections")
        assert response.status_code == 200, response.text
        rows: list[dict[str, Any]] = response.json()["items"]
        return rows

    async def wait_agent_connected(self, agent_id: int, connected: bool = True) -> None:
        await wait_for(
            lambda: self.agent_connections(agent_id),
            lambda rows: bool(rows) == connected,
            f"agent {agent_id} to be {'connected' if connected else 'gone'}",
        )

    async def add_cluster(
        self,
        kube_cluster: KubeCluster,
        *,
        token: str | None = None,
        ca_pem: str | None = None,
        url: str | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        body = {"name": fields.pop("name", unique_name("c")), **fields}
        if self.reach is not None and self.reach.via_agent:
            assert url is None and ca_pem is None, "the agent decides where the API is"
            body.update(await self.reach.fields(self, kube_cluster, token))
        else:
            body["kubernetes"] = {
                "api_url": url or kube_cluster.url,
                "ca_pem": ca_pem or kube_cluster.ca_pem,
                "token": token or kube_cluster.token,
            }
        response = await self.api.post(f"{self.base}/clusters", body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    async def cluster(self, cluster_id: int) -> dict[str, Any]:
        response = await self.api.get(f"{self.base}/clusters/{cluster_id}")
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    async def checked_cluster(self, cluster_id: int) -> dict[str, Any]:
        """The cluster once its connectivity check has run."""
        result: dict[str, Any] = await wait_for(
            lambda: self.cluster(cluster_id),
            lambda c: c["status"] != "connecting",
            "the connectivity check",
        )
        return result

    async def connected_cluster(self, kube_cluster: KubeCluster, **fields: Any) -> dict[str, Any]:
        created = await self.add_cluster(kube_cluster, **fields)
        cluster = await self.checked_cluster(created["id"])
        assert cluster["status"] == "connected", cluster
        return cluster
