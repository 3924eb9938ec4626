"""Real Postgres and RabbitMQ for the test session.

Order of preference: URLs from the environment (CLUSTERPORT_TEST_DATABASE_URL,
CLUSTERPORT_TEST_BROKER_URL, as `scripts/services` prints them) -> testcontainers when a Docker
engine answers -> a clear failure saying how to provide them. Each session gets its own database
and RabbitMQ vhost, so several test runs can share one server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from sqlalchemy.engine import make_url

HOW_TO = (
    "Run the tests with `scripts/test` (it installs and starts Postgres and RabbitMQ), or set "
    "CLUSTERPORT_TEST_DATABASE_URL=postgresql://... and CLUSTERPORT_TEST_BROKER_URL=amqp://..."
)


def _docker_works() -> bool:
    if shutil.which("docker") is None:
        return False
    result = subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False)
    return result.returncode == 0


@dataclass
class TestServices:
    database_url: str
    broker_url: str
    _cleanups: list[object] = field(default_factory=list)

    def close(self) -> None:
        for cleanup in reversed(self._cleanups):
            try:
                cleanup()  # type: ignore[operator]
            except Exception as exc:
                print(f"test services: cleanup failed: {type(exc).__name__}")


def _create_database(base_url: str, name: str) -> tuple[str, object]:
    url = make_url(base_url)
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return url.set(database=name).render_as_string(hide_password=False), drop


def _create_vhost(base_url: str, name: str) -> tuple[str, object]:
    """A vhost of our own when we can administer the local broker; else the URL as given."""
    parts = urlsplit(base_url)
    if shutil.which("rabbitmqctl") is None or parts.hostname not in ("127.0.0.1", "localhost"):
        return base_url, lambda: None
    user = parts.username or "guest"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", name], check=True, capture_output=True)
    subprocess.run(
        ["rabbitmqctl", "-q", "set_permissions", "-p", name, user, ".*", ".*", ".*"],
        check=True,
        capture_output=True,
    )

    def delete() -> None:
        subprocess.run(
            ["rabbitmqctl", "-q", "delete_vhost", name], check=False, capture_output=True
        )

    return urlunsplit(parts._replace(path="/" + quote(name, safe=""))), delete


def start_test_services() -> TestServices:
    name = f"cp_test_{uuid.uuid4().hex[:10]}"
    database_base = os.environ.get("CLUSTERPORT_TEST_DATABASE_URL")
    broker_base = os.environ.get("CLUSTERPORT_TEST_BROKER_URL")
    cleanups: list[object] = []
    if (not database_base or not broker_base) and _docker_works():
        from testcontainers.postgres import PostgresContainer
        from testcontainers.rabbitmq import RabbitMqContainer

        if not database_base:
            pg = PostgresContainer("postgres:16-alpine", driver=None).start()
            cleanups.append(pg.stop)
            database_base = pg.get_connection_url()
        if not broker_base:
            mq = RabbitMqContainer("rabbitmq:3-alpine").start()
            cleanups.append(mq.stop)
            host, port = mq.get_container_host_ip(), mq.get_exposed_port(5672)
            broker_base = f"amqp://guest:guest@{host}:{port}/%2F"
    if not database_base or not broker_base:
        raise RuntimeError(f"No Postgres or RabbitMQ for the tests. {HOW_TO}")
    database_url, drop_db = _create_database(database_base, name)
    cleanups.append(drop_db)
    broker_url, delete_vhost = _create_vhost(broker_base, name)
    cleanups.append(delete_vhost)
    return TestServices(database_url, broker_url, cleanups)
