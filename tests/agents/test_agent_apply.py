"""The agent server's apply endpoint with real processes: routed to the replica holding the
agent, and failing fast with a code when the agent is not connected."""

from __future__ import annotations

import json
from typing import Any

from app.agents.credentials import worker_credential
from tests.agents.conftest import AgentSetup, Processes, eventually
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
