"""Serves proxy streams: replays each HTTP request against the kube-apiserver, streams back."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import aiohttp
from prometheus_client import Counter

from app.agent.kube import KubeTarget
from app.agent.upstream import Pool, UpstreamError
from app.tunnel.frames import ResetCode
from app.tunnel.session import Stream
from app.tunnel.upgrade import UpgradeError, open_upgrade, pipe_socket

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "authorization",
        # The agent server answered the client's 100-continue already.
        "expect",
    }
)
REQUESTS = Counter("clusterport_agent_proxy_requests_total", "Proxied requests", ["outcome"])
_OK = REQUESTS.labels("ok")
UPGRADES = REQUESTS.labels("upgraded")
# Watches stay open for as long as the client wants; only connecting is bounded.
VERSION_TTL = 600.0
VERSION_RETRY = 30.0
UPSTREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=10, sock_connect=10)


class KubeProxy:
    """One per agent process: pooled connections to the kube-apiserver. Proxied requests go
    through the lean `Pool`; the version lookup and the GitOps applier use aiohttp."""

    def __init__(self, target: KubeTarget) -> None:
        self.target = target
        self._version: tuple[float, str] | None = None
        self.pool = Pool(target.base_url, target.ssl_context)
        self.client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=target.ssl_context, limit=0),
            auto_decompress=False,
            timeout=UPSTREAM_TIMEOUT,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        )

    async def close(self) -> None:
        await self.pool.close()
        await self.client.close()

    async def kubernetes_version(self) -> str:
        """The API server's version, for the HELLO; cached so reconnect storms stay cheap."""
        now = time.monotonic()
        if self._version is not None and now < self._version[0]:
            return self._version[1]
        version = await self._fetch_version()
        # A failed lookup is retried sooner, but not on every reconnect attempt.
        ttl = VERSION_TTL if version != "unknown" else VERSION_RETRY
        self._version = (now + ttl, version)
        return version

    async def _fetch_version(self) -> str:
        try:
            async with self.client.get(
                self.target.base_url + "/version",
                headers=self.auth_headers(),
                timeout=aiohttp.ClientTimeout(total=5),
            ) as resp:
                if resp.status == 200:
                    return str((await resp.json(content_type=None)).get("gitVersion", "unknown"))
        except (aiohttp.ClientError, TimeoutError, ValueError):
            pass
        return "unknown"

    def auth_headers(self) -> dict[str, str]:
        header = self.target.auth_header()
        return {"Authorization": header} if header else {}

    async def handle(self, stream: Stream) -> None:
        try:
            head = json.loads(stream.meta)
            method = str(head["method"])
            path = str(head["path"])
            if not path.startswith("/"):
                raise ValueError(path)
            headers = [(str(k), str(v)) for k, v in head.get("headers", [])]
            has_body = bool(head.get("body"))
            upgrade = head.get("upgrade")
            if upgrade is not None and not isinstance(upgrade, str):
                raise TypeError(upgrade)
        except (ValueError, KeyError, TypeError):
            REQUESTS.labels("bad_request").inc()
            await stream.reset(ResetCode.BAD_REQUEST, "malformed request head")
            return
        out = [(k, v) for k, v in headers if k.lower() not in HOP_BY_HOP]
        out.extend(self.auth_headers().items())
        if upgrade:
            await self._upgrade(stream, method, path, out, upgrade)
            return
        try:
            response = await self.pool.request(
                method, path, out, _body(stream) if has_body else None
            )
        except ValueError:
            REQUESTS.labels("bad_request").inc()
            await stream.reset(ResetCode.BAD_REQUEST, "malformed request head")
            return
        except (UpstreamError, OSError):
            REQUESTS.labels("upstream_unreachable").inc()
            await stream.reset(ResetCode.UPSTREAM_UNREACHABLE, "kube-apiserver unreachable")
            return
        except TimeoutError:
            REQUESTS.labels("upstream_timeout").inc()
            await stream.reset(ResetCode.UPSTREAM_TIMEOUT, "kube-apiserver timed out")
            return
        try:
            reply = {
                "status": response.status,
                "headers": [[k, v] for k, v in response.headers if k.lower() not in HOP_BY_HOP],
            }
            meta = json.dumps(reply).encode()
            whole = response.whole()
            if whole is not None:
                # Most answers are here whole by now: head and body in one write.
                await stream.send_reply(meta, whole)
                ended = True
            else:
                await stream.send_headers(meta)
                ended = False
            while not ended:
                chunk = await response.read()
                ended = response.at_eof()
                await stream.write(chunk, end=ended)
        except UpstreamError:
            REQUESTS.labels("upstream_unreachable").inc()
            await stream.reset(ResetCode.UPSTREAM_UNREACHABLE, "kube-apiserver unreachable")
            return
        finally:
            response.release()
        _OK.inc()

    async def _upgrade(
        self, stream: Stream, method: str, path: str, headers: list[tuple[str, str]], upgrade: str
    ) -> None:
        """exec, attach, port-forward: the API server switches protocols, then bytes flow both
        ways on this stream until either end closes."""
        target = self.target
        try:
            async with asyncio.timeout(UPSTREAM_TIMEOUT.connect or 10):
                reply = await open_upgrade(
                    target.base_url, target.ssl_context, method, path, headers, upgrade
                )
        except TimeoutError:
            REQUESTS.labels("upstream_timeout").inc()
            await stream.reset(ResetCode.UPSTREAM_TIMEOUT, "kube-apiserver timed out")
            return
        except (UpgradeError, OSError):
            REQUESTS.labels("upstream_unreachable").inc()
            await stream.reset(ResetCode.UPSTREAM_UNREACHABLE, "kube-apiserver unreachable")
            return
        answer = {
            "status": reply.status,
            "headers": [[k, v] for k, v in reply.headers if k.lower() not in HOP_BY_HOP],
        }
        if reply.status != 101:
            # Refused (403, 400...): an ordinary answer; kubectl may retry with SPDY.
            reply.writer.close()
            await stream.send_headers(json.dumps(answer).encode(), end=not reply.body)
            if reply.body:
                await stream.write(reply.body, end=True)
            _OK.inc()
            return
        answer["upgrade"] = next((v for k, v in reply.headers if k.lower() == "upgrade"), upgrade)
        await stream.send_headers(json.dumps(answer).encode())
        UPGRADES.inc()
        await pipe_socket(stream, reply.reader, reply.writer)


async def _body(stream: Stream) -> AsyncIterator[bytes]:
    while chunk := await stream.read():
        yield chunk
