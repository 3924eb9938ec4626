"""Fixtures for agent tests: a project with an agent and tokens, server and agent processes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.agents.support import (
    AgentServerProc,
    Process,
    TLSFiles,
    make_tls,
    start_agent,
    start_agent_server,
)
from tests.conftest import Api

T = TypeVar("T")


async def eventually(check: Callable[[], Awaitable[T]], what: str, limit: float = 30.0) -> T:
    """Await `check` until it returns something truthy; fail with `what` after `limit` seconds."""
    deadline = time.monotonic() + limit
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class AgentSetup:
    api: Api
    project_id: int
    agent_id: int
    token: str
    token_id: int
    developer_token: str

    @property
    def base(self) -> str:
        return f"/api/v1/projects/{self.project_id}/agents/{self.agent_id}"

    async def connections(self) -> list[dict[str, Any]]:
        response = await self.api.get(f"{self.base}/connections")
        assert response.status_code == 200, response.text
        rows: list[dict[str, Any]] = response.json()["items"]
        return rows

    async def new_token(self, name: str = "extra") -> dict[str, Any]:
        response = await self.api.post(f"{self.base}/tokens", {"name": name})
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture
async def agent_setup(admin: Api) -> AgentSetup:
    project = await admin.create_project("agents-demo")
    created = await admin.post(f"/api/v1/projects/{project['id']}/agents", {"name": "edge"})
    assert created.status_code == 201, created.text
    agent_id = created.json()["id"]
    token = await admin.post(
        f"/api/v1/projects/{project['id']}/agents/{agent_id}/tokens", {"name": "main"}
    )
    assert token.status_code == 201, token.text
    # The project's developers use the proxy with the agent's own rights.
    access = await admin.request(
        "PUT",
        f"/api/v1/projects/{project['id']}/agents/{agent_id}/access",
        json={"entries": [{"project_id": project["id"], "access_as": "agent"}]},
    )
    assert access.status_code == 200, access.text
    developer = await admin.create_project_token(project["id"], role="developer")
    return AgentSetup(
        admin, project["id"], agent_id, token.json()["token"], token.json()["id"], developer
    )


@dataclass
class Processes:
    tmp: Path
    tls: TLSFiles
    started: list[Process]

    def server(self, **kwargs: Any) -> AgentServerProc:
        server = start_agent_server(self.tmp, self.tls, **kwargs)
        self.started.append(server.process)
        return server

    def agent(
        self,
        server_url: str,
        token: str,
        kubeconfig: Path | None,
        extra: dict[str, str] | None = None,
    ) -> Process:
        agent = start_agent(self.tmp, server_url, token, kubeconfig, self.tls.cert, extra)
        self.started.append(agent)
        return agent


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def processes(tmp_path: Path, tls: TLSFiles) -> Iterator[Processes]:
    procs = Processes(tmp_path, tls, [])
    yield procs
    for process in reversed(procs.started):
        process.stop()


@pytest.fixture
async def connected(
    agent_setup: AgentSetup, processes: Processes, kube_cluster: Any
) -> AsyncIterator[tuple[AgentSetup, AgentServerProc, Process]]:
    """One agent server and one real agent connected to it, in front of the test cluster."""
    server = processes.server()
    agent = processes.agent(server.agent_url, agent_setup.token, kube_cluster.kubeconfig)
    await eventually(agent_setup.connections, "the agent to connect", limit=120)
    yield agent_setup, server, agent
