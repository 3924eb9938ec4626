"""`clusterport serve` as a user runs it: embedded SQLite, in-process broker, real HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

BOOTSTRAP = "cpt_smoke-test-bootstrap-token-000000"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    api, health, agent = _free_port(), _free_port(), _free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("CLUSTERPORT_")}
    env.update(
        CLUSTERPORT_DATA_DIR=str(tmp_path / "data"),
        CLUSTERPORT_API_PORT=str(api),
        CLUSTERPORT_HEALTH_PORT=str(health),
        CLUSTERPORT_AGENT_PORT=str(agent),
        CLUSTERPORT_BOOTSTRAP_TOKEN=BOOTSTRAP,
    )
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    base, health_url = f"http://127.0.0.1:{api}", f"http://127.0.0.1:{health}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{health_url}/readiness").status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            log.close()
            raise AssertionError((tmp_path / "serve.log").read_text())
        time.sleep(0.2)
    yield base, health_url, tmp_path
    process.terminate()
    code = process.wait(timeout=20)
    log.close()
    assert code == 0, (tmp_path / "serve.log").read_text()


def test_walkthrough_on_sqlite(served: tuple[str, str, Path]) -> None:
    base, _health, tmp_path = served
    admin = {"Authorization": f"Bearer {BOOTSTRAP}"}
    with httpx.Client(base_url=base, timeout=10) as http:
        assert http.get("/api/v1/projects").status_code == 401
        a = http.post("/api/v1/projects", json={"name": "team-a"}, headers=admin).json()
        b = http.post("/api/v1/projects", json={"name": "team-b"}, headers=admin).json()
        token = http.post(
            f"/api/v1/projects/{a['id']}/tokens",
            json={"name": "ci", "role": "maintainer"},
            headers=admin,
        ).json()["token"]
        member = {"Authorization": f"Bearer {token}"}
        created = http.post(
            f"/api/v1/projects/{a['id']}/clusters",
            # Disabled: the in-process worker would otherwise run the connectivity check and
            # dial this public address (tests may only connect to loopback).
            json={
                "name": "prod",
                "enabled": False,
                "kubernetes": {"api_url": "https://93.184.216.34", "token": "x"},
            },
            headers=member,
        )
        assert created.status_code == 201
        listed = http.get(f"/api/v1/projects/{a['id']}/clusters", headers=member).json()
        assert [c["name"] for c in listed["items"]] == ["prod"]
        assert http.get(f"/api/v1/projects/{b['id']}/clusters", headers=member).status_code == 404
        ssrf = http.post(
            f"/api/v1/projects/{a['id']}/clusters",
            json={
                "name": "x",
                "environment_scope": "staging",
                "kubernetes": {"api_url": "https://[::ffff:127.0.0.1]", "token": "x"},
            },
            headers=member,
        )
        assert ssrf.status_code == 422
        assert ssrf.json()["error"]["code"] == "unsafe_url"
        assert http.get("/docs").status_code == 200
    key = tmp_path / "data" / "encryption.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "data" / "clusterport.db").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "data").stat().st_mode & 0o777 == 0o700


def test_serve_refuses_a_placeholder_key_outside_embedded_mode(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLUSTERPORT_")}
    env.update(
        CLUSTERPORT_DATABASE_URL=f"sqlite:///{tmp_path}/x.db",
        CLUSTERPORT_ENCRYPTION_KEYS="change-me",
    )
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "migrate"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "placeholder" in result.stderr


def test_cli_admin_token_and_reencrypt_on_sqlite(tmp_path: Path) -> None:
    from cryptography.fernet import Fernet

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLUSTERPORT_")}
    env.update(
        CLUSTERPORT_DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite", CLUSTERPORT_ENCRYPTION_KEYS=old
    )

    def cli(*args: str, keys: str | None = None) -> subprocess.CompletedProcess[str]:
        run_env = {**env, "CLUSTERPORT_ENCRYPTION_KEYS": keys or old}
        return subprocess.run(
            [sys.executable, "-m", "app.cli", *args],
            env=run_env,
            capture_output=True,
            text=True,
            check=True,
        )

    cli("migrate")
    token = cli("tokens", "create", "--admin", "--name", "ops").stdout.strip()
    assert token.startswith("cpt_")
    import sqlite3

    with sqlite3.connect(tmp_path / "db.sqlite") as db:
        db.execute(
            "INSERT INTO projects (name, description, created_at, updated_at) "
            "VALUES ('p', '', '2026-01-01', '2026-01-01')"
        )
        db.execute(
            "INSERT INTO clusters (project_id, name, environment_scope, enabled, managed, "
            "provider_type, status, created_at, updated_at) VALUES "
            "(1, 'c', '*', 1, 1, 'user', 'connected', '2026-01-01', '2026-01-01')"
        )
        secret = Fernet(old.encode()).encrypt(b"sa-token").decode()
        db.execute(
            "INSERT INTO kubernetes_platforms (cluster_id, api_url, token, "
            "authorization_type, created_at, updated_at) VALUES "
            "(1, 'https://93.184.216.34', ?, 'rbac', '2026-01-01', '2026-01-01')",
            (secret,),
        )
    result = cli("reencrypt", keys=f"{new},{old}")
    assert "re-encrypted 1 secrets" in result.stderr
    with sqlite3.connect(tmp_path / "db.sqlite") as db:
        stored = db.execute("SELECT token FROM kubernetes_platforms").fetchone()[0]
    assert Fernet(new.encode()).decrypt(stored.encode()) == b"sa-token"
    assert token not in result.stderr + result.stdout
