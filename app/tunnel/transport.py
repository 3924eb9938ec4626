"""Message transport under a tunnel session, and its adapter for `websockets` connections."""

from __future__ import annotations

from typing import Protocol

from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from app.tunnel.frames import CloseCode, ProtocolViolation


class TransportClosed(Exception):
    """The underlying connection is gone (either side closed it)."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"transport closed ({code}): {reason}")
        self.code = code
        self.reason = reason


class Transport(Protocol):
    """A reliable, ordered, message-oriented duplex channel (a websocket)."""

    async def send(self, message: bytes) -> None: ...

    async def send_many(self, messages: list[bytes]) -> None:
        """Send the messages in order, in one write to the socket where possible."""
        ...

    async def recv(self) -> bytes: ...

    async def close(self, code: int, reason: str) -> None: ...


class WebsocketTransport:
    """Adapts a `websockets` asyncio connection (server or client side)."""

    __slots__ = ("ws",)

    def __init__(self, ws: Connection) -> None:
        self.ws = ws

    async def send(self, message: bytes) -> None:
        await self.send_many([message])

    async def send_many(self, messages: list[bytes]) -> None:
        ws = self.ws
        if (
            ws.protocol.state is State.OPEN
            and not ws.paused
            and ws.send_in_progress is None
            and not ws.transport.is_closing()
        ):
            # The common case, written at once without `send`'s generic path (an async
            # context manager per message, a third of the CPU a small frame costs): open,
            # not in the middle of a fragmented message, socket not paused. Anything else
            # (closing, backpressure) goes the full way below, one message at a time.
            for message in messages:
                ws.protocol.send_binary(message)
            ws.transport.writelines(ws.protocol.data_to_send())
            return
        for message in messages:
            await self._send(message)

    async def _send(self, message: bytes) -> None:
        try:
            await self.ws.send(message)
        except ConnectionClosed as exc:
            raise _closed(exc) from None

    async def recv(self) -> bytes:
        try:
            message = await self.ws.recv()
        except ConnectionClosed as exc:
            raise _closed(exc) from None
        if isinstance(message, str):
            raise ProtocolViolation(CloseCode.UNSUPPORTED_DATA, "text frames are not allowed")
        return message

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code, reason)


def _closed(exc: ConnectionClosed) -> TransportClosed:
    frame = exc.rcvd or exc.sent
    if frame is None:
        return TransportClosed(None, "connection lost")
    return TransportClosed(frame.code, frame.reason)
