"""The `clusterport` command as a newcomer meets it: one clear line per error, no traceback,
no data dir made by accident, the startup banner, readable logs printed once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

CLUSTERPORT = str(Path(sys.executable).with_name("clusterport"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLUSTERPORT_", "KUBE"))}
    env.update(extra)
    return env


def cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLUSTERPORT, *args],
        cwd=cwd,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def one_clear_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_admin_commands_refuse_to_create_a_data_dir(tmp_path: Path) -> None:
    for args in (["tokens", "create", "--admin"], ["reencrypt"]):
        line = one_clear_line(cli(*args, cwd=tmp_path))
        assert "no clusterport database" in line and "CLUSTERPORT_DATA_DIR" in line
    assert not (tmp_path / ".clusterport").exists()


def test_agent_with_a_missing_kubeconfig_says_so(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    line = one_clear_line(
        cli(
            "agent",
            cwd=tmp_path,
            CLUSTERPORT_AGENT_TOKEN="cpa_x",
            CLUSTERPORT_AGENT_KUBECONFIG=str(missing),
        )
    )
    assert str(missing) in line and "No such file" in line
    line = one_clear_line(cli("agent", cwd=tmp_path, CLUSTERPORT_AGENT_SERVER_URL="http://x"))
    assert "CLUSTERPORT_AGENT_SERVER_URL" in line and "wss://" in line


def test_agent_reads_kubeconfig_from_the_environment(tmp_path: Path) -> None:
    """Outside a pod and without CLUSTERPORT_AGENT_KUBECONFIG, KUBECONFIG is used: its current
    context names a user that the agent cannot run (an exec plugin), which it reports."""
    config = tmp_path / "config"
    config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"exec": {"command": "aws"}}}],
                "contexts": [{"name": "mine", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "mine",
            }
        )
    )
    line = one_clear_line(
        cli("agent", cwd=tmp_path, CLUSTERPORT_AGENT_TOKEN="cpa_x", KUBECONFIG=str(config))
    )
    assert "'mine'" in line and str(config) in line and "plugin" in line
    line = one_clear_line(
        cli("agent", cwd=tmp_path, CLUSTERPORT_AGENT_TOKEN="cpa_x", HOME=str(tmp_path))
    )
    assert "KUBECONFIG" in line


def test_kubeconfig_is_https_owner_only_and_switches_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Config", "current-context": "x"}))
    path.chmod(0o644)
    args = ["kubeconfig", "--agent", "7", "--kubeconfig", str(path), "--no-check"]
    done = cli(*args, "--no-switch", cwd=tmp_path, CLUSTERPORT_TOKEN="cpt_test")
    assert done.returncode == 0, done.stderr
    assert "kubectl --context clusterport-agent-7" in done.stderr
    written = yaml.safe_load(path.read_text())
    assert written["current-context"] == "x"
    assert written["clusters"][0]["cluster"]["server"] == (
        "https://127.0.0.1:8154/k8s-proxy/agents/7"
    )
    assert path.stat().st_mode & 0o777 == 0o600
    done = cli(*args, cwd=tmp_path, CLUSTERPORT_TOKEN="cpt_test")
    assert "current context is now clusterport-agent-7" in done.stderr
    assert yaml.safe_load(path.read_text())["current-context"] == "clusterport-agent-7"
    line = one_clear_line(cli(*args, cwd=tmp_path))
    assert "CLUSTERPORT_TOKEN" in line
    # Without --no-check, a proxy that does not answer is an error with what to check.
    line = one_clear_line(
        cli(
            "kubeconfig",
            "--agent",
            "7",
            "--kubeconfig",
            str(path),
            "--server",
            f"https://127.0.0.1:{_free_port()}",
            cwd=tmp_path,
            CLUSTERPORT_TOKEN="cpt_test",
        )
    )
    assert "cannot connect to the agent server proxy" in line


def _start(
    tmp_path: Path, ports: dict[str, str], log: Path, **extra: str
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            [CLUSTERPORT, "serve"],
            cwd=tmp_path,
            env=_env(**ports, **extra),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    health = f"http://127.0.0.1:{ports['CLUSTERPORT_HEALTH_PORT']}/readiness"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(health).status_code == 200 and "clusterport API on" in log.read_text():
                return process
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait(10)
            raise AssertionError(f"clusterport serve did not start:\n{log.read_text()}")
        time.sleep(0.2)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


@pytest.mark.timeout(600)  # three cold starts of `clusterport serve` on a busy machine
def test_serve_banner_logs_and_an_ignored_bootstrap_token(tmp_path: Path) -> None:
    ports = {
        name: str(_free_port())
        for name in (
            "CLUSTERPORT_API_PORT",
            "CLUSTERPORT_HEALTH_PORT",
            "CLUSTERPORT_AGENT_PORT",
            "CLUSTERPORT_AGENT_PROXY_PORT",
        )
    }
    first_token = "cpt_first-start-token-0123456789abcdef"
    log = tmp_path / "first.log"
    process = _start(tmp_path, ports, log, CLUSTERPORT_BOOTSTRAP_TOKEN=first_token)
    try:
        api = f"http://127.0.0.1:{ports['CLUSTERPORT_API_PORT']}"
        headers = {"Authorization": f"Bearer {first_token}"}
        assert httpx.get(f"{api}/api/v1/projects", headers=headers).status_code == 200
        # `clusters wait` finds the API from CLUSTERPORT_API_PORT, or from an $API-style URL.
        for extra in (
            {"CLUSTERPORT_API_PORT": ports["CLUSTERPORT_API_PORT"]},
            {"CLUSTERPORT_API_URL": f"{api}/api/v1"},
        ):
            waited = cli(
                "clusters", "wait", "1", cwd=tmp_path, CLUSTERPORT_TOKEN=first_token, **extra
            )
            assert waited.returncode == 2 and "Traceback" not in waited.stderr
            assert "error: not_found" in waited.stdout, waited.stdout
    finally:
        _stop(process)
    text = log.read_text()
    banner = [line for line in text.splitlines() if "clusterport API on" in line]
    assert len(banner) == 1, text
    for port in ports.values():
        assert f":{port}" in banner[0]
    assert "ws://" in banner[0] and "TLS off" in banner[0]
    # stderr is a file here, not a terminal: JSON lines by default.
    assert banner[0].startswith("{"), banner[0]
    for noise in ("Started server process", "Uvicorn running", "setting up autogenerate plugin"):
        assert noise not in text, text

    # A second start with another bootstrap token says the token is ignored and what to do.
    log = tmp_path / "second.log"
    _stop(
        _start(
            tmp_path, ports, log, CLUSTERPORT_BOOTSTRAP_TOKEN="cpt_second-start-token-0123456789abc"
        )
    )
    text = log.read_text()
    assert "CLUSTERPORT_BOOTSTRAP_TOKEN is ignored" in text
    assert "clusterport tokens create --admin" in text
    # The same token again is no news.
    log = tmp_path / "third.log"
    _stop(_start(tmp_path, ports, log, CLUSTERPORT_BOOTSTRAP_TOKEN=first_token))
    assert "is ignored" not in log.read_text()
    # An admin command in the same directory uses the same data dir.
    token = cli("tokens", "create", "--admin", cwd=tmp_path)
    assert token.returncode == 0 and token.stdout.startswith("cpt_"), token.stderr


def test_log_format_defaults_to_console_at_a_terminal() -> None:
    from app.core.logging import default_format

    leader, follower = os.openpty()
    try:
        with os.fdopen(follower, "w", closefd=False) as terminal:
            assert default_format(terminal) == "console"
    finally:
        os.close(leader)
        os.close(follower)
    read, write = os.pipe()
    try:
        with os.fdopen(write, "w", closefd=False) as pipe:
            assert default_format(pipe) == "json"
    finally:
        os.close(read)
        os.close(write)
