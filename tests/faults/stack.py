"""A clusterport deployment of its own for fault tests: a throwaway Postgres server, a RabbitMQ
vhost, and `clusterport api` / `clusterport worker` as subprocesses.

The faults stay local: the Postgres server is stopped and started here, the vhost's permissions
are withdrawn (which refuses and closes only this vhost's connections), workers are killed by
pid. The shared services other test runs use are never touched.
"""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from tests.support.kubeapi import KubeCluster, tools_bin_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 90


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(check: object, what: str, timeout: float = STARTUP_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():  # type: ignore[operator]
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise AssertionError(
            f"{name} not found: install PostgreSQL server binaries (scripts/services does)"
        )
    return path


class OwnPostgres:
    """A Postgres server in a temporary directory on a free loopback port."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="cp-faults-pg-"))
        self.port = free_port()
        self.url = f"postgresql://clusterport@127.0.0.1:{self.port}/postgres"
        self._as_root = os.geteuid() == 0

    def _run(self, *args: str) -> None:
        command = list(args)
        if self._as_root:  # initdb and postgres refuse to run as root
            command = ["su", "postgres", "-c", shlex.join(command)]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        if self._as_root:
            shutil.chown(self.dir, "postgres")
        data = str(self.dir / "data")
        self._run(_pg_bin("initdb"), "-D", data, "--auth=trust", "-U", "clusterport", "-E", "UTF8")
        self.start()

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off"
        log = str(self.dir / "postgres.log")
        self._run(
            _pg_bin("pg_ctl"), "-D", str(self.dir / "data"), "-o", options, "-l", log, "-w", "start"
        )

    def stop(self) -> None:
        """As a crash would: no shutdown checkpoint, connections cut."""
        self._run(_pg_bin("pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop")

    def destroy(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


class OwnVhost:
    """A RabbitMQ vhost of our own; `block()` makes the broker unavailable for it alone."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.name = f"cp_faults_{uuid.uuid4().hex[:8]}"
        self.user = parts.username or "guest"
        self.url = urlunsplit(parts._replace(path="/" + quote(self.name, safe="")))
        self._ctl("add_vhost", self.name)
        self.unblock()

    @staticmethod
    def _ctl(*args: str) -> None:
        subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)

    def block(self) -> None:
        """Refuse new connections to this vhost and close the open ones."""
        self._ctl("clear_permissions", "-p", self.name, self.user)
        self._ctl("close_all_connections", "-p", self.name, "fault test")

    def unblock(self) -> None:
        self._ctl("set_permissions", "-p", self.name, self.user, ".*", ".*", ".*")

    def delete(self) -> None:
        subprocess.run(
            ["rabbitmqctl", "-q", "delete_vhost", self.name], capture_output=True, timeout=60
        )


@dataclass
class Stack:
    """clusterport processes on an own database and vhost, with an admin token."""

    database_url: str
    broker_url: str
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    api_port: int = field(default_factory=free_port)
    token: str = ""
    api: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.env = {
            **os.environ,
            "CLUSTERPORT_DATABASE_URL": self.database_url,
            "CLUSTERPORT_BROKER_URL": self.broker_url,
            "CLUSTERPORT_ALLOW_LOCAL_NETWORK": "true",
            "CLUSTERPORT_LOG_FORMAT": "json",
            "CLUSTERPORT_WORKER_THREADS": "4",
            # Retries bridge a short outage; the reconciler, quick here, covers the rest.
            "CLUSTERPORT_RETRY_LIMIT": "6",
            "CLUSTERPORT_RETRY_MAX_BACKOFF_SECONDS": "2",
            "CLUSTERPORT_OUTBOX_RELAY_AFTER_SECONDS": "2",
            "CLUSTERPORT_RECONCILE_INTERVAL_SECONDS": "2",
            "CLUSTERPORT_RECONCILE_GRACE_SECONDS": "5",
            **self.env,
        }

    def _spawn(self, name: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        with open(self.workdir / f"{name}.log", "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "app.cli", *args],
                cwd=REPO_ROOT,
                env={**self.env, **env},
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "app.cli", *args],
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    def start(self) -> None:
        self.cli("migrate")
        self.token = self.cli("tokens", "create", "--admin").strip()
        self.api = self._spawn(
            "api",
            "api",
            CLUSTERPORT_API_PORT=str(self.api_port),
            CLUSTERPORT_HEALTH_PORT=str(free_port()),
        )
        wait_until(
            lambda: httpx.get(f"{self.base_url}/docs", timeout=2).status_code == 200, "the API"
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )

    def start_worker(self) -> subprocess.Popen[bytes]:
        worker = self._spawn(
            f"worker-{len(self.workers)}", "worker", CLUSTERPORT_HEALTH_PORT=str(free_port())
        )
        self.workers.append(worker)
        return worker

    def kill(self, process: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        if process.poll() is None:
            os.kill(process.pid, sig)
            process.wait(timeout=30)

    def stop(self) -> None:
        for process in [*self.workers, *([self.api] if self.api else [])]:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.kill(process.pid, signal.SIGKILL)
                    process.wait(timeout=10)
        self.workers.clear()

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _gone(pid: int) -> bool:
    """Exited (a zombie nobody reaped yet counts: it no longer holds its port)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


@dataclass
class ControlPlane:
    """A control plane started by scripts/kube-up whose kube-apiserver a test may pause or
    restart (same port, same etcd)."""

    state: Path
    cluster: KubeCluster
    restarted: subprocess.Popen[bytes] | None = None

    @classmethod
    def up(cls, state: Path) -> ControlPlane:
        env = {**os.environ, "CLUSTERPORT_TOOLS_DIR": str(tools_bin_dir().parent.parent)}
        done = subprocess.run(
            [str(REPO_ROOT / "scripts" / "kube-up"), str(state)],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert done.returncode == 0, f"scripts/kube-up failed:\n{done.stderr}"
        cluster = KubeCluster(
            url=(state / "server").read_text().strip(),
            ca_pem=(state / "ca.crt").read_text(),
            token=(state / "token").read_text().strip(),
            kubeconfig=state / "kubeconfig",
            kubectl_path=str(tools_bin_dir() / "kubectl"),
            source="local",
        )
        return cls(state, cluster)

    @property
    def apiserver_pid(self) -> int:
        return int((self.state / "apiserver.pid").read_text())

    def signal(self, sig: int) -> None:
        os.kill(self.apiserver_pid, sig)

    def restart_apiserver(self) -> None:
        """Stop the kube-apiserver and start it again with the same command line."""
        pid = self.apiserver_pid
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        os.kill(pid, signal.SIGTERM)
        try:
            wait_until(lambda: _gone(pid), "the kube-apiserver to exit", 30)
        except AssertionError:  # still draining long requests: do not wait for them
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: _gone(pid), "the kube-apiserver to be killed", 30)
        with open(self.state / "apiserver.log", "ab") as log:
            process = subprocess.Popen(
                [a.decode() for a in argv],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        (self.state / "apiserver.pid").write_text(str(process.pid))
        self.restarted = process

    def wait_ready(self) -> None:
        context = ssl.create_default_context(cafile=str(self.state / "ca.crt"))

        def ready() -> bool:
            response = httpx.get(
                f"{self.cluster.url}/readyz",
                headers={"Authorization": f"Bearer {self.cluster.token}"},
                verify=context,
                timeout=2,
            )
            return response.status_code == 200

        try:
            wait_until(ready, "the kube-apiserver to be ready", 120)
        except AssertionError:
            log = (self.state / "apiserver.log").read_text(errors="replace")[-3000:]
            raise AssertionError(f"the kube-apiserver is not ready; its log ends:\n{log}") from None

    def down(self) -> None:
        subprocess.run(
            [str(REPO_ROOT / "scripts" / "kube-down"), str(self.state), "--purge"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        if self.restarted is not None:
            self.restarted.wait(timeout=30)
