"""The agent server process: agent websocket, Kubernetes API proxy, health port, registry loops."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from http import HTTPStatus

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from app.agent_server.admission import TokenBuckets, address_allowed, client_address
from app.agent_server.apply import APPLY_PREFIX, ApplyHandler
from app.agent_server.config import AgentServerSettings
from app.agent_server.proxy import PREFIX, KubeProxyHandler
from app.agent_server.store import AgentAuthError, AgentIdentity, AgentStore
from app.auth.tokens import display_prefix, hash_token
from app.core.db import utcnow
from app.tunnel.apply import CAPABILITY
from app.tunnel.frames import AGENT_PATH, CloseCode
from app.tunnel.session import Limits, Session, SessionClosed
from app.tunnel.transport import WebsocketTransport

log = logging.getLogger("clusterport.agent_server")
CAPABILITIES = ["k8s-proxy", "drain", CAPABILITY]
UPGRADES = Counter("clusterport_agent_upgrades_total", "Agent upgrade requests", ["outcome"])
# Refusals that happen in normal operation (a restart, a reconnect storm): not warnings.
_ROUTINE_REFUSALS = frozenset({"rate_limited", "draining"})
AUDIT_BACKLOG = 100_000
AUDIT_DROPPED = Counter(
    "clusterport_agent_proxy_audit_dropped_total", "Proxy audit events lost to a full backlog"
)
CONNECTIONS = Gauge("clusterport_agent_connections", "Live agent connections on this replica")


@dataclass(eq=False, slots=True)
class LiveConnection:
    id: str
    identity: AgentIdentity
    session: Session
    row: dict[str, object] = field(default_factory=dict)


class AgentServer:
    """One replica. `run(stop)` serves until `stop` is set, then drains its agents."""

    def __init__(self, settings: AgentServerSettings, store: AgentStore) -> None:
        self.settings = settings
        self.store = store
        self.proxy = KubeProxyHandler(self)
        self.apply = ApplyHandler(self.proxy)
        self.draining = False
        self.ready = False
        self.connections: dict[str, LiveConnection] = {}
        self.by_agent: dict[int, list[LiveConnection]] = {}
        self.by_token: dict[int, set[LiveConnection]] = {}
        self.token_buckets = TokenBuckets(settings.agent_token_rate, settings.agent_token_burst)
        self.ip_buckets = TokenBuckets(settings.agent_ip_rate, settings.agent_ip_burst)
        self.limits = Limits(
            heartbeat_interval=settings.agent_heartbeat_interval,
            dead_after=3 * settings.agent_heartbeat_interval,
        )
        self._identities: dict[ServerConnection, tuple[AgentIdentity, str]] = {}
        # Hashes of tokens that authenticated on this replica lately (insertion ordered).
        self._known_tokens: dict[str, None] = {}
        # Token lookups in a reconnect storm queue here instead of opening overflow database
        # connections (opening and closing hundreds of them cost more than the queries).
        self._auth_gate = asyncio.Semaphore(16)
        self._pending_add: dict[str, dict[str, object]] = {}
        self._pending_remove: set[str] = set()
        self._flush = asyncio.Event()
        # Writes through the proxy, waiting to be written to the audit trail in a batch.
        self._pending_audit: list[dict[str, object]] = []
        self._audit_flush = asyncio.Event()
        self.ws_server: Server | None = None
        self.ports: dict[str, int] = {}
        # Set once every port listens (the startup banner names them).
        self.listening = asyncio.Event()

    # -- agent websocket -----------------------------------------------------------------------

    async def process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        settings = self.settings
        peer = str(ws.remote_address[0]) if ws.remote_address else ""
        address = client_address(
            peer, request.headers.get("X-Forwarded-For"), settings.agent_trusted_proxies
        )
        if request.path.partition("?")[0] != AGENT_PATH:
            return self._refuse(ws, HTTPStatus.NOT_FOUND, "not_found", "Unknown path.")
        if not address_allowed(address, settings.agent_ip_allow, settings.agent_ip_deny):
            return self._refuse(ws, HTTPStatus.FORBIDDEN, "address_denied", "Address refused.")
        if self.draining:
            return self._refuse(
                ws, HTTPStatus.SERVICE_UNAVAILABLE, "draining", "Server is draining.", 1.0
            )
        scheme, _, raw = request.headers.get("Authorization", "").partition(" ")
        raw = raw.strip()
        token_hash = hash_token(raw) if raw else ""
        # The per-address bucket counts failures only; an address that spent it is refused
        # unless the token is one that authenticated here recently.
        wait = self.ip_buckets.wait(address)
        if wait and token_hash not in self._known_tokens:
            return self._refuse(
                ws, HTTPStatus.TOO_MANY_REQUESTS, "rate_limited", "Too many connections.", wait
            )
        if scheme.lower() != "bearer" or not raw:
            self.ip_buckets.take(address)
            return self._refuse(
                ws, HTTPStatus.UNAUTHORIZED, "unauthorized", "Send Authorization: Bearer <token>."
            )
        wait = self.token_buckets.take(token_hash)
        if wait:
            return self._refuse(
                ws,
                HTTPStatus.TOO_MANY_REQUESTS,
                "rate_limited",
                "Too many connections.",
                wait,
                token=raw,
            )
        try:
            async with self._auth_gate:
                identity = await self.store.authenticate_agent(
                    raw, settings.agent_replica_dead_after
                )
        except AgentAuthError as exc:
            self.ip_buckets.take(address)
            self._known_tokens.pop(token_hash, None)
            return self._refuse(ws, HTTPStatus.UNAUTHORIZED, exc.code, exc.message, token=raw)
        self._known_tokens[token_hash] = None
        while len(self._known_tokens) > 10_000:
            self._known_tokens.pop(next(iter(self._known_tokens)))
        if self._live_count(identity) >= settings.agent_max_connections_per_token:
            return self._refuse(
                ws,
                HTTPStatus.TOO_MANY_REQUESTS,
                "too_many_connections",
                f"This token already has {settings.agent_max_connections_per_token} live "
                "connections.",
                5.0,
            )
        self._identities[ws] = (identity, address)
        return None

    def _live_count(self, identity: AgentIdentity) -> int:
        """Registered connections of the token plus ours not yet written to the registry."""
        token_id = identity.token_id
        unwritten = sum(
            1 for live in self.by_token.get(token_id, ()) if live.id in self._pending_add
        )
        handshaking = sum(1 for other, _ in self._identities.values() if other.token_id == token_id)
        return identity.live_connections + unwritten + handshaking

    @staticmethod
    def _refuse(
        ws: ServerConnection,
        status: HTTPStatus,
        code: str,
        message: str,
        retry_after: float | None = None,
        *,
        token: str | None = None,
    ) -> Response:
        UPGRADES.labels(code).inc()
        # Operators see why an agent cannot connect without asking its owner: address, status,
        # code and the token's public prefix (as the API lists it), never the token.
        log.log(
            logging.INFO if code in _ROUTINE_REFUSALS else logging.WARNING,
            "refused an agent connection from %s: HTTP %s %s",
            ws.remote_address[0] if ws.remote_address else "unknown",
            int(status),
            code,
            extra={
                "code": code,
                "status": int(status),
                **({"token_prefix": display_prefix(token)} if token else {}),
            },
        )
        body = json.dumps({"error": {"code": code, "message": message}})
        response = ws.respond(status, body + "\n")
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        if retry_after is not None:
            # Jittered so refused agents do not come back in lockstep.
            jittered = retry_after * (1 + random.random())  # noqa: S311
            response.headers["Retry-After"] = str(max(1, round(jittered)))
        return response

    async def handle_agent(self, ws: ServerConnection) -> None:
        admitted = self._identities.pop(ws, None)
        if admitted is None:  # pragma: no cover - process_request always sets it
            return
        identity, address = admitted
        connection_id = str(uuid.uuid4())
        session = Session(
            WebsocketTransport(ws),
            is_server=True,
            hello={
                "capabilities": CAPABILITIES,
                "replica": self.settings.agent_replica_name,
                "connection_id": connection_id,
            },
            limits=self.limits,
        )
        try:
            hello = await session.handshake()
        except SessionClosed as exc:
            UPGRADES.labels("bad_hello").inc()
            log.warning(
                "agent %s sent no valid HELLO: %s",
                identity.agent_id,
                str(exc)[:200],
                extra={"agent_id": identity.agent_id},
            )
            return
        UPGRADES.labels("ok").inc()
        now = utcnow()
        live = LiveConnection(
            connection_id,
            identity,
            session,
            {
                "id": connection_id,
                "agent_id": identity.agent_id,
                "token_id": identity.token_id,
                "replica": self.settings.agent_replica_name,
                "agent_version": str(hello.get("agent_version", "unknown"))[:64],
                "kubernetes_version": str(hello.get("kubernetes_version", "unknown"))[:64],
                "source_address": address[:64],
                "connected_at": now,
                "last_heartbeat_at": now,
            },
        )
        self._add(live)
        if self.draining:
            await session.drain(self.settings.agent_drain_reconnect_ms)
        try:
            await session.run()
        finally:
            self._remove(live)

    def _add(self, live: LiveConnection) -> None:
        self.connections[live.id] = live
        self.by_agent.setdefault(live.identity.agent_id, []).append(live)
        self.by_token.setdefault(live.identity.token_id, set()).add(live)
        self._pending_add[live.id] = live.row
        self._flush.set()
        CONNECTIONS.inc()

    def _remove(self, live: LiveConnection) -> None:
        self.connections.pop(live.id, None)
        agent_list = self.by_agent.get(live.identity.agent_id, [])
        with contextlib.suppress(ValueError):
            agent_list.remove(live)
        if not agent_list:
            self.by_agent.pop(live.identity.agent_id, None)
        token_set = self.by_token.get(live.identity.token_id, set())
        token_set.discard(live)
        if not token_set:
            self.by_token.pop(live.identity.token_id, None)
        # Even a connection that closes before its row is written is recorded and then removed:
        # its token was used, and a first-seen source address must be audited.
        self._pending_remove.add(live.id)
        self._flush.set()
        CONNECTIONS.dec()

    def pick_connection(self, agent_id: int) -> LiveConnection | None:
        """The newest usable local connection of the agent (agents run 1-2 replicas)."""
        for live in reversed(self.by_agent.get(agent_id, ())):
            if live.session.close_info is None and not live.session.draining:
                return live
        return None

    async def close_token(self, token_id: int, code: int, reason: str) -> int:
        lives = list(self.by_token.get(token_id, ()))
        await asyncio.gather(*(live.session.close(code, reason) for live in lives))
        return len(lives)

    # -- background loops ----------------------------------------------------------------------

    async def _registry_writer(self) -> None:
        """Batch connection inserts/deletes: a reconnect storm becomes a few statements."""
        while True:
            await self._flush.wait()
            self._flush.clear()
            await asyncio.sleep(0.05)
            adds = list(self._pending_add.values())
            removes = list(self._pending_remove)
            self._pending_add.clear()
            self._pending_remove.clear()
            try:
                gone = await self.store.add_connections(adds)
                adds = []  # written: a retry must not insert them again
                await self.store.remove_connections(removes)
                # Their agent was deleted while they connected: close them here and now.
                for connection_id in gone:
                    live = self.connections.get(connection_id)
                    if live is not None:
                        await live.session.close(CloseCode.TOKEN_REVOKED, "agent deleted")
            except Exception:
                log.exception("could not write the connection registry; retrying")
                for row in adds:
                    self._pending_add.setdefault(str(row["id"]), row)
                self._pending_remove.update(removes)
                await asyncio.sleep(1)
                self._flush.set()

    def queue_audit(self, row: dict[str, object]) -> None:
        if len(self._pending_audit) >= AUDIT_BACKLOG:
            # The database has been down for long: keep memory bounded, say what was lost.
            AUDIT_DROPPED.inc()
            log.error("audit backlog full; dropping a proxy audit event")
            return
        self._pending_audit.append(row)
        self._audit_flush.set()

    async def _audit_writer(self) -> None:
        """Write proxy audit events in batches, off the request path."""
        while True:
            await self._audit_flush.wait()
            self._audit_flush.clear()
            await asyncio.sleep(0.05)
            rows, self._pending_audit = self._pending_audit, []
            try:
                await self.store.add_audit_events(rows)
            except asyncio.CancelledError:
                self._pending_audit[:0] = rows  # written by flush_audit on shutdown
                raise
            except Exception:
                log.exception("could not write proxy audit events; retrying")
                self._pending_audit[:0] = rows
                await asyncio.sleep(1)
                self._audit_flush.set()

    async def flush_audit(self) -> None:
        """Write what is still queued (on shutdown)."""
        rows, self._pending_audit = self._pending_audit, []
        try:
            await self.store.add_audit_events(rows)
        except Exception:
            log.exception("could not write %d proxy audit events on shutdown", len(rows))

    async def _replica_heartbeat(self) -> None:
        settings = self.settings
        ticks = 0
        while True:
            ticks += 1
            try:
                alive = await self.store.heartbeat(
                    settings.agent_replica_name,
                    settings.advertise_url,
                    # Connection heartbeats are for people reading the list: every 5th beat.
                    list(self.connections) if ticks % 5 == 0 else [],
                    settings.agent_replica_dead_after,
                )
                if not alive:
                    # Others forgot us (we stalled): write our live connections again.
                    log.warning("replica was forgotten; registering its connections again")
                    for live in self.connections.values():
                        self._pending_add[live.id] = live.row
                    self._flush.set()
                self.ready = True
            except Exception:
                self.ready = False
                log.exception("replica heartbeat failed")
            await asyncio.sleep(settings.agent_replica_heartbeat)

    async def _revocation_watch(self) -> None:
        """Close connections of revoked tokens quickly, and of expired or deleted ones soon."""
        margin = timedelta(seconds=10)  # covers transactions that commit late and clock skew
        since = utcnow() - margin
        api_since = since
        handled: dict[int | str, object] = {}
        ticks = 0
        while True:
            await asyncio.sleep(self.settings.agent_revocation_poll)
            ticks += 1
            try:
                revoked, api_revoked = await self.store.revoked_since(since, api_since)
                for token_id, revoked_at in revoked:
                    since = max(since, revoked_at - margin)
                    if handled.get(token_id) != revoked_at:
                        handled[token_id] = revoked_at
                        await self.close_token(token_id, CloseCode.TOKEN_REVOKED, "token revoked")
                # API tokens: the proxy requests they opened here end (watches included).
                for token_hash, revoked_at in api_revoked:
                    api_since = max(api_since, revoked_at - margin)
                    if handled.get(token_hash) != revoked_at:
                        handled[token_hash] = revoked_at
                        self.proxy.end_requests_of(token_hash)
                if len(handled) > 10_000:
                    handled.clear()
                if ticks % 40 == 0:
                    for token_id in await self.store.unusable_tokens(list(self.by_token)):
                        await self.close_token(token_id, CloseCode.TOKEN_REVOKED, "token expired")
            except Exception:
                log.exception("revocation check failed")

    # -- lifecycle -----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, *, with_health: bool = True) -> None:
        """Serve until `stop`; `with_health=False` when another server owns the health port."""
        settings = self.settings
        await self.store.register_replica(settings.agent_replica_name, settings.advertise_url)
        loops = [
            asyncio.create_task(self._registry_writer()),
            asyncio.create_task(self._replica_heartbeat()),
            asyncio.create_task(self._revocation_watch()),
            asyncio.create_task(self._audit_writer()),
        ]
        proxy_runner = await self._start_http(self._proxy_app(), settings.agent_proxy_port, "proxy")
        health_runner = (
            await self._start_http(self._health_app(), settings.health_port, "health")
            if with_health
            else None
        )
        try:
            async with serve(
                self.handle_agent,
                settings.bind_host,
                settings.agent_port,
                process_request=self.process_request,
                compression=None,
                ping_interval=None,
                max_size=self.limits.max_message,
                max_queue=4,
                # A restart brings every agent back at once; a short accept queue would drop
                # SYNs and turn the storm into one-second retransmit waves.
                backlog=4096,
                ssl=settings.server_ssl(),
                server_header=None,
            ) as ws_server:
                self.ws_server = ws_server
                self.ports["agent"] = ws_server.sockets[0].getsockname()[1]
                self.listening.set()
                if with_health:  # `clusterport serve` names every port in one banner
                    log.info("agent server listening: %s", self.describe())
                await stop.wait()
                await self.drain()
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            await self.proxy.close()
            await proxy_runner.cleanup()
            await self.flush_audit()
            if health_runner is not None:
                await health_runner.cleanup()
            with contextlib.suppress(Exception):
                await self.store.remove_replica(settings.agent_replica_name)

    def describe(self) -> str:
        """Where agents and kubectl connect, and whether TLS is on."""
        tls = self.settings.agent_tls_cert_file is not None
        host = self.settings.bind_host
        parts = [
            f"agents on {'wss' if tls else 'ws'}://{host}:{self.ports.get('agent')}{AGENT_PATH}",
            f"kubectl proxy on {'https' if tls else 'http'}://{host}:{self.ports.get('proxy')}",
        ]
        if "health" in self.ports:
            parts.append(f"health on http://{host}:{self.ports['health']}")
        if not tls:
            parts.append(
                "TLS off (kubectl sends tokens only over TLS: set "
                "CLUSTERPORT_AGENT_TLS_CERT_FILE and CLUSTERPORT_AGENT_TLS_KEY_FILE)"
            )
        return ", ".join(parts)

    async def drain(self) -> None:
        """Refuse new agents, hint connected ones to reconnect elsewhere, let streams finish."""
        self.draining = True
        lives = list(self.connections.values())
        hint = self.settings.agent_drain_reconnect_ms
        await asyncio.gather(*(live.session.drain(hint) for live in lives))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.agent_drain_grace):
                await asyncio.gather(*(live.session.idle() for live in lives))
        await asyncio.gather(
            *(live.session.close(CloseCode.DRAINED, "server drained") for live in lives),
            return_exceptions=True,
        )

    async def _start_http(self, app: web.Application, port: int, name: str) -> web.AppRunner:
        # handler_cancellation: a client that goes away cancels its proxied watch at once.
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        tls = self.settings.server_ssl() if name == "proxy" else None
        site = web.TCPSite(runner, self.settings.bind_host, port, ssl_context=tls)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.ports[name] = sockets[0].getsockname()[1]
        return runner

    def _proxy_app(self) -> web.Application:
        app = web.Application(client_max_size=0)
        app.router.add_route("*", PREFIX + "{agent}/{tail:.*}", self.proxy.handle)
        app.router.add_route("*", PREFIX + "{agent}", self.proxy.handle)
        app.router.add_post(APPLY_PREFIX + "{agent}", self.apply.handle)
        return app

    def _health_app(self) -> web.Application:
        async def liveness(_: web.Request) -> web.Response:
            return web.Response(text="ok")

        async def readiness(_: web.Request) -> web.Response:
            ok = self.ready and not self.draining
            return web.Response(text="ok" if ok else "not ready", status=200 if ok else 503)

        async def metrics(_: web.Request) -> web.Response:
            return web.Response(
                body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST}
            )

        app = web.Application()
        app.router.add_get("/liveness", liveness)
        app.router.add_get("/readiness", readiness)
        app.router.add_get("/metrics", metrics)
        return app
