"""The health and metrics port: /liveness, /readiness and /metrics.

Readiness checks what the process needs to serve: the API only the database (jobs wait in the
outbox while the broker is away, so a broker outage must not take API pods out of their
Service); a worker the database and the broker.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.core.db import get_async_engine
from app.core.settings import Settings

Check = Callable[[], Awaitable[None]]


async def check_database() -> None:
    async with get_async_engine().connect() as connection:
        await connection.execute(text("SELECT 1"))


def broker_check(settings: Settings) -> Check | None:
    if settings.broker_url is None:
        return None  # the in-process broker is always there
    url = settings.broker_url.get_secret_value()

    def probe() -> None:
        import pika

        params = pika.URLParameters(url)
        params.socket_timeout = 2
        params.blocked_connection_timeout = 2
        pika.BlockingConnection(params).close()

    async def check() -> None:
        await anyio.to_thread.run_sync(probe)

    return check


def create_health_app(
    settings: Settings, extra: dict[str, Check] | None = None, *, needs_broker: bool = False
) -> Starlette:
    checks: dict[str, Check] = {"database": check_database, **(extra or {})}
    broker = broker_check(settings) if needs_broker else None
    if broker is not None:
        checks["broker"] = broker

    async def liveness(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readiness(_: Request) -> Response:
        results: dict[str, str] = {}
        for name, check in checks.items():
            try:
                with anyio.fail_after(3):
                    await check()
                results[name] = "ok"
            except Exception:
                results[name] = "failed"
        ready = all(value == "ok" for value in results.values())
        return JSONResponse(
            {"status": "ok" if ready else "unavailable", "checks": results},
            status_code=200 if ready else 503,
        )

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/liveness", liveness),
            Route("/readiness", readiness),
            Route("/metrics", metrics),
        ]
    )
