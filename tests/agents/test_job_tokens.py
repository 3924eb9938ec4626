"""CI job credentials: a short-lived, revocable kubeconfig per project environment, through the
agents whose access list admits it, with kubectl against a real kube-apiserver."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from tests.agents.conftest import AgentSetup, eventually
from tests.agents.support import AgentServerProc, Process
from tests.agents.test_agent_proxy import kubectl
from tests.agents.test_proxy_access import put_access
from tests.conftest import Api
from tests.support.kubeapi import unique_name

RBAC = """
apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: deploy-configmaps, namespace: {ns}}}
rules:
- {{apiGroups: [""], resources: [configmaps], verbs: [get, list, create]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: production-jobs, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: deploy-configmaps}}
subjects:
- {{apiGroup: rbac.authorization.k8s.io, kind: Group, name: "clusterport:environment:production"}}
"""


async def test_job_token_requests_are_validated(admin: Api) -> None:
    project = await admin.create_project("jobs-api")
    created = await admin.post(f"/api/v1/projects/{project['id']}/agents", {"name": "edge"})
    agent_id = created.json()["id"]
    url = f"/api/v1/projects/{project['id']}/job-tokens"
    reporter = admin.as_token(await admin.create_project_token(project["id"], role="reporter"))
    developer = admin.as_token(await admin.create_project_token(project["id"], role="developer"))

    too_long = await developer.post(url, {"environment": "production", "ttl_seconds": 3601})
    assert too_long.status_code == 422
    assert too_long.json()["error"]["code"] == "validation_failed"
    pattern = await developer.post(url, {"environment": "review/*"})
    assert pattern.status_code == 422
    refused = await reporter.post(url, {"environment": "production"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "insufficient_role"
    # No agent admits the project yet: a coded answer saying what to configure.
    none = await developer.post(url, {"environment": "production"})
    assert none.status_code == 409 and none.json()["error"]["code"] == "no_agent_access"
    assert "PUT .../agents/<id>/access" in none.json()["error"]["message"]

    entries = [
        {
            "project_id": project["id"],
            "access_as": "impersonate",
            "environments": ["production", "review/*"],
        }
    ]
    access_url = f"/api/v1/projects/{project['id']}/agents/{agent_id}/access"
    assert (await admin.request("PUT", access_url, json={"entries": entries})).status_code == 200
    elsewhere = await developer.post(url, {"environment": "staging"})
    assert elsewhere.status_code == 409
    made = await developer.post(url, {"environment": "review/app-1", "ttl_seconds": 600})
    assert made.status_code == 201, made.text
    body = made.json()
    assert [c["name"] for c in body["kubeconfig"]["contexts"]] == [f"clusterport-agent-{agent_id}"]
    assert set(body["variables"]) == {
        "KUBECONFIG",
        "KUBE_URL",
        "KUBE_TOKEN",
        "KUBE_NAMESPACE",
        "KUBE_CA_PEM",
    }
    assert body["variables"]["KUBE_TOKEN"] == body["token"]
    assert json.loads(body["variables"]["KUBECONFIG"]) == body["kubeconfig"]
    assert body["variables"]["KUBE_URL"].endswith(f"/k8s-proxy/agents/{agent_id}")

    missing = await developer.delete(f"{url}/987654")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "job_token_not_found"
    assert (await developer.delete(f"{url}/{body['id']}")).status_code == 204
    events = (await admin.get(f"/api/v1/projects/{project['id']}/audit-events?limit=100")).json()
    actions = [e["action"] for e in events["items"]]
    assert "job_token.create" in actions and "job_token.revoke" in actions
    assert body["token"] not in json.dumps(events)


def _through(server: AgentServerProc, kubeconfig: dict[str, Any], path: Path) -> Path:
    """The job's kubeconfig, pointed at this test's agent server (a port chosen at random)."""
    ca = base64.b64encode(Path(server.env["CLUSTERPORT_AGENT_TLS_CA_FILE"]).read_bytes()).decode()
    for cluster in kubeconfig["clusters"]:
        tail = cluster["cluster"]["server"].partition("/k8s-proxy/")[2]
        cluster["cluster"] = {
            "server": f"{server.proxy_url}/k8s-proxy/{tail}",
            "certificate-authority-data": ca,
        }
    path.write_text(json.dumps(kubeconfig))
    path.chmod(0o600)
    return path


async def test_a_ci_job_acts_as_its_own_identity_and_is_revocable(
    connected: tuple[AgentSetup, AgentServerProc, Process],
    admin: Api,
    kube_cluster: Any,
    tmp_path: Path,
) -> None:
    setup, server, _agent = connected
    project = setup.project_id
    entries = [
        {
            "project_id": project,
            "access_as": "impersonate",
            "min_role": "developer",
            "environments": ["production"],
        }
    ]
    assert (await put_access(admin, setup, entries)).status_code == 200
    ns = unique_name("job")
    direct = kube_cluster.kubeconfig
    applied = kubectl(kube_cluster, direct, "apply", "-f", "-", stdin=RBAC.format(ns=ns))
    assert applied.returncode == 0, applied.stderr

    jobs = f"/api/v1/projects/{project}/job-tokens"
    developer = admin.as_token(setup.developer_token)
    made = await developer.post(jobs, {"environment": "production", "ttl_seconds": 300})
    assert made.status_code == 201, made.text
    job = made.json()
    config = _through(server, job["kubeconfig"], tmp_path / "job")

    listed = kubectl(kube_cluster, config, "get", "configmaps", "-n", ns)
    assert listed.returncode == 0, listed.stderr
    created = kubectl(kube_cluster, config, "create", "configmap", "from-ci", "-n", ns)
    assert created.returncode == 0, created.stderr
    secrets = kubectl(kube_cluster, config, "get", "secrets", "-n", ns)
    assert secrets.returncode == 1
    assert f'User "clusterport:ci_job:{job["id"]}" cannot list resource "secrets"' in secrets.stderr
    elsewhere = kubectl(kube_cluster, config, "get", "configmaps", "-n", "default")
    assert elsewhere.returncode == 1 and "forbidden" in elsewhere.stderr
    can = kubectl(kube_cluster, config, "auth", "can-i", "create", "configmaps", "-n", ns)
    straight = kubectl(
        kube_cluster,
        direct,
        "auth",
        "can-i",
        "create",
        "configmaps",
        "-n",
        ns,
        f"--as=clusterport:ci_job:{job['id']}",
        f"--as-group=clusterport:project:{project}",
        "--as-group=clusterport:environment:production",
    )
    assert (can.stdout, can.returncode) == (straight.stdout, straight.returncode) == ("yes\n", 0)

    # Writes are audited as the job.
    async def audited() -> list[dict[str, Any]]:
        url = f"/api/v1/projects/{project}/audit-events?limit=100"
        events = (await admin.get(url)).json()["items"]
        return [
            e
            for e in events
            if e["action"] == "k8s_proxy.write" and e["actor"] == f"ci-job:{job['id']}"
        ]

    writes = await eventually(audited, "the job's write in the audit trail")
    assert writes[0]["details"]["path"] == f"/api/v1/namespaces/{ns}/configmaps"
    assert writes[0]["details"]["status"] == 201

    # A job of another environment is refused by this agent's access list.
    staging = await developer.post(jobs, {"environment": "staging"})
    assert staging.status_code == 409

    # Revoked: the proxy refuses the credential within its 2-second cache.
    assert (await developer.delete(f"{jobs}/{job['id']}")).status_code == 204

    async def refused() -> str:
        result = kubectl(kube_cluster, config, "get", "configmaps", "-n", ns)
        return result.stderr if result.returncode != 0 else ""

    stderr = await eventually(refused, "the revoked job credential to be refused")
    assert "You must be logged in to the server" in stderr, stderr
