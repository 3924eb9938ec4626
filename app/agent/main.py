"""Agent main loop: connect, serve streams, reconnect with decorrelated-jitter backoff."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import socket
import ssl
from typing import Any
from urllib.parse import urlsplit

import uvloop
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest
from pydantic import ValidationError
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake, InvalidStatus

from app.agent.applier import Applier
from app.agent.config import AgentSettings
from app.agent.kube import choose_target
from app.agent.proxy import KubeProxy
from app.tunnel.apply import APPLY_KIND, CAPABILITY
from app.tunnel.frames import AGENT_PATH
from app.tunnel.session import Limits, Session, SessionClosed, Stream
from app.tunnel.transport import WebsocketTransport

VERSION = "0.1.0"
CAPABILITIES = ["k8s-proxy", "drain", CAPABILITY]
log = logging.getLogger("clusterport.agent")
CONNECTS = Counter("clusterport_agent_connect_attempts_total", "Connect attempts", ["outcome"])
CONNECTED = Gauge("clusterport_agent_connected", "1 while the tunnel is up")


class Backoff:
    """Decorrelated jitter (sleep = min(cap, U(base, 3 * previous))), so restarts spread out."""

    def __init__(self, base: float, cap: float, rng: random.Random | None = None) -> None:
        self.base = base
        self.cap = cap
        self.previous = base
        # Jitter needs no cryptographic strength; tests pass a seeded generator.
        self._rng = rng or random.Random()  # noqa: S311

    def next(self) -> float:
        self.previous = min(self.cap, self._rng.uniform(self.base, self.previous * 3))
        return self.previous

    def reset(self) -> None:
        self.previous = self.base


class Agent:
    def __init__(self, settings: AgentSettings, proxy: KubeProxy) -> None:
        self.settings = settings
        self.proxy = proxy
        self.applier = Applier(proxy) if settings.gitops_apply else None
        self.capabilities = [c for c in CAPABILITIES if c != CAPABILITY or self.applier]
        self.backoff = Backoff(settings.backoff_base, settings.backoff_cap)
        self.connected = False
        self.session: Session | None = None
        self.drain_hint: float | None = None
        self.stopping = asyncio.Event()
        self.server_ssl: ssl.SSLContext | None = None
        if settings.server_url.startswith("wss://"):
            try:
                self.server_ssl = ssl.create_default_context(
                    cafile=str(settings.server_ca_file) if settings.server_ca_file else None
                )
            except (OSError, ssl.SSLError) as exc:
                raise SystemExit(
                    f"clusterport agent: cannot load CLUSTERPORT_AGENT_SERVER_CA_FILE "
                    f"{settings.server_ca_file}: {exc.strerror or exc}"
                ) from None

    async def run_forever(self) -> None:
        try:
            while not self.stopping.is_set():
                delay = await self.connect_once()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self.stopping.wait()
        finally:
            await self.proxy.close()

    async def connect_once(self) -> float:
        """One connection attempt and its lifetime; returns how long to wait before the next."""
        token = self.settings.read_token()  # re-read: the Secret may have been rotated
        kube_version = await self.proxy.kubernetes_version()
        limits = Limits()
        retry_after: float | None = None
        try:
            async with connect(
                self.settings.server_url,
                additional_headers={"Authorization": f"Bearer {token}"},
                user_agent_header=f"clusterport-agent/{VERSION}",
                compression=None,
                ping_interval=None,
                max_size=limits.max_message,
                proxy=None,
                ssl=self.server_ssl,
                open_timeout=15,
            ) as ws:
                self.drain_hint = None
                session = Session(
                    WebsocketTransport(ws),
                    is_server=False,
                    hello={
                        "capabilities": self.capabilities,
                        "agent_version": VERSION,
                        "kubernetes_version": kube_version,
                    },
                    limits=limits,
                    on_stream=self.serve_stream,
                    on_drain=self._on_drain,
                    send_pings=True,
                )
                await session.handshake()
                CONNECTS.labels("ok").inc()
                self.session, self.connected = session, True
                CONNECTED.set(1)
                self.backoff.reset()
                log.info("connected", extra={"server": self.settings.server_url})
                info = await session.run()
                log.info("disconnected", extra={"code": info.code, "reason": info.reason})
        except InvalidStatus as exc:
            status = exc.response.status_code
            CONNECTS.labels(str(status)).inc()
            code, hint = refusal_hint(status, exc.response.body)
            log.warning(
                "agent server refused the connection: HTTP %s %s. %s",
                status,
                code,
                hint,
                extra={"server": self.settings.server_url, "status": status, "code": code},
            )
            retry_after = _retry_after(exc.response.headers.get("Retry-After"))
        except (OSError, TimeoutError, InvalidHandshake, SessionClosed) as exc:
            reason, hint = failure_hint(exc, self.settings)
            CONNECTS.labels(reason).inc()
            log.warning(
                "cannot connect to the agent server: %s. %s",
                reason.replace("_", " "),
                hint,
                extra={"server": self.settings.server_url, "reason": reason},
            )
        finally:
            self.session, self.connected = None, False
            CONNECTED.set(0)
        if self.drain_hint is not None:
            # Spread the herd over the hinted delay instead of all at its end.
            return self.drain_hint + random.uniform(0, self.drain_hint)  # noqa: S311
        delay = self.backoff.next()
        return max(delay, retry_after) if retry_after is not None else delay

    async def serve_stream(self, stream: Stream) -> None:
        """A stream whose head names a `kind` is a GitOps request; any other is proxied."""
        if self.applier is not None and stream_kind(stream.meta) == APPLY_KIND:
            await self.applier.handle(stream)
        else:
            await self.proxy.handle(stream)

    def _on_drain(self, info: dict[str, Any]) -> None:
        value = info.get("reconnect_after_ms", 0)
        self.drain_hint = max(0.0, float(value) / 1000) if isinstance(value, int) else 0.0
        if self.session is not None:
            # The server drains this connection: leave now, it would refuse new work anyway.
            asyncio.get_running_loop().create_task(self.session.close(1000, "drained"))


def stream_kind(meta: bytes) -> str | None:
    """The `kind` of a stream head; proxy heads have none (checked without parsing them)."""
    if b'"kind"' not in meta:
        return None
    try:
        head = json.loads(meta)
    except ValueError:
        return None
    kind = head.get("kind") if isinstance(head, dict) else None
    return kind if isinstance(kind, str) else None


_REFUSALS = {
    "invalid_token": "Check CLUSTERPORT_AGENT_TOKEN / CLUSTERPORT_AGENT_TOKEN_FILE: it must be "
    "a cpa_ token of this agent (POST /api/v1/projects/ID/agents/ID/tokens makes one).",
    "token_revoked": "The token was revoked: create a new one and update the agent's Secret.",
    "token_expired": "The token has expired: create a new one and update the agent's Secret.",
    "unauthorized": "No token was sent: set CLUSTERPORT_AGENT_TOKEN or _TOKEN_FILE.",
    "not_found": f"Check the path of CLUSTERPORT_AGENT_SERVER_URL: agents connect to {AGENT_PATH}.",
    "address_denied": "The server's CLUSTERPORT_AGENT_IP_ALLOW / _IP_DENY refuse this address.",
    "rate_limited": "Too many attempts for this token or address; retrying after Retry-After.",
    "draining": "The server is shutting down; reconnecting (to another replica if there is one).",
}


def refusal_hint(status: int, body: bytes | bytearray | None) -> tuple[str, str]:
    """The server's error code for a refused upgrade, and what to check."""
    try:
        code = str(json.loads(body or b"")["error"]["code"])[:64]
    except (ValueError, KeyError, TypeError):
        # Not our agent server answering (a proxy, an ingress, another service).
        code = "unknown"
        return code, (
            "The answer is not from a clusterport agent server: check the host, port and path "
            "of CLUSTERPORT_AGENT_SERVER_URL and any proxy or ingress in front of it."
        )
    return code, _REFUSALS.get(code, "See the agent server's log for this refusal.")


def failure_hint(exc: BaseException, settings: AgentSettings) -> tuple[str, str]:
    """A short reason label (bounded, for metrics) and what to check, for a failed dial."""
    url = urlsplit(settings.server_url)
    where = f"{url.hostname}:{url.port or (443 if url.scheme == 'wss' else 80)}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "tls_verify_failed", (
            f"The server's certificate was not accepted ({exc.verify_message}): set "
            "CLUSTERPORT_AGENT_SERVER_CA_FILE to the CA that signed it, and check that the URL's "
            "host is one the certificate names."
        )
    if isinstance(exc, ssl.SSLError):
        why = getattr(exc, "reason", None) or exc.strerror or "unknown reason"
        return "tls_error", (
            f"The TLS handshake with {where} failed ({why}): is that "
            "port serving TLS? wss:// needs a TLS port, ws:// a plain one."
        )
    if isinstance(exc, socket.gaierror):
        return "dns_error", f"Cannot resolve {url.hostname}: check CLUSTERPORT_AGENT_SERVER_URL."
    if isinstance(exc, ConnectionRefusedError):
        return "connection_refused", (
            f"Nothing listens on {where}: is the agent server running, and is the port its "
            "CLUSTERPORT_AGENT_PORT (8150 by default)?"
        )
    if isinstance(exc, TimeoutError):
        return "timeout", f"{where} did not answer in time: check the address and firewalls."
    if isinstance(exc, SessionClosed):
        return "handshake_failed", (
            f"The tunnel closed during its handshake ({exc}): check that the agent and server "
            "versions are compatible."
        )
    if isinstance(exc, InvalidHandshake):
        return "not_a_websocket", (
            f"{where} did not accept a websocket ({type(exc).__name__}): check that the URL "
            "points at the agent server's agent port, with the right scheme (wss:// or ws://)."
        )
    assert isinstance(exc, OSError)
    return "network_error", f"{exc.strerror or type(exc).__name__} while connecting to {where}."


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


async def _liveness_app(agent: Agent) -> web.AppRunner:
    async def liveness(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readiness(_: web.Request) -> web.Response:
        return web.Response(text="ok") if agent.connected else web.Response(status=503)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/liveness", liveness)
    app.router.add_get("/readiness", readiness)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, agent.settings.liveness_host, agent.settings.liveness_port)
    await site.start()
    return runner


async def run(settings: AgentSettings) -> None:
    settings.check_transport()
    target = choose_target(settings.kubeconfig, settings.kube_context, settings.service_account_dir)
    settings.read_token()  # fail at start, not in the loop, when no token is configured
    log.info(
        "agent %s serving %s through %s",
        VERSION,
        target.base_url,
        settings.server_url,
        extra={"server": settings.server_url},
    )
    proxy = KubeProxy(target)
    try:
        agent = Agent(settings, proxy)
    except SystemExit:
        await proxy.close()
        raise
    runner = await _liveness_app(agent)
    try:
        await agent.run_forever()
    finally:
        await runner.cleanup()


def main() -> None:
    from app.core.logging import configure_logging
    from app.core.settings import get_settings

    try:
        common = get_settings()
        settings = AgentSettings()
    except ValidationError as exc:
        prefix = "CLUSTERPORT_AGENT_" if exc.title == AgentSettings.__name__ else "CLUSTERPORT_"
        problems = "; ".join(
            f"{prefix}{'_'.join(str(p) for p in error['loc']).upper()}: {error['msg']}"
            for error in exc.errors()
        )
        raise SystemExit(f"clusterport agent: bad setting: {problems}") from None
    configure_logging(common.log_format, common.log_level)
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(run(settings))


if __name__ == "__main__":
    main()
