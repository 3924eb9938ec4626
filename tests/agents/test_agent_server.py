"""The agent websocket of a real agent-server process: upgrade checks, revocation, admission."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app.tunnel.frames import CloseCode, FrameType, encode
from app.tunnel.session import CloseInfo, Session
from app.tunnel.transport import WebsocketTransport
from tests.agents.conftest import AgentSetup, Processes, eventually
from tests.agents.support import AgentServerProc


def client_tls(server: AgentServerProc) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=server.env["CLUSTERPORT_AGENT_TLS_CA_FILE"])


@asynccontextmanager
async def dial(server: AgentServerProc, token: str | None) -> AsyncIterator[ClientConnection]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with connect(
        server.agent_url,
        additional_headers=headers,
        ssl=client_tls(server),
        compression=None,
        ping_interval=None,
        proxy=None,
    ) as ws:
        yield ws


async def refused(server: AgentServerProc, token: str | None) -> tuple[int, str, dict[str, str]]:
    with pytest.raises(InvalidStatus) as info:
        async with dial(server, token):
            pass
    response = info.value.response
    headers = {k.lower(): v for k, v in response.headers.raw_items()}
    return response.status_code, response.body.decode(), headers


@asynccontextmanager
async def tunnel(server: AgentServerProc, token: str) -> AsyncIterator[tuple[Session, Any]]:
    """A minimal agent built on the tunnel module, to observe close codes."""
    async with dial(server, token) as ws:
        session = Session(
            WebsocketTransport(ws),
            is_server=False,
            hello={"agent_version": "probe", "kubernetes_version": "none"},
            send_pings=True,
        )
        await session.handshake()
        task: asyncio.Task[CloseInfo] = asyncio.create_task(session.run())
        try:
            yield session, task
        finally:
            await session.close()
            await task


async def test_bad_tokens_are_refused_before_the_upgrade(
    agent_setup: AgentSetup, processes: Processes
) -> None:
    server = processes.server()
    status, body, _ = await refused(server, None)
    assert status == 401 and '"unauthorized"' in body
    status, body, _ = await refused(server, "cpa_wrong")
    assert status == 401 and '"invalid_token"' in body
    status, body, _ = await refused(server, agent_setup.developer_token)
    assert status == 401 and '"invalid_token"' in body
    token = await agent_setup.new_token("to-revoke")
    revoke = await agent_setup.api.delete(f"{agent_setup.base}/tokens/{token['id']}")
    assert revoke.status_code == 204
    status, body, _ = await refused(server, token["token"])
    assert status == 401 and '"token_revoked"' in body
    assert token["token"] not in body


async def test_revoking_a_token_closes_its_live_connections_on_every_replica(
    agent_setup: AgentSetup, processes: Processes
) -> None:
    server, second = processes.server(), processes.server()
    other = await agent_setup.new_token("stays")
    async with (
        tunnel(server, agent_setup.token) as (revoked_session, revoked_task),
        tunnel(second, agent_setup.token) as (_, revoked_elsewhere),
        tunnel(server, other["token"]) as (kept_session, _kept_task),
    ):
        assert revoked_session.peer.hello["replica"] == server.replica
        await eventually(lambda: _count(agent_setup, 3), "all connections to be listed", limit=30)
        response = await agent_setup.api.delete(f"{agent_setup.base}/tokens/{agent_setup.token_id}")
        assert response.status_code == 204
        for task in (revoked_task, revoked_elsewhere):
            info = await asyncio.wait_for(task, 30)
            assert info.code == CloseCode.TOKEN_REVOKED
        assert kept_session.close_info is None
        await eventually(lambda: _count(agent_setup, 1), "the revoked connections to be gone")


async def _count(setup: AgentSetup, expected: int) -> bool:
    return len(await setup.connections()) == expected


async def test_malformed_frames_from_an_agent_close_the_connection(
    agent_setup: AgentSetup, processes: Processes
) -> None:
    server = processes.server()
    async with tunnel(server, agent_setup.token) as (session, task):
        await session.transport.send(encode(FrameType.DATA, 0, b"stream zero"))
        info = await asyncio.wait_for(task, 30)
        assert info.code == CloseCode.PROTOCOL_ERROR
    async with dial(server, agent_setup.token) as ws:
        await ws.send(b"\x01")  # not even a frame header, instead of HELLO
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == CloseCode.PROTOCOL_ERROR


async def test_admission_control_per_token_and_address_lists(
    agent_setup: AgentSetup, processes: Processes
) -> None:
    limited = processes.server(
        extra={"CLUSTERPORT_AGENT_TOKEN_BURST": "2", "CLUSTERPORT_AGENT_TOKEN_RATE": "0.01"}
    )
    for _ in range(2):
        async with tunnel(limited, agent_setup.token):
            pass
    status, body, headers = await refused(limited, agent_setup.token)
    assert status == 429 and '"rate_limited"' in body
    assert int(headers["retry-after"]) >= 1
    # Another token has its own bucket.
    other = await agent_setup.new_token("other")
    async with tunnel(limited, other["token"]):
        pass

    denied = processes.server(extra={"CLUSTERPORT_AGENT_IP_DENY": "127.0.0.0/8"})
    status, body, _ = await refused(denied, agent_setup.token)
    assert status == 403 and '"address_denied"' in body
    allow_only = processes.server(extra={"CLUSTERPORT_AGENT_IP_ALLOW": "10.0.0.0/8"})
    status, _, _ = await refused(allow_only, agent_setup.token)
    assert status == 403
