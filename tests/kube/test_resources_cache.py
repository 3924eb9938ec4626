"""The reactive cache of cluster state: 202 + one refresh, then the cached list, then expiry."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import dramatiq
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from sqlalchemy import update

import workers
from app.cluster_state.models import ClusterResourceCache
from app.core.db import session_scope, utcnow
from tests.conftest import Api
from tests.kube.helpers import Project, Reach, wait_for
from tests.support.kubeapi import KubeCluster

DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "api"},
    "spec": {
        "replicas": 3,
        "selector": {"matchLabels": {"app": "api"}},
        "template": {
            "metadata": {"labels": {"app": "api"}},
            "spec": {"containers": [{"name": "api", "image": "nginx:1.27"}]},
        },
    },
}


def _queued_messages() -> int:
    """Messages waiting in this session's RabbitMQ vhost, on the queue every actor uses."""
    broker = workers.broker
    assert isinstance(broker, RabbitmqBroker)
    ready, delayed, _dead = broker.get_queue_message_counts("default")
    return int(ready + delayed)


@contextmanager
def running_worker() -> Iterator[None]:
    worker = dramatiq.Worker(workers.broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        yield
    finally:
        worker.stop()


@pytest.mark.usefixtures("allow_local_network")
async def test_refresh_once_then_cached_then_expired(
    admin: Api, kube_cluster: KubeCluster, scratch_namespace: str, reach: Reach
) -> None:
    kube_cluster.kubectl("apply", "-n", scratch_namespace, "-f", "-", input=json.dumps(DEPLOYMENT))
    project = await Project.create(admin, reach)
    cluster = await project.add_cluster(kube_cluster)
    url = f"{project.base}/clusters/{cluster['id']}/resources"
    params = {"kind": "deployments", "namespace": scratch_namespace}
    workers.broker.flush("default")  # drop the connectivity check queued by the create

    # No worker yet: many concurrent requests, all told to come back, one refresh queued.
    responses = await asyncio.gather(*(admin.get(url, params=params) for _ in range(8)))
    assert {r.status_code for r in responses} == {202}
    assert {r.headers["Retry-After"] for r in responses} == {"2"}
    assert responses[0].json() == {"status": "refreshing", "retry_after": 2}
    assert _queued_messages() == 1

    with running_worker():
        await _cached_and_expired(admin, url, params, scratch_namespace)


async def _cached_and_expired(
    admin: Api, url: str, params: dict[str, str], scratch_namespace: str
) -> None:
    fresh = await wait_for(
        lambda: admin.get(url, params=params), lambda r: r.status_code == 200, "the refresh"
    )
    body = fresh.json()
    assert body["kind"] == "deployments"
    assert body["namespace"] == scratch_namespace
    assert body["read_at"]
    assert [(d["name"], d["replicas"]) for d in body["items"]] == [("api", 3)]

    # Fresh entries are served from the cache without a new job.
    assert (await admin.get(url, params=params)).json()["read_at"] == body["read_at"]

    # Once the entry is older than the TTL, the next request queues a refresh again.
    with session_scope() as session:
        session.execute(
            update(ClusterResourceCache).values(read_at=utcnow() - timedelta(minutes=5))
        )
    assert (await admin.get(url, params=params)).status_code == 202
    refreshed = await wait_for(
        lambda: admin.get(url, params=params), lambda r: r.status_code == 200, "the new refresh"
    )
    assert refreshed.json()["read_at"] > body["read_at"]


@pytest.mark.usefixtures("allow_local_network", "worker")
async def test_failed_refresh_reports_code(admin: Api, kube_cluster: KubeCluster) -> None:
    project = await Project.create(admin)
    cluster = await project.add_cluster(kube_cluster, token="not-a-valid-token")
    url = f"{project.base}/clusters/{cluster['id']}/resources"
    first = await admin.get(url, params={"kind": "pods"})
    assert first.status_code == 202
    failed = await wait_for(
        lambda: admin.get(url, params={"kind": "pods"}),
        lambda r: r.status_code != 202,
        "the failed refresh",
    )
    assert failed.status_code == 503
    assert failed.json()["error"]["code"] == "cluster_unauthorized"
    assert failed.headers["Retry-After"]


@pytest.mark.usefixtures("allow_local_network")
async def test_bad_kind_or_namespace(admin: Api, kube_cluster: KubeCluster) -> None:
    project = await Project.create(admin)
    cluster = await project.add_cluster(kube_cluster, enabled=False)
    url = f"{project.base}/clusters/{cluster['id']}/resources"
    assert (await admin.get(url, params={"kind": "secrets"})).status_code == 422
    assert (await admin.get(url, params={"kind": "pods", "namespace": "Bad_NS"})).status_code == 422
    disabled = await admin.get(url, params={"kind": "pods"})
    assert (disabled.status_code, disabled.json()["error"]["code"]) == (409, "cluster_disabled")
