"""Jobs reach RabbitMQ only after their transaction commits, carrying the correlation id."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
from datetime import timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

import pika
import pytest

from tests.conftest import Api
from tests.kube.helpers import wait_for


def _drain(queue: str) -> list[dict[str, Any]]:
    connection = pika.BlockingConnection(pika.URLParameters(os.environ["CLUSTERPORT_BROKER_URL"]))
    try:
        channel = connection.channel()
        messages: list[dict[str, Any]] = []
        while True:
            method, _props, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return messages
            messages.append(json.loads(body))
    finally:
        connection.close()


async def test_cluster_create_enqueues_check_after_commit_with_correlation_id(admin: Api) -> None:
    project = await admin.create_project()
    response = await admin.post(
        f"/api/v1/projects/{project['id']}/clusters",
        {"name": "c", "kubernetes": {"api_url": "https://93.184.216.34", "token": "t"}},
        headers={"X-Request-ID": "req-0123456789"},
    )
    assert response.status_code == 201
    assert response.headers["x-request-id"] == "req-0123456789"
    messages = _drain("default")
    assert [(m["actor_name"], m["args"]) for m in messages] == [
        ("check_cluster", [response.json()["id"]])
    ]
    assert messages[0]["options"]["correlation_id"] == "req-0123456789"


async def test_failed_request_enqueues_nothing(admin: Api) -> None:
    project = await admin.create_project()
    base = f"/api/v1/projects/{project['id']}/clusters"
    body = {"name": "c", "kubernetes": {"api_url": "https://93.184.216.34", "token": "t"}}
    assert (await admin.post(base, body)).status_code == 201
    _drain("default")
    assert (await admin.post(base, body)).status_code == 409
    assert _drain("default") == []


async def test_rollback_drops_buffered_jobs() -> None:
    from app.core.db import async_session
    from app.core.jobs import enqueue_after_commit, flush_jobs_async
    from workers.clusters import check_cluster

    async with async_session() as session:
        enqueue_after_commit(session, check_cluster, 41)
        await session.rollback()
        await flush_jobs_async(session)
    async with async_session() as session:
        enqueue_after_commit(session, check_cluster, 42)
        await session.commit()
        await flush_jobs_async(session)
    assert [m["args"] for m in _drain("default")] == [[42]]


def _vhost_access(allowed: bool) -> None:
    """Withdraw or give back this session's access to its own vhost (and close its
    connections): the broker is unavailable to this test run alone."""
    vhost = unquote(urlsplit(os.environ["CLUSTERPORT_BROKER_URL"]).path.lstrip("/"))
    if allowed:
        args = ["set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"]
        subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True)
        return
    for args in (
        ["clear_permissions", "-p", vhost, "guest"],
        ["close_all_connections", "-p", vhost, "fault test"],
    ):
        subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True)


def _outbox() -> list[tuple[str, list[Any]]]:
    from sqlalchemy import select

    from app.core.db import session_scope
    from app.core.jobs import OutboxJob

    with session_scope() as session:
        rows = session.execute(select(OutboxJob.actor_name, OutboxJob.args)).all()
        return [(name, args) for name, args in rows]


async def test_broker_outage_keeps_jobs_in_the_outbox_until_the_relay_sends_them(
    admin: Api,
) -> None:
    from app.core.jobs import relay_outbox

    project = await admin.create_project()
    base = f"/api/v1/projects/{project['id']}/clusters"
    body = {"name": "c", "kubernetes": {"api_url": "https://93.184.216.34", "token": "t"}}
    _vhost_access(False)
    try:
        created = await admin.post(base, body)
        # Answered as with the broker up; the job waits in the outbox.
        assert created.status_code == 201, created.text
        assert _outbox() == [("check_cluster", [created.json()["id"]])]
        assert relay_outbox(timedelta(0)) == 0  # still away: nothing sent, nothing lost
        assert len(_outbox()) == 1
    finally:
        _vhost_access(True)
    assert relay_outbox(timedelta(0)) == 1
    assert _outbox() == []
    assert [(m["actor_name"], m["args"]) for m in _drain("default")] == [
        ("check_cluster", [created.json()["id"]])
    ]


async def test_sent_jobs_leave_no_outbox_rows(admin: Api) -> None:
    project = await admin.create_project()
    body = {"name": "c", "kubernetes": {"api_url": "https://93.184.216.34", "token": "t"}}
    assert (await admin.post(f"/api/v1/projects/{project['id']}/clusters", body)).status_code == 201
    assert len(_drain("default")) == 1
    # Sent rows are deleted in batches just after the response.
    await wait_for(lambda: asyncio.to_thread(_outbox), lambda rows: rows == [], "the outbox")


def test_publish_on_a_connection_the_broker_closed_logs_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An idle publishing connection the broker closed: Dramatiq reconnects and publishes; pika's
    report of the lost connection is not an error."""
    from workers.clusters import check_cluster

    check_cluster.send(1)
    vhost = unquote(urlsplit(os.environ["CLUSTERPORT_BROKER_URL"]).path.lstrip("/"))
    subprocess.run(
        ["rabbitmqctl", "-q", "close_all_connections", "-p", vhost, "idle"],
        check=True,
        capture_output=True,
    )
    with caplog.at_level(logging.INFO):
        check_cluster.send(2)
    assert [m["args"] for m in _drain("default")] == [[1], [2]]
    noisy = [r for r in caplog.records if r.name.startswith("pika") and r.levelno >= logging.INFO]
    assert noisy == []
