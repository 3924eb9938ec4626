"""Projects and access tokens through the REST API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.conftest import Api


async def test_requests_without_a_valid_token_are_401(client: Any) -> None:
    response = await client.get("/api/v1/projects")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    for header in ("Bearer cpt_nope", "Bearer nope", "Basic abc"):
        response = await client.get("/api/v1/projects", headers={"Authorization": header})
        assert response.status_code == 401
        assert response.json()["error"]["code"] in ("invalid_token", "invalid_authorization")


async def test_admin_creates_and_lists_projects_with_pagination(admin: Api) -> None:
    for index in range(5):
        await admin.create_project(f"team-{index}")
    names: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await admin.get("/api/v1/projects", params=params)).json()
        names += [p["name"] for p in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert names == [f"team-{i}" for i in range(5)]
    bad = await admin.get("/api/v1/projects", params={"cursor": "abc"})
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_cursor"


async def test_project_names_are_dns_labels_and_unique(admin: Api) -> None:
    bad = await admin.post("/api/v1/projects", {"name": "Not_A_Label"})
    assert bad.status_code == 422
    body = bad.json()["error"]
    assert body["code"] == "validation_failed"
    assert body["details"][0]["field"] == "body.name"
    await admin.create_project("alpha")
    again = await admin.post("/api/v1/projects", {"name": "alpha"})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "project_name_taken"


async def test_project_token_sees_only_its_project(admin: Api) -> None:
    a = await admin.create_project("a")
    b = await admin.create_project("b")
    token = await admin.create_project_token(a["id"], "maintainer")
    member = admin.as_token(token)
    listed = (await member.get("/api/v1/projects")).json()["items"]
    assert [p["id"] for p in listed] == [a["id"]]
    assert (await member.get(f"/api/v1/projects/{b['id']}")).status_code == 404
    assert (await member.get(f"/api/v1/projects/{b['id']}/clusters")).status_code == 404
    assert (await member.post("/api/v1/projects", {"name": "c"})).status_code == 403


async def test_token_is_shown_once_and_stored_hashed(admin: Api) -> None:
    from sqlalchemy import select

    from app.auth.models import AccessToken
    from app.core.db import session_scope

    project = await admin.create_project()
    created = await admin.post(
        f"/api/v1/projects/{project['id']}/tokens", {"name": "ci", "role": "developer"}
    )
    assert created.status_code == 201
    raw = created.json()["token"]
    assert raw.startswith("cpt_")
    listed = (await admin.get(f"/api/v1/projects/{project['id']}/tokens")).json()["items"]
    assert listed[0]["name"] == "ci" and "token" not in listed[0]
    with session_scope() as session:
        stored = session.scalars(select(AccessToken.token_hash)).all()
    assert raw not in stored
    assert all(len(h) == 64 for h in stored)


async def test_roles_are_enforced(admin: Api) -> None:
    project = await admin.create_project()
    pid = project["id"]
    reporter = admin.as_token(await admin.create_project_token(pid, "reporter"))
    assert (await reporter.get(f"/api/v1/projects/{pid}/clusters")).status_code == 200
    denied = await reporter.post(f"/api/v1/projects/{pid}/tokens", {"name": "x"})
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "insufficient_role"
    maintainer = admin.as_token(await admin.create_project_token(pid, "maintainer"))
    too_high = await maintainer.post(
        f"/api/v1/projects/{pid}/tokens", {"name": "x", "role": "admin"}
    )
    assert too_high.status_code == 400
    assert too_high.json()["error"]["code"] == "invalid_role"


async def test_revoked_and_expired_tokens_are_refused(admin: Api) -> None:
    project = await admin.create_project()
    pid = project["id"]
    created = (
        await admin.post(f"/api/v1/projects/{pid}/tokens", {"name": "t", "role": "reporter"})
    ).json()
    member = admin.as_token(created["token"])
    assert (await member.get(f"/api/v1/projects/{pid}")).status_code == 200
    assert (await admin.delete(f"/api/v1/projects/{pid}/tokens/{created['id']}")).status_code == 204
    # Revoking twice is fine (idempotent).
    assert (await admin.delete(f"/api/v1/projects/{pid}/tokens/{created['id']}")).status_code == 204
    refused = await member.get(f"/api/v1/projects/{pid}")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "token_revoked"

    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    bad = await admin.post(f"/api/v1/projects/{pid}/tokens", {"name": "old", "expires_at": past})
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_expiry"

    from sqlalchemy import update

    from app.auth.models import AccessToken
    from app.core.db import session_scope

    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    short = (
        await admin.post(f"/api/v1/projects/{pid}/tokens", {"name": "short", "expires_at": soon})
    ).json()
    with session_scope() as session:
        session.execute(
            update(AccessToken)
            .where(AccessToken.id == short["id"])
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    expired = await admin.as_token(short["token"]).get(f"/api/v1/projects/{pid}")
    assert expired.status_code == 401
    assert expired.json()["error"]["code"] == "token_expired"


async def test_admin_tokens_and_audit_trail(admin: Api) -> None:
    created = await admin.post("/api/v1/admin/tokens", {"name": "ops", "role": "admin"})
    assert created.status_code == 201
    other = admin.as_token(created.json()["token"])
    await other.create_project("audited")
    events = (await admin.get("/api/v1/audit-events")).json()["items"]
    actions = [e["action"] for e in events]
    assert actions == ["token.create", "project.create"]
    assert events[1]["actor"].endswith(":ops")
    assert all("token" not in str(e["details"]).lower() or "cpt_" not in str(e) for e in events)
    project_id = events[1]["target_id"]
    member = admin.as_token(await admin.create_project_token(int(project_id), "developer"))
    denied = await member.get(f"/api/v1/projects/{project_id}/audit-events")
    assert denied.status_code == 403


async def test_project_with_clusters_cannot_be_deleted(admin: Api, test_ca_pem: str) -> None:
    project = await admin.create_project()
    pid = project["id"]
    response = await admin.post(
        f"/api/v1/projects/{pid}/clusters",
        {"name": "c1", "kubernetes": {"api_url": "https://203.0.113.10", "token": "t"}},
    )
    # 203.0.113.0/24 is documentation space, not public: refused.
    assert response.status_code == 422
    response = await admin.post(
        f"/api/v1/projects/{pid}/clusters",
        {"name": "c1", "kubernetes": {"api_url": "https://93.184.216.34", "token": "t"}},
    )
    assert response.status_code == 201
    refused = await admin.delete(f"/api/v1/projects/{pid}")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "project_not_empty"
    assert (
        await admin.delete(f"/api/v1/projects/{pid}/clusters/{response.json()['id']}")
    ).status_code == 204
    assert (await admin.delete(f"/api/v1/projects/{pid}")).status_code == 204
    assert (await admin.get(f"/api/v1/projects/{pid}")).status_code == 404


async def test_revocation_by_another_replica_takes_effect_within_a_second(admin: Api) -> None:
    import asyncio
    import time

    from sqlalchemy import update

    from app.auth.models import AccessToken
    from app.core.db import session_scope, utcnow

    project = await admin.create_project()
    pid = project["id"]
    created = (
        await admin.post(f"/api/v1/projects/{pid}/tokens", {"name": "t", "role": "reporter"})
    ).json()
    member = admin.as_token(created["token"])
    assert (await member.get(f"/api/v1/projects/{pid}")).status_code == 200
    # Another replica revokes it: only the database changes, not this process's memory.
    with session_scope() as session:
        session.execute(
            update(AccessToken).where(AccessToken.id == created["id"]).values(revoked_at=utcnow())
        )
    deadline = time.monotonic() + 5
    while (status := (await member.get(f"/api/v1/projects/{pid}")).status_code) == 200:
        assert time.monotonic() < deadline, "still accepted 5 s after revocation"
        await asyncio.sleep(0.1)
    assert status == 401
