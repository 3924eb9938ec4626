"""HTTP upgrades (kubectl exec, attach, port-forward: WebSocket or SPDY) through the tunnel.

After the upgrade the connection carries bytes in both directions that only the two ends
understand; the tunnel relays them on one stream, with that stream's flow control, so a slow
reader on either side slows its writer down instead of filling memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from app.tunnel.session import SessionClosed, Stream, StreamReset

# The response head of an upgrade answer; anything longer is not an API server talking.
MAX_HEAD = 64 * 1024
# Bytes read from a socket per tunnel DATA frame.
CHUNK = 64 * 1024


class UpgradeError(Exception):
    """The upstream answered something that is not HTTP/1.1, or nothing at all."""


@dataclass
class UpstreamReply:
    status: int
    headers: list[tuple[str, str]]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    # A non-101 answer's body, read in full (error answers are small).
    body: bytes = b""
    extra: dict[str, str] = field(default_factory=dict)


def is_upgrade(headers: list[tuple[str, str]]) -> str | None:
    """The requested protocol when the request asks for a connection upgrade."""
    connection = ",".join(v for k, v in headers if k.lower() == "connection")
    if "upgrade" not in {t.strip().lower() for t in connection.split(",")}:
        return None
    for name, value in headers:
        if name.lower() == "upgrade" and value.strip():
            return value.strip()
    return None


async def open_upgrade(
    base_url: str,
    ssl_context: ssl.SSLContext | bool,
    method: str,
    path: str,
    headers: list[tuple[str, str]],
    upgrade: str,
) -> UpstreamReply:
    """Send an upgrade request over a fresh HTTP/1.1 connection and read the answer's head."""
    parts = urlsplit(base_url)
    # HTTP/1.1 only: an upgrade cannot happen over HTTP/2.
    context = tls_context(base_url, ssl_context)
    host = parts.hostname or ""
    port = parts.port or (443 if context else 80)
    reader, writer = await asyncio.open_connection(
        host, port, ssl=context, server_hostname=host if context else None, limit=MAX_HEAD
    )
    try:
        netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        lines = [f"{method} {path} HTTP/1.1", f"Host: {netloc}"]
        lines += [f"{k}: {v}" for k, v in headers]
        lines += ["Connection: Upgrade", f"Upgrade: {upgrade}", "", ""]
        writer.write("\r\n".join(lines).encode("latin-1"))
        await writer.drain()
        status, reply_headers = _parse_head(await reader.readuntil(b"\r\n\r\n"))
        body = b""
        if status != 101:
            body = await _read_body(reader, reply_headers)
        return UpstreamReply(status, reply_headers, reader, writer, body)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
        writer.close()
        raise UpgradeError("upstream answered no readable HTTP/1.1 head") from exc
    except BaseException:
        writer.close()
        raise


def tls_context(base_url: str, ssl_context: ssl.SSLContext | bool) -> ssl.SSLContext | None:
    """The TLS context for an https API server (None for http), speaking HTTP/1.1 only."""
    if urlsplit(base_url).scheme != "https":
        return None
    if isinstance(ssl_context, ssl.SSLContext):
        context = ssl_context
    else:
        context = ssl.create_default_context()
        if not ssl_context:  # insecure-skip-tls-verify in the kubeconfig
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    with contextlib.suppress(NotImplementedError):
        context.set_alpn_protocols(["http/1.1"])
    return context


def _parse_head(raw: bytes) -> tuple[int, list[tuple[str, str]]]:
    text = raw.decode("latin-1")
    status_line, *header_lines = text.split("\r\n")
    version, _, rest = status_line.partition(" ")
    if not version.startswith("HTTP/1."):
        raise ValueError("not HTTP/1.x")
    status = int(rest[:3])
    headers = []
    for line in header_lines:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError("bad header line")
        headers.append((name.strip(), value.strip()))
    return status, headers


async def _read_body(reader: asyncio.StreamReader, headers: list[tuple[str, str]]) -> bytes:
    values = {k.lower(): v for k, v in headers}
    if "content-length" in values:
        return await reader.readexactly(min(int(values["content-length"]), MAX_HEAD))
    if "chunked" in values.get("transfer-encoding", "").lower():
        body = b""
        while len(body) < MAX_HEAD:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            if size == 0:
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        return body
    return await reader.read(MAX_HEAD)


async def pipe_socket(
    stream: Stream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Relay between a tunnel stream and a socket until the socket's peer closes.

    The upstream side decides the end: its last bytes (a WebSocket close frame, an exit
    status) must reach the client even when writing to it has already failed.
    """

    async def stream_to_upstream() -> None:
        with contextlib.suppress(ConnectionError, OSError, StreamReset, SessionClosed):
            while chunk := await stream.read():  # credit goes back only as we read
                writer.write(chunk)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()

    upload = asyncio.create_task(stream_to_upstream())
    try:
        while chunk := await reader.read(CHUNK):
            await stream.write(chunk)  # waits for the peer's credit
        await stream.end()
    except (StreamReset, SessionClosed, ConnectionError, OSError):
        pass
    finally:
        upload.cancel()
        await asyncio.gather(upload, return_exceptions=True)
        writer.close()
