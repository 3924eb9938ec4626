"""Real `clusterport agent-server` and `clusterport agent` processes for the agent tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.certs import write_self_signed

CLUSTERPORT = str(Path(sys.executable).with_name("clusterport"))


@dataclass(frozen=True)
class TLSFiles:
    cert: Path
    key: Path


def make_tls(folder: Path) -> TLSFiles:
    """A self-signed serving certificate for 127.0.0.1 (also its own CA)."""
    _pem, cert, key = write_self_signed(folder, "tls", "clusterport-agent-server")
    return TLSFiles(cert, key)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return int(self.popen.returncode)


def start(name: str, args: list[str], env: dict[str, str], tmp: Path) -> Process:
    log_path = tmp / f"{name}-{uuid.uuid4().hex[:6]}.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            [CLUSTERPORT, *args],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return Process(name, popen, log_path, env)


@dataclass
class AgentServerProc:
    replica: str
    agent_port: int
    proxy_port: int
    health_port: int
    process: Process
    env: dict[str, str] = field(default_factory=dict)

    @property
    def agent_url(self) -> str:
        return f"wss://127.0.0.1:{self.agent_port}/agent/connect"

    @property
    def proxy_url(self) -> str:
        return f"https://127.0.0.1:{self.proxy_port}"

    def ready(self) -> bool:
        if not self.process.alive():
            raise AssertionError(f"agent server exited:\n{self.process.log()}")
        try:
            url = f"http://127.0.0.1:{self.health_port}/readiness"
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False


def start_agent_server(
    tmp: Path, tls: TLSFiles, *, agent_port: int | None = None, extra: dict[str, str] | None = None
) -> AgentServerProc:
    replica = f"replica-{uuid.uuid4().hex[:8]}"
    # A free port is only free until someone else binds it: another test process may take it
    # between our pick and the server's bind, so a server that lost that race starts again.
    for attempt in range(5):
        ports = (agent_port or free_port(), free_port(), free_port())
        env = {
            "CLUSTERPORT_AGENT_BIND_HOST": "127.0.0.1",
            "CLUSTERPORT_AGENT_PORT": str(ports[0]),
            "CLUSTERPORT_AGENT_PROXY_PORT": str(ports[1]),
            "CLUSTERPORT_HEALTH_PORT": str(ports[2]),
            "CLUSTERPORT_AGENT_REPLICA_NAME": replica,
            "CLUSTERPORT_AGENT_HEARTBEAT_INTERVAL": "1",
            "CLUSTERPORT_AGENT_REPLICA_HEARTBEAT": "0.5",
            "CLUSTERPORT_AGENT_REPLICA_DEAD_AFTER": "3",
            "CLUSTERPORT_AGENT_DRAIN_RECONNECT_MS": "300",
            "CLUSTERPORT_AGENT_DRAIN_GRACE": "2",
            "CLUSTERPORT_AGENT_TLS_CERT_FILE": str(tls.cert),
            "CLUSTERPORT_AGENT_TLS_KEY_FILE": str(tls.key),
            "CLUSTERPORT_AGENT_TLS_CA_FILE": str(tls.cert),
            **(extra or {}),
        }
        proc = AgentServerProc(
            replica, *ports, process=start("agent-server", ["agent-server"], env, tmp), env=env
        )
        try:
            # Generous: on a loaded shared machine the interpreter alone may take a while.
            wait_until(proc.ready, "the agent server to be ready", timeout=120)
            return proc
        except AssertionError:
            proc.process.stop()  # not yet known to the caller, who would otherwise leak it
            if attempt < 4 and "address already in use" in proc.process.log():
                continue
            raise
        except BaseException:
            proc.process.stop()
            raise
    raise AssertionError("unreachable")


def start_agent(
    tmp: Path,
    server_url: str,
    token: str,
    kubeconfig: Path | None,
    ca_file: Path,
    extra: dict[str, str] | None = None,
) -> Process:
    env = {
        "CLUSTERPORT_AGENT_SERVER_CA_FILE": str(ca_file),
        "CLUSTERPORT_AGENT_SERVER_URL": server_url,
        "CLUSTERPORT_AGENT_TOKEN": token,
        **({"CLUSTERPORT_AGENT_KUBECONFIG": str(kubeconfig)} if kubeconfig else {}),
        "CLUSTERPORT_AGENT_LIVENESS_HOST": "127.0.0.1",
        "CLUSTERPORT_AGENT_LIVENESS_PORT": str(free_port()),
        "CLUSTERPORT_AGENT_BACKOFF_BASE": "0.1",
        "CLUSTERPORT_AGENT_BACKOFF_CAP": "1",
        **(extra or {}),
    }
    return start("agent", ["agent"], env, tmp)
