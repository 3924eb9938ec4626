"""Agents API: registration, show-once hashed tokens, the active-token limit, revocation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from app.agents.models import AgentToken
from app.auth.tokens import hash_token
from app.core.db import session_scope
from tests.conftest import Api


async def test_register_list_and_get_agents(admin: Api) -> None:
    project = await admin.create_project("edge-team")
    base = f"/api/v1/projects/{project['id']}/agents"
    created = await admin.post(base, {"name": "edge-1"})
    assert created.status_code == 201
    agent = created.json()
    assert agent["name"] == "edge-1" and agent["project_id"] == project["id"]
    assert (await admin.post(base, {"name": "edge-2"})).status_code == 201
    duplicate = await admin.post(base, {"name": "edge-1"})
    assert duplicate.status_code == 409
    assert duplicate.json()["error"]["code"] == "agent_name_taken"
    for bad in ("Edge", "-edge", "a" * 64, "edge_1", ""):
        assert (await admin.post(base, {"name": bad})).status_code == 422
    page = (await admin.get(base, params={"limit": 1})).json()
    assert [a["name"] for a in page["items"]] == ["edge-1"]
    rest = (await admin.get(base, params={"cursor": page["next_cursor"]})).json()
    assert [a["name"] for a in rest["items"]] == ["edge-2"]
    got = await admin.get(f"{base}/{agent['id']}")
    assert got.status_code == 200 and got.json() == agent
    missing = await admin.get(f"{base}/999999")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "agent_not_found"


async def test_roles_and_project_isolation(admin: Api) -> None:
    project = await admin.create_project("team-a")
    other = await admin.create_project("team-b")
    base = f"/api/v1/projects/{project['id']}/agents"
    agent = (await admin.post(base, {"name": "edge"})).json()
    reporter = admin.as_token(await admin.create_project_token(project["id"], "reporter"))
    developer = admin.as_token(await admin.create_project_token(project["id"], "developer"))
    outsider = admin.as_token(await admin.create_project_token(other["id"], "maintainer"))
    assert (await reporter.get(base)).status_code == 200
    refused = await developer.post(base, {"name": "other"})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "insufficient_role"
    assert (await developer.post(f"{base}/{agent['id']}/tokens", {"name": "t"})).status_code == 403
    assert (await outsider.get(f"{base}/{agent['id']}")).status_code == 404
    assert (await outsider.get(f"{base}/{agent['id']}/connections")).status_code == 404


async def test_tokens_are_shown_once_hashed_at_rest_and_limited(admin: Api) -> None:
    project = await admin.create_project("tokens")
    agent = (await admin.post(f"/api/v1/projects/{project['id']}/agents", {"name": "e"})).json()
    base = f"/api/v1/projects/{project['id']}/agents/{agent['id']}/tokens"
    expires = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    first = await admin.post(base, {"name": "main", "expires_at": expires})
    assert first.status_code == 201
    body = first.json()
    raw = body["token"]
    assert raw.startswith("cpa_") and len(raw) > 40
    assert body["token_prefix"] == raw[:12]
    assert body["expires_at"] is not None and body["revoked_at"] is None
    with session_scope() as session:
        stored = session.scalar(select(AgentToken).where(AgentToken.id == body["id"]))
        assert stored is not None
        assert stored.token_hash == hash_token(raw)
        assert raw not in (stored.token_hash, stored.token_prefix, stored.name)
    listed = (await admin.get(base)).json()["items"]
    assert [t["id"] for t in listed] == [body["id"]]
    assert "token" not in listed[0]

    second = await admin.post(base, {"name": "rotation"})
    assert second.status_code == 201
    third = await admin.post(base, {"name": "one-too-many"})
    assert third.status_code == 409
    assert third.json()["error"]["code"] == "too_many_tokens"

    # Revoking frees a slot; revoking twice is fine; unknown ids are 404.
    assert (await admin.delete(f"{base}/{body['id']}")).status_code == 204
    assert (await admin.delete(f"{base}/{body['id']}")).status_code == 204
    assert (await admin.delete(f"{base}/999999")).status_code == 404
    revoked = [t for t in (await admin.get(base)).json()["items"] if t["id"] == body["id"]]
    assert revoked[0]["revoked_at"] is not None
    assert (await admin.post(base, {"name": "replacement"})).status_code == 201


async def test_token_expiry_must_be_in_the_future(admin: Api) -> None:
    project = await admin.create_project("expiry")
    agent = (await admin.post(f"/api/v1/projects/{project['id']}/agents", {"name": "e"})).json()
    base = f"/api/v1/projects/{project['id']}/agents/{agent['id']}/tokens"
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    response = await admin.post(base, {"name": "old", "expires_at": past})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_expiry"
    bad: dict[str, Any] = {"name": "x", "unexpected": 1}
    assert (await admin.post(base, bad)).status_code == 422


async def test_connections_are_a_paginated_list(admin: Api) -> None:
    import uuid

    from app.agents.models import AgentConnection, AgentServerReplica

    project = await admin.create_project("paged")
    base = f"/api/v1/projects/{project['id']}/agents"
    agent = (await admin.post(base, {"name": "edge"})).json()
    token = (await admin.post(f"{base}/{agent['id']}/tokens", {"name": "t"})).json()
    now = datetime.now(UTC)
    ids = sorted(str(uuid.uuid4()) for _ in range(3))
    with session_scope() as session:
        session.add(AgentServerReplica(name="r1", proxy_url="https://127.0.0.1:1"))
        session.flush()
        for connection_id in ids:
            session.add(
                AgentConnection(
                    id=connection_id,
                    agent_id=agent["id"],
                    token_id=token["id"],
                    replica="r1",
                    agent_version="0.1.0",
                    kubernetes_version="v1.37.2",
                    source_address="127.0.0.1",
                    connected_at=now,
                    last_heartbeat_at=now,
                )
            )
    url = f"{base}/{agent['id']}/connections"
    first = (await admin.get(url, params={"limit": 2})).json()
    assert [row["id"] for row in first["items"]] == ids[:2]
    assert first["next_cursor"] == ids[1]
    rest = (await admin.get(url, params={"limit": 2, "cursor": first["next_cursor"]})).json()
    assert ([row["id"] for row in rest["items"]], rest["next_cursor"]) == (ids[2:], None)
    bad = await admin.get(url, params={"cursor": "not-a-cursor"})
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid_cursor")
