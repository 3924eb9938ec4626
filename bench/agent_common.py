"""Shared set-up for the agent benchmarks: a database with agents, server processes, /proc."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
from cryptography.fernet import Fernet
from sqlalchemy.engine import make_url

from app.auth.tokens import generate_token, hash_token

ROOT = Path(__file__).resolve().parent.parent
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss(pid: int) -> int:
    """Resident set size in bytes."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


@dataclass
class Seeded:
    env: dict[str, str]
    db_url: str
    agent_ids: list[int]
    agent_tokens: list[str]
    api_token: str
    # A maintainer token of a second project whose entry on every agent is `impersonate`.
    impersonated_token: str
    impersonated_project_id: int
    impersonated_token_id: int


@contextmanager
def database(agents: int) -> Iterator[Seeded]:
    """A fresh migrated database with one project, `agents` agents (one token each). The
    project's tokens use the proxy as the agent; a second project's impersonate."""
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
        "CLUSTERPORT_LOG_LEVEL": "WARNING",
    }
    try:
        subprocess.run(
            [sys.executable, "-m", "app.cli", "migrate"], env=env, check=True, capture_output=True
        )
        plain = make_url(db_url).set(drivername="postgresql").render_as_string(hide_password=False)
        tokens = [generate_token("cpa_") for _ in range(agents)]
        api_token = generate_token("cpt_")
        impersonated_token = generate_token("cpt_")
        with psycopg.connect(plain) as conn:
            project_ids: list[int] = []
            token_ids: list[int] = []
            for project, token in (("bench", api_token), ("bench-guest", impersonated_token)):
                project_ids.append(
                    conn.execute(
                        "INSERT INTO projects (name, description, created_at, updated_at)"
                        " VALUES (%s, '', now(), now()) RETURNING id",
                        (project,),
                    ).fetchone()[0]  # type: ignore[index]
                )
                token_ids.append(
                    conn.execute(
                        "INSERT INTO access_tokens (project_id, name, role, token_hash,"
                        " token_prefix, created_at)"
                        " VALUES (%s, 'bench', 'maintainer', %s, %s, now()) RETURNING id",
                        (project_ids[-1], hash_token(token), token[:12]),
                    ).fetchone()[0]  # type: ignore[index]
                )
            project_id, guest_id = project_ids
            agent_ids: list[int] = []
            with conn.cursor() as cur:
                for i, token in enumerate(tokens):
                    cur.execute(
                        "INSERT INTO agents (project_id, name, created_at)"
                        " VALUES (%s, %s, now()) RETURNING id",
                        (project_id, f"agent-{i}"),
                    )
                    agent_id = cur.fetchone()[0]  # type: ignore[index]
                    agent_ids.append(agent_id)
                    cur.execute(
                        "INSERT INTO agent_tokens (agent_id, name, token_hash, token_prefix,"
                        " created_at) VALUES (%s, 'bench', %s, %s, now())",
                        (agent_id, hash_token(token), token[:12]),
                    )
                    cur.executemany(
                        "INSERT INTO agent_access (agent_id, project_id, min_role, access_as,"
                        " created_at) VALUES (%s, %s, 'developer', %s, now())",
                        [(agent_id, project_id, "agent"), (agent_id, guest_id, "impersonate")],
                    )
        yield Seeded(
            env, db_url, agent_ids, tokens, api_token, impersonated_token, guest_id, token_ids[1]
        )
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class ServerProcess:
    popen: subprocess.Popen[bytes]
    agent_port: int
    proxy_port: int
    health_port: int

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def start_server(env: dict[str, str], agent_port: int | None = None, **extra: str) -> ServerProcess:
    ports = (agent_port or free_port(), free_port(), free_port())
    settings = {
        "CLUSTERPORT_AGENT_BIND_HOST": "127.0.0.1",
        "CLUSTERPORT_AGENT_PORT": str(ports[0]),
        "CLUSTERPORT_AGENT_PROXY_PORT": str(ports[1]),
        "CLUSTERPORT_HEALTH_PORT": str(ports[2]),
        # All benchmark agents share one source address: lift the per-address limit.
        "CLUSTERPORT_AGENT_IP_RATE": "100000",
        "CLUSTERPORT_AGENT_IP_BURST": "100000",
        **extra,
    }
    popen = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "agent-server"],
        env={**env, **settings},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = ServerProcess(popen, *ports)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise SystemExit(f"agent server exited with {popen.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{ports[2]}/readiness", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit("agent server did not become ready")


@dataclass
class Kube:
    url: str
    token: str
    ca_file: Path
    kubeconfig: Path


@contextmanager
def kube_apiserver(state: Path) -> Iterator[Kube]:
    """A real kube-apiserver from scripts/kube-up (binaries from scripts/kube-tools)."""
    subprocess.run([str(ROOT / "scripts/kube-up"), str(state)], check=True, capture_output=True)
    try:
        yield Kube(
            (state / "server").read_text().strip(),
            (state / "token").read_text().strip(),
            state / "ca.crt",
            state / "kubeconfig",
        )
    finally:
        subprocess.run([str(ROOT / "scripts/kube-down"), str(state)], capture_output=True)
