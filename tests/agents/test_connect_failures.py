"""Why an agent cannot connect, said at WARNING by the agent (with what to check) and by the
agent server (without the token), for real agent and agent-server processes."""

from __future__ import annotations

import socket
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest

from app.agent.config import AgentSettings
from app.agent.main import failure_hint
from tests.agents.conftest import AgentSetup, Processes
from tests.agents.support import CLUSTERPORT, free_port, make_tls, wait_until


@pytest.mark.timeout(600)  # six agent processes start at once on a busy machine
async def test_agent_and_server_log_why_a_connection_fails(
    agent_setup: AgentSetup, processes: Processes, kube_cluster: Any, tmp_path: Path
) -> None:
    server = processes.server()
    host = f"127.0.0.1:{server.agent_port}"
    (tmp_path / "other").mkdir()
    revoked = await agent_setup.new_token("to-revoke")
    gone = await agent_setup.api.delete(f"{agent_setup.base}/tokens/{revoked['id']}")
    assert gone.status_code == 204
    bad_token = "cpa_not-a-real-token-0123456789abcdefgh"
    cases = {
        # agent settings -> what the agent's log must say
        "bad token": (
            {"CLUSTERPORT_AGENT_SERVER_URL": f"wss://{host}", "CLUSTERPORT_AGENT_TOKEN": bad_token},
            ["HTTP 401 invalid_token", "CLUSTERPORT_AGENT_TOKEN"],
        ),
        "revoked token": (
            {
                "CLUSTERPORT_AGENT_SERVER_URL": f"wss://{host}",
                "CLUSTERPORT_AGENT_TOKEN": revoked["token"],
            },
            ["HTTP 401 token_revoked", "create a new one"],
        ),
        "wrong path": (
            {"CLUSTERPORT_AGENT_SERVER_URL": f"wss://{host}/agents"},
            ["HTTP 404 not_found", "/agent/connect"],
        ),
        "untrusted certificate": (
            {
                "CLUSTERPORT_AGENT_SERVER_URL": f"wss://{host}",
                # A CA that did not sign the server's certificate.
                "CLUSTERPORT_AGENT_SERVER_CA_FILE": str(make_tls(tmp_path / "other").cert),
            },
            ["tls verify failed", "CLUSTERPORT_AGENT_SERVER_CA_FILE"],
        ),
        "nothing listening": (
            {"CLUSTERPORT_AGENT_SERVER_URL": f"wss://127.0.0.1:{free_port()}"},
            ["connection refused", "CLUSTERPORT_AGENT_PORT"],
        ),
        "plain websocket to a TLS port": (
            {
                "CLUSTERPORT_AGENT_SERVER_URL": f"ws://{host}",
                "CLUSTERPORT_AGENT_ALLOW_INSECURE": "true",
            },
            ["did not accept a websocket"],
        ),
    }
    agents = {
        name: processes.agent(
            server.agent_url, agent_setup.token, kube_cluster.kubeconfig, extra=settings
        )
        for name, (settings, _expected) in cases.items()
    }
    for name, (_settings, expected) in cases.items():
        agent = agents[name]

        def logged(agent: Any = agent, expected: list[str] = expected) -> bool:
            text = agent.log()
            return all(part in text for part in expected)

        wait_until(logged, f"the agent to explain {name!r}", timeout=400)
        text = agent.log()
        assert "[warning" in text or '"warning"' in text, text
        assert "Traceback" not in text, text

    # The server names refusals too: address, status, code and the token's public prefix.
    def server_logged() -> bool:
        text = server.process.log()
        return "HTTP 401 invalid_token" in text and "HTTP 401 token_revoked" in text

    wait_until(server_logged, "the server to log the refusals", timeout=60)
    text = server.process.log()
    assert "refused an agent connection from 127.0.0.1: HTTP 404 not_found" in text
    assert bad_token[:12] in text  # the public prefix, as the API lists tokens
    assert bad_token not in text and revoked["token"] not in text


def kubeconfig_command(token: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLUSTERPORT, "kubeconfig", *args],
        env={"CLUSTERPORT_TOKEN": token, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_kubeconfig_checks_the_agent_through_the_proxy(
    agent_setup: AgentSetup, processes: Processes, tmp_path: Path
) -> None:
    server = processes.server()
    target = ["--server", server.proxy_url, "--kubeconfig", str(tmp_path / "kc")]
    ca = ["--ca-file", server.env["CLUSTERPORT_AGENT_TLS_CA_FILE"]]
    token = agent_setup.developer_token
    missing = kubeconfig_command(token, "--agent", str(agent_setup.agent_id + 1000), *target, *ca)
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    assert not (tmp_path / "kc").exists()
    # Without --ca-file the self-signed certificate is not trusted: said in one line.
    untrusted = kubeconfig_command(token, "--agent", str(agent_setup.agent_id), *target)
    assert untrusted.returncode == 2
    assert "--ca-file" in untrusted.stderr and "Traceback" not in untrusted.stderr
    # The agent exists but is not connected: a warning, and the context is written.
    written = kubeconfig_command(token, "--agent", str(agent_setup.agent_id), *target, *ca)
    assert written.returncode == 0, written.stderr
    assert "not connected right now" in written.stderr
    assert f"clusterport-agent-{agent_setup.agent_id}" in (tmp_path / "kc").read_text()


def test_dns_and_tls_failures_have_their_own_hints() -> None:
    settings = AgentSettings(server_url="wss://agents.example.test", token="cpa_x")
    reason, hint = failure_hint(socket.gaierror(socket.EAI_NONAME, "unknown"), settings)
    assert reason == "dns_error" and "agents.example.test" in hint
    reason, hint = failure_hint(ssl.SSLError(1, "wrong version number"), settings)
    assert reason == "tls_error" and "agents.example.test:443" in hint
