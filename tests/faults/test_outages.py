"""Outages of the database, the broker and a worker during a burst of namespace provisions.

After each fault and a bounded wait, every record is final and matches what kubectl sees,
and no request answered 500. Faults stay local to this module's own Postgres server and vhost.
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import httpx
import pytest

from app.namespaces.naming import TOKEN_SECRET
from tests.faults.stack import ControlPlane, OwnPostgres, OwnVhost, Stack
from tests.support.kubeapi import KubeCluster, unique_name

RECOVERY_SECONDS = 120
# Starting clusterport processes and servers of their own takes a while on a busy machine.
pytestmark = pytest.mark.timeout(480)
PENDING = ("provisioning", "deleting", "connecting")


async def connected_cluster(client: httpx.AsyncClient, kube: KubeCluster) -> str:
    """A new project with the cluster registered; returns the namespaces path."""
    project = (await client.post("/api/v1/projects", json={"name": unique_name("p")})).json()
    created = await client.post(
        f"/api/v1/projects/{project['id']}/clusters",
        json={
            "name": unique_name("c"),
            "kubernetes": {"api_url": kube.url, "ca_pem": kube.ca_pem, "token": kube.token},
        },
    )
    assert created.status_code == 201, created.text
    path = f"/api/v1/projects/{project['id']}/clusters/{created.json()['id']}"
    await wait_final(client, [path])
    cluster = (await client.get(path)).json()
    assert cluster["status"] == "connected", cluster
    return f"{path}/namespaces"


async def post_namespaces(client: httpx.AsyncClient, base: str, count: int) -> list[str]:
    """POST `count` namespaces; every answer must be 202. Returns their paths."""
    paths = []
    for _ in range(count):
        response = await client.post(base, json={"environment": unique_name("env")})
        assert response.status_code == 202, response.text
        paths.append(f"{base}/{response.json()['id']}")
    return paths


async def wait_final(client: httpx.AsyncClient, paths: list[str]) -> dict[str, Any]:
    """Poll until no record is pending (a deleted one answers 404); returns the records."""
    deadline = time.monotonic() + RECOVERY_SECONDS
    while True:
        records: dict[str, Any] = {}
        for path in paths:
            response = await client.get(path)
            assert response.status_code != 500, response.text
            if response.status_code == 200:
                records[path] = response.json()
            elif response.status_code == 404:
                records[path] = None
        if len(records) == len(paths) and all(
            r is None or r["status"] not in PENDING for r in records.values()
        ):
            return records
        if time.monotonic() > deadline:
            pending = {p: r and r["status"] for p, r in records.items()}
            raise AssertionError(f"records still pending after {RECOVERY_SECONDS} s: {pending}")
        await asyncio.sleep(0.5)


def assert_matches_cluster(kube: KubeCluster, records: dict[str, Any]) -> None:
    """Ready namespaces exist with a filled token Secret; deleted ones are gone or going."""
    for record in records.values():
        if record is None:
            continue
        assert record["status"] == "ready", (record["error"], record["last_error"], record)
        assert record["last_error"] is None and record["retry_at"] is None, record
        name = record["namespace"]
        assert kube.namespace_state(name) == "active", name
        secret = kube.kubectl_json("get", "secret", TOKEN_SECRET, "-n", name)
        assert secret.get("data", {}).get("token"), name


async def test_database_outage_during_a_burst(
    workers: Stack, own_postgres: OwnPostgres, kube_cluster: KubeCluster
) -> None:
    async with workers.client() as client:
        base = await connected_cluster(client, kube_cluster)
        paths = await post_namespaces(client, base, 20)

        own_postgres.stop()
        try:
            statuses = []
            for _ in range(5):
                refused = await client.post(base, json={"environment": unique_name("env")})
                statuses.append(refused.status_code)
                assert refused.status_code == 503, refused.text
                assert refused.json()["error"]["code"] == "database_unavailable"
                assert refused.headers["Retry-After"]
            listed = await client.get(base)
            assert listed.status_code == 503
            await asyncio.sleep(5)  # long enough for the workers' retries to run out
        finally:
            own_postgres.start()

        records = await wait_final(client, paths)
    assert_matches_cluster(kube_cluster, records)
    api_log = workers.log("api")
    assert "Traceback" not in api_log
    assert api_log.count('"database_unavailable"') == 1  # one line per outage


async def test_broker_outage_delays_work_but_loses_none(
    workers: Stack, own_vhost: OwnVhost, kube_cluster: KubeCluster
) -> None:
    async with workers.client() as client:
        base = await connected_cluster(client, kube_cluster)
        before = await post_namespaces(client, base, 2)
        deleted_name = (await wait_final(client, before))[before[0]]["namespace"]

        own_vhost.block()
        try:
            paths = await post_namespaces(client, base, 15)
            # A deletion and a new cluster while the broker is away: answered as usual.
            deleted = await client.delete(before[0])
            assert deleted.status_code == 202, deleted.text
            project_path = base.rsplit("/clusters/", 1)[0]
            created = await client.post(
                f"{project_path}/clusters",
                json={
                    "name": unique_name("c"),
                    "environment_scope": unique_name("scope"),
                    "kubernetes": {
                        "api_url": kube_cluster.url,
                        "ca_pem": kube_cluster.ca_pem,
                        "token": kube_cluster.token,
                    },
                },
            )
            assert created.status_code == 201, created.text
            assert created.json()["status"] == "connecting"
            cluster_path = f"{project_path}/clusters/{created.json()['id']}"
            reads = await client.get(base)  # reads never needed the broker
            assert reads.status_code == 200
        finally:
            own_vhost.unblock()

        records = await wait_final(client, [*paths, *before, cluster_path])
    cluster = records.pop(cluster_path)
    assert cluster["status"] == "connected", cluster
    assert records.pop(before[0]) is None  # the deletion went through
    assert_matches_cluster(kube_cluster, records)
    assert kube_cluster.namespace_state(deleted_name) in ("absent", "terminating")
    assert "Traceback" not in workers.log("api")


async def test_worker_killed_mid_burst(workers: Stack, kube_cluster: KubeCluster) -> None:
    async with workers.client() as client:
        base = await connected_cluster(client, kube_cluster)
        paths = await post_namespaces(client, base, 30)
        # Kill the worker once it is busy with the burst, then start another one.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            states = [(await client.get(p)).json()["status"] for p in paths[:10]]
            if "ready" in states:
                break
            await asyncio.sleep(0.2)
        workers.kill(workers.workers[0])
        workers.start_worker()
        records = await wait_final(client, paths)
    assert_matches_cluster(kube_cluster, records)
    names = sorted(r["namespace"] for r in records.values())
    assert len(set(names)) == len(paths)


async def test_kube_apiserver_paused_then_restarted(
    workers: Stack, own_control_plane: ControlPlane
) -> None:
    kube = own_control_plane.cluster
    async with workers.client() as client:
        base = await connected_cluster(client, kube)
        paths = await post_namespaces(client, base, 10)

        # Hung: requests wait (bounded by the client's timeouts) and then carry on.
        own_control_plane.signal(signal.SIGSTOP)
        try:
            paths += await post_namespaces(client, base, 5)
            await asyncio.sleep(3)
        finally:
            own_control_plane.signal(signal.SIGCONT)

        # Restarted on the same port with the same etcd: refused connections, then a 401/403
        # or two while it starts, then the token controller catches up.
        own_control_plane.restart_apiserver()
        paths += await post_namespaces(client, base, 5)
        own_control_plane.wait_ready()

        records = await wait_final(client, paths)
    assert_matches_cluster(kube, records)
