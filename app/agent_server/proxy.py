"""Kubernetes API proxy: `/k8s-proxy/agents/{id}/...` through the agent's tunnel, on any replica."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import re
import string
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from prometheus_client import Counter

from app.agent_server.status import (
    HOP_AGENT,
    HOP_KUBE,
    HOP_ROUTING,
    HOP_SERVER,
    status_body,
    status_response,
)
from app.agents.credentials import Acting, read_grant, routed_credential
from app.agents.models import AccessAs
from app.auth.impersonation import KubeIdentity, impersonation_headers, is_impersonation_header
from app.auth.service import authenticate, forget_token
from app.auth.tokens import hash_token
from app.clusters.scope import scope_matches
from app.core.db import async_session, utcnow
from app.core.errors import (
    AppError,
    ForbiddenError,
    NotFoundError,
    ServiceUnavailableError,
    UnauthorizedError,
)
from app.core.pagination import MAX_ID
from app.core.signing import InvalidCredentialError, is_signed_credential
from app.namespaces.naming import environment_slug
from app.tunnel.frames import ResetCode
from app.tunnel.session import Session, SessionClosed, Stream, StreamReset
from app.tunnel.upgrade import CHUNK, UpgradeError, is_upgrade, open_upgrade

if TYPE_CHECKING:
    from app.agent_server.server import AgentServer

log = logging.getLogger("clusterport.agent_server.proxy")
_AGENT_ID = re.compile(r"[0-9]{1,19}")
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
DROP_WHOLE = DROP_RESPONSE | {"content-length"}  # aiohttp writes it for the body it sends
# Answers up to this size (a tunnel window) are read whole before they are written.
WHOLE_BODY = 256 * 1024
AUTH_CACHE_SECONDS = 2.0
Headers = tuple[tuple[str, str], ...]
PROXIED = Counter("clusterport_agent_proxy_requests_total", "Proxy requests", ["route", "outcome"])
_LOCAL_OK = PROXIED.labels("local", "ok")
READS = Counter(
    "clusterport_agent_proxy_reads_total",
    "Reads through the proxy per credential: an API token id, `worker` or `namespace:<id>`",
    ["credential"],
)
MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


# What a credential may do through the proxy: an error, or whom it acts as.
Outcome = AppError | Acting
WORKER = Acting((), "worker")


def parse_agent_id(part: str) -> int | None:
    # ASCII digits within a 64-bit id: int() alone accepts '1_0', other scripts' digits and
    # values the database cannot compare.
    if not _AGENT_ID.fullmatch(part) or int(part) > MAX_ID:
        return None
    return int(part)


class KubeProxyHandler:
    def __init__(self, server: AgentServer) -> None:
        self.server = server
        # (token hash, agent) -> (valid until, outcome). Concurrent misses share one lookup, so
        # 64 requests arriving as an entry expires cost one database round trip, not 64.
        self._auth_cache: dict[tuple[str, int], tuple[float, asyncio.Future[Outcome]]] = {}
        self._lookups: set[asyncio.Task[Outcome]] = set()
        self._client: aiohttp.ClientSession | None = None
        # Requests in flight per API token hash: revoking the token ends them.
        self._live: dict[str, set[asyncio.Task[object]]] = {}

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
        agent_id = parse_agent_id(agent_part)
        if agent_id is None:
            return status_response(404, "agent_not_found", "no such agent", HOP_SERVER)
        if any(is_impersonation_header(name) for name in request.headers):
            # Who a request acts as is decided here from its credential, never by the client.
            return status_response(
                400,
                "impersonation_not_allowed",
                "Impersonate-* headers are not accepted; the credential decides the identity",
                HOP_SERVER,
            )
        raw = _bearer(request)
        if raw is None:
            return _unauthorized()
        token_hash = hash_token(raw)
        outcome = await self._authorized(raw, token_hash, agent_id)
        if isinstance(outcome, web.Response):
            return outcome
        task = asyncio.current_task()
        if is_signed_credential(raw) or task is None:
            # Only API tokens are revoked one by one; signed credentials expire.
            return await self._forward(request, agent_id, outcome)
        live = self._live.setdefault(token_hash, set())
        live.add(task)
        try:
            return await self._forward(request, agent_id, outcome)
        finally:
            live.discard(task)
            if not live:
                self._live.pop(token_hash, None)

    def end_requests_of(self, token_hash: str) -> None:
        """The token was revoked: end its requests in flight here (their connections close)
        and forget what the authorization cache knew about it."""
        for task in self._live.pop(token_hash, ()):
            task.cancel()
        for key in [key for key in self._auth_cache if key[0] == token_hash]:
            self._auth_cache.pop(key, None)
        forget_token(token_hash)

    async def _forward(
        self, request: web.Request, agent_id: int, outcome: Acting
    ) -> web.StreamResponse:
        connection = self.server.pick_connection(agent_id)
        if connection is not None:
            # Accounted for on the replica that holds the tunnel only, so a routed request is
            # audited once.
            status = 499  # the client went away before an answer
            upgrade = is_upgrade(list(request.headers.items()))
            try:
                response = await self._through_tunnel(
                    request, agent_id, connection.session, outcome.headers, upgrade
                )
                status = response.status
                return response
            finally:
                self._account(request, agent_id, outcome, status, upgrade is not None)
        if request.headers.get(ROUTED_HEADER):
            PROXIED.labels("routed", "agent_gone").inc()
            return status_response(
                503,
                "agent_not_connected",
                f"agent {agent_id} is no longer connected to this replica",
                HOP_ROUTING,
            )
        return await self.route(request, agent_id, outcome)

    def _account(
        self, request: web.Request, agent_id: int, grant: Acting, status: int, upgraded: bool
    ) -> None:
        """Count a read; queue a write (or an exec, attach or port-forward) for the audit trail:
        who, which agent, verb, path and status, never the body, query or headers."""
        if request.method not in MUTATING_METHODS and not upgraded:
            READS.labels(grant.credential).inc()
            return
        if grant.actor is None:
            return
        path = request.path[len(PREFIX) + len(str(agent_id)) :] or "/"
        self.server.queue_audit(
            {
                "project_id": grant.project_id,
                "actor": grant.actor,
                "action": "k8s_proxy.write" if not upgraded else "k8s_proxy.upgrade",
                "target_type": "agent",
                "target_id": str(agent_id),
                "correlation_id": None,
                "details": {
                    "credential": grant.credential,
                    "verb": request.method,
                    "path": path[:1000],
                    "status": status,
                },
                "created_at": utcnow(),
            }
        )

    async def authorize(self, request: web.Request, agent_id: int) -> web.Response | Acting:
        raw = _bearer(request)
        if raw is None:
            return _unauthorized()
        return await self._authorized(raw, hash_token(raw), agent_id)

    async def _authorized(self, raw: str, token_hash: str, agent_id: int) -> web.Response | Acting:
        key = (token_hash, agent_id)
        now = time.monotonic()
        cached = self._auth_cache.get(key)
        if cached is None or cached[0] <= now:
            if len(self._auth_cache) > 10_000:
                self._auth_cache.clear()
            # A task of its own: the client that started the lookup going away must not leave
            # the others waiting on it for ever.
            task = asyncio.create_task(self._lookup(key, raw, agent_id))
            self._lookups.add(task)
            task.add_done_callback(self._lookups.discard)
            future: asyncio.Future[Outcome] = task
            self._auth_cache[key] = (now + AUTH_CACHE_SECONDS, future)
        else:
            future = cached[1]
        outcome = future.result() if future.done() else await asyncio.shield(future)
        if not isinstance(outcome, AppError):
            return outcome
        return status_response(outcome.status_code, outcome.code, outcome.message, HOP_SERVER)

    async def _lookup(self, key: tuple[str, int], raw: str, agent_id: int) -> Outcome:
        try:
            return await self._check(raw, agent_id)
        except Exception:
            # Database trouble: answer 503 to everyone waiting, retry on the next request.
            log.exception("proxy authorization failed")
            cached = self._auth_cache.get(key)
            if cached is not None and cached[1] is asyncio.current_task():
                del self._auth_cache[key]
            return ServiceUnavailableError(
                "cannot check the token right now", code="auth_unavailable"
            )

    async def _check(self, raw: str, agent_id: int) -> Outcome:
        if is_signed_credential(raw):
            return await self._check_signed(raw, agent_id)
        try:
            async with async_session() as session:
                principal = await authenticate(session, raw)
                await session.commit()  # authenticate may record last use
        except AppError as exc:
            return exc
        try:
            access = await self.server.store.proxy_access(agent_id, principal.project_id)
        except LookupError:
            return NotFoundError("The agent does not exist.", code="agent_not_found")
        owner = access.owner_project_id
        if access.access_as is None or access.min_role is None:
            if not (principal.is_admin or owner is None or owner == principal.project_id):
                # Another project's agent that is not shared with this one stays invisible.
                return NotFoundError("The agent does not exist.", code="agent_not_found")
            return _not_configured(agent_id, owner, principal.project_id)
        if not principal.is_admin and principal.role.rank < access.min_role.rank:
            return ForbiddenError(
                f"Kubernetes API access through agent {agent_id} needs the "
                f"{access.min_role.value} role; your token has {principal.role.value}.",
                code="insufficient_role",
            )
        headers: Headers = ()
        if access.access_as is AccessAs.impersonate:
            headers = tuple(impersonation_headers(KubeIdentity.token(principal)))
        project_id = principal.project_id if principal.project_id is not None else owner
        return Acting(headers, str(principal.token_id), principal.audit_name, project_id)

    async def _check_signed(self, raw: str, agent_id: int) -> Outcome:
        """A credential clusterport signed: a worker's (the agent's own rights) or a namespace
        kubeconfig's (impersonates the namespace's service account while the namespace is
        ready on a cluster reached through this agent)."""
        try:
            grant = read_grant(raw)
        except InvalidCredentialError as exc:
            return UnauthorizedError("The credential is not valid.", code=exc.code)
        if grant.job_id is not None:
            return await self._check_job(grant.job_id, agent_id)
        if grant.agent_id != agent_id:
            return ForbiddenError("The credential is for another agent.", code="wrong_agent")
        if grant.acting is not None:
            return grant.acting
        if grant.namespace_id is None:
            return WORKER
        found = await self.server.store.namespace_identity(grant.namespace_id, agent_id)
        if found is None:
            return UnauthorizedError(
                "The namespace of this credential is gone or not ready.", code="credential_revoked"
            )
        identity, project_id = found
        credential = f"namespace:{grant.namespace_id}"
        return Acting(
            tuple(impersonation_headers(identity)),
            credential,
            f"{credential}:{identity.user}",
            project_id,
        )

    async def _check_job(self, job_id: int, agent_id: int) -> Outcome:
        """A CI job's credential: its record must be live, and the agent's access list must
        admit its project and environment."""
        job = await self.server.store.job_access(job_id, agent_id)
        if job is None or job.revoked_at is not None:
            return UnauthorizedError("The job credential was revoked.", code="credential_revoked")
        if job.expires_at <= utcnow():
            return UnauthorizedError("The job credential has expired.", code="credential_expired")
        admitted = job.environments is None or any(
            scope_matches(scope, job.environment) for scope in job.environments
        )
        if job.access_as is None or job.min_role is None or not admitted:
            return ForbiddenError(
                f"Agent {agent_id} does not admit CI jobs of project {job.project_id} for "
                f"environment {job.environment!r}: its access list needs an entry for the "
                "project whose environments include it.",
                code="proxy_access_not_configured",
            )
        if job.role.rank < job.min_role.rank:
            return ForbiddenError(
                f"Kubernetes API access through agent {agent_id} needs the "
                f"{job.min_role.value} role; this job's token was created with "
                f"{job.role.value}.",
                code="insufficient_role",
            )
        headers: Headers = ()
        if job.access_as is AccessAs.impersonate:
            identity = KubeIdentity.ci_job(
                job_id, job.project_id, environment_slug(job.environment)
            )
            headers = tuple(impersonation_headers(identity))
        return Acting(headers, f"job:{job_id}", f"ci-job:{job_id}", job.project_id)

    async def _through_tunnel(
        self,
        request: web.Request,
        agent_id: int,
        session: Session,
        extra: Headers,
        upgrade: str | None,
    ) -> web.StreamResponse:
        path = request.raw_path[len(PREFIX) + len(str(agent_id)) :] or "/"
        headers = [[k, v] for k, v in request.headers.items() if k.lower() not in DROP_REQUEST]
        headers.extend([k, v] for k, v in extra)
        # An upgrade request's body, if any, is the upgraded connection's first bytes.
        has_body = request.body_exists and upgrade is None
        head: dict[str, object] = {
            "method": request.method,
            "path": path,
            "headers": headers,
            "body": has_body,
        }
        if upgrade is not None:
            head["upgrade"] = upgrade
        try:
            # END rides on OPEN when nothing follows; an upgraded connection sends more.
            ended = not has_body and upgrade is None
            stream = await session.open_stream(json.dumps(head).encode(), end=ended)
        except SessionClosed:
            PROXIED.labels("local", "agent_gone").inc()
            return status_response(
                503, "agent_not_connected", f"agent {agent_id} disconnected", HOP_AGENT
            )
        upload = asyncio.create_task(upload_body(request, stream)) if has_body else None
        response: web.StreamResponse | None = None
        try:
            reply = parse_reply(await stream.read_headers())
            if reply is None:
                # The agent broke the protocol for this stream only: reset it, answer typed.
                await stream.reset(ResetCode.MALFORMED, "malformed HEADERS")
                PROXIED.labels("local", "bad_reply").inc()
                return bad_reply(agent_id, "a malformed reply")
            status, reply_headers = reply
            if status == 101 and upgrade is not None:
                return await _relay_upgrade(request, stream, reply_headers)
            length = _whole_length(request, status, reply_headers)
            if length is not None:
                # A small answer of known length (most reads): head and body in one write.
                body = await _read_whole(stream, length)
                if body is None:
                    PROXIED.labels("local", "bad_reply").inc()
                    return bad_reply(agent_id, "a body that does not match its length")
                kept = [(k, v) for k, v in reply_headers if k.lower() not in DROP_WHOLE]
                _LOCAL_OK.inc()
                return web.Response(status=status, body=body, headers=CIMultiDict(kept))
            response = web.StreamResponse(status=status)
            for name, value in reply_headers:
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
            PROXIED.labels("local", _reset_label(exc.code)).inc()
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

    async def route(self, request: web.Request, agent_id: int, grant: Acting) -> web.StreamResponse:
        """Pass the request to the replica holding the agent's tunnel. It carries a signed
        assertion of what this replica decided (the agent, the identity to act as), never the
        caller's own token."""
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
        upgrade = is_upgrade(list(request.headers.items()))
        if upgrade is not None:
            return await self._route_upgrade(request, agent_id, grant, target.proxy_url, upgrade)
        headers = [
            (k, v)
            for k, v in request.headers.items()
            if k.lower() not in DROP_RESPONSE and k.lower() not in ("host", "authorization")
        ]
        headers.append(("Authorization", f"Bearer {routed_credential(agent_id, grant)}"))
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
            return _replica_unreachable(agent_id)

    async def _route_upgrade(
        self,
        request: web.Request,
        agent_id: int,
        grant: Acting,
        proxy_url: str,
        upgrade: str,
    ) -> web.StreamResponse:
        """An upgrade (exec, port-forward) for an agent held by another replica: a fresh
        HTTP/1.1 connection to that replica, relayed raw once it answers 101."""
        settings = self.server.settings
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in DROP_REQUEST]
        headers.append(("Authorization", f"Bearer {routed_credential(agent_id, grant)}"))
        headers.append((ROUTED_HEADER, settings.agent_replica_name))
        try:
            reply = await open_upgrade(
                proxy_url, settings.client_ssl(), request.method, request.raw_path, headers, upgrade
            )
        except (UpgradeError, OSError):
            return _replica_unreachable(agent_id)
        if reply.status != 101:
            reply.writer.close()
            response = web.Response(status=reply.status, body=reply.body)
            for name, value in reply.headers:
                if name.lower() not in DROP_RESPONSE and name.lower() != "content-length":
                    response.headers.add(name, value)
            return response
        PROXIED.labels("routed", "upgraded").inc()
        return await _relay_upgrade(request, _SocketPipe(reply.reader, reply.writer), reply.headers)


def _whole_length(request: web.Request, status: int, headers: list[tuple[str, str]]) -> int | None:
    """The length of an answer's body when it is known and small (not a watch, not HEAD)."""
    if request.method == "HEAD" or status < 200 or status in (204, 304):
        return None
    for name, value in headers:
        if name.lower() == "content-length":
            known = value.isascii() and value.isdigit()
            return int(value) if known and int(value) <= WHOLE_BODY else None
    return None


async def _read_whole(stream: Stream, length: int) -> bytes | None:
    """The stream's data up to its end; None when it is not `length` bytes."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.read():
        size += len(chunk)
        if size > length:
            return None
        chunks.append(chunk)
    return b"".join(chunks) if size == length else None


def bad_reply(agent_id: int, what: str) -> web.Response:
    """502 for an agent that broke the protocol on one stream (the connection stays up)."""
    return status_response(502, "agent_bad_response", f"agent {agent_id} sent {what}", HOP_AGENT)


def _replica_unreachable(agent_id: int) -> web.Response:
    PROXIED.labels("routed", "replica_unreachable").inc()
    return status_response(
        502,
        "replica_unreachable",
        f"the agent server replica holding agent {agent_id} is unreachable",
        HOP_ROUTING,
    )


def _bearer(request: web.Request) -> str | None:
    """The request's bearer credential."""
    scheme, _, raw = request.headers.get("Authorization", "").partition(" ")
    raw = raw.strip()
    return raw if scheme.lower() == "bearer" and raw else None


def _unauthorized() -> web.Response:
    return status_response(
        401, "unauthorized", "send Authorization: Bearer <clusterport token>", HOP_SERVER
    )


class _SocketPipe:
    """A connection to another replica, read and written like a tunnel stream."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self) -> bytes:
        return await self._reader.read(CHUNK)

    async def write(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def end(self) -> None:
        if self._writer.can_write_eof():
            self._writer.write_eof()

    async def reset(self, code: ResetCode, reason: str) -> None:
        self._writer.close()


def _not_configured(agent_id: int, owner: int | None, project_id: int | None) -> ForbiddenError:
    who = "instance admin tokens" if project_id is None else f"project {project_id}"
    if owner is None:
        where = f"an admin adds it with PUT /api/v1/agents/{agent_id}/access"
    else:
        where = (
            f"a maintainer of project {owner} adds it with "
            f"PUT /api/v1/projects/{owner}/agents/{agent_id}/access"
        )
    entry = "null" if project_id is None else str(project_id)
    return ForbiddenError(
        f"Kubernetes API access through agent {agent_id} is not configured for {who}: {where} "
        f'(an entry {{"project_id": {entry}, "access_as": "agent" or "impersonate"}}).',
        code="proxy_access_not_configured",
    )


class _Inbound:
    """Bytes the client sends after the upgrade, handed to us by aiohttp as a payload parser.

    Reading from the client's socket pauses while more than `limit` bytes wait for tunnel
    credit, so a slow agent slows the client down instead of filling our memory.
    """

    def __init__(self, request: web.Request, limit: int = 256 * 1024) -> None:
        self._transport = request.transport
        self._limit = limit
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._eof = False
        self._ready = asyncio.Event()
        self._paused = False

    # The parser interface aiohttp's request handler feeds.
    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self._chunks.append(bytes(data))
        self._size += len(data)
        self._ready.set()
        if self._size > self._limit and not self._paused and self._transport is not None:
            self._transport.pause_reading()
            self._paused = True
        return False, b""

    def feed_eof(self) -> None:
        self._eof = True
        self._ready.set()

    async def read(self) -> bytes:
        while not self._chunks:
            if self._eof:
                return b""
            self._ready.clear()
            await self._ready.wait()
        chunk = self._chunks.popleft()
        self._size -= len(chunk)
        if self._paused and self._size <= self._limit // 2 and self._transport is not None:
            self._transport.resume_reading()
            self._paused = False
        return chunk


async def _relay_upgrade(
    request: web.Request, stream: Stream | _SocketPipe, reply_headers: list[tuple[str, str]]
) -> web.StreamResponse:
    """Answer 101 with the API server's headers, then relay raw bytes both ways: each
    direction waits for the other end's credit (tunnel) or buffer space (socket)."""
    response = web.StreamResponse(status=101)
    for name, value in reply_headers:
        if name.lower() not in DROP_RESPONSE:
            response.headers.add(name, value)
    protocol = next((v for k, v in reply_headers if k.lower() == "upgrade"), "")
    response.headers["Connection"] = "Upgrade"
    response.headers["Upgrade"] = protocol or request.headers.get("Upgrade", "")
    await response.prepare(request)
    handler = request.protocol
    handler.keep_alive(False)
    inbound = _Inbound(request)
    handler.set_parser(inbound)  # type: ignore[arg-type]  # any object with feed_data/feed_eof
    transport = request.transport
    PROXIED.labels("local", "upgraded").inc()

    async def client_to_agent() -> None:
        while chunk := await inbound.read():
            await stream.write(chunk)
        await stream.end()

    async def agent_to_client() -> None:
        while chunk := await stream.read():
            if transport is None or transport.is_closing():
                return
            transport.write(chunk)
            if transport.get_write_buffer_size() > 256 * 1024:
                await handler._drain_helper()  # aiohttp's own wait for a paused transport

    upload = asyncio.create_task(client_to_agent())
    try:
        # The API server ending the stream ends the client's connection too.
        await agent_to_client()
    except (StreamReset, SessionClosed, OSError):
        pass
    except asyncio.CancelledError:
        await stream.reset(ResetCode.CANCEL, "client disconnected")
        raise
    finally:
        upload.cancel()
        with contextlib.suppress(asyncio.CancelledError, StreamReset, SessionClosed, OSError):
            await upload
        # aiohttp closes the connection after this response (keep-alive is off), flushing
        # what is still buffered; closing it here could cut the last frames off.
        await stream.reset(ResetCode.CANCEL, "upgraded connection closed")
    return response


async def upload_body(request: web.Request, stream: Stream) -> None:
    with contextlib.suppress(StreamReset, SessionClosed):
        async for chunk in _chunks(request):
            await stream.write(chunk)
        await stream.end()


async def _chunks(request: web.Request) -> AsyncIterator[bytes]:
    async for chunk in request.content.iter_any():
        yield chunk


_TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~")


def parse_reply(raw: bytes) -> tuple[int, list[tuple[str, str]]] | None:
    """Status and headers of an agent's HEADERS frame, or None when they are malformed.

    The agent is trusted with nothing: header names must be HTTP tokens and values must not
    carry line breaks, or they could split the response we write to the client.
    """
    try:
        reply = json.loads(raw)
        status = reply["status"]
        pairs = reply["headers"]
    except (ValueError, TypeError, KeyError):
        return None
    if type(status) is not int or not 100 <= status <= 599 or not isinstance(pairs, list):
        return None
    headers: list[tuple[str, str]] = []
    for pair in pairs:
        if not (isinstance(pair, list) and len(pair) == 2):
            return None
        name, value = pair
        if not (isinstance(name, str) and isinstance(value, str)):
            return None
        if not name or not _TOKEN_CHARS.issuperset(name) or "\r" in value or "\n" in value:
            return None
        headers.append((name, value))
    return status, headers


def _reset_label(code: int) -> str:
    """A metric label per known reset code; anything else an agent sends is one label."""
    try:
        return f"reset_{ResetCode(code).name.lower()}"
    except ValueError:
        return "reset_unknown"


def _is_json_watch(request: web.Request, response: web.StreamResponse) -> bool:
    watching = request.query.get("watch") in ("true", "1") or "/watch/" in request.path
    return watching and response.content_type == "application/json"


def _watch_error(exc: StreamReset, agent_id: int) -> bytes:
    """A watch ERROR event whose Status names the hop that failed."""
    status = status_body(*reset_error(exc, agent_id))
    return json.dumps({"type": "ERROR", "object": status}).encode() + b"\n"


def _reset_status(exc: StreamReset, agent_id: int) -> web.Response:
    return status_response(*reset_error(exc, agent_id))


def reset_error(exc: StreamReset, agent_id: int) -> tuple[int, str, str, str]:
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
