"""Benchmark of the transactional outbox.

1. Cost: POST /api/v1/projects/{id}/clusters/{cid}/namespaces (a new namespace per request) at
   16 connections with the outbox, beside the same API sending jobs straight to the broker after
   commit (bench/legacy_enqueue_api.py), in the same run and alternating rounds. Reports the
   median req/s and p99 of each and their ratio (goal: the outbox at most 10% slower).
2. Recovery (--recovery): 60 namespace provisions on a real kube-apiserver with one worker, with
   production retry and reconcile settings; Postgres is stopped for 20 s during the burst, then
   the broker is cut off for 20 s; reports the time from each service's return until every record
   is final (goal: under 30 s).

Usage: uv run python bench/outbox.py [--duration 10] [--rounds 3] [--recovery]
Needs wrk, Postgres and RabbitMQ (CLUSTERPORT_TEST_DATABASE_URL / CLUSTERPORT_TEST_BROKER_URL,
as scripts/services prints them) and, for --recovery, the binaries of scripts/kube-tools.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg
from cryptography.fernet import Fernet
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.api_list_clusters import free_port, wait_ready  # noqa: E402

LUA = """
counter = 0
threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
request = function()
  counter = counter + 1
  local body = string.format('{"environment":"%s-%d-%d"}', prefix, tid, counter)
  return wrk.format("POST", nil, headers, body)
end
"""


def wrk_post(
    url: str, token: str, prefix: str, duration: int, workdir: Path
) -> tuple[float, float]:
    import re

    script = workdir / f"{prefix}.lua"
    script.write_text(
        f'prefix = "{prefix}"\n'
        f'headers = {{["Content-Type"] = "application/json", '
        f'["Authorization"] = "Bearer {token}"}}\n' + LUA
    )
    cmd = ["wrk", "-t2", "-c16", f"-d{duration}s", "--latency", "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"errors during the run:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99_match = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    assert p99_match
    value, unit = float(p99_match.group(1)), p99_match.group(2)
    p99_ms = value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
    return rps, p99_ms


def seed() -> tuple[str, str]:
    """A project, a connected cluster and a maintainer token; returns (token, namespaces path)."""
    from app.auth.models import Role
    from app.auth.service import new_token
    from app.clusters.models import Cluster, KubernetesPlatform
    from app.core.db import session_scope
    from app.projects.models import Project

    with session_scope() as session:
        project = Project(name="bench")
        session.add(project)
        session.flush()
        token, raw = new_token(name="bench", role=Role.maintainer, project_id=project.id)
        session.add(token)
        cluster = Cluster(
            project_id=project.id,
            name="bench",
            environment_scope="*",
            status="connected",
            platform=KubernetesPlatform(api_url="https://k8s.example.com:6443", token="secret"),
        )
        session.add(cluster)
        session.flush()
        return raw, f"/api/v1/projects/{project.id}/clusters/{cluster.id}/namespaces"


def cost(args: argparse.Namespace) -> None:
    base = os.environ.get(
        "CLUSTERPORT_TEST_DATABASE_URL",
        "postgresql://clusterport:clusterport@127.0.0.1:5432/clusterport",
    )
    broker_base = os.environ.get(
        "CLUSTERPORT_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"
    )
    from tests.faults.stack import OwnVhost

    vhost = OwnVhost(broker_base)  # nobody consumes: the queue is dropped with the vhost
    name = f"cp_bench_{uuid.uuid4().hex[:8]}"
    admin_url = make_url(base).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db_url = make_url(base).set(database=name).render_as_string(hide_password=False)
    env = {
        **os.environ,
        "CLUSTERPORT_DATABASE_URL": db_url,
        "CLUSTERPORT_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "CLUSTERPORT_BROKER_URL": vhost.url,
        "CLUSTERPORT_LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    processes: list[subprocess.Popen[bytes]] = []
    workdir = Path(tempfile.mkdtemp(prefix="cp-bench-"))
    try:
        subprocess.run(
            [sys.executable, "-m", "app.cli", "migrate"], env=env, check=True, capture_output=True
        )
        token, path = seed()
        urls = {}
        for label, command in (
            ("outbox", [sys.executable, "-m", "app.cli", "api"]),
            ("direct", [sys.executable, "bench/legacy_enqueue_api.py"]),
        ):
            port = free_port()
            process = subprocess.Popen(
                command,
                env={
                    **env,
                    "CLUSTERPORT_API_PORT": str(port),
                    "CLUSTERPORT_HEALTH_PORT": str(free_port()),
                },
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=ROOT,
            )
            processes.append(process)
            urls[label] = f"http://127.0.0.1:{port}{path}"
            wait_ready(f"http://127.0.0.1:{port}/docs", process)
        results: dict[str, list[tuple[float, float]]] = {"outbox": [], "direct": []}
        for label, url in urls.items():  # warm-up
            wrk_post(url, token, f"w{label}", 2, workdir)
        for round_ in range(args.rounds):
            for label, url in urls.items():
                results[label].append(
                    wrk_post(url, token, f"r{round_}{label}", args.duration, workdir)
                )
        with psycopg.connect(db_url.replace("+psycopg", ""), autocommit=True) as conn:
            left = conn.execute("SELECT count(*) FROM outbox_jobs").fetchone()
        summary = {}
        for label, runs in results.items():
            summary[label] = (
                sorted(r for r, _ in runs)[len(runs) // 2],
                sorted(p for _, p in runs)[len(runs) // 2],
            )
            print(
                f"{label:8s} median {summary[label][0]:8.1f} req/s  "
                f"p99 {summary[label][1]:7.1f} ms  runs {runs}"
            )
        print(
            f"ratio outbox/direct req/s: {summary['outbox'][0] / summary['direct'][0]:.2f}x, "
            f"p99: {summary['outbox'][1] / summary['direct'][1]:.2f}x (goal: req/s >= 0.90x); "
            f"outbox rows left unsent: {left[0] if left else '?'}"
        )
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=20)
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        vhost.delete()


async def _final(client: httpx.AsyncClient, paths: list[str]) -> bool:
    for path in paths:
        response = await client.get(path)
        if response.status_code != 200:
            return False
        if response.json()["status"] in ("provisioning", "deleting"):
            return False
    return True


async def _recovery_run(stack: object, plane: object, postgres: object, vhost: object) -> None:
    from tests.faults.stack import ControlPlane, OwnPostgres, OwnVhost, Stack

    assert isinstance(stack, Stack) and isinstance(plane, ControlPlane)
    assert isinstance(postgres, OwnPostgres) and isinstance(vhost, OwnVhost)
    kube = plane.cluster
    async with stack.client() as client:
        project = (await client.post("/api/v1/projects", json={"name": "bench"})).json()
        created = await client.post(
            f"/api/v1/projects/{project['id']}/clusters",
            json={
                "name": "bench",
                "kubernetes": {"api_url": kube.url, "ca_pem": kube.ca_pem, "token": kube.token},
            },
        )
        base = f"/api/v1/projects/{project['id']}/clusters/{created.json()['id']}"
        while (await client.get(base)).json()["status"] == "connecting":  # noqa: ASYNC110
            await asyncio.sleep(0.5)

        async def burst(tag: str) -> list[str]:
            paths = []
            for index in range(60):
                response = await client.post(
                    f"{base}/namespaces", json={"environment": f"{tag}-{index}"}
                )
                assert response.status_code == 202, response.text
                paths.append(f"{base}/namespaces/{response.json()['id']}")
            return paths

        for fault in ("database", "broker"):
            if fault == "database":
                paths = await burst("db")
                postgres.stop()
            else:
                vhost.block()
                paths = await burst("mq")
            await asyncio.sleep(20)
            if fault == "database":
                postgres.start()
            else:
                vhost.unblock()
            back = time.monotonic()
            while not await _final_or_down(client, paths):  # noqa: ASYNC110
                await asyncio.sleep(0.5)
            print(
                f"{fault} outage of 20 s, 60 records: all final {time.monotonic() - back:.1f} s "
                "after the service returned (goal < 30 s)"
            )


async def _final_or_down(client: httpx.AsyncClient, paths: list[str]) -> bool:
    try:
        return await _final(client, paths)
    except httpx.TransportError:
        return False


def recovery() -> None:
    from tests.faults.stack import ControlPlane, OwnPostgres, OwnVhost, Stack

    os.environ.setdefault("CLUSTERPORT_ENCRYPTION_KEYS", Fernet.generate_key().decode())
    plane = ControlPlane.up(Path(tempfile.mkdtemp(prefix="cp-bench-kube-")))
    postgres = OwnPostgres()
    vhost = OwnVhost(
        os.environ.get("CLUSTERPORT_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
    )
    workdir = Path(tempfile.mkdtemp(prefix="cp-bench-"))
    # Production defaults for retries, the relay and the reconciler.
    defaults = {
        "CLUSTERPORT_RETRY_LIMIT": "10",
        "CLUSTERPORT_RETRY_MAX_BACKOFF_SECONDS": "10",
        "CLUSTERPORT_OUTBOX_RELAY_AFTER_SECONDS": "5",
        "CLUSTERPORT_RECONCILE_INTERVAL_SECONDS": "10",
        "CLUSTERPORT_RECONCILE_GRACE_SECONDS": "30",
        "CLUSTERPORT_LOG_LEVEL": "WARNING",
    }
    stack = Stack(postgres.url, vhost.url, workdir, env=defaults)
    try:
        postgres.init()
        stack.start()
        stack.start_worker()
        asyncio.run(_recovery_run(stack, plane, postgres, vhost))
    finally:
        stack.stop()
        postgres.destroy()
        vhost.unblock()
        vhost.delete()
        plane.down()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--recovery", action="store_true")
    args = parser.parse_args()
    if args.recovery:
        recovery()
    else:
        cost(args)


if __name__ == "__main__":
    main()
