"""The agent server's apply endpoint with real processes: routed to the replica holding the
agent, failing fast with a code when the agent is not connected, and typed errors (never a 500)
when an agent answers an apply stream badly."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from app.agents.credentials import worker_credential
from app.kube.agent_apply import AgentApplyResult, apply_through_agent
from app.kube.errors import (
    KubeAgentBadResponseError,
    KubeAgentUnavailableError,
    KubeForbiddenError,
)
from app.tunnel.session import Session, Stream
from app.tunnel.transport import WebsocketTransport
from tests.agents.conftest import AgentSetup, Processes, eventually
from tests.agents.test_agent_lifecycle import dial
from tests.agents.test_agent_proxy import https
from tests.kube.helpers import metric
from tests.support.kubeapi import unique_name


async def test_an_apply_is_routed_to_the_replica_holding_the_agent(
    agent_setup: AgentSetup, processes: Processes, kube_cluster: Any
) -> None:
    replica_a = processes.server()
    replica_b = processes.server()
    processes.agent(replica_b.agent_url, agent_setup.token, kube_cluster.kubeconfig)
    await eventually(agent_setup.connections, "the agent to connect to replica B")
    namespace = unique_name("routed")
    kube_cluster.kubectl("create", "namespace", namespace)
    objects = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "routed", "namespace": namespace},
            "data": {"key": "v"},
        }
    ]
    headers = {"Authorization": f"Bearer {worker_credential(agent_setup.agent_id)}"}
    url = f"{replica_a.proxy_url}/agent-apply/agents/{agent_setup.agent_id}"
    body = {"objects": objects, "field_manager": "clusterport", "wait_crds": 0}
    async with https(replica_a) as http:
        answer = await http.post(url, json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    assert [json.loads(line) for line in answer.text.splitlines()] == [
        {
            "ref": {
                "api_version": "v1",
                "kind": "ConfigMap",
                "namespace": namespace,
                "name": "routed",
            },
            "result": "applied",
        },
        {"result": "done", "waiting_for_crds": False},
    ]
    live = kube_cluster.kubectl_json("get", "configmap", "routed", "-n", namespace)
    assert live["data"] == {"key": "v"}
    routed = await metric(
        f"http://127.0.0.1:{replica_a.health_port}/metrics",
        "clusterport_agent_proxy_requests_total",
        route="routed",
        outcome="ok",
    )
    served = await metric(
        f"http://127.0.0.1:{replica_b.health_port}/metrics",
        "clusterport_agent_apply_streams_total",
        route="local",
        outcome="ok",
    )
    assert (routed, served) == (1, 1)
    kube_cluster.kubectl("delete", "namespace", namespace, "--wait=false")


async def test_an_apply_for_a_disconnected_agent_fails_fast_with_a_code(
    agent_setup: AgentSetup, processes: Processes
) -> None:
    server = processes.server()
    headers = {"Authorization": f"Bearer {worker_credential(agent_setup.agent_id)}"}
    url = f"{server.proxy_url}/agent-apply/agents/{agent_setup.agent_id}"
    async with https(server) as http:
        answer = await http.post(url, json={"objects": []}, headers=headers)
        unknown = await http.post(
            f"{server.proxy_url}/agent-apply/agents/1_0", json={"objects": []}, headers=headers
        )
    assert answer.status_code == 503
    assert answer.headers["X-Clusterport-Error"] == "agent_not_connected"
    assert unknown.status_code == 404


async def _misapply(stream: Stream) -> None:
    body = b""
    while chunk := await stream.read():
        body += chunk
    how = json.loads(body)["objects"][0]["metadata"]["name"]
    ok = json.dumps({"status": 200, "headers": []}).encode()
    ref = {"api_version": "v1", "kind": "ConfigMap", "namespace": "n", "name": how}
    if how == "bad-head":
        await stream.send_headers(b"not json", end=True)
    elif how == "bad-line":
        await stream.send_headers(ok)
        await stream.write(b'{"result": "applied", "ref": {"kind": 5}}\n', end=True)
    elif how == "no-done":
        await stream.send_headers(ok)
        await stream.write(json.dumps({"ref": ref, "result": "applied"}).encode() + b"\n", end=True)
    else:
        await stream.send_headers(ok)
        line = {"ref": ref, "result": "failed", "code": "forbidden", "status": 403, "message": "x"}
        done = {"result": "done", "waiting_for_crds": False}
        await stream.write(b"%s\n%s\n" % (json.dumps(line).encode(), json.dumps(done).encode()))
        await stream.end()


async def test_a_misbehaving_agent_gets_typed_errors_and_the_worker_reads_them(
    agent_setup: AgentSetup, processes: Processes
) -> None:
    server = processes.server()
    ca_file = server.env["CLUSTERPORT_AGENT_TLS_CA_FILE"]

    def apply(name: str) -> AgentApplyResult:
        objects = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}]
        return apply_through_agent(
            server.proxy_url,
            agent_setup.agent_id,
            worker_credential(agent_setup.agent_id),
            objects,
            "clusterport",
            wait_crds=0,
            ca_file=ca_file,
        )

    async with dial(server, agent_setup.token) as ws:
        session = Session(
            WebsocketTransport(ws),
            is_server=False,
            hello={"agent_version": "bad", "capabilities": ["k8s-proxy", "gitops-apply"]},
            on_stream=_misapply,
            send_pings=True,
        )
        await session.handshake()
        task = asyncio.create_task(session.run())
        try:
            await eventually(agent_setup.connections, "the agent to connect")
            with pytest.raises(KubeAgentBadResponseError):
                await asyncio.to_thread(apply, "bad-head")
            with pytest.raises(KubeAgentBadResponseError):
                await asyncio.to_thread(apply, "bad-line")
            with pytest.raises(KubeAgentUnavailableError):
                await asyncio.to_thread(apply, "no-done")
            refused = await asyncio.to_thread(apply, "refused")
            assert session.close_info is None
        finally:
            await session.close()
            await task
    (only,) = refused.objects
    assert only.ref["name"] == "refused"
    assert isinstance(only.error, KubeForbiddenError) and only.error.status == 403
    assert refused.waiting_for_crds is False
