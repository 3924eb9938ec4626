"""Jobs reach RabbitMQ only after their transaction commits, carrying the correlation id."""

from __future__ import annotations

import json
import os
from typing import Any

import pika

from tests.conftest import Api


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
