"""Pull-based deployments through a real agent server and agent: the agent applies in-cluster
and reports each object; an agent without the capability is deployed through the proxy; only
clusterport's workers may ask an agent to apply."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest

from app.agent_server.config import get_agent_server_settings
from app.agents.credentials import worker_credential
from tests.agents.conftest import Processes, processes, tls  # noqa: F401 (fixtures of `via_agent`)
from tests.agents.support import AgentServerProc, Process
from tests.gitops.conftest import GitOps, Setup, _setup, config_map
from tests.kube.conftest import via_agent  # noqa: F401 (a real agent server and agent)
from tests.kube.helpers import Reach, agent_metrics_url, metric
from tests.support.git_server import GitServer
from tests.support.kubeapi import KubeCluster

pytestmark = pytest.mark.usefixtures("allow_local_network", "worker")

APPLY_STREAMS = "clusterport_agent_gitops_apply_streams_total"


async def _pulled(
    gitops: GitOps,
    git_repos: GitServer,
    kube_cluster: KubeCluster,
    tmp_path: Path,
    reach: Reach,
) -> tuple[Setup, Process]:
    gitops.project.reach = reach
    setup = await _setup(gitops, git_repos, kube_cluster, tmp_path)
    (agent,) = reach.agents.values()
    return setup, agent


async def test_a_refused_object_reports_its_code_from_the_agent(
    gitops: GitOps,
    git_repos: GitServer,
    kube_cluster: KubeCluster,
    tmp_path: Path,
    via_agent: Reach,  # noqa: F811 (the fixture imported above)
) -> None:
    setup, agent = await _pulled(gitops, git_repos, kube_cluster, tmp_path, via_agent)
    setup.repo.write("k8s/config.yaml", config_map("a"))
    setup.repo.write(
        "k8s/web.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports: [{port: 99999}]\n",
    )
    sha, _ = await setup.push()
    failed = await setup.finished(sha)
    assert failed["status"] == "failed", failed
    assert failed["error"]["code"] == "invalid"
    assert failed["error"]["object"] == f"Service/{setup.namespace}/web"
    assert {(o["kind"], o["name"], o["result"], o["code"]) for o in failed["objects"]} == {
        ("ConfigMap", "a", "applied", None),
        ("Service", "web", "failed", "invalid"),
    }
    live = kube_cluster.kubectl_json("get", "configmap", "a", "-n", setup.namespace)
    assert live["data"] == {"key": "v"}
    assert await metric(agent_metrics_url(agent), APPLY_STREAMS, outcome="refused") == 1


async def test_an_agent_without_the_capability_is_deployed_through_the_proxy(
    gitops: GitOps,
    git_repos: GitServer,
    kube_cluster: KubeCluster,
    tmp_path: Path,
    processes: Processes,  # noqa: F811 (the fixture imported above)
    via_agent: Reach,  # noqa: F811 (the fixture imported above)
) -> None:
    def older_agent(server: AgentServerProc, token: str, kubeconfig: Path) -> Process:
        extra = {"CLUSTERPORT_AGENT_GITOPS_APPLY": "false"}
        return processes.agent(server.agent_url, token, kubeconfig, extra)

    via_agent.start_agent = older_agent
    setup, agent = await _pulled(gitops, git_repos, kube_cluster, tmp_path, via_agent)
    setup.repo.write("k8s/config.yaml", config_map("a", "proxied"))
    sha, _ = await setup.push()
    done = await setup.finished(sha)
    assert done["status"] == "succeeded", done
    live = kube_cluster.kubectl_json("get", "configmap", "a", "-n", setup.namespace)
    assert live["data"] == {"key": "proxied"}
    assert await metric(agent_metrics_url(agent), APPLY_STREAMS) == 0
    server = via_agent.server
    assert server is not None
    asked = await metric(
        f"http://127.0.0.1:{server.health_port}/metrics",
        "clusterport_agent_apply_streams_total",
        outcome="capability_missing",
    )
    assert asked == 1


async def test_only_a_worker_credential_may_apply_through_the_agent(
    gitops: GitOps,
    git_repos: GitServer,
    kube_cluster: KubeCluster,
    tmp_path: Path,
    via_agent: Reach,  # noqa: F811 (the fixture imported above)
) -> None:
    await _pulled(gitops, git_repos, kube_cluster, tmp_path, via_agent)
    (agent_id,) = via_agent.agents
    server = via_agent.server
    assert server is not None
    # Proxy access for admin tokens as the agent: the apply endpoint still refuses them.
    access = await gitops.api.request(
        "PUT",
        f"{gitops.project.base}/agents/{agent_id}/access",
        json={"entries": [{"project_id": None, "access_as": "agent"}]},
    )
    assert access.status_code == 200, access.text
    url = f"{server.proxy_url}/agent-apply/agents/{agent_id}"
    body = {"objects": [], "field_manager": "clusterport", "wait_crds": 0}
    ca = str(get_agent_server_settings().agent_tls_ca_file)
    async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=ca)) as client:
        for credential, status, code in (
            (gitops.api.token, 403, "worker_credential_required"),
            (worker_credential(agent_id + 1), 403, "wrong_agent"),
            ("not-a-token", 401, None),
        ):
            headers = {"Authorization": f"Bearer {credential}"}
            refused = await client.post(url, json=body, headers=headers)
            assert refused.status_code == status, refused.text
            if code:
                assert refused.headers["X-Clusterport-Error"] == code
        headers = {"Authorization": f"Bearer {worker_credential(agent_id)}"}
        empty = await client.post(url, json=body, headers=headers)
    assert empty.status_code == 200
    assert empty.text == '{"result": "done", "waiting_for_crds": false}\n'
