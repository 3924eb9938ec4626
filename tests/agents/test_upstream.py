"""The agent's HTTP/1.1 client for proxied requests, against loopback servers that answer
byte for byte what each test needs (reuse, chunked uploads, interim answers, broken answers)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from app.agent.upstream import Pool, Response, UpstreamError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """A loopback TCP server running `handler` per connection, counting connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Pool:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.pool = Pool(f"http://127.0.0.1:{port}", False)
        return self.pool

    async def __aexit__(self, *exc: object) -> None:
        await self.pool.close()
        assert self.server is not None
        self.server.close()


async def body_of(response: Response) -> bytes:
    chunks = []
    while not response.at_eof():
        chunks.append(await response.read())
    response.release()
    return b"".join(chunks)


async def answer_each(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while await reader.readuntil(b"\r\n\r\n"):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


async def test_connections_are_kept_alive_and_reused() -> None:
    server = Server(answer_each)
    async with server as pool:
        for _ in range(3):
            response = await pool.request("GET", "/a", [("Accept", "*/*")])
            assert (response.status, await body_of(response)) == (200, b"ok")
    assert server.connections == 1


async def test_a_body_without_length_is_sent_chunked() -> None:
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        received.set_result(head + await reader.readuntil(b"0\r\n\r\n"))
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        await reader.read()

    async def body() -> AsyncIterator[bytes]:
        yield b"hello"
        yield b""  # nothing to send: no empty chunk, which would end the body
        yield b", world"

    async with Server(handler) as pool:
        response = await pool.request("POST", "/things", [("Content-Type", "text/plain")], body())
        assert (response.status, await body_of(response)) == (201, b"")
    wire = await received
    assert wire.startswith(b"POST /things HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"Transfer-Encoding: chunked\r\n" in wire
    assert wire.endswith(b"\r\n\r\n5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n")


async def test_an_interim_answer_is_skipped_and_head_answers_have_no_body() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nnew")
        await reader.readuntil(b"\r\n\r\n")
        # The length of the body a GET would get: none follows.
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
        await reader.read()

    server = Server(handler)
    async with server as pool:
        response = await pool.request("PUT", "/x", [("Content-Length", "0")])
        assert (response.status, await body_of(response)) == (201, b"new")
        head = await pool.request("HEAD", "/x", [])
        assert head.status == 200 and ("Content-Length", "10") in head.headers
        assert await body_of(head) == b""
        # A HEAD answer's connection is not reused (its parser expected a body).
        again = await pool.request("PUT", "/x", [("Content-Length", "0")])
        assert (again.status, await body_of(again)) == (201, b"new")
    assert server.connections == 2


async def test_a_body_without_length_ends_with_the_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello")

    async with Server(handler) as pool:
        response = await pool.request("GET", "/", [])
        assert await body_of(response) == b"hello"


@pytest.mark.parametrize(
    "answer",
    [b"SSH-2.0-OpenSSH\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"],
    ids=["not_http", "cut_short"],
)
async def test_broken_answers_are_upstream_errors(answer: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)

    async with Server(handler) as pool:
        with pytest.raises(UpstreamError):
            await body_of(await pool.request("GET", "/", []))


async def test_line_breaks_in_a_header_never_reach_the_wire() -> None:
    server = Server(answer_each)
    async with server as pool:
        with pytest.raises(ValueError):
            await pool.request("GET", "/", [("X-Note", "a\r\nImpersonate-User: admin")])
        with pytest.raises(ValueError):
            await pool.request("GET", "/a HTTP/1.1\r\nX: y", [])
    assert server.connections == 0


async def test_an_unreachable_server_is_an_upstream_error() -> None:
    async with Server(answer_each) as pool:
        pass  # closed: nothing listens on its port any more
    with pytest.raises(UpstreamError):
        await pool.request("GET", "/", [])
