"""Benchmark: GET /api/v1/projects/{id}/clusters (50 clusters, Postgres) at 64 connections,
beside a bare FastAPI endpoint doing one SELECT of the same rows, in the same run.

Usage: uv run python bench/api_list_clusters.py [--duration 10] [--rounds 3]
Needs wrk (apt-get install wrk) and Postgres (CLUSTERPORT_TEST_DATABASE_URL, as scripts/services
prints it). Reports the median req/s and p99 of each and their ratio.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psycopg
from cryptography.fernet import Fernet
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


def wrk(url: str, token: str | None, duration: int) -> tuple[float, float]:
    cmd = ["wrk", "-t2", "-c64", f"-d{duration}s", "--latency", url]
    if token:
        cmd[1:1] = ["-H", f"Authorization: Bearer {token}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"errors during the run:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99_match = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    assert p99_match
    value, unit = float(p99_match.group(1)), p99_match.group(2)
    p99_ms = value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
    return rps, p99_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    base = os.environ.get(
        "CLUSTERPORT_TEST_DATABASE_URL",
        "postgresql://clusterport:clusterport@127.0.0.1:5432/clusterport",
    )
    name = f"cp_bench_{uuid.uuid4().hex[:8]}"
    admin_url = make_url(base).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db_url = make_url(base).set(database=name).render_as_string(hide_password=False)
    env = {
        **os.environ,
        "CLUSTERPORT_DATABASE_URL": db_url,
        "CLUSTERPORT_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "CLUSTERPORT_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672/%2F",
        "CLUSTERPORT_LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        subprocess.run(
            [sys.executable, "-m", "app.cli", "migrate"], env=env, check=True, capture_output=True
        )
        token, project_id = seed()
        api_port, bare_port, health_port = free_port(), free_port(), free_port()
        api = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "api"],
            env={
                **env,
                "CLUSTERPORT_API_PORT": str(api_port),
                "CLUSTERPORT_HEALTH_PORT": str(health_port),
            },
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
        )
        bare = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bench.bare_select_app:app",
                "--port",
                str(bare_port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
        )
        processes += [api, bare]
        api_url = f"http://127.0.0.1:{api_port}/api/v1/projects/{project_id}/clusters?limit=50"
        bare_url = f"http://127.0.0.1:{bare_port}/clusters/{project_id}"
        wait_ready(api_url, api)
        wait_ready(bare_url, bare)
        check = httpx.get(api_url, headers={"Authorization": f"Bearer {token}"}).json()
        assert len(check["items"]) == 50, check
        assert len(httpx.get(bare_url).json()) == 50
        # Warm both up, then alternate rounds so drift in machine load hits both alike.
        wrk(api_url, token, 2)
        wrk(bare_url, None, 2)
        results: dict[str, list[tuple[float, float]]] = {"clusterport": [], "bare": []}
        for _ in range(args.rounds):
            results["clusterport"].append(wrk(api_url, token, args.duration))
            results["bare"].append(wrk(bare_url, None, args.duration))
        report(results)
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=20)
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def seed() -> tuple[str, int]:
    from app.auth.models import Role
    from app.auth.service import new_token
    from app.clusters.models import Cluster, KubernetesPlatform
    from app.core.db import session_scope
    from app.projects.models import Project

    with session_scope() as session:
        project = Project(name="bench")
        session.add(project)
        session.flush()
        token, raw = new_token(name="bench", role=Role.reporter, project_id=project.id)
        session.add(token)
        for index in range(50):
            session.add(
                Cluster(
                    project_id=project.id,
                    name=f"cluster-{index}",
                    environment_scope=f"env-{index}",
                    status="connected",
                    kubernetes_version="v1.37.2",
                    platform=KubernetesPlatform(
                        api_url=f"https://k8s-{index}.example.com:6443", token="secret"
                    ),
                )
            )
        return raw, project.id


def report(results: dict[str, list[tuple[float, float]]]) -> None:
    summary = {}
    for name, runs in results.items():
        rps = statistics.median(r for r, _ in runs)
        p99 = statistics.median(p for _, p in runs)
        summary[name] = (rps, p99)
        print(f"{name:12s} median {rps:8.1f} req/s  p99 {p99:7.1f} ms  runs {runs}")
    ratio = summary["clusterport"][0] / summary["bare"][0]
    print(f"ratio clusterport/bare req/s: {ratio:.2f}x (target >= 0.5x)")


if __name__ == "__main__":
    main()
