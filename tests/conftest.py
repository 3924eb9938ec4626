"""Test session set-up: real Postgres and RabbitMQ, the migrated schema, API clients, a worker."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.fernet import Fernet

from tests.support.services import TestServices, start_test_services

pytest_plugins = ["tests.support.kubeapi", "tests.support.loopback"]

_services: TestServices | None = None


def pytest_configure(config: pytest.Config) -> None:
    """Point clusterport at this session's database and vhost before anything imports it."""
    global _services
    if hasattr(config, "workerinput"):
        return
    _services = start_test_services()
    os.environ["CLUSTERPORT_DATABASE_URL"] = _services.database_url
    os.environ["CLUSTERPORT_BROKER_URL"] = _services.broker_url
    os.environ["CLUSTERPORT_ENCRYPTION_KEYS"] = Fernet.generate_key().decode()
    os.environ["CLUSTERPORT_ALLOW_LOCAL_NETWORK"] = "false"
    os.environ["CLUSTERPORT_LOG_FORMAT"] = "console"
    os.environ.pop("CLUSTERPORT_BOOTSTRAP_TOKEN", None)
    # Retries and reconciling on a test's time scale: a few quick retries, then the reconciler.
    os.environ["CLUSTERPORT_RETRY_LIMIT"] = "3"
    os.environ["CLUSTERPORT_RETRY_MAX_BACKOFF_SECONDS"] = "2"
    os.environ["CLUSTERPORT_OUTBOX_RELAY_AFTER_SECONDS"] = "2"
    os.environ["CLUSTERPORT_RECONCILE_INTERVAL_SECONDS"] = "2"
    os.environ["CLUSTERPORT_RECONCILE_GRACE_SECONDS"] = "5"


def pytest_unconfigure(config: pytest.Config) -> None:
    if _services is not None:
        from app.core.db import get_engine

        get_engine().dispose()
        _services.close()


@pytest.fixture(scope="session", autouse=True)
def migrated_database() -> None:
    from app.cli import migrate_database

    migrate_database()


@pytest.fixture(autouse=True)
def _clean_state(migrated_database: None) -> Iterator[None]:
    """Each test starts from empty tables and empty queues."""
    yield
    import workers
    from app.core.db import Base, get_engine

    names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with get_engine().begin() as connection:
        connection.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    workers.broker.flush_all()


@pytest.fixture(scope="session")
def settings() -> Any:
    from app.core.settings import get_settings

    return get_settings()


@pytest.fixture
def allow_local_network(settings: Any) -> Iterator[None]:
    """Let cluster URLs point at loopback (the test kube-apiserver) for one test."""
    settings.allow_local_network = True
    yield
    settings.allow_local_network = False


@pytest.fixture(scope="session")
def asgi_app() -> Any:
    from app.main import create_app

    return create_app()


@pytest.fixture
async def client(asgi_app: Any) -> AsyncIterator[Any]:
    import httpx

    transport = httpx.ASGITransport(app=asgi_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://clusterport.test") as c:
        yield c


def create_admin_token() -> str:
    from app.auth.models import Role
    from app.auth.service import new_token
    from app.core.db import session_scope

    with session_scope() as session:
        token, raw = new_token(name="test-admin", role=Role.admin, project_id=None)
        session.add(token)
    return raw


@dataclass
class Api:
    """A small client for the REST API with one token."""

    client: Any
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return await self.client.request(method, path, headers=headers, **kwargs)

    async def get(self, path: str, **kwargs: Any) -> Any:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        return await self.request("POST", path, json=json, **kwargs)

    async def patch(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        return await self.request("PATCH", path, json=json, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> Any:
        return await self.request("DELETE", path, **kwargs)

    def as_token(self, token: str) -> Api:
        return Api(self.client, token)

    async def create_project(self, name: str = "demo") -> dict[str, Any]:
        response = await self.post("/api/v1/projects", {"name": name})
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    async def create_project_token(self, project_id: int, role: str = "maintainer") -> str:
        response = await self.post(
            f"/api/v1/projects/{project_id}/tokens", {"name": f"{role}-token", "role": role}
        )
        assert response.status_code == 201, response.text
        token: str = response.json()["token"]
        return token


@pytest.fixture
def admin(client: Any) -> Api:
    return Api(client, create_admin_token())


@pytest.fixture
def worker() -> Iterator[Any]:
    """A real Dramatiq worker consuming this session's RabbitMQ vhost."""
    import dramatiq

    import workers

    w = dramatiq.Worker(workers.broker, worker_threads=2, worker_timeout=100)
    w.start()
    yield w
    w.stop()


@pytest.fixture
def test_ca_pem() -> str:
    """A self-signed CA certificate, as a user would paste it."""
    from tests.support.certs import self_signed

    return self_signed("test-ca", loopback_san=False)[0]
