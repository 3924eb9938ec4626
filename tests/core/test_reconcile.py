"""The reconciler: records whose pending step lost its job are queued again, with backoff,
and end in their final failed state when they stay stuck."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import update

from tests.conftest import Api
from tests.core.test_jobs import _drain


async def _pending_namespace(admin: Api) -> tuple[int, str]:
    """A namespace being provisioned (no worker runs here): its id and API path."""
    from app.clusters.models import Cluster, ClusterStatus
    from app.core.db import session_scope

    project = await admin.create_project()
    base = f"/api/v1/projects/{project['id']}/clusters"
    body = {"name": "c", "kubernetes": {"api_url": "https://93.184.216.34", "token": "t"}}
    cluster = (await admin.post(base, body)).json()
    with session_scope() as session:  # as if its check had run
        session.execute(
            update(Cluster)
            .where(Cluster.id == cluster["id"])
            .values(status=ClusterStatus.connected)
        )
    created = await admin.post(f"{base}/{cluster['id']}/namespaces", {"environment": "dev"})
    assert created.status_code == 202, created.text
    _drain("default")
    return created.json()["id"], f"{base}/{cluster['id']}/namespaces/{created.json()['id']}"


def _age(namespace_id: int, **values: Any) -> None:
    from app.core.db import session_scope, utcnow
    from app.namespaces.models import ProjectNamespace

    with session_scope() as session:
        session.execute(
            update(ProjectNamespace)
            .where(ProjectNamespace.id == namespace_id)
            .values(updated_at=utcnow() - timedelta(minutes=10), **values)
        )


def _reconcile() -> None:
    from workers.reconcile import reconcile_pending

    reconcile_pending.fn()


async def test_stalled_namespace_is_queued_again_then_ends_failed(admin: Api) -> None:
    from app.core.reconcile import MAX_ATTEMPTS

    namespace_id, path = await _pending_namespace(admin)
    _reconcile()
    assert _drain("default") == []  # its job is not overdue yet

    _age(namespace_id)
    _reconcile()
    assert [(m["actor_name"], m["args"]) for m in _drain("default")] == [
        ("ensure_namespace", [namespace_id])
    ]
    record = (await admin.get(path)).json()
    assert record["status"] == "provisioning"
    assert record["retry_at"] is not None
    _reconcile()
    assert _drain("default") == []  # queued again once, not every round

    _age(namespace_id, retry_at=None, reconcile_attempts=MAX_ATTEMPTS, last_error="unreachable")
    _reconcile()
    assert _drain("default") == []
    record = (await admin.get(path)).json()
    assert record["status"] == "failed"
    assert record["error"]["code"] == "unreachable"
    assert record["last_error"] is None and record["retry_at"] is None
