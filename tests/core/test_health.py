"""The health port: liveness, readiness against the real database and broker, metrics."""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import SecretStr

import app.core.http  # noqa: F401  (the API's metrics, registered where the API runs)
from app.health import create_health_app


async def test_liveness_readiness_metrics(settings: Any) -> None:
    app = create_health_app(settings, needs_broker=True)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://h") as c:
        assert (await c.get("/liveness")).json() == {"status": "ok"}
        ready = await c.get("/readiness")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}
        metrics = await c.get("/metrics")
        assert "clusterport_http_requests_total" in metrics.text


async def test_worker_readiness_fails_when_the_broker_is_unreachable(settings: Any) -> None:
    broken = settings.model_copy(
        update={"broker_url": SecretStr("amqp://guest:guest@127.0.0.1:1/%2F")}
    )
    app = create_health_app(broken, needs_broker=True)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://h") as c:
        ready = await c.get("/readiness")
    assert ready.status_code == 503
    assert ready.json()["checks"] == {"database": "ok", "broker": "failed"}


async def test_api_readiness_does_not_depend_on_the_broker(settings: Any) -> None:
    """Jobs wait in the outbox while the broker is away: API pods stay in their Service."""
    broken = settings.model_copy(
        update={"broker_url": SecretStr("amqp://guest:guest@127.0.0.1:1/%2F")}
    )
    app = create_health_app(broken)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://h") as c:
        ready = await c.get("/readiness")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok"}
