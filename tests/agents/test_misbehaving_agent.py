"""An agent that breaks the protocol gets its stream reset; the client gets a typed 502.
Nothing answers 500, nothing logs a traceback, metric labels stay bounded."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from app.tunnel.frames import CloseCode, FrameType, encode
from app.tunnel.session import Session, Stream
from app.tunnel.transport import WebsocketTransport
from tests.agents.conftest import AgentSetup, Processes, eventually
from tests.agents.support import AgentServerProc
from tests.agents.test_agent_lifecycle import dial
from tests.agents.test_agent_proxy import https

RESETS: list[int] = []


async def misbehave(stream: Stream) -> None:
    path = json.loads(stream.meta)["path"]
    if path == "/not-json":
        await stream.send_headers(b"this is not json", end=True)
    elif path == "/bad-status":
        await stream.send_headers(json.dumps({"status": 99999, "headers": []}).encode(), end=True)
    elif path == "/header-injection":
        reply = {"status": 200, "headers": [["X-A", "1\r\nSet-Cookie: evil=1"]]}
        await stream.send_headers(json.dumps(reply).encode(), end=True)
    elif path in ("/longer-than-said", "/shorter-than-said"):
        reply = {"status": 200, "headers": [["Content-Length", "4"]]}
        await stream.send_headers(json.dumps(reply).encode())
        await stream.write(b"12345" if path == "/longer-than-said" else b"123", end=True)
    elif path == "/unknown-reset":
        await stream.reset(9999, "made up")
    else:
        reply = {"status": 200, "headers": [["Content-Type", "text/plain"]]}
        await stream.send_headers(json.dumps(reply).encode())
        await stream.write(b"fine", end=True)


@asynccontextmanager
async def bad_agent(server: AgentServerProc, token: str) -> AsyncIterator[Session]:
    async with dial(server, token) as ws:
        session = Session(
            WebsocketTransport(ws),
            is_server=False,
            hello={"agent_version": "bad", "capabilities": ["k8s-proxy"]},
            on_stream=misbehave,
            send_pings=True,
        )
        await session.handshake()
        task = asyncio.create_task(session.run())
        try:
            yield session
        finally:
            await session.close()
            await task


async def test_malformed_replies_are_typed_502s_and_the_connection_survives(
    agent_setup: AgentSetup, processes: Processes
) -> None:
    server = processes.server()
    headers = {"Authorization": f"Bearer {agent_setup.developer_token}"}
    base = f"{server.proxy_url}/k8s-proxy/agents/{agent_setup.agent_id}"
    async with bad_agent(server, agent_setup.token) as session, https(server) as http:
        await eventually(agent_setup.connections, "the agent to connect")
        for path, code in (
            ("/not-json", "agent_bad_response"),
            ("/bad-status", "agent_bad_response"),
            ("/header-injection", "agent_bad_response"),
            ("/longer-than-said", "agent_bad_response"),
            ("/shorter-than-said", "agent_bad_response"),
            ("/unknown-reset", "agent_stream_failed"),
        ):
            response = await http.get(base + path, headers=headers)
            assert response.status_code == 502, (path, response.text)
            body = response.json()
            assert body["kind"] == "Status"
            assert body["details"]["causes"][0]["reason"] == code
            assert "Set-Cookie" not in response.headers
        # The same connection still serves good requests.
        ok = await http.get(base + "/fine", headers=headers)
        assert (ok.status_code, ok.text) == (200, "fine")
        assert session.close_info is None
        huge = await http.get(f"{server.proxy_url}/k8s-proxy/agents/{2**70}/api", headers=headers)
        assert huge.status_code == 404
        assert huge.json()["details"]["causes"][0]["reason"] == "agent_not_found"
        for odd in ("1_0", "%D9%A1"):
            weird = await http.get(
                f"{server.proxy_url}/k8s-proxy/agents/{odd}/api", headers=headers
            )
            assert weird.status_code == 404
    async with httpx.AsyncClient() as plain:
        metrics = (await plain.get(f"http://127.0.0.1:{server.health_port}/metrics")).text
    labels = [
        line for line in metrics.splitlines() if line.startswith("clusterport_agent_proxy_requests")
    ]
    assert any('outcome="reset_unknown"' in line for line in labels), labels
    assert any('outcome="bad_reply"' in line for line in labels), labels
    assert not any("9999" in line for line in labels)
    log = server.process.log()
    assert "Traceback" not in log and "Error handling request" not in log, log


_HELLO = {"protocol": 1, "initial_window": 65536, "max_payload": 65536}


async def test_a_malformed_hello_closes_with_bad_hello_and_no_traceback(
    agent_setup: AgentSetup, processes: Processes
) -> None:
    server = processes.server()
    for hello in (
        {**_HELLO, "heartbeat_interval_ms": 1000, "capabilities": 5},
        {**_HELLO, "heartbeat_interval_ms": 1000, "min_protocol": "one"},
        {**_HELLO, "heartbeat_interval_ms": 1000, "protocol": True},
        {**_HELLO, "heartbeat_interval_ms": 1000, "agent_version": {"nested": 1}},
        ["not", "an", "object"],
    ):
        async with dial(server, agent_setup.token) as ws:
            await ws.send(encode(FrameType.HELLO, 0, json.dumps(hello).encode()))
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == CloseCode.BAD_HELLO, hello
    assert "Traceback" not in server.process.log(), server.process.log()
