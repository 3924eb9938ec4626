"""Clusters registered only through their agent: a real agent server and a real agent in front
of the real kube-apiserver; the worker knows nothing but the agent server's proxy URL."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError

from app.core.db import get_engine, session_scope
from tests.conftest import Api
from tests.kube.helpers import Project, Reach, wait_for
from tests.support.kubeapi import KubeCluster, unique_name

pytestmark = pytest.mark.usefixtures("worker")

DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web"},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
        },
    },
}


def _stored_anywhere(needle: str) -> list[str]:
    """Tables whose rows mention `needle` anywhere, in any column."""
    found = []
    with get_engine().connect() as connection:
        for table in inspect(connection).get_table_names():
            if table == "alembic_version":
                continue
            for row in connection.execute(text(f'SELECT * FROM "{table}"')):
                if needle in json.dumps([str(v) for v in row]):
                    found.append(table)
                    break
    return found


def kubectl(kube: KubeCluster, config: Path, *args: str, stdin: str | None = None) -> Any:
    return subprocess.run(
        [kube.kubectl_path, "--kubeconfig", str(config), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def _namespace_ready(project: Project, cluster_id: int, environment: str) -> dict[str, Any]:
    base = f"{project.base}/clusters/{cluster_id}/namespaces"
    created = await project.api.post(base, {"environment": environment})
    assert created.status_code == 202, created.text
    path = f"{base}/{created.json()['id']}"
    ns: dict[str, Any] = (
        await wait_for(
            lambda: project.api.get(path),
            lambda r: r.json()["status"] != "provisioning",
            "the namespace",
        )
    ).json()
    assert ns["status"] == "ready", ns
    return ns


async def test_done_when_everything_through_the_agent(
    admin: Api, kube_cluster: KubeCluster, via_agent: Reach, tmp_path: Path
) -> None:
    """Registered only through its agent: connected, a namespace, a namespace kubeconfig that
    kubectl can deploy with but not read kube-system with, resources through the cache, and
    deleting it cleans up. Checked with kubectl against the kube-apiserver."""
    project = await Project.create(admin, via_agent)
    cluster = await project.connected_cluster(kube_cluster)
    assert cluster["connection"] == "via_agent"
    assert cluster["kubernetes_version"]
    # The worker had no other route: the API server's address is stored nowhere.
    api_address = kube_cluster.url.removeprefix("https://")
    assert _stored_anywhere(api_address) == []

    ns = await _namespace_ready(project, cluster["id"], "production")
    name = ns["namespace"]
    assert kube_cluster.namespace_state(name) == "active"
    base = f"{project.base}/clusters/{cluster['id']}"

    response = await admin.get(f"{base}/namespaces/{ns['id']}/kubeconfig")
    assert response.status_code == 200, response.text
    kubeconfig = tmp_path / "ns.kubeconfig"
    kubeconfig.write_text(response.text)
    config = json.loads(response.text)
    assert config["clusters"][0]["cluster"]["server"].endswith(
        f"/k8s-proxy/agents/{cluster['agent']['id']}"
    )
    assert api_address not in response.text
    applied = kubectl(kube_cluster, kubeconfig, "apply", "-f", "-", stdin=json.dumps(DEPLOYMENT))
    assert applied.returncode == 0, applied.stderr
    made = kube_cluster.kubectl_json("get", "deployment", "web", "-n", name)
    assert made["spec"]["replicas"] == 2
    refused = kubectl(kube_cluster, kubeconfig, "get", "secrets", "-n", "kube-system")
    assert refused.returncode != 0
    assert "forbidden" in refused.stderr.lower()
    assert f"system:serviceaccount:{name}:" in refused.stderr
    other = kubectl(kube_cluster, kubeconfig, "get", "pods", "-n", "default")
    assert other.returncode != 0

    # Resources come through the cache, read by the worker through the agent.
    url = f"{base}/resources"
    params = {"kind": "deployments", "namespace": name}
    listed = await wait_for(
        lambda: admin.get(url, params=params), lambda r: r.status_code == 200, "the cache"
    )
    assert [d["name"] for d in listed.json()["items"]] == ["web"]

    # Deleting the cluster removes its namespace; the namespace credential stops working.
    assert (await admin.delete(base)).status_code == 202
    await wait_for(lambda: admin.get(base), lambda r: r.status_code == 404, "cluster removal")
    assert kube_cluster.namespace_state(name) != "active"
    # The proxy keeps an authorization for two seconds, like API tokens on other replicas.
    after = await wait_for(
        lambda: asyncio.to_thread(kubectl, kube_cluster, kubeconfig, "get", "deployments"),
        lambda proc: proc.returncode != 0,
        "the namespace credential to stop working",
    )
    assert "credential is gone" in after.stderr


async def test_stopped_agent_is_a_coded_status_and_the_next_attempt_completes(
    admin: Api, kube_cluster: KubeCluster, via_agent: Reach
) -> None:
    project = await Project.create(admin, via_agent)
    cluster = await project.connected_cluster(kube_cluster)
    agent_id = cluster["agent"]["id"]
    base = f"{project.base}/clusters/{cluster['id']}"

    via_agent.agents[agent_id].stop()
    await project.wait_agent_connected(agent_id, connected=False)
    assert (await admin.get(base)).json()["agent"] == {"id": agent_id, "connected": False}
    assert (await admin.post(f"{base}/check")).status_code == 202
    # The check shows `connecting` while it retries, then its final answer.
    checked = await wait_for(
        lambda: project.cluster(cluster["id"]),
        lambda c: c["status"] not in ("connected", "connecting"),
        "recheck",
    )
    assert (checked["status"], checked["error"]["code"]) == ("unreachable", "agent_not_connected")

    # A namespace asked for while the agent is away stays pending with the coded cause while
    # it is retried (an agent that is away is a transient failure)...
    created = await admin.post(f"{base}/namespaces", {"environment": "staging"})
    path = f"{base}/namespaces/{created.json()['id']}"
    pending = await wait_for(
        lambda: admin.get(path),
        lambda r: (r.json()["last_error"] or {}).get("code") == "agent_not_connected",
        "the coded retry",
    )
    assert pending.json()["status"] == "provisioning", pending.json()

    # ...and a later attempt, once the agent is back, completes it.
    await via_agent.restart_agent(project, agent_id)
    again = await admin.post(f"{base}/namespaces", {"environment": "staging"})
    assert again.json()["id"] == created.json()["id"]
    ready = await wait_for(
        lambda: admin.get(path), lambda r: r.json()["status"] != "provisioning", "the next attempt"
    )
    assert ready.json()["status"] == "ready", ready.json()
    assert kube_cluster.namespace_state(ready.json()["namespace"]) == "active"
    assert (await admin.post(f"{base}/check")).status_code == 202
    await wait_for(
        lambda: project.cluster(cluster["id"]), lambda c: c["status"] == "connected", "recheck"
    )


async def test_agent_lacking_a_right_is_forbidden(
    admin: Api, kube_cluster: KubeCluster, via_agent: Reach
) -> None:
    from tests.kube.helpers import limited_token

    project = await Project.create(admin, via_agent)
    # The agent's account may read the version but not list namespaces (managed clusters do).
    created = await project.add_cluster(kube_cluster, token=limited_token(kube_cluster))
    cluster = await project.checked_cluster(created["id"])
    assert (cluster["status"], cluster["error"]["code"]) == ("forbidden", "forbidden")


async def test_client_impersonation_headers_are_refused(
    admin: Api, kube_cluster: KubeCluster, via_agent: Reach
) -> None:
    project = await Project.create(admin, via_agent)
    cluster = await project.connected_cluster(kube_cluster)
    ns = await _namespace_ready(project, cluster["id"], "dev")
    response = await admin.get(
        f"{project.base}/clusters/{cluster['id']}/namespaces/{ns['id']}/kubeconfig"
    )
    credential = response.json()["users"][0]["user"]["token"]
    assert via_agent.server is not None
    url = (
        f"{via_agent.server.proxy_url}/k8s-proxy/agents/{cluster['agent']['id']}/api/v1/namespaces"
    )
    context = ssl.create_default_context(
        cafile=via_agent.server.env["CLUSTERPORT_AGENT_TLS_CA_FILE"]
    )
    async with httpx.AsyncClient(verify=context, timeout=30) as client:
        headers = {"Authorization": f"Bearer {credential}"}
        escalated = await client.get(url, headers={**headers, "Impersonate-User": "system:admin"})
        assert escalated.status_code == 400
        assert escalated.headers["X-Clusterport-Error"] == "impersonation_not_allowed"
        # Without the header, the credential acts as the namespace's account: no cluster reads.
        plain = await client.get(url, headers=headers)
        assert plain.status_code == 403
        # A forged credential is refused before anything reaches the agent.
        forged = await client.get(url, headers={"Authorization": f"Bearer {credential[:-4]}AAAA"})
        assert (forged.status_code, forged.headers["X-Clusterport-Error"]) == (
            401,
            "invalid_credential",
        )


async def test_another_projects_agent_is_not_found(admin: Api) -> None:
    mine = await Project.create(admin)
    theirs = await Project.create(admin)
    their_agent, _ = await theirs.add_agent()
    body = {"name": unique_name("c"), "agent_id": their_agent}
    refused = await admin.post(f"{mine.base}/clusters", body)
    assert (refused.status_code, refused.json()["error"]["code"]) == (404, "agent_not_found")
    missing = await admin.post(f"{mine.base}/clusters", {**body, "agent_id": 999_999})
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "agent_not_found")
    both = await admin.post(
        f"{mine.base}/clusters",
        {**body, "kubernetes": {"api_url": "https://k8s.example.com", "token": "t"}},
    )
    assert both.status_code == 422
    neither = await admin.post(f"{mine.base}/clusters", {"name": unique_name("c")})
    assert neither.status_code == 422


async def test_scope_enable_disable_managed_and_audit_are_the_same(admin: Api) -> None:
    """No agent process needed: these are records, the same for both kinds."""
    from app.audit.models import AuditEvent

    project = await Project.create(admin)
    agent_id, _ = await project.add_agent()
    created = await admin.post(
        f"{project.base}/clusters",
        {
            "name": "edge",
            "agent_id": agent_id,
            "environment_scope": "review/*",
            "managed": False,
            "enabled": False,
        },
    )
    assert created.status_code == 201, created.text
    cluster = created.json()
    assert (cluster["connection"], cluster["managed"], cluster["status"]) == (
        "via_agent",
        False,
        "disabled",
    )
    assert cluster["agent"] == {"id": agent_id, "connected": False}
    url = f"{project.base}/cluster-for-environment"
    assert (await admin.get(url, params={"environment": "review/a"})).status_code == 404
    enabled = await admin.patch(f"{project.base}/clusters/{cluster['id']}", {"enabled": True})
    assert enabled.json()["status"] == "connecting"
    chosen = await admin.get(url, params={"environment": "review/a"})
    assert (chosen.status_code, chosen.json()["id"]) == (200, cluster["id"])
    assert chosen.json()["connection"] == "via_agent"
    no_url = await admin.patch(
        f"{project.base}/clusters/{cluster['id']}", {"kubernetes": {"token": "x"}}
    )
    assert (no_url.status_code, no_url.json()["error"]["code"]) == (409, "cluster_via_agent")
    listed = (await admin.get(f"{project.base}/clusters")).json()["items"]
    assert [(c["connection"], c["agent"]["id"]) for c in listed] == [("via_agent", agent_id)]
    with session_scope() as session:
        actions = session.scalars(
            select(AuditEvent.action).where(AuditEvent.target_id == str(cluster["id"]))
        ).all()
    assert {"cluster.create", "cluster.update"} <= set(actions)
    # An agent that a cluster uses cannot be deleted from under it.
    with pytest.raises(IntegrityError), session_scope() as session:
        session.execute(text("DELETE FROM agents WHERE id = :id"), {"id": agent_id})
