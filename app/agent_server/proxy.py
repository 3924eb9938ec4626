"""Kubernetes API proxy: `/k8s-proxy/agents/{id}/...` through the agent's tunnel, on any replica."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web
from prometheus_client import Counter

from app.agent_server.status import (
    HOP_AGENT,
    HOP_KUBE,
    HOP_ROUTING,
    HOP_SERVER,
    status_body,
    status_response,
)
from app.auth.models import Role
from app.auth.service import authenticate
from app.auth.tokens import hash_token
from app.core.db import async_session
from app.core.errors import AppError, NotFoundError, ServiceUnavailableError
from app.tunnel.frames import ResetCode
from app.tunnel.session import Session, SessionClosed, Stream, StreamReset

if TYPE_CHECKING:
    from app.agent_server.server import AgentServer

log = logging.getLogger("clusterport.agent_server.proxy")
PREFIX = "/k8s-proxy/agents/"
ROUTED_HEADER = "X-Clusterport-Routed-From"
DROP_REQUEST = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "authorization",
        ROUTED_HEADER.lower(),
    }
)
DROP_RESPONSE = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "upgrade", "trailer", "proxy-authenticate"}
)
AUTH_CACHE_SECONDS = 2.0
PROXIED = Counter("clusterport_agent_proxy_requests_total", "Proxy requests", ["route", "outcome"])
_LOCAL_OK = PROXIED.labels("local", "ok")


class KubeProxyHandler:
    def __init__(self, server: AgentServer) -> None:
        self.server = server
        # (token hash, agent) -> (valid until, outcome). Concurrent misses share one lookup, so
        # 64 requests arriving as an entry expires cost one database round trip, not 64.
        self._auth_cache: dict[tuple[str, int], tuple[float, asyncio.Future[AppError | None]]] = {}
        self._client: aiohttp.ClientSession | None = None

    @property
    def client(self) -> aiohttp.ClientSession:
        if self._client is None:
            self._client = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ssl=self.server.settings.client_ssl()),
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            )
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        agent_part, _, _ = request.raw_path[len(PREFIX) :].partition("/")
        try:
            agent_id = int(agent_part)
        except ValueError:
            return status_response(404, "agent_not_found", "no such agent", HOP_SERVER)
        denied = await self._authorize(request, agent_id)
        if denied is not None:
            return denied
        connection = self.server.pick_connection(agent_id)
        if connection is not None:
            return await self._through_tunnel(request, agent_id, connection.session)
        if request.headers.get(ROUTED_HEADER):
            PROXIED.labels("routed", "agent_gone").inc()
            return status_response(
                503,
                "agent_not_connected",
                f"agent {agent_id} is no longer connected to this replica",
                HOP_ROUTING,
            )
        return await self._route(request, agent_id)

    async def _authorize(self, request: web.Request, agent_id: int) -> web.Response | None:
        scheme, _, raw = request.headers.get("Authorization", "").partition(" ")
        raw = raw.strip()
        if scheme.lower() != "bearer" or not raw:
            return status_response(
                401, "unauthorized", "send Authorization: Bearer <clusterport token>", HOP_SERVER
            )
        key = (hash_token(raw), agent_id)
        now = time.monotonic()
        cached = self._auth_cache.get(key)
        if cached is None or cached[0] <= now:
            if len(self._auth_cache) > 10_000:
                self._auth_cache.clear()
            future: asyncio.Future[AppError | None] = asyncio.get_running_loop().create_future()
            self._auth_cache[key] = (now + AUTH_CACHE_SECONDS, future)
            try:
                future.set_result(await self._check(raw, agent_id))
            except Exception:
                # Database trouble: answer 503 to everyone waiting, retry on the next request.
                log.exception("proxy authorization failed")
                self._auth_cache.pop(key, None)
                future.set_result(
                    ServiceUnavailableError(
                        "cannot check the token right now", code="auth_unavailable"
                    )
                )
        else:
            future = cached[1]
        error = future.result() if future.done() else await asyncio.shield(future)
        if error is None:
            return None
        return status_response(error.status_code, error.code, error.message, HOP_SERVER)

    async def _check(self, raw: str, agent_id: int) -> AppError | None:
        try:
            async with async_session() as session:
                principal = await authenticate(session, raw)
                await session.commit()  # authenticate may record last use
            project_id = await self.server.store.agent_project(agent_id)
            if project_id is None:
                raise NotFoundError("The agent does not exist.", code="agent_not_found")
            # Proxy access acts with the agent's rights in the cluster: developers and up.
            principal.require_project(project_id, Role.developer)
        except AppError as exc:
            if exc.code == "not_found":
                return NotFoundError("The agent does not exist.", code="agent_not_found")
            return exc
        return None

    async def _through_tunnel(
        self, request: web.Request, agent_id: int, session: Session
    ) -> web.StreamResponse:
        path = request.raw_path[len(PREFIX) + len(str(agent_id)) :] or "/"
        headers = [
            [k, v]
            for k, v in request.headers.items()
            if k.lower() not in DROP_REQUEST and not k.lower().startswith("impersonate-")
        ]
        has_body = request.body_exists
        head = {"method": request.method, "path": path, "headers": headers, "body": has_body}
        try:
            stream = await session.open_stream(json.dumps(head).encode(), end=not has_body)
        except SessionClosed:
            PROXIED.labels("local", "agent_gone").inc()
            return status_response(
                503, "agent_not_connected", f"agent {agent_id} disconnected", HOP_AGENT
            )
        upload = asyncio.create_task(_upload(request, stream)) if has_body else None
        response: web.StreamResponse | None = None
        try:
            reply = json.loads(await stream.read_headers())
            response = web.StreamResponse(status=int(reply["status"]))
            for name, value in reply["headers"]:
                if name.lower() not in DROP_RESPONSE:
                    response.headers.add(name, value)
            await response.prepare(request)
            at_boundary = True  # the last byte sent ends a watch event (or nothing was sent)
            while chunk := await stream.read():
                await response.write(chunk)
                at_boundary = chunk.endswith(b"\n")
            await response.write_eof()
            _LOCAL_OK.inc()
            return response
        except StreamReset as exc:
            if response is not None:
                PROXIED.labels("local", "lost_mid_response").inc()
                if at_boundary and _is_json_watch(request, response):
                    # kubectl reads an ERROR event and reports it; a bare end of the stream
                    # would look like the server closing the watch normally.
                    await response.write(_watch_error(exc, agent_id))
                    await response.write_eof()
                    return response
                # Anything else is cut short, so the client sees an incomplete response.
                raise ConnectionResetError("tunnel stream reset mid-response") from None
            PROXIED.labels("local", f"reset_{exc.code}").inc()
            return _reset_status(exc, agent_id)
        except asyncio.CancelledError:
            # The client went away (a watch closed): stop the agent's upstream request too.
            await stream.reset(ResetCode.CANCEL, "client disconnected")
            raise
        except ConnectionResetError:
            await stream.reset(ResetCode.CANCEL, "client disconnected")
            PROXIED.labels("local", "client_gone").inc()
            return response or web.Response(status=499)
        finally:
            if upload is not None:
                upload.cancel()

    async def _route(self, request: web.Request, agent_id: int) -> web.StreamResponse:
        server = self.server
        locations = [
            loc
            for loc in await server.store.locate(agent_id, server.settings.agent_replica_dead_after)
            if loc.replica != server.settings.agent_replica_name
        ]
        if not locations:
            PROXIED.labels("none", "agent_gone").inc()
            return status_response(
                503,
                "agent_not_connected",
                f"agent {agent_id} is not connected to any agent server",
                HOP_SERVER,
            )
        target = locations[0]
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in DROP_RESPONSE]
        headers = [(k, v) for k, v in headers if k.lower() != "host"]
        headers.append((ROUTED_HEADER, server.settings.agent_replica_name))
        try:
            async with self.client.request(
                request.method,
                target.proxy_url.rstrip("/") + request.raw_path,
                headers=headers,
                data=request.content.iter_any() if request.body_exists else None,
                allow_redirects=False,
            ) as upstream:
                response = web.StreamResponse(status=upstream.status)
                for name, value in upstream.headers.items():
                    if name.lower() not in DROP_RESPONSE:
                        response.headers.add(name, value)
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                PROXIED.labels("routed", "ok").inc()
                return response
        except (aiohttp.ClientConnectionError, OSError):
            PROXIED.labels("routed", "replica_unreachable").inc()
            return status_response(
                502,
                "replica_unreachable",
                f"the agent server replica holding agent {agent_id} is unreachable",
                HOP_ROUTING,
            )


async def _upload(request: web.Request, stream: Stream) -> None:
    with contextlib.suppress(StreamReset, SessionClosed):
        async for chunk in _chunks(request):
            await stream.write(chunk)
        await stream.end()


async def _chunks(request: web.Request) -> AsyncIterator[bytes]:
    async for chunk in request.content.iter_any():
        yield chunk


def _is_json_watch(request: web.Request, response: web.StreamResponse) -> bool:
    watching = request.query.get("watch") in ("true", "1") or "/watch/" in request.path
    return watching and response.content_type == "application/json"


def _watch_error(exc: StreamReset, agent_id: int) -> bytes:
    """A watch ERROR event whose Status names the hop that failed."""
    status = status_body(*_reset_error(exc, agent_id))
    return json.dumps({"type": "ERROR", "object": status}).encode() + b"\n"


def _reset_status(exc: StreamReset, agent_id: int) -> web.Response:
    return status_response(*_reset_error(exc, agent_id))


def _reset_error(exc: StreamReset, agent_id: int) -> tuple[int, str, str, str]:
    """(HTTP status, code, message, hop) for a stream the agent reset."""
    if exc.code == ResetCode.UPSTREAM_UNREACHABLE:
        return 502, "kube_apiserver_unreachable", "the agent cannot reach its API server", HOP_KUBE
    if exc.code == ResetCode.UPSTREAM_TIMEOUT:
        return 504, "kube_apiserver_timeout", "the API server timed out", HOP_KUBE
    if exc.code == ResetCode.REFUSED:
        return (
            503,
            "agent_busy",
            f"agent {agent_id} refused the request (busy or draining)",
            HOP_AGENT,
        )
    if exc.code == ResetCode.CONNECTION_LOST:
        return 503, "agent_disconnected", f"agent {agent_id} disconnected", HOP_AGENT
    return 502, "agent_stream_failed", f"agent {agent_id} dropped the request", HOP_AGENT
