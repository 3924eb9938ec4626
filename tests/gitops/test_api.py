"""Sources, environments and the webhook endpoint through the API (no cluster is dialled)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from tests.conftest import Api
from tests.gitops.conftest import GitOps
from tests.gitops.webhooks import generic_push, github_ping, github_push, gitlab_push

PUBLIC_URL = "https://93.184.216.34:6443"  # a public address; never dialled (no worker here)
PUBLIC_GIT = "https://93.184.216.34/acme/app.git"
SECRET = "a-webhook-secret-0123456789"
SHA = "a" * 40


async def _cluster(gitops: GitOps) -> dict[str, Any]:
    body = {"name": "prod", "kubernetes": {"api_url": PUBLIC_URL, "token": "t"}}
    response = await gitops.api.post(f"{gitops.project.base}/clusters", body)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


async def test_a_source_keeps_its_token_secret_and_shows_a_generated_webhook_secret_once(
    gitops: GitOps,
) -> None:
    created = await gitops.source(PUBLIC_GIT, token="glpat-secret-token", ref="main")
    assert created["ref"] == "refs/heads/main"
    assert created["has_token"] is True
    assert len(created["webhook_secret"]) >= 32
    assert created["hook_path"].startswith("/api/v1/hooks/")
    read = (await gitops.api.get(f"{gitops.base}/sources/{created['id']}")).json()
    assert "webhook_secret" not in read and "token" not in read
    assert "glpat-secret-token" not in str(read)
    chosen = await gitops.source(PUBLIC_GIT, webhook_secret=SECRET)
    assert chosen["webhook_secret"] is None


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://93.184.216.34/app.git", "invalid_url_scheme"),
        ("https://127.0.0.1/app.git", "unsafe_url"),
        ("https://[::ffff:10.0.0.1]/app.git", "unsafe_url"),
        ("ssh://git@93.184.216.34/app.git", "deploy_key_required"),
        ("file:///srv/app.git", "invalid_url_scheme"),
    ],
)
async def test_git_urls_pass_the_ssrf_guard(gitops: GitOps, url: str, code: str) -> None:
    response = await gitops.api.post(f"{gitops.base}/sources", {"name": "s", "url": url})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == code


@pytest.mark.parametrize(
    "body",
    [
        {"ref": "refs/pull/1/head"},
        {"ref": "feature*"},
        {"paths": ["../outside"]},
        {"paths": ["/etc"]},
        {"render": "jsonnet"},
    ],
)
async def test_bad_source_fields_are_422(gitops: GitOps, body: dict[str, Any]) -> None:
    response = await gitops.api.post(
        f"{gitops.base}/sources", {"name": "s", "url": PUBLIC_GIT, **body}
    )
    assert response.status_code == 422, response.text


async def test_roles_audit_and_other_projects(gitops: GitOps, admin: Api) -> None:
    project_id = gitops.project.id
    reporter = admin.as_token(await admin.create_project_token(project_id, "reporter"))
    response = await reporter.post(f"{gitops.base}/sources", {"name": "s", "url": PUBLIC_GIT})
    assert response.status_code == 403
    source = await gitops.source(PUBLIC_GIT)
    assert (await reporter.get(f"{gitops.base}/sources/{source['id']}")).status_code == 200
    cluster = await _cluster(gitops)
    env = await gitops.environment(source["id"], cluster["id"], "shop")
    developer = admin.as_token(await admin.create_project_token(project_id, "developer"))
    sync = await developer.post(f"{gitops.base}/environments/{env['id']}/sync", {"revision": SHA})
    assert sync.status_code == 202, sync.text
    assert sync.json()["status"] == "queued" and sync.json()["commit_sha"] == SHA
    assert sync.json()["trigger"] == "manual"
    rollback = await developer.post(f"{gitops.base}/deployments/{sync.json()['id']}/rollback")
    assert rollback.status_code == 403
    other = await admin.create_project("other")
    token = await admin.create_project_token(other["id"], "maintainer")
    outsider = admin.as_token(token)
    assert (await outsider.get(f"{gitops.base}/sources/{source['id']}")).status_code == 404
    other_base = f"/api/v1/projects/{other['id']}/gitops"
    foreign = await outsider.post(
        f"{other_base}/environments",
        {"name": "e", "source_id": source["id"], "cluster_id": cluster["id"], "namespace": "x"},
    )
    assert foreign.status_code == 404 and foreign.json()["error"]["code"] == "source_not_found"
    events = (await admin.get(f"/api/v1/projects/{project_id}/audit-events")).json()["items"]
    actions = {e["action"] for e in events}
    assert {
        "gitops_source.create",
        "gitops_environment.create",
        "gitops_environment.sync",
    } <= actions


async def test_a_source_in_use_cannot_be_deleted(gitops: GitOps) -> None:
    source = await gitops.source(PUBLIC_GIT)
    env = await gitops.environment(source["id"], (await _cluster(gitops))["id"], "shop")
    response = await gitops.api.delete(f"{gitops.base}/sources/{source['id']}")
    assert response.status_code == 409 and response.json()["error"]["code"] == "source_in_use"
    assert (await gitops.api.delete(f"{gitops.base}/environments/{env['id']}")).status_code == 204
    assert (await gitops.api.delete(f"{gitops.base}/sources/{source['id']}")).status_code == 204


def _deliveries() -> list[Any]:
    from app.core.db import session_scope
    from app.gitops.models import WebhookDelivery

    with session_scope() as session:
        return list(session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))


async def test_github_push_ping_bad_signature_and_replay(gitops: GitOps, capsys: Any) -> None:
    source = await gitops.source(PUBLIC_GIT, webhook_secret=SECRET)
    headers, body = github_ping(SECRET)
    ping = await gitops.hook(source, headers, body)
    assert ping.status_code == 200 and ping.json()["status"] == "pong"

    headers, body = github_push(SECRET, "refs/heads/main", SHA)
    first = await gitops.hook(source, headers, body)
    assert first.status_code == 202 and first.json()["status"] == "accepted"
    again = await gitops.hook(source, headers, body)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"

    forged_headers, forged_body = github_push("not-the-secret-at-all", "refs/heads/main", SHA)
    forged = await gitops.hook(source, forged_headers, forged_body + b" ")
    assert forged.status_code == 401
    assert forged.json()["error"]["code"] == "bad_signature"
    tampered = await gitops.hook(source, headers, body.replace(SHA.encode(), b"b" * 40))
    assert tampered.status_code == 401
    output = capsys.readouterr()
    assert "webhook_bad_signature" in output.out + output.err
    assert "b" * 40 not in output.out + output.err  # the body is never logged

    deliveries = _deliveries()
    assert [(d.provider, d.commit_sha) for d in deliveries] == [("github", SHA)]


async def test_gitlab_token_tags_and_deleted_branches(gitops: GitOps) -> None:
    source = await gitops.source(PUBLIC_GIT, webhook_secret=SECRET, ref="refs/tags/v*")
    headers, body = gitlab_push(SECRET, "refs/tags/v1.2.0", SHA, tag=True)
    assert (await gitops.hook(source, headers, body)).status_code == 202
    headers, body = gitlab_push("wrong-token", "refs/heads/main", SHA)
    assert (await gitops.hook(source, headers, body)).status_code == 401
    headers, body = gitlab_push(SECRET, "refs/heads/gone", "0" * 40)
    deleted = await gitops.hook(source, headers, body)
    assert deleted.status_code == 202 and deleted.json()["status"] == "ignored"
    assert [(d.event, d.outcome) for d in _deliveries()] == [
        ("Tag Push Hook", "received"),
        ("Push Hook", "deleted"),
    ]


async def test_generic_hmac_unknown_hooks_and_bad_bodies(gitops: GitOps) -> None:
    source = await gitops.source(PUBLIC_GIT, webhook_secret=SECRET)
    headers, body = generic_push(SECRET, "refs/heads/main", SHA, delivery="d-1")
    assert (await gitops.hook(source, headers, body)).status_code == 202
    assert (await gitops.hook(source, headers, body)).json()["status"] == "duplicate"
    unsigned = await gitops.hook(source, {"Content-Type": "application/json"}, body)
    assert unsigned.status_code == 401
    headers, body = generic_push(SECRET, "main", SHA)
    bad = await gitops.hook(source, headers, body)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_payload"
    missing = await gitops.api.client.post("/api/v1/hooks/nope", content=body, headers=headers)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "hook_not_found"


async def test_sources_list_in_pages(gitops: GitOps) -> None:
    for index in range(3):
        await gitops.source(PUBLIC_GIT, name=f"s{index}", token="t" if index == 1 else None)
    first = (await gitops.api.get(f"{gitops.base}/sources", params={"limit": 2})).json()
    assert [s["name"] for s in first["items"]] == ["s0", "s1"]
    assert [s["has_token"] for s in first["items"]] == [False, True]
    rest = await gitops.api.get(
        f"{gitops.base}/sources", params={"limit": 2, "cursor": first["next_cursor"]}
    )
    assert [s["name"] for s in rest.json()["items"]] == ["s2"]
