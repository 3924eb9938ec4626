"""The agent's HTTP/1.1 client for proxied requests to its API server: pooled keep-alive
connections, responses parsed by httptools and streamed back as they arrive.

The proxy forwards requests that are already formed to one host, so this client writes the
request head itself. A general client (aiohttp's) builds a URL, request, response, timers and
cookie handling per request, which cost three times the CPU of the request itself here.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import cast
from urllib.parse import urlsplit

import httptools

from app.tunnel.upgrade import tls_context

# Reading from the API server pauses while this much of an answer waits for the tunnel.
READ_BUFFER = 256 * 1024
# Idle connections are dropped before the API server's own idle timeout (90 s) could close
# one under a request.
IDLE_SECONDS = 30.0
MAX_IDLE = 64
CONNECT_SECONDS = 10.0


class UpstreamError(Exception):
    """The connection failed, or the API server's answer is not readable HTTP/1.1."""


class Response:
    """An answer whose body is read chunk by chunk; `release()` when done with it."""

    def __init__(self, connection: _Connection, status: int, headers: list[tuple[str, str]]):
        self._connection = connection
        self.status = status
        self.headers = headers

    def at_eof(self) -> bool:
        return self._connection.body_done()

    def whole(self) -> bytes | None:
        """The whole body when all of it has arrived already (None otherwise), consumed."""
        return self._connection.take_all()

    async def read(self) -> bytes:
        """The next chunk of the body; b"" at its end."""
        return await self._connection.read()

    def release(self) -> None:
        self._connection.finish()


class Pool:
    """Keep-alive connections to one API server."""

    def __init__(self, base_url: str, ssl_context: ssl.SSLContext | bool) -> None:
        parts = urlsplit(base_url)
        self._context = tls_context(base_url, ssl_context)
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._context else 80)
        netloc = f"[{self._host}]" if ":" in self._host else self._host
        self._host_line = f"Host: {netloc}:{self._port}\r\n"
        self._idle: deque[tuple[float, _Connection]] = deque()
        self._closed = False

    async def request(
        self,
        method: str,
        path: str,
        headers: list[tuple[str, str]],
        body: AsyncIterator[bytes] | None = None,
    ) -> Response:
        """Send one request and wait for the answer's head.

        A request without a body that fails on a reused connection before any answer arrived
        (the server closed it while idle) is sent once more on a new connection.
        """
        chunked = body is not None and not any(k.lower() == "content-length" for k, _ in headers)
        head = self._head(method, path, headers, chunked)
        while True:
            connection, reused = self._take()
            if connection is None:
                connection = await self._connect()
            try:
                return await connection.exchange(head, body, chunked, method == "HEAD")
            except UpstreamError:
                connection.close()
                if not (reused and body is None and not connection.answered):
                    raise
            except BaseException:
                connection.close()
                raise

    async def close(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop()[1].close()

    def _head(self, method: str, path: str, headers: list[tuple[str, str]], chunked: bool) -> bytes:
        lines = [f"{method} {path} HTTP/1.1\r\n", self._host_line]
        lines += [f"{name}: {value}\r\n" for name, value in headers]
        if chunked:
            lines.append("Transfer-Encoding: chunked\r\n")
        lines.append("\r\n")
        text = "".join(lines)
        # Names and values came through an HTTP parser already; a line break here could only
        # smuggle a second request.
        if not text.count("\r") == text.count("\n") == len(lines) or " " in path:
            raise ValueError("request head with a line break or a space in the path")
        # The agent server read the bytes as UTF-8 (undecodable ones as surrogates): the same
        # bytes go out.
        return text.encode("utf-8", "surrogateescape")

    def _take(self) -> tuple[_Connection | None, bool]:
        now = time.monotonic()
        while self._idle:
            since, connection = self._idle.pop()
            if now - since < IDLE_SECONDS and connection.reusable():
                return connection, True
            connection.close()
        return None, False

    def _give_back(self, connection: _Connection) -> None:
        if self._closed or len(self._idle) >= MAX_IDLE:
            connection.close()
        else:
            self._idle.append((time.monotonic(), connection))

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(CONNECT_SECONDS):
                _, connection = await loop.create_connection(
                    lambda: _Connection(self),
                    self._host,
                    self._port,
                    ssl=self._context,
                    server_hostname=self._host if self._context else None,
                )
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamError(f"cannot connect: {exc}") from exc
        return connection


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: one request at a time, httptools calling back as bytes arrive."""

    # Of the exchange under way (see _reset).
    _headers: list[tuple[str, str]]
    _upload: asyncio.Task[None] | None

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._head_waiter: asyncio.Future[None] | None = None
        self._chunks: deque[bytes] = deque()
        self._readable: asyncio.Future[None] | None = None
        self._error: UpstreamError | None = None
        self._paused = False
        self._write_ready: asyncio.Future[None] | None = None
        self._interim = False
        self._reset(head_only=False)

    async def exchange(
        self, head: bytes, body: AsyncIterator[bytes] | None, chunked: bool, head_only: bool
    ) -> Response:
        self._reset(head_only=head_only)
        transport = self._transport
        if transport is None:
            raise UpstreamError("the API server closed the connection")
        waiter = self._head_waiter = self._loop.create_future()
        transport.write(head)
        if body is not None:
            self._upload = self._loop.create_task(self._send_body(body, chunked))
        await waiter
        return Response(self, self._parser.get_status_code(), self._headers)

    def _reset(self, head_only: bool) -> None:
        """Ready for the next exchange on this connection."""
        self._headers = []
        self._chunks.clear()
        self._buffered = 0
        self._complete = False
        self._head_only = head_only
        self._upload = None
        self._until_close = False
        self._keep_alive = False
        self.answered = False

    async def _send_body(self, body: AsyncIterator[bytes], chunked: bool) -> None:
        try:
            async for chunk in body:
                if self._transport is None:
                    return
                if not chunk:
                    continue
                if chunked:
                    self._transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
                else:
                    self._transport.write(chunk)
                if self._write_ready is not None:
                    await self._write_ready
            if chunked and self._transport is not None:
                self._transport.write(b"0\r\n\r\n")
        except Exception:
            # The body's source failed (its stream was reset): the request cannot complete.
            self.close()

    def reusable(self) -> bool:
        return (
            self._transport is not None
            and not self._transport.is_closing()
            and self._error is None
            and self._complete
        )

    def body_done(self) -> bool:
        return self._complete and not self._chunks

    def take_all(self) -> bytes | None:
        if not self._complete:
            return None
        body = b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        return body

    async def read(self) -> bytes:
        while not self._chunks:
            if self._complete:
                return b""
            if self._error is not None:
                raise self._error
            self._readable = self._loop.create_future()
            await self._readable
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._paused and self._buffered < READ_BUFFER // 2 and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        return chunk

    def finish(self) -> None:
        """The caller is done: keep the connection for the next request, or close it."""
        upload = self._upload
        if upload is not None and not upload.done():
            upload.cancel()
            self.close()
        elif self.reusable() and not self._head_only and not self._chunks and self._keep_alive:
            self._pool._give_back(self)
        else:
            self.close()

    def close(self) -> None:
        if self._upload is not None and not self._upload.done():
            self._upload.cancel()
        if self._transport is not None:
            self._transport.close()

    def _wake(self, error: UpstreamError | None = None) -> None:
        if error is not None and self._error is None:
            self._error = error
        waiter = self._head_waiter
        if waiter is not None and not waiter.done():
            if self._error is not None:
                waiter.set_exception(self._error)
            else:
                waiter.set_result(None)
        readable = self._readable
        if readable is not None and not readable.done():
            readable.set_result(None)

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TLS transport is not an asyncio.Transport subclass, but has its methods.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._wake(UpstreamError(f"unreadable answer: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._until_close and exc is None:
            self._complete = True  # a body without a length ends with the connection
            self._wake()
        elif not self._complete:
            self._wake(UpstreamError("the API server closed the connection"))
        if self._write_ready is not None and not self._write_ready.done():
            self._write_ready.set_result(None)

    def pause_writing(self) -> None:
        self._write_ready = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._write_ready is not None and not self._write_ready.done():
            self._write_ready.set_result(None)
        self._write_ready = None

    # -- httptools callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.answered = True

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            # 100 Continue and other interim answers: the final answer follows.
            self._interim = True
            self._headers = []
            return
        # Read now: once the answer is complete the parser reports on the next one.
        self._keep_alive = self._parser.should_keep_alive()
        if self._head_only:
            # The answer to HEAD has no body whatever its Content-Length says; the parser
            # cannot be told, so the connection is not reused.
            self._complete = True
        elif status not in (204, 304):
            names = {name.lower() for name, _ in self._headers}
            self._until_close = not names & {"content-length", "transfer-encoding"}
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(bytes(body))
        self._buffered += len(body)
        if self._buffered > READ_BUFFER and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._complete = True
        self._wake()
