"""Agent deletion, connections per token, audited source addresses, trusted proxies and the
per-address bucket that counts failures only, against real agent-server processes."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlalchemy import select
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from app.agent_server.admission import client_address
from app.tunnel.frames import CloseCode
from tests.agents.conftest import AgentSetup, Processes, eventually
from tests.agents.support import AgentServerProc
from tests.agents.test_agent_server import client_tls, tunnel
from tests.conftest import Api


@asynccontextmanager
async def dial(
    server: AgentServerProc, token: str | None, forwarded_for: str | None = None
) -> AsyncIterator[ClientConnection]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if forwarded_for:
        headers["X-Forwarded-For"] = forwarded_for
    async with connect(
        server.agent_url,
        additional_headers=headers,
        ssl=client_tls(server),
        compression=None,
        ping_interval=None,
        proxy=None,
    ) as ws:
        yield ws


async def attempt(
    server: AgentServerProc, token: str | None, forwarded_for: str | None = None
) -> tuple[int, str]:
    """Status of one upgrade attempt (101 when the websocket opened) and the error body."""
    try:
        async with dial(server, token, forwarded_for):
            return 101, ""
    except InvalidStatus as exc:
        return exc.response.status_code, exc.response.body.decode()


async def audit_events(api: Api, project_id: int, action: str) -> list[dict[str, Any]]:
    response = await api.get(f"/api/v1/projects/{project_id}/audit-events")
    assert response.status_code == 200, response.text
    return [e for e in response.json()["items"] if e["action"] == action]


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    trusted = [ipaddress.ip_network("10.0.0.0/8")]
    assert client_address("192.0.2.1", "198.51.100.7", trusted) == "192.0.2.1"
    assert client_address("10.1.1.1", "198.51.100.7", trusted) == "198.51.100.7"
    # The client may prepend anything; the nearest untrusted hop is the client.
    assert client_address("10.1.1.1", "1.2.3.4, 198.51.100.7, 10.2.2.2", trusted) == (
        "198.51.100.7"
    )
    assert client_address("10.1.1.1", "garbage", trusted) == "10.1.1.1"
    assert client_address("10.1.1.1", None, trusted) == "10.1.1.1"
    assert client_address("10.1.1.1", "198.51.100.7", []) == "10.1.1.1"


async def test_deleting_an_agent_revokes_its_tokens_and_closes_its_connections(
    agent_setup: AgentSetup, processes: Processes
) -> None:
    from app.agents.models import Agent, AgentToken
    from app.core.db import session_scope

    server, second = processes.server(), processes.server()
    other = await agent_setup.new_token("second")
    developer = agent_setup.api.as_token(agent_setup.developer_token)
    async with (
        tunnel(server, agent_setup.token) as (_, first_task),
        tunnel(second, other["token"]) as (_, second_task),
    ):
        await eventually(lambda: _has(agent_setup, 2), "both connections to be listed", limit=30)
        denied = await developer.delete(agent_setup.base)
        assert denied.status_code == 403
        deleted = await agent_setup.api.delete(agent_setup.base)
        assert deleted.status_code == 204, deleted.text
        for task in (first_task, second_task):
            info = await asyncio.wait_for(task, 30)
            assert info.code == CloseCode.TOKEN_REVOKED
    assert (await agent_setup.api.get(agent_setup.base)).status_code == 404
    assert (await agent_setup.api.delete(agent_setup.base)).status_code == 404
    with session_scope() as session:
        assert session.get(Agent, agent_setup.agent_id) is None
        tokens = session.scalars(select(AgentToken)).all()
        assert {t.id for t in tokens} == {agent_setup.token_id, other["id"]}
        assert all(t.revoked_at is not None and t.agent_id is None for t in tokens)
    status, body = await attempt(server, agent_setup.token)
    assert (status == 401 and '"invalid_token"' in body) or '"token_revoked"' in body
    events = await audit_events(agent_setup.api, agent_setup.project_id, "agent.delete")
    assert events[0]["details"]["revoked_token_ids"] == sorted([agent_setup.token_id, other["id"]])


async def _has(setup: AgentSetup, count: int) -> bool:
    return len(await setup.connections()) == count


async def test_connections_per_token_are_capped_over_all_replicas(
    agent_setup: AgentSetup, processes: Processes
) -> None:
    cap = {"CLUSTERPORT_AGENT_MAX_CONNECTIONS_PER_TOKEN": "2"}
    server, second = processes.server(extra=cap), processes.server(extra=cap)
    async with tunnel(server, agent_setup.token), tunnel(second, agent_setup.token):
        await eventually(lambda: _has(agent_setup, 2), "two connections to be listed")
        for replica in (server, second):
            status, body = await attempt(replica, agent_setup.token)
            assert status == 429, body
            assert '"too_many_connections"' in body
        other = await agent_setup.new_token("other")
        async with tunnel(server, other["token"]):
            pass  # the cap is per token
    await eventually(lambda: _has(agent_setup, 0), "the connections to be gone")
    async with tunnel(server, agent_setup.token):
        pass


async def test_a_new_source_address_of_a_token_is_audited(
    agent_setup: AgentSetup, processes: Processes
) -> None:
    server = processes.server(extra={"CLUSTERPORT_AGENT_TRUSTED_PROXIES": "127.0.0.1/32"})
    async with tunnel(server, agent_setup.token):
        await eventually(lambda: _has(agent_setup, 1), "the connection to be listed")
    async with tunnel(server, agent_setup.token):
        await eventually(lambda: _has(agent_setup, 1), "the connection to be listed again")
    async with dial(server, agent_setup.token, forwarded_for="203.0.113.9"):
        pass

    async def sources() -> list[str] | None:
        events = await audit_events(
            agent_setup.api, agent_setup.project_id, "agent_token.new_source_address"
        )
        found = sorted(e["details"]["address"] for e in events)
        return found if len(found) >= 2 else None

    # The handshake above never finished, so the forwarded address needs a full connection.
    assert await _connect_from(server, agent_setup, "203.0.113.9")
    assert await eventually(sources, "the new address to be audited") == [
        "127.0.0.1",
        "203.0.113.9",
    ]
    events = await audit_events(
        agent_setup.api, agent_setup.project_id, "agent_token.new_source_address"
    )
    assert {e["target_id"] for e in events} == {str(agent_setup.token_id)}


async def _connect_from(server: AgentServerProc, setup: AgentSetup, address: str) -> bool:
    from app.tunnel.session import Session
    from app.tunnel.transport import WebsocketTransport

    async with dial(server, setup.token, forwarded_for=address) as ws:
        session = Session(WebsocketTransport(ws), is_server=False, hello={"agent_version": "probe"})
        await session.handshake()
        run = asyncio.create_task(session.run())
        await eventually(lambda: _has(setup, 1), "the forwarded connection to be listed")
        await session.close()
        await run
    return True


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(
    agent_setup: AgentSetup, processes: Processes
) -> None:
    deny = {"CLUSTERPORT_AGENT_IP_DENY": "198.51.100.0/24"}
    untrusted = processes.server(extra=deny)
    status, _ = await attempt(untrusted, agent_setup.token, forwarded_for="198.51.100.7")
    assert status == 101
    trusted = processes.server(extra={**deny, "CLUSTERPORT_AGENT_TRUSTED_PROXIES": "127.0.0.0/8"})
    status, body = await attempt(trusted, agent_setup.token, forwarded_for="198.51.100.7")
    assert status == 403 and '"address_denied"' in body
    # A client cannot hide behind a forged entry further left.
    status, body = await attempt(
        trusted, agent_setup.token, forwarded_for="192.0.2.1, 198.51.100.7"
    )
    assert status == 403


async def test_the_address_bucket_counts_failures_only(
    agent_setup: AgentSetup, processes: Processes
) -> None:
    server = processes.server(
        extra={"CLUSTERPORT_AGENT_IP_BURST": "3", "CLUSTERPORT_AGENT_IP_RATE": "0.001"}
    )
    # Valid connections do not spend the address's bucket.
    for _ in range(4):
        assert (await attempt(server, agent_setup.token))[0] == 101
    # Someone else on the same address sends garbage until the bucket is empty...
    for token in ("cpa_garbage-1", None, "cpa_garbage-2"):
        assert (await attempt(server, token))[0] == 401
    status, body = await attempt(server, "cpa_garbage-3")
    assert status == 429 and '"rate_limited"' in body
    # ...and the valid agent still gets in.
    assert (await attempt(server, agent_setup.token))[0] == 101


@pytest.fixture(autouse=True)
def _no_kube(request: pytest.FixtureRequest) -> None:
    """These tests need no Kubernetes API."""
