"""Tunnel protocol over a real loopback websocket: streams, flow control, heartbeats, bad frames."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from app.tunnel.frames import HEADER_SIZE, CloseCode, FrameType, ResetCode, encode
from app.tunnel.session import CloseInfo, Limits, Session, SessionClosed, Stream, StreamReset
from app.tunnel.transport import WebsocketTransport

Handler = Callable[[Stream], Awaitable[None]]


@dataclass
class Pair:
    server: Session
    agent: Session
    server_closed: asyncio.Future[CloseInfo]
    agent_task: asyncio.Task[CloseInfo]


async def echo(stream: Stream) -> None:
    await stream.send_headers(b"echo:" + stream.meta)
    while chunk := await stream.read():
        await stream.write(chunk)
    await stream.end()


@asynccontextmanager
async def tunnel(
    agent_handler: Handler = echo,
    server_limits: Limits | None = None,
    agent_limits: Limits | None = None,
    agent_pings: bool = True,
    on_drain: Callable[[dict[str, object]], None] | None = None,
) -> AsyncIterator[Pair]:
    limits = server_limits or Limits()
    sessions: asyncio.Queue[Session] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    server_closed: asyncio.Future[CloseInfo] = loop.create_future()

    async def handler(ws: ServerConnection) -> None:
        session = Session(
            WebsocketTransport(ws),
            is_server=True,
            hello={"capabilities": ["k8s-proxy", "drain"]},
            limits=limits,
        )
        try:
            await session.handshake()
        except SessionClosed:
            return
        await sessions.put(session)
        server_closed.set_result(await session.run())

    async with serve(
        handler, "127.0.0.1", 0, compression=None, ping_interval=None, max_size=limits.max_message
    ) as server:
        port = server.sockets[0].getsockname()[1]
        alimits = agent_limits or Limits()
        async with connect(
            f"ws://127.0.0.1:{port}/",
            compression=None,
            ping_interval=None,
            max_size=alimits.max_message,
            proxy=None,
        ) as ws:
            agent = Session(
                WebsocketTransport(ws),
                is_server=False,
                hello={"capabilities": ["k8s-proxy"], "agent_version": "test"},
                limits=alimits,
                on_stream=agent_handler,
                on_drain=on_drain,
                send_pings=agent_pings,
            )
            await agent.handshake()
            agent_task = asyncio.create_task(agent.run())
            server_session = await sessions.get()
            try:
                yield Pair(server_session, agent, server_closed, agent_task)
            finally:
                await agent.close()
                await agent_task


async def test_hello_negotiates_capabilities_and_echoes() -> None:
    async with tunnel() as pair:
        assert pair.agent.peer.capabilities == {"k8s-proxy"}
        assert pair.server.peer.hello["agent_version"] == "test"
        stream = await pair.server.open_stream(b"GET /")
        assert await stream.read_headers() == b"echo:GET /"
        await stream.write(b"hello " * 50_000)
        await stream.end()
        received = bytearray()
        while chunk := await stream.read():
            received += chunk
        assert bytes(received) == b"hello " * 50_000


async def test_many_concurrent_streams_share_one_connection() -> None:
    async with tunnel() as pair:

        async def one(i: int) -> bytes:
            stream = await pair.server.open_stream(str(i).encode())
            await stream.read_headers()
            await stream.write(f"payload-{i}".encode() * 1000)
            await stream.end()
            out = bytearray()
            while chunk := await stream.read():
                out += chunk
            return bytes(out)

        results = await asyncio.gather(*(one(i) for i in range(100)))
        assert all(r == f"payload-{i}".encode() * 1000 for i, r in enumerate(results))
        assert pair.server.stream_count == 0


async def test_slow_stream_does_not_stall_others_and_buffer_is_bounded() -> None:
    window = 64 * 1024
    stalled: asyncio.Queue[Stream] = asyncio.Queue()

    async def producer(stream: Stream) -> None:
        await stream.send_headers(b"ok")
        if stream.meta == b"slow":
            await stalled.put(stream)
        # Both streams try to push 4 MiB; only credit lets data through.
        await stream.write(b"x" * (4 * 1024 * 1024))
        await stream.end()

    limits = Limits(initial_window=window, max_payload=16 * 1024)
    async with tunnel(producer, server_limits=limits, agent_limits=limits) as pair:
        slow = await pair.server.open_stream(b"slow")
        await slow.read_headers()
        fast = await pair.server.open_stream(b"fast")
        await fast.read_headers()
        total = 0
        while chunk := await fast.read():
            total += len(chunk)
            assert slow.buffered <= window
        assert total == 4 * 1024 * 1024
        # The slow stream got at most one window of data while nobody read it.
        assert slow.buffered <= window
        assert slow.buffered > 0
        # Reading it now lets it finish.
        rest = slow.buffered
        while chunk := await slow.read():
            rest += len(chunk)
        assert rest >= 4 * 1024 * 1024


async def test_reset_reaches_the_other_side_with_its_code() -> None:
    async def refuse(stream: Stream) -> None:
        await stream.reset(ResetCode.UPSTREAM_UNREACHABLE, "kube-apiserver unreachable")

    async with tunnel(refuse) as pair:
        stream = await pair.server.open_stream(b"x")
        with pytest.raises(StreamReset) as info:
            await stream.read_headers()
        assert info.value.code == ResetCode.UPSTREAM_UNREACHABLE
        assert info.value.reason == "kube-apiserver unreachable"
        assert info.value.by_peer
        # The connection itself is still fine.
        assert pair.server.close_info is None


async def test_stream_limit_refuses_extra_streams() -> None:
    gate = asyncio.Event()

    async def hold(stream: Stream) -> None:
        await stream.send_headers(b"")
        await gate.wait()

    async with tunnel(hold, agent_limits=Limits(max_streams=2)) as pair:
        a = await pair.server.open_stream(b"a")
        b = await pair.server.open_stream(b"b")
        await a.read_headers()
        await b.read_headers()
        c = await pair.server.open_stream(b"c")
        with pytest.raises(StreamReset) as info:
            await c.read_headers()
        assert info.value.code == ResetCode.REFUSED
        gate.set()


async def test_drain_sends_reconnect_hint_and_refuses_new_streams() -> None:
    hints: asyncio.Queue[dict[str, object]] = asyncio.Queue()
    async with tunnel(on_drain=hints.put_nowait) as pair:
        await pair.server.drain(2500)
        assert await hints.get() == {"reconnect_after_ms": 2500}
        assert pair.agent.draining
        with pytest.raises(SessionClosed):
            await pair.agent.open_stream(b"x")


async def test_dead_peer_is_detected_by_missing_heartbeats() -> None:
    limits = Limits(heartbeat_interval=0.2, dead_after=0.5)
    async with tunnel(server_limits=limits, agent_pings=False) as pair:
        info = await pair.server_closed
        assert info.code == CloseCode.HEARTBEAT_TIMEOUT
        assert pair.server.close_info is not None
        closed = await pair.agent_task
        assert closed.code == CloseCode.HEARTBEAT_TIMEOUT


async def test_heartbeats_keep_a_quiet_connection_alive() -> None:
    server_limits = Limits(heartbeat_interval=0.1, dead_after=0.4)
    agent_limits = Limits(heartbeat_interval=0.1, dead_after=0.4)
    async with tunnel(server_limits=server_limits, agent_limits=agent_limits) as pair:
        # Ten dead_after periods pass; pings from the agent keep both sides up.
        for _ in range(40):
            await pair.agent.ping()
            await asyncio.sleep(0.1)
        assert pair.server.close_info is None
        stream = await pair.server.open_stream(b"still")
        assert await stream.read_headers() == b"echo:still"


@asynccontextmanager
async def raw_agent(
    limits: Limits | None = None,
) -> AsyncIterator[tuple[ClientConnection, asyncio.Future[CloseInfo]]]:
    """A raw websocket client that completes HELLO and may then misbehave."""
    limits = limits or Limits()
    closed: asyncio.Future[CloseInfo] = asyncio.get_running_loop().create_future()

    async def hold(stream: Stream) -> None:
        await asyncio.Event().wait()  # accepts streams and never reads them

    async def handler(ws: ServerConnection) -> None:
        session = Session(
            WebsocketTransport(ws), is_server=True, hello={}, limits=limits, on_stream=hold
        )
        try:
            await session.handshake()
        except SessionClosed:
            assert session.close_info is not None
            closed.set_result(session.close_info)
            return
        closed.set_result(await session.run())

    async with serve(
        handler, "127.0.0.1", 0, compression=None, ping_interval=None, max_size=limits.max_message
    ) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(
            f"ws://127.0.0.1:{port}/", compression=None, ping_interval=None, proxy=None
        ) as ws:
            yield ws, closed


def hello(**overrides: object) -> bytes:
    body: dict[str, object] = {
        "protocol": 1,
        "min_protocol": 1,
        "initial_window": 65536,
        "max_payload": 65536,
        "heartbeat_interval_ms": 15000,
    }
    body.update(overrides)
    return encode(FrameType.HELLO, 0, json.dumps(body).encode())


async def close_code(ws: ClientConnection) -> int | None:
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await ws.recv()
    frame = info.value.rcvd
    return None if frame is None else frame.code


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (b"\x04\x00", CloseCode.PROTOCOL_ERROR),  # shorter than a header
        (encode(FrameType.DATA, 0, b"x"), CloseCode.PROTOCOL_ERROR),  # DATA on stream 0
        (bytes([0x7F, 0, 0, 0, 0, 1]), CloseCode.PROTOCOL_ERROR),  # unknown type
        (encode(FrameType.WINDOW, 2, b"\x00"), CloseCode.PROTOCOL_ERROR),  # bad length
        (encode(FrameType.DATA, 2, b"x", flags=0x80), CloseCode.PROTOCOL_ERROR),  # bad flags
        (encode(FrameType.DATA, 9, b"x"), CloseCode.PROTOCOL_ERROR),  # never opened
        (encode(FrameType.OPEN, 3, b""), CloseCode.PROTOCOL_ERROR),  # server's id parity
        (hello(), CloseCode.PROTOCOL_ERROR),  # second HELLO
        ("text", CloseCode.UNSUPPORTED_DATA),
        (b"\x04\x00" + bytes(4) + b"x" * (70 * 1024), CloseCode.MESSAGE_TOO_BIG),
    ],
)
async def test_malformed_frames_close_with_a_clear_code(message: bytes | str, code: int) -> None:
    async with raw_agent() as (ws, server_closed):
        await ws.send(hello())
        await ws.recv()  # server HELLO
        await ws.send(message)
        assert await close_code(ws) == code
        info = await server_closed
        assert info.code == code


async def test_data_beyond_the_window_closes_the_connection() -> None:
    async with raw_agent(Limits(initial_window=4096, max_payload=4096)) as (ws, server_closed):
        await ws.send(hello())
        await ws.recv()
        await ws.send(encode(FrameType.OPEN, 2, b""))
        await ws.send(encode(FrameType.DATA, 2, b"x" * 4096))  # exactly the window: fine
        await ws.send(encode(FrameType.PING, 0, bytes(8)))
        pong = await ws.recv()
        assert isinstance(pong, bytes) and pong[0] == FrameType.PONG
        await ws.send(encode(FrameType.DATA, 2, b"x"))  # one byte over
        assert await close_code(ws) == CloseCode.FLOW_CONTROL_VIOLATION
        assert (await server_closed).code == CloseCode.FLOW_CONTROL_VIOLATION


async def test_frames_for_a_reset_stream_are_ignored() -> None:
    async with raw_agent() as (ws, server_closed):
        await ws.send(hello())
        await ws.recv()
        await ws.send(encode(FrameType.OPEN, 2, b""))
        await ws.send(encode(FrameType.RESET, 2, b"\x00\x01"))
        await ws.send(encode(FrameType.DATA, 2, b"late"))  # in flight when the reset landed
        await ws.send(encode(FrameType.PING, 0, bytes(8)))
        pong = await ws.recv()
        assert isinstance(pong, bytes) and pong[0] == FrameType.PONG
        assert not server_closed.done()


@pytest.mark.parametrize(
    ("first", "code"),
    [
        (encode(FrameType.PING, 0, bytes(8)), CloseCode.BAD_HELLO),
        (encode(FrameType.HELLO, 0, b"not json"), CloseCode.BAD_HELLO),
        (hello(initial_window=1), CloseCode.BAD_HELLO),
        (hello(protocol=7, min_protocol=7), CloseCode.INCOMPATIBLE_VERSION),
    ],
)
async def test_bad_hello_is_refused(first: bytes, code: int) -> None:
    async with raw_agent() as (ws, server_closed):
        await ws.send(first)
        assert await close_code(ws) == code
        assert (await server_closed).code == code


async def test_newer_agent_is_served_with_the_common_version() -> None:
    async with raw_agent() as (ws, _closed):
        await ws.send(hello(protocol=5, min_protocol=1))
        reply = await ws.recv()
        assert isinstance(reply, bytes)
        assert json.loads(reply[HEADER_SIZE:])["protocol"] == 1
