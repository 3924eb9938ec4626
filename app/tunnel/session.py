"""Stream multiplexer over one tunnel connection: hello, streams, flow control, heartbeats."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from app.tunnel.frames import (
    FLAG_END,
    HEADER_SIZE,
    PROTOCOL_VERSION,
    CloseCode,
    Frame,
    FrameType,
    ProtocolViolation,
    ResetCode,
    decode,
    encode,
    parse_reset,
    parse_window,
    reset_payload,
    window_payload,
)
from app.tunnel.transport import Transport, TransportClosed

MIN_PROTOCOL_VERSION = 1
_MAX_CREDIT = 2**31 - 1


@dataclass(frozen=True, slots=True)
class Limits:
    """What this side accepts from its peer; the peer learns them from our HELLO."""

    initial_window: int = 256 * 1024
    max_payload: int = 64 * 1024
    max_streams: int = 256
    heartbeat_interval: float = 15.0
    dead_after: float = 45.0
    hello_timeout: float = 10.0

    @property
    def max_message(self) -> int:
        """Largest websocket message to accept (set as the websocket's max_size)."""
        return HEADER_SIZE + self.max_payload


class StreamReset(Exception):
    """The stream was aborted, by the peer or locally, or its connection was lost."""

    def __init__(self, code: int, reason: str, *, by_peer: bool) -> None:
        super().__init__(f"stream reset ({code}): {reason}")
        self.code = code
        self.reason = reason
        self.by_peer = by_peer


class SessionClosed(Exception):
    """The tunnel connection is closed; no more streams can be used."""


@dataclass(slots=True)
class CloseInfo:
    code: int | None = None
    reason: str = ""
    by_peer: bool = False


StreamHandler = Callable[["Stream"], Awaitable[None]]


class Stream:
    """One logical bidirectional byte stream with its own flow control."""

    __slots__ = (
        "_buffered",
        "_chunks",
        "_consumed",
        "_credit",
        "_credit_event",
        "_handler",
        "_headers",
        "_local_ended",
        "_readable",
        "_recv_credit",
        "_remote_ended",
        "_reset",
        "_session",
        "id",
        "meta",
    )

    def __init__(self, session: Session, stream_id: int, meta: bytes) -> None:
        self._session = session
        self.id = stream_id
        self.meta = meta
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        # Created only while this stream's reader or writer waits (most streams never do).
        self._readable: asyncio.Future[None] | None = None
        self._remote_ended = False
        self._local_ended = False
        self._reset: StreamReset | None = None
        self._credit = session.peer_window
        self._credit_event: asyncio.Future[None] | None = None
        self._recv_credit = session.limits.initial_window
        self._consumed = 0
        self._headers: asyncio.Future[bytes] = session._loop.create_future()
        # The task serving a stream the peer opened: the peer resetting the stream stops it,
        # even while it waits on something else (a quiet watch upstream).
        self._handler: asyncio.Task[None] | None = None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet read (never more than our window)."""
        return self._buffered

    async def read(self) -> bytes:
        """Next chunk of data; b"" once the peer ended the stream."""
        while not self._chunks:
            if self._reset is not None:
                raise self._reset
            if self._remote_ended:
                return b""
            self._readable = self._session._loop.create_future()
            await self._readable
        if self._reset is not None:
            raise self._reset
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        self._consumed += len(chunk)
        # Batch credit returns: one WINDOW frame per half window read.
        if self._consumed * 2 >= self._session.limits.initial_window and not self._remote_ended:
            increment, self._consumed = self._consumed, 0
            self._recv_credit += increment
            await self._session.send_frame(FrameType.WINDOW, self.id, window_payload(increment))
        return chunk

    async def read_headers(self) -> bytes:
        """The HEADERS the accepting side sent back (the opener waits for it)."""
        if self._headers.done():
            return self._headers.result()
        return await asyncio.shield(self._headers)

    async def send_headers(self, meta: bytes, *, end: bool = False) -> None:
        """Send the reply head; `end` when no data follows (one frame instead of two)."""
        self._check_open()
        if end:
            self._local_ended = True
        await self._session.send_frame(FrameType.HEADERS, self.id, meta, FLAG_END if end else 0)
        if end:
            self._maybe_forget()

    async def send_reply(self, meta: bytes, body: bytes) -> None:
        """Send the reply head and its whole body, ending the stream: in one write to the
        socket when the body fits in one frame and in the peer's credit."""
        if not body or len(body) > min(self._credit, self._session.peer_max_payload):
            await self.send_headers(meta, end=not body)
            if body:
                await self.write(body, end=True)
            return
        self._check_open()
        self._credit -= len(body)
        self._local_ended = True
        await self._session.send_frames(
            [
                (FrameType.HEADERS, self.id, meta, 0),
                (FrameType.DATA, self.id, body, FLAG_END),
            ]
        )
        self._maybe_forget()

    async def write(self, data: bytes, *, end: bool = False) -> None:
        """Send data, waiting for credit; a slow peer reader only blocks this stream.

        `end` marks the last frame, saving a separate END frame.
        """
        view = memoryview(data)
        max_payload = self._session.peer_max_payload
        while view:
            self._check_open()
            if self._credit <= 0:
                self._credit_event = self._session._loop.create_future()
                await self._credit_event
                continue
            size = min(len(view), self._credit, max_payload)
            self._credit -= size
            last = end and size == len(view)
            if last:
                self._local_ended = True
            await self._session.send_frame(
                FrameType.DATA, self.id, bytes(view[:size]), FLAG_END if last else 0
            )
            view = view[size:]
        if end:
            if not self._local_ended:
                await self.end()
            else:
                self._maybe_forget()

    async def end(self) -> None:
        """Half-close: no more data from this side."""
        if self._local_ended or self._reset is not None:
            return
        self._local_ended = True
        await self._session.send_frame(FrameType.END, self.id)
        self._maybe_forget()

    async def reset(self, code: int, reason: str = "") -> None:
        """Abort both directions; the peer sees a StreamReset with `code`."""
        if self._reset is not None or (self._local_ended and self._remote_ended):
            return
        self._abort(StreamReset(code, reason, by_peer=False))
        with contextlib.suppress(SessionClosed):
            await self._session.send_frame(FrameType.RESET, self.id, reset_payload(code, reason))

    def _check_open(self) -> None:
        if self._reset is not None:
            raise self._reset
        if self._local_ended:
            raise RuntimeError("stream already ended")

    def _abort(self, exc: StreamReset) -> None:
        self._reset = exc
        self._chunks.clear()
        self._buffered = 0
        _wake(self._readable)
        _wake(self._credit_event)
        if not self._headers.done():
            self._headers.set_exception(exc)
            self._headers.exception()  # mark retrieved: nobody may be waiting for headers
        self._session._forget(self.id)

    def _maybe_forget(self) -> None:
        if self._local_ended and self._remote_ended:
            self._session._forget(self.id)

    # Called by the session's read loop; never await here.
    def _on_data(self, payload: bytes, end: bool) -> None:
        if self._remote_ended:
            raise ProtocolViolation(CloseCode.PROTOCOL_ERROR, f"DATA after END on stream {self.id}")
        if len(payload) > self._recv_credit:
            raise ProtocolViolation(
                CloseCode.FLOW_CONTROL_VIOLATION, f"stream {self.id} sent beyond its window"
            )
        self._recv_credit -= len(payload)
        if payload:
            self._chunks.append(payload)
            self._buffered += len(payload)
        if end:
            self._remote_ended = True
            self._maybe_forget()
        _wake(self._readable)

    def _on_end(self) -> None:
        self._on_data(b"", True)

    def _on_window(self, increment: int) -> None:
        if increment == 0 or self._credit + increment > _MAX_CREDIT:
            raise ProtocolViolation(CloseCode.FLOW_CONTROL_VIOLATION, "bad WINDOW increment")
        self._credit += increment
        _wake(self._credit_event)


@dataclass(slots=True)
class _Peer:
    hello: dict[str, Any] = field(default_factory=dict)
    protocol: int = PROTOCOL_VERSION
    capabilities: frozenset[str] = frozenset()


class Session:
    """A tunnel connection seen from one side (`is_server` picks odd or even stream ids)."""

    def __init__(
        self,
        transport: Transport,
        *,
        is_server: bool,
        hello: dict[str, Any],
        limits: Limits | None = None,
        on_stream: StreamHandler | None = None,
        on_drain: Callable[[dict[str, Any]], None] | None = None,
        send_pings: bool = False,
    ) -> None:
        self.transport = transport
        self.is_server = is_server
        self.limits = limits or Limits()
        self.local_hello = hello
        self.peer = _Peer()
        self.peer_window = self.limits.initial_window
        self.peer_max_payload = self.limits.max_payload
        self.heartbeat_interval = self.limits.heartbeat_interval
        self.draining = False
        self.close_info: CloseInfo | None = None
        self.closed = asyncio.Event()
        self._idle = asyncio.Event()
        self._on_stream = on_stream
        self._on_drain = on_drain
        self._send_pings = send_pings
        self._streams: dict[int, Stream] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._next_id = 1 if is_server else 2
        self._last_peer_id = 0
        self._loop = asyncio.get_running_loop()
        self.last_received = self._loop.time()
        self._timer: asyncio.TimerHandle | None = None

    # -- handshake -----------------------------------------------------------------------------

    def _own_hello(self) -> dict[str, Any]:
        return {
            "protocol": PROTOCOL_VERSION,
            "min_protocol": MIN_PROTOCOL_VERSION,
            "initial_window": self.limits.initial_window,
            "max_payload": self.limits.max_payload,
            "max_streams": self.limits.max_streams,
            "heartbeat_interval_ms": int(self.limits.heartbeat_interval * 1000),
            **self.local_hello,
        }

    async def handshake(self) -> dict[str, Any]:
        """Exchange HELLO (the agent speaks first); close the connection if it fails."""
        try:
            if not self.is_server:
                await self.send_frame(FrameType.HELLO, 0, json.dumps(self._own_hello()).encode())
            async with asyncio.timeout(self.limits.hello_timeout):
                message = await self.transport.recv()
            frame = decode(message, self.limits.max_payload)
            if frame.type is not FrameType.HELLO:
                raise ProtocolViolation(CloseCode.BAD_HELLO, "first frame must be HELLO")
            peer = self._parse_hello(frame.payload)
            own = self._own_hello()
            if self.is_server:
                version = min(int(peer["protocol"]), PROTOCOL_VERSION)
                if version < max(int(peer.get("min_protocol", 1)), MIN_PROTOCOL_VERSION):
                    raise ProtocolViolation(
                        CloseCode.INCOMPATIBLE_VERSION,
                        f"server speaks protocol {MIN_PROTOCOL_VERSION}..{PROTOCOL_VERSION}",
                    )
                caps = frozenset(own.get("capabilities", ())) & frozenset(
                    peer.get("capabilities", ())
                )
                own.update(protocol=version, capabilities=sorted(caps))
                await self.send_frame(FrameType.HELLO, 0, json.dumps(own).encode())
            else:
                version = int(peer["protocol"])
                if not MIN_PROTOCOL_VERSION <= version <= PROTOCOL_VERSION:
                    raise ProtocolViolation(
                        CloseCode.INCOMPATIBLE_VERSION, f"server chose protocol {version}"
                    )
                caps = frozenset(peer.get("capabilities", ()))
                self.heartbeat_interval = max(1.0, peer["heartbeat_interval_ms"] / 1000)
            self.peer = _Peer(peer, version, caps)
            self.peer_window = int(peer["initial_window"])
            self.peer_max_payload = int(peer["max_payload"])
        except TimeoutError:
            await self._fail(CloseCode.BAD_HELLO, "no HELLO in time")
            raise SessionClosed("no HELLO in time") from None
        except ProtocolViolation as exc:
            await self._fail(exc.code, exc.reason)
            raise SessionClosed(exc.reason) from None
        except TransportClosed as exc:
            self._mark_closed(exc.code, exc.reason, by_peer=True)
            raise SessionClosed(exc.reason) from None
        self.last_received = self._loop.time()
        return self.peer.hello

    @staticmethod
    def _parse_hello(payload: bytes) -> dict[str, Any]:
        try:
            hello = json.loads(payload)
        except ValueError:
            raise ProtocolViolation(CloseCode.BAD_HELLO, "HELLO is not JSON") from None
        if not isinstance(hello, dict):
            raise ProtocolViolation(CloseCode.BAD_HELLO, "HELLO must be an object")
        for key, low, high in (
            ("protocol", 1, 1 << 16),
            ("min_protocol", 1, 1 << 16),
            ("initial_window", 1024, 1 << 30),
            ("max_payload", 1024, 16 << 20),
            ("heartbeat_interval_ms", 100, 3_600_000),
        ):
            value = hello.get(key, low if key == "min_protocol" else None)
            if type(value) is not int or not low <= value <= high:
                raise ProtocolViolation(CloseCode.BAD_HELLO, f"HELLO field {key} is invalid")
        capabilities = hello.get("capabilities", [])
        if not isinstance(capabilities, list) or not all(
            isinstance(c, str) and len(c) <= 64 for c in capabilities[:64]
        ):
            raise ProtocolViolation(CloseCode.BAD_HELLO, "HELLO field capabilities is invalid")
        hello["capabilities"] = capabilities[:64]
        for key in ("agent_version", "kubernetes_version", "replica", "connection_id"):
            if key in hello and not isinstance(hello[key], str):
                raise ProtocolViolation(CloseCode.BAD_HELLO, f"HELLO field {key} is invalid")
        return hello

    # -- running -------------------------------------------------------------------------------

    async def run(self) -> CloseInfo:
        """Read frames until the connection closes; returns why it closed."""
        self._arm_timer()
        try:
            while True:
                message = await self.transport.recv()
                self.last_received = self._loop.time()
                await self._dispatch(decode(message, self.limits.max_payload))
        except ProtocolViolation as exc:
            await self._fail(exc.code, exc.reason)
        except TransportClosed as exc:
            self._mark_closed(exc.code, exc.reason, by_peer=True)
        finally:
            if self._timer is not None:
                self._timer.cancel()
            if self.close_info is None:
                self._mark_closed(None, "session stopped", by_peer=False)
        assert self.close_info is not None
        return self.close_info

    async def _dispatch(self, frame: Frame) -> None:
        kind = frame.type
        if kind is FrameType.DATA:
            stream = self._streams.get(frame.stream_id)
            if stream is not None:
                stream._on_data(frame.payload, bool(frame.flags & FLAG_END))
            else:
                self._check_known(frame.stream_id)
        elif kind is FrameType.WINDOW:
            stream = self._streams.get(frame.stream_id)
            if stream is not None:
                stream._on_window(parse_window(frame.payload))
        elif kind is FrameType.OPEN:
            await self._accept(frame)
        elif kind is FrameType.HEADERS:
            stream = self._streams.get(frame.stream_id)
            if stream is not None and not stream._headers.done():
                stream._headers.set_result(frame.payload)
                if frame.flags & FLAG_END:
                    stream._on_end()
        elif kind is FrameType.END:
            stream = self._streams.get(frame.stream_id)
            if stream is not None:
                stream._on_end()
            else:
                self._check_known(frame.stream_id)
        elif kind is FrameType.RESET:
            stream = self._streams.get(frame.stream_id)
            if stream is not None:
                code, reason = parse_reset(frame.payload)
                stream._abort(StreamReset(code, reason, by_peer=True))
                if stream._handler is not None:
                    stream._handler.cancel()
        elif kind is FrameType.PING:
            await self.send_frame(FrameType.PONG, 0, frame.payload)
        elif kind is FrameType.PONG:
            pass  # last_received already moved forward
        elif kind is FrameType.DRAIN:
            self.draining = True
            info = _json_object(frame.payload)
            if self._on_drain is not None:
                self._on_drain(info)
        else:  # HELLO after the handshake
            raise ProtocolViolation(CloseCode.PROTOCOL_ERROR, f"unexpected {kind.name}")

    def _check_known(self, stream_id: int) -> None:
        # Frames for streams we already forgot are normal after a reset; ids never opened are not.
        mine = (stream_id % 2 == 1) == self.is_server
        if (mine and stream_id >= self._next_id) or (not mine and stream_id > self._last_peer_id):
            raise ProtocolViolation(
                CloseCode.PROTOCOL_ERROR, f"frame for unknown stream {stream_id}"
            )

    async def _accept(self, frame: Frame) -> None:
        sid = frame.stream_id
        if (sid % 2 == 1) == self.is_server or sid <= self._last_peer_id:
            raise ProtocolViolation(CloseCode.PROTOCOL_ERROR, f"bad stream id {sid} in OPEN")
        self._last_peer_id = sid
        if (
            self._on_stream is None
            or self.draining
            or len(self._streams) >= self.limits.max_streams
        ):
            reason = "draining" if self.draining else "stream refused"
            await self.send_frame(FrameType.RESET, sid, reset_payload(ResetCode.REFUSED, reason))
            return
        stream = Stream(self, sid, frame.payload)
        self._streams[sid] = stream
        if frame.flags & FLAG_END:
            stream._remote_ended = True
        task = self._loop.create_task(self._serve(stream, self._on_stream))
        stream._handler = task
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _serve(self, stream: Stream, handler: StreamHandler) -> None:
        try:
            await handler(stream)
        except (StreamReset, SessionClosed):
            pass
        except Exception:
            await stream.reset(ResetCode.INTERNAL, "stream handler failed")
            raise
        else:
            # A handler that returns is done with the stream: end our side, drop anything more.
            with contextlib.suppress(SessionClosed, StreamReset):
                await stream.end()
            self._forget(stream.id)

    # -- local actions -------------------------------------------------------------------------

    async def open_stream(self, meta: bytes, *, end: bool = False) -> Stream:
        """Open a stream carrying `meta` (the request head, for the proxy).

        `end`: the opener sends no data (a GET), so OPEN also ends its side.
        """
        if self.close_info is not None:
            raise SessionClosed("connection closed")
        if self.draining:
            raise SessionClosed("connection is draining")
        sid = self._next_id
        self._next_id += 2
        stream = Stream(self, sid, meta)
        self._streams[sid] = stream
        stream._local_ended = end
        await self.send_frame(FrameType.OPEN, sid, meta, FLAG_END if end else 0)
        return stream

    async def drain(self, reconnect_after_ms: int) -> None:
        """Tell the peer to reconnect elsewhere after the hinted delay; refuse new streams."""
        self.draining = True
        payload = json.dumps({"reconnect_after_ms": reconnect_after_ms}).encode()
        with contextlib.suppress(SessionClosed):
            await self.send_frame(FrameType.DRAIN, 0, payload)

    async def ping(self) -> None:
        await self.send_frame(FrameType.PING, 0, os.urandom(8))

    async def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        await self._fail(code, reason, by_peer=False)

    async def idle(self) -> None:
        """Wait until no stream is open (or the connection closed); used when draining."""
        while self._streams and self.close_info is None:
            self._idle.clear()
            await self._idle.wait()

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    async def send_frame(
        self, frame_type: FrameType, stream_id: int, payload: bytes = b"", flags: int = 0
    ) -> None:
        await self.send_frames([(frame_type, stream_id, payload, flags)])

    async def send_frames(self, frames: list[tuple[FrameType, int, bytes, int]]) -> None:
        """Send frames in order (each its own websocket message), together where possible."""
        if self.close_info is not None:
            raise SessionClosed("connection closed")
        try:
            await self.transport.send_many([encode(*frame) for frame in frames])
        except TransportClosed as exc:
            self._mark_closed(exc.code, exc.reason, by_peer=True)
            raise SessionClosed(exc.reason) from None

    # -- internals -----------------------------------------------------------------------------

    def _forget(self, stream_id: int) -> None:
        self._streams.pop(stream_id, None)
        if not self._streams:
            self._idle.set()

    def _arm_timer(self) -> None:
        self._timer = self._loop.call_later(self.heartbeat_interval, self._tick)

    def _tick(self) -> None:
        if self.close_info is not None:
            return
        silent = self._loop.time() - self.last_received
        if silent > self.limits.dead_after:
            self._spawn(self._fail(CloseCode.HEARTBEAT_TIMEOUT, "peer missed heartbeats"))
            return
        if self._send_pings:
            self._spawn(self._quiet(self.ping()))
        self._arm_timer()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _quiet(coro: Coroutine[Any, Any, None]) -> None:
        with contextlib.suppress(SessionClosed):
            await coro

    async def _fail(self, code: int, reason: str, *, by_peer: bool = False) -> None:
        if self.close_info is None:
            self._mark_closed(code, reason, by_peer=by_peer)
        with contextlib.suppress(TransportClosed):
            await self.transport.close(code, reason)

    def _mark_closed(self, code: int | None, reason: str, *, by_peer: bool) -> None:
        if self.close_info is not None:
            return
        self.close_info = CloseInfo(code, reason, by_peer)
        for stream in list(self._streams.values()):
            stream._abort(
                StreamReset(ResetCode.CONNECTION_LOST, "tunnel connection lost", by_peer=False)
            )
        self._streams.clear()
        self._idle.set()
        if self._timer is not None:
            self._timer.cancel()
        # Handlers may be waiting on their upstream (a watch); nobody can receive their output.
        for task in self._handlers:
            task.cancel()
        self.closed.set()


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def _json_object(payload: bytes) -> dict[str, Any]:
    try:
        value = json.loads(payload or b"{}")
    except ValueError:
        raise ProtocolViolation(CloseCode.PROTOCOL_ERROR, "control payload is not JSON") from None
    if not isinstance(value, dict):
        raise ProtocolViolation(CloseCode.PROTOCOL_ERROR, "control payload must be an object")
    return value
