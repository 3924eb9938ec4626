"""Instance-level clusters and agents: registered by admins, usable by every project, read-only
to project members, and outranked by a project's own clusters in environment-scope matching."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Api

DIRECT = {"kubernetes": {"api_url": "https://127.0.0.1:6443", "token": "t"}}


async def _created(response: Any) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.usefixtures("allow_local_network")
async def test_instance_clusters_are_shared_read_only_and_outranked(admin: Api) -> None:
    project = await admin.create_project("shop")
    other = await admin.create_project("blog")
    maintainer = admin.as_token(await admin.create_project_token(project["id"], "maintainer"))
    base = f"/api/v1/projects/{project['id']}"

    agent = await _created(await admin.post("/api/v1/agents", {"name": "shared-edge"}))
    assert agent["project_id"] is None
    token = await _created(await admin.post(f"/api/v1/agents/{agent['id']}/tokens", {"name": "a"}))
    assert token["token"].startswith("cpa_")
    shared = await _created(
        await admin.post(
            "/api/v1/clusters",
            {"name": "shared", "agent_id": agent["id"], "environment_scope": "*"},
        )
    )
    assert (shared["project_id"], shared["connection"]) == (None, "via_agent")
    catch_review = await _created(
        await admin.post(
            "/api/v1/clusters", {"name": "review", "environment_scope": "review/*", **DIRECT}
        )
    )

    # Project members see them, read-only.
    listed = (await maintainer.get(f"{base}/clusters")).json()["items"]
    assert {c["id"] for c in listed} == {shared["id"], catch_review["id"]}
    seen = await maintainer.get(f"{base}/clusters/{shared['id']}")
    assert (seen.status_code, seen.json()["agent"]["connected"]) == (200, False)
    for method, path, body in (
        ("PATCH", f"{base}/clusters/{shared['id']}", {"enabled": False}),
        ("DELETE", f"{base}/clusters/{shared['id']}", None),
        ("POST", f"{base}/clusters/{shared['id']}/check", None),
    ):
        refused = await maintainer.request(method, path, json=body)
        assert (refused.status_code, refused.json()["error"]["code"]) == (
            403,
            "instance_cluster_read_only",
        ), (method, path)
    # Only admins register or list instance-level records.
    for refused in (
        await maintainer.get("/api/v1/clusters"),
        await maintainer.post("/api/v1/agents", {"name": "x"}),
        await maintainer.post("/api/v1/clusters", {"name": "x", **DIRECT}),
    ):
        assert (refused.status_code, refused.json()["error"]["code"]) == (403, "admin_required")
    assert [c["id"] for c in (await admin.get("/api/v1/clusters")).json()["items"]] == [
        shared["id"],
        catch_review["id"],
    ]

    # Environment scopes: the project's own cluster wins over an instance-level one.
    url = f"{base}/cluster-for-environment"

    async def chosen(environment: str) -> int:
        response = await maintainer.get(url, params={"environment": environment})
        assert response.status_code == 200, response.text
        return int(response.json()["id"])

    assert await chosen("review/app-1") == catch_review["id"]
    assert await chosen("production") == shared["id"]
    own = await _created(
        await maintainer.post(
            f"{base}/clusters", {"name": "own", "environment_scope": "*", **DIRECT}
        )
    )
    assert await chosen("production") == own["id"]
    assert await chosen("review/app-1") == own["id"], "any own scope outranks instance ones"

    # A project's cluster may be reached through an instance-level agent; the agent of another
    # project stays invisible.
    through_shared = await maintainer.post(
        f"{base}/clusters", {"name": "edge", "environment_scope": "edge", "agent_id": agent["id"]}
    )
    assert (await _created(through_shared))["agent"]["id"] == agent["id"]
    theirs = await _created(
        await admin.post(f"/api/v1/projects/{other['id']}/agents", {"name": "theirs"})
    )
    refused = await maintainer.post(
        f"{base}/clusters", {"name": "x", "environment_scope": "x", "agent_id": theirs["id"]}
    )
    assert (refused.status_code, refused.json()["error"]["code"]) == (404, "agent_not_found")
    # An instance-level cluster goes only through an instance-level agent.
    refused = await admin.post(
        "/api/v1/clusters", {"name": "y", "environment_scope": "y", "agent_id": theirs["id"]}
    )
    assert (refused.status_code, refused.json()["error"]["code"]) == (404, "agent_not_found")

    # Projects use instance clusters for namespaces and never see each other's.
    created = await maintainer.post(
        f"{base}/clusters/{shared['id']}/namespaces", {"environment": "production"}
    )
    assert created.status_code == 202, created.text
    blog = admin.as_token(await admin.create_project_token(other["id"], "maintainer"))
    blog_base = f"/api/v1/projects/{other['id']}/clusters/{shared['id']}/namespaces"
    assert (await blog.get(blog_base)).json()["items"] == []
    assert (await blog.get(f"{blog_base}/{created.json()['id']}")).status_code == 404
    # Their cached cluster state too: only their own namespaces.
    resources = f"/api/v1/projects/{other['id']}/clusters/{shared['id']}/resources"
    mine = created.json()["namespace"]
    for params in ({"kind": "namespaces"}, {"kind": "pods"}, {"kind": "pods", "namespace": mine}):
        refused = await blog.get(resources, params=params)
        assert (refused.status_code, refused.json()["error"]["code"]) == (
            403,
            "namespace_not_yours",
        ), params
    own_read = await maintainer.get(
        f"{base}/clusters/{shared['id']}/resources", params={"kind": "pods", "namespace": mine}
    )
    assert own_read.status_code == 202

    # Admins change and delete them (the namespace makes the delete wait for a cleanup).
    patched = await admin.patch(f"/api/v1/clusters/{catch_review['id']}", {"enabled": False})
    assert (patched.status_code, patched.json()["status"]) == (200, "disabled")
    assert (await admin.delete(f"/api/v1/clusters/{catch_review['id']}")).status_code == 204
    assert (await admin.delete(f"/api/v1/clusters/{shared['id']}")).status_code == 202
