"""Agent main loop: connect, serve streams, reconnect with decorrelated-jitter backoff."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from typing import Any

import uvloop
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake, InvalidStatus

from app.agent.config import AgentSettings
from app.agent.kube import from_kubeconfig, in_cluster
from app.agent.proxy import KubeProxy
from app.tunnel.session import Limits, Session, SessionClosed
from app.tunnel.transport import WebsocketTransport

VERSION = "0.1.0"
CAPABILITIES = ["k8s-proxy", "drain"]
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
        self.backoff = Backoff(settings.backoff_base, settings.backoff_cap)
        self.connected = False
        self.session: Session | None = None
        self.drain_hint: float | None = None
        self.stopping = asyncio.Event()
        self.server_ssl: ssl.SSLContext | None = None
        if settings.server_url.startswith("wss://"):
            self.server_ssl = ssl.create_default_context(
                cafile=str(settings.server_ca_file) if settings.server_ca_file else None
            )

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
                        "capabilities": CAPABILITIES,
                        "agent_version": VERSION,
                        "kubernetes_version": kube_version,
                    },
                    limits=limits,
                    on_stream=self.proxy.handle,
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
            log.warning("server refused the connection", extra={"status": status})
            retry_after = _retry_after(exc.response.headers.get("Retry-After"))
        except (OSError, TimeoutError, InvalidHandshake, SessionClosed) as exc:
            CONNECTS.labels("error").inc()
            log.warning("connection failed", extra={"error": type(exc).__name__})
        finally:
            self.session, self.connected = None, False
            CONNECTED.set(0)
        if self.drain_hint is not None:
            # Spread the herd over the hinted delay instead of all at its end.
            return self.drain_hint + random.uniform(0, self.drain_hint)  # noqa: S311
        delay = self.backoff.next()
        return max(delay, retry_after) if retry_after is not None else delay

    def _on_drain(self, info: dict[str, Any]) -> None:
        value = info.get("reconnect_after_ms", 0)
        self.drain_hint = max(0.0, float(value) / 1000) if isinstance(value, int) else 0.0
        if self.session is not None:
            # The server drains this connection: leave now, it would refuse new work anyway.
            asyncio.get_running_loop().create_task(self.session.close(1000, "drained"))


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
    target = (
        from_kubeconfig(settings.kubeconfig, settings.kube_context)
        if settings.kubeconfig
        else in_cluster(settings.service_account_dir)
    )
    settings.read_token()  # fail at start, not in the loop, when no token is configured
    agent = Agent(settings, KubeProxy(target))
    runner = await _liveness_app(agent)
    try:
        await agent.run_forever()
    finally:
        await runner.cleanup()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(run(AgentSettings()))


if __name__ == "__main__":
    main()
