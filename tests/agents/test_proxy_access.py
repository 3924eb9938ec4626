"""Who may use an agent's Kubernetes API proxy, and as whom: the access list, impersonation
limited by the cluster's own RBAC, the audit trail of writes and the reads counter."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.agents.conftest import AgentSetup, Processes, eventually
from tests.agents.support import AgentServerProc, Process
from tests.agents.test_agent_proxy import https, kubectl, write_kubeconfig
from tests.conftest import Api
from tests.support.kubeapi import unique_name


async def put_access(api: Api, setup: AgentSetup, entries: list[dict[str, Any]]) -> Any:
    return await api.request("PUT", f"{setup.base}/access", json={"entries": entries})


# -- the access list API ------------------------------------------------------------------------


async def test_access_is_empty_until_a_maintainer_sets_it_and_each_change_is_audited(
    admin: Api,
) -> None:
    project = await admin.create_project("access-api")
    other = await admin.create_project("access-guest")
    created = await admin.post(f"/api/v1/projects/{project['id']}/agents", {"name": "edge"})
    base = f"/api/v1/projects/{project['id']}/agents/{created.json()['id']}"
    maintainer = admin.as_token(await admin.create_project_token(project["id"]))
    developer = admin.as_token(await admin.create_project_token(project["id"], role="developer"))

    empty = await maintainer.get(f"{base}/access")
    assert empty.status_code == 200, empty.text
    assert empty.json() == {"agent_id": created.json()["id"], "entries": []}

    entries = [
        {"project_id": project["id"], "access_as": "impersonate", "min_role": "reporter"},
        {"project_id": other["id"], "access_as": "agent", "environments": ["production"]},
        {"project_id": None, "access_as": "agent"},
    ]
    denied = await developer.request("PUT", f"{base}/access", json={"entries": entries})
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "insufficient_role"
    saved = await maintainer.request("PUT", f"{base}/access", json={"entries": entries})
    assert saved.status_code == 200, saved.text
    assert saved.json()["entries"] == [
        {"project_id": None, "min_role": "developer", "access_as": "agent", "environments": None},
        {
            "project_id": project["id"],
            "min_role": "reporter",
            "access_as": "impersonate",
            "environments": None,
        },
        {
            "project_id": other["id"],
            "min_role": "developer",
            "access_as": "agent",
            "environments": ["production"],
        },
    ]
    assert (await maintainer.get(f"{base}/access")).json() == saved.json()

    cleared = await maintainer.request("PUT", f"{base}/access", json={"entries": []})
    assert cleared.status_code == 200 and cleared.json()["entries"] == []
    url = f"/api/v1/projects/{project['id']}/audit-events?limit=100"
    events = (await admin.get(url)).json()["items"]
    updates = [e for e in events if e["action"] == "agent.access.update"]
    assert len(updates) == 2
    assert updates[0]["details"]["entries"][1]["access_as"] == "agent"
    assert updates[1]["details"]["entries"] == []


PAYLOAD = "validation_failed"


@pytest.mark.parametrize(
    ("entries", "code"),
    [
        ([{"project_id": 987654321, "access_as": "agent"}], "unknown_project"),
        ([{"project_id": "own", "access_as": "agent"}] * 2, "duplicate_access_entry"),
        ([{"project_id": None, "access_as": "agent"}] * 2, "duplicate_access_entry"),
        (
            [{"project_id": "own", "access_as": "agent", "environments": ["prod", "prod"]}],
            "duplicate_environment",
        ),
        ([{"project_id": "own", "access_as": "root"}], PAYLOAD),
        ([{"project_id": "own", "access_as": "agent", "min_role": "admin"}], PAYLOAD),
        ([{"project_id": "own", "access_as": "agent", "environments": ["/x"]}], PAYLOAD),
        ([{"project_id": 2**63, "access_as": "agent"}], PAYLOAD),
        ([{"project_id": "own", "access_as": "agent", "extra": 1}], PAYLOAD),
    ],
)
async def test_a_bad_access_list_is_refused_with_a_code(
    admin: Api, entries: list[dict[str, Any]], code: str
) -> None:
    project = await admin.create_project("access-bad")
    created = await admin.post(f"/api/v1/projects/{project['id']}/agents", {"name": "edge"})
    base = f"/api/v1/projects/{project['id']}/agents/{created.json()['id']}"
    body = [
        {**entry, "project_id": project["id"]} if entry.get("project_id") == "own" else entry
        for entry in entries
    ]
    response = await admin.request("PUT", f"{base}/access", json={"entries": body})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == code
    assert (await admin.get(f"{base}/access")).json()["entries"] == []


async def test_instance_level_agents_have_an_admin_access_route(admin: Api) -> None:
    project = await admin.create_project("access-instance")
    created = await admin.post("/api/v1/agents", {"name": "shared"})
    assert created.status_code == 201, created.text
    url = f"/api/v1/agents/{created.json()['id']}/access"
    entries = [{"project_id": project["id"], "access_as": "impersonate"}]
    maintainer = admin.as_token(await admin.create_project_token(project["id"]))
    refused = await maintainer.request("PUT", url, json={"entries": entries})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "admin_required"
    saved = await admin.request("PUT", url, json={"entries": entries})
    assert saved.status_code == 200, saved.text
    assert saved.json()["entries"][0]["access_as"] == "impersonate"
    # The project route does not reach an instance-level agent.
    other = await admin.get(
        f"/api/v1/projects/{project['id']}/agents/{created.json()['id']}/access"
    )
    assert other.status_code == 404


# -- through the proxy ---------------------------------------------------------------------------


async def test_proxy_access_is_off_by_default_with_a_coded_status_saying_what_to_configure(
    connected: tuple[AgentSetup, AgentServerProc, Process], admin: Api
) -> None:
    setup, server, _agent = connected
    assert (await put_access(admin, setup, [])).status_code == 200
    url = f"{server.proxy_url}/k8s-proxy/agents/{setup.agent_id}/api/v1/namespaces"
    other = await admin.create_project("access-outsider")
    outsider = await admin.create_project_token(other["id"])
    async with https(server) as http:

        async def refused() -> httpx.Response | None:
            response = await http.get(url, headers=bearer(setup.developer_token))
            return response if response.status_code == 403 else None

        # The 2-second authorization cache may still hold the fixture's access.
        response = await eventually(refused, "the emptied access list to apply")
        assert response is not None
        cause = response.json()["details"]["causes"][0]
        assert cause["reason"] == "proxy_access_not_configured"
        message = response.json()["message"]
        assert f"PUT /api/v1/projects/{setup.project_id}/agents/{setup.agent_id}/access" in message
        assert f'"project_id": {setup.project_id}' in message
        # An admin token needs the entry for admin tokens.
        as_admin = await http.get(url, headers=bearer(admin.token))
        assert as_admin.status_code == 403
        assert as_admin.json()["details"]["causes"][0]["reason"] == "proxy_access_not_configured"
        # Another project's token still learns nothing about the agent.
        hidden = await http.get(url, headers=bearer(outsider))
        assert hidden.status_code == 404

        # Sharing the agent with the other project admits its tokens.
        entries = [{"project_id": other["id"], "access_as": "agent"}]
        assert (await put_access(admin, setup, entries)).status_code == 200

        async def shared() -> bool:
            response = await http.get(url, headers=bearer(outsider))
            return response.status_code == 200

        await eventually(shared, "the shared agent to admit the other project")


async def test_access_as_agent_acts_with_the_agents_rights(
    connected: tuple[AgentSetup, AgentServerProc, Process],
    admin: Api,
    kube_cluster: Any,
    tmp_path: Path,
) -> None:
    setup, server, _agent = connected
    # The fixture's entry: developers and up, as the agent (whose test identity is an admin).
    config = write_kubeconfig(setup, server, tmp_path / "kc", setup.developer_token)
    can = kubectl(kube_cluster, config, "auth", "can-i", "create", "secrets", "-A")
    assert can.returncode == 0 and can.stdout.strip() == "yes", can.stdout + can.stderr
    reporter = await admin.create_project_token(setup.project_id, role="reporter")
    config = write_kubeconfig(setup, server, tmp_path / "r", reporter, "--no-check")
    denied = kubectl(kube_cluster, config, "get", "ns")
    assert denied.returncode != 0
    assert "developer role" in denied.stderr, denied.stderr


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _token_id(admin: Api, project_id: int, name: str) -> int:
    tokens = (await admin.get(f"/api/v1/projects/{project_id}/tokens")).json()["items"]
    return int(next(t["id"] for t in tokens if t["name"] == name))


RBAC = """
apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: read-pods, namespace: {ns}}}
rules:
- {{apiGroups: [""], resources: [pods], verbs: [get, list]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: reporters-read-pods, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: read-pods}}
subjects:
- {{apiGroup: rbac.authorization.k8s.io, kind: Group, name: "clusterport:project:{p}:reporter"}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: write-configmaps, namespace: {ns}}}
rules:
- {{apiGroups: [""], resources: [configmaps], verbs: [create]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: developers-write-configmaps, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: write-configmaps}}
subjects:
- {{apiGroup: rbac.authorization.k8s.io, kind: Group, name: "clusterport:project:{p}:developer"}}
"""


def reads(server: AgentServerProc, credential: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{server.health_port}/metrics", timeout=10).text
    pattern = rf'^clusterport_agent_proxy_reads_total{{credential="{credential}"}} (\S+)$'
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def test_impersonation_lets_the_clusters_rbac_decide_per_role(
    connected: tuple[AgentSetup, AgentServerProc, Process],
    admin: Api,
    kube_cluster: Any,
    tmp_path: Path,
) -> None:
    setup, server, _agent = connected
    project = setup.project_id
    entries = [{"project_id": project, "access_as": "impersonate", "min_role": "reporter"}]
    assert (await put_access(admin, setup, entries)).status_code == 200
    ns = unique_name("imp")
    direct = kube_cluster.kubeconfig
    applied = kubectl(kube_cluster, direct, "apply", "-f", "-", stdin=RBAC.format(ns=ns, p=project))
    assert applied.returncode == 0, applied.stderr
    reporter = await admin.create_project_token(project, role="reporter")
    developer = setup.developer_token
    reporter_id = await _token_id(admin, project, "reporter-token")
    developer_id = await _token_id(admin, project, "developer-token")
    configs = {
        "reporter": write_kubeconfig(setup, server, tmp_path / "reporter", reporter),
        "developer": write_kubeconfig(setup, server, tmp_path / "developer", developer),
    }

    async def impersonating() -> bool:
        # The fixture's `access_as: agent` may still be cached for two seconds.
        return all(
            kubectl(kube_cluster, config, "get", "secrets", "-n", ns).returncode != 0
            for config in configs.values()
        )

    await eventually(impersonating, "the impersonate entry to apply")
    reads_before = reads(server, str(reporter_id))

    for role, config in configs.items():
        pods = kubectl(kube_cluster, config, "get", "pods", "-n", ns)
        assert pods.returncode == 0, (role, pods.stderr)
        secrets = kubectl(kube_cluster, config, "get", "secrets", "-n", ns)
        assert secrets.returncode == 1, (role, secrets.stdout)
        assert "Forbidden" in secrets.stderr, secrets.stderr
        token_id = reporter_id if role == "reporter" else developer_id
        assert f'"clusterport:token:{token_id}" cannot list resource "secrets"' in secrets.stderr
        made = kubectl(kube_cluster, config, "create", "configmap", f"by-{role}", "-n", ns)
        if role == "reporter":
            assert made.returncode == 1, made.stdout
            denied = f'User "clusterport:token:{token_id}" cannot create resource "configmaps"'
            assert "configmaps is forbidden" in made.stderr and denied in made.stderr, made.stderr
        else:
            assert made.returncode == 0, made.stderr
    listed = kubectl(kube_cluster, direct, "get", "configmaps", "-n", ns, "-o", "name")
    assert "configmap/by-developer" in listed.stdout
    assert "configmap/by-reporter" not in listed.stdout

    # `kubectl auth can-i` through the proxy answers as the cluster does for that identity.
    identities = {
        "reporter": (reporter_id, ["reporter"], configs["reporter"]),
        "developer": (developer_id, ["reporter", "developer"], configs["developer"]),
    }
    questions = [
        ("list", "pods"),
        ("create", "configmaps"),
        ("delete", "configmaps"),
        ("get", "secrets"),
        ("create", "pods"),
    ]
    for token_id, roles, config in identities.values():
        groups = [f"clusterport:project:{project}"] + [
            f"clusterport:project:{project}:{r}" for r in roles
        ]
        as_flags = [f"--as=clusterport:token:{token_id}"] + [f"--as-group={g}" for g in groups]
        for verb, resource in questions:
            through = kubectl(kube_cluster, config, "auth", "can-i", verb, resource, "-n", ns)
            straight = kubectl(
                kube_cluster, direct, "auth", "can-i", verb, resource, "-n", ns, *as_flags
            )
            assert through.stdout.strip() in ("yes", "no"), through.stderr
            assert (through.stdout, through.returncode) == (straight.stdout, straight.returncode)
    yes = kubectl(kube_cluster, configs["developer"], "auth", "can-i", "create", "configmaps")
    assert yes.stdout.strip() == "no"  # the grant is in the namespace only
    whoami = kubectl(kube_cluster, configs["developer"], "auth", "whoami", "-o", "json")
    if whoami.returncode == 0:  # SelfSubjectReview: Kubernetes 1.28 and later
        info = json.loads(whoami.stdout)["status"]["userInfo"]
        assert info["username"] == f"clusterport:token:{developer_id}"
        assert f"clusterport:project:{project}:developer" in info["groups"]
        assert f"clusterport:project:{project}:maintainer" not in info["groups"]

    # Writes are in the project's audit trail (no bodies); reads are counted per token.
    async def audited() -> list[dict[str, Any]]:
        events = (await admin.get(f"/api/v1/projects/{project}/audit-events?limit=100")).json()
        return [e for e in events["items"] if e["action"] == "k8s_proxy.write"]

    def created_by(events: list[dict[str, Any]], token_id: int) -> list[dict[str, Any]]:
        return [
            e
            for e in events
            if e["actor"].startswith(f"token:{token_id}:")
            and e["details"]["path"] == f"/api/v1/namespaces/{ns}/configmaps"
        ]

    async def both_writes() -> list[dict[str, Any]]:
        events = await audited()
        mine = created_by(events, developer_id) + created_by(events, reporter_id)
        return events if len(mine) == 2 else []

    events = await eventually(both_writes, "the configmap writes in the audit trail")
    (developer_write,) = created_by(events, developer_id)
    (reporter_write,) = created_by(events, reporter_id)
    assert developer_write["target_type"] == "agent"
    assert developer_write["target_id"] == str(setup.agent_id)
    assert developer_write["details"] == {
        "credential": str(developer_id),
        "verb": "POST",
        "path": f"/api/v1/namespaces/{ns}/configmaps",
        "status": 201,
    }
    assert reporter_write["details"]["status"] == 403
    assert reads(server, str(reporter_id)) >= reads_before + 2  # pods and secrets lists


async def test_admin_tokens_use_the_admin_entry_and_the_admin_group(
    connected: tuple[AgentSetup, AgentServerProc, Process],
    admin: Api,
    kube_cluster: Any,
    tmp_path: Path,
) -> None:
    setup, server, _agent = connected
    entries = [{"project_id": None, "access_as": "impersonate"}]
    assert (await put_access(admin, setup, entries)).status_code == 200
    config = write_kubeconfig(setup, server, tmp_path / "kc", admin.token)

    async def impersonated() -> bool:
        can = kubectl(kube_cluster, config, "auth", "can-i", "list", "namespaces")
        return can.stdout.strip() == "no"

    # `clusterport:admin` has no binding on the test cluster: it may do nothing.
    await eventually(impersonated, "the admin entry to apply")
    # The project's own tokens lost access with the list that no longer names them.
    denied = kubectl(
        kube_cluster,
        write_kubeconfig(setup, server, tmp_path / "dev", setup.developer_token, "--no-check"),
        "get",
        "ns",
    )
    assert denied.returncode != 0 and "not configured" in denied.stderr, denied.stderr


async def test_writes_of_a_routed_request_are_audited_once(
    connected: tuple[AgentSetup, AgentServerProc, Process],
    processes: Processes,
    admin: Api,
    kube_cluster: Any,
    tmp_path: Path,
) -> None:
    setup, _server, _agent = connected
    other = processes.server()  # holds no connection: routes to `server`
    config = write_kubeconfig(setup, other, tmp_path / "kc", setup.developer_token)
    ns = unique_name("routed")
    made = kubectl(kube_cluster, config, "create", "namespace", ns)
    assert made.returncode == 0, made.stderr

    async def writes() -> list[dict[str, Any]]:
        url = f"/api/v1/projects/{setup.project_id}/audit-events?limit=100"
        events = (await admin.get(url)).json()
        return [
            e
            for e in events["items"]
            if e["action"] == "k8s_proxy.write" and e["details"]["path"] == "/api/v1/namespaces"
        ]

    found = await eventually(writes, "the routed write in the audit trail")
    assert [e["details"]["status"] for e in found] == [201]
    deleted = kubectl(
        kube_cluster, kube_cluster.kubeconfig, "delete", "namespace", ns, "--wait=false"
    )
    assert deleted.returncode == 0
